"""PostgreSQL: schedules (jobctl.store.schedules.SchedulesSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobctl.models import UNFINISHED_STATES, sql_states
from jobctl.store.direct import Conn
from jobctl.store.postgres import NOW
from jobctl.store.schedules import SCHEDULE_COLUMNS

if TYPE_CHECKING:
    from jobctl.store.schedules import Advance

_COLUMNS = ", ".join(SCHEDULE_COLUMNS)
_ACTIVE = sql_states(UNFINISHED_STATES)

# --- reading ------------------------------------------------------------------------------------

# One schedule by name.
GET = f"SELECT {_COLUMNS} FROM schedules WHERE name = %(name)s"
# One schedule by name, its row locked until the transaction ends (edit, trigger, import).
# Differs by necessity: FOR UPDATE (SQLite's write transaction holds the whole database).
GET_FOR_UPDATE = f"{GET} FOR UPDATE"
# Every schedule, by name.
LIST_ALL = f"SELECT {_COLUMNS} FROM schedules ORDER BY name"
# A schedule's latest occurrences, newest first.
RECENT_RUNS = """
SELECT id, fire_time, state, created_at, error FROM jobs
WHERE schedule_id = %(id)s ORDER BY fire_time DESC LIMIT %(limit)s"""

# --- changing -----------------------------------------------------------------------------------

# A new schedule; its created_at and updated_at are the caller's now (its first fire time was
# computed from that). The casts type NULL parameters. Differs by necessity: no submitted_by,
# which the database sets (jobctl.store.postgres.identity).
CREATE = """
INSERT INTO schedules (name, cron, every_s, timezone, job, workflow, overlap, misfire, jitter_s,
                       paused, start_at, end_at, next_fire_at, created_at, updated_at)
VALUES (%(name)s, %(cron)s, %(every_s)s, %(timezone)s, CAST(%(job)s AS jsonb),
        CAST(%(workflow)s AS jsonb), %(overlap)s, %(misfire)s, %(jitter_s)s, %(paused)s,
        CAST(%(start_at)s AS timestamptz), CAST(%(end_at)s AS timestamptz),
        CAST(%(next_fire_at)s AS timestamptz), CAST(%(now)s AS timestamptz),
        CAST(%(now)s AS timestamptz))
RETURNING id"""
# A schedule's new definition and next fire time; created_at too when given (a schedule imported
# over an old one of that name starts anew), else kept.
REPLACE = """
UPDATE schedules SET name = %(name)s, cron = %(cron)s, every_s = %(every_s)s,
    timezone = %(timezone)s, job = CAST(%(job)s AS jsonb), workflow = CAST(%(workflow)s AS jsonb),
    overlap = %(overlap)s, misfire = %(misfire)s, jitter_s = %(jitter_s)s, paused = %(paused)s,
    start_at = CAST(%(start_at)s AS timestamptz), end_at = CAST(%(end_at)s AS timestamptz),
    next_fire_at = CAST(%(next_fire_at)s AS timestamptz),
    created_at = coalesce(CAST(%(created_at)s AS timestamptz), created_at),
    updated_at = CAST(%(now)s AS timestamptz)
WHERE id = %(id)s"""
# Whether a schedule is paused, its row locked for the change that follows.
# Differs by necessity: FOR UPDATE (see GET_FOR_UPDATE).
PAUSED = "SELECT paused FROM schedules WHERE name = %(name)s FOR UPDATE"
# Pause or resume; conditional on what was read, like every state change.
SET_PAUSED = f"""
UPDATE schedules SET paused = %(paused)s, updated_at = {NOW}
WHERE name = %(name)s AND paused = %(before)s"""
# Remove a schedule; its jobs stay (they keep their schedule_id and fire_time).
DELETE = "DELETE FROM schedules WHERE name = %(name)s"

# --- firing -------------------------------------------------------------------------------------

# The due schedules, oldest due first, with the database's now (one clock for the batch), their
# rows locked, and rows another scheduler holds skipped, not waited for: it fires those.
# Differs by necessity: FOR UPDATE SKIP LOCKED (SQLite's BEGIN IMMEDIATE keeps every other
# writer out already).
DUE = f"""
SELECT {NOW}, {_COLUMNS} FROM schedules
WHERE NOT paused AND next_fire_at <= {NOW}
ORDER BY next_fire_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED"""

# Every schedule of the batch moves on, in one statement, one array parameter per column;
# conditional on the value read: a schedule someone edited meanwhile keeps its new next time.
# Differs by necessity: arrays and unnest (SQLite: one row at a time, executemany).
ADVANCE = """
UPDATE schedules s SET next_fire_at = u.next_fire_at, last_fire_at = u.last_fire_at
FROM unnest(CAST(%(ids)s AS bigint[]), CAST(%(expected)s AS timestamptz[]),
            CAST(%(next_fire_ats)s AS timestamptz[]), CAST(%(last_fire_ats)s AS timestamptz[]))
     AS u(id, expected, next_fire_at, last_fire_at)
WHERE s.id = u.id AND s.next_fire_at = u.expected"""


def advance(conn: Conn, advances: Sequence[Advance]) -> None:
    """See SchedulesSQL.advance: ADVANCE, once for the batch."""
    conn.execute(ADVANCE, {
        "ids": [a.schedule_id for a in advances],
        "expected": [a.expected for a in advances],
        "next_fire_ats": [a.next_fire_at for a in advances],
        "last_fire_ats": [a.last_fire_at for a in advances],
    })


# What a schedule's overlap policy counts as still running: its jobs that have not ended, oldest
# first.
ACTIVE_RUNS = f"""
SELECT schedule_id, id, state FROM jobs
WHERE schedule_id = ANY(%(ids)s) AND state IN ({_ACTIVE})
ORDER BY id"""
# … and for a schedule of a workflow: the workflows it started that have unfinished tasks.
ACTIVE_WORKFLOWS = f"""
SELECT DISTINCT w.id FROM workflows w JOIN jobs j ON j.workflow_id = w.id
WHERE w.schedule_id = %(schedule_id)s AND j.state IN ({_ACTIVE})
ORDER BY w.id"""

# --- the scheduler's clock ----------------------------------------------------------------------

# Seconds until the next active schedule is due (negative when one is overdue; NULL: none is).
SECONDS_UNTIL_DUE = """
SELECT EXTRACT(EPOCH FROM min(next_fire_at) - clock_timestamp())
FROM schedules WHERE NOT paused"""
