"""The jobs a worker holds and its read-ahead buffer (jobctl/worker/readahead.py), and the
fencing deadline (jobctl/worker/heartbeat.py), alone: no database, no process is started."""

from __future__ import annotations

import time

import pytest

from jobctl.models import Delivery
from jobctl.store.queue import ClaimedJob
from jobctl.worker.heartbeat import fence_deadline
from jobctl.worker.process import JobProcess
from jobctl.worker.readahead import (
    READAHEAD_MAX_AVERAGE_S,
    READAHEAD_MAX_WAIT_S,
    Held,
    Running,
    claim_room,
)


def run(job_id: int, in_buffer: bool = False, after: int | None = None) -> Running:
    job = ClaimedJob(id=job_id, attempt=1, argv=["true"], env={}, cwd=None, timeout_s=None,
                     max_attempts=1, backoff_s=1.0, delivery=Delivery.AT_LEAST_ONCE,
                     queue="default", in_buffer=in_buffer or after is not None, after=after)
    return Running(job, JobProcess(job, lambda stream, seq, data: None))


def test_jobs_fill_the_slots_then_wait_in_the_buffer() -> None:
    held = Held(concurrency=2)
    assert [held.hold(run(i)) for i in (1, 2, 3, 4)] == [True, True, False, False]
    assert held.busy_slots == 2 and held.free_slots() == 0 and held.count() == 4
    assert [r.job.id for r in held.buffered()] == [3, 4] and held.has_buffered()
    assert held.take_started() == [], "jobs that start at once are not started from the buffer"


def test_a_slot_takes_the_next_buffered_job_in_order_and_marks_it_started() -> None:
    held = Held(concurrency=1)
    first, second, third = run(1), run(2), run(3)
    for r in (first, second, third):
        held.hold(r)
    held.ended(first)
    assert held.next_for_slot(feed=True) is second
    assert held.take_started() == [2]
    assert held.take_started() == [], "taken once"
    assert held.busy_slots == 1 and [r.job.id for r in held.buffered()] == [3]


def test_a_draining_worker_starts_nothing_more_and_frees_the_slot() -> None:
    held = Held(concurrency=1)
    held.hold(run(1))
    held.hold(run(2))
    assert held.next_for_slot(feed=False) is None
    assert held.busy_slots == 0 and held.free_slots() == 1 and held.take_started() == []


def test_a_job_claimed_for_the_buffer_that_finds_a_free_slot_counts_as_started_from_it() -> None:
    held = Held(concurrency=1)
    assert held.hold(run(7, in_buffer=True)) is True
    assert held.take_started() == [7]


def test_a_follower_starts_only_once_the_job_it_follows_has_ended() -> None:
    """Even with slots free, and even when another slot frees first: it takes that job's place
    in a cap or limit (jobctl.capacity.follow), so the two never run at once."""
    held = Held(concurrency=3)
    leader, other = run(1), run(2)
    held.hold(leader)
    held.hold(other)
    follower, plain = run(3, after=1), run(4, in_buffer=True)
    assert held.hold(follower) is False, "started beside the job it follows"
    assert held.hold(plain) is True  # a free slot, and nothing to wait for
    held.ended(other)
    assert held.next_for_slot(feed=True) is None, "the slot of another job took the follower"
    held.ended(leader)
    assert held.next_for_slot(feed=True) is follower
    assert held.take_started() == [4, 3]


def test_a_follower_goes_back_with_the_job_it_follows() -> None:
    """A chain 1 <- 2 <- 3 (2 waits for 1, 3 for 2) and 4 of its own: 2 waited too long and
    goes back to the queue unstarted. 3 goes with it: were it to start now, beside 1, it would
    hold a place of its own that nobody counted when it was claimed."""
    held = Held(concurrency=2)
    leader, middle, last, other = run(1), run(2, after=1), run(3, after=2), run(4, after=9)
    for r in (leader, middle, last, other):
        held.hold(r)
    assert held.busy_slots == 2  # 1, and 4 (the job it follows is not held here)
    assert held.remove_unstarted([middle]) == [middle, last]
    assert held.ids() == [1, 4] and held.buffered() == []


def test_start_marks_of_a_failed_turn_go_first_in_the_next() -> None:
    held = Held(concurrency=1)
    for i in (1, 2, 3):
        held.hold(run(i))
    held.next_for_slot(feed=True)
    marks = held.take_started()
    held.next_for_slot(feed=True)
    held.give_back(marks)
    assert held.take_started() == [2, 3]


