"""SQLite: the overdue pass and schedules' alerts (jobctl.store.overdue.OverdueSQL).

No row locks here: every change runs in the caller's write transaction (BEGIN IMMEDIATE), which
lets one writer in at a time.
"""

from __future__ import annotations

from jobctl.models import JobState
from jobctl.store.overdue import LAST_SUCCESS
from jobctl.store.schedules import SCHEDULE_COLUMNS
from jobctl.store.sqlite import NOW

_COLUMNS = ", ".join(SCHEDULE_COLUMNS)
_SUCCEEDED = JobState.SUCCEEDED.value

# A schedule's dead-man's switch as `schedule add/edit` set it (jobctl.store.overdue.set_alert
# decides whether its clock starts anew).
SET_ALERT = """
UPDATE schedules SET alert_after_s = :alert_after_s, on_overdue = :on_overdue,
    alert_set_at = :alert_set_at, overdue_since = :overdue_since,
    alert_check_at = :alert_check_at
WHERE id = :id"""
# The latest succeeded run of each of these schedules (`schedule list/show`), one probe each of
# ix_jobs_schedule_succeeded.
LAST_SUCCESSES = f"""
SELECT schedule_id, max(finished_at) FROM jobs
WHERE schedule_id IN (SELECT value FROM json_each(:ids)) AND state = '{_SUCCEEDED}'
GROUP BY schedule_id"""

# --- the schedulers' overdue pass -----------------------------------------------------------------

# Schedules not overdue that may have become so (their alert_check_at passed), earliest first,
# with their latest success (ix_schedules_alert_check_at bounds the scan: none due, nothing
# read).
DUE_SCHEDULES = f"""
SELECT {NOW}, {_COLUMNS}, alert_check_at, {LAST_SUCCESS} FROM schedules
WHERE overdue_since IS NULL AND alert_check_at IS NOT NULL AND alert_check_at <= :now
ORDER BY alert_check_at
LIMIT :limit"""
# Schedules in an overdue spell (ix_schedules_overdue_since), with their latest success: a run
# that succeeded since the spell began ends it.
OVERDUE_SCHEDULES = f"""
SELECT {NOW}, {_COLUMNS}, alert_check_at, {LAST_SUCCESS} FROM schedules
WHERE overdue_since IS NOT NULL
ORDER BY overdue_since"""
# Begin or end a spell, or move alert_check_at on; only if the schedule is still as read (its
# spell, its alert_check_at, which an edit resets) and no run succeeded after the latest success
# the decision saw. Schedulers take turns at the write lock: of several noticing the same spell,
# the first changes the row, the later ones find overdue_since set and update nothing.
MOVE_SCHEDULE = f"""
UPDATE schedules SET overdue_since = :since, alert_check_at = :check_at
WHERE id = :id AND overdue_since IS :expected_since AND alert_check_at IS :expected_check_at
  AND NOT EXISTS (
      SELECT 1 FROM jobs j
      WHERE j.schedule_id = schedules.id AND j.state = '{_SUCCEEDED}'
        AND j.finished_at > coalesce(:seen, ''))
RETURNING id"""
# A schedule's latest occurrence (uq_jobs_schedule_fire_time), for its hook's environment.
LATEST_RUN = """
SELECT id, exit_code FROM jobs WHERE schedule_id = :id ORDER BY fire_time DESC LIMIT 1"""

# --- the scheduler's clock and metrics ------------------------------------------------------------

# Seconds until a schedule or check that is not overdue may become so (negative: it may be
# already; NULL: none can).
SECONDS_UNTIL_DUE = """
SELECT (julianday(min(due)) - julianday('now')) * 86400.0 FROM (
    SELECT min(alert_check_at) AS due FROM schedules
    WHERE overdue_since IS NULL AND alert_check_at IS NOT NULL
    UNION ALL
    SELECT min(overdue_at) FROM checks WHERE overdue_since IS NULL)"""
# Every switch, overdue or not: schedules with an alert, and checks.
OVERDUE_FLAGS = """
SELECT 'schedule', name, overdue_since IS NOT NULL FROM schedules
WHERE alert_after_s IS NOT NULL
UNION ALL
SELECT 'check', name, overdue_since IS NOT NULL FROM checks"""
