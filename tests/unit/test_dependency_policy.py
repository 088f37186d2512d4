"""The state a new job starts in given its dependencies' states (jobctl.policy), without a
database; settling waiting jobs applies the same rule in SQL (tests/store/test_deps.py)."""

from __future__ import annotations

from jobctl.models import JobState
from jobctl.policy import Initial, dependency_error, dependent_state, initial_state


def test_queued_when_every_dependency_is_met() -> None:
    states = {1: "succeeded", 2: "failed", 3: "cancelled"}
    assert initial_state([1], [2, 3], states) == Initial(JobState.QUEUED)
    assert initial_state([], [], {}) == Initial(JobState.QUEUED)


def test_waiting_while_some_dependency_has_not_ended() -> None:
    states = {1: "succeeded", 2: "running", 3: "waiting"}
    assert initial_state([1, 2], [], states) == Initial(JobState.WAITING)
    assert initial_state([1], [3], states) == Initial(JobState.WAITING)


def test_an_after_dependency_that_can_never_succeed_ends_the_job_at_once() -> None:
    states = {4: "running", 5: "lost", 6: "cancelled", 7: "skipped"}
    # the lowest failing id is named
    assert initial_state([6, 5, 4], [], states) == Initial(JobState.FAILED, "dependency 5 lost")
    assert initial_state([6], [], states) == Initial(JobState.CANCELLED, "dependency 6 cancelled")
    assert initial_state([7], [], states) == Initial(JobState.FAILED, "dependency 7 skipped")
    # --after-any only waits for the end, whatever it is
    assert initial_state([], [5, 6], states) == Initial(JobState.QUEUED)


def test_a_dependent_of_a_cancelled_job_is_cancelled_of_any_other_failure_failed() -> None:
    assert dependent_state("cancelled") is JobState.CANCELLED
    assert dependent_state("failed") is JobState.FAILED
    assert dependent_state("lost") is JobState.FAILED
    assert dependency_error(12, "lost") == "dependency 12 lost"