def test_leases_are_kept_for_ended_jobs_until_their_results_are_written() -> None:
    held = Held(concurrency=2)
    one, two = run(1), run(2)
    held.hold(one)
    held.hold(two)
    held.ended(one)
    assert held.ids() == [2] and held.lease_ids() == [1, 2]
    held.written([1])
    assert held.lease_ids() == [2]
    held.ended(two)
    assert held.idle() and held.lease_ids() == [2]


def test_only_buffered_jobs_are_removed_to_be_released_and_stale_is_by_wait() -> None:
    held = Held(concurrency=1)
    running, waiting, fresh = run(1), run(2), run(3)
    for r in (running, waiting, fresh):
        held.hold(r)
    waiting.claimed_at = time.monotonic() - READAHEAD_MAX_WAIT_S - 0.5
    assert held.stale(time.monotonic()) == [waiting]
    assert held.remove_unstarted([running, waiting]) == [waiting]
    assert held.ids() == [1, 3] and held.buffered() == [fresh]
    assert held.remove_unstarted([waiting]) == [], "removed once"


def test_kill_all_marks_every_held_job_released_even_before_it_started() -> None:
    held = Held(concurrency=1)
    started, buffered = run(1), run(2)
    held.hold(started)
    held.hold(buffered)
    held.kill_all(hard=False)
    assert started.released and buffered.released
    # Not started yet: its process will not start at all, and says why.
    result = buffered.process.run()
    assert not result.started and result.kill_reason == "the worker shut down before it finished"


def test_kill_at_once_counts_the_job_as_lost_and_a_cancel_as_cancelled() -> None:
    held = Held(concurrency=2)
    lost, cancelled = run(1), run(2)
    held.hold(lost)
    held.hold(cancelled)
    held.kill([1, 99], "lease lost", at_once=True)
    held.kill({2}, "cancelled", cancelled=True)
    assert lost.lost and not lost.cancelled
    assert cancelled.cancelled and not cancelled.lost


@pytest.mark.parametrize(("held", "readahead", "backlog", "average_s", "room"), [
    (0, None, False, 0.1, 2),  # no backlog: the free slots only
    (1, None, False, 0.1, 1),
    (0, None, True, 0.1, 2 + 8),  # a backlog of short jobs: four times the concurrency more
    (0, 3, True, 0.1, 2 + 3),  # --readahead given
    (0, None, True, READAHEAD_MAX_AVERAGE_S, 2),  # jobs too long to read ahead for
    (12, None, True, 0.1, 0),  # never negative
])
def test_claim_room(held: int, readahead: int | None, backlog: bool, average_s: float,
                    room: int) -> None:
    assert claim_room(held, 2, readahead, backlog, average_s) == room


@pytest.mark.parametrize(("held", "readahead", "backlog", "average_s", "room"), [
    (0, None, True, 0.05, 2 + 16),  # chains of followers: eight times the concurrency more
    (0, None, True, 0.1, 2 + 8),  # unless eight would wait half a second: four, as a line
    (0, 3, True, 0.1, 2 + 3),  # --readahead given: as given
    (0, None, False, 0.1, 2),  # no backlog: the free slots only
    (0, None, True, READAHEAD_MAX_AVERAGE_S, 2),
])
def test_claim_room_while_running_gated_jobs(held: int, readahead: int | None, backlog: bool,
                                             average_s: float, room: int) -> None:
    assert claim_room(held, 2, readahead, backlog, average_s, following=True) == room


def test_the_fence_falls_a_margin_before_the_lease_runs_out() -> None:
    assert fence_deadline(100.0, 6.0) == pytest.approx(105.0)  # lease/6
    assert fence_deadline(100.0, 60.0) == pytest.approx(155.0)  # at most 5 s


def test_claimed_jobs_are_held_with_each_follower_after_the_job_it_follows() -> None:
    """One claim can make a chain (5 <- 7 <- 3) whose ids run the other way: the worker holds the
    jobs in this order, so a follower never finds the job it follows not held yet (and would
    start beside it)."""
    from jobctl.store.queue import _in_start_order

    jobs = [run(3, after=7).job, run(7, after=5).job, run(5).job, run(4, in_buffer=True).job,
            run(1, after=99).job]
    ordered = [job.id for job in _in_start_order(jobs)]
    assert ordered[0] == 5
    assert ordered.index(5) < ordered.index(7) < ordered.index(3)
    assert sorted(ordered) == [1, 3, 4, 5, 7]
    held = Held(concurrency=4)
    started = [job.id for job in _in_start_order(jobs)
               if held.hold(Running(job, JobProcess(job, lambda stream, seq, data: None)))]
    assert 3 not in started and 7 not in started
