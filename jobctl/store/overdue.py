"""Dead-man's switches: overdue schedules (`schedule add --alert-after`) and checks (`jobctl
check`), noticed by the schedulers, leaderless.

Every `jobctl scheduler run` process makes an overdue pass on each turn of its loop (`evaluate`):

- It reads, with the database's now as a parameter, so that each index bounds its scan, the
  schedules that may have become overdue (`alert_check_at` passed: ix_schedules_alert_check_at),
  those in an overdue spell (ix_schedules_overdue_since), and the checks whose deadline passed
  (ix_checks_overdue_at). With nothing due, that is three index probes that find nothing.
- policy.overdue_state decides from the facts: a schedule's latest succeeded job (its
  `finished_at`, ix_jobs_schedule_succeeded), or when its alert was set when it has none; a
  check's last successful ping, or when it was added.
- It writes the outcome with a conditional UPDATE … RETURNING that holds only if the row is still
  as read (`overdue_since`, the deadline; for a schedule also: no succeeded job newer than the one
  the decision was made on). Of several schedulers that notice the same spell at once exactly one
  gets the row back (PostgreSQL: the others wait on its row lock, then find overdue_since set;
  SQLite: they take turns at the write lock), and it inserts the hook job in the same
  transaction. So a hook runs once per spell, whoever noticed it.

A schedule's spell ends when a run succeeds after it began (the next pass sees it); a check's
when a successful ping comes (the ping itself ends it, jobctl.store.checks). A later spell runs
the hook again.

`alert_check_at` is never later than the moment a schedule can become overdue: a run that
succeeds only moves that moment on, so a pass that finds the schedule not overdue yet moves
`alert_check_at` to the moment it now would be (one write per alert period, not per pass).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from jobctl import policy
from jobctl.models import (
    SHOW_FIRE_TIMES,
    SHOW_RUNS,
    JobState,
    Schedule,
    ScheduleDefinition,
    schedule_document,
)
from jobctl.record import record
from jobctl.store import checks as check_store
from jobctl.store import schedules as schedule_store
from jobctl.store import submit as submit_store
from jobctl.store.direct import Conn
from jobctl.store.reads import database_now

# --- SQL both backends share ---------------------------------------------------------------------

# A schedule's latest succeeded run's end, as a column of a query of `schedules`
# (ix_jobs_schedule_succeeded: one index probe).
LAST_SUCCESS = (f"(SELECT max(j.finished_at) FROM jobs j WHERE j.schedule_id = schedules.id "
                f"AND j.state = '{JobState.SUCCEEDED.value}')")

# The columns the overdue pass reads of a schedule: SCHEDULE_COLUMNS, then these.
PASS_COLUMNS = ("alert_check_at", "last_success_at")

# --- a schedule's alert ---------------------------------------------------------------------------


def set_alert(conn: Conn, schedule_id: int, definition: ScheduleDefinition,
              kept: Schedule | None, moment: datetime) -> None:
    """Store a schedule's dead-man's switch as `definition` says. Its clock starts at `moment`
    (and an overdue spell is over) when it is new, when --alert-after changed, or when `kept`
    is None (a schedule created or redefined); else the spell and the clock go on (a new hook
    command or another timing leaves them as they were)."""
    alert_after_s = definition.alert_after_s
    if alert_after_s is None:
        set_at = spell = check_at = None
    elif kept is not None and kept.alert_after_s == alert_after_s:
        # Looked at again at once: cheap, and whatever changed is judged anew.
        set_at, spell, check_at = kept.alert_set_at, kept.overdue_since, moment
    else:
        set_at, spell, check_at = moment, None, moment
    conn.execute(conn.backend.sql_overdue.SET_ALERT, {
        "id": schedule_id, "alert_after_s": alert_after_s, "on_overdue": definition.on_overdue,
        "alert_set_at": conn.time_param(set_at), "overdue_since": conn.time_param(spell),
        "alert_check_at": conn.time_param(check_at)})


def state(schedule: Schedule, now: datetime,
          last_success: datetime | None) -> policy.OverdueState | None:
    """The schedule's overdue state at `now` (None: it has no alert)."""
    if schedule.alert_after_s is None:
        return None
    return policy.overdue_state(now, schedule.alert_after_s,
                                schedule.alert_set_at or schedule.created_at, last_success,
                                schedule.overdue_since)


