"""Reading jobs: one by id or a filtered list (newest first), a job's attempts, its output and
its dependencies; and the database clock.

Written against `store.direct.Conn` (the driver, no SQLAlchemy): `jobctl job list` and
`job status` are typed all day. The statements are the backend's (jobctl.store.<backend>.reads,
see ReadsSQL); a row of `jobs` becomes a `Job` through JOB_COLUMNS and `job_from_row` alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from jobctl.models import (
    HOOK_OUTPUT_MAX_BYTES,
    Attempt,
    Delivery,
    DepCondition,
    Dependency,
    Job,
    JobState,
    LogChunk,
    Stream,
    status_document,
)
from jobctl.store.direct import Conn

# A `Job`'s columns, by its field names: every statement that returns jobs selects
# SELECT_JOB_COLUMNS (in this order) and `job_from_row` reads it.
JOB_COLUMNS: dict[str, str] = {
    "id": "id", "name": "name", "queue": "queue", "priority": "priority", "state": "state",
    "argv": "argv", "env": "env", "cwd": "cwd", "timeout_s": "timeout_s",
    "max_attempts": "max_attempts", "backoff_s": "backoff_s", "delivery": "delivery",
    "attempt": "attempt", "run_at": "run_at", "created_at": "created_at",
    "started_at": "started_at", "finished_at": "finished_at", "worker_id": "worker_id",
    "lease_until": "lease_until", "exit_code": "exit_code", "signal": "signal",
    "error": "error", "cancel_requested": "cancel_requested", "unique_key": "unique_key",
    "labels": "labels", "workflow_id": "workflow_id", "task": "task", "max_lost": "max_lost",
    "losses": "losses", "user": "run_as",
    # the size of its standard input, not the bytes: a listing never needs them
    "input_bytes": "length(input)",
    "schedule_id": "schedule_id",
    # the schedule's name, NULL once it is removed
    "schedule": "(SELECT s.name FROM schedules s WHERE s.id = jobs.schedule_id)",
    "fire_time": "fire_time",
    "held": "held", "limits": "limits", "cpus": "cpus", "mem_bytes": "mem_bytes",
    "gpus": "gpus", "requires": "requires", "gpu_indices": "gpu_indices",
    "on_success": "on_success", "on_failure": "on_failure", "on_end": "on_end",
    "hook_of": "hook_of",
    "array_id": "array_id", "array_index": "array_index",
    "retry_on_exit": "retry_on_exit", "no_retry_on_exit": "no_retry_on_exit",
    "secret_env": "secret_env",
    "submitted_by": "submitted_by",
}
SELECT_JOB_COLUMNS = ", ".join(JOB_COLUMNS.values())
_JOB_FIELDS = tuple(JOB_COLUMNS)


def select_job_columns(instead: Mapping[str, str]) -> str:
    """SELECT_JOB_COLUMNS, in the same order, with some fields read by another expression
    (PostgreSQL: the private ones through the functions that hide another's,
    jobctl.store.postgres.roles.PRIVATE_JOB_READS). A private field that reads NULL where its
    column cannot (`env`) means the reader may not see it: `Job.private_hidden`."""
    return ", ".join(instead.get(field, column) for field, column in JOB_COLUMNS.items())


def job_from_row(conn: Conn, row: Sequence[Any]) -> Job:
    """A Job from a row of SELECT_JOB_COLUMNS."""
    values = dict(zip(_JOB_FIELDS, row, strict=True))
    return Job(**{
        **values,
        "private_hidden": values["env"] is None,  # NOT NULL: NULL is a hidden one
        "state": JobState(values["state"]),
        "argv": list(conn.json(values["argv"])),
        "env": dict(conn.json(values["env"]) or {}),
        "delivery": Delivery(values["delivery"]),
        "run_at": conn.time_not_null(values["run_at"]),
        "created_at": conn.time_not_null(values["created_at"]),
        "started_at": conn.time(values["started_at"]),
        "finished_at": conn.time(values["finished_at"]),
        "lease_until": conn.time(values["lease_until"]),
        "cancel_requested": bool(values["cancel_requested"]),
        "labels": dict(conn.json(values["labels"]) or {}),
        "fire_time": conn.time(values["fire_time"]),
        "held": bool(values["held"]),
        "limits": dict(conn.json(values["limits"]) or {}),
        "requires": dict(conn.json(values["requires"]) or {}),
        "retry_on_exit": exit_codes(conn, values["retry_on_exit"]),
        "no_retry_on_exit": exit_codes(conn, values["no_retry_on_exit"]),
        "secret_env": dict(conn.json(values["secret_env"]) or {}),
    })


def exit_codes(conn: Conn, value: Any) -> tuple[int, ...] | None:
    """A retry_on_exit or no_retry_on_exit column's value: the codes, or None when not set."""
    if value is None:
        return None
    codes = conn.json(value)
    return None if codes is None else tuple(int(code) for code in codes)


