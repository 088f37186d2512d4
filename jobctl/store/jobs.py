"""Jobs outside the hot path: submit (one and many), read, list, logs, cancel, retry.

Every function takes an open connection; the caller (jobctl.client) owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from jobctl.models import (
    FINAL_STATES,
    Attempt,
    Delivery,
    Job,
    JobSpec,
    JobState,
    LogChunk,
    Stream,
)
from jobctl.store import notify
from jobctl.store.schema import attempts, db_now, db_now_plus, job_logs, jobs, workers

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


def submit(connection: sa.Connection, spec: JobSpec) -> tuple[int, bool]:
    """Insert one job; returns (id, created). A known unique key returns the first job's id."""
    values = _row_values(spec)
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
    notify.job_submitted(connection, spec.queue)
    return int(job_id), True


# Many jobs in one statement with one parameter per column (arrays), not one per value: the
# statement stays small however many jobs there are, so neither SQLAlchemy nor psycopg spends
# time building or parsing it. Identity values follow the ORDER BY, so sorted ids are in order.
PG_SUBMIT_MANY = sa.text("""
INSERT INTO jobs (name, queue, priority, state, argv, env, cwd, timeout_s, max_attempts,
                  backoff_s, delivery, attempt, labels, run_at, created_at)
SELECT d.name, d.queue, d.priority, 'queued', d.argv::jsonb, d.env::jsonb, d.cwd, d.timeout_s,
       d.max_attempts, d.backoff_s, d.delivery, 0, d.labels::jsonb,
       coalesce(d.run_at, clock_timestamp() + make_interval(secs => d.run_in_s)),
       clock_timestamp()
FROM unnest(
    CAST(:names AS text[]), CAST(:queues AS text[]), CAST(:priorities AS int[]),
    CAST(:argvs AS text[]), CAST(:envs AS text[]), CAST(:cwds AS text[]),
    CAST(:timeouts AS float8[]), CAST(:max_attempts AS int[]), CAST(:backoffs AS float8[]),
    CAST(:deliveries AS text[]), CAST(:labels AS text[]), CAST(:run_ats AS timestamptz[]),
    CAST(:run_ins AS float8[])
) WITH ORDINALITY AS d(name, queue, priority, argv, env, cwd, timeout_s, max_attempts,
                       backoff_s, delivery, labels, run_at, run_in_s, position)
ORDER BY d.position
RETURNING id
""")


def submit_many(connection: sa.Connection, specs: Sequence[JobSpec]) -> list[int]:
    """Insert many jobs in one statement; ids come back in the order given.

    Unique keys are not supported here: a batch is all or nothing.
    """
    if not specs:
        return []
    if connection.dialect.name == "postgresql":
        ids = _submit_many_postgres(connection, specs)
    else:
        ids = _submit_many_sqlite(connection, specs)
    for queue in sorted({spec.queue for spec in specs}):
        notify.job_submitted(connection, queue)
    return ids


def _submit_many_postgres(connection: sa.Connection, specs: Sequence[JobSpec]) -> list[int]:
    params = {
        "names": [s.name for s in specs],
        "queues": [s.queue for s in specs],
        "priorities": [s.priority for s in specs],
        "argvs": [json.dumps(list(s.argv)) for s in specs],
        "envs": [json.dumps(dict(s.env)) for s in specs],
        "cwds": [s.cwd for s in specs],
        "timeouts": [s.timeout_s for s in specs],
        "max_attempts": [s.max_attempts for s in specs],
        "backoffs": [s.backoff_s for s in specs],
        "deliveries": [s.delivery.value for s in specs],
        "labels": [json.dumps(dict(s.labels)) for s in specs],
        "run_ats": [s.run_at for s in specs],
        "run_ins": [s.run_in_s or 0.0 for s in specs],
    }
    return sorted(int(i) for i in connection.execute(PG_SUBMIT_MANY, params).scalars())


def _submit_many_sqlite(connection: sa.Connection, specs: Sequence[JobSpec]) -> list[int]:
    rows = []
    for spec in specs:
        row = _row_values(spec)
        row["run_at_given"] = row.pop("run_at")
        row["run_in_s"] = spec.run_in_s or 0.0
        rows.append(row)
    statement = (
        sa.insert(jobs)
        .values(
            {
                **{key: sa.bindparam(key) for key in rows[0]
                   if key not in ("run_at_given", "run_in_s")},
                "run_at": sa.func.coalesce(
                    sa.bindparam("run_at_given", type_=jobs.c.run_at.type),
                    db_now_plus(sa.bindparam("run_in_s", type_=sa.Float())),
                ),
                "created_at": db_now(),
            }
        )
        .returning(jobs.c.id, sort_by_parameter_order=True)
    )
    return [int(job_id) for job_id in connection.execute(statement, rows).scalars()]


