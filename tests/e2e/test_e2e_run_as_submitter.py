"""Jobs run as their submitter (`worker start --run-as-submitter`, jobctl.runas), with real parts:
throwaway Unix users (useradd), PostgreSQL LOGIN roles of the same names on the test cluster
that submit through the real CLI (trust authentication: the role's name in the URL), and a
real root `jobctl worker start` process.

Each test makes its own users and roles, named uniquely (xdist workers share one cluster and
one /etc/passwd), and removes them afterwards (userdel -r, DROP ROLE)."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import FAST_WORKER_OPTIONS, JOBCTL, Jobctl, describe
from pgroles import create_login, drop_logins

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running jobs as their submitters needs a "
                                                 "root worker and useradd; this test is not root"),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="useradd is not installed"),
]


class Accounts:
    """Throwaway Unix users and PostgreSQL LOGIN roles (allowed what jobctl needs on the test
    database's tables), removed by `close`."""

    def __init__(self, pg_url: str) -> None:
        self.pg_url = pg_url
        self._users: list[str] = []
        self._roles: list[str] = []

    @staticmethod
    def new_name(prefix: str) -> str:
        return f"{prefix}{uuid.uuid4().hex[:10]}"

    def user(self, name: str | None = None) -> pwd.struct_passwd:
        """A new Unix user with a home directory (useradd retried while another test holds
        the lock on /etc/passwd)."""
        name = name or self.new_name("jr")
        for attempt in range(50):
            made = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name],
                                  capture_output=True, text=True, timeout=60, check=False)
            if made.returncode == 0:
                break
            if attempt == 49 or "lock" not in made.stderr.lower():
                pytest.fail(f"useradd {name}: {made.stderr}")
            time.sleep(0.1)
        self._users.append(name)
        return pwd.getpwnam(name)

    def role(self, name: str) -> str:
        """A LOGIN role `name`; returns the URL that connects as it."""
        url = create_login(self.pg_url, name,
                           "GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}",
                           "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        self._roles.append(name)
        return url

    def close(self) -> None:
        drop_logins(self.pg_url, self._roles)
        for name in self._users:
            for _ in range(50):
                gone = subprocess.run(["userdel", "-r", name], capture_output=True, text=True,
                                      timeout=60, check=False)
                if "lock" not in gone.stderr.lower():
                    break
                time.sleep(0.1)


@pytest.fixture
def accounts(pg_url: str) -> Iterator[Accounts]:
    made = Accounts(pg_url)
    try:
        yield made
    finally:
        made.close()


def root_worker_env(jobctl: Jobctl) -> dict[str, str]:
    """The worker's environment: the test database, and no JOBCTL_ALLOW_ROOT (which every test
    has: tests/conftest.py), so that --run-as-submitter alone lets it start."""
    return {k: v for k, v in jobctl.env.items() if k != "JOBCTL_ALLOW_ROOT"}


def logs(jobctl: Jobctl, job_id: int) -> tuple[bytes, bytes]:
    """The job's output and error as `job logs` writes them, read in this process
    (Jobctl.in_process): what ran, and as whom, is the subject here."""
    result = jobctl.in_process("job", "logs", str(job_id))
    assert result.returncode == 0, result
    return result.stdout_bytes, result.stderr_bytes


def failed_to_start(jobctl: Jobctl, job_id: int) -> str:
    """A job that did not start: failed, exit code 125; its error (also on its stderr)."""
    status = jobctl.status(job_id)
    assert (status["state"], status["exit_code"]) == ("failed", 125), status
    error = str(status["error"])
    assert logs(jobctl, job_id)[1] == f"jobctl: {error}\n".encode()
    return error


def test_each_job_runs_as_its_submitters_unix_user(jobctl_pg: Jobctl, tmp_path: Path,
                                                   accounts: Accounts) -> None:
    alice = accounts.user()
    as_alice = Jobctl(accounts.role(alice.pw_name), tmp_path)
    ghost = accounts.new_name("jg")  # a role with no Unix user of its name
    as_ghost = Jobctl(accounts.role(ghost), tmp_path)
    carol = accounts.user()  # the user a role of another name is mapped to
    bob = accounts.new_name("jb")
    as_bob = Jobctl(accounts.role(bob), tmp_path)
    dave = accounts.new_name("jd")  # a role mapped to root: never run as root
    as_dave = Jobctl(accounts.role(dave), tmp_path)
    user_map = tmp_path / "users.toml"
    user_map.write_text(f'# role = "unix user"\n{bob} = "{carol.pw_name}"\n{dave} = "root"\n')
    home = Path(alice.pw_dir)
    # A secret only root may read, where alice can look (her home), and one of her own.
    roots_secret = home / "root-secret"
    roots_secret.write_text("root-only-value-1234\n")
    os.chown(roots_secret, 0, 0)
    roots_secret.chmod(0o600)
    own_secret = home / "own-secret"
    own_secret.write_text("alices-own-value-5678\n")
    os.chown(own_secret, alice.pw_uid, alice.pw_gid)
    own_secret.chmod(0o600)

    # First the job whose user does not exist: the worker (one slot) goes on to the next.
    nobody = as_ghost.submit("--", "true")
    report = as_alice.submit("--shell", 'id -u; id -g; id -G; echo "$HOME|$USER|$LOGNAME"; '
                                        'echo made > "$HOME/made"; env | cut -d= -f1 | sort')
    asks_root = as_alice.submit("--user", "root", "--", "id", "-u")
    asks_self = as_alice.submit("--user", alice.pw_name, "--", "id", "-un")
    unreadable = as_alice.submit("--secret-env", f"TOKEN=file:{roots_secret}", "--shell",
                                 'echo "$TOKEN"')
    readable = as_alice.submit("--secret-env", f"TOKEN=file:{own_secret}", "--shell",
                               'echo "token=$TOKEN"')
    workers_variable = as_alice.submit("--secret-env", "URL=env:JOBCTL_DATABASE_URL", "--",
                                       "true")
    locked_cwd = as_alice.submit("--cwd", str(tmp_path), "--", "pwd")  # root's, mode 700
    # One that does not exist there: the same answer (root's would tell her which exist).
    missing_cwd = as_alice.submit("--cwd", str(tmp_path / "missing"), "--", "pwd")
    as_root = as_dave.submit("--", "id", "-u")
    mapped = as_bob.submit("--shell", 'id -un; echo made > "$HOME/made"')

    worker = subprocess.run(
        [str(JOBCTL), "worker", "start", "--burst", *FAST_WORKER_OPTIONS, "--run-as-submitter",
         # --cgroups where it can: each job enters its cgroup, then its directory, as its user
         "--user-map", str(user_map), "--cgroups"],
        cwd=tmp_path, env=root_worker_env(jobctl_pg), capture_output=True, timeout=120,
        check=False)
    assert worker.returncode == 0, describe(worker)
    assert (f"--run-as-submitter: each job runs as its submitter's Unix user (or as {user_map} "
            "maps it)").encode() in worker.stderr

    assert failed_to_start(jobctl_pg, nobody) == (
        f"no such user {ghost!r} on this worker (the user of its submitter {ghost!r})")

    status = jobctl_pg.status(report)
    assert (status["state"], status["submitted_by"]) == ("succeeded", alice.pw_name), status
    lines = logs(jobctl_pg, report)[0].decode().splitlines()
    assert lines[:2] == [str(alice.pw_uid), str(alice.pw_gid)]
    assert {int(g) for g in lines[2].split()} == set(os.getgrouplist(alice.pw_name,
                                                                     alice.pw_gid))
    assert lines[3] == f"{alice.pw_dir}|{alice.pw_name}|{alice.pw_name}"
    made = (home / "made").stat()
    assert (made.st_uid, made.st_gid) == (alice.pw_uid, alice.pw_gid)
    # What a login sets and the job's own variables; nothing of the worker's environment
    # (its database URL, JOBCTL_*, whatever else root was started with).
    variables = set(lines[4:])
    assert {"HOME", "USER", "LOGNAME", "SHELL", "PATH", "JOBCTL_JOB_ID"} <= variables
    kept = {"HOME", "USER", "LOGNAME", "SHELL", "PATH", "LANG", "LANGUAGE", "TZ", "PWD",
            "OLDPWD", "SHLVL", "JOBCTL_JOB_ID", "JOBCTL_ATTEMPT", "JOBCTL_WORKER"}
    assert {name for name in variables - kept if not name.startswith("LC_")} == set()

    assert failed_to_start(jobctl_pg, asks_root) == (
        f"cannot run as its submitter: it asks to run as user 'root', but this worker runs "
        f"jobs only as their submitter ({alice.pw_name!r}): --run-as-submitter")
    assert logs(jobctl_pg, asks_self)[0] == f"{alice.pw_name}\n".encode()

    assert failed_to_start(jobctl_pg, unreadable) == (
        f"secret TOKEN: cannot read file {roots_secret}: Permission denied (as user "
        f"{alice.pw_name})")
    assert b"root-only-value" not in b"".join(logs(jobctl_pg, unreadable))
    assert logs(jobctl_pg, readable)[0] == b"token=***\n"  # read as alice, and masked
    assert "env: references are not resolved on this worker" in failed_to_start(
        jobctl_pg, workers_variable)
    assert failed_to_start(jobctl_pg, locked_cwd) == (
        f"user {alice.pw_name!r} cannot enter working directory {tmp_path} (it does not exist, "
        "or the user may not)")

    assert failed_to_start(jobctl_pg, missing_cwd) == (
        f"user {alice.pw_name!r} cannot enter working directory {tmp_path / 'missing'} (it "
        "does not exist, or the user may not)")
    assert failed_to_start(jobctl_pg, as_root) == (
        f"user 'root' (the user of its submitter {dave!r}, by {user_map}) is root, and a "
        "worker with --run-as-submitter never runs a job as root")

    assert logs(jobctl_pg, mapped)[0] == f"{carol.pw_name}\n".encode()
    made = (Path(carol.pw_dir) / "made").stat()
    assert (made.st_uid, made.st_gid) == (carol.pw_uid, carol.pw_gid)
    assert jobctl_pg.status(mapped)["submitted_by"] == bob


# `jobctl ARGS…` as another user, for good (real, effective and saved uid): the interpreter
# this suite runs on may live where that user cannot read (root's pyenv), so what the command
# needs is imported first, as root; then the process drops root and runs the command line.
AS_USER = """
import os, sys
import jobctl.cli.app, jobctl.cli.worker, jobctl.cli.common, jobctl.cli.render, jobctl.config
import jobctl.runas, jobctl.store.url, jobctl.worker.loop, tomllib, string
os.setgroups([])
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[1]))
assert os.getresuid() == (int(sys.argv[1]),) * 3
sys.exit(jobctl.cli.app.run(sys.argv[3:]))
"""


def test_a_worker_that_is_not_root_refuses_to_run_jobs_as_their_submitters(
        jobctl_pg: Jobctl, accounts: Accounts) -> None:
    someone = accounts.user()
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": someone.pw_dir,
           "JOBCTL_DATABASE_URL": jobctl_pg.database_url}
    refused = subprocess.run(
        [sys.executable, "-c", AS_USER, str(someone.pw_uid), str(someone.pw_gid), "worker",
         "start", "--burst", "--run-as-submitter"], env=env, cwd=someone.pw_dir,
        capture_output=True, text=True, timeout=60, check=False)
    assert (refused.returncode, refused.stdout) == (2, ""), describe(refused)
    assert refused.stderr == (
        "jobctl: error: --run-as-submitter needs a worker running as root (only root can start "
        f"a job as another user); this one runs as uid {someone.pw_uid}\n")
    assert json.loads(jobctl_pg.look("worker", "list", "--all", "-o", "json")) == []


