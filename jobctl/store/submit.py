"""Inserting jobs: one or a hundred thousand, in the states the caller decided.

Written against `store.direct.Conn` (the driver, no SQLAlchemy), so that `jobctl job submit`,
above all a bulk `--from-file`, costs little more than the driver's own import. Dependencies
(`--after`) are decided in `store.jobs`, which calls these.

A job spec becomes a row of `jobs` in one place, `job_columns` (every default is JobSpec's, from
jobctl.models; times from the database clock, read once per batch), whatever inserts it: a
submit, a workflow's tasks, a schedule's occurrences. How rows get in is the backend's
(jobctl.store.<backend>.submit, see SubmitSQL): COPY on PostgreSQL, executemany on SQLite.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from jobctl.models import JobSpec, JobState
from jobctl.store import notify
from jobctl.store.direct import Conn
from jobctl.store.reads import database_now

if TYPE_CHECKING:
    from typing import Unpack

# The columns a new job's row sets (job_columns' keys, in this order); the database fills in the
# others (id, attempt, losses, …) from their defaults. The backends' statements are written
# from this list.
ROW_COLUMNS = ("name", "queue", "priority", "state", "argv", "env", "cwd", "timeout_s",
               "max_attempts", "backoff_s", "delivery", "labels", "run_at", "created_at",
               "finished_at", "error", "unique_key", "workflow_id", "task", "max_lost", "input",
               "run_as", "schedule_id", "fire_time", "cancel_requested", "held", "gated",
               "limits", "cpus", "mem_bytes", "gpus", "requires", "on_success", "on_failure",
               "on_end",
               # job arrays and retrying by exit code
               "array_id", "array_index", "retry_on_exit", "no_retry_on_exit",
               # secrets: references only (jobctl.secret_env)
               "secret_env",
               # who submitted it (jobctl.store.identity): SubmitSQL.submitter()
               "submitted_by")
# Those that hold JSON, and times (bound through Conn.json_param and Conn.time_param).
JSON_COLUMNS = frozenset({"argv", "env", "labels", "limits", "requires", "retry_on_exit",
                          "no_retry_on_exit", "secret_env"})
TIME_COLUMNS = frozenset({"run_at", "created_at", "finished_at", "fire_time"})

# --- SQL both backends share -------------------------------------------------------------------
# SQL text that both backends run exactly as it is (no parameter, nothing dialect-specific) lives
# here, once, named for what it means; each backend's statement (jobctl.store.<backend>.submit)
# composes it at import. The VALUES, which hold the parameters, are each backend's own.

# ROW_COLUMNS as SQL: the column list of every insert of a new job.
ROW_COLUMN_LIST = ", ".join(ROW_COLUMNS)

# After an insert of a job with a unique key: nothing inserted when another job holds the key
# (the partial unique index on unique_key), the new id otherwise.
UNLESS_KEY_TAKEN = """ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
RETURNING id"""

# After an insert of a schedule's occurrence: nothing inserted when a job of that (schedule, fire
# time) exists (the partial unique index uq_jobs_schedule_fire_time: another scheduler fired
# it), the new id otherwise.
UNLESS_FIRED = """ON CONFLICT (schedule_id, fire_time) WHERE schedule_id IS NOT NULL DO NOTHING
RETURNING id"""


class Membership(TypedDict, total=False):
    """What jobs inserted together belong to: a workflow (`workflow_id`, and each job's task
    name in `tasks`) or an array (`array_id`, and each job's index in `array_indices`)."""

    workflow_id: int | None
    tasks: Sequence[str] | None
    array_id: int | None
    array_indices: Sequence[int] | None


def job_columns(specs: Sequence[JobSpec], now: datetime, states: Sequence[JobState],
                errors: Sequence[str | None] | None = None, submitted_by: str | None = None,
                **membership: Unpack[Membership]) -> dict[str, list[Any]]:
    """The rows of jobs submitted from `specs` at `now` (the database clock's time), column by
    column (ROW_COLUMNS: one Python value per job): each job in its `state` (with its `error`),
    due at its run_at, or `run_in_s` after `now`; finished at `now` when its state is final;
    `workflow_id` and `tasks` for a workflow's tasks, `array_id` and `array_indices` for an
    array's; `submitted_by` the backend's SubmitSQL.submitter() (None: the database sets it).
    This is the one place a spec becomes a row. Column by column because that is how
    a batch goes in (batch_columns): for 100,000 jobs, a list per column is a fifth of the cost
    of a dict per job."""
    count = len(specs)
    nothing: list[Any] = [None] * count
    final = {state: state.is_final for state in set(states)}
    tasks, indices = membership.get("tasks"), membership.get("array_indices")
    return {
        "name": [spec.name for spec in specs],
        "queue": [spec.queue for spec in specs],
        "priority": [spec.priority for spec in specs],
        # (`_value_`, the member's attribute: `.value` is a descriptor call, 0.1 s a 100,000)
        "state": [state._value_ for state in states],
        "argv": [spec.argv for spec in specs],
        "env": [spec.env for spec in specs],
        "cwd": [spec.cwd for spec in specs],
        "timeout_s": [spec.timeout_s for spec in specs],
        "max_attempts": [spec.retries + 1 for spec in specs],  # JobSpec.max_attempts
        "backoff_s": [spec.backoff_s for spec in specs],
        "delivery": [spec.delivery._value_ for spec in specs],
        "labels": [spec.labels for spec in specs],
        "run_at": [spec.run_at if spec.run_at is not None
                   else now + timedelta(seconds=spec.run_in_s) if spec.run_in_s else now
                   for spec in specs],
        "created_at": [now] * count,
        "finished_at": [now if final[state] else None for state in states],
        "error": list(errors) if errors is not None else nothing,
        "unique_key": nothing,
        "workflow_id": [membership.get("workflow_id")] * count,
        "task": list(tasks) if tasks is not None else nothing,
        "max_lost": [spec.max_lost for spec in specs],
        "input": [spec.input for spec in specs],
        "run_as": [spec.user for spec in specs],
        "schedule_id": nothing,
        "fire_time": nothing,
        "cancel_requested": [False] * count,
        "held": [spec.hold for spec in specs],
        "gated": [spec.gated for spec in specs],
        "limits": [spec.limits for spec in specs],
        "cpus": [spec.cpus for spec in specs],
        "mem_bytes": [spec.mem_bytes for spec in specs],
        "gpus": [spec.gpus for spec in specs],
        "requires": [spec.requires for spec in specs],
        "on_success": [spec.on_success for spec in specs],
        "on_failure": [spec.on_failure for spec in specs],
        "on_end": [spec.on_end for spec in specs],
        "array_id": [membership.get("array_id")] * count,
        "array_index": list(indices) if indices is not None else nothing,
        "retry_on_exit": [_codes(spec.retry_on_exit) for spec in specs],
        "no_retry_on_exit": [_codes(spec.no_retry_on_exit) for spec in specs],
        "secret_env": [spec.secret_env or None for spec in specs],
        "submitted_by": [submitted_by] * count,
    }


def _codes(codes: Sequence[int] | None) -> list[int] | None:
    """Exit codes as a JSON column holds them (a list), or None when not given."""
    return None if codes is None else list(codes)


def job_row(spec: JobSpec, now: datetime, state: JobState = JobState.QUEUED,
            error: str | None = None, *, submitted_by: str | None = None,
            unique_key: str | None = None,
            schedule_id: int | None = None, fire_time: datetime | None = None,
            cancel_requested: bool = False) -> dict[str, Any]:
    """One job's row (job_columns of one spec), with what only a single insert sets: a unique
    key, or the schedule and fire time of a schedule's occurrence."""
    row = {column: values[0]
           for column, values in job_columns([spec], now, [state], [error],
                                             submitted_by).items()}
    row.update(unique_key=unique_key, schedule_id=schedule_id, fire_time=fire_time,
               cancel_requested=cancel_requested)
    return row


def row_params(conn: Conn, row: dict[str, Any]) -> dict[str, Any]:
    """A `job_row` as the driver binds it (the parameters of the backend's INSERT_JOB, …)."""
    [params] = rows_params(conn, [row])
    return params


def rows_params(conn: Conn, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`row_params` of a batch (new dicts: the rows are left as they are). What rows share (the
    batch's times, an empty env, the same labels) is encoded once: for 100,000 jobs that is
    most of the encoding's cost."""
    memo: dict[tuple[str, Any], Any] = {}
    # (An argv is each job's own: memoising it would only cost.)
    encoders = [(column, conn.time_param, _same) for column in sorted(TIME_COLUMNS)] + [
        (column, conn.json_param, _json_key if column != "argv" else _none)
        for column in sorted(JSON_COLUMNS)]
    batch = [dict(row) for row in rows]
    for params in batch:
        for column, encode, key_of in encoders:
            value = params[column]
            key = key_of(value)
            if key is None:
                params[column] = encode(value)
                continue
            found = memo.get((column, key), memo)
            if found is memo:
                found = memo[(column, key)] = encode(value)
            params[column] = found
    return batch


def batch_columns(rows: Mapping[str, Sequence[Any]],
                  encoders: Sequence[Callable[[Any], Any] | None],
                  null: Any) -> tuple[list[str], list[Iterable[Any]]]:
    """`job_columns` as a backend's bulk insert takes them: the ROW_COLUMNS some row sets (a
    column that is None in every row is left out: it gets its default, NULL; a column with
    another default is never None), and each one's values, encoded by its encoder (`encoders`,
    in ROW_COLUMNS order; None: as they are), None as `null`. A value the whole batch shares
    (its queue, its times, an empty env …: most columns of a bulk submit) is encoded once."""
    columns: list[str] = []
    cells: list[Iterable[Any]] = []
    for column, encode in zip(ROW_COLUMNS, encoders, strict=True):
        values = rows[column]
        first = values[0]
        if values.count(first) == len(values):
            if first is None:
                continue
            cells.append(itertools.repeat(first if encode is None else encode(first),
                                          len(values)))
        elif encode is None and null is None:
            cells.append(values)
        else:
            cells.append([null if value is None else value if encode is None else encode(value)
                          for value in values])
        columns.append(column)
    return columns, cells


def _same(value: Any) -> Any:
    """A time is its own memo key."""
    return value


def _none(value: Any) -> None:
    """No memo key: encoded each time."""
    return None


def _json_key(value: Any) -> Any:
    """A hashable stand-in for a JSON column's value when it is a dict of strings (an env, the
    labels), or None (not memoised). Strings only: True == 1 would make {"a": True} and
    {"a": 1} one key, though their JSON differs."""
    if type(value) is dict:
        if not value:  # most jobs' env, labels, limits and requires: one key, at once
            return _EMPTY
        if all(type(item) is str for item in value.values()):
            return frozenset(value.items())
    return None


_EMPTY: frozenset[tuple[str, str]] = frozenset()


def insert_unique(conn: Conn, spec: JobSpec, state: JobState, error: str | None) -> int | None:
    """One job with a unique key; None, and nothing inserted, when a job holds the key already."""
    sql = conn.backend.sql_submit  # first: its import must not come between now and the insert
    row = job_row(spec, database_now(conn), state, error, submitted_by=sql.submitter(),
                  unique_key=spec.unique_key)
    inserted = conn.execute(sql.INSERT_UNIQUE,
                            row_params(conn, row)).fetchone()
    if inserted is None:
        return None
    if state is JobState.QUEUED:
        notify.job_submitted(conn, spec.queue)
    return int(inserted[0])


def insert_many(conn: Conn, specs: Sequence[JobSpec], *, states: Sequence[JobState],
                errors: Sequence[str | None] | None = None,
                **membership: Unpack[Membership]) -> list[int]:
    """Insert jobs in the states given (dependencies are the caller's), one notification per
    queue that got queued jobs; ids in the order given. Unique keys are not set here."""
    if not specs:
        return []
    # The backend's module first: importing it (a command's first submit) must not come
    # between the time the jobs are created at and their insert.
    sql = conn.backend.sql_submit
    rows = job_columns(specs, database_now(conn), states, errors, sql.submitter(),
                       **membership)
    ids = sql.insert_rows(conn, rows)
    queued = {spec.queue for spec, st in zip(specs, states, strict=True) if st is JobState.QUEUED}
    for queue in sorted(queued):
        notify.job_submitted(conn, queue)
    return ids


def insert_occurrences(conn: Conn, rows: Sequence[dict[str, Any]]) -> list[int | None]:
    """Insert `job_row`s of a schedule's occurrences (each with its schedule_id and fire_time);
    one that a job holds its (schedule, fire time) for already (another scheduler fired it) is
    left out. The new ids, in the order given; None for those left out."""
    if not rows:
        return []
    return conn.backend.sql_submit.insert_occurrences(conn, rows)


class SubmitSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.submit): its statements,
    named and commented, in its driver's own parameter style, and the steps that differ by
    necessity."""

    # One job with a unique key (row_params): RETURNING id, or no row when the key is taken.
    INSERT_UNIQUE: str
    # One occurrence's job (row_params): RETURNING id, or no row when its (schedule_id,
    # fire_time) is taken.
    INSERT_OCCURRENCE: str

    def submitter(self) -> str | None:
        """The `submitted_by` this process gives the rows it inserts (jobs, schedules,
        workflows); None: the database sets it itself."""
        ...

    def insert_rows(self, conn: Conn, rows: Mapping[str, Sequence[Any]]) -> list[int]:
        """Insert the rows of `job_columns` (no unique keys); their new ids, in order."""
        ...

    def insert_occurrences(self, conn: Conn,
                           rows: Sequence[dict[str, Any]]) -> list[int | None]:
        """INSERT_OCCURRENCE for each row; the ids, None where it inserted nothing."""
        ...
