"""Submit → worker → logs through the real executable; `submit --wait`/`--follow` exit codes."""

from __future__ import annotations

import os
import pty
import re
import subprocess
from datetime import UTC, datetime

from e2e_support import JOBCTL, Jobctl, describe, parse_time
from pgbouncer import ALSO_THROUGH_PGBOUNCER


@ALSO_THROUGH_PGBOUNCER
def test_submit_burst_worker_logs_and_status(jobctl: Jobctl) -> None:
    submitted = jobctl("job", "submit", "--", "echo", "hello")
    assert submitted.returncode == 0, describe(submitted)
    # Piped, so the bare id and nothing else: `id=$(jobctl job submit …)` must work.
    assert re.fullmatch(r"[1-9]\d*\n", submitted.stdout), submitted.stdout
    job_id = int(submitted.stdout)

    worker = jobctl("worker", "start", "--burst", "--lease", "5s")
    assert worker.returncode == 0, describe(worker)

    logs = jobctl.run_bytes("job", "logs", str(job_id))
    assert logs.returncode == 0, describe(logs)
    assert logs.stdout == b"hello\n"
    assert logs.stderr == b""

    status = jobctl.status(job_id)
    assert status["id"] == job_id
    assert status["state"] == "succeeded"
    assert status["exit_code"] == 0
    assert status["argv"] == ["echo", "hello"]
    created = parse_time(status["created_at"])
    assert abs((datetime.now(UTC) - created).total_seconds()) < 120
    assert created <= parse_time(status["started_at"]) <= parse_time(status["finished_at"])
    attempts = status["attempts"]
    assert len(attempts) == 1, attempts
    assert attempts[0]["attempt"] == 1
    assert attempts[0]["outcome"] == "succeeded"
    assert attempts[0]["exit_code"] == 0


def test_submit_on_a_terminal_prints_a_sentence(jobctl_sqlite: Jobctl) -> None:
    """The bare id is for pipes; a person at a terminal gets a sentence naming the id."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.run(
            [str(JOBCTL), "job", "submit", "--", "true"], stdout=terminal,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=jobctl_sqlite.env,
            timeout=60, check=False)
        os.close(terminal)
        terminal = -1
        output = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the terminal side is closed and drained
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert process.returncode == 0, process.stderr
    text = output.decode()
    assert re.search(r"\bjob 1\b", text), text
    assert not re.fullmatch(r"\d+\s*", text), text


# (command, the exit code `submit --wait` must end with)
WAIT_CASES = {
    "true": (["true"], 0),
    "exit 3": (["sh", "-c", "exit 3"], 3),
    "missing command": (["/nonexistent/jobctl-e2e-no-such-command"], 127),
    "kill -9": (["sh", "-c", "kill -9 $$"], 128 + 9),
}


@ALSO_THROUGH_PGBOUNCER
def test_submit_wait_and_follow_exit_with_the_jobs_exit_code(jobctl: Jobctl) -> None:
    jobctl.start_worker("--concurrency", "6")
    waiting = {
        label: jobctl.popen("job", "submit", "--wait", "--", *argv)
        for label, (argv, _) in WAIT_CASES.items()
    }
    follow_fail = jobctl.popen(
        "job", "submit", "--follow", "--", "sh", "-c",
        "echo one; echo two >&2; sleep 0.3; echo three; exit 3")
    follow_ok = jobctl.popen("job", "submit", "--follow", "--", "echo", "fine")

    for label, process in waiting.items():
        out, err = process.communicate(timeout=60)
        expected = WAIT_CASES[label][1]
        assert process.returncode == expected, (
            f"{label}: exit {process.returncode}, expected {expected}; stderr {err!r}")
        assert re.fullmatch(rb"\d+\n", out), f"{label}: stdout {out!r}"

    out, err = follow_fail.communicate(timeout=60)
    assert follow_fail.returncode == 3, err
    # --follow streams the job's output, stdout to stdout and stderr to stderr.
    assert out == b"one\nthree\n"
    assert b"two\n" in err

    out, err = follow_ok.communicate(timeout=60)
    assert follow_ok.returncode == 0, err
    assert out == b"fine\n"
