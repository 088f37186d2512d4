"""When a burst worker is done (jobctl.policy): pure decisions on what its queues still hold."""

from __future__ import annotations

from jobctl.policy import Backlog, Unfinished, burst_decision, stuck

SERVED = frozenset({"default"})


def test_due_or_running_work_keeps_it_going() -> None:
    due = burst_decision(Backlog(due=1))
    assert due.keep_going and due.wait_s == 0.0  # claim at once, not after a poll interval
    assert burst_decision(Backlog(running=1)).keep_going


def test_nothing_left_ends_it() -> None:
    decision = burst_decision(Backlog(served=SERVED))
    assert not decision.keep_going and decision.left == {}


def test_a_retry_waiting_out_its_backoff_keeps_it_going_until_due() -> None:
    decision = burst_decision(Backlog(retry_in_s=3.5, served=SERVED))
    assert decision.keep_going and decision.wait_s == 3.5


def test_waiting_on_jobs_that_can_still_end_keeps_it_going() -> None:
    jobs = {
        2: Unfinished("waiting", "default", deps=(1,)),
        1: Unfinished("running", "other"),  # running anywhere ends (or is rescued)
        4: Unfinished("waiting", "default", deps=(3,)),
        3: Unfinished("queued", "default"),
    }
    assert burst_decision(Backlog(waiting=(2, 4), jobs=jobs, served=SERVED)).keep_going


def test_waiting_on_an_unserved_queue_ends_it_and_names_the_cause() -> None:
    jobs = {
        3: Unfinished("waiting", "default", deps=(2,)),
        2: Unfinished("waiting", "default", deps=(1,)),
        1: Unfinished("queued", "gpu"),
    }
    decision = burst_decision(Backlog(waiting=(2, 3), jobs=jobs, served=SERVED))
    assert not decision.keep_going
    assert decision.left == {
        2: "waits for what cannot end: job 1 is queued in queue 'gpu', which no live worker "
           "serves",
        3: "waits for what cannot end: job 1 is queued in queue 'gpu', which no live worker "
           "serves",
    }


def test_a_pruned_dependency_never_ends() -> None:
    jobs = {5: Unfinished("waiting", "default", deps=(4,))}
    assert stuck(jobs, SERVED, [5]) == {5: "waits for what cannot end: job 4 no longer exists"}


def test_one_live_waiting_job_among_stuck_ones_keeps_it_going() -> None:
    jobs = {
        2: Unfinished("waiting", "default", deps=(1,)),
        1: Unfinished("queued", "gpu"),
        4: Unfinished("waiting", "default", deps=(3,)),
        3: Unfinished("running", "default"),
    }
    assert burst_decision(Backlog(waiting=(2, 4), jobs=jobs, served=SERVED)).keep_going


def test_jobs_of_a_user_it_cannot_become_are_left_with_the_reason() -> None:
    decision = burst_decision(Backlog(served=SERVED, not_mine={7: "runs as user 'bob', which "
                                                                 "this worker cannot become"}))
    assert not decision.keep_going and list(decision.left) == [7]