def database_now(conn: Conn) -> datetime:
    """The database clock's time now (aware, UTC)."""
    return conn.time_not_null(conn.scalar(conn.backend.sql_reads.NOW))


def get(conn: Conn, job_id: int) -> Job | None:
    row = conn.execute(conn.backend.sql_reads.JOB, {"id": job_id}).fetchone()
    return job_from_row(conn, row) if row is not None else None


def get_many(conn: Conn, job_ids: Iterable[int]) -> dict[int, Job]:
    rows = conn.execute(conn.backend.sql_reads.JOBS_BY_ID,
                        {"ids": conn.ids_param(list(job_ids))}).fetchall()
    jobs = [job_from_row(conn, row) for row in rows]
    return {job.id: job for job in jobs}


def of_workflows(conn: Conn, workflow_ids: Iterable[int]) -> list[Job]:
    """The jobs (tasks) of these workflows, by id."""
    rows = conn.execute(conn.backend.sql_reads.JOBS_OF_WORKFLOWS,
                        {"ids": conn.ids_param(list(workflow_ids))}).fetchall()
    return [job_from_row(conn, row) for row in rows]


def list_jobs(conn: Conn, *, states: Sequence[JobState] = (), queues: Sequence[str] = (),
              name: str | None = None, labels: dict[str, str] | None = None,
              schedule: str | None = None, submitted_by: str | None = None,
              mine: bool = False, limit: int | None = 50) -> list[Job]:
    """Newest first (the filters are models.JobFilters). `name` matches exactly, or as a glob
    when it holds * or ?; `schedule` names the schedule that made the jobs; every label given
    must match; `submitted_by` exactly, `mine` the current identity (the backend's
    ReadsSQL.LIST_JOBS: the session's role on PostgreSQL; on SQLite, whose `:me` is this
    process's Unix user); at most `limit` (None: all)."""
    name_like = None
    if name is not None and ("*" in name or "?" in name):
        escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        name, name_like = None, escaped.replace("*", "%").replace("?", "_")
    params = {
        "states": conn.ids_param([state.value for state in states]) if states else None,
        "queues": conn.ids_param(list(queues)) if queues else None,
        "name": name, "name_like": name_like, "schedule": schedule,
        "submitted_by": submitted_by, "mine": mine,
        "me": conn.backend.sql_submit.submitter() if mine else None,
        "labels": conn.json_param(dict(labels)) if labels else None,
        "limit": limit or None,
    }
    rows = conn.execute(conn.backend.sql_reads.LIST_JOBS, params).fetchall()
    return [job_from_row(conn, row) for row in rows]


