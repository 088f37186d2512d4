"""A worker killed with `kill -9` in the middle of two long jobs (one of each guarantee).

Its jobs must not outlive it (its watchdog kills them as soon as the worker is gone: nobody is
left to report their results), and once its lease has expired another worker rescues them: the
at-least-once job runs again there, the at-most-once one becomes `lost` and never starts again.
"""

from __future__ import annotations

import time
from pathlib import Path

from chaos_support import (
    CHAOS_WORKER_OPTIONS,
    LEASE_S,
    kill9,
    logging_script,
    read_events,
    wait_event,
    wait_gone,
)
from e2e_support import Jobctl, wait_for


def test_kill9_of_a_worker_kills_its_jobs_and_they_are_rescued(
    chaos_jobctl: Jobctl, leftover_pids: list[int], tmp_path: Path
) -> None:
    jobctl = chaos_jobctl
    log = tmp_path / "side-effects.log"
    jobctl.ok("db", "upgrade")
    victim = jobctl.start_worker(*CHAOS_WORKER_OPTIONS, "--concurrency", "2", "--name", "victim")
    least = jobctl.submit("--retries", "1", "--shell", logging_script(
        log, '[ "$JOBCTL_ATTEMPT" -gt 1 ] || sleep 30'))
    most = jobctl.submit("--delivery", "at-most-once", "--shell", logging_script(log, "sleep 30"))
    starts = [wait_event(log, "start", job_id, attempt=1) for job_id in (least, most)]
    leftover_pids.extend(start.pids[0] for start in starts)
    assert {start.worker for start in starts} == {"victim"}, starts
    rescuer = jobctl.start_worker(*CHAOS_WORKER_OPTIONS, "--name", "rescuer")

    kill9(victim)
    killed_at = time.time()

    gone_at = wait_gone([start.pids[0] for start in starts], 10)
    assert gone_at is not None, "the jobs of a kill -9'd worker were still running 10s later"
    assert gone_at - killed_at < 1.5, (
        f"the jobs of a kill -9'd worker ran on for {gone_at - killed_at:.1f}s")

    second = wait_event(log, "start", least, attempt=2, timeout_s=LEASE_S + 1 + 15)
    assert second.worker == "rescuer", second
    assert second.time > gone_at
    print(f"jobs gone {gone_at - killed_at:.2f}s after kill -9; "
          f"the at-least-once job ran again {second.time - killed_at:.2f}s after it")
    wait_event(log, "end", least, attempt=2, timeout_s=15)
    status = wait_for(lambda: (s := jobctl.status(least))["state"] == "succeeded" and s, 15,
                      lambda: f"job {least}: {jobctl.status(least)}")
    assert [a["outcome"] for a in status["attempts"]] == ["lost", "succeeded"], status["attempts"]

    lost = wait_for(lambda: (s := jobctl.status(most))["state"] == "lost" and s, 15,
                    lambda: f"the at-most-once job is {jobctl.status(most)['state']!r}")
    assert lost["attempts"][-1]["outcome"] == "lost", lost["attempts"]
    time.sleep(1.0)  # a rescuer that wrongly queued it would have started it by now
    assert [e.kind for e in read_events(log) if e.job == most] == ["start"]
    assert jobctl.status(most)["state"] == "lost"
    assert rescuer.process.poll() is None, rescuer.log()
