"""The commands typed all day, and bulk submit, never import SQLAlchemy once the database exists
(its import alone costs more than the rest of `job list`): see jobctl.store.direct."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobctl.client import Client
from jobctl.models import JobSpec

PROBE = """
import sys
from jobctl.cli.app import run
code = run(sys.argv[1:])
sys.stderr.write(f"code={code} sqlalchemy={'sqlalchemy' in sys.modules}\\n")
"""


def run_probe(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, "--database-url", url, *args],
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize("args", [
    ["job", "list"],
    ["job", "list", "--state", "queued", "--label", "team=ops", "-o", "json"],
    ["job", "submit", "--", "echo", "hello"],
    ["job", "submit", "--label", "a=b", "--in", "1h", "--shell", "echo hi"],
    ["job", "status", "1"],
    ["job", "status", "1", "-o", "json"],
    ["job", "logs", "1"],
])
def test_everyday_commands_skip_sqlalchemy(db_url: str, args: list[str]) -> None:
    Client(db_url).submit(JobSpec(argv=["true"], labels={"team": "ops"}))  # creates the schema
    result = run_probe(db_url, *args)
    assert "code=0 sqlalchemy=False" in result.stderr, result.stderr


def test_bulk_submit_skips_sqlalchemy_and_keeps_the_order(db_url: str, tmp_path: Path) -> None:
    Client(db_url).list_jobs()  # creates the schema
    commands = tmp_path / "commands.txt"
    commands.write_text("".join(f"echo {n}\n" for n in range(200)))
    result = run_probe(db_url, "job", "submit", "--from-file", str(commands), "--queue", "bulk")
    assert "code=0 sqlalchemy=False" in result.stderr, result.stderr
    ids = [int(line) for line in result.stdout.split()]
    jobs = {job.id: job for job in Client(db_url).list_jobs(queues=["bulk"], limit=None)}
    assert [jobs[job_id].argv[-1] for job_id in ids] == [f"echo {n}" for n in range(200)]


def test_the_first_command_on_a_new_database_creates_it(sqlite_url_empty: str) -> None:
    result = run_probe(sqlite_url_empty, "job", "submit", "--", "true")
    assert "code=0" in result.stderr and result.stdout.strip() == "1", result.stderr
    assert [job.argv for job in Client(sqlite_url_empty).list_jobs()] == [["true"]]


def test_dependencies_unique_keys_cancel_and_retry_skip_sqlalchemy_too(db_url: str) -> None:
    client = Client(db_url)
    first = client.submit(JobSpec(argv=["true"], unique_key="k")).id
    result = run_probe(db_url, "job", "submit", "--unique-key", "k", "--", "true")
    assert "code=0 sqlalchemy=False" in result.stderr, result.stderr
    assert result.stdout.strip() == str(first)  # the key's first job, nothing new
    result = run_probe(db_url, "job", "submit", "--after", str(first), "--", "true")
    assert "code=0 sqlalchemy=False" in result.stderr, result.stderr
    waiting = int(result.stdout)
    assert client.get(waiting).state.value == "waiting"
    result = run_probe(db_url, "job", "cancel", str(first))
    assert "code=0 sqlalchemy=False" in result.stderr, result.stderr
    # cancelling it cancels what waits for it (--after), in the same transaction
    assert [client.get(i).state.value for i in (first, waiting)] == ["cancelled", "cancelled"]
    result = run_probe(db_url, "job", "retry", str(first))
    assert "code=0 sqlalchemy=False" in result.stderr, result.stderr
    assert client.get(first).state.value == "queued"


def test_waiting_for_a_job_skips_sqlalchemy(db_url: str) -> None:
    client = Client(db_url)
    job_id = client.submit(JobSpec(argv=["true"])).id
    client.cancel([job_id])
    result = run_probe(db_url, "job", "wait", str(job_id))
    assert "code=125 sqlalchemy=False" in result.stderr, result.stderr  # cancelled: 125


def test_a_worker_runs_its_jobs_without_sqlalchemy(db_url: str) -> None:
    """`worker start` on an existing database: register, claim, output, completion, retries,
    dependents released and failed, the rescuer, deregister — all through the driver."""
    client = Client(db_url)
    ok = client.submit(JobSpec(argv=["sh", "-c", "echo out; echo err >&2"], queue="w")).id
    flaky = client.submit(JobSpec(argv=["sh", "-c", "exit 3"], queue="w", retries=1,
                                  backoff_s=0.1)).id
    after_ok = client.submit(JobSpec(argv=["true"], queue="w", after=(ok,))).id
    after_flaky = client.submit(JobSpec(argv=["true"], queue="w", after=(flaky,))).id
    result = run_probe(db_url, "worker", "start", "--burst", "--queue", "w", "--concurrency", "2",
                       "--rescue-interval", "0.1s")
    assert "code=0 sqlalchemy=False" in result.stderr, result.stderr
    states = {job_id: client.get(job_id).state.value
              for job_id in (ok, flaky, after_ok, after_flaky)}
    assert states == {ok: "succeeded", flaky: "failed", after_ok: "succeeded",
                      after_flaky: "failed"}
    assert client.get(flaky).attempt == 2
    chunks = list(client.logs(ok))
    assert {(chunk.stream.value, chunk.data) for chunk in chunks} == {("stdout", b"out\n"),
                                                                      ("stderr", b"err\n")}
    [worker] = client.workers(include_ended=True)
    assert worker.state.value == "stopped"


def test_a_worker_on_a_new_database_creates_it_first(sqlite_url_empty: str) -> None:
    result = run_probe(sqlite_url_empty, "worker", "start", "--burst")
    assert "code=0" in result.stderr, result.stderr
    assert Client(sqlite_url_empty).workers(include_ended=True)[0].state.value == "stopped"


def test_a_worker_on_a_url_only_sqlalchemy_parses_still_works(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobctl.db'}?timeout=5"
    job_id = Client(url).submit(JobSpec(argv=["true"])).id
    result = run_probe(url, "worker", "start", "--burst")
    assert "code=0" in result.stderr, result.stderr
    assert Client(url).get(job_id).state.value == "succeeded"


def test_a_worker_that_cannot_reach_the_server_says_so_in_one_line() -> None:
    result = run_probe("postgresql://me:hunter2@127.0.0.1:1/jobs", "worker", "start", "--burst")
    assert "code=4" in result.stderr, result.stderr
    # The password on the command line is warned of first (test_password_warnings.py).
    warning, line = [line for line in result.stderr.splitlines()
                     if not line.startswith("code=")]
    assert warning.startswith("jobctl: warning: --database-url holds a password")
    assert line.startswith("jobctl: error: cannot reach PostgreSQL at 127.0.0.1:1/jobs: ")
    assert "hunter2" not in result.stderr
