"""Fencing: a worker that can no longer renew its lease kills its own job before the lease runs
out, so the job never runs in two places at once.

Worker A runs a long at-least-once job, then loses the database in one of two ways:
  * the network goes silent (a TCP proxy between A and PostgreSQL drops every byte and closes
    nothing), or
  * A's own process is frozen with SIGSTOP (its pid only: a watchdog beside it must keep going).
Worker B, started only afterwards, rescues the job once the lease has expired and runs it again.

The job logs its start (with its pids) and end, and a `killed` line if it gets SIGTERM; a SIGKILL
leaves no line, so the test also polls the job's processes and takes the moment they were seen
gone as the end of A's run. The two runs [start, end] must not overlap, and A's run must be gone
before the lease can have expired (the cut or the freeze + the lease).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from chaos_support import (
    CHAOS_WORKER_OPTIONS,
    LEASE_S,
    Event,
    SilentProxy,
    logging_script,
    read_events,
    wait_event,
    wait_exit,
    wait_gone,
)
from e2e_support import Jobctl, Worker, wait_for

WHO = "$JOBCTL_JOB_ID $JOBCTL_ATTEMPT $JOBCTL_WORKER"


def _long_then_short(log: Path) -> str:
    """30 s on the first attempt, 1 s on later ones; `sleep … & wait` so that a SIGTERM is
    handled (and logged) at once; the start line carries the shell's pid and the sleep's."""
    return (f"trap 'echo killed {WHO} $(date +%s.%N) >> {log}; exit 143' TERM; "
            f'if [ "$JOBCTL_ATTEMPT" = 1 ]; then d=30; else d=1; fi; '
            f"sleep $d & echo start {WHO} $(date +%s.%N) $$ $! >> {log}; wait $!; "
            f"echo end {WHO} $(date +%s.%N) >> {log}")


def _run_on_a_then_lose_a(
    direct: Jobctl, worker_a: Worker, lose_a: Callable[[], None], log: Path,
    leftover_pids: list[int],
) -> tuple[int, Event, float, Worker]:
    """Submit the job, let it start on A, `lose_a()`, start B. Returns (job id, A's start
    line, when A lost the database, B)."""
    job_id = direct.submit("--retries", "1", "--shell", _long_then_short(log))
    first = wait_event(log, "start", job_id, attempt=1)
    leftover_pids.append(first.pids[0])  # the job's process group, killed whatever happens
    assert first.worker == "chaos-a", f"worker A did not take the job: {first}"

    time.sleep(0.5)  # mid-way between two renewals (every lease/3 = 1 s)
    lost_at = time.time()
    lose_a()
    worker_b = direct.start_worker(*CHAOS_WORKER_OPTIONS, "--name", "chaos-b",
                                   wait_started=False)

    gone_at = wait_gone(list(first.pids), LEASE_S + 10)
    assert gone_at is not None, (
        f"A's job (pids {first.pids}) still ran {LEASE_S + 10:.0f}s after A lost the database:"
        f"\n{worker_a.log()[-3000:]}")
    assert gone_at < lost_at + LEASE_S, (
        f"A's job was still running {gone_at - lost_at:.2f}s after A lost the database, past its "
        f"{LEASE_S:.0f}s lease: another worker may already have started it")
    print(f"A's job gone {gone_at - lost_at:.2f}s after A lost the database")
    return job_id, first, gone_at, worker_b


def _check_b_reran_without_overlap(
    direct: Jobctl, job_id: int, first: Event, gone_at: float, log: Path
) -> None:
    second = wait_event(log, "start", job_id, attempt=2, timeout_s=30)
    assert second.worker == "chaos-b", f"the second run was not on B: {second}"
    wait_event(log, "end", job_id, attempt=2, timeout_s=15)
    events = [e for e in read_events(log) if e.job == job_id]
    killed = [e.time for e in events if e.kind == "killed" and e.attempt == 1]
    first_end = max([gone_at, *killed])
    assert not [e for e in events if e.kind == "end" and e.attempt == 1], events
    assert second.time > first_end, (
        f"the runs overlap: A ran [{first.time:.3f}, {first_end:.3f}], "
        f"B started at {second.time:.3f}")
    assert not [e for e in events if e.kind == "start" and e.attempt > 2], events
    print(f"B started {second.time - first_end:.2f}s after A's run ended")

    status = wait_for(lambda: (s := direct.status(job_id))["state"] != "running" and s, 15,
                      f"job {job_id} not final after B's run")
    assert status["state"] == "succeeded", status
    assert status["attempts"][-1]["worker_name"] == "chaos-b", status["attempts"]
    assert status["attempts"][-1]["outcome"] == "succeeded", status["attempts"]


def test_a_worker_cut_off_by_a_silent_network_kills_its_job_before_the_lease_expires(
    chaos_jobctl: Jobctl, jobctl_factory: Callable[[str, str], Jobctl], leftover_pids: list[int],
    tmp_path: Path,
) -> None:
    direct = chaos_jobctl
    log = tmp_path / "side-effects.log"
    direct.ok("db", "upgrade")
    proxy = SilentProxy(direct.database_url)
    try:
        via_proxy = jobctl_factory(proxy.url, "through-proxy")
        worker_a = via_proxy.start_worker(*CHAOS_WORKER_OPTIONS, "--name", "chaos-a")

        job_id, first, gone_at, worker_b = _run_on_a_then_lose_a(
            direct, worker_a, proxy.cut, log, leftover_pids)
        _check_b_reran_without_overlap(direct, job_id, first, gone_at, log)
        assert worker_a.process.poll() is None, f"A died of the cut:\n{worker_a.log()}"

        # The network heals: A's late result must be refused, not applied over B's…
        proxy.restore()
        _wait_for_a_to_report(worker_a, job_id)
        _check_b_result_stands(direct, job_id, worker_a)
        print(f"A after the network came back ({proxy.held_bytes} bytes held during the cut):"
              f"\n{worker_a.log()[-2000:]}")

        # …and A carries on: with B gone, it runs the next job.
        worker_b.process.send_signal(signal.SIGTERM)
        assert wait_exit(worker_b, 10) == 0, worker_b.log()
        after = direct.submit("--shell", logging_script(log, "true"))
        end = wait_event(log, "end", after, timeout_s=30)
        assert end.worker == "chaos-a", end
    finally:
        # A may wait forever on a connection that no longer answers: closing the proxy's
        # sockets tells it, so that it can stop when the fixture asks.
        proxy.close()


def test_a_frozen_worker_has_its_job_killed_before_the_lease_expires(
    chaos_jobctl: Jobctl, leftover_pids: list[int], tmp_path: Path
) -> None:
    direct = chaos_jobctl
    log = tmp_path / "side-effects.log"
    direct.ok("db", "upgrade")
    worker_a = direct.start_worker(*CHAOS_WORKER_OPTIONS, "--name", "chaos-a")

    def freeze() -> None:
        os.kill(worker_a.pid, signal.SIGSTOP)  # the worker's own pid, not its group

    try:
        job_id, first, gone_at, _ = _run_on_a_then_lose_a(
            direct, worker_a, freeze, log, leftover_pids)
        _check_b_reran_without_overlap(direct, job_id, first, gone_at, log)
    finally:
        os.kill(worker_a.pid, signal.SIGCONT)

    # A wakes up with a result for a lease it lost long ago: it must be refused, not applied.
    _wait_for_a_to_report(worker_a, job_id)
    _check_b_result_stands(direct, job_id, worker_a)
    print(f"A after SIGCONT:\n{worker_a.log()[-2000:]}")


def _wait_for_a_to_report(worker_a: Worker, job_id: int) -> None:
    """A may say in its log that its result was refused (give it up to 10 s), or say nothing:
    only the job's state counts, and that is checked next."""
    seen = len(worker_a.log())
    mention = re.compile(rf"\bjob {job_id}\b")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not mention.search(worker_a.log()[seen:]):
        time.sleep(0.1)
    time.sleep(1.0)  # let it finish its turn


def _check_b_result_stands(direct: Jobctl, job_id: int, worker_a: Worker) -> None:
    status = direct.status(job_id)
    assert status["state"] == "succeeded", (status, worker_a.log()[-3000:])
    assert status["exit_code"] == 0, status
    assert status["attempts"][-1]["worker_name"] == "chaos-b", status["attempts"]
    assert status["attempts"][-1]["outcome"] == "succeeded", status["attempts"]
    assert worker_a.process.poll() is None, f"A died:\n{worker_a.log()}"
