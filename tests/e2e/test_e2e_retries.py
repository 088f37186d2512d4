"""Automatic retries with backoff, `job retry`, and `job wait`'s exit codes."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from e2e_support import Jobctl, describe, parse_time
from pgbouncer import ALSO_THROUGH_PGBOUNCER


def _counting_command(counter: Path, last_line: str) -> list[str]:
    """A shell command that counts its runs in `counter`, then runs `last_line` with $n set."""
    script = (f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
              + last_line)
    return ["--", "sh", "-c", script]


@ALSO_THROUGH_PGBOUNCER
def test_fails_twice_then_succeeds_on_the_third_attempt(jobctl: Jobctl, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    job_id = jobctl.submit("--retries", "2", "--retry-backoff", "1s",
                           *_counting_command(counter, "[ $n -ge 3 ]"))

    # A burst worker waits for the retries of the jobs it ran.
    jobctl.burst(timeout=60)

    assert counter.read_text().strip() == "3"
    status = jobctl.status(job_id)
    assert status["state"] == "succeeded"
    assert status["attempt"] == 3
    assert status["exit_code"] == 0
    attempts = status["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["outcome"] for a in attempts] == ["failed", "failed", "succeeded"]
    assert [a["exit_code"] for a in attempts] == [1, 1, 0]
    starts = [parse_time(a["started_at"]) for a in attempts]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(starts)]
    # 1 s, then 2 s (it doubles), each ±25 %.
    assert gaps[0] >= 0.7, gaps
    assert gaps[1] >= 1.4, gaps
    assert gaps[1] <= 10, gaps


def test_retry_runs_a_failed_job_again_and_wait_exits_with_its_code(
    jobctl: Jobctl, tmp_path: Path
) -> None:
    counter = tmp_path / "runs"
    # Exit code 5 the first time, 6 the second: each attempt is told apart by its code.
    job_id = jobctl.submit(*_counting_command(counter, "exit $((n+4))"))
    jobctl.burst()

    first = jobctl("job", "wait", str(job_id))
    assert first.returncode == 5, describe(first)

    retried = jobctl("job", "retry", str(job_id))
    assert retried.returncode == 0, describe(retried)
    assert retried.stdout == f"{job_id}\n"  # piped: the bare id, like submit
    jobctl.burst()

    second = jobctl("job", "wait", str(job_id))
    assert second.returncode == 6, describe(second)
    status = jobctl.status(job_id)
    assert status["state"] == "failed"
    assert status["attempt"] == 2
    assert status["exit_code"] == 6
    assert [(a["attempt"], a["exit_code"]) for a in status["attempts"]] == [(1, 5), (2, 6)]
    assert counter.read_text().strip() == "2"


@ALSO_THROUGH_PGBOUNCER
def test_wait_timeout_on_a_job_that_never_runs_exits_124(jobctl: Jobctl) -> None:
    job_id = jobctl.submit("--queue", "nobody-serves-this", "--", "true")
    started = time.monotonic()
    result = jobctl("job", "wait", "--timeout", "1s", str(job_id))
    took = time.monotonic() - started
    assert result.returncode == 124, describe(result)
    assert result.stderr.startswith("jobctl: error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert 1.0 <= took < 15, took
