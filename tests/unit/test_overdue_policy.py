"""Dead-man's switches without a database (jobctl.policy): is a schedule or check overdue at a
moment, given its period, when it was armed, its latest success and the spell noticed before;
a check's default grace; and the job an overdue hook runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from jobctl.models import CHECK_GRACE_MAX_S, HOOK_MAX_ATTEMPTS
from jobctl.policy import OverdueState, default_grace_s, overdue_hook, overdue_state

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_measured_from_when_it_was_armed_while_nothing_succeeded() -> None:
    assert overdue_state(NOW, 60, armed_at=ago(30), last_success=None,
                         spell=None) == OverdueState(since=None, due_at=ago(-30))
    assert overdue_state(NOW, 60, armed_at=ago(90), last_success=None,
                         spell=None) == OverdueState(since=ago(30))


def test_measured_from_the_latest_success_once_there_is_one() -> None:
    # Armed long ago, but a run succeeded 10 s ago: due 50 s from now.
    assert overdue_state(NOW, 60, armed_at=ago(1000), last_success=ago(10),
                         spell=None) == OverdueState(since=None, due_at=ago(-50))
    # The latest success is 61 s old: overdue since a second ago (when it became so).
    state = overdue_state(NOW, 60, armed_at=ago(1000), last_success=ago(61), spell=None)
    assert state.overdue and state.since == ago(1)


def test_exactly_at_the_deadline_is_overdue() -> None:
    assert overdue_state(NOW, 60, armed_at=ago(60), last_success=None, spell=None).overdue


def test_a_spell_lasts_until_a_success_newer_than_its_start() -> None:
    spell = ago(100)
    # Successes before the spell began do not end it, however little time it has left.
    assert overdue_state(NOW, 60, ago(1000), last_success=ago(160),
                         spell=spell) == OverdueState(since=spell)
    assert overdue_state(NOW, 60, ago(1000), last_success=spell,
                         spell=spell) == OverdueState(since=spell)
    # A failure ping's spell (the check's deadline not even passed) lasts too.
    assert overdue_state(NOW, 3600, ago(10), last_success=None, spell=ago(5)).since == ago(5)
    # A success after it ends it.
    assert overdue_state(NOW, 60, ago(1000), last_success=ago(5),
                         spell=spell) == OverdueState(since=None, due_at=ago(-55))


def test_after_a_spell_ended_a_new_one_begins_once_past_the_period_again() -> None:
    # The spell began 500 s ago, a run succeeded 200 s ago: a new spell since 140 s ago.
    state = overdue_state(NOW, 60, ago(1000), last_success=ago(200), spell=ago(500))
    assert state == OverdueState(since=ago(140))


@pytest.mark.parametrize(("every_s", "grace_s"), [
    (60.0, 30.0),  # a short period: half of it
    (600.0, 300.0),
    (7200.0, CHECK_GRACE_MAX_S),  # healthchecks.io's hour, for long periods
    (86400.0, CHECK_GRACE_MAX_S),
])
def test_default_grace_is_half_the_period_at_most_an_hour(every_s: float, grace_s: float) -> None:
    assert default_grace_s(every_s) == grace_s


def test_an_overdue_hook_is_a_shell_job_told_what_is_overdue() -> None:
    document = {"name": "backup", "overdue": True}
    spec = overdue_hook("backup", "mail -s late ops", "ops", document, job_id=41, exit_code=3)
    assert spec.argv == ["/bin/sh", "-c", "mail -s late ops"]
    assert spec.queue == "ops" and spec.name == "on_overdue of backup"
    assert spec.env == {"JOBCTL_HOOK_NAME": "backup", "JOBCTL_HOOK_STATE": "overdue",
                        "JOBCTL_HOOK_JOB_ID": "41", "JOBCTL_HOOK_EXIT_CODE": "3"}
    assert spec.input is not None and json.loads(spec.input) == document
    assert spec.unique_key is None and spec.after == ()
    assert spec.retries == HOOK_MAX_ATTEMPTS - 1 > 0


def test_a_check_hook_has_no_run_to_name() -> None:
    spec = overdue_hook("c", "true", "default", {})
    assert spec.env["JOBCTL_HOOK_JOB_ID"] == "" and spec.env["JOBCTL_HOOK_EXIT_CODE"] == ""
