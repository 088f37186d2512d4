"""`worker start` as root (jobctl.runas), in this process: on PostgreSQL it refuses to start
without --run-as-submitter or --allow-root (JOBCTL_ALLOW_ROOT), on SQLite it starts as before;
a bad --user-map is one line, exit 2, and no worker registered. Jobs run as their submitters by
a real root worker are in tests/e2e/test_e2e_run_as_submitter.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from inprocess import run_cli

from jobctl.client import Client
from jobctl.models import JobSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="what a worker does as root needs this test to be root")

# Every test of the suite has JOBCTL_ALLOW_ROOT=1 (tests/conftest.py): these remove it.
NO_ALLOW = {"JOBCTL_ALLOW_ROOT": None}


def one_line_error(result: object, says: str) -> str:
    code, stdout, stderr = (getattr(result, name) for name in ("code", "stdout", "stderr"))
    assert (code, stdout) == (2, ""), result
    assert stderr.startswith("jobctl: error: ") and stderr.count("\n") == 1, stderr
    assert says in stderr, stderr
    return str(stderr)


def test_a_root_worker_on_postgresql_refuses_without_a_flag(pg_url: str) -> None:
    client = Client(pg_url)
    job_id = client.submit(JobSpec(argv=["true"])).id
    refused = run_cli("worker", "start", "--burst", env={"JOBCTL_DATABASE_URL": pg_url,
                                                          **NO_ALLOW})
    message = one_line_error(refused, "refusing to run jobs as root on PostgreSQL: anyone who "
                                      "can submit to this database could run commands as root")
    assert "--run-as-submitter" in message and "--allow-root (JOBCTL_ALLOW_ROOT=1)" in message
    assert client.get(job_id).state.value == "queued"
    assert client.workers(include_ended=True) == []
    # --allow-root, or its variable: it starts, and runs the job (as root, as before)
    allowed = run_cli("worker", "start", "--burst", "--allow-root",
                      env={"JOBCTL_DATABASE_URL": pg_url, **NO_ALLOW})
    assert allowed.code == 0, allowed
    assert client.get(job_id).state.value == "succeeded"
    second = client.submit(JobSpec(argv=["true"])).id
    by_variable = run_cli("worker", "start", "--burst",
                          env={"JOBCTL_DATABASE_URL": pg_url, "JOBCTL_ALLOW_ROOT": "1"})
    assert by_variable.code == 0, by_variable
    assert client.get(second).state.value == "succeeded"
    assert len(client.workers(include_ended=True)) == 2


def test_a_root_worker_on_sqlite_starts_as_before(sqlite_url: str) -> None:
    client = Client(sqlite_url)
    job_id = client.submit(JobSpec(argv=["true"])).id
    result = run_cli("worker", "start", "--burst", env={"JOBCTL_DATABASE_URL": sqlite_url,
                                                         **NO_ALLOW})
    assert result.code == 0, result
    assert client.get(job_id).state.value == "succeeded"


@pytest.mark.parametrize(("args", "content", "says"), [
    (("--run-as-submitter", "--user-map", "{map}"), "alice = 1001\n",
     "--user-map: {map}: 'alice' must map to a Unix user's name in quotes"),
    (("--run-as-submitter", "--user-map", "{map}"), "alice = [\n", "--user-map: {map} is no "
                                                                    "valid TOML: "),
    (("--run-as-submitter", "--user-map", "{map}.missing"), None,
     "--user-map: cannot read {map}.missing: No such file or directory"),
    (("--user-map", "{map}"), 'alice = "alice"\n',
     "--user-map applies only with --run-as-submitter"),
], ids=["not-a-string", "not-toml", "missing", "without-run-as-submitter"])
def test_a_bad_user_map_is_one_line_and_no_worker(db_url: str, tmp_path: Path,
                                                  args: tuple[str, ...], content: str | None,
                                                  says: str) -> None:
    path = tmp_path / "users.toml"
    if content is not None:
        path.write_text(content)
    client = Client(db_url)
    job_id = client.submit(JobSpec(argv=["true"])).id
    result = run_cli("worker", "start", "--burst", *(a.format(map=path) for a in args),
                     env={"JOBCTL_DATABASE_URL": db_url})
    one_line_error(result, says.format(map=path))
    assert client.workers(include_ended=True) == []
    assert client.get(job_id).state.value == "queued"
