"""PostgreSQL: the overdue pass and schedules' alerts (jobctl.store.overdue.OverdueSQL)."""

from __future__ import annotations

from jobctl.models import JobState
from jobctl.store.overdue import LAST_SUCCESS
from jobctl.store.postgres import NOW
from jobctl.store.schedules import SCHEDULE_COLUMNS

_COLUMNS = ", ".join(SCHEDULE_COLUMNS)
_SUCCEEDED = JobState.SUCCEEDED.value

# A schedule's dead-man's switch as `schedule add/edit` set it (jobctl.store.overdue.set_alert
# decides whether its clock starts anew).
SET_ALERT = """
UPDATE schedules SET alert_after_s = %(alert_after_s)s, on_overdue = %(on_overdue)s,
    alert_set_at = CAST(%(alert_set_at)s AS timestamptz),
    overdue_since = CAST(%(overdue_since)s AS timestamptz),
    alert_check_at = CAST(%(alert_check_at)s AS timestamptz)
WHERE id = %(id)s"""
# The latest succeeded run of each of these schedules (`schedule list/show`), one probe each of
# ix_jobs_schedule_succeeded.
LAST_SUCCESSES = f"""
SELECT schedule_id, max(finished_at) FROM jobs
WHERE schedule_id = ANY(%(ids)s) AND state = '{_SUCCEEDED}'
GROUP BY schedule_id"""

# --- the schedulers' overdue pass -----------------------------------------------------------------

# Schedules not overdue that may have become so (their alert_check_at passed), earliest first,
# with their latest success. The caller's now is a parameter, not clock_timestamp() (volatile:
# no index bound), so ix_schedules_alert_check_at bounds the scan: none due, nothing read. No
# row locks: the change is MOVE_SCHEDULE's, conditional on what this read.
DUE_SCHEDULES = f"""
SELECT {NOW}, {_COLUMNS}, alert_check_at, {LAST_SUCCESS} FROM schedules
WHERE overdue_since IS NULL AND alert_check_at IS NOT NULL
  AND alert_check_at <= CAST(%(now)s AS timestamptz)
ORDER BY alert_check_at
LIMIT %(limit)s"""
# Schedules in an overdue spell (ix_schedules_overdue_since), with their latest success: a run
# that succeeded since the spell began ends it.
OVERDUE_SCHEDULES = f"""
SELECT {NOW}, {_COLUMNS}, alert_check_at, {LAST_SUCCESS} FROM schedules
WHERE overdue_since IS NOT NULL
ORDER BY overdue_since"""
# Begin or end a spell, or move alert_check_at on; only if the schedule is still as read (its
# spell, its alert_check_at, which an edit resets) and no run succeeded after the latest success
# the decision saw. Of several schedulers noticing the same spell, exactly one gets the row
# back: the others wait on its row lock, then find overdue_since set and update nothing.
MOVE_SCHEDULE = f"""
UPDATE schedules s SET overdue_since = CAST(%(since)s AS timestamptz),
    alert_check_at = CAST(%(check_at)s AS timestamptz)
WHERE s.id = %(id)s
  AND s.overdue_since IS NOT DISTINCT FROM CAST(%(expected_since)s AS timestamptz)
  AND s.alert_check_at IS NOT DISTINCT FROM CAST(%(expected_check_at)s AS timestamptz)
  AND NOT EXISTS (
      SELECT 1 FROM jobs j
      WHERE j.schedule_id = s.id AND j.state = '{_SUCCEEDED}'
        AND j.finished_at > coalesce(CAST(%(seen)s AS timestamptz), '-infinity'))
RETURNING s.id"""
# A schedule's latest occurrence (uq_jobs_schedule_fire_time), for its hook's environment.
LATEST_RUN = """
SELECT id, exit_code FROM jobs WHERE schedule_id = %(id)s ORDER BY fire_time DESC LIMIT 1"""

# --- the scheduler's clock and metrics ------------------------------------------------------------

# Seconds until a schedule or check that is not overdue may become so (negative: it may be
# already; NULL: none can).
SECONDS_UNTIL_DUE = """
SELECT EXTRACT(EPOCH FROM min(due) - clock_timestamp()) FROM (
    SELECT min(alert_check_at) AS due FROM schedules
    WHERE overdue_since IS NULL AND alert_check_at IS NOT NULL
    UNION ALL
    SELECT min(overdue_at) FROM checks WHERE overdue_since IS NULL) AS next"""
# Every switch, overdue or not: schedules with an alert, and checks.
OVERDUE_FLAGS = """
SELECT 'schedule', name, overdue_since IS NOT NULL FROM schedules
WHERE alert_after_s IS NOT NULL
UNION ALL
SELECT 'check', name, overdue_since IS NOT NULL FROM checks"""