def _shown(schedule: Schedule, now: datetime, last_success: datetime | None) -> Schedule:
    """The schedule as of `now`: its overdue spell whether or not a scheduler noticed it yet
    (`schedule list/show` tell the truth when no scheduler runs), and its latest success."""
    found = state(schedule, now, last_success)
    return dataclasses.replace(
        schedule, last_success_at=last_success,
        overdue_since=found.since if found is not None else None,
        overdue_at=found.due_at if found is not None else None)


def with_state(conn: Conn, found: Sequence[Schedule]) -> list[Schedule]:
    """The schedules with their overdue state as of now and their latest succeeded runs."""
    if not found:
        return []
    now = database_now(conn)
    rows = conn.execute(conn.backend.sql_overdue.LAST_SUCCESSES,
                        {"ids": conn.ids_param(sorted({s.id for s in found}))}).fetchall()
    last = {int(schedule_id): conn.time(finished) for schedule_id, finished in rows}
    return [_shown(schedule, now, last.get(schedule.id)) for schedule in found]


# --- the overdue pass -----------------------------------------------------------------------------


@record
class Watched:
    """A schedule as the overdue pass read it: stored, with its latest success."""

    schedule: Schedule
    now: datetime
    check_at: datetime | None
    last_success: datetime | None


@record
class Due:
    """What one pass read: the schedules and checks to judge."""

    schedules: list[Watched] = field(default_factory=list)
    checks: list[check_store.CheckRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.schedules or self.checks)


@dataclass
class Noticed:
    """What one pass did."""

    began: list[str] = field(default_factory=list)  # "schedule NAME", "check NAME"
    ended: list[str] = field(default_factory=list)
    hooks: list[int] = field(default_factory=list)  # the hook jobs inserted


def due(conn: Conn, limit: int = 500) -> Due:
    """The schedules and checks an overdue pass judges (cheap, indexed, when there are none):
    up to `limit` that may have become overdue, and every schedule in an overdue spell."""
    sql = conn.backend.sql_overdue
    now = conn.time_param(database_now(conn))
    rows = [*conn.execute(sql.DUE_SCHEDULES, {"now": now, "limit": limit}).fetchall(),
            *conn.execute(sql.OVERDUE_SCHEDULES).fetchall()]
    watched = [_watched(conn, row) for row in rows]
    found = [check_store.row(conn, row) for row in conn.execute(
        conn.backend.sql_checks.DUE, {"now": now, "limit": limit}).fetchall()]
    return Due(watched, found)


def _watched(conn: Conn, row: Sequence[Any]) -> Watched:
    """A Watched from a row of (now, SCHEDULE_COLUMNS…, PASS_COLUMNS…)."""
    width = len(schedule_store.SCHEDULE_COLUMNS)
    check_at, last_success = row[1 + width:]
    return Watched(schedule_store.from_row(conn, row[1:1 + width]),
                   conn.time_not_null(row[0]), conn.time(check_at), conn.time(last_success))


def apply(conn: Conn, found: Due) -> Noticed:
    """Decide (policy.overdue_state) and write what `due` read, each change conditional on the
    row being as read; hook jobs for the spells this transaction began."""
    noticed = Noticed()
    for watched in found.schedules:
        _apply_schedule(conn, watched, noticed)
    for check in found.checks:
        judged = check.state
        if judged.since is not None:
            began, hook = check_store.begin_spell(conn, check, judged.since,
                                                  check.stored_overdue_at)
            if began:
                noticed.began.append(f"check {check.check.name}")
            if hook is not None:
                noticed.hooks.append(hook)
        elif judged.due_at is not None and judged.due_at != check.stored_overdue_at:
            check_store.move(conn, check, None, judged.due_at)  # a hair early: look again then
    return noticed


def to_write(found: Due) -> bool:
    """Whether `apply` would change anything of what `due` read (a schedule in a spell that
    goes on needs no write: a pass then takes no write lock)."""
    for watched in found.schedules:
        judged = state(watched.schedule, watched.now, watched.last_success)
        if judged is not None and _changes(watched, judged):
            return True
    return any(check.state.since is not None or check.state.due_at != check.stored_overdue_at
               for check in found.checks)


def _changes(watched: Watched, judged: policy.OverdueState) -> bool:
    if judged.since != watched.schedule.overdue_since:
        return True
    return judged.since is None and judged.due_at != watched.check_at


def evaluate(conn: Conn, limit: int = 500) -> Noticed:
    """One overdue pass in one transaction (`due`, then `apply`)."""
    return apply(conn, due(conn, limit))


