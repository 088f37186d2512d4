"""Schedules: CRUD, and firing due occurrences so that each one becomes exactly one job.

Any number of schedulers may fire at once. Each locks the due schedule rows it takes
(`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's `BEGIN IMMEDIATE` lets one writer in at a time),
inserts the occurrences with `ON CONFLICT (schedule_id, fire_time) DO NOTHING` on the partial
unique index `uq_jobs_schedule_fire_time`, and advances `next_fire_at` only if nobody else did
(the update is conditional on the value it read). A scheduler killed mid-transaction leaves
nothing behind: its rows unlock, and the next scheduler fires the same fire times.

Every function takes an open connection; the caller owns the transaction.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from jobctl.cron import Timing, interval_anchor
from jobctl.models import (
    JobState,
    Misfire,
    Overlap,
    Schedule,
    ScheduleDefinition,
    ScheduleRun,
    job_template,
    spec_from_template,
)
from jobctl.store import jobs as job_store
from jobctl.store import notify
from jobctl.store.schema import db_now, jobs, schedules, workflows
from jobctl.timeparse import isoformat_utc

ACTIVE = [JobState.WAITING.value, JobState.QUEUED.value, JobState.RUNNING.value]


# --- reading ----------------------------------------------------------------------------------


def _schedule_from_row(row: Any) -> Schedule:
    return Schedule(
        id=row.id,
        name=row.name,
        cron=row.cron,
        every_s=row.every_s,
        timezone=row.timezone,
        job=spec_from_template(row.job) if row.job is not None else None,
        workflow=row.workflow,
        overlap=Overlap(row.overlap),
        misfire=Misfire(row.misfire),
        jitter_s=row.jitter_s,
        paused=bool(row.paused),
        start_at=row.start_at,
        end_at=row.end_at,
        next_fire_at=row.next_fire_at,
        last_fire_at=row.last_fire_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def timing(schedule: Schedule) -> Timing:
    return Timing(
        cron=schedule.cron,
        every_s=schedule.every_s,
        timezone=schedule.timezone,
        anchor=schedule.start_at or interval_anchor(schedule.created_at),
        start_at=schedule.start_at,
        end_at=schedule.end_at,
    )


def get(connection: sa.Connection, name: str, *, lock: bool = False) -> Schedule | None:
    query = sa.select(schedules).where(schedules.c.name == name)
    if lock:
        query = query.with_for_update()
    row = connection.execute(query).first()
    return _schedule_from_row(row) if row is not None else None


def list_all(connection: sa.Connection) -> list[Schedule]:
    rows = connection.execute(sa.select(schedules).order_by(schedules.c.name))
    return [_schedule_from_row(row) for row in rows]


def recent_runs(connection: sa.Connection, schedule_id: int, limit: int = 5) -> list[ScheduleRun]:
    """The schedule's latest occurrences, newest first."""
    rows = connection.execute(
        sa.select(jobs.c.id, jobs.c.fire_time, jobs.c.state, jobs.c.created_at, jobs.c.error)
        .where(jobs.c.schedule_id == schedule_id)
        .order_by(jobs.c.fire_time.desc())
        .limit(limit)
    )
    return [ScheduleRun(job_id=row.id, fire_time=row.fire_time, state=JobState(row.state),
                        created_at=row.created_at, error=row.error) for row in rows]


def now(connection: sa.Connection) -> datetime:
    moment: datetime = connection.execute(sa.select(db_now())).scalar_one()
    return moment


# --- changing ---------------------------------------------------------------------------------


def _values(definition: ScheduleDefinition) -> dict[str, Any]:
    return {
        "name": definition.name,
        "cron": definition.cron,
        "every_s": definition.every_s,
        "timezone": definition.timezone,
        "job": job_template(definition.job),
        # SQL NULL, not JSON null, for a schedule of a single command
        "workflow": definition.workflow if definition.workflow is not None else sa.null(),
        "overlap": definition.overlap.value,
        "misfire": definition.misfire.value,
        "jitter_s": definition.jitter_s,
        "paused": definition.paused,
        "start_at": definition.start_at,
        "end_at": definition.end_at,
    }


