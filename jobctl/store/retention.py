"""Retention: delete finished jobs (with their attempts and output) older than a cutoff, and the
sizes of the tables, for `jobctl db prune` and `jobctl db status`.

Pruning goes in batches of short transactions (a few thousand rows each), so it never holds a
lock for long: workers keep claiming and completing meanwhile. A job is kept while a job that has
not finished depends on it, since deleting it would leave that dependent waiting on nothing.
Times come from the database clock. Written against `store.direct.Conn` (the driver, no
SQLAlchemy): `db prune` and the scheduler's retention run on a `DirectDatabase`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from jobctl.models import FINAL_STATES, JobState, sql_states
from jobctl.store.direct import Conn, DirectDatabase
from jobctl.store.reads import in_

BATCH = 1000
DEFAULT_STATES = tuple(state for state in JobState if state in FINAL_STATES)
# jobctl's tables (store.schema's metadata, which a test holds this to), for `db status`.
TABLES = ("attempts", "job_deps", "job_logs", "jobs", "schedules", "workers", "workflows")

_FINAL_SQL = sql_states(FINAL_STATES)

# Old enough: in one of the states asked for (:states, see `reads.in_`), and finished before
# :cutoff. A job that ended without a finish time (none should) counts from its creation.
_OLD_ENOUGH = "{states} AND coalesce(jobs.finished_at, jobs.created_at) < :cutoff"
# Whether a job that has not reached a final state depends on the job: such a job is kept,
# since deleting it would leave that dependent waiting on nothing.
_NEEDED = f"""EXISTS (
    SELECT 1 FROM job_deps JOIN jobs AS dependent ON dependent.id = job_deps.job_id
    WHERE job_deps.depends_on = jobs.id AND dependent.state NOT IN ({_FINAL_SQL}))"""

COUNT_KEPT = f"SELECT count(*) FROM jobs WHERE {_OLD_ENOUGH} AND {_NEEDED}"

# The next batch by id (keyset: each batch starts after the last one's highest id).
NEXT_BATCH = f"""
SELECT id FROM jobs
WHERE id > :after_id AND {_OLD_ENOUGH} AND NOT {_NEEDED}{{logs_only}}
ORDER BY id LIMIT :batch{{lock}}"""
# With --logs-only: only jobs that still have output.
_HAS_LOGS = " AND EXISTS (SELECT 1 FROM job_logs WHERE job_logs.job_id = jobs.id)"
# PostgreSQL, when deleting: lock what we delete, so that a submit that makes one of them a
# dependency (and locks it to check it exists) either waits for us or is seen by the check
# above; SKIP LOCKED leaves rows someone is busy with for the next run. SQLite's write
# transaction (BEGIN IMMEDIATE) holds the whole database already.
_PG_LOCK = " FOR UPDATE OF jobs SKIP LOCKED"

# What a batch holds, in one round trip: its output (chunks and bytes) and its attempts.
COUNT_BATCH = """
SELECT (SELECT count(*) FROM job_logs WHERE {logs}),
       (SELECT coalesce(sum(length(data)), 0) FROM job_logs WHERE {logs}),
       (SELECT count(*) FROM attempts WHERE {attempts})"""

# Children first: the foreign keys cascade too, but explicit deletes do not depend on SQLite's
# foreign_keys pragma being on for the connection. The jobs themselves only while final.
DELETE_LOGS = "DELETE FROM job_logs WHERE {ids}"
DELETE_ATTEMPTS = "DELETE FROM attempts WHERE {ids}"
DELETE_DEPS = "DELETE FROM job_deps WHERE {ids}"
DELETE_JOBS = f"DELETE FROM jobs WHERE {{ids}} AND state IN ({_FINAL_SQL})"


@dataclass
class Pruned:
    """What was deleted (or, with dry_run, would be)."""

    jobs: int = 0
    attempts: int = 0
    log_chunks: int = 0
    log_bytes: int = 0
    kept_for_dependents: int = 0  # old enough, but a job that has not finished depends on it
    batches: int = 0
    dry_run: bool = False
    logs_only: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "attempts": self.attempts, "log_chunks": self.log_chunks,
                "log_bytes": self.log_bytes, "kept_for_dependents": self.kept_for_dependents,
                "dry_run": self.dry_run, "logs_only": self.logs_only}


def check_states(states: Sequence[JobState]) -> None:
    unfinished = [s.value for s in states if not s.is_final]
    if unfinished:
        raise ValueError(f"only finished jobs can be pruned, not {', '.join(unfinished)}")


def prune(database: DirectDatabase, older_than_s: float,
          states: Sequence[JobState] = DEFAULT_STATES, logs_only: bool = False,
          dry_run: bool = False, batch: int = BATCH) -> Pruned:
    """Delete jobs in `states` that finished more than `older_than_s` ago, with their attempts
    and output (or, with `logs_only`, only their output). Jobs that an unfinished job depends on
    are kept. The scheduler may call this periodically."""
    check_states(states)
    result = Pruned(dry_run=dry_run, logs_only=logs_only)
    values = [state.value for state in states]
    with database.read() as conn:
        now = conn.time_not_null(conn.legacy_scalar(f"SELECT {conn.now}"))
        # One cutoff for every batch, from the database clock.
        cutoff = conn.time_param(now - timedelta(seconds=older_than_s))
        where, params = in_(conn, "jobs.state", values, "states")
        result.kept_for_dependents = int(conn.legacy_scalar(
            COUNT_KEPT.format(states=where), {**params, "cutoff": cutoff}))
    after_id = 0
    while True:
        started = time.monotonic()
        with database.read() if dry_run else database.write() as conn:
            ids = _next_batch(conn, values, cutoff, after_id, batch, logs_only, dry_run)
            if not ids:
                break
            result.batches += 1
            after_id = ids[-1]
            _count_or_delete(conn, ids, logs_only, dry_run, result)
        if len(ids) < batch:
            break
        if not dry_run and database.backend.title != "PostgreSQL":  # TRANSITIONAL
            # SQLite has one writer at a time, and a writer that waits polls for the lock every
            # 100 ms at most: were the next batch to take it straight back, workers and clients
            # could wait through many batches. Pausing as long as a batch took lets them in.
            time.sleep(min(time.monotonic() - started, 1.0))
    return result


def _next_batch(conn: Conn, states: list[str], cutoff: Any, after_id: int, batch: int,
                logs_only: bool, dry_run: bool) -> list[int]:
    where, params = in_(conn, "jobs.state", states, "states")
    sql = NEXT_BATCH.format(states=where, logs_only=_HAS_LOGS if logs_only else "",
                            lock=_PG_LOCK if conn.is_postgres and not dry_run else "")
    rows = conn.legacy_execute(sql, {**params, "cutoff": cutoff, "after_id": after_id,
                              "batch": batch}).fetchall()
    return [int(row[0]) for row in rows]


def _count_or_delete(conn: Conn, ids: list[int], logs_only: bool, dry_run: bool,
                     result: Pruned) -> None:
    by_job, params = in_(conn, "job_id", ids, "ids")
    chunks, size, attempt_count = conn.legacy_execute(
        COUNT_BATCH.format(logs=by_job, attempts=by_job), params).fetchone()
    result.log_chunks += int(chunks)
    result.log_bytes += int(size)
    if logs_only:
        if not dry_run:
            conn.legacy_execute(DELETE_LOGS.format(ids=by_job), params)
        return
    result.attempts += int(attempt_count)
    if dry_run:
        result.jobs += len(ids)
        return
    conn.legacy_execute(DELETE_LOGS.format(ids=by_job), params)
    conn.legacy_execute(DELETE_ATTEMPTS.format(ids=by_job), params)
    conn.legacy_execute(DELETE_DEPS.format(ids=by_job), params)
    by_id, params = in_(conn, "id", ids, "ids")
    result.jobs += conn.legacy_execute(DELETE_JOBS.format(ids=by_id), params).rowcount


# --- table sizes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSize:
    table: str
    rows: int
    bytes: int | None  # None where the database cannot tell (SQLite without dbstat)

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "rows": self.rows, "bytes": self.bytes}


# Row counts of every table in one statement; on PostgreSQL with each one's on-disk size (its
# indexes and TOAST included). The names are TABLES, never input.
_COUNT_ROWS = " UNION ALL ".join(f"SELECT '{name}', count(*), NULL FROM {name}"
                                 for name in TABLES)
_PG_COUNT_ROWS_AND_SIZES = " UNION ALL ".join(
    f"SELECT '{name}', count(*), pg_total_relation_size('{name}') FROM {name}" for name in TABLES)
# SQLite: bytes per table, its indexes included, from the dbstat virtual table, which not every
# build of SQLite has ("no such table: dbstat" then, and the sizes are unknown).
SQLITE_SIZES = """
SELECT m.tbl_name, SUM(s.pgsize) FROM dbstat AS s
JOIN sqlite_master AS m ON m.name = s.name GROUP BY m.tbl_name"""


def table_sizes(database: DirectDatabase) -> list[TableSize]:
    """Row counts and on-disk sizes (with indexes and, on PostgreSQL, TOAST) of jobctl's tables."""
    with database.read() as conn:
        found = conn.legacy_execute(_PG_COUNT_ROWS_AND_SIZES if conn.is_postgres
                             else _COUNT_ROWS).fetchall()
        rows = {name: int(count) for name, count, _ in found}
        sizes = ({name: size for name, _, size in found} if conn.is_postgres
                 else _sqlite_sizes(conn))
    return [TableSize(name, rows[name], None if (size := sizes.get(name)) is None else int(size))
            for name in TABLES]


def _sqlite_sizes(conn: Conn) -> dict[str, int | None]:
    import sqlite3

    try:
        found = conn.legacy_execute(SQLITE_SIZES).fetchall()
    except sqlite3.OperationalError as error:  # a failed prepare leaves the transaction as it was
        if "dbstat" not in str(error):
            raise
        return {}
    return {name: size for name, size in found}


class RetentionSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.retention): its statements,
    named and commented, in its driver's own parameter style, and any step that differs by
    necessity."""
