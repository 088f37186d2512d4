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
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from jobctl import policy
from jobctl.cron import Timing, interval_anchor
from jobctl.models import (
    UNFINISHED_STATES,
    JobSpec,
    JobState,
    Misfire,
    Overlap,
    Schedule,
    ScheduleDefinition,
    ScheduleRun,
    job_template,
    spec_from_template,
    state_values,
)
from jobctl.store import jobs as job_store
from jobctl.store import notify, reads
from jobctl.store import submit as submit_store
from jobctl.store.direct import Conn
from jobctl.store.postgres import NOW as PG_NOW
from jobctl.store.sqlite import NOW as SQLITE_NOW

# What a schedule's overlap policy counts as still running: unfinished jobs.
ACTIVE = state_values(UNFINISHED_STATES)


# --- reading ----------------------------------------------------------------------------------

SCHEDULE_COLUMNS = ("id", "name", "cron", "every_s", "timezone", "job", "workflow", "overlap",
                    "misfire", "jitter_s", "paused", "start_at", "end_at", "next_fire_at",
                    "last_fire_at", "created_at", "updated_at")
SELECT_SCHEDULES = f"SELECT {', '.join(SCHEDULE_COLUMNS)} FROM schedules"


def _schedule_from_row(conn: Conn, row: Sequence[Any]) -> Schedule:
    """A Schedule from the first columns of a row of SELECT_SCHEDULES (more may follow)."""
    (id_, name, cron, every_s, timezone, job, workflow, overlap, misfire, jitter_s, paused,
     start_at, end_at, next_fire_at, last_fire_at, created_at,
     updated_at) = row[:len(SCHEDULE_COLUMNS)]
    template = conn.json(job)
    return Schedule(
        id=int(id_),
        name=name,
        cron=cron,
        every_s=every_s,
        timezone=timezone,
        job=spec_from_template(template) if template is not None else None,
        workflow=conn.json(workflow),
        overlap=Overlap(overlap),
        misfire=Misfire(misfire),
        jitter_s=jitter_s,
        paused=bool(paused),
        start_at=conn.time(start_at),
        end_at=conn.time(end_at),
        next_fire_at=conn.time(next_fire_at),
        last_fire_at=conn.time(last_fire_at),
        created_at=conn.time_not_null(created_at),
        updated_at=conn.time_not_null(updated_at),
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


def get(conn: Conn, name: str, *, lock: bool = False) -> Schedule | None:
    """The schedule of that name; with `lock`, its row locked until the transaction ends (on
    SQLite the write transaction holds the whole database already)."""
    for_update = " FOR UPDATE" if lock and conn.is_postgres else ""
    row = conn.legacy_execute(f"{SELECT_SCHEDULES} WHERE name = :name{for_update}",
                       {"name": name}).fetchone()
    return _schedule_from_row(conn, row) if row is not None else None


def list_all(conn: Conn) -> list[Schedule]:
    rows = conn.legacy_execute(f"{SELECT_SCHEDULES} ORDER BY name").fetchall()
    return [_schedule_from_row(conn, row) for row in rows]


def recent_runs(conn: Conn, schedule_id: int, limit: int = 5) -> list[ScheduleRun]:
    """The schedule's latest occurrences, newest first."""
    rows = conn.legacy_execute(
        "SELECT id, fire_time, state, created_at, error FROM jobs WHERE schedule_id = :id "
        "ORDER BY fire_time DESC LIMIT :limit", {"id": schedule_id, "limit": limit}).fetchall()
    return [ScheduleRun(job_id=job_id, fire_time=conn.time_not_null(fire_time),
                        state=JobState(state), created_at=conn.time_not_null(created_at),
                        error=error)
            for job_id, fire_time, state, created_at, error in rows]


def now(conn: Conn) -> datetime:
    """The database's clock (fire times are compared with it, never with a machine's)."""
    return conn.time_not_null(conn.legacy_scalar(f"SELECT {conn.now}"))


# --- changing ---------------------------------------------------------------------------------


def _json_param(conn: Conn, name: str) -> str:
    return f"CAST(:{name} AS jsonb)" if conn.is_postgres else f":{name}"


def _time_param(conn: Conn, name: str) -> str:
    # PostgreSQL: a typed parameter, so that a NULL one is a time, not text.
    return f"CAST(:{name} AS timestamptz)" if conn.is_postgres else f":{name}"


DEFINITION_COLUMNS = ("name", "cron", "every_s", "timezone", "job", "workflow", "overlap",
                      "misfire", "jitter_s", "paused", "start_at", "end_at")


def _definition_sql(conn: Conn, column: str) -> str:
    if column in ("job", "workflow"):
        return _json_param(conn, column)
    if column in ("start_at", "end_at", "next_fire_at", "created_at"):
        return _time_param(conn, column)
    return f":{column}"


def _values(conn: Conn, definition: ScheduleDefinition) -> dict[str, Any]:
    """The parameters for DEFINITION_COLUMNS."""
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
    }