def _first_fire(definition: ScheduleDefinition, created_at: datetime,
                moment: datetime) -> datetime | None:
    return Timing(
        cron=definition.cron, every_s=definition.every_s, timezone=definition.timezone,
        anchor=definition.start_at or interval_anchor(created_at),
        start_at=definition.start_at, end_at=definition.end_at,
    ).next_after(moment)


def create(connection: sa.Connection, definition: ScheduleDefinition) -> int:
    """Insert a schedule whose first occurrence is the first fire time after now."""
    moment = now(connection)
    values = _values(definition)
    values.update(created_at=moment, updated_at=moment,
                  next_fire_at=_first_fire(definition, moment, moment))
    schedule_id = connection.execute(
        sa.insert(schedules).values(**values).returning(schedules.c.id)
    ).scalar_one()
    notify.schedules_changed(connection, definition.name)
    return int(schedule_id)


def replace(connection: sa.Connection, existing: Schedule, definition: ScheduleDefinition,
            *, keep_created: bool = True) -> None:
    """Rewrite a schedule's definition; its next occurrence is recomputed from now."""
    moment = now(connection)
    created_at = existing.created_at if keep_created else moment
    values = _values(definition)
    values.update(updated_at=moment, next_fire_at=_first_fire(definition, created_at, moment))
    if not keep_created:
        values["created_at"] = moment
    connection.execute(sa.update(schedules).where(schedules.c.id == existing.id).values(**values))
    notify.schedules_changed(connection, definition.name)


def set_paused(connection: sa.Connection, name: str, paused: bool) -> bool | None:
    """Pause or resume; returns whether it was paused before (None: no such schedule).

    Resuming keeps `next_fire_at`: the fire times passed while paused are missed, and the
    schedule's misfire policy decides what becomes of them."""
    before = connection.execute(
        sa.select(schedules.c.paused).where(schedules.c.name == name).with_for_update()
    ).scalar()
    if before is None:
        return None
    connection.execute(
        sa.update(schedules)
        .where(schedules.c.name == name, schedules.c.paused == sa.literal(bool(before)))
        .values(paused=paused, updated_at=db_now())
    )
    notify.schedules_changed(connection, name)
    return bool(before)


def delete(connection: sa.Connection, name: str) -> bool:
    """Remove a schedule. Its jobs stay (they keep their schedule_id and fire_time)."""
    result = connection.execute(sa.delete(schedules).where(schedules.c.name == name))
    notify.schedules_changed(connection, name)
    return bool(result.rowcount)


# --- firing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
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


