"""Schedules: CRUD, and firing due occurrences so that each one becomes exactly one job.

Any number of schedulers may fire at once. Each locks the due schedule rows it takes
(`FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite the caller's `BEGIN IMMEDIATE`,
`DirectDatabase.write()`, lets one writer in at a time), inserts the occurrences with
`ON CONFLICT (schedule_id, fire_time) DO NOTHING` on the partial unique index
`uq_jobs_schedule_fire_time`, and advances `next_fire_at` only if nobody else did (the update is
conditional on the value it read). A scheduler killed mid-transaction leaves nothing behind: its
rows unlock, and the next scheduler fires the same fire times.

What the misfire and overlap policies make of the fire times is decided in jobctl.policy; this
module gathers the facts for it (due times, the database's now, runs that have not ended) and
writes the outcome.

Written against `store.direct.Conn` (the driver, no SQLAlchemy): the scheduler never imports
SQLAlchemy on a database that has its schema. Every function takes an open connection; the
caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from jobctl import policy
from jobctl.cron import Timing
from jobctl.errors import PermissionDenied
from jobctl.models import (
    JobSpec,
    JobState,
    Misfire,
    Overlap,
    Schedule,
    ScheduleDefinition,
    ScheduleRun,
    job_template,
    spec_from_template,
)
from jobctl.record import record
from jobctl.store import jobs as job_store
from jobctl.store import notify
from jobctl.store import submit as submit_store
from jobctl.store.direct import Conn
from jobctl.store.reads import database_now

# --- reading ----------------------------------------------------------------------------------

# The columns every statement that returns schedules selects, in this order (_schedule reads them).
SCHEDULE_COLUMNS = ("id", "name", "cron", "every_s", "timezone", "job", "workflow", "overlap",
                    "misfire", "jitter_s", "paused", "start_at", "end_at", "next_fire_at",
                    "last_fire_at", "created_at", "updated_at",
                    # the dead-man's switch, as stored (jobctl.store.overdue)
                    "alert_after_s", "on_overdue", "alert_set_at", "overdue_since",
                    # who made it (jobctl.store.identity)
                    "submitted_by")


def _schedule(conn: Conn, row: Sequence[Any]) -> Schedule:
    """A Schedule from a row of SCHEDULE_COLUMNS."""
    values = dict(zip(SCHEDULE_COLUMNS, row, strict=True))
    template = conn.json(values["job"])
    return Schedule(
        id=int(values["id"]),
        name=values["name"],
        cron=values["cron"],
        every_s=values["every_s"],
        timezone=values["timezone"],
        job=spec_from_template(template) if template is not None else None,
        workflow=conn.json(values["workflow"]),
        overlap=Overlap(values["overlap"]),
        misfire=Misfire(values["misfire"]),
        jitter_s=values["jitter_s"],
        paused=bool(values["paused"]),
        start_at=conn.time(values["start_at"]),
        end_at=conn.time(values["end_at"]),
        next_fire_at=conn.time(values["next_fire_at"]),
        last_fire_at=conn.time(values["last_fire_at"]),
        created_at=conn.time_not_null(values["created_at"]),
        updated_at=conn.time_not_null(values["updated_at"]),
        alert_after_s=values["alert_after_s"],
        on_overdue=values["on_overdue"],
        alert_set_at=conn.time(values["alert_set_at"]),
        overdue_since=conn.time(values["overdue_since"]),
        submitted_by=values["submitted_by"],
    )


def from_row(conn: Conn, row: Sequence[Any]) -> Schedule:
    """A Schedule from a row of SCHEDULE_COLUMNS (another entity's statement that selects
    them: jobctl.store.overdue)."""
    return _schedule(conn, row)


def timing(schedule: Schedule) -> Timing:
    """The schedule's fire times (policy.schedule_timing)."""
    return policy.schedule_timing(schedule.cron, schedule.every_s, schedule.timezone,
                                  schedule.start_at, schedule.end_at, schedule.created_at)