def list_attempts(conn: Conn, job_id: int) -> list[Attempt]:
    """Ended attempts from `attempts`, and the running one (if any) from the job's own row."""
    sql: ReadsSQL = conn.backend.sql_reads
    rows = conn.execute(sql.ATTEMPTS, {"job_id": job_id}).fetchall()
    found = [
        Attempt(job_id=job_id, attempt=attempt, worker_id=worker_id, worker_name=worker_name,
                started_at=conn.time_not_null(started_at), finished_at=conn.time(finished_at),
                outcome=outcome, exit_code=exit_code, signal=signal, error=error,
                cpu_user_s=cpu_user_s, cpu_system_s=cpu_system_s, max_rss_bytes=max_rss_bytes,
                oom_killed=None if oom_killed is None else bool(oom_killed))
        for (attempt, worker_id, worker_name, started_at, finished_at, outcome, exit_code,
             signal, error, cpu_user_s, cpu_system_s, max_rss_bytes, oom_killed) in rows
    ]
    running = conn.execute(sql.RUNNING_ATTEMPT, {"job_id": job_id}).fetchone()
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
    rows = conn.execute(conn.backend.sql_reads.LOGS, {
        "job_id": job_id, "attempt": attempt, "after": after_seq, "limit": limit,
        "stream": stream.value if stream is not None else None}).fetchall()
    return [LogChunk(attempt=attempt, stream=Stream(stream_), seq=seq, data=bytes(data))
            for stream_, seq, data in rows]


def hook_input(conn: Conn, job_id: int) -> tuple[bytes, bytes]:
    """What a hook of `job_id` is given: the job's `job status -o json` document (its standard
    input), and the output of the job's latest attempt, stdout and stderr as they interleaved,
    at most its last HOOK_OUTPUT_MAX_BYTES ($JOBCTL_HOOK_OUTPUT). Both empty when the job is
    gone (retention deleted it)."""
    import json

    job = get(conn, job_id)
    if job is None:
        return b"", b""
    document = status_document(job, list_attempts(conn, job_id), waits_for(conn, job_id),
                               needed_by(conn, job_id))
    output = bytearray()
    after = -1
    while chunks := read_logs(conn, job_id, job.attempt, after_seq=after):
        for chunk in chunks:
            output += chunk.data
        after = chunks[-1].seq
        del output[:max(0, len(output) - HOOK_OUTPUT_MAX_BYTES)]
    return (json.dumps(document, ensure_ascii=False).encode() + b"\n", bytes(output))


def waits_for(conn: Conn, job_id: int) -> list[Dependency]:
    """The jobs `job_id` depends on (a pruned one shows as lost)."""
    rows = conn.execute(conn.backend.sql_reads.WAITS_FOR, {"job_id": job_id}).fetchall()
    return [Dependency(other, DepCondition(condition), JobState(state or JobState.LOST.value))
            for other, condition, state in rows]


def needed_by(conn: Conn, job_id: int) -> list[Dependency]:
    """The jobs that depend on `job_id`."""
    rows = conn.execute(conn.backend.sql_reads.NEEDED_BY, {"job_id": job_id}).fetchall()
    return [Dependency(other, DepCondition(condition), JobState(state))
            for other, condition, state in rows]


class ReadsSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.reads): its statements,
    named and commented, in its driver's own parameter style."""

    NOW: str  # one row, one column: the database clock's time
    JOB: str  # :id → the job's SELECT_JOB_COLUMNS
    JOBS_BY_ID: str  # :ids (ids_param) → jobs
    JOBS_OF_WORKFLOWS: str  # :ids (ids_param, workflow ids) → their jobs, by id
    # :states, :queues (ids_param or NULL), :name, :name_like, :schedule, :labels (JSON or
    # NULL), :limit (NULL: all) → jobs, newest first
    LIST_JOBS: str
    ATTEMPTS: str  # :job_id → its ended attempts
    RUNNING_ATTEMPT: str  # :job_id → its running attempt, from the job's row
    LOGS: str  # :job_id, :attempt, :after, :stream (or NULL), :limit → (stream, seq, data)
    WAITS_FOR: str  # :job_id → (depends_on, condition, state)
    NEEDED_BY: str  # :job_id → (job_id, condition, state)
