"""Reading jobs: one by id or a filtered list (newest first), a job's attempts, its output and
its dependencies.

Written against `store.direct.Conn` (the driver, no SQLAlchemy): `jobctl job list` and
`job status` are typed all day. Callers holding a SQLAlchemy connection use `Conn.of(it)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from jobctl.models import (
    Attempt,
    Delivery,
    DepCondition,
    Dependency,
    Job,
    JobState,
    LogChunk,
    Stream,
)
from jobctl.store.direct import Conn

JOB_COLUMNS = ("id", "name", "queue", "priority", "state", "argv", "env", "cwd", "timeout_s",
               "max_attempts", "backoff_s", "delivery", "attempt", "run_at", "created_at",
               "started_at", "finished_at", "worker_id", "lease_until", "exit_code", "signal",
               "error", "cancel_requested", "unique_key", "labels", "workflow_id", "task",
               "max_lost", "losses", "run_as",
               # the size of its standard input, not the bytes: a listing never needs them
               "length(input)", "schedule_id",
               # the schedule's name, NULL once it is removed
               "(SELECT s.name FROM schedules s WHERE s.id = jobs.schedule_id)", "fire_time")
SELECT_JOBS = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"


def job_from_row(conn: Conn, row: Sequence[Any]) -> Job:
    """A Job from a row of SELECT_JOBS."""
    (id_, name, queue, priority, state, argv, env, cwd, timeout_s, max_attempts, backoff_s,
     delivery, attempt, run_at, created_at, started_at, finished_at, worker_id, lease_until,
     exit_code, signal, error, cancel_requested, unique_key, labels, workflow_id, task,
     max_lost, losses, run_as, input_bytes, schedule_id, schedule, fire_time) = row
    return Job(
        id=id_,
        name=name,
        queue=queue,
        priority=priority,
        state=JobState(state),
        argv=list(conn.json(argv)),
        env=dict(conn.json(env) or {}),
        cwd=cwd,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        backoff_s=backoff_s,
        delivery=Delivery(delivery),
        attempt=attempt,
        run_at=conn.time_not_null(run_at),
        created_at=conn.time_not_null(created_at),
        started_at=conn.time(started_at),
        finished_at=conn.time(finished_at),
        worker_id=worker_id,
        lease_until=conn.time(lease_until),
        exit_code=exit_code,
        signal=signal,
        error=error,
        cancel_requested=bool(cancel_requested),
        unique_key=unique_key,
        labels=dict(conn.json(labels) or {}),
        workflow_id=workflow_id,
        task=task,
        max_lost=max_lost,
        losses=losses,
        user=run_as,
        input_bytes=input_bytes,
        schedule_id=schedule_id,
        schedule=schedule,
        fire_time=conn.time(fire_time),
    )


def select_jobs(conn: Conn, where: str, params: dict[str, Any], order: str = "id") -> list[Job]:
    """The jobs matching an SQL condition (written with `:name` placeholders)."""
    rows = conn.legacy_execute(f"{SELECT_JOBS} WHERE {where} ORDER BY {order}", params).fetchall()
    return [job_from_row(conn, row) for row in rows]


def get(conn: Conn, job_id: int) -> Job | None:
    row = conn.legacy_execute(f"{SELECT_JOBS} WHERE id = :id", {"id": job_id}).fetchone()
    return job_from_row(conn, row) if row is not None else None


def get_many(conn: Conn, job_ids: Iterable[int]) -> dict[int, Job]:
    where, params = in_(conn, "id", list(job_ids), "ids")
    rows = conn.legacy_execute(f"{SELECT_JOBS} WHERE {where}", params).fetchall()
    return {row[0]: job_from_row(conn, row) for row in rows}


def list_jobs(
    conn: Conn,
    *,
    states: Sequence[JobState] = (),
    queues: Sequence[str] = (),
    name: str | None = None,
    labels: dict[str, str] | None = None,
    schedule: str | None = None,
    limit: int | None = 50,
) -> list[Job]:
    """Newest first. `name` matches exactly, or as a glob when it holds * or ?; `schedule`
    names the schedule that made the jobs."""
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if states:
        where, more = in_(conn, "state", [state.value for state in states], "states")
        conditions.append(where)
        params.update(more)
    if queues:
        where, more = in_(conn, "queue", list(queues), "queues")
        conditions.append(where)
        params.update(more)
    if name is not None:
        if "*" in name or "?" in name:
            pattern = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append("name LIKE :name ESCAPE '\\'")
            params["name"] = pattern.replace("*", "%").replace("?", "_")
        else:
            conditions.append("name = :name")
            params["name"] = name
    if schedule is not None:
        conditions.append("schedule_id = (SELECT id FROM schedules WHERE name = :schedule)")
        params["schedule"] = schedule
    for index, (key, value) in enumerate((labels or {}).items()):
        params[f"label_key_{index}"], params[f"label_value_{index}"] = key, value
        if conn.is_postgres:
            conditions.append(f"labels ->> :label_key_{index} = :label_value_{index}")
        else:
            # json_each rather than a JSON path: any key works, quotes and dots included.
            conditions.append(f"EXISTS (SELECT 1 FROM json_each(jobs.labels) WHERE key = "
                              f":label_key_{index} AND value = :label_value_{index})")
    sql = SELECT_JOBS
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    sql += " ORDER BY id DESC"
    if limit:
        sql += " LIMIT :limit"
        params["limit"] = limit
    return [job_from_row(conn, row) for row in conn.legacy_execute(sql, params).fetchall()]


def list_attempts(conn: Conn, job_id: int) -> list[Attempt]:
    """Ended attempts from `attempts`, and the running one (if any) from the job's own row."""
    rows = conn.legacy_execute("""
        SELECT a.attempt, a.worker_id, w.name, a.started_at, a.finished_at, a.outcome,
               a.exit_code, a.signal, a.error
        FROM attempts a LEFT JOIN workers w ON w.id = a.worker_id
        WHERE a.job_id = :job_id ORDER BY a.attempt""", {"job_id": job_id}).fetchall()
    found = [
        Attempt(job_id=job_id, attempt=attempt, worker_id=worker_id, worker_name=worker_name,
                started_at=conn.time_not_null(started_at), finished_at=conn.time(finished_at),
                outcome=outcome, exit_code=exit_code, signal=signal, error=error)
        for (attempt, worker_id, worker_name, started_at, finished_at, outcome, exit_code,
             signal, error) in rows
    ]
    running = conn.legacy_execute("""
        SELECT j.attempt, j.worker_id, w.name, j.started_at
        FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id
        WHERE j.id = :job_id AND j.state = :running""",
        {"job_id": job_id, "running": JobState.RUNNING.value}).fetchone()
    if running is not None:
        attempt, worker_id, worker_name, started_at = running
        found.append(Attempt(job_id=job_id, attempt=attempt, worker_id=worker_id,
                             worker_name=worker_name, started_at=conn.time_not_null(started_at),
                             finished_at=None, outcome=None, exit_code=None, signal=None,
                             error=None))
    return found


