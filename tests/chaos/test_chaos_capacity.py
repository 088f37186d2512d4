"""Caps hold through a crash (issue 15): three workers share a key limit (or a queue cap) of 2 and
one of them is `kill -9`'d while it runs jobs. A dead worker's job keeps its place until it is
fenced (the watchdog kills it) and rescued, so that at no instant do more than 2 jobs run; every
job still succeeds.

What ran is judged from the jobs' own start/end lines. A run of the killed worker counts as
running until its attempt was rescued (the lost attempt's `finished_at`, on the same machine's
clock), or, without that, until the job's next attempt started: the guarantee is about state
`running`, which the dead worker's job keeps until then, whether or not its process still lives.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from chaos_support import (
    CHAOS_WORKER_OPTIONS,
    describe_runs,
    kill9,
    logging_script,
    overlapping_attempts,
    peak_overlap,
    read_events,
    runs,
    submit_batch,
    wait_succeeded,
)
from e2e_support import Jobctl, parse_time, process_gone, wait_for


def cap_of_two(jobctl: Jobctl, cap: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A key limit (`limit`) or a queue cap (`queue_cap`) of 2: the workers' options and the
    jobs' (a queue cap is set here)."""
    if cap == "limit":
        queue, options = "default", ("--limit", "k=2")
    else:
        queue, options = "capped", ("--queue", "capped")
        jobctl.ok("queue", "set", "capped", "--max-running", "2")
    return (*CHAOS_WORKER_OPTIONS, "--queue", queue, "--concurrency", "4"), options


@pytest.mark.parametrize("cap", ["limit", "queue_cap"])
def test_kill9_of_one_of_three_workers_never_lets_more_than_two_run(
        jobctl: Jobctl, tmp_path: Path, leftover_pids: list[int], cap: str) -> None:
    log = tmp_path / "side-effects.log"
    worker_options, options = cap_of_two(jobctl, cap)
    # The victim first, alone, so that it surely runs jobs; then two more compete with it.
    victim = jobctl.start_worker(*worker_options, "--name", "victim")
    # Longer on the victim, so that it is surely mid-run when killed however slowly the others
    # start; half a second elsewhere.
    body = 'if [ "$JOBCTL_WORKER" = victim ]; then sleep 1.5; else sleep 0.5; fi'
    ids = submit_batch(jobctl, tmp_path / "jobs.txt", [logging_script(log, body)] * 12, *options)
    wait_for(lambda: any(e.worker == "victim" for e in read_events(log)), 30,
             "the victim started no job")
    others = [jobctl.start_worker(*worker_options, "--name", f"other{n}", wait_started=False)
              for n in (1, 2)]
    for other in others:
        other.wait_started()

    def victim_running() -> list[tuple[int, int]]:
        return [key for key, (_, end, worker) in runs(read_events(log)).items()
                if worker == "victim" and end is None]

    wait_for(victim_running, 15, "the victim ran no job once the others were up",
             interval_s=0.01)
    kill9(victim)
    victim_pids = [pid for e in read_events(log) if e.worker == "victim" for pid in e.pids]
    leftover_pids.extend(victim_pids)

    wait_succeeded(jobctl, ids, timeout_s=90)

    events = read_events(log)
    assert overlapping_attempts(events) == [], "an attempt ended after the next one started"
    assert all(process_gone(pid) for pid in victim_pids), "a job of the dead worker still runs"
    ran = runs(events)
    statuses = {job: jobctl.status(job) for job in ids}
    intervals: dict[tuple[int, int], tuple[float, float]] = {}
    lost = []
    for (job, attempt), (start, end, worker) in ran.items():
        record = next(a for a in statuses[job]["attempts"] if a["attempt"] == attempt)
        if record["outcome"] == "succeeded":
            assert end is not None, f"job {job} attempt {attempt} succeeded without an end line"
            intervals[job, attempt] = (start, end)
            continue
        assert (worker, record["outcome"]) == ("victim", "lost"), (job, record)
        lost.append(job)
        if record["finished_at"] is not None:
            rescued = parse_time(record["finished_at"]).timestamp()
        else:
            rescued = ran[job, attempt + 1][0]
        intervals[job, attempt] = (start, max(rescued, end or rescued))
    assert lost, "no job of the victim was lost: it was not killed mid-run"
    for job in lost:
        outcomes = [a["outcome"] for a in statuses[job]["attempts"]]
        assert outcomes == ["lost", "succeeded"], (job, statuses[job]["attempts"])

    peak, at = peak_overlap(intervals.values())
    assert peak <= 2, (f"{peak} jobs ran at once under a cap of 2 (at {at:.3f}, "
                       f"{at - time.time():.1f}s ago): {describe_runs(intervals, at)}")


