"""The workers table: register, stop, list.

Written against `store.direct.Conn` (the driver, no SQLAlchemy), since a worker registers and
stops itself; callers holding a SQLAlchemy connection pass `Conn.of(connection)`.
"""

from __future__ import annotations

import json
from typing import Protocol

from jobctl.models import LIVE_WORKER_STATES, JobState, WorkerInfo, WorkerState, sql_states
from jobctl.store import notify
from jobctl.store.direct import Conn

_LIVE = f"({sql_states(LIVE_WORKER_STATES)})"


def register(
    conn: Conn,
    *,
    name: str,
    hostname: str,
    pid: int,
    queues: list[str],
    concurrency: int,
    version: str,
) -> int:
    queues_json = "CAST(:queues AS jsonb)" if conn.is_postgres else ":queues"
    worker_id = conn.legacy_scalar(
        "INSERT INTO workers (name, hostname, pid, queues, concurrency, version, started_at,"
        " heartbeat_at, state)"
        f" VALUES (:name, :hostname, :pid, {queues_json}, :concurrency, :version, {conn.now},"
        f" {conn.now}, '{WorkerState.RUNNING.value}') RETURNING id",
        {"name": name, "hostname": hostname, "pid": pid, "queues": json.dumps(queues),
         "concurrency": concurrency, "version": version},
    )
    return int(worker_id)


def set_state(conn: Conn, worker_id: int, state: WorkerState) -> None:
    conn.legacy_execute(
        f"UPDATE workers SET state = :state, heartbeat_at = {conn.now} WHERE id = :id",
                 {"state": state.value, "id": worker_id})


def get_state(conn: Conn, worker_id: int) -> WorkerState | None:
    state = conn.legacy_scalar("SELECT state FROM workers WHERE id = :id", {"id": worker_id})
    return WorkerState(state) if state else None


def request_stop(conn: Conn, name_or_id: str) -> list[tuple[int, WorkerState]]:
    """Ask the live workers of this name (or id) to stop. Returns [(id, state before)] of every
    worker that matched, live or not."""
    params: dict[str, object]
    match, params = "name = :name", {"name": name_or_id}
    if name_or_id.isdigit():
        match, params = "(name = :name OR id = :id)", {"name": name_or_id, "id": int(name_or_id)}
    found = [(worker_id, WorkerState(state)) for worker_id, state
             in conn.legacy_execute(f"SELECT id, state FROM workers WHERE {match}", params)]
    for worker_id, state in found:
        if state is WorkerState.RUNNING:
            conn.legacy_execute(
                "UPDATE workers SET state = :draining WHERE id = :id AND state = :running",
                {"draining": WorkerState.DRAINING.value, "running": WorkerState.RUNNING.value,
                 "id": worker_id})
            notify.worker_stop_requested(conn, worker_id)
    return found


def list_workers(conn: Conn, *, include_ended: bool = False) -> list[WorkerInfo]:
    where = "" if include_ended else f" WHERE workers.state IN {_LIVE}"
    rows = conn.legacy_execute(
        "SELECT workers.id, workers.name, workers.hostname, workers.pid, workers.queues,"
        " workers.concurrency, workers.version, workers.started_at, workers.heartbeat_at,"
        " workers.state, coalesce(running.running, 0)"
        " FROM workers LEFT OUTER JOIN ("
        "   SELECT worker_id, count(*) AS running FROM jobs"
        f"   WHERE state = '{JobState.RUNNING.value}' GROUP BY worker_id"
        " ) AS running ON running.worker_id = workers.id"
        f"{where} ORDER BY workers.id DESC")
    return [
        WorkerInfo(
            id=id_,
            name=name,
            hostname=hostname,
            pid=pid,
            queues=list(conn.json(queues)),
            concurrency=concurrency,
            version=version,
            started_at=conn.time(started_at),  # type: ignore[arg-type]  # NOT NULL
            heartbeat_at=conn.time(heartbeat_at),  # type: ignore[arg-type]  # NOT NULL
            state=WorkerState(state),
            running_jobs=running_jobs,
        )
        for (id_, name, hostname, pid, queues, concurrency, version, started_at, heartbeat_at,
             state, running_jobs) in rows
    ]


class WorkersSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.workers): its statements,
    named and commented, in its driver's own parameter style, and any step that differs by
    necessity."""