def next_fire_times(schedule: Schedule, count: int) -> list[datetime]:
    """The schedule's next `count` fire times (UTC), from its next due one on."""
    if schedule.next_fire_at is None or count <= 0:
        return []
    return [schedule.next_fire_at, *timing(schedule).upcoming(schedule.next_fire_at, count - 1)]


def get(conn: Conn, name: str, *, lock: bool = False) -> Schedule | None:
    """The schedule of that name; with `lock`, its row locked until the transaction ends (on
    SQLite the write transaction holds the whole database already)."""
    sql = conn.backend.sql_schedules
    row = conn.execute(sql.GET_FOR_UPDATE if lock else sql.GET, {"name": name}).fetchone()
    if row is None and lock:
        deny_unless_missing(conn, name)
    return _schedule(conn, row) if row is not None else None


def list_all(conn: Conn) -> list[Schedule]:
    rows = conn.execute(conn.backend.sql_schedules.LIST_ALL).fetchall()
    return [_schedule(conn, row) for row in rows]


def recent_runs(conn: Conn, schedule_id: int, limit: int = 5) -> list[ScheduleRun]:
    """The schedule's latest occurrences, newest first."""
    rows = conn.execute(conn.backend.sql_schedules.RECENT_RUNS,
                        {"id": schedule_id, "limit": limit}).fetchall()
    return [ScheduleRun(job_id=job_id, fire_time=conn.time_not_null(fire_time),
                        state=JobState(state), created_at=conn.time_not_null(created_at),
                        error=error)
            for job_id, fire_time, state, created_at, error in rows]


def now(conn: Conn) -> datetime:
    """The database's clock (fire times are compared with it, never with a machine's)."""
    return database_now(conn)


# --- changing ---------------------------------------------------------------------------------


def _definition(conn: Conn, definition: ScheduleDefinition, created_at: datetime,
                moment: datetime) -> dict[str, Any]:
    """The parameters of CREATE and REPLACE: the definition's columns, its first fire time after
    `moment`, and `moment` as now."""
    first_fire = policy.schedule_timing(
        definition.cron, definition.every_s, definition.timezone, definition.start_at,
        definition.end_at, created_at).next_after(moment)
    return {
        "name": definition.name,
        "cron": definition.cron,
        "every_s": definition.every_s,
        "timezone": definition.timezone,
        "job": json.dumps(job_template(definition.job)),
        # SQL NULL, not JSON null, for a schedule of a single command
        "workflow": json.dumps(definition.workflow) if definition.workflow is not None else None,
        "overlap": definition.overlap.value,
        "misfire": definition.misfire.value,
        "jitter_s": definition.jitter_s,
        "paused": definition.paused,
        "start_at": conn.time_param(definition.start_at),
        "end_at": conn.time_param(definition.end_at),
        "next_fire_at": conn.time_param(first_fire),
        "now": conn.time_param(moment),
    }


def create(conn: Conn, definition: ScheduleDefinition) -> int:
    """Insert a schedule whose first occurrence is the first fire time after now."""
    moment = now(conn)
    schedule_id = conn.scalar(conn.backend.sql_schedules.CREATE, {
        **_definition(conn, definition, moment, moment),
        "submitted_by": conn.backend.sql_submit.submitter()})
    from jobctl.store import overdue

    overdue.set_alert(conn, int(schedule_id), definition, None, moment)
    notify.schedules_changed(conn, definition.name)
    return int(schedule_id)


def replace(conn: Conn, existing: Schedule, definition: ScheduleDefinition,
            *, keep_created: bool = True) -> None:
    """Rewrite a schedule's definition; its next occurrence is recomputed from now."""
    moment = now(conn)
    created_at = existing.created_at if keep_created else moment
    conn.execute(conn.backend.sql_schedules.REPLACE, {
        **_definition(conn, definition, created_at, moment),
        "created_at": None if keep_created else conn.time_param(moment),
        "id": existing.id,
    })
    from jobctl.store import overdue

    overdue.set_alert(conn, existing.id, definition, existing if keep_created else None, moment)
    notify.schedules_changed(conn, definition.name)