def victim_has_a_follower(jobctl: Jobctl) -> bool:
    """Whether the worker `victim` holds a follower in its read-ahead buffer now."""
    from jobctl.store.direct import open_or_create

    database = open_or_create(jobctl.database_url)
    try:
        with database.read() as conn:
            return bool(conn.scalar(
                "SELECT count(*) FROM jobs j JOIN workers w ON w.id = j.worker_id "
                "WHERE w.name = 'victim' AND j.state = 'running' AND j.in_buffer "
                "AND j.after_id IS NOT NULL"))
    finally:
        database.close()


@pytest.mark.parametrize("cap", ["limit", "queue_cap"])
def test_kill9_of_a_worker_holding_followers_never_lets_more_than_two_run(
        jobctl: Jobctl, tmp_path: Path, leftover_pids: list[int], cap: str) -> None:
    """A backlog of 150 jobs of 0.05 s under a cap of 2, three workers: they read gated jobs
    ahead as followers (each starts once the job it follows ended on its worker, in its place),
    and one is `kill -9`'d while it holds a follower in its buffer, the job that one follows
    running or just ended. Every job succeeds, and at no instant do more than 2 run.

    Judged from the jobs' own start/end lines: a run of the killed worker that wrote no end
    counts as running until its attempt was rescued or the job started again (as above); its
    follower that never started runs elsewhere. A buffered job the dead worker had started
    but not yet reported as started is taken back as never started, under the same attempt
    number: an at-least-once job may run again after a crash, so runs are told apart by
    worker too."""
    log = tmp_path / "side-effects.log"
    worker_options, options = cap_of_two(jobctl, cap)
    victim = jobctl.start_worker(*worker_options, "--name", "victim")
    ids = submit_batch(jobctl, tmp_path / "jobs.txt",
                       [logging_script(log, "sleep 0.05")] * 150, *options)
    # Alone, the victim takes both places and, once its jobs proved short, keeps them with
    # chains of followers; the others, started then, find both places taken (they could take
    # one only once a chain of the victim broke, which would leave it with no follower: had
    # they started first, the victim could wait out the whole drain for a place).
    wait_for(lambda: victim_has_a_follower(jobctl), 30, "the victim, alone, held no follower",
             interval_s=0.005)
    others = [jobctl.start_worker(*worker_options, "--name", f"other{n}", wait_started=False)
              for n in (1, 2)]
    for other in others:
        other.wait_started()
    wait_for(lambda: victim_has_a_follower(jobctl), 15,
             "the victim held no follower once the others were up", interval_s=0.005)
    kill9(victim)
    leftover_pids.extend(pid for e in read_events(log) if e.worker == "victim" for pid in e.pids)

    wait_succeeded(jobctl, ids, timeout_s=90)

    found: dict[tuple[int, int, str], list[float]] = {}
    for event in read_events(log):
        key = (event.job, event.attempt, event.worker)
        if event.kind == "start":
            assert key not in found, f"{key} started twice on one worker"
            found[key] = [event.time]
        elif event.kind == "end":
            found[key].append(event.time)
    assert {job for job, _, _ in found} == set(ids)
    outside = Counter(job for job, _, worker in found if worker != "victim")
    assert max(outside.values()) == 1, "a job ran twice on the workers that lived"
    assert all(len(times) == 2 for (_, _, worker), times in found.items() if worker != "victim")
    # A run the kill cut short keeps its place until its attempt was rescued, or else until
    # the job started again (as in the test above); one that ended, until its end.
    intervals: dict[tuple[int, int, str], tuple[float, float]] = {}
    for (job, attempt, worker), times in found.items():
        if len(times) == 2:
            intervals[job, attempt, worker] = (times[0], times[1])
            continue
        record = next((a for a in jobctl.status(job)["attempts"] if a["attempt"] == attempt
                       and a["outcome"] == "lost" and a["finished_at"] is not None), None)
        again = min(t[0] for (j, _, w), t in found.items() if j == job and w != "victim")
        # (rescued before it started again: touching intervals would count as overlapping)
        until = parse_time(record["finished_at"]).timestamp() if record else again - 1e-6
        intervals[job, attempt, worker] = (times[0], max(until, times[0]))
    assert any(worker == "victim" for _, _, worker in found)
    peak, at = peak_overlap(intervals.values())
    assert peak <= 2, (f"{peak} jobs ran at once under a cap of 2 (at {at:.3f}): "
                       f"{describe_runs(intervals, at)}")