def _first_fire(definition: ScheduleDefinition, created_at: datetime,
                moment: datetime) -> datetime | None:
    return Timing(
        cron=definition.cron, every_s=definition.every_s, timezone=definition.timezone,
        anchor=definition.start_at or interval_anchor(created_at),
        start_at=definition.start_at, end_at=definition.end_at,
    ).next_after(moment)


def create(conn: Conn, definition: ScheduleDefinition) -> int:
    """Insert a schedule whose first occurrence is the first fire time after now."""
    moment = now(conn)
    columns = (*DEFINITION_COLUMNS, "next_fire_at", "created_at")
    sql = (f"INSERT INTO schedules ({', '.join(columns)}, updated_at) "
           f"VALUES ({', '.join(_definition_sql(conn, c) for c in columns)}, "
           f"{_time_param(conn, 'created_at')}) RETURNING id")
    schedule_id = conn.legacy_scalar(sql, {
        **_values(conn, definition),
        "next_fire_at": conn.time_param(_first_fire(definition, moment, moment)),
        "created_at": conn.time_param(moment),
    })
    notify.schedules_changed(conn, definition.name)
    return int(schedule_id)


def replace(conn: Conn, existing: Schedule, definition: ScheduleDefinition,
            *, keep_created: bool = True) -> None:
    """Rewrite a schedule's definition; its next occurrence is recomputed from now."""
    moment = now(conn)
    created_at = existing.created_at if keep_created else moment
    columns = (*DEFINITION_COLUMNS, "next_fire_at", *(() if keep_created else ("created_at",)))
    assignments = ", ".join(f"{c} = {_definition_sql(conn, c)}" for c in columns)
    conn.legacy_execute(
        f"UPDATE schedules SET {assignments}, updated_at = {_time_param(conn, 'updated_at')} "
        "WHERE id = :id", {
            **_values(conn, definition),
            "next_fire_at": conn.time_param(_first_fire(definition, created_at, moment)),
            "created_at": conn.time_param(moment),
            "updated_at": conn.time_param(moment),
            "id": existing.id,
        })
    notify.schedules_changed(conn, definition.name)


def set_paused(conn: Conn, name: str, paused: bool) -> bool | None:
    """Pause or resume; returns whether it was paused before (None: no such schedule).

    Resuming keeps `next_fire_at`: the fire times passed while paused are missed, and the
    schedule's misfire policy decides what becomes of them."""
    for_update = " FOR UPDATE" if conn.is_postgres else ""
    before = conn.legacy_scalar(f"SELECT paused FROM schedules WHERE name = :name{for_update}",
                         {"name": name})
    if before is None:
        return None
    # Conditional on what was read, like every state change.
    conn.legacy_execute(
        f"UPDATE schedules SET paused = :paused, updated_at = {conn.now} "
        "WHERE name = :name AND paused = :before",
        {"name": name, "paused": paused, "before": bool(before)})
    notify.schedules_changed(conn, name)
    return bool(before)


def delete(conn: Conn, name: str) -> bool:
    """Remove a schedule. Its jobs stay (they keep their schedule_id and fire_time)."""
    deleted = conn.legacy_execute("DELETE FROM schedules WHERE name = :name",
                                  {"name": name}).rowcount
    notify.schedules_changed(conn, name)
    return bool(deleted)


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