def _apply_schedule(conn: Conn, watched: Watched, noticed: Noticed) -> None:
    schedule = watched.schedule
    judged = state(schedule, watched.now, watched.last_success)
    if judged is None:  # its alert was removed after the read: nothing to judge
        return
    stored = schedule.overdue_since
    if not _changes(watched, judged):
        return
    moved = conn.execute(conn.backend.sql_overdue.MOVE_SCHEDULE, {
        "id": schedule.id, "since": conn.time_param(judged.since),
        "check_at": conn.time_param(judged.due_at),
        "expected_since": conn.time_param(stored),
        "expected_check_at": conn.time_param(watched.check_at),
        "seen": conn.time_param(watched.last_success),
    }).fetchone()
    if moved is None:
        return  # another scheduler, an edit or a success came first: the next pass judges anew
    if stored is not None:
        noticed.ended.append(f"schedule {schedule.name}")
    if judged.since is None:
        return
    noticed.began.append(f"schedule {schedule.name}")
    if schedule.on_overdue:
        noticed.hooks.append(_schedule_hook(conn, dataclasses.replace(
            schedule, overdue_since=judged.since, overdue_at=None,
            last_success_at=watched.last_success)))


def _schedule_hook(conn: Conn, schedule: Schedule) -> int:
    """Insert the hook job of a schedule whose spell just began (in this transaction)."""
    assert schedule.on_overdue is not None
    latest = conn.execute(conn.backend.sql_overdue.LATEST_RUN, {"id": schedule.id}).fetchone()
    document = schedule_document(
        schedule, schedule_store.next_fire_times(schedule, SHOW_FIRE_TIMES),
        schedule_store.recent_runs(conn, schedule.id, SHOW_RUNS))
    spec = policy.overdue_hook(
        schedule.name, schedule.on_overdue,
        schedule.job.queue if schedule.job is not None else "default", document,
        job_id=None if latest is None else int(latest[0]),
        exit_code=None if latest is None or latest[1] is None else int(latest[1]))
    [job_id] = submit_store.insert_many(conn, [spec], states=[JobState.QUEUED])
    return job_id


# --- the scheduler's clock and metrics ------------------------------------------------------------


def seconds_until_next(conn: Conn) -> float | None:
    """Seconds until a schedule or check not overdue may become overdue (0: now); None when
    none can (schedules in a spell are looked at on every pass anyway)."""
    seconds = conn.scalar(conn.backend.sql_overdue.SECONDS_UNTIL_DUE)
    return None if seconds is None else max(0.0, float(seconds))


@record
class Overdue:
    """Which switches are overdue, as stored (what `jobctl_schedule_overdue` and
    `jobctl_check_overdue` report)."""

    schedules: Mapping[str, bool]
    checks: Mapping[str, bool]


def overdue_now(conn: Conn) -> Overdue:
    """Every schedule with an alert and every check: overdue or not (the stored spell: right
    after a pass, what the pass decided)."""
    found: dict[str, dict[str, bool]] = {"schedule": {}, "check": {}}
    for kind, name, overdue in conn.execute(conn.backend.sql_overdue.OVERDUE_FLAGS).fetchall():
        found[kind][name] = bool(overdue)
    return Overdue(found["schedule"], found["check"])


class OverdueSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.overdue), in its driver's
    own parameter style. The pass's statements return (now, SCHEDULE_COLUMNS…, PASS_COLUMNS…)."""

    # id, alert_after_s, on_overdue, alert_set_at, overdue_since, alert_check_at
    SET_ALERT: str
    LAST_SUCCESSES: str  # ids (ids_param) → (schedule_id, latest succeeded job's finished_at)
    DUE_SCHEDULES: str  # now, limit → schedules not overdue whose alert_check_at passed
    OVERDUE_SCHEDULES: str  # → schedules in an overdue spell
    # id, since, check_at, expected_since, expected_check_at, seen (the latest success the
    # decision saw) → RETURNING id, or no row when the schedule is no longer as read
    MOVE_SCHEDULE: str
    LATEST_RUN: str  # id → (job id, exit_code) of the schedule's latest occurrence
    SECONDS_UNTIL_DUE: str  # → seconds until a switch not overdue may become so, or NULL
    OVERDUE_FLAGS: str  # → (kind 'schedule' | 'check', name, overdue) of every switch
