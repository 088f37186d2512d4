"""The policy of `worker start --run-as-submitter` (jobctl.runas), in plain functions: which user
a job runs as, the --user-map file, what a job keeps of the worker's environment, when a worker
may start at all; and `env:` secrets refused where jobs run as their submitters."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobctl.runas import (
    NotRunnable,
    SubmitterUsers,
    load_user_map,
    login_environment,
    worker_start_problem,
)
from jobctl.secret_env import SecretError, resolve


def test_a_job_runs_as_its_submitter_or_as_the_map_says() -> None:
    plain = SubmitterUsers({})
    assert plain.user_for("alice", None) == "alice"
    assert plain.user_for("alice", "alice") == "alice"  # --user naming its own user: allowed
    mapped = SubmitterUsers({"ci-bot": "builder"}, "/etc/jobctl/users.toml")
    assert mapped.user_for("ci-bot", None) == "builder"
    assert mapped.user_for("ci-bot", "builder") == "builder"
    assert mapped.user_for("alice", None) == "alice"  # not in the map: named like the role


@pytest.mark.parametrize(("users", "submitted_by", "requested", "says"), [
    ({}, None, None, "no submitter on record"),
    ({}, "alice", "root", "asks to run as user 'root', but this worker runs jobs only as "
                          "their submitter ('alice')"),
    ({}, "alice", "bob", "'bob'"),
    # the role's own name is not the user it maps to
    ({"ci-bot": "builder"}, "ci-bot", "ci-bot", "('ci-bot', user 'builder')"),
])
def test_what_may_not_run_as_its_submitter(users: dict[str, str], submitted_by: str | None,
                                           requested: str | None, says: str) -> None:
    with pytest.raises(NotRunnable) as refused:
        SubmitterUsers(users).user_for(submitted_by, requested)
    assert says in str(refused.value)


def test_a_user_map_file(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text('# role = "unix user"\nalice = "alice"\n"ci-bot.prod" = "builder"\n')
    assert load_user_map(str(path)) == SubmitterUsers(
        {"alice": "alice", "ci-bot.prod": "builder"}, str(path))
    path.write_text("")
    assert load_user_map(str(path)).users == {}


@pytest.mark.parametrize(("text", "says"), [
    ("alice = \n", "is no valid TOML: "),
    ("alice = 1001\n", "'alice' must map to a Unix user's name in quotes (ROLE = \"user\"), "
                       "not a int"),
    ("[alice]\nx = 'y'\n", "not a table"),
    ('alice = ""\n', "'alice' = '': a user name cannot be empty"),
    ('alice = "1001"\n', "give the user's name, not a uid"),
    ('"" = "alice"\n', "a role name cannot be empty"),
    (b"alice = '\xff'\n", "it is not UTF-8"),
])
def test_a_bad_user_map_says_what_is_wrong_in_one_line(tmp_path: Path, text: str | bytes,
                                                       says: str) -> None:
    path = tmp_path / "users.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ValueError) as error:
        load_user_map(str(path))
    message = str(error.value)
    assert says in message and "\n" not in message, message
    with pytest.raises(ValueError, match=r"cannot read .*missing\.toml: No such file"):
        load_user_map(str(tmp_path / "missing.toml"))


def test_a_job_keeps_only_what_a_login_sets_of_the_worker_environment() -> None:
    worker = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_TIME": "en_GB.UTF-8", "TZ": "UTC",
              "LANGUAGE": "en", "HOME": "/root", "USER": "root",
              "JOBCTL_DATABASE_URL": "postgresql://worker:hunter2@db/jobs",
              "PGPASSWORD": "hunter2", "AWS_SECRET_ACCESS_KEY": "x", "LD_PRELOAD": "/x.so"}
    assert login_environment(worker) == {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                                         "LC_TIME": "en_GB.UTF-8", "TZ": "UTC",
                                         "LANGUAGE": "en"}


@pytest.mark.parametrize(("euid", "backend", "run_as_submitter", "allow_root", "user_map",
                          "says"), [
    (0, "postgresql", False, False, False, "refusing to run jobs as root on PostgreSQL"),
    (0, "postgresql", True, False, False, None),
    (0, "postgresql", False, True, False, None),
    (0, "postgresql", True, True, True, None),
    (0, "sqlite", False, False, False, None),  # one machine, a file its owner controls
    (1000, "postgresql", False, False, False, None),
    (1000, "postgresql", False, True, False, None),  # nothing to allow: harmless
    (1000, "sqlite", True, False, False, "--run-as-submitter needs a worker running as root"),
    (1000, "postgresql", True, False, True, "this one runs as uid 1000"),
    (0, "postgresql", False, True, True, "--user-map applies only with --run-as-submitter"),
])
def test_when_a_worker_may_start(euid: int, backend: str, run_as_submitter: bool,
                                 allow_root: bool, user_map: bool, says: str | None) -> None:
    problem = worker_start_problem(euid, backend, run_as_submitter, allow_root, user_map)
    if says is None:
        assert problem is None
    else:
        assert problem is not None and says in problem and "\n" not in problem


def test_env_secrets_are_refused_where_jobs_run_as_their_submitters() -> None:
    def never(path: str) -> bytes:
        raise AssertionError(path)

    assert resolve({"A": "env:X"}, {"X": "value"}, never) == {"A": "value"}
    with pytest.raises(SecretError, match="env: references are not resolved on this worker"):
        resolve({"A": "env:X"}, None, never)
    assert resolve({"A": "file:/f"}, None, lambda path: b"from file\n") == {"A": "from file"}