# The due schedules, oldest due first, with the database's now (one clock for the batch).
# PostgreSQL: their rows locked, and rows another scheduler holds skipped, not waited for: it
# fires those. SQLite: the caller's BEGIN IMMEDIATE already keeps every other writer out.
PG_LOCK_DUE = f"""
SELECT {PG_NOW}, {', '.join(SCHEDULE_COLUMNS)} FROM schedules
WHERE NOT paused AND next_fire_at <= {PG_NOW}
ORDER BY next_fire_at
LIMIT :limit
FOR UPDATE SKIP LOCKED
"""
SQLITE_DUE = f"""
SELECT {SQLITE_NOW}, {', '.join(SCHEDULE_COLUMNS)} FROM schedules
WHERE NOT paused AND next_fire_at <= {SQLITE_NOW}
ORDER BY next_fire_at
LIMIT :limit
"""


def fire_due(conn: Conn, *, limit: int = 200, misfire_grace_s: float = 1.0,
             misfire_cap: int = 100) -> Fired:
    """Fire the occurrences of up to `limit` due schedules, in one transaction.

    A fire time more than `misfire_grace_s` in the past when we get to it is missed: the
    schedule's misfire policy says whether it fires (`all`: up to `misfire_cap` of them, the
    latest), once for the latest (`once`), or not at all (`skip`); see policy.misfire_fire_times.
    """
    rows = conn.legacy_execute(PG_LOCK_DUE if conn.is_postgres else SQLITE_DUE,
                        {"limit": limit}).fetchall()
    report = Fired(schedules=len(rows))
    if not rows:
        return report
    moment = conn.time_not_null(rows[0][0])
    occurrences: list[Occurrence] = []
    advances: list[Advance] = []
    for row in rows:
        schedule = _schedule_from_row(conn, row[1:])
        assert schedule.next_fire_at is not None  # the query asked for it
        when = timing(schedule)
        due = when.due(schedule.next_fire_at, moment, misfire_cap)
        chosen = policy.misfire_fire_times(schedule.misfire, due, moment, misfire_grace_s,
                                           misfire_cap)
        report.missed += len(due) - len(chosen)
        occurrences.extend(Occurrence(schedule, fire_time) for fire_time in chosen)
        advances.append(Advance(schedule.id, schedule.next_fire_at, when.next_after(moment),
                                chosen[-1] if chosen else schedule.last_fire_at))
    if occurrences:
        submitted = submit_occurrences(conn, occurrences, moment)
        report.jobs += submitted.jobs
        report.skipped += submitted.skipped
        report.lateness_s.extend(submitted.lateness_s)
    _advance(conn, advances)
    return report


@dataclass(frozen=True)
class Advance:
    schedule_id: int
    expected: datetime  # next_fire_at as we read it
    next_fire_at: datetime | None
    last_fire_at: datetime | None


# Conditional on the value read: a schedule someone edited meanwhile keeps its new next time.
SQLITE_ADVANCE = """
UPDATE schedules SET next_fire_at = :next_fire_at, last_fire_at = :last_fire_at
WHERE id = :id AND next_fire_at = :expected
"""
# PostgreSQL: every schedule of the batch in one statement, one array parameter per column.
PG_ADVANCE = """
UPDATE schedules s SET next_fire_at = u.next_fire_at, last_fire_at = u.last_fire_at
FROM unnest(CAST(:ids AS bigint[]), CAST(:expected AS timestamptz[]),
            CAST(:next_fire_ats AS timestamptz[]), CAST(:last_fire_ats AS timestamptz[]))
     AS u(id, expected, next_fire_at, last_fire_at)
WHERE s.id = u.id AND s.next_fire_at = u.expected
"""


def _advance(conn: Conn, advances: Sequence[Advance]) -> None:
    if not advances:
        return
    if conn.is_postgres:
        conn.legacy_execute(PG_ADVANCE, {
            "ids": [a.schedule_id for a in advances],
            "expected": [a.expected for a in advances],
            "next_fire_ats": [a.next_fire_at for a in advances],
            "last_fire_ats": [a.last_fire_at for a in advances],
        })
        return
    conn.legacy_executemany(SQLITE_ADVANCE, [
        {"id": a.schedule_id, "expected": conn.time_param(a.expected),
         "next_fire_at": conn.time_param(a.next_fire_at),
         "last_fire_at": conn.time_param(a.last_fire_at)} for a in advances])