def fire_due(connection: sa.Connection, *, limit: int = 200, misfire_grace_s: float = 1.0,
             misfire_cap: int = 100) -> Fired:
    """Fire the occurrences of up to `limit` due schedules, in one transaction.

    A fire time more than `misfire_grace_s` in the past when we get to it is missed: the
    schedule's misfire policy says whether it fires (`all`: up to `misfire_cap` of them, the
    latest), once for the latest (`once`), or not at all (`skip`)."""
    query = (
        sa.select(schedules, db_now().label("db_now"))
        .where(sa.not_(schedules.c.paused), schedules.c.next_fire_at <= db_now())
        .order_by(schedules.c.next_fire_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = connection.execute(query).all()
    report = Fired(schedules=len(rows))
    occurrences: list[Occurrence] = []
    advances: list[dict[str, Any]] = []
    for row in rows:
        schedule = _schedule_from_row(row)
        moment: datetime = row.db_now
        assert schedule.next_fire_at is not None  # the query asked for it
        when = timing(schedule)
        due = when.due(schedule.next_fire_at, moment, misfire_cap)
        chosen = _apply_misfire(schedule.misfire, due, moment, misfire_grace_s)
        report.missed += len(due) - len(chosen)
        occurrences.extend(Occurrence(schedule, fire_time) for fire_time in chosen)
        advances.append({
            "id": schedule.id,
            "expected": schedule.next_fire_at,
            "next_fire_at": when.next_after(moment),
            "last_fire_at": chosen[-1] if chosen else schedule.last_fire_at,
        })
    if occurrences:
        submitted = submit_occurrences(connection, occurrences, rows[0].db_now if rows else None)
        report.jobs += submitted.jobs
        report.skipped += submitted.skipped
        report.lateness_s.extend(submitted.lateness_s)
    if advances:
        _advance(connection, advances)
    return report


def _apply_misfire(policy: Misfire, due: list[datetime], moment: datetime,
                   grace_s: float) -> list[datetime]:
    grace = timedelta(seconds=grace_s)
    on_time = [fire_time for fire_time in due if moment - fire_time <= grace]
    missed = [fire_time for fire_time in due if moment - fire_time > grace]
    if policy is Misfire.ALL:
        return due
    if policy is Misfire.ONCE and missed and not on_time:
        return missed[-1:]
    return on_time


# Conditional on the value read: a schedule someone edited meanwhile keeps its new next time.
ADVANCE = (
    sa.update(schedules)
    .where(schedules.c.id == sa.bindparam("schedule_id"),
           schedules.c.next_fire_at == sa.bindparam("expected",
                                                   type_=schedules.c.next_fire_at.type))
    .values(next_fire_at=sa.bindparam("next_fire_at", type_=schedules.c.next_fire_at.type),
            last_fire_at=sa.bindparam("last_fire_at", type_=schedules.c.last_fire_at.type))
)


# PostgreSQL: every schedule of the batch in one statement, one array parameter per column.
PG_ADVANCE = sa.text("""
UPDATE schedules s SET next_fire_at = u.next_fire_at, last_fire_at = u.last_fire_at
FROM unnest(CAST(:ids AS bigint[]), CAST(:expected AS timestamptz[]),
            CAST(:next_fire_ats AS timestamptz[]), CAST(:last_fire_ats AS timestamptz[]))
     AS u(id, expected, next_fire_at, last_fire_at)
WHERE s.id = u.id AND s.next_fire_at = u.expected
""")


def _advance(connection: sa.Connection, advances: Sequence[dict[str, Any]]) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(PG_ADVANCE, {
            "ids": [a["id"] for a in advances],
            "expected": [a["expected"] for a in advances],
            "next_fire_ats": [a["next_fire_at"] for a in advances],
            "last_fire_ats": [a["last_fire_at"] for a in advances],
        })
        return
    connection.execute(ADVANCE, [{"schedule_id": a["id"], "expected": a["expected"],
                                  "next_fire_at": a["next_fire_at"],
                                  "last_fire_at": a["last_fire_at"]} for a in advances])


@dataclass
class Submitted:
    jobs: int = 0
    skipped: int = 0
    lateness_s: list[float] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)  # only when asked for (trigger)
    workflow_ids: list[int] = field(default_factory=list)  # workflows started


def submit_occurrences(connection: sa.Connection, occurrences: Sequence[Occurrence],
                       moment: datetime | None = None, *, return_ids: bool = False) -> Submitted:
    """Turn occurrences into jobs, applying each schedule's overlap policy. This is the one place
    that says what an occurrence submits (a workflow variant belongs here, beside jobs)."""
    moment = moment or now(connection)
    result = Submitted()
    _start_workflows(connection, [o for o in occurrences if o.schedule.workflow is not None],
                     moment, result)
    occurrences = [o for o in occurrences if o.schedule.workflow is None]
    active = _active_runs(connection, [o.schedule for o in occurrences
                                       if o.schedule.overlap is not Overlap.ALLOW])
    rows: list[dict[str, Any]] = []
    last_index: dict[int, int] = {}
    for occurrence in occurrences:
        last_index[occurrence.schedule.id] = len(rows)
        rows.append(_occurrence_row(occurrence, moment))
    for index, (occurrence, row) in enumerate(zip(occurrences, rows, strict=True)):
        schedule = occurrence.schedule
        running = active.get(schedule.id, [])
        if schedule.overlap is Overlap.FORBID and running:
            row.update(state=JobState.SKIPPED.value, finished_at=moment,
                       error=f"skipped: {running[0][1]} is still going")
            result.skipped += 1
            continue
        if schedule.overlap is Overlap.REPLACE and index != last_index[schedule.id]:
            # Several fire times at once: only the latest runs, the earlier ones replaced at once.
            row.update(state=JobState.CANCELLED.value, finished_at=moment, cancel_requested=True,
                       error="replaced by a later occurrence before it started")
            continue
        if schedule.overlap is Overlap.REPLACE:
            for job_id, _description in running:
                if job_id is not None:
                    job_store.cancel(connection, job_id)
        if schedule.overlap is Overlap.FORBID:
            fire_time = isoformat_utc(occurrence.fire_time)
            active[schedule.id] = [(None, f"the run of {fire_time} (queued)")]
        result.jobs += 1
        result.lateness_s.append((moment - occurrence.fire_time).total_seconds())
    ids = _insert(connection, rows, [o.schedule for o in occurrences], return_ids)
    result.job_ids = ids
    for queue in sorted({row["queue"] for row in rows if row["state"] == JobState.QUEUED.value}):
        notify.job_submitted(connection, queue)
    return result


def _start_workflows(connection: sa.Connection, occurrences: Sequence[Occurrence],
                     moment: datetime, result: Submitted) -> None:
    """A schedule of a workflow starts one workflow per occurrence, unique per (schedule, fire
    time) like a job. Overlap: `forbid` skips while a workflow it started has unfinished tasks,
    `replace` cancels those tasks first."""
    from jobctl.store import workflows as workflow_store

    for occurrence in occurrences:
        schedule = occurrence.schedule
        assert schedule.workflow is not None
        running = ([] if schedule.overlap is Overlap.ALLOW
                   else _active_workflows(connection, schedule.id))
        if schedule.overlap is Overlap.FORBID and running:
            result.skipped += 1
            continue
        for workflow_id in running:
            workflow_store.cancel(connection, workflow_id)
        started = workflow_store.start(
            connection, schedule.workflow["definition"], schedule.workflow.get("params", {}),
            schedule_id=schedule.id, fire_time=occurrence.fire_time)
        if started is not None:
            result.workflow_ids.append(started)
            result.jobs += 1
            result.lateness_s.append((moment - occurrence.fire_time).total_seconds())


def _active_workflows(connection: sa.Connection, schedule_id: int) -> list[int]:
    """The workflows this schedule started that still have unfinished tasks."""
    rows = connection.execute(
        sa.select(workflows.c.id).distinct()
        .join(jobs, jobs.c.workflow_id == workflows.c.id)
        .where(workflows.c.schedule_id == schedule_id, jobs.c.state.in_(ACTIVE))
        .order_by(workflows.c.id))
    return [int(row.id) for row in rows]


def _active_runs(connection: sa.Connection,
                 of: Sequence[Schedule]) -> dict[int, list[tuple[int | None, str]]]:
    """The queued, waiting or running jobs of these schedules:
    {schedule id: [(job id, "job N (state)")]}."""
    ids = sorted({schedule.id for schedule in of})
    if not ids:
        return {}
    rows = connection.execute(
        sa.select(jobs.c.schedule_id, jobs.c.id, jobs.c.state)
        .where(jobs.c.schedule_id.in_(ids), jobs.c.state.in_(ACTIVE))
        .order_by(jobs.c.id)
    )
    found: dict[int, list[tuple[int | None, str]]] = {}
    for row in rows:
        found.setdefault(row.schedule_id, []).append((row.id, f"job {row.id} ({row.state})"))
    return found


def _occurrence_row(occurrence: Occurrence, moment: datetime) -> dict[str, Any]:
    """The columns an occurrence sets itself; the rest come from its schedule's job template
    (in SQL on PostgreSQL, see PG_INSERT_OCCURRENCES; from `_template_columns` on SQLite)."""
    schedule = occurrence.schedule
    jitter = random.uniform(0.0, schedule.jitter_s) if schedule.jitter_s > 0 else 0.0
    return {
        "schedule_id": schedule.id,
        "fire_time": occurrence.fire_time,
        "state": JobState.QUEUED.value,
        "run_at": moment + timedelta(seconds=jitter) if jitter else moment,
        "finished_at": None,
        "error": None,
        "cancel_requested": False,
        "queue": schedule.job.queue if schedule.job is not None else "default",
    }


def _template_columns(schedule: Schedule) -> dict[str, Any]:
    assert schedule.job is not None
    spec = schedule.job
    row = job_store._row_values(spec)
    for per_occurrence in ("state", "run_at", "unique_key"):
        row.pop(per_occurrence)
    row["name"] = spec.name or schedule.name
    return row


# PostgreSQL: the batch's occurrences in one statement that reads each job's fields from its
# schedule's template (the row we hold locked), so that only the per-occurrence columns travel
# as parameters, one array each: a thousand occurrences cost about what one does to send.
PG_INSERT_OCCURRENCES = sa.text("""
INSERT INTO jobs (name, queue, priority, state, argv, env, cwd, timeout_s, max_attempts,
                  backoff_s, delivery, attempt, labels, run_at, created_at, finished_at, error,
                  cancel_requested, schedule_id, fire_time, max_lost, input, run_as)
SELECT coalesce(s.job->>'name', s.name), coalesce(s.job->>'queue', 'default'),
       coalesce((s.job->>'priority')::int, 0), o.state, s.job->'argv',
       coalesce(s.job->'env', '{}'::jsonb), s.job->>'cwd', (s.job->>'timeout_s')::float8,
       coalesce((s.job->>'retries')::int, 0) + 1, coalesce((s.job->>'backoff_s')::float8, 10),
       coalesce(s.job->>'delivery', 'at_least_once'), 0, coalesce(s.job->'labels', '{}'::jsonb),
       o.run_at, clock_timestamp(), o.finished_at, o.error, o.cancel_requested, o.schedule_id,
       o.fire_time, coalesce((s.job->>'max_lost')::int, 3),
       decode(s.job->>'input', 'base64'), s.job->>'user'
FROM unnest(CAST(:schedule_ids AS bigint[]), CAST(:fire_times AS timestamptz[]),
            CAST(:states AS text[]), CAST(:run_ats AS timestamptz[]),
            CAST(:finished_ats AS timestamptz[]), CAST(:errors AS text[]),
            CAST(:cancels AS boolean[]))
     WITH ORDINALITY AS o(schedule_id, fire_time, state, run_at, finished_at, error,
                          cancel_requested, position)
JOIN schedules s ON s.id = o.schedule_id
ORDER BY o.position
ON CONFLICT (schedule_id, fire_time) WHERE schedule_id IS NOT NULL DO NOTHING
RETURNING id
""")


def _insert(connection: sa.Connection, rows: list[dict[str, Any]], of: list[Schedule],
            return_ids: bool) -> list[int]:
    if not rows:
        return []
    if connection.dialect.name == "postgresql":
        inserted = connection.execute(PG_INSERT_OCCURRENCES, {
            "schedule_ids": [row["schedule_id"] for row in rows],
            "fire_times": [row["fire_time"] for row in rows],
            "states": [row["state"] for row in rows],
            "run_ats": [row["run_at"] for row in rows],
            "finished_ats": [row["finished_at"] for row in rows],
            "errors": [row["error"] for row in rows],
            "cancels": [row["cancel_requested"] for row in rows],
        }).scalars().all()
        return [int(job_id) for job_id in inserted] if return_ids else []
    templates = {schedule.id: _template_columns(schedule) for schedule in of}
    full_rows = [{**templates[row["schedule_id"]], **row} for row in rows]
    statement = sqlite.insert(jobs).values(created_at=db_now()).on_conflict_do_nothing(
        index_elements=["schedule_id", "fire_time"], index_where=jobs.c.schedule_id.isnot(None))
    if return_ids:
        ids = [connection.execute(statement.values(**row).returning(jobs.c.id)).scalar()
               for row in full_rows]
        return [int(job_id) for job_id in ids if job_id is not None]
    connection.execute(statement, full_rows)
    return []


# --- the scheduler's clock --------------------------------------------------------------------


def seconds_until_next_due(connection: sa.Connection) -> float | None:
    """Seconds until the next active schedule is due (0 if one is due now), None if none is."""
    if connection.dialect.name == "postgresql":
        query = sa.text("SELECT EXTRACT(EPOCH FROM min(next_fire_at) - clock_timestamp())"
                        " FROM schedules WHERE NOT paused")
    else:
        query = sa.text("SELECT (julianday(min(next_fire_at)) - julianday('now')) * 86400.0"
                        " FROM schedules WHERE NOT paused")
    seconds = connection.execute(query).scalar()
    return None if seconds is None else max(0.0, float(seconds))
