"""SQLite: schedules (jobctl.store.schedules.SchedulesSQL).

No row locks here: every change runs in the caller's write transaction (BEGIN IMMEDIATE,
`DirectDatabase.write()`), which lets one writer in at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobctl.models import UNFINISHED_STATES, sql_states
from jobctl.store.direct import Conn
from jobctl.store.schedules import SCHEDULE_COLUMNS
from jobctl.store.sqlite import NOW

if TYPE_CHECKING:
    from jobctl.store.schedules import Advance

_COLUMNS = ", ".join(SCHEDULE_COLUMNS)
_ACTIVE = sql_states(UNFINISHED_STATES)

# --- reading ------------------------------------------------------------------------------------

# One schedule by name.
GET = f"SELECT {_COLUMNS} FROM schedules WHERE name = :name"
# Differs by necessity: no FOR UPDATE; the write transaction holds the whole database.
GET_FOR_UPDATE = GET
# Every schedule, by name.
LIST_ALL = f"SELECT {_COLUMNS} FROM schedules ORDER BY name"
# A schedule's latest occurrences, newest first.
RECENT_RUNS = """
SELECT id, fire_time, state, created_at, error FROM jobs
WHERE schedule_id = :id ORDER BY fire_time DESC LIMIT :limit"""

# --- changing -----------------------------------------------------------------------------------

# A new schedule; its created_at and updated_at are the caller's now (its first fire time was
# computed from that).
CREATE = """
INSERT INTO schedules (name, cron, every_s, timezone, job, workflow, overlap, misfire, jitter_s,
                       paused, start_at, end_at, next_fire_at, created_at, updated_at,
                       submitted_by)
VALUES (:name, :cron, :every_s, :timezone, :job, :workflow, :overlap, :misfire, :jitter_s,
        :paused, :start_at, :end_at, :next_fire_at, :now, :now, :submitted_by)
RETURNING id"""
# A schedule's new definition and next fire time; created_at too when given (a schedule imported
# over an old one of that name starts anew), else kept.
REPLACE = """
UPDATE schedules SET name = :name, cron = :cron, every_s = :every_s, timezone = :timezone,
    job = :job, workflow = :workflow, overlap = :overlap, misfire = :misfire,
    jitter_s = :jitter_s, paused = :paused, start_at = :start_at, end_at = :end_at,
    next_fire_at = :next_fire_at, created_at = coalesce(:created_at, created_at),
    updated_at = :now
WHERE id = :id"""
# Whether a schedule is paused. Differs by necessity: no FOR UPDATE (see GET_FOR_UPDATE).
PAUSED = "SELECT paused FROM schedules WHERE name = :name"
# Pause or resume; conditional on what was read, like every state change.
SET_PAUSED = f"""
UPDATE schedules SET paused = :paused, updated_at = {NOW}
WHERE name = :name AND paused = :before"""
# Remove a schedule; its jobs stay (they keep their schedule_id and fire_time).
DELETE = "DELETE FROM schedules WHERE name = :name"

# --- firing -------------------------------------------------------------------------------------

# The due schedules, oldest due first, with the database's now (one clock for the batch).
# Differs by necessity: no SKIP LOCKED; the caller's BEGIN IMMEDIATE keeps every other writer
# (and so every other scheduler) out already.
DUE = f"""
SELECT {NOW}, {_COLUMNS} FROM schedules
WHERE NOT paused AND next_fire_at <= {NOW}
ORDER BY next_fire_at
LIMIT :limit"""

# One schedule moves on; conditional on the value read: a schedule someone edited meanwhile keeps
# its new next time.
# Differs by necessity: one row at a time (executemany), where PostgreSQL takes arrays.
ADVANCE = """
UPDATE schedules SET next_fire_at = :next_fire_at, last_fire_at = :last_fire_at
WHERE id = :id AND next_fire_at = :expected"""


def advance(conn: Conn, advances: Sequence[Advance]) -> None:
    """See SchedulesSQL.advance: ADVANCE for each schedule of the batch."""
    conn.executemany(ADVANCE, [
        {"id": a.schedule_id, "expected": conn.time_param(a.expected),
         "next_fire_at": conn.time_param(a.next_fire_at),
         "last_fire_at": conn.time_param(a.last_fire_at)} for a in advances])


# What a schedule's overlap policy counts as still running: its jobs that have not ended, oldest
# first.
ACTIVE_RUNS = f"""
SELECT schedule_id, id, state FROM jobs
WHERE schedule_id IN (SELECT value FROM json_each(:ids)) AND state IN ({_ACTIVE})
ORDER BY id"""
# … and for a schedule of a workflow: the workflows it started that have unfinished tasks.
ACTIVE_WORKFLOWS = f"""
SELECT DISTINCT w.id FROM workflows w JOIN jobs j ON j.workflow_id = w.id
WHERE w.schedule_id = :schedule_id AND j.state IN ({_ACTIVE})
ORDER BY w.id"""

# --- the scheduler's clock ----------------------------------------------------------------------

# Seconds until the next active schedule is due (negative when one is overdue; NULL: none is).
SECONDS_UNTIL_DUE = """
SELECT (julianday(min(next_fire_at)) - julianday('now')) * 86400.0
FROM schedules WHERE NOT paused"""
