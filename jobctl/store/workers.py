"""The workers table: register, stop, list.

Written against `store.direct.Conn` (the driver, no SQLAlchemy), since a worker registers and
stops itself.
"""

from __future__ import annotations

from typing import Protocol

from jobctl.models import LIVE_WORKER_STATES, JobState, WorkerInfo, WorkerState, sql_states
from jobctl.store import notify
from jobctl.store.direct import Conn


def register(
    conn: Conn,
    *,
    name: str,
    hostname: str,
    pid: int,
    queues: list[str],
    concurrency: int,
    version: str,
    resources: dict[str, float | int] | None = None,
    tags: dict[str, str] | None = None,
) -> int:
    worker_id = conn.scalar(conn.backend.sql_workers.REGISTER, {
        "name": name, "hostname": hostname, "pid": pid, "queues": conn.json_param(queues),
        "concurrency": concurrency, "version": version,
        "resources": conn.json_param(resources), "tags": conn.json_param(tags or {})})
    return int(worker_id)


def set_state(conn: Conn, worker_id: int, state: WorkerState) -> None:
    conn.execute(conn.backend.sql_workers.SET_STATE, {"state": state.value, "id": worker_id})


def get_state(conn: Conn, worker_id: int) -> WorkerState | None:
    state = conn.scalar(conn.backend.sql_workers.GET_STATE, {"id": worker_id})
    return WorkerState(state) if state else None


def request_stop(conn: Conn, name_or_id: str) -> list[tuple[int, WorkerState]]:
    """Ask the live workers of this name (or id) to stop. Returns [(id, state before)] of every
    worker that matched, live or not."""
    sql = conn.backend.sql_workers
    by_id = int(name_or_id) if name_or_id.isdigit() else None
    found = [(worker_id, WorkerState(state)) for worker_id, state
             in conn.execute(sql.FIND, {"name": name_or_id, "id": by_id}).fetchall()]
    for worker_id, state in found:
        if state is WorkerState.RUNNING:
            conn.execute(sql.REQUEST_STOP, {"id": worker_id})
            notify.worker_stop_requested(conn, worker_id)
    return found


def list_workers(conn: Conn, *, include_ended: bool = False) -> list[WorkerInfo]:
    rows = conn.execute(conn.backend.sql_workers.LIST, {"include_ended": include_ended})
    return [
        WorkerInfo(
            id=id_,
            name=name,
            hostname=hostname,
            pid=pid,
            queues=list(conn.json(queues)),
            concurrency=concurrency,
            version=version,
            started_at=conn.time_not_null(started_at),
            heartbeat_at=conn.time_not_null(heartbeat_at),
            state=WorkerState(state),
            running_jobs=running_jobs,
        )
        for (id_, name, hostname, pid, queues, concurrency, version, started_at, heartbeat_at,
             state, running_jobs) in rows.fetchall()
    ]


# --- SQL both backends share -------------------------------------------------------------------
# SQL text that both backends run exactly as it is (no parameter, nothing dialect-specific) lives
# here, once, named for what it means; each backend's statement (jobctl.store.<backend>.workers)
# composes it at import. Whatever holds a parameter stays in the backend's own statement.

# A worker that is alive: running or draining (not stopped, not lost).
LIVE_WORKER = f"workers.state IN ({sql_states(LIVE_WORKER_STATES)})"

# Every worker with how many jobs it runs now (LIST's columns, `running_jobs` last).
WORKERS_WITH_RUNNING_JOBS = f"""SELECT workers.id, workers.name, workers.hostname, workers.pid,
       workers.queues, workers.concurrency, workers.version, workers.started_at,
       workers.heartbeat_at, workers.state, coalesce(running.running, 0) AS running_jobs
FROM workers LEFT OUTER JOIN (
    SELECT worker_id, count(*) AS running FROM jobs
    WHERE state = '{JobState.RUNNING.value}' GROUP BY worker_id
) AS running ON running.worker_id = workers.id"""


class WorkersSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.workers): its statements,
    named and commented, in its driver's own parameter style."""

    REGISTER: str  # name, hostname, pid, queues (JSON), concurrency, version → id
    SET_STATE: str  # id, state
    GET_STATE: str  # id → state
    FIND: str  # name, id (or NULL) → id, state
    REQUEST_STOP: str  # id
    LIST: str  # include_ended → the WorkerInfo columns, running_jobs last
