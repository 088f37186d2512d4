"""A worker keeps its leases while its other database work waits on a lock.

Only the heartbeat thread renews leases, on a connection of its own; the main thread writes
results, claims and rescues other workers' jobs, and any of that may wait on a lock held by
somebody else (a long `db prune`, a migration, an administrator's transaction). Two promises:

* the heartbeat does nothing that could wait on such a lock, so a running job is not fenced
  because the rescue of other workers' jobs is stuck;
* a job that has ended keeps its lease until its result is written: otherwise the rescuer would
  take it back and an at-least-once job would run a second time (or, on its last attempt, be
  recorded as failed although it succeeded).

The tests hold an exclusive lock on the `attempts` table, which writing a result and rescuing need
and renewing a lease does not, for several leases' time, and watch the lease stay ahead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from chaos_support import wait_event
from e2e_support import Jobctl

LEASE_S = 2.0
HOLD_S = 3 * LEASE_S


def _hold_attempts_and_watch_lease(pg_url: str, job_id: int,
                                   when_locked: Callable[[], None] = lambda: None) -> None:
    """Lock `attempts`, call `when_locked()`, hold the lock for HOLD_S more; fail if the job's
    lease runs out meanwhile, or if it is not running any more."""
    with psycopg.connect(pg_url, autocommit=True) as watcher, psycopg.connect(pg_url) as locker:
        locker.execute("LOCK TABLE attempts IN EXCLUSIVE MODE")
        when_locked()
        held_until = time.monotonic() + HOLD_S
        while time.monotonic() < held_until:
            row = watcher.execute(
                "SELECT state, EXTRACT(EPOCH FROM lease_until - clock_timestamp()) FROM jobs "
                "WHERE id = %s", (job_id,)).fetchone()
            assert row is not None
            state, lease_left_s = row
            assert state == "running", f"job {job_id} is {state} while attempts is locked"
            assert lease_left_s > 0, f"the lease of job {job_id} ran out ({lease_left_s:.2f}s)"
            time.sleep(0.1)
        locker.rollback()


def _final(jobctl: Jobctl, job_id: int) -> dict[str, Any]:
    jobctl("job", "wait", "--timeout", "30s", str(job_id))
    return jobctl.status(job_id)


def test_a_finished_job_keeps_its_lease_while_its_result_waits(
        chaos_jobctl: Jobctl, pg_url: str, tmp_path: Path) -> None:
    log, go = tmp_path / "side-effects.log", tmp_path / "go"
    chaos_jobctl.start_worker("--lease", f"{LEASE_S:g}s")
    job_id = chaos_jobctl.submit(
        "--retries", "0", "--shell",
        f"echo start $JOBCTL_JOB_ID $JOBCTL_ATTEMPT >> {log}; "
        f"while [ ! -e {go} ]; do sleep 0.05; done; "
        f"echo end $JOBCTL_JOB_ID $JOBCTL_ATTEMPT >> {log}")
    wait_event(log, "start", job_id)

    def let_it_end() -> None:  # once the lock is held: its result cannot be written
        go.touch()
        wait_event(log, "end", job_id)

    _hold_attempts_and_watch_lease(pg_url, job_id, when_locked=let_it_end)
    job = _final(chaos_jobctl, job_id)
    assert (job["state"], job["attempt"], job["exit_code"]) == ("succeeded", 1, 0), job


def test_a_stuck_rescue_does_not_fence_a_running_job(
        chaos_jobctl: Jobctl, pg_url: str, tmp_path: Path) -> None:
    log = tmp_path / "side-effects.log"
    # Rescues every second, and each of them waits on the lock for as long as it is held.
    chaos_jobctl.start_worker("--lease", f"{LEASE_S:g}s", "--rescue-interval", "1s")
    job_id = chaos_jobctl.submit(
        "--retries", "0", "--shell",
        f"echo start $JOBCTL_JOB_ID $JOBCTL_ATTEMPT >> {log}; sleep {HOLD_S + 2:g}; "
        f"echo end $JOBCTL_JOB_ID $JOBCTL_ATTEMPT >> {log}")
    wait_event(log, "start", job_id)
    time.sleep(1.5)  # a rescue is due while the lock is held
    _hold_attempts_and_watch_lease(pg_url, job_id)
    wait_event(log, "end", job_id, attempt=1)
    job = _final(chaos_jobctl, job_id)
    assert (job["state"], job["attempt"], job["exit_code"]) == ("succeeded", 1, 0), job
