"""The operator's commands: `top --once`, `stats`, `db prune` and `db status` with table sizes run
in-process (`run_cli`); the live view of `top` in a pseudo-terminal and `job list --watch`
(stopped by SIGINT) through the real `jobctl` executable."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import termios
import time
from collections.abc import Iterator

import pytest
from inprocess import JOBCTL, jobctl, process_env
from obs_seed import Seeded, seed
from pgbouncer import ALSO_THROUGH_PGBOUNCER


@pytest.fixture
def seeded(db_url: str) -> Iterator[Seeded]:
    data = seed(db_url)
    yield data
    data.close()


# --- top ------------------------------------------------------------------------------------------


@ALSO_THROUGH_PGBOUNCER
def test_top_once_shows_queues_workers_running_jobs_and_failures(seeded: Seeded) -> None:
    url = seeded.url
    out = jobctl(url, "top", "--once").stdout
    sections = ["Queues", "Workers", "Running jobs (2)", "Recent failures"]
    positions = [out.index(title) for title in sections]
    assert positions == sorted(positions), out
    queues, workers, running, failures = (
        out[start:end] for start, end in zip(positions, [*positions[1:], len(out)], strict=True))
    # Queues: default has one waiting, one queued and one running job.
    [default_row] = [line.split() for line in queues.splitlines()
                     if line.split()[:1] == ["default"]]
    assert default_row[1:4] == ["1", "1", "1"], default_row
    assert any(line.split()[:1] == ["batch"] for line in queues.splitlines())
    # Both workers, with their hosts and slots in use.
    for name in ("alpha", "beta"):
        [row] = [line.split() for line in workers.splitlines() if name in line.split()]
        assert f"host-{name}" in row and "1/2" in row and "running" in row, row
    # Both running jobs, with the worker that runs each.
    for job, worker in (("running", "alpha"), ("batch-running", "beta")):
        [row] = [line.split() for line in running.splitlines()
                 if str(seeded[job]) in line.split()[:1]]
        assert job in row and worker in row, row
    # Both failures, newest first, with their exit codes.
    ids = [int(line.split()[0]) for line in failures.splitlines()
           if line.split()[:1] and line.split()[0].isdigit()]
    assert ids == [seeded["needed-by-done"], seeded["old-failed"]], failures
    assert "exit code 3" in failures


def test_top_piped_prints_one_snapshot_and_exits(seeded: Seeded) -> None:
    url = seeded.url
    out = jobctl(url, "top").stdout
    assert out.count("Recent failures") == 1


@ALSO_THROUGH_PGBOUNCER
def test_top_in_a_terminal_quits_on_q_and_restores_it(db_url: str) -> None:
    """The live view in a real pseudo-terminal (on PostgreSQL with its notification listener):
    full screen, refreshed, `q` quits with exit 0, and the terminal's modes come back as they
    were (no cbreak left behind)."""
    jobctl(db_url, "db", "upgrade")
    controller, terminal = pty.openpty()
    before = termios.tcgetattr(terminal)
    env = process_env()
    env.update(JOBCTL_DATABASE_URL=db_url, TERM="xterm", COLUMNS="120", LINES="40")
    process = subprocess.Popen([JOBCTL, "top", "--interval", "0.3s"], stdin=terminal,
                               stdout=terminal, stderr=terminal, env=env, start_new_session=True)
    try:
        seen = _read_until(controller, b"Recent failures", 30)
        # It refreshes: the header's clock line comes again.
        seen += _read_until(controller, b"jobctl top", 10)
        os.write(controller, b"q")
        assert process.wait(timeout=15) == 0
        seen += _drain(controller)
        assert termios.tcgetattr(terminal) == before
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.close(terminal)
    assert b"\x1b[?1049h" in seen, "no alternate screen"  # entered …
    assert b"\x1b[?1049l" in seen, "the alternate screen was not left"  # … and left
    assert b"Traceback" not in seen


def test_top_on_postgresql_refreshes_when_notified(pg_url: str) -> None:
    """A 60 s refresh interval, yet a submitted job shows within seconds: NOTIFY woke it."""
    jobctl(pg_url, "db", "upgrade")
    controller, terminal = pty.openpty()
    env = process_env()
    env.update(JOBCTL_DATABASE_URL=pg_url, TERM="xterm", COLUMNS="120", LINES="40")
    process = subprocess.Popen([JOBCTL, "top", "--interval", "60s"], stdin=terminal,
                               stdout=terminal, stderr=terminal, env=env, start_new_session=True)
    try:
        _read_until(controller, b"Recent failures", 30)
        time.sleep(1)  # the listener is connected (it also refreshes once when it connects)
        _drain(controller)
        jobctl(pg_url, "job", "submit", "--queue", "notified", "--", "true")
        _read_until(controller, b"notified", 20)
        os.write(controller, b"q")
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.close(terminal)


def test_top_restores_the_terminal_on_ctrl_c(sqlite_url: str) -> None:
    jobctl(sqlite_url, "db", "upgrade")
    controller, terminal = pty.openpty()
    before = termios.tcgetattr(terminal)
    env = process_env()
    env.update(JOBCTL_DATABASE_URL=sqlite_url, TERM="xterm")
    process = subprocess.Popen([JOBCTL, "top"], stdin=terminal, stdout=terminal,
                               stderr=terminal, env=env, start_new_session=True,
                               preexec_fn=_sigint_as_a_terminal_sends_it)
    try:
        _read_until(controller, b"Recent failures", 30)
        assert termios.tcgetattr(terminal)[3] != before[3]  # cbreak: ICANON/ECHO off
        assert _interrupt(process) == 0
        seen = _drain(controller)
        assert termios.tcgetattr(terminal) == before
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.close(terminal)
    assert b"\x1b[?1049l" in seen and b"Traceback" not in seen


def _sigint_as_a_terminal_sends_it() -> None:
    """In the child, before exec: SIGINT at its default, as an interactive shell leaves it for
    a foreground command. (A process that starts with SIGINT ignored keeps it ignored, as
    Python and every well-behaved program do; the test process's own disposition is no
    business of the program under test.)"""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int:
    """Ctrl-C: SIGINT, then the exit status; says why when the process does not end."""
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            with open(f"/proc/{process.pid}/status") as status:
                masks = [line.strip() for line in status if line.startswith(("Sig", "State"))]
        except OSError:
            masks = []
        raise AssertionError(f"still running {timeout_s:.0f}s after SIGINT: {masks}") from None


def _read_until(fd: int, needle: bytes, timeout_s: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout_s
    while needle not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{needle!r} not seen in {timeout_s}s: {data[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            data += os.read(fd, 65536)
    return data


def _drain(fd: int) -> bytes:
    data = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


# --- stats ----------------------------------------------------------------------------------------


def test_stats_json_and_plain(seeded: Seeded) -> None:
    url = seeded.url
    document = json.loads(jobctl(url, "stats", "--window", "60d", "-o", "json").stdout)
    assert document["window_s"] == 60 * 86_400
    by_queue = {q["queue"]: q for q in document["queues"]}
    default = by_queue["default"]
    assert (default["waiting"], default["queued"], default["running"]) == (1, 1, 1)
    assert (default["succeeded"], default["failed"], default["cancelled"]) == (4, 2, 1)
    assert default["failure_rate"] == pytest.approx(2 / 6, abs=1e-4)
    assert by_queue["batch"]["failure_rate"] is None
    assert document["total"]["running"] == 2

    lines = jobctl(url, "stats").stdout.splitlines()
    header = lines[0].split("\t")
    assert header[:4] == ["QUEUE", "WAITING", "QUEUED", "RUNNING"]
    rows = {line.split("\t")[0]: dict(zip(header, line.split("\t"), strict=True))
            for line in lines[1:]}
    assert set(rows) == {"default", "batch", "(all)"}
    assert rows["default"]["SUCCEEDED"] == "1"  # the default window is an hour


def test_stats_rejects_a_bad_window(sqlite_url: str) -> None:
    result = jobctl(sqlite_url, "stats", "--window", "0s", expect=2)
    assert result.stderr.startswith("jobctl: error: --window") and result.stderr.count("\n") == 1


# --- db prune and db status -----------------------------------------------------------------------


def test_db_prune_dry_run_then_for_real(seeded: Seeded) -> None:
    url = seeded.url
    dry = json.loads(jobctl(url, "db", "prune", "--older-than", "30d", "--dry-run",
                            "-o", "json").stdout)
    assert dry == {"jobs": 5, "attempts": 4, "log_chunks": 16, "log_bytes": dry["log_bytes"],
                   "kept_for_dependents": 1, "dry_run": True, "logs_only": False}
    assert len(json.loads(jobctl(url, "job", "list", "-o", "json").stdout)) == len(seeded.ids)
    text = jobctl(url, "db", "prune", "--older-than", "30d", "--state", "failed,cancelled").stdout
    assert "jobs deleted:" in text and text.split("jobs deleted:")[1].split()[0] == "3"
    left = {job["name"] for job in json.loads(jobctl(url, "job", "list", "-o", "json").stdout)}
    assert {"old-failed", "needed-by-done", "old-cancelled"}.isdisjoint(left)
    assert {"old-ok", "needed", "running", "queued", "waiting"} <= left


@pytest.mark.parametrize(("args", "message"), [
    (["--older-than", "soon"], "--older-than"),
    (["--older-than", "1d", "--state", "running"], "only finished jobs"),
    (["--older-than", "1d", "--state", "nonsense"], "unknown state"),
])
def test_db_prune_rejects_bad_input(sqlite_url: str, args: list[str], message: str) -> None:
    result = jobctl(sqlite_url, "db", "prune", *args, expect=2)
    assert result.stderr.startswith("jobctl: error:") and message in result.stderr


def test_db_status_shows_row_counts_and_sizes(seeded: Seeded) -> None:
    url = seeded.url
    document = json.loads(jobctl(url, "db", "status", "-o", "json").stdout)
    tables = {t["table"]: t for t in document["tables"]}
    assert tables["jobs"]["rows"] == len(seeded.ids)
    assert tables["workers"]["rows"] == 2
    assert (seeded.database.backend.title == "PostgreSQL") is False or tables["jobs"]["bytes"] > 0
    lines = jobctl(url, "db", "status").stdout.splitlines()
    [jobs_line] = [line for line in lines if line.startswith("jobs\t")]
    assert jobs_line.split("\t")[1] == str(len(seeded.ids))


# --- job list --watch -----------------------------------------------------------------------------


def test_job_list_watch_prints_again_on_change(db_url: str) -> None:
    first = int(jobctl(db_url, "job", "submit", "--name", "first", "--", "true").stdout)
    env = process_env()
    env["JOBCTL_DATABASE_URL"] = db_url
    process = subprocess.Popen([JOBCTL, "job", "list", "--watch", "-o", "ids"], env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True,
                               preexec_fn=_sigint_as_a_terminal_sends_it)
    assert process.stdout is not None
    try:
        out = _read_until(process.stdout.fileno(), f"{first}\n".encode(), 30)
        time.sleep(1.5)  # a few polls with no change print nothing more
        out += _drain(process.stdout.fileno())
        assert out == f"{first}\n".encode()
        second = int(jobctl(db_url, "job", "submit", "--name", "second", "--", "true").stdout)
        out += _read_until(process.stdout.fileno(), f"{second}\n{first}\n".encode(), 30)
        assert out == f"{first}\n\n{second}\n{first}\n".encode()
        assert _interrupt(process) == 130
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
        assert process.stderr is not None
        stderr = process.stderr.read().decode()
        process.stderr.close()
    assert "Traceback" not in stderr


@pytest.mark.parametrize("args", [["top", "--once", "--window", "0s"],
                                  ["top", "--once", "--interval", "often"],
                                  ["stats", "-o", "ids"]])
def test_top_and_stats_reject_bad_input(sqlite_url: str, args: list[str]) -> None:
    result = jobctl(sqlite_url, *args, expect=2)
    assert result.stderr.startswith("jobctl: error:") and result.stderr.count("\n") == 1
