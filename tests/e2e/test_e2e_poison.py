"""Poison input never takes a worker down: a missing command or directory, output past the cap,
a job that ignores SIGTERM. After each, the same worker goes on to run the next job."""

from __future__ import annotations

import subprocess
from pathlib import Path

from e2e_support import Jobctl


def test_bad_jobs_fail_on_their_own_and_the_worker_runs_the_next(
    jobctl: Jobctl, tmp_path: Path
) -> None:
    missing_dir = tmp_path / "no-such-dir"
    no_command = jobctl.submit("--", "no-such-command-jobctl-test")
    no_cwd = jobctl.submit("--cwd", str(missing_dir), "--", "true")
    stubborn = jobctl.submit(
        "--timeout", "1s", "--", "sh", "-c", "trap '' TERM; sleep 30; sleep 30")
    after = jobctl.submit("--", "sh", "-c", "echo still here")

    jobctl.burst("--kill-grace", "1s", "--concurrency", "1", timeout=60)

    status = jobctl.status(no_command)
    assert (status["state"], status["exit_code"]) == ("failed", 127), status
    assert "command not found" in status["error"]
    assert b"command not found" in jobctl.run_bytes("job", "logs", str(no_command)).stderr

    status = jobctl.status(no_cwd)
    assert (status["state"], status["exit_code"]) == ("failed", 125), status
    assert str(missing_dir) in status["error"]

    status = jobctl.status(stubborn)
    # SIGTERM is ignored, so SIGKILL after --kill-grace ends it.
    assert (status["state"], status["exit_code"], status["signal"]) == ("failed", 137, 9), status
    assert "timed out" in status["error"]
    assert status["duration_s"] < 10, status

    assert jobctl.status(after)["state"] == "succeeded"
    assert jobctl.ok("job", "logs", str(after)) == "still here\n"


def test_output_past_the_cap_keeps_the_head_and_a_marker(jobctl: Jobctl, tmp_path: Path) -> None:
    # 1 MiB of numbered lines; the worker keeps the first 100,000 bytes of it.
    job = jobctl.submit("--", "sh", "-c", "seq 1 200000 | head -c 1048576")
    after = jobctl.submit("--", "echo", "next")

    jobctl.burst("--output-cap", "100000", timeout=60)

    expected = subprocess.run(["sh", "-c", "seq 1 200000 | head -c 1048576"],
                              capture_output=True, check=True).stdout[:100_000]
    logs = jobctl.run_bytes("job", "logs", str(job)).stdout
    assert logs.startswith(expected)
    marker = logs[len(expected):]
    assert b"[jobctl: output truncated" in marker and len(marker) < 200, marker
    assert jobctl.status(job)["state"] == "succeeded"
    assert jobctl.ok("job", "logs", str(after)) == "next\n"
