"""Workers: `worker list` sees a running one; SIGTERM stops it cleanly, releasing its jobs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Jobctl, process_gone, wait_for
from pgbouncer import ALSO_THROUGH_PGBOUNCER


def _worker_rows(jobctl: Jobctl, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(jobctl.look("worker", "list", *args, "-o", "json"))
    return rows


def test_worker_list_shows_a_running_worker_and_then_it_stopped(jobctl: Jobctl) -> None:
    worker = jobctl.start_worker("--queue", "alpha,beta", "--concurrency", "3",
                                 "--name", "e2e-worker")

    rows = [row for row in _worker_rows(jobctl) if row["pid"] == worker.pid]
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["name"] == "e2e-worker"
    assert row["state"] == "running"
    assert row["queues"] == ["alpha", "beta"]
    assert row["concurrency"] == 3
    assert row["hostname"] == socket.gethostname()
    assert row["running_jobs"] == 0

    worker.process.send_signal(signal.SIGTERM)
    try:
        code = worker.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop within 10s of SIGTERM:\n{worker.log()}")
    assert code == 0, worker.log()

    assert not [r for r in _worker_rows(jobctl) if r["id"] == row["id"]], (
        "a stopped worker is listed without --all")
    stopped = [r for r in _worker_rows(jobctl, "--all") if r["id"] == row["id"]]
    assert len(stopped) == 1, stopped
    assert stopped[0]["state"] == "stopped"


@ALSO_THROUGH_PGBOUNCER
def test_sigterm_with_a_running_job_releases_it_for_another_worker(
    jobctl: Jobctl, tmp_path: Path
) -> None:
    """Shutdown: running jobs get --grace to finish, are then killed and (at-least-once) queued
    again; the worker still exits 0 and the next worker runs the job."""
    counter, pidfile = tmp_path / "runs", tmp_path / "job.pid"
    # The first run outlives the grace period; the second ends at once.
    script = (f"echo $$ > {pidfile}; n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); "
              f"echo $n > {counter}; [ $n -ge 2 ] || exec sleep 60")
    worker = jobctl.start_worker("--grace", "1s", "--kill-grace", "1s")
    job_id = jobctl.submit("--", "sh", "-c", script)
    wait_for(lambda: counter.exists() and counter.read_text().strip() == "1", 30,
             "the job did not start")
    pid = int(pidfile.read_text())

    code, took = worker.exit_after(signal.SIGTERM)
    assert code == 0, worker.log()
    # --grace 1s, then SIGTERM to the job (it dies at once); a little for the bookkeeping.
    assert took < 6, f"the worker took {took:.1f}s to stop with --grace 1s"
    wait_for(lambda: process_gone(pid), 2.0, "the job outlived its worker")
    status = jobctl.status(job_id)
    assert status["state"] == "queued", status

    jobctl.burst()

    status = jobctl.status(job_id)
    assert status["state"] == "succeeded", status
    assert counter.read_text().strip() == "2"
    assert [a["outcome"] for a in status["attempts"]] == ["released", "succeeded"]
    # Released by a shutdown, it kept its one attempt's worth of retries: 2 of 2, not 2 of 1.
    assert (status["attempt"], status["max_attempts"]) == (2, 2), status


def test_a_second_sigterm_cuts_the_grace_period(jobctl: Jobctl, tmp_path: Path) -> None:
    """--grace 60s would wait for the job; a second SIGTERM stops the worker at once, and the
    at-least-once job goes back to the queue."""
    pidfile = tmp_path / "job.pid"
    worker = jobctl.start_worker("--grace", "60s", "--kill-grace", "1s")
    job_id = jobctl.submit("--", "sh", "-c", f"echo $$ > {pidfile}; exec sleep 60")
    wait_for(pidfile.exists, 30, "the job did not start")
    pid = int(pidfile.read_text())

    worker.process.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert worker.process.poll() is None, "the first SIGTERM did not wait for the job"
    assert not process_gone(pid), "the first SIGTERM killed the job instead of waiting"
    code, took = worker.exit_after(signal.SIGTERM)

    assert code == 0, worker.log()
    assert took < 6, f"the worker took {took:.1f}s to stop after the second SIGTERM"
    wait_for(lambda: process_gone(pid), 2.0, "the job outlived its worker")
    status = jobctl.status(job_id)
    assert status["state"] == "queued", status
    assert status["attempts"][-1]["outcome"] == "released", status["attempts"]