@dataclass
class Submitted:
    jobs: int = 0
    skipped: int = 0
    lateness_s: list[float] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)  # only when asked for (trigger)
    workflow_ids: list[int] = field(default_factory=list)  # workflows started


@dataclass
class _Row:
    """One occurrence's own columns; the rest come from its schedule's job template (in SQL on
    PostgreSQL, see PG_INSERT_OCCURRENCES; through store.submit's job row on SQLite)."""

    occurrence: Occurrence
    state: JobState
    run_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    cancel_requested: bool = False


def submit_occurrences(conn: Conn, occurrences: Sequence[Occurrence],
                       moment: datetime | None = None, *, return_ids: bool = False) -> Submitted:
    """Turn occurrences into jobs, applying each schedule's overlap policy
    (policy.overlap_decisions). This is the one place that says what an occurrence submits (a
    workflow variant belongs here, beside jobs)."""
    moment = moment or now(conn)
    result = Submitted()
    _start_workflows(conn, [o for o in occurrences if o.schedule.workflow is not None],
                     moment, result)
    occurrences = [o for o in occurrences if o.schedule.workflow is None]
    active = _active_runs(conn, [o.schedule for o in occurrences
                                 if o.schedule.overlap is not Overlap.ALLOW])
    positions: dict[int, list[int]] = {}  # schedule id: its occurrences' indexes
    for index, occurrence in enumerate(occurrences):
        positions.setdefault(occurrence.schedule.id, []).append(index)
    decisions: list[policy.OverlapDecision] = [policy.OverlapDecision(policy.OverlapAction.RUN)]
    decisions *= len(occurrences)
    for schedule_id, indexes in positions.items():
        batch = [occurrences[index] for index in indexes]
        for index, decision in zip(indexes, policy.overlap_decisions(
                batch[0].schedule.overlap, [o.fire_time for o in batch],
                active.get(schedule_id, [])), strict=True):
            decisions[index] = decision
    rows: list[_Row] = []
    for occurrence, decision in zip(occurrences, decisions, strict=True):  # ids in this order
        rows.append(_occurrence_row(occurrence, decision, moment))
        if decision.action is policy.OverlapAction.SKIP:
            result.skipped += 1
        elif decision.action is policy.OverlapAction.RUN:
            for job_id in decision.cancel:
                job_store.cancel(conn, job_id)
            result.jobs += 1
            result.lateness_s.append((moment - occurrence.fire_time).total_seconds())
    result.job_ids = _insert(conn, rows, return_ids)
    for queue in sorted({_queue(row.occurrence.schedule) for row in rows
                         if row.state is JobState.QUEUED}):
        notify.job_submitted(conn, queue)
    return result


def _occurrence_row(occurrence: Occurrence, decision: policy.OverlapDecision,
                    moment: datetime) -> _Row:
    if decision.action is policy.OverlapAction.SKIP:
        return _Row(occurrence, JobState.SKIPPED, moment, finished_at=moment,
                    error=decision.error)
    if decision.action is policy.OverlapAction.SUPERSEDED:
        return _Row(occurrence, JobState.CANCELLED, moment, finished_at=moment,
                    error=decision.error, cancel_requested=True)
    jitter_s = occurrence.schedule.jitter_s
    jitter = random.uniform(0.0, jitter_s) if jitter_s > 0 else 0.0
    return _Row(occurrence, JobState.QUEUED,
                moment + timedelta(seconds=jitter) if jitter else moment)


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
    active, params = reads.in_(conn, "j.state", ACTIVE, "active")
    rows = conn.legacy_execute(
        "SELECT DISTINCT w.id FROM workflows w JOIN jobs j ON j.workflow_id = w.id "
        f"WHERE w.schedule_id = :schedule_id AND {active} ORDER BY w.id",
        {"schedule_id": schedule_id, **params}).fetchall()
    return [policy.ActiveRun(int(workflow_id), f"workflow {workflow_id}")
            for (workflow_id,) in rows]


