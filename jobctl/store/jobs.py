"""Jobs outside the hot path: submit (one and many), read, list, logs, cancel, retry.

Every function takes an open connection; the caller (jobctl.client) owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from jobctl.errors import NotFound
from jobctl.models import (
    FINAL_STATES,
    DepCondition,
    JobSpec,
    JobState,
)
from jobctl.store import deps, notify
from jobctl.store import submit as submit_store
from jobctl.store.direct import Conn
from jobctl.store.schema import db_now, db_now_plus, jobs

FINAL = sorted(state.value for state in FINAL_STATES)
NOT_STARTED = [JobState.QUEUED.value, JobState.WAITING.value]


def _row_values(spec: JobSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "queue": spec.queue,
        "priority": spec.priority,
        "state": JobState.QUEUED.value,
        "argv": list(spec.argv),
        "env": dict(spec.env),
        "cwd": spec.cwd,
        "timeout_s": spec.timeout_s,
        "max_attempts": spec.max_attempts,
        "backoff_s": spec.backoff_s,
        "delivery": spec.delivery.value,
        "attempt": 0,
        "unique_key": spec.unique_key,
        "labels": dict(spec.labels),
        "run_at": spec.run_at,
    }


def _insert(connection: sa.Connection) -> Any:
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    return dialect_insert(jobs)


def _initial(connection: sa.Connection, spec: JobSpec) -> deps.Initial:
    """The state a job with `spec`'s dependencies starts in; unknown ids are NotFound."""
    if not spec.after and not spec.after_any:
        return deps.Initial(JobState.QUEUED)
    states = deps.states_of(Conn.of(connection), [*spec.after, *spec.after_any])
    missing = sorted((set(spec.after) | set(spec.after_any)) - set(states))
    if missing:
        raise NotFound(f"no job with id {', '.join(map(str, missing))} (in --after)")
    return deps.initial_state(spec.after, spec.after_any, states)


def _edges(job_id: int, spec: JobSpec) -> list[tuple[int, int, DepCondition]]:
    return ([(job_id, dep, DepCondition.OK) for dep in spec.after]
            + [(job_id, dep, DepCondition.ANY) for dep in spec.after_any])


def submit(connection: sa.Connection, spec: JobSpec) -> tuple[int, bool]:
    """Insert one job; returns (id, created). A known unique key returns the first job's id.
    With dependencies it starts `waiting` (or `queued` when they are all met already)."""
    initial = _initial(connection, spec)
    values = _row_values(spec)
    values["state"] = initial.state.value
    if initial.error is not None:
        values["error"] = initial.error
        values["finished_at"] = db_now()
    if values["run_at"] is None:
        values["run_at"] = db_now_plus(spec.run_in_s) if spec.run_in_s else db_now()
    statement = _insert(connection).values(**values, created_at=db_now())
    if spec.unique_key is not None:
        statement = statement.on_conflict_do_nothing(
            index_elements=["unique_key"], index_where=jobs.c.unique_key.isnot(None)
        )
    job_id = connection.execute(statement.returning(jobs.c.id)).scalar()
    if job_id is None:  # the unique key was taken: hand back the job that holds it
        existing = connection.execute(
            sa.select(jobs.c.id).where(jobs.c.unique_key == spec.unique_key)
        ).scalar_one()
        return int(existing), False
    deps.add(Conn.of(connection), _edges(int(job_id), spec))
    if initial.state is JobState.QUEUED:
        notify.job_submitted(connection, spec.queue)
    return int(job_id), True


def submit_many(connection: sa.Connection, specs: Sequence[JobSpec]) -> list[int]:
    """Insert many jobs in one transaction; ids come back in the order given.

    Unique keys are not supported here: a batch is all or nothing. Each job's --after and
    --after-any ids must exist (NotFound otherwise).
    """
    if not specs:
        return []
    initials = _initials(connection, specs)
    ids = submit_store.insert_many(Conn.of(connection), specs,
                                   states=[i.state for i in initials],
                                   errors=[i.error for i in initials])
    deps.add(Conn.of(connection), [edge for job_id, spec in zip(ids, specs, strict=True)
                                   for edge in _edges(job_id, spec)])
    return ids


def _initials(connection: sa.Connection, specs: Sequence[JobSpec]) -> list[deps.Initial]:
    if not any(spec.after or spec.after_any for spec in specs):
        return [deps.Initial(JobState.QUEUED)] * len(specs)
    wanted = {dep for spec in specs for dep in (*spec.after, *spec.after_any)}
    states = deps.states_of(Conn.of(connection), wanted)
    missing = sorted(wanted - set(states))
    if missing:
        raise NotFound(f"no job with id {', '.join(map(str, missing))} (in --after)")
    return [deps.initial_state(spec.after, spec.after_any, states) for spec in specs]


def existing_ids(connection: sa.Connection, job_ids: Iterable[int]) -> set[int]:
    ids = list(job_ids)
    return set(connection.execute(sa.select(jobs.c.id).where(jobs.c.id.in_(ids))).scalars())


def cancel(connection: sa.Connection, job_id: int) -> JobState | None:
    """Cancel one job. Returns the state it was in, or None when it does not exist.

    A job that has not started is cancelled here and now; a running one is flagged and its worker
    kills it (woken by a notification, or at its next lease renewal).
    """
    state = connection.execute(
        sa.select(jobs.c.state).where(jobs.c.id == job_id).with_for_update()
    ).scalar()
    if state is None:
        return None
    if state in NOT_STARTED:
        connection.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state.in_(NOT_STARTED))
            .values(state=JobState.CANCELLED.value, finished_at=db_now(),
                    error="cancelled before it started", cancel_requested=True)
        )
        notify.jobs_done(connection, [job_id])
        # what waits on it (--after) is cancelled too, transitively; --after-any ones may start
        deps.settle(Conn.of(connection), {job_id: JobState.CANCELLED.value})
    elif state == JobState.RUNNING.value:
        connection.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == JobState.RUNNING.value)
            .values(cancel_requested=True)
        )
        notify.cancel_requested(connection, job_id)
    return JobState(state)


def retry(connection: sa.Connection, job_id: int, retries: int = 0) -> JobState | None:
    """Queue a finished job again as a new attempt. Returns its state before, None if unknown."""
    row = connection.execute(
        sa.select(jobs.c.state, jobs.c.queue).where(jobs.c.id == job_id).with_for_update()
    ).first()
    if row is None:
        return None
    if row.state in FINAL:
        connection.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state.in_(FINAL))
            .values(
                state=JobState.QUEUED.value,
                max_attempts=jobs.c.attempt + 1 + retries,
                run_at=db_now(),
                finished_at=None,
                lease_until=None,
                exit_code=None,
                signal=None,
                error=None,
                cancel_requested=False,
            )
        )
        notify.job_submitted(connection, row.queue)
    return JobState(row.state)
