"""A schedule's timing, misfire and overlap policies (jobctl.policy), without a database: which due
fire times fire, where the schedule goes next, and what becomes of occurrences fired while earlier
runs are going."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from jobctl.models import JobState, Misfire, Overlap
from jobctl.policy import (
    ActiveRun,
    FiringPlan,
    OccurrenceOutcome,
    OverlapAction,
    OverlapDecision,
    misfire_fire_times,
    occurrence_outcome,
    overlap_batch,
    overlap_decisions,
    plan_firing,
    schedule_timing,
)

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


# Six fire times 10 s apart, the latest 5 s ago: all missed with a 1 s grace.
DOWNTIME = [ago(55 - 10 * k) for k in range(6)]


@pytest.mark.parametrize(("policy", "expected"), [
    (Misfire.SKIP, []),
    (Misfire.ONCE, [ago(5)]),  # the latest missed time stands for the downtime
    (Misfire.ALL, DOWNTIME),
])
def test_missed_fire_times_follow_the_policy(policy: Misfire, expected: list[datetime]) -> None:
    assert misfire_fire_times(policy, DOWNTIME, NOW, grace_s=1.0, cap=100) == expected


@pytest.mark.parametrize("policy", list(Misfire))
def test_an_on_time_fire_time_fires_whatever_the_policy(policy: Misfire) -> None:
    assert misfire_fire_times(policy, [ago(0.5)], NOW, grace_s=1.0, cap=100) == [ago(0.5)]
    # within a longer grace, 20 s late is on time too
    assert misfire_fire_times(policy, [ago(20)], NOW, grace_s=30.0, cap=100) == [ago(20)]


def test_once_fires_nothing_extra_when_something_is_on_time() -> None:
    due = [ago(30), ago(20), ago(0.2)]
    assert misfire_fire_times(Misfire.ONCE, due, NOW, grace_s=1.0, cap=100) == [ago(0.2)]
    assert misfire_fire_times(Misfire.SKIP, due, NOW, grace_s=1.0, cap=100) == [ago(0.2)]
    assert misfire_fire_times(Misfire.ALL, due, NOW, grace_s=1.0, cap=100) == due


def test_the_cap_keeps_the_latest_fire_times() -> None:
    due = [ago(100 - k) for k in range(101)]
    fired = misfire_fire_times(Misfire.ALL, due, NOW, grace_s=1.0, cap=7)
    assert fired == due[-7:]
    assert misfire_fire_times(Misfire.ALL, due, NOW, grace_s=1.0, cap=0) == []
    assert misfire_fire_times(Misfire.ALL, [], NOW, grace_s=1.0, cap=7) == []


RUN = OverlapDecision(OverlapAction.RUN)
BATCH = [ago(20), ago(10), ago(0)]


def test_allow_runs_everything() -> None:
    going = [ActiveRun(7, "job 7 (running)")]
    assert overlap_decisions(Overlap.ALLOW, BATCH, going) == [RUN, RUN, RUN]


def test_forbid_skips_while_a_run_is_going() -> None:
    going = [ActiveRun(7, "job 7 (running)"), ActiveRun(8, "job 8 (queued)")]
    assert overlap_decisions(Overlap.FORBID, BATCH[:2], going) == [
        OverlapDecision(OverlapAction.SKIP, "skipped: job 7 (running) is still going")] * 2


def test_forbid_with_nothing_going_runs_the_first_and_skips_the_rest_behind_it() -> None:
    decisions = overlap_decisions(Overlap.FORBID, BATCH, [])
    behind = "skipped: the run of 2026-05-01T11:59:40+00:00 (queued) is still going"
    assert decisions == [RUN, OverlapDecision(OverlapAction.SKIP, behind),
                         OverlapDecision(OverlapAction.SKIP, behind)]


def test_replace_runs_the_latest_and_cancels_what_is_going() -> None:
    going = [ActiveRun(7, "job 7 (running)"), ActiveRun(None, "the run of … (queued)")]
    superseded = OverlapDecision(OverlapAction.SUPERSEDED,
                                 "replaced by a later occurrence before it started")
    assert overlap_decisions(Overlap.REPLACE, BATCH, going) == [
        superseded, superseded, OverlapDecision(OverlapAction.RUN, cancel=(7,))]
    assert overlap_decisions(Overlap.REPLACE, BATCH[:1], []) == [RUN]


def test_no_occurrences_no_decisions() -> None:
    for overlap in Overlap:
        assert overlap_decisions(overlap, [], [ActiveRun(1, "job 1 (queued)")]) == []


def test_a_batch_of_several_schedules_is_decided_per_schedule_in_the_order_given() -> None:
    going = {2: [ActiveRun(7, "job 7 (running)")]}
    decisions = overlap_batch([(1, Overlap.FORBID, ago(10)), (2, Overlap.FORBID, ago(10)),
                               (1, Overlap.FORBID, ago(0)), (3, Overlap.ALLOW, ago(0))], going)
    behind = "skipped: the run of 2026-05-01T11:59:50+00:00 (queued) is still going"
    assert decisions == [RUN, OverlapDecision(OverlapAction.SKIP,
                                              "skipped: job 7 (running) is still going"),
                         OverlapDecision(OverlapAction.SKIP, behind), RUN]
    assert overlap_batch([], going) == []


def test_what_an_occurrence_is_recorded_as() -> None:
    skip = OverlapDecision(OverlapAction.SKIP, "skipped: job 7 (running) is still going")
    assert occurrence_outcome(skip, NOW, jitter_s=30.0) == OccurrenceOutcome(
        JobState.SKIPPED, NOW, finished_at=NOW, error=skip.error)
    superseded = OverlapDecision(OverlapAction.SUPERSEDED, "replaced")
    assert occurrence_outcome(superseded, NOW, jitter_s=0.0) == OccurrenceOutcome(
        JobState.CANCELLED, NOW, finished_at=NOW, error="replaced", cancel_requested=True)
    assert occurrence_outcome(RUN, NOW, jitter_s=0.0) == OccurrenceOutcome(JobState.QUEUED, NOW)


def test_jitter_delays_the_run_within_its_bound() -> None:
    rng = random.Random(4)
    delays = [(occurrence_outcome(RUN, NOW, 30.0, rng).run_at - NOW).total_seconds()
              for _ in range(50)]
    assert all(0.0 <= delay <= 30.0 for delay in delays)
    assert len(set(delays)) > 1


EVERY_10_S = schedule_timing(None, 10.0, "UTC", None, None, ago(3600))


def test_a_plan_fires_what_the_misfire_policy_keeps_and_moves_past_now() -> None:
    # fire times every 10 s from 50 s ago, looked at 5 s after the last of them: all missed
    plan = plan_firing(EVERY_10_S, Misfire.ONCE, ago(50), None, ago(5), grace_s=1.0, cap=100)
    assert plan == FiringPlan([ago(10)], missed=4, next_fire_at=NOW, last_fire_at=ago(10))
    # on time: fired whatever the policy
    plan = plan_firing(EVERY_10_S, Misfire.SKIP, NOW, ago(10), NOW, grace_s=1.0, cap=100)
    assert plan == FiringPlan([NOW], 0, NOW + timedelta(seconds=10), NOW)


def test_a_plan_that_fires_nothing_keeps_the_last_fire_time_and_an_ended_schedule_stops() -> None:
    ending = schedule_timing(None, 10.0, "UTC", None, ago(5), ago(3600))
    plan = plan_firing(ending, Misfire.SKIP, ago(30), ago(40), NOW, grace_s=1.0, cap=100)
    assert plan == FiringPlan([], missed=3, next_fire_at=None, last_fire_at=ago(40))


def test_an_interval_counts_from_its_start_or_else_its_creation_to_the_second() -> None:
    created = datetime(2026, 5, 1, 11, 0, 0, 700000, tzinfo=UTC)
    assert schedule_timing(None, 60.0, "UTC", None, None, created).next_after(NOW) == \
        NOW + timedelta(minutes=1)
    start = datetime(2026, 5, 1, 11, 0, 30, tzinfo=UTC)
    assert schedule_timing(None, 60.0, "UTC", start, None, created).next_after(NOW) == \
        NOW + timedelta(seconds=30)