def deny_unless_missing(conn: Conn, name: str) -> None:
    """After a statement that locks or changes a schedule found no row: PermissionDenied when
    the schedule is there all the same (PostgreSQL's row-level security hides another's from a
    submitter's UPDATE, DELETE and FOR UPDATE, not from its reads: jobctl.store.postgres.roles).
    """
    if conn.execute(conn.backend.sql_schedules.GET, {"name": name}).fetchone() is not None:
        raise PermissionDenied(f"schedule {name!r} is not yours to change (only its submitter "
                               "and operators may)")


def set_paused(conn: Conn, name: str, paused: bool) -> bool | None:
    """Pause or resume; returns whether it was paused before (None: no such schedule).

    Resuming keeps `next_fire_at`: the fire times passed while paused are missed, and the
    schedule's misfire policy decides what becomes of them."""
    sql = conn.backend.sql_schedules
    before = conn.scalar(sql.PAUSED, {"name": name})
    if before is None:
        deny_unless_missing(conn, name)
        return None
    conn.execute(sql.SET_PAUSED, {"name": name, "paused": paused, "before": bool(before)})
    notify.schedules_changed(conn, name)
    return bool(before)


def delete(conn: Conn, name: str) -> bool:
    """Remove a schedule. Its jobs stay (they keep their schedule_id and fire_time)."""
    deleted = conn.execute(conn.backend.sql_schedules.DELETE, {"name": name}).rowcount
    if not deleted:
        deny_unless_missing(conn, name)
    notify.schedules_changed(conn, name)
    return bool(deleted)


# --- firing -----------------------------------------------------------------------------------


@record
class Occurrence:
    """One fire time of one schedule, about to become a job (or a skipped/cancelled record)."""

    schedule: Schedule
    fire_time: datetime


@dataclass
class Fired:
    """What one firing pass did."""

    schedules: int = 0  # due schedules handled
    jobs: int = 0  # occurrences that became queued jobs
    skipped: int = 0  # occurrences recorded as skipped (overlap `forbid`)
    missed: int = 0  # fire times dropped by the misfire policy
    lateness_s: list[float] = field(default_factory=list)  # db now - fire time, per queued job


@record
class Advance:
    """Where one due schedule moves on to (SchedulesSQL.advance)."""

    schedule_id: int
    expected: datetime  # next_fire_at as we read it
    next_fire_at: datetime | None
    last_fire_at: datetime | None


def fire_due(conn: Conn, *, limit: int = 200, misfire_grace_s: float = 1.0,
             misfire_cap: int = 100) -> Fired:
    """Fire the occurrences of up to `limit` due schedules, in one transaction.

    A fire time more than `misfire_grace_s` in the past when we get to it is missed: the
    schedule's misfire policy says whether it fires (`all`: up to `misfire_cap` of them, the
    latest), once for the latest (`once`), or not at all (`skip`); see policy.plan_firing.
    """
    sql = conn.backend.sql_schedules
    rows = conn.execute(sql.DUE, {"limit": limit}).fetchall()
    report = Fired(schedules=len(rows))
    if not rows:
        return report
    moment = conn.time_not_null(rows[0][0])
    occurrences: list[Occurrence] = []
    advances: list[Advance] = []
    for row in rows:
        schedule = _schedule(conn, row[1:])
        assert schedule.next_fire_at is not None  # the query asked for it
        plan = policy.plan_firing(timing(schedule), schedule.misfire, schedule.next_fire_at,
                                  schedule.last_fire_at, moment, misfire_grace_s, misfire_cap)
        report.missed += plan.missed
        occurrences.extend(Occurrence(schedule, fire_time) for fire_time in plan.fire_times)
        advances.append(Advance(schedule.id, schedule.next_fire_at, plan.next_fire_at,
                                plan.last_fire_at))
    if occurrences:
        submitted = submit_occurrences(conn, occurrences, moment)
        report.jobs += submitted.jobs
        report.skipped += submitted.skipped
        report.lateness_s.extend(submitted.lateness_s)
    sql.advance(conn, advances)
    return report


