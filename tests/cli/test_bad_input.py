"""Malformed invocations, run in-process (`run_cli`; one through the real `jobctl` executable),
on both backends.

Each one must exit with its documented code, say why in exactly one line on stderr that starts
`jobctl: error: ` (no traceback, nothing on stdout), and leave the database exactly as it was:
every row of every table is compared before and after.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from inprocess import JOBCTL, process_env, run_cli

from jobctl.models import MAX_INPUT_BYTES, JobSpec, JobState
from jobctl.store import jobs, queue
from jobctl.store import workers as worker_rows
from jobctl.store.direct import open_or_create
from jobctl.store.engine import Database
from jobctl.store.queue import Outcome
from jobctl.store.schema import metadata

WORKER_ID = os.environ.get("PYTEST_XDIST_WORKER", "main")
UNKNOWN = "987654"  # an id that no test database holds
HUGE = str(2**64)  # an id no database can hold


# --- running jobctl -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str
    seconds: float


def jobctl(*args: str, url: str | None, extra_env: dict[str, str] | None = None) -> Result:
    env = {} if url is None else {"JOBCTL_DATABASE_URL": url}
    env.update(extra_env or {})
    started = time.monotonic()
    result = run_cli(*args, env=env)
    return Result(result.exit_code, result.stdout, result.stderr, time.monotonic() - started)


def assert_one_line_error(result: Result, code: int) -> str:
    """The contract for every error: exit code, one stderr line, no traceback, empty stdout.
    Returns the message after the prefix."""
    where = f"stdout={result.stdout!r} stderr={result.stderr!r}"
    assert result.code == code, f"exit {result.code}, expected {code}: {where}"
    assert "Traceback" not in result.stderr + result.stdout, where
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr: {where}"
    assert result.stderr.endswith("\n"), where
    assert lines[0].startswith("jobctl: error: "), where
    assert len(lines[0]) > len("jobctl: error: ") + 5, where
    assert result.stdout == "", where
    return lines[0].removeprefix("jobctl: error: ")


# --- databases ----------------------------------------------------------------------------------


def snapshot(url: str) -> dict[str, Any]:
    """Every row of every table (and the schema revision): equal snapshots, unchanged database."""
    database = Database(url)
    try:
        with database.read() as connection:
            tables: dict[str, Any] = {
                table.name: [
                    tuple(row) for row in connection.execute(
                        sa.select(table).order_by(*table.primary_key.columns))
                ]
                for table in metadata.sorted_tables
            }
            tables["alembic_version"] = connection.execute(
                sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        return tables
    finally:
        database.dispose()


@dataclass(frozen=True)
class Seeded:
    url: str
    queued: int  # a queued job (never ran)
    finished: int  # a job that succeeded on its one attempt
    folder: Path  # for files the invocations name


def seed(url: str, folder: Path) -> Seeded:
    database = open_or_create(url)
    try:
        with database.write() as connection:
            worker = worker_rows.register(connection, name="w", hostname="h", pid=1,
                                          queues=["default"], concurrency=1, version="test")
            finished, _ = jobs.submit(connection, JobSpec(argv=["echo", "done"], name="done"))
        with database.write() as connection:
            [claimed] = queue.claim(connection, worker, queue.Claim(["default"], 1, 60.0))
            assert claimed.id == finished
        with database.write() as connection:
            applied = queue.complete(connection, worker, [Outcome(
                job_id=finished, attempt=1, state=JobState.SUCCEEDED,
                attempt_outcome="succeeded", exit_code=0, signal=None, error=None)])
            assert applied == {finished}
            queued, _ = jobs.submit(connection, JobSpec(argv=["echo", "later"], name="later"))
    finally:
        database.close()
    (folder / "empty.txt").write_text("")
    (folder / "comments.txt").write_text("# nothing but a comment\n\n   \n")
    (folder / "big.bin").write_bytes(b"\x00" * (MAX_INPUT_BYTES + 1))
    (folder / "flow.toml").write_text('[tasks.a]\ncommand = "true"\n')
    return Seeded(url, queued, finished, folder)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Seeded]:
    """One seeded database per backend for the whole module: none of these invocations may
    change it, and each test checks that it did not."""
    folder = tmp_path_factory.mktemp(f"bad-input-{request.param}")
    if request.param == "sqlite":
        yield seed(f"sqlite:///{folder / 'jobctl.db'}", folder)
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = f"jobctl_bad_input_{WORKER_ID}_{uuid.uuid4().hex[:10]}".lower()
    url = cluster.create_database(name, template=request.getfixturevalue("pg_template"))
    try:
        yield seed(url, folder)
    finally:
        cluster.drop_database(name)


# --- the malformed invocations ------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # {queued}, {finished}, {unknown}, {huge} and {folder} are filled in
    code: int
    says: tuple[str, ...]  # fragments the message must contain (case-insensitive)


CASES = [
    Case("timeout-bad-duration", ("job", "submit", "--timeout", "5x", "--", "echo"), 2,
         ("--timeout", "5x")),
    Case("in-bad-duration", ("job", "submit", "--in", "5x", "--", "echo"), 2, ("--in", "5x")),
    Case("retry-backoff-bad-duration",
         ("job", "submit", "--retry-backoff", "5x", "--", "echo"), 2, ("--retry-backoff", "5x")),
    Case("wait-timeout-bad-duration", ("job", "wait", "{queued}", "--timeout", "5x"), 2,
         ("--timeout", "5x")),
    Case("status-unknown-id", ("job", "status", "{unknown}"), 3, ("{unknown}",)),
    Case("logs-unknown-id", ("job", "logs", "{unknown}"), 3, ("{unknown}",)),
    Case("cancel-unknown-id", ("job", "cancel", "{unknown}"), 3, ("{unknown}",)),
    # All or nothing: the known, queued job must not be cancelled either (the snapshot says).
    Case("cancel-known-and-unknown-id", ("job", "cancel", "{queued}", "{unknown}"), 3,
         ("{unknown}",)),
    Case("retry-unknown-id", ("job", "retry", "{unknown}"), 3, ("{unknown}",)),
    Case("wait-unknown-id", ("job", "wait", "{unknown}", "--timeout", "10s"), 3, ("{unknown}",)),
    Case("wait-known-and-unknown-id", ("job", "wait", "{finished}", "{unknown}"), 3,
         ("{unknown}",)),
    Case("status-id-not-a-number", ("job", "status", "abc"), 2, ("abc",)),
    # Ids, numbers and durations beyond what the database can store: the same errors as any
    # other bad value, never a driver's traceback.
    Case("status-id-beyond-bigint", ("job", "status", "{huge}"), 3, ("{huge}",)),
    Case("cancel-id-beyond-bigint", ("job", "cancel", "{queued}", "{huge}"), 3, ("{huge}",)),
    Case("wait-id-beyond-bigint", ("job", "wait", "{huge}", "--timeout", "10s"), 3,
         ("{huge}",)),
    Case("retry-id-beyond-bigint", ("job", "retry", "{huge}"), 3, ("{huge}",)),
    Case("logs-id-beyond-bigint", ("job", "logs", "{huge}"), 3, ("{huge}",)),
    Case("priority-beyond-int", ("job", "submit", "--priority", "99999999999", "--", "echo"), 2,
         ("--priority",)),
    Case("retries-beyond-int", ("job", "submit", "--retries", "2147483647", "--", "echo"), 2,
         ("--retries",)),
    Case("retry-retries-beyond-int", ("job", "retry", "{finished}", "--retries", "99999999999"),
         2, ("--retries",)),
    Case("in-beyond-any-date", ("job", "submit", "--in", "99999999999999d", "--", "echo"), 2,
         ("--in",)),
    Case("retry-backoff-beyond-any-date",
         ("job", "submit", "--retry-backoff", "99999999999999d", "--", "echo"), 2,
         ("--retry-backoff",)),
    Case("concurrency-beyond-int",
         ("worker", "start", "--concurrency", "99999999999", "--burst"), 2, ("--concurrency",)),
    Case("submit-no-command", ("job", "submit"), 2, ("command",)),
    Case("submit-only-options", ("job", "submit", "--name", "x", "--"), 2, ("command",)),
    Case("shell-two-args", ("job", "submit", "--shell", "echo a", "echo b"), 2, ("--shell",)),
    Case("env-without-value", ("job", "submit", "--env", "NOVALUE", "--", "echo"), 2,
         ("--env", "NOVALUE")),
    Case("env-empty-key", ("job", "submit", "--env", "=x", "--", "echo"), 2, ("--env",)),
    Case("label-without-value", ("job", "submit", "--label", "team", "--", "echo"), 2,
         ("--label", "team")),
    Case("list-label-without-value", ("job", "list", "--label", "team"), 2, ("--label",)),
    Case("unknown-output-format", ("job", "list", "-o", "xml"), 2, ("xml",)),
    Case("status-unknown-output-format", ("job", "status", "{finished}", "-o", "yaml"), 2,
         ("yaml",)),
    Case("unknown-option", ("job", "list", "--bogus"), 2, ("--bogus",)),
    Case("unknown-command", ("job", "frobnicate"), 2, ("frobnicate",)),
    Case("unknown-delivery", ("job", "submit", "--delivery", "sometimes", "--", "echo"), 2,
         ("sometimes",)),
    Case("unknown-state-filter", ("job", "list", "--state", "sleeping"), 2, ("sleeping",)),
    Case("unknown-stream", ("job", "logs", "{finished}", "--stream", "both"), 2, ("both",)),
    Case("at-garbage", ("job", "submit", "--at", "garbage", "--", "echo"), 2,
         ("--at", "garbage")),
    Case("at-and-in", ("job", "submit", "--at", "+1m", "--in", "5m", "--", "echo"), 2,
         ("--at", "--in")),
    Case("negative-retries", ("job", "submit", "--retries", "-1", "--", "echo"), 2,
         ("--retries",)),
    Case("priority-not-a-number", ("job", "submit", "--priority", "high", "--", "echo"), 2,
         ("high",)),
    Case("zero-timeout", ("job", "submit", "--timeout", "0s", "--", "echo"), 2, ("--timeout",)),
    Case("negative-limit", ("job", "list", "--limit", "-1"), 2, ("--limit",)),
    Case("concurrency-zero", ("worker", "start", "--concurrency", "0", "--burst"), 2,
         ("--concurrency",)),
    Case("from-file-missing", ("job", "submit", "--from-file", "{folder}/missing.txt"), 2,
         ("missing.txt",)),
    Case("from-file-empty", ("job", "submit", "--from-file", "{folder}/empty.txt"), 2,
         ("empty.txt",)),
    Case("from-file-only-comments",
         ("job", "submit", "--from-file", "{folder}/comments.txt"), 2, ("comments.txt",)),
    Case("from-file-and-command",
         ("job", "submit", "--from-file", "{folder}/comments.txt", "--", "echo"), 2,
         ("--from-file",)),
    Case("retry-queued-job", ("job", "retry", "{queued}"), 2, ("{queued}", "queued")),
    Case("logs-attempt-out-of-range", ("job", "logs", "{finished}", "--attempt", "9"), 3,
         ("{finished}", "9")),
    Case("max-lost-zero", ("job", "submit", "--max-lost", "0", "--", "echo"), 2,
         ("--max-lost", "0")),
    Case("max-lost-not-a-number", ("job", "submit", "--max-lost", "abc", "--", "echo"), 2,
         ("--max-lost", "abc")),
    Case("schedule-max-lost-zero",
         ("schedule", "add", "s", "--every", "1h", "--max-lost", "0", "--", "echo"), 2,
         ("--max-lost",)),
    Case("input-missing", ("job", "submit", "--input", "{folder}/missing.bin", "--", "cat"), 2,
         ("--input", "missing.bin")),
    Case("input-beyond-1-mib", ("job", "submit", "--input", "{folder}/big.bin", "--", "cat"), 2,
         ("--input", "big.bin", "1 MiB")),
    Case("input-and-from-file-both-stdin", ("job", "submit", "--input", "-", "--from-file", "-"),
         2, ("--input -", "--from-file -")),
    Case("user-empty", ("job", "submit", "--user", "", "--", "id"), 2, ("--user",)),
    Case("schedule-workflow-and-user",
         ("schedule", "add", "s", "--every", "1h", "--workflow", "{folder}/flow.toml", "--user",
          "alice"), 2, ("--user", "workflow")),
    # `--debug` after `--` belongs to the job's command, not to jobctl.
    Case("debug-in-job-command", ("job", "submit", "--timeout", "5x", "--", "tool", "--debug"),
         2, ("5x",)),
    # Dead-man's switches: schedules' --alert-after and checks.
    *[Case(f"schedule-alert-{name}",
           ("schedule", "add", "s", "--every", "1h", *options, "--", "echo"), 2, says)
      for name, options, says in (
          ("after-banana", ("--alert-after", "banana"), ("--alert-after", "banana")),
          ("after-zero", ("--alert-after", "0s"), ("--alert-after", "0s")),
          ("hook-without-period", ("--on-overdue", "echo late"), ("--on-overdue",
                                                                    "--alert-after")),
          ("hook-empty", ("--alert-after", "1h", "--on-overdue", " "), ("--on-overdue",)))],
    Case("schedule-workflow-alert-after",
         ("schedule", "add", "s", "--every", "1h", "--workflow", "{folder}/flow.toml",
          "--alert-after", "1h"), 2, ("--alert-after", "workflow")),
    Case("schedule-edit-alert-after-banana", ("schedule", "edit", "s", "--alert-after", "x1"),
         2, ("--alert-after", "x1")),
    Case("check-add-every-zero", ("check", "add", "x", "--every", "0s"), 2, ("--every", "0s")),
    Case("check-add-every-banana", ("check", "add", "x", "--every", "banana"), 2,
         ("--every", "banana")),
    Case("check-add-without-every", ("check", "add", "x"), 2, ("--every",)),
    Case("check-add-grace-bad", ("check", "add", "x", "--every", "1h", "--grace", "soon"), 2,
         ("--grace", "soon")),
    Case("check-ping-unknown", ("check", "ping", "nope"), 3, ("nope",)),
    Case("check-fail-unknown", ("check", "ping", "nope", "--fail"), 3, ("nope",)),
    Case("check-show-unknown", ("check", "show", "nope"), 3, ("nope",)),
    Case("check-remove-unknown", ("check", "remove", "nope"), 3, ("nope",)),
    # Job arrays and retrying by exit code (README "Job arrays"): nothing submitted, no array row.
    Case("array-reversed-range", ("job", "submit", "--array", "5-1", "--", "echo"), 2,
         ("--array", "5-1", "ends before it starts")),
    Case("array-too-many-tasks", ("job", "submit", "--array", "1-2000000", "--", "echo"), 2,
         ("--array", "at most 100,000")),
    Case("array-throttle-zero", ("job", "submit", "--array", "0-9%0", "--", "echo"), 2,
         ("--array", "%N")),
    Case("array-not-a-spec", ("job", "submit", "--array", "a-b", "--", "echo"), 2,
         ("--array", "a-b")),
    Case("array-index-twice", ("job", "submit", "--array", "1-3,2", "--", "echo"), 2,
         ("index 2",)),
    Case("array-with-from-file",
         ("job", "submit", "--array", "0-1", "--from-file", "{folder}/comments.txt"), 2,
         ("--array", "--from-file")),
    Case("array-wait-unknown", ("job", "wait", "--array", "{unknown}"), 3, ("{unknown}",)),
    Case("array-wait-and-ids", ("job", "wait", "{queued}", "--array", "1"), 2, ("--array",)),
    Case("array-retry-without-failed", ("job", "retry", "--array", "1"), 2, ("--failed",)),
    Case("array-cancel-unknown", ("job", "cancel", "--array", "{unknown}"), 3, ("{unknown}",)),
    Case("array-after-unknown", ("job", "submit", "--after", "array:{unknown}", "--", "echo"),
         3, ("{unknown}",)),
    Case("retry-on-exit-not-a-code", ("job", "submit", "--retry-on-exit", "x", "--", "echo"),
         2, ("--retry-on-exit", "'x'")),
    Case("retry-on-exit-beyond-255",
         ("job", "submit", "--retry-on-exit", "75,256", "--", "echo"), 2, ("--retry-on-exit",)),
    Case("retry-and-no-retry-on-exit",
         ("job", "submit", "--retry-on-exit", "1", "--no-retry-on-exit", "2", "--", "echo"), 2,
         ("--retry-on-exit", "--no-retry-on-exit")),
    Case("no-retry-on-exit-empty", ("schedule", "add", "s", "--every", "1m",
                                    "--no-retry-on-exit", "", "--", "echo"), 2,
         ("--no-retry-on-exit",)),
    Case("junit-no-directory",
         ("job", "wait", "{finished}", "--junit", "{folder}/missing/report.xml"), 2,
         ("--junit",)),
]


def _fill(text: str, seeded: Seeded) -> str:
    return text.format(queued=seeded.queued, finished=seeded.finished, unknown=UNKNOWN,
                       huge=HUGE, folder=seeded.folder)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_invocation(case: Case, seeded: Seeded) -> None:
    before = snapshot(seeded.url)
    result = jobctl(*(_fill(arg, seeded) for arg in case.argv), url=seeded.url)
    message = assert_one_line_error(result, case.code)
    for fragment in case.says:
        assert _fill(fragment, seeded).lower() in message.lower(), message
    assert snapshot(seeded.url) == before, "the database changed"


def test_a_malformed_invocation_through_the_console_script(seeded: Seeded) -> None:
    """The installed `jobctl` script exits with the code `run` returns, one line on stderr."""
    before = snapshot(seeded.url)
    env = process_env()
    env["JOBCTL_DATABASE_URL"] = seeded.url
    proc = subprocess.run([JOBCTL, "job", "submit", "--timeout", "5x", "--", "echo"], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                          check=False)
    message = assert_one_line_error(Result(proc.returncode, proc.stdout, proc.stderr, 0.0), 2)
    assert "5x" in message
    assert snapshot(seeded.url) == before


def test_at_least_eighteen_distinct_cases() -> None:
    assert len({case.argv for case in CASES}) == len(CASES) >= 18


def test_debug_shows_the_traceback(seeded: Seeded) -> None:
    before = snapshot(seeded.url)
    result = jobctl("--debug", "job", "submit", "--timeout", "5x", "--", "echo", url=seeded.url)
    assert result.code != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "5x" in result.stderr.strip().splitlines()[-1]
    assert snapshot(seeded.url) == before


def test_debug_from_the_environment_shows_the_traceback(seeded: Seeded) -> None:
    # --debug declares JOBCTL_DEBUG as its variable; it must mean the same.
    result = jobctl("job", "submit", "--timeout", "5x", "--", "echo", url=seeded.url,
                    extra_env={"JOBCTL_DEBUG": "1"})
    assert result.code != 0
    assert "Traceback (most recent call last)" in result.stderr


# --- databases that cannot be used ------------------------------------------------------------

UNREACHABLE = "postgresql://user:s3cret@127.0.0.1:1/db"


@pytest.mark.parametrize("argv", [
    ("job", "list"),
    ("job", "submit", "--", "echo", "hi"),
    ("job", "status", "1"),
    ("db", "status"),
    ("db", "upgrade"),
], ids=lambda argv: "-".join(argv[:2]))
def test_unreachable_database(argv: tuple[str, ...]) -> None:
    result = jobctl(*argv, url=UNREACHABLE)
    message = assert_one_line_error(result, 4)
    assert "127.0.0.1:1" in message
    assert "s3cret" not in result.stderr + result.stdout
    assert result.seconds < 6, f"took {result.seconds:.1f}s"


def test_unreachable_database_given_as_flag() -> None:
    result = jobctl("--database-url", UNREACHABLE, "job", "list", url=None)
    # A password on the command line is warned of first (tests/cli/test_password_warnings.py).
    warning, error = result.stderr.splitlines(keepends=True)
    assert warning.startswith("jobctl: warning: --database-url holds a password"), warning
    message = assert_one_line_error(
        Result(result.code, result.stdout, error, result.seconds), 4)
    assert "127.0.0.1:1" in message
    assert "s3cret" not in result.stderr


def test_unsupported_database_scheme() -> None:
    result = jobctl("job", "list", url="mysql://x")
    message = assert_one_line_error(result, 2)
    assert "mysql" in message


def test_unsupported_database_scheme_hides_password() -> None:
    result = jobctl("job", "list", url="mysql://user:s3cret@db.example/jobs")
    assert_one_line_error(result, 2)
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize("url", [
    "not a url",
    "sqlite://",
    "sqlite:///:memory:",
    "postgresql://user:s3cret@127.0.0.1:notaport/db",
], ids=["no-url", "sqlite-no-path", "sqlite-memory", "port-not-a-number"])
def test_malformed_database_url(url: str) -> None:
    result = jobctl("job", "list", url=url)
    assert_one_line_error(result, 2)
    assert "s3cret" not in result.stderr


def test_sqlite_file_in_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    result = jobctl("job", "submit", "--", "echo", url=f"sqlite:///{missing / 'jobctl.db'}")
    message = assert_one_line_error(result, 4)
    assert str(missing) in message
    assert not (tmp_path / "no").exists(), "jobctl created the directory"


@pytest.mark.parametrize("argv", [("job", "list"), ("job", "submit", "--", "true")],
                         ids=["list", "submit"])
def test_a_file_that_is_not_an_sqlite_database(tmp_path: Path, argv: tuple[str, ...]) -> None:
    path = tmp_path / "jobctl.db"
    garbage = bytes(range(256)) * 40
    path.write_bytes(garbage)
    result = jobctl(*argv, url=f"sqlite:///{path}")
    message = assert_one_line_error(result, 4)
    assert str(path) in message and "not a database" in message
    assert path.read_bytes() == garbage  # left as it was


# --- a database at an older schema revision ---------------------------------------------------


@pytest.fixture
def outdated(db_url: str) -> str:
    database = open_or_create(db_url)
    try:
        with database.write() as connection:
            jobs.submit(connection, JobSpec(argv=["echo", "old"]))
            connection.execute("UPDATE alembic_version SET version_num = '0000'")
    finally:
        database.close()
    return db_url


@pytest.mark.parametrize("argv", [
    ("job", "list"),
    ("job", "submit", "--", "echo", "hi"),
    ("job", "status", "1"),
    ("job", "cancel", "1"),
    ("worker", "start", "--burst"),
], ids=lambda argv: "-".join(argv[:2]))
def test_outdated_schema(outdated: str, argv: tuple[str, ...]) -> None:
    before = snapshot(outdated)
    message = assert_one_line_error(jobctl(*argv, url=outdated), 4)
    assert "jobctl db upgrade" in message
    assert "0000" in message
    assert snapshot(outdated) == before


def test_outdated_schema_db_status(outdated: str) -> None:
    before = snapshot(outdated)
    result = jobctl("db", "status", url=outdated)
    assert result.code == 4, result
    assert "Traceback" not in result.stdout + result.stderr
    assert "jobctl db upgrade" in result.stdout + result.stderr
    assert "0000" in result.stdout
    assert snapshot(outdated) == before


def test_outdated_schema_db_status_json(outdated: str) -> None:
    import json

    result = jobctl("db", "status", "-o", "json", url=outdated)
    assert result.code == 4, result
    document = json.loads(result.stdout)
    assert document["current"] == "0000"
    assert document["up_to_date"] is False
    assert re.fullmatch(r"\w+", document["latest"])
