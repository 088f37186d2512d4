"""Jobs that jobctl ends: a timeout kills the whole process group, a cancel ends a running job
wherever it runs and keeps a queued one from ever running."""

from __future__ import annotations

import time
from pathlib import Path

from e2e_support import Jobctl, describe, process_gone, wait_for
from pgbouncer import ALSO_THROUGH_PGBOUNCER


def test_timeout_kills_the_job_and_its_background_grandchild(
    jobctl: Jobctl, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    job_id = jobctl.submit(
        "--timeout", "2s", "--", "sh", "-c", f"sleep 100 & echo $! > {pidfile}; sleep 100")

    started = time.monotonic()
    jobctl.burst("--kill-grace", "1s", timeout=60)
    took = time.monotonic() - started

    status = jobctl.status(job_id)
    assert status["state"] == "failed"
    assert status["exit_code"] in (128 + 15, 128 + 9), status
    assert "timed out" in (status["error"] or ""), status["error"]
    assert 1.9 <= status["duration_s"] <= 6, status["duration_s"]
    assert took < 20, f"the burst worker took {took:.1f}s for a job with a 2s timeout"
    attempts = status["attempts"]
    assert len(attempts) == 1
    assert "timed out" in (attempts[0]["error"] or "")

    grandchild = int(pidfile.read_text())
    wait_for(lambda: process_gone(grandchild), 3.0,
             f"the job's background grandchild {grandchild} outlived the timeout")


@ALSO_THROUGH_PGBOUNCER
def test_cancel_ends_a_running_job_on_another_worker_within_2s(
    jobctl: Jobctl, tmp_path: Path
) -> None:
    pidfile = tmp_path / "job.pid"
    worker = jobctl.start_worker("--kill-grace", "1s")
    job_id = jobctl.submit("--", "sh", "-c", f"echo $$ > {pidfile}; exec sleep 60")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30.0,
             "the job did not start")
    pid = int(pidfile.read_text())
    # Already waiting (and imported) when the cancel lands: its exit times the cancellation.
    waiter = jobctl.popen("job", "wait", str(job_id))
    time.sleep(0.5)  # let it get to its first poll

    cancel = jobctl("job", "cancel", str(job_id))
    cancelled_at = time.monotonic()
    assert cancel.returncode == 0, describe(cancel)

    wait_for(lambda: process_gone(pid), 2.0, "the job's process was still alive 2s after cancel")
    wait_for(lambda: waiter.poll() is not None, 2.0,
             "the job had not reached a final state 2s after cancel")
    took = time.monotonic() - cancelled_at
    status = jobctl.status(job_id)
    assert status["state"] == "cancelled", status
    assert status["attempts"][-1]["outcome"] == "cancelled"
    # `job wait` exits with the job's code: a job killed by SIGTERM, as a shell reports it.
    assert waiter.returncode == status["exit_code"] == 128 + 15, (waiter.returncode, status)
    assert worker.process.poll() is None, "the worker died with its job"
    print(f"cancelled in {took:.2f}s")


def test_a_cancelled_queued_job_never_runs(jobctl: Jobctl, tmp_path: Path) -> None:
    side_effect = tmp_path / "ran"
    job_id = jobctl.submit("--", "touch", str(side_effect))
    cancel = jobctl("job", "cancel", str(job_id))
    assert cancel.returncode == 0, describe(cancel)
    assert "cancelled" in cancel.stderr, cancel.stderr

    jobctl.burst()

    status = jobctl.status(job_id)
    assert status["state"] == "cancelled"
    assert status["attempt"] == 0
    assert status["attempts"] == []
    assert status["started_at"] is None
    assert not side_effect.exists()