@dataclass
class Submitted:
    jobs: int = 0
    skipped: int = 0
    lateness_s: list[float] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)  # only when asked for (trigger)
    workflow_ids: list[int] = field(default_factory=list)  # workflows started


@record
class OccurrenceRow:
    """One occurrence's job as the backend inserts it: the occurrence, and what its overlap
    decision records it as (the rest comes from its schedule's job template)."""

    occurrence: Occurrence
    outcome: policy.OccurrenceOutcome


def submit_occurrences(conn: Conn, occurrences: Sequence[Occurrence],
                       moment: datetime | None = None, *, return_ids: bool = False) -> Submitted:
    """Turn occurrences into jobs, applying each schedule's overlap policy
    (policy.overlap_batch). This is the one place that says what an occurrence submits (a
    workflow variant belongs here, beside jobs)."""
    moment = moment or now(conn)
    result = Submitted()
    _start_workflows(conn, [o for o in occurrences if o.schedule.workflow is not None],
                     moment, result)
    occurrences = [o for o in occurrences if o.schedule.workflow is None]
    active = _active_runs(conn, [o.schedule for o in occurrences
                                 if o.schedule.overlap is not Overlap.ALLOW])
    decisions = policy.overlap_batch(
        [(o.schedule.id, o.schedule.overlap, o.fire_time) for o in occurrences], active)
    rows: list[OccurrenceRow] = []
    for occurrence, decision in zip(occurrences, decisions, strict=True):  # ids in this order
        rows.append(OccurrenceRow(occurrence, policy.occurrence_outcome(
            decision, moment, occurrence.schedule.jitter_s)))
        if decision.action is policy.OverlapAction.SKIP:
            result.skipped += 1
        elif decision.action is policy.OverlapAction.RUN:
            for job_id in decision.cancel:
                job_store.cancel(conn, job_id)
            result.jobs += 1
            result.lateness_s.append((moment - occurrence.fire_time).total_seconds())
    if rows:
        ids = submit_store.insert_occurrences(conn, [submit_store.job_row(
            _spec(row), moment, row.outcome.state, row.outcome.error,
            submitted_by=row.occurrence.schedule.submitted_by,
            schedule_id=row.occurrence.schedule.id, fire_time=row.occurrence.fire_time,
            cancel_requested=row.outcome.cancel_requested) for row in rows])
        if return_ids:
            result.job_ids = [job_id for job_id in ids if job_id is not None]
    for queue in sorted({_queue(row.occurrence.schedule) for row in rows
                         if row.outcome.state is JobState.QUEUED}):
        notify.job_submitted(conn, queue)
    return result


def _spec(row: OccurrenceRow) -> JobSpec:
    """The job an occurrence submits: its schedule's template, named after the schedule unless
    the template names it, due at the occurrence's run_at."""
    schedule = row.occurrence.schedule
    assert schedule.job is not None
    return dataclasses.replace(schedule.job, name=schedule.job.name or schedule.name,
                               run_at=row.outcome.run_at, run_in_s=None, unique_key=None)


def _queue(schedule: Schedule) -> str:
    return schedule.job.queue if schedule.job is not None else "default"