def read_logs(
    conn: Conn,
    job_id: int,
    attempt: int,
    *,
    after_seq: int = -1,
    stream: Stream | None = None,
    limit: int = 1000,
) -> list[LogChunk]:
    """Chunks of one attempt's output in the order they were written, after `after_seq`."""
    params: dict[str, Any] = {"job_id": job_id, "attempt": attempt, "after": after_seq,
                              "limit": limit}
    only_stream = ""
    if stream is not None:
        only_stream = " AND stream = :stream"
        params["stream"] = stream.value
    rows = conn.legacy_execute(
        "SELECT stream, seq, data FROM job_logs WHERE job_id = :job_id AND attempt = :attempt "
        f"AND seq > :after{only_stream} ORDER BY seq LIMIT :limit", params).fetchall()
    return [LogChunk(attempt=attempt, stream=Stream(stream_), seq=seq, data=bytes(data))
            for stream_, seq, data in rows]


def waits_for(conn: Conn, job_id: int) -> list[Dependency]:
    """The jobs `job_id` depends on (a pruned one shows as lost)."""
    rows = conn.legacy_execute("""
        SELECT d.depends_on, d.condition, other.state
        FROM job_deps d LEFT JOIN jobs other ON other.id = d.depends_on
        WHERE d.job_id = :job_id ORDER BY d.depends_on""", {"job_id": job_id}).fetchall()
    return [Dependency(other, DepCondition(condition), JobState(state or JobState.LOST.value))
            for other, condition, state in rows]


def needed_by(conn: Conn, job_id: int) -> list[Dependency]:
    """The jobs that depend on `job_id`."""
    rows = conn.legacy_execute("""
        SELECT d.job_id, d.condition, j.state
        FROM job_deps d JOIN jobs j ON j.id = d.job_id
        WHERE d.depends_on = :job_id ORDER BY d.job_id""", {"job_id": job_id}).fetchall()
    return [Dependency(other, DepCondition(condition), JobState(state))
            for other, condition, state in rows]


def in_(conn: Conn, column: str, values: list[Any], name: str) -> tuple[str, dict[str, Any]]:
    """`column IN (values)`, one parameter: an array on PostgreSQL, a JSON list on SQLite."""
    if conn.is_postgres:
        return f"{column} = ANY(:{name})", {name: values}
    import json

    return (f"{column} IN (SELECT value FROM json_each(:{name}))",
            {name: json.dumps(values)})


class ReadsSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.reads): its statements,
    named and commented, in its driver's own parameter style, and any step that differs by
    necessity."""