def _active_runs(conn: Conn, of: Sequence[Schedule]) -> dict[int, list[policy.ActiveRun]]:
    """The queued, waiting or running jobs of these schedules, oldest first, by schedule id."""
    ids = sorted({schedule.id for schedule in of})
    if not ids:
        return {}
    of_schedules, params = reads.in_(conn, "schedule_id", ids, "ids")
    active, more = reads.in_(conn, "state", ACTIVE, "active")
    rows = conn.legacy_execute(
        f"SELECT schedule_id, id, state FROM jobs WHERE {of_schedules} AND {active} ORDER BY id",
        {**params, **more}).fetchall()
    found: dict[int, list[policy.ActiveRun]] = {}
    for schedule_id, job_id, state in rows:
        found.setdefault(int(schedule_id), []).append(
            policy.ActiveRun(int(job_id), f"job {job_id} ({state})"))
    return found


# PostgreSQL: the batch's occurrences in one statement that reads each job's fields from its
# schedule's template (the row we hold locked), so that only the per-occurrence columns travel
# as parameters, one array each: a thousand occurrences cost about what one does to send.
# The template's defaults here are JobSpec's (jobctl.models), as store.submit's row has them.
PG_INSERT_OCCURRENCES = """
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
"""


def _insert(conn: Conn, rows: Sequence[_Row], return_ids: bool) -> list[int]:
    """Insert the occurrences' jobs; those a job already holds (schedule, fire time) for are
    left out. Returns the new ids when asked."""
    if not rows:
        return []
    if conn.is_postgres:
        inserted = conn.legacy_execute(PG_INSERT_OCCURRENCES, {
            "schedule_ids": [row.occurrence.schedule.id for row in rows],
            "fire_times": [row.occurrence.fire_time for row in rows],
            "states": [row.state.value for row in rows],
            "run_ats": [row.run_at for row in rows],
            "finished_ats": [row.finished_at for row in rows],
            "errors": [row.error for row in rows],
            "cancels": [row.cancel_requested for row in rows],
        }).fetchall()
        return [int(job_id) for (job_id,) in inserted] if return_ids else []
    # SQLite: each job's row from its spec, as every other job's (store.submit), plus the
    # occurrence's columns. finished_at is the database's now for a job that ended (skipped or
    # superseded), as it is for any job submitted ended.
    params = [submit_store._row(conn, _spec(row), row.state, row.error,
                                schedule_id=row.occurrence.schedule.id,
                                fire_time=row.occurrence.fire_time,
                                cancel_requested=row.cancel_requested) for row in rows]
    sql = submit_store._insert_sql(conn, unique=False, occurrence=True)
    if not return_ids:
        conn.legacy_executemany(sql, params)
        return []
    found = [conn.legacy_execute(sql + submit_store.RETURNING_ID, one).fetchone() for one in params]
    return [int(row[0]) for row in found if row is not None]


def _spec(row: _Row) -> JobSpec:
    """The job an occurrence submits: its schedule's template, named after the schedule unless
    the template names it, due at the occurrence's run_at."""
    schedule = row.occurrence.schedule
    assert schedule.job is not None
    return dataclasses.replace(schedule.job, name=schedule.job.name or schedule.name,
                               run_at=row.run_at, run_in_s=None, unique_key=None)


# --- the scheduler's clock --------------------------------------------------------------------

PG_SECONDS_UNTIL_DUE = ("SELECT EXTRACT(EPOCH FROM min(next_fire_at) - clock_timestamp())"
                        " FROM schedules WHERE NOT paused")
SQLITE_SECONDS_UNTIL_DUE = ("SELECT (julianday(min(next_fire_at)) - julianday('now')) * 86400.0"
                            " FROM schedules WHERE NOT paused")


def seconds_until_next_due(conn: Conn) -> float | None:
    """Seconds until the next active schedule is due (0 if one is due now), None if none is."""
    seconds = conn.legacy_scalar(
        PG_SECONDS_UNTIL_DUE if conn.is_postgres else SQLITE_SECONDS_UNTIL_DUE)
    return None if seconds is None else max(0.0, float(seconds))


class SchedulesSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.schedules): its statements,
    named and commented, in its driver's own parameter style, and any step that differs by
    necessity."""
