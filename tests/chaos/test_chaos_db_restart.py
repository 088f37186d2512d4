"""The database goes away while jobs run: the test's own PostgreSQL cluster is stopped for 5 s
and started again.

  * with short leases (3 s), leases run out during the outage: workers fence their jobs,
    at-least-once jobs run again and all succeed, at-most-once jobs never start twice, and every
    job ends in a final state; the workers themselves survive and carry on;
  * with the default lease (20 s), a job that finishes during the outage has its result and its
    output written once the database is back, since its lease never ran out;
  * meanwhile a CLI command fails fast with exit status 4 and a one-line error.
"""

from __future__ import annotations

import collections
import random
import signal
import time
from pathlib import Path

from chaos_support import (
    CHAOS_WORKER_OPTIONS,
    by_job,
    list_jobs,
    logging_script,
    overlapping_attempts,
    read_events,
    submit_batch,
    unfinished_ids,
    wait_event,
    wait_exit,
)
from e2e_support import Jobctl, describe, wait_for

OUTAGE_S = 5.0
JOBS = 200


def _outage(jobctl: Jobctl, seconds: float) -> None:
    """Stop the server for `seconds`; meanwhile check that the CLI fails fast with exit 4."""
    cluster = jobctl.cluster  # type: ignore[attr-defined]
    cluster.stop_server()
    down_at = time.monotonic()
    try:
        result = jobctl("job", "list", timeout=30)
        took = time.monotonic() - down_at
        assert result.returncode == 4, describe(result)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("jobctl: error:"), describe(result)
        assert took < seconds, f"`job list` took {took:.1f}s to fail with the database down"
        time.sleep(max(0.0, down_at + seconds - time.monotonic()))
    finally:
        cluster.start_server()


