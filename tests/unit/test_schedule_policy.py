"""A schedule's misfire and overlap policies (jobctl.policy), without a database: which due fire
times fire, and what becomes of occurrences fired while earlier runs are going."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobctl.models import Misfire, Overlap
from jobctl.policy import (
    ActiveRun,
    OverlapAction,
    OverlapDecision,
    misfire_fire_times,
    overlap_decisions,
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
