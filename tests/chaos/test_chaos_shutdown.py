"""Workers that stop: gracefully (SIGTERM, `jobctl worker stop`) or not (kill -9).

  * SIGTERM with --grace 5s: a 2 s job finishes and succeeds, a 60 s job is killed and goes
    back to the queue, the worker exits 0;
  * `worker list --all` shows a kill -9'd worker as `lost` (once another worker has rescued) and
    a SIGTERM'd one as `stopped`;
  * `jobctl worker stop NAME_OR_ID` from another process makes a running worker drain like on
    SIGTERM (its running job finishes), exit 0 and show `stopped`;
  * a second SIGTERM stops the worker even while its main loop waits on a database lock: the
    job is killed at once, the worker exits 0 within a bound, and the job comes back.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import psycopg
from chaos_support import (
    CHAOS_WORKER_OPTIONS,
    LEASE_S,
    logging_script,
    read_events,
    wait_event,
    wait_exit,
    wait_gone,
    worker_row,
    worker_rows,
)
from e2e_support import Jobctl, describe, wait_for

# After a second SIGTERM the worker exits within --kill-grace plus this, whatever its main loop
# is doing (jobctl.worker.shutdown: STOP_BOUND_S and ABANDON_WRITE_S, with room for a loaded CI).
STOP_NOW_BOUND_S = 10.0


def test_sigterm_lets_a_short_job_finish_and_requeues_a_long_one(
    chaos_jobctl: Jobctl, leftover_pids: list[int], tmp_path: Path
) -> None:
    jobctl = chaos_jobctl
    log = tmp_path / "side-effects.log"
    jobctl.ok("db", "upgrade")
    worker = jobctl.start_worker(*CHAOS_WORKER_OPTIONS, "--concurrency", "2",
                                 "--grace", "5s", "--kill-grace", "1s")
    short = jobctl.submit("--shell", logging_script(log, "sleep 2"))
    long = jobctl.submit("--shell", logging_script(log, "sleep 60"))
    short_start = wait_event(log, "start", short)
    long_start = wait_event(log, "start", long)
    leftover_pids.append(long_start.pids[0])

    worker.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = wait_exit(worker, 5 + 1 + 10)
    took = time.monotonic() - signalled
    assert code == 0, f"exit status {code} {took:.1f}s after SIGTERM:\n{worker.log()}"
    # The grace period, then SIGTERM to the job (it dies at once), then the bookkeeping.
    assert 4.0 <= took < 10, f"the worker stopped {took:.1f}s after SIGTERM with --grace 5s"

    events = read_events(log)
    assert [e.kind for e in events if e.job == short] == ["start", "end"], events
    assert [e.kind for e in events if e.job == long] == ["start"], events
    assert wait_gone([long_start.pids[0]], 2.0) is not None, "the 60 s job outlived its worker"
    short_status, long_status = jobctl.status(short), jobctl.status(long)
    assert short_status["state"] == "succeeded", short_status
    assert short_start.attempt == 1 and len(short_status["attempts"]) == 1
    assert long_status["state"] == "queued", long_status
    assert long_status["attempts"][-1]["outcome"] == "released", long_status["attempts"]
    row = worker_row(jobctl, worker.pid)
    assert row is not None and row["state"] == "stopped", row


def test_worker_list_shows_lost_and_stopped_workers_and_worker_stop_drains_one(
    chaos_jobctl: Jobctl, tmp_path: Path
) -> None:
    jobctl = chaos_jobctl
    log = tmp_path / "side-effects.log"
    jobctl.ok("db", "upgrade")
    names = ("chaos-crashed", "chaos-terminated", "chaos-by-name", "chaos-by-id")
    crashed, terminated, by_name, by_id = (
        jobctl.start_worker(*CHAOS_WORKER_OPTIONS, "--name", name, "--queue", name,
                            "--grace", "10s", wait_started=False)
        for name in names)
    for worker in (crashed, terminated, by_name, by_id):
        worker.wait_started()

    crashed.process.send_signal(signal.SIGKILL)
    crashed.process.wait(10)
    killed_at = time.monotonic()
    terminated.process.send_signal(signal.SIGTERM)
    assert wait_exit(terminated, 10) == 0, terminated.log()

    def state_of(name: str) -> str | None:
        rows = [row for row in worker_rows(jobctl) if row["name"] == name]
        return rows[0]["state"] if rows else None

    # Lost once its heartbeat is a lease old and a live worker's rescue pass has seen it.
    wait_for(lambda: state_of("chaos-crashed") == "lost", LEASE_S + 1 + 10,
             lambda: f"the kill -9'd worker is {state_of('chaos-crashed')!r}, not 'lost', "
                     f"{time.monotonic() - killed_at:.1f}s after the kill", interval_s=0.5)
    assert state_of("chaos-terminated") == "stopped"
    listed = {row["name"] for row in json.loads(jobctl.look("worker", "list", "-o", "json"))}
    assert "chaos-crashed" not in listed and "chaos-terminated" not in listed, listed

    # `worker stop NAME` while the worker runs a 1.5 s job: it finishes, then the worker exits 0.
    job = jobctl.submit("--queue", "chaos-by-name", "--shell", logging_script(log, "sleep 1.5"))
    wait_event(log, "start", job)
    stop = jobctl("worker", "stop", "chaos-by-name")
    assert stop.returncode == 0, describe(stop)
    assert wait_exit(by_name, 15) == 0, by_name.log()
    assert [e.kind for e in read_events(log) if e.job == job] == ["start", "end"]
    assert jobctl.status(job)["state"] == "succeeded"
    assert state_of("chaos-by-name") == "stopped"

    # `worker stop ID`, an idle worker: it exits 0 at once.
    row = worker_row(jobctl, by_id.pid)
    assert row is not None
    stop = jobctl("worker", "stop", str(row["id"]))
    assert stop.returncode == 0, describe(stop)
    assert wait_exit(by_id, 10) == 0, by_id.log()
    assert state_of("chaos-by-id") == "stopped"

    # A worker that does not exist: "not found", exit status 3, nothing changed.
    missing = jobctl("worker", "stop", "no-such-worker")
    assert missing.returncode == 3, describe(missing)


def test_a_second_sigterm_stops_a_worker_whose_main_loop_waits_on_a_lock(
    chaos_jobctl: Jobctl, pg_url: str, leftover_pids: list[int], tmp_path: Path
) -> None:
    """The main loop waits on a lock on `attempts` (its rescue pass needs one; an administrator
    holds an exclusive one), where no signal handler can reach it. The second SIGTERM must still
    kill the job within --kill-grace and end the worker (exit 0) within a bound; the release it
    cannot write is not lost: the lease runs out and a rescuer puts the job back."""
    jobctl = chaos_jobctl
    log = tmp_path / "side-effects.log"
    worker = jobctl.start_worker(*CHAOS_WORKER_OPTIONS, "--rescue-interval", "0.2s",
                                 "--grace", "60s")
    body = 'if [ "$JOBCTL_ATTEMPT" = 1 ]; then sleep 60; fi'
    job = jobctl.submit("--shell", logging_script(log, body))
    start = wait_event(log, "start", job)
    leftover_pids.append(start.pids[0])

    with psycopg.connect(pg_url, autocommit=True) as watcher, psycopg.connect(pg_url) as locker:
        locker.execute("LOCK TABLE attempts IN EXCLUSIVE MODE")

        def main_loop_waits_on_the_lock() -> bool:
            # Only the main thread's statements touch `attempts`; the heartbeat's do not.
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'jobctl' "
                "AND wait_event_type = 'Lock'").fetchone()
            return row is not None and row[0] > 0

        wait_for(main_loop_waits_on_the_lock, 10, "the worker's rescue never waited on the lock")
        worker.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert worker.process.poll() is None, "the first SIGTERM did not wait for the job"
        worker.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert wait_gone([start.pids[0]], 1 + 2.0) is not None, (
            f"the job outlived the second SIGTERM by --kill-grace:\n{worker.log()}")
        code = wait_exit(worker, 1 + STOP_NOW_BOUND_S)
        took = time.monotonic() - signalled
        assert code == 0, f"exit {code} {took:.1f}s after the second SIGTERM:\n{worker.log()}"
        assert jobctl.status(job)["state"] == "running", "the lock did not hold the release back"
        locker.rollback()

    # Released: the statement the worker left waiting on the lock ran once the lock was gone
    # (the server finishes it, client or no client). Lost: it did not, and once the lease ran
    # out (nobody renews it now) another worker's rescue put it back, retries intact. Either
    # way the second attempt runs and succeeds.
    jobctl.start_worker(*CHAOS_WORKER_OPTIONS)
    wait_event(log, "end", job, attempt=2)
    wait_for(lambda: jobctl.status(job)["state"] == "succeeded", 10,
             lambda: str(jobctl.status(job)))
    outcomes = [a["outcome"] for a in jobctl.status(job)["attempts"]]
    assert outcomes in (["released", "succeeded"], ["lost", "succeeded"]), outcomes
