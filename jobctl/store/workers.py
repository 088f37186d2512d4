"""The workers table: register, stop, list."""

from __future__ import annotations

import json

import sqlalchemy as sa

from jobctl.models import JobState, WorkerInfo, WorkerState
from jobctl.store import notify
from jobctl.store.schema import db_now, jobs, workers


def register(
    connection: sa.Connection,
    *,
    name: str,
    hostname: str,
    pid: int,
    queues: list[str],
    concurrency: int,
    version: str,
) -> int:
    worker_id = connection.execute(
        sa.insert(workers)
        .values(
            name=name, hostname=hostname, pid=pid, queues=queues, concurrency=concurrency,
            version=version, started_at=db_now(), heartbeat_at=db_now(),
            state=WorkerState.RUNNING.value,
        )
        .returning(workers.c.id)
    ).scalar_one()
    return int(worker_id)


def set_state(connection: sa.Connection, worker_id: int, state: WorkerState) -> None:
    connection.execute(
        sa.update(workers)
        .where(workers.c.id == worker_id)
        .values(state=state.value, heartbeat_at=db_now())
    )


def get_state(connection: sa.Connection, worker_id: int) -> WorkerState | None:
    state = connection.execute(
        sa.select(workers.c.state).where(workers.c.id == worker_id)
    ).scalar()
    return WorkerState(state) if state else None


def request_stop(connection: sa.Connection, name_or_id: str) -> list[tuple[int, WorkerState]]:
    """Ask the live workers of this name (or id) to stop. Returns [(id, state before)] of every
    worker that matched, live or not."""
    match = workers.c.name == name_or_id
    if name_or_id.isdigit():
        match = sa.or_(match, workers.c.id == int(name_or_id))
    found = [(row.id, WorkerState(row.state))
             for row in connection.execute(sa.select(workers.c.id, workers.c.state).where(match))]
    for worker_id, state in found:
        if state is WorkerState.RUNNING:
            connection.execute(
                sa.update(workers)
                .where(workers.c.id == worker_id, workers.c.state == WorkerState.RUNNING.value)
                .values(state=WorkerState.DRAINING.value)
            )
            notify.worker_stop_requested(connection, worker_id)
    return found


def list_workers(connection: sa.Connection, *, include_ended: bool = False) -> list[WorkerInfo]:
    running = (
        sa.select(jobs.c.worker_id, sa.func.count().label("running"))
        .where(jobs.c.state == JobState.RUNNING.value)
        .group_by(jobs.c.worker_id)
        .subquery()
    )
    query = (
        sa.select(workers, sa.func.coalesce(running.c.running, 0).label("running_jobs"))
        .select_from(workers.outerjoin(running, running.c.worker_id == workers.c.id))
        .order_by(workers.c.id.desc())
    )
    if not include_ended:
        query = query.where(
            workers.c.state.in_([WorkerState.RUNNING.value, WorkerState.DRAINING.value])
        )
    return [
        WorkerInfo(
            id=row.id,
            name=row.name,
            hostname=row.hostname,
            pid=row.pid,
            queues=list(json.loads(row.queues) if isinstance(row.queues, str) else row.queues),
            concurrency=row.concurrency,
            version=row.version,
            started_at=row.started_at,
            heartbeat_at=row.heartbeat_at,
            state=WorkerState(row.state),
            running_jobs=row.running_jobs,
        )
        for row in connection.execute(query)
    ]
