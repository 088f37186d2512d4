"""Job arrays (`job submit --array`): one row of `arrays`, and its tasks, jobs with its
`array_id` and their `array_index`, inserted in one bulk insert (store.submit.insert_many).
Also what a JUnit report (`wait --junit`) reads of a job's output: the tail of each stream.

A throttle (`%N`) is no mechanism of its own: each task holds the limit key `array:ID` = N
(models.array_limit_key), which the gated claim enforces like any `--limit` (store.capacity).

Every function takes a `store.direct.Conn`; the caller (jobctl.client) owns the transaction.
The statements are the backend's (`ArraysSQL`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from jobctl.models import (
    FAILING_STATES,
    ArrayStatus,
    Job,
    JobSpec,
    JobState,
    array_limit_key,
    sql_states,
)
from jobctl.store import deps, notify
from jobctl.store.direct import Conn
from jobctl.store.jobs import submit_many
from jobctl.store.reads import job_from_row

# The placeholder in a task's argv that becomes its index.
INDEX_PLACEHOLDER = "{index}"


def create(conn: Conn, template: JobSpec, indices: Sequence[int],
           throttle: int | None) -> tuple[int, list[int]]:
    """An array of one task per index, each `template` with `{index}` in its argv replaced by
    its index (and, with a throttle, the limit key `array:ID`); (array id, task ids by index
    order given). The template was validated by the caller; its dependencies apply to every
    task."""
    sql: ArraysSQL = conn.backend.sql_arrays
    array_id = int(conn.scalar(sql.INSERT_ARRAY, {"size": len(indices), "throttle": throttle}))
    if throttle is not None:
        template = dataclasses.replace(
            template, limits={**template.limits, array_limit_key(array_id): throttle})
    argv = template.argv
    if any(INDEX_PLACEHOLDER in arg for arg in argv):
        argvs = [[arg.replace(INDEX_PLACEHOLDER, str(index)) for arg in argv]
                 for index in indices]
    else:
        argvs = [argv] * len(indices)
    specs = template.for_commands(argvs)
    ids = submit_many(conn, specs, array_id=array_id, array_indices=indices)
    return array_id, ids


def status(conn: Conn, array_id: int) -> ArrayStatus | None:
    """The array and its tasks' counts by state, with the lowest-index task that ended without
    succeeding; None when there is no such array."""
    sql: ArraysSQL = conn.backend.sql_arrays
    row = conn.execute(sql.ARRAY, {"id": array_id}).fetchone()
    if row is None:
        return None
    counts = {str(state): int(count)
              for state, count in conn.execute(sql.STATE_COUNTS, {"id": array_id}).fetchall()}
    failed = conn.execute(sql.FIRST_FAILED, {"id": array_id}).fetchone()
    first = None
    if failed is not None:
        index, job_id, _state, exit_code = failed
        # jobctl.client.job_exit_code: its own code when it ran to one, else 125
        first = (int(index), int(job_id), int(exit_code) if exit_code is not None else 125)
    _, size, throttle, created_at = row
    return ArrayStatus(id=array_id, size=int(size), throttle=throttle,
                       created_at=conn.time_not_null(created_at), counts=counts,
                       first_failed=first)


def tasks(conn: Conn, array_id: int, states: Sequence[JobState] = (),
          limit: int | None = None) -> list[Job]:
    """The array's tasks (in these states, if given), by index."""
    rows = conn.execute(conn.backend.sql_arrays.TASKS, {
        "id": array_id, "limit": limit,
        "states": conn.ids_param([state.value for state in states]) if states else None,
    }).fetchall()
    return [job_from_row(conn, row) for row in rows]


def task_ids(conn: Conn, array_id: int) -> list[int]:
    """The ids of the array's tasks, by index (`--after array:ID`)."""
    return [int(row[0]) for row in
            conn.execute(conn.backend.sql_arrays.TASK_IDS, {"id": array_id}).fetchall()]