def _job_from_row(row: Any) -> Job:
    return Job(
        id=row.id,
        name=row.name,
        queue=row.queue,
        priority=row.priority,
        state=JobState(row.state),
        argv=list(row.argv),
        env=dict(row.env or {}),
        cwd=row.cwd,
        timeout_s=row.timeout_s,
        max_attempts=row.max_attempts,
        backoff_s=row.backoff_s,
        delivery=Delivery(row.delivery),
        attempt=row.attempt,
        run_at=row.run_at,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        worker_id=row.worker_id,
        lease_until=row.lease_until,
        exit_code=row.exit_code,
        signal=row.signal,
        error=row.error,
        cancel_requested=bool(row.cancel_requested),
        unique_key=row.unique_key,
        labels=dict(row.labels or {}),
    )


def get(connection: sa.Connection, job_id: int) -> Job | None:
    row = connection.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
    return _job_from_row(row) if row is not None else None


def get_many(connection: sa.Connection, job_ids: Iterable[int]) -> dict[int, Job]:
    ids = list(job_ids)
    rows = connection.execute(sa.select(jobs).where(jobs.c.id.in_(ids))).all()
    return {row.id: _job_from_row(row) for row in rows}


def existing_ids(connection: sa.Connection, job_ids: Iterable[int]) -> set[int]:
    ids = list(job_ids)
    return set(connection.execute(sa.select(jobs.c.id).where(jobs.c.id.in_(ids))).scalars())


def list_jobs(
    connection: sa.Connection,
    *,
    states: Sequence[JobState] = (),
    queues: Sequence[str] = (),
    name: str | None = None,
    labels: dict[str, str] | None = None,
    limit: int | None = 50,
) -> list[Job]:
    """Newest first. `name` matches exactly, or as a glob when it holds * or ?."""
    query = sa.select(jobs).order_by(jobs.c.id.desc())
    if states:
        query = query.where(jobs.c.state.in_([state.value for state in states]))
    if queues:
        query = query.where(jobs.c.queue.in_(list(queues)))
    if name is not None:
        if "*" in name or "?" in name:
            pattern = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = pattern.replace("*", "%").replace("?", "_")
            query = query.where(jobs.c.name.like(pattern, escape="\\"))
        else:
            query = query.where(jobs.c.name == name)
    for key, value in (labels or {}).items():
        query = query.where(jobs.c.labels[key].as_string() == value)
    if limit:
        query = query.limit(limit)
    return [_job_from_row(row) for row in connection.execute(query)]


def list_attempts(connection: sa.Connection, job_id: int) -> list[Attempt]:
    """Ended attempts from `attempts`, and the running one (if any) from the job's own row."""
    query = (
        sa.select(attempts, workers.c.name.label("worker_name"))
        .select_from(attempts.outerjoin(workers, workers.c.id == attempts.c.worker_id))
        .where(attempts.c.job_id == job_id)
        .order_by(attempts.c.attempt)
    )
    ended = [
        Attempt(
            job_id=row.job_id,
            attempt=row.attempt,
            worker_id=row.worker_id,
            worker_name=row.worker_name,
            started_at=row.started_at,
            finished_at=row.finished_at,
            outcome=row.outcome,
            exit_code=row.exit_code,
            signal=row.signal,
            error=row.error,
        )
        for row in connection.execute(query)
    ]
    running = connection.execute(
        sa.select(jobs.c.attempt, jobs.c.worker_id, jobs.c.started_at,
                  workers.c.name.label("worker_name"))
        .select_from(jobs.outerjoin(workers, workers.c.id == jobs.c.worker_id))
        .where(jobs.c.id == job_id, jobs.c.state == JobState.RUNNING.value)
    ).first()
    if running is not None:
        ended.append(Attempt(job_id=job_id, attempt=running.attempt, worker_id=running.worker_id,
                             worker_name=running.worker_name, started_at=running.started_at,
                             finished_at=None, outcome=None, exit_code=None, signal=None,
                             error=None))
    return ended


def read_logs(
    connection: sa.Connection,
    job_id: int,
    attempt: int,
    *,
    after_seq: int = -1,
    stream: Stream | None = None,
    limit: int = 1000,
) -> list[LogChunk]:
    """Chunks of one attempt's output in the order they were written, after `after_seq`."""
    query = (
        sa.select(job_logs.c.attempt, job_logs.c.stream, job_logs.c.seq, job_logs.c.data)
        .where(job_logs.c.job_id == job_id, job_logs.c.attempt == attempt,
               job_logs.c.seq > after_seq)
        .order_by(job_logs.c.seq)
        .limit(limit)
    )
    if stream is not None:
        query = query.where(job_logs.c.stream == stream.value)
    return [
        LogChunk(attempt=row.attempt, stream=Stream(row.stream), seq=row.seq, data=bytes(row.data))
        for row in connection.execute(query)
    ]


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