def test_a_root_worker_on_postgresql_refuses_without_a_flag(jobctl_pg: Jobctl) -> None:
    """The real executable, as root: exit 2, one line saying why and what to pass."""
    job_id = jobctl_pg.submit("--", "true")
    refused = subprocess.run([str(JOBCTL), "worker", "start", *FAST_WORKER_OPTIONS],
                             env=root_worker_env(jobctl_pg), capture_output=True, text=True,
                             timeout=60, check=False)
    assert (refused.returncode, refused.stdout) == (2, ""), describe(refused)
    assert refused.stderr.startswith("jobctl: error: refusing to run jobs as root on "
                                     "PostgreSQL: ")
    assert refused.stderr.count("\n") == 1
    assert "pass --run-as-submitter" in refused.stderr and "--allow-root" in refused.stderr
    assert jobctl_pg.status(job_id)["state"] == "queued"


def test_the_job_enters_its_directory_as_its_user(tmp_path: Path, accounts: Accounts,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Popen changes directory as root, before it changes user: a directory swapped, after the
    worker's check, for one the user may not enter would be entered all the same. As its
    submitter the job enters it itself, as the user. The race is made certain here by a check
    that says yes (RunAs.can_enter) to a directory of root's (mode 700), and a real process."""
    from jobctl.models import Delivery
    from jobctl.runas import SubmitterUsers
    from jobctl.store.queue import ClaimedJob
    from jobctl.worker.process import JobProcess, RunAs

    alice = accounts.user()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    monkeypatch.setattr(RunAs, "can_enter", lambda self, directory: True)
    output: list[tuple[str, bytes]] = []
    job = ClaimedJob(id=1, attempt=1, argv=["pwd"], env={}, cwd=str(locked), timeout_s=30.0,
                     max_attempts=1, backoff_s=1.0, delivery=Delivery.AT_LEAST_ONCE,
                     queue="default", submitted_by=alice.pw_name)
    process = JobProcess(job, lambda stream, seq, data: output.append((stream, data)),
                         base_env={"PATH": os.defpath}, submitters=SubmitterUsers({}))
    result = process.run()
    assert result.exit_code == 125, (result, output)
    assert output == [("stderr", f"jobctl: user {alice.pw_name!r} cannot enter working directory "
                                 f"{locked}\n".encode())]
    # and where the user may enter (her home), it does
    output.clear()
    entered = JobProcess(dataclasses.replace(job, cwd=alice.pw_dir),
                         lambda stream, seq, data: output.append((stream, data)),
                         base_env={"PATH": os.defpath}, submitters=SubmitterUsers({})).run()
    assert (entered.exit_code, output) == (0, [("stdout", f"{alice.pw_dir}\n".encode())])