def check_may_change(conn: Conn, array_id: int) -> None:
    """PermissionDenied when this role may not change the array's tasks (PostgreSQL's roles:
    another's; an array's tasks are one submitter's, inserted together). Its first task is
    locked for the caller's transaction; an array without tasks passes."""
    from jobctl.store.jobs import lock_job

    found = task_ids(conn, array_id)
    if found:
        lock_job(conn, found[0])


def retry(conn: Conn, array_id: int, states: Sequence[JobState], retries: int = 0) -> list[int]:
    """Queue the array's tasks in `states` (final ones) again, each as a new attempt with
    `retries` more retries; their ids."""
    rows = conn.execute(conn.backend.sql_arrays.RETRY_TASKS, {
        "id": array_id, "retries": retries,
        "states": conn.ids_param([state.value for state in states])}).fetchall()
    for queue in sorted({str(queue) for _, queue in rows}):
        notify.job_submitted(conn, queue)
    return sorted(int(job_id) for job_id, _ in rows)


def cancel(conn: Conn, array_id: int) -> tuple[list[int], list[int]]:
    """Cancel the array's unfinished tasks: (ids cancelled before they started, ids running,
    which their workers kill). What waits on them (`--after`) ends too, as for `job cancel`."""
    sql: ArraysSQL = conn.backend.sql_arrays
    cancelled = sorted(int(row[0]) for row in
                       conn.execute(sql.CANCEL_NOT_STARTED_TASKS, {"id": array_id}).fetchall())
    running = sorted(int(row[0]) for row in
                     conn.execute(sql.REQUEST_CANCEL_TASKS, {"id": array_id}).fetchall())
    if cancelled:
        notify.jobs_done(conn, cancelled)
        deps.settle(conn, {job_id: JobState.CANCELLED.value for job_id in cancelled})
    for job_id in running:
        notify.cancel_requested(conn, job_id)
    return cancelled, running


def output_tail(conn: Conn, job_id: int, attempt: int, stream: str,
                max_bytes: int) -> tuple[bytes, bool]:
    """The last `max_bytes` of one stream of one attempt's output, and whether more came before
    it. Read newest chunk first, a page at a time, so a long log costs only its tail."""
    sql: ArraysSQL = conn.backend.sql_arrays
    parts: list[bytes] = []
    size = 0
    before = 2**31 - 1
    while size < max_bytes:
        rows = conn.execute(sql.TAIL_CHUNKS, {"job_id": job_id, "attempt": attempt,
                                              "stream": stream, "before": before,
                                              "limit": TAIL_PAGE}).fetchall()
        for seq, data in rows:
            parts.append(bytes(data))
            size += len(data)
            before = int(seq)
            if size >= max_bytes:
                break
        if len(rows) < TAIL_PAGE:
            break
    data = b"".join(reversed(parts))
    return data[-max_bytes:], len(data) > max_bytes


# Chunks read per statement by output_tail.
TAIL_PAGE = 16

# --- SQL both backends share -------------------------------------------------------------------

# A task `job wait --array` reports as failed: it ended without succeeding.
FAILING = f"state IN ({sql_states(FAILING_STATES)})"


class ArraysSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.arrays): its statements,
    named and commented, in its driver's own parameter style."""

    INSERT_ARRAY: str  # :size, :throttle → the new array's id
    ARRAY: str  # :id → (id, size, throttle, created_at)
    STATE_COUNTS: str  # :id → (state, count) of its tasks
    FIRST_FAILED: str  # :id → (array_index, id, state, exit_code) of the lowest failing task
    TASKS: str  # :id, :states (ids_param or NULL), :limit (NULL: all) → jobs, by index
    TASK_IDS: str  # :id → ids of its tasks, by index
    RETRY_TASKS: str  # :id, :states, :retries → (id, queue) of the tasks queued again
    CANCEL_NOT_STARTED_TASKS: str  # :id → ids of the tasks cancelled before they started
    REQUEST_CANCEL_TASKS: str  # :id → ids of its running tasks now flagged for their workers
    # :job_id, :attempt, :stream, :before (a seq), :limit → (seq, data), newest first
    TAIL_CHUNKS: str