def test_database_restart_while_200_jobs_run(restartable_jobctl: Jobctl, tmp_path: Path) -> None:
    jobctl = restartable_jobctl
    rng = random.Random(2)
    log = tmp_path / "side-effects.log"
    jobctl.ok("db", "upgrade")
    workers = [jobctl.start_worker(*CHAOS_WORKER_OPTIONS, "--concurrency", "4",
                                   wait_started=False) for _ in range(2)]
    for worker in workers:
        worker.wait_started()

    def commands(count: int) -> list[str]:
        return [f'echo start $JOBCTL_JOB_ID $JOBCTL_ATTEMPT >> {log}; '
                f'sleep {rng.randint(100, 400) / 1000:.3f}; echo out $JOBCTL_JOB_ID; '
                f'echo end $JOBCTL_JOB_ID $JOBCTL_ATTEMPT >> {log}' for _ in range(count)]

    least = submit_batch(jobctl, tmp_path / "least.txt", commands(JOBS // 2),
                         "--delivery", "at-least-once", "--retries", "5", "--retry-backoff", "1s")
    most = submit_batch(jobctl, tmp_path / "most.txt", commands(JOBS // 2),
                        "--delivery", "at-most-once")
    # A fifth of the jobs have started: the rest are queued or running when the server goes.
    wait_for(lambda: len(read_events(log)) >= JOBS // 5, 60, "the jobs did not start")
    started_before = sum(e.kind == "start" for e in read_events(log))

    _outage(jobctl, OUTAGE_S)
    back_at = time.monotonic()

    remaining = wait_for(lambda: not unfinished_ids(jobctl) or None, 90,
                         lambda: f"jobs still unfinished 90s after the restart: "
                                 f"{unfinished_ids(jobctl)[:20]}", interval_s=0.5)
    took = time.monotonic() - back_at
    assert remaining
    for worker in workers:
        assert worker.process.poll() is None, f"a worker died with the database:\n{worker.log()}"

    jobs = {job["id"]: job for job in list_jobs(jobctl)}
    events = read_events(log)
    runs = by_job(events)
    states = collections.Counter((jobs[i]["delivery"], jobs[i]["state"]) for i in jobs)
    print(f"{started_before} started before the outage; all final {took:.1f}s after it; "
          f"{dict(states)}")

    assert set(jobs) == set(least) | set(most)
    not_final = {i: job["state"] for i, job in jobs.items()
                 if job["state"] not in ("succeeded", "failed", "lost")}
    assert not not_final, not_final
    unsucceeded = {i: jobs[i]["state"] for i in least if jobs[i]["state"] != "succeeded"}
    assert not unsucceeded, f"at-least-once job(s) that did not succeed: {unsucceeded}"
    never_ended = [i for i in least if not any(e.kind == "end" for e in runs.get(i, []))]
    assert not never_ended, f"at-least-once job(s) that never ran to the end: {never_ended}"
    twice = [i for i in most if sum(e.kind == "start" for e in runs.get(i, [])) > 1]
    assert not twice, f"at-most-once job(s) started twice: {[(i, runs[i]) for i in twice]}"
    phantom = [i for i in jobs if jobs[i]["state"] == "succeeded"
               and not any(e.kind == "end" for e in runs.get(i, []))]
    assert not phantom, f"job(s) recorded as succeeded that never ended: {phantom}"
    overlaps = overlapping_attempts(events)
    assert not overlaps, f"job(s) ran twice at once: {[(i, runs[i]) for i in overlaps]}"

    # Results recorded: the output of a few jobs that succeeded is there, byte for byte.
    for job_id in rng.sample(sorted(i for i in jobs if jobs[i]["state"] == "succeeded"), 3):
        assert jobctl.ok("job", "logs", str(job_id)) == f"out {job_id}\n"


def test_a_result_reached_during_an_outage_is_written_when_the_database_is_back(
    restartable_jobctl: Jobctl, tmp_path: Path
) -> None:
    """Default lease (20 s): a 5 s outage does not cost the lease, so a job that ended during it
    is recorded once the database returns: succeeded, with its output, and run only once."""
    jobctl = restartable_jobctl
    log = tmp_path / "side-effects.log"
    jobctl.ok("db", "upgrade")
    worker = jobctl.start_worker("--lease", "20s", "--grace", "2s")
    job_id = jobctl.submit("--delivery", "at-most-once", "--shell",
                           logging_script(log, "sleep 1.5; echo finished during the outage"))
    wait_event(log, "start", job_id)

    _outage(jobctl, OUTAGE_S)
    back_at = time.time()
    end = wait_event(log, "end", job_id, timeout_s=5)
    assert end.time < back_at, "the job did not end during the outage: the test proves nothing"

    final = wait_for(lambda: jobctl.status(job_id)["state"] != "running" or None, 40,
                     lambda: f"job {job_id} still running 40s after the restart:\n{worker.log()}",
                     interval_s=0.5)
    assert final
    status = jobctl.status(job_id)
    assert status["state"] == "succeeded", (status, worker.log())
    assert [a["outcome"] for a in status["attempts"]] == ["succeeded"], status["attempts"]
    assert jobctl.ok("job", "logs", str(job_id)) == "finished during the outage\n"
    assert [e.kind for e in read_events(log)] == ["start", "end"]
    assert worker.process.poll() is None, worker.log()


def test_a_worker_stops_on_sigterm_while_the_database_is_down(
    restartable_jobctl: Jobctl, tmp_path: Path
) -> None:
    """A job ended during the outage, so the worker holds a result it cannot write. SIGTERM must
    still stop it: within --grace plus a bounded attempt to flush (the README: "a second signal
    stops it at once"); the lease then brings the job back, as after a crash."""
    jobctl = restartable_jobctl
    log = tmp_path / "side-effects.log"
    jobctl.ok("db", "upgrade")
    worker = jobctl.start_worker("--lease", "20s", "--grace", "2s", "--kill-grace", "1s")
    job_id = jobctl.submit("--shell", logging_script(log, "sleep 0.5"))
    wait_event(log, "start", job_id)
    jobctl.cluster.stop_server()  # type: ignore[attr-defined]
    wait_event(log, "end", job_id, timeout_s=5)
    time.sleep(0.5)  # the worker has tried, and failed, to write the result

    worker.process.send_signal(signal.SIGTERM)
    first = wait_exit(worker, 15)
    second = None
    if first is None:
        worker.process.send_signal(signal.SIGTERM)
        second = wait_exit(worker, 5)
    assert first is not None, (
        "the worker did not exit within 15s of SIGTERM (--grace 2s) with the database down"
        + (f"; a second SIGTERM stopped it (exit {second})" if second is not None
           else "; nor within 5s of a second SIGTERM") + f":\n{worker.log()[-3000:]}")