def _start_workflows(conn: Conn, occurrences: Sequence[Occurrence], moment: datetime,
                     result: Submitted) -> None:
    """A schedule of a workflow starts one workflow per occurrence, unique per (schedule, fire
    time) like a job. Overlap: `forbid` skips while a workflow it started has unfinished tasks,
    `replace` cancels those tasks first. One occurrence at a time: each sees the workflows the
    ones before it started."""
    if not occurrences:
        return
    from jobctl.store import workflows as workflow_store

    for occurrence in occurrences:
        schedule = occurrence.schedule
        assert schedule.workflow is not None
        running = ([] if schedule.overlap is Overlap.ALLOW
                   else _active_workflows(conn, schedule.id))
        [decision] = policy.overlap_decisions(schedule.overlap, [occurrence.fire_time], running)
        if decision.action is not policy.OverlapAction.RUN:
            result.skipped += 1
            continue
        for workflow_id in decision.cancel:
            workflow_store.cancel(conn, workflow_id)
        started = workflow_store.start(
            conn, schedule.workflow["definition"], schedule.workflow.get("params", {}),
            schedule_id=schedule.id, fire_time=occurrence.fire_time)
        if started is not None:
            result.workflow_ids.append(started)
            result.jobs += 1
            result.lateness_s.append((moment - occurrence.fire_time).total_seconds())


def _active_workflows(conn: Conn, schedule_id: int) -> list[policy.ActiveRun]:
    """The workflows this schedule started that still have unfinished tasks."""
    rows = conn.execute(conn.backend.sql_schedules.ACTIVE_WORKFLOWS,
                        {"schedule_id": schedule_id}).fetchall()
    return [policy.ActiveRun(int(workflow_id), f"workflow {workflow_id}")
            for (workflow_id,) in rows]


def _active_runs(conn: Conn, of: Sequence[Schedule]) -> dict[int, list[policy.ActiveRun]]:
    """The queued, waiting or running jobs of these schedules, oldest first, by schedule id."""
    ids = sorted({schedule.id for schedule in of})
    if not ids:
        return {}
    rows = conn.execute(conn.backend.sql_schedules.ACTIVE_RUNS,
                        {"ids": conn.ids_param(ids)}).fetchall()
    found: dict[int, list[policy.ActiveRun]] = {}
    for schedule_id, job_id, state in rows:
        found.setdefault(int(schedule_id), []).append(
            policy.ActiveRun(int(job_id), f"job {job_id} ({state})"))
    return found


# --- the scheduler's clock --------------------------------------------------------------------


def seconds_until_next_due(conn: Conn) -> float | None:
    """Seconds until the next active schedule is due (0 if one is due now), None if none is."""
    seconds = conn.scalar(conn.backend.sql_schedules.SECONDS_UNTIL_DUE)
    return None if seconds is None else max(0.0, float(seconds))


class SchedulesSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.schedules): its statements,
    named and commented, in its driver's own parameter style, and the steps whose algorithm
    differs by necessity. Statements returning schedules select SCHEDULE_COLUMNS."""

    GET: str  # name → a schedule
    GET_FOR_UPDATE: str  # the same, its row locked where the backend locks rows
    LIST_ALL: str  # every schedule, by name
    RECENT_RUNS: str  # id, limit → (job id, fire_time, state, created_at, error), newest first
    CREATE: str  # _definition's parameters → the new id
    REPLACE: str  # _definition's parameters, created_at (None: kept), id
    PAUSED: str  # name → paused, locked where the backend locks rows
    SET_PAUSED: str  # name, paused, before (conditional on it)
    DELETE: str  # name
    DUE: str  # limit → (now, SCHEDULE_COLUMNS…), due schedules locked where the backend locks
    ACTIVE_RUNS: str  # ids (ids_param) → (schedule_id, job id, state), oldest first
    ACTIVE_WORKFLOWS: str  # schedule_id → workflow ids with unfinished tasks
    SECONDS_UNTIL_DUE: str  # → seconds until the next active schedule is due, or NULL

    def advance(self, conn: Conn, advances: Sequence[Advance]) -> None:
        """Move each due schedule on, conditional on the next_fire_at read."""
        ...

