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

from jobctl.errors import PermissionDenied
from jobctl.models import FINAL_STATES, JobState, sql_states
from jobctl.record import record
from jobctl.store.direct import Conn, DirectDatabase
from jobctl.store.reads import database_now

BATCH = 1000
DEFAULT_STATES = tuple(state for state in JobState if state in FINAL_STATES)
# jobctl's tables (store.schema's metadata, which a test holds this to), for `db status`.
TABLES = ("arrays", "attempts", "audit", "checks", "job_deps", "job_logs", "jobs", "queues",
          "schedules", "workers", "workflows")

# --- SQL both backends share -------------------------------------------------------------------
# SQL text that both backends run exactly as it is (no parameter, nothing dialect-specific) lives
# here, once, named for what it means; each backend's statement (jobctl.store.<backend>.retention)
# composes it at import. Whatever holds a parameter stays in the backend's own statement.

# A job some job that has not reached a final state depends on: such a job is kept, since
# deleting it would leave that dependent waiting on nothing.
NEEDED_BY_UNFINISHED = f"""EXISTS (
    SELECT 1 FROM job_deps JOIN jobs AS dependent ON dependent.id = job_deps.job_id
    WHERE job_deps.depends_on = jobs.id
      AND dependent.state NOT IN ({sql_states(FINAL_STATES)}))"""

# When a job's age counts from: its finish, or its creation for a job that ended without a
# finish time (none should).
AGE_FROM = "coalesce(jobs.finished_at, jobs.created_at)"

# A job that still has output.
HAS_OUTPUT = "EXISTS (SELECT 1 FROM job_logs WHERE job_logs.job_id = jobs.id)"


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
          dry_run: bool = False, batch: int = BATCH, audit_empty: bool = True) -> Pruned:
    """Delete jobs in `states` that finished more than `older_than_s` ago, with their attempts
    and output (or, with `logs_only`, only their output). Jobs that an unfinished job depends on
    are kept. The scheduler may call this periodically.

    A run that deletes records one row in the audit trail at its end, with its counts
    (jobctl.store.audit.note_prune); one that deletes nothing too, unless `audit_empty` is
    false (a scheduler's hourly retention that found nothing leaves no trace). A dry run never
    does. The trail itself is never pruned."""
    check_states(states)
    result = Pruned(dry_run=dry_run, logs_only=logs_only)
    with database.read() as conn:
        sql: RetentionSQL = conn.backend.sql_retention
        if not dry_run and not conn.scalar(sql.MAY_DELETE):
            # Refused whether or not there is anything old enough today.
            raise PermissionDenied("pruning deletes jobs, which only jobctl_admin may (a "
                                   "--dry-run counts them)")
        # One cutoff for every batch, from the database clock.
        cutoff = conn.time_param(database_now(conn) - timedelta(seconds=older_than_s))
        old_enough = {"states": conn.ids_param([state.value for state in states]),
                      "cutoff": cutoff}
        result.kept_for_dependents = int(conn.scalar(sql.COUNT_KEPT, old_enough))
    after_id = 0
    while True:
        started = time.monotonic()
        with database.read() if dry_run else database.write() as conn:
            rows = conn.execute(sql.NEXT_BATCH if dry_run else sql.NEXT_BATCH_TO_DELETE, {
                **old_enough, "after_id": after_id, "batch": batch,
                "logs_only": logs_only}).fetchall()
            ids = [int(row[0]) for row in rows]
            if not ids:
                break
            result.batches += 1
            after_id = ids[-1]
            _count_or_delete(conn, ids, logs_only, dry_run, result)
        if len(ids) < batch:
            break
        if not dry_run:
            sql.after_batch(time.monotonic() - started)
    if not dry_run and (audit_empty or result.jobs or result.log_chunks):
        from jobctl.store import audit

        with database.write() as conn:
            audit.note_prune(conn, {**result.to_json(), "older_than_s": older_than_s,
                                    "states": [state.value for state in states]})
    return result


def _count_or_delete(conn: Conn, ids: list[int], logs_only: bool, dry_run: bool,
                     result: Pruned) -> None:
    sql: RetentionSQL = conn.backend.sql_retention
    params = {"ids": conn.ids_param(ids)}
    chunks, size, attempt_count = conn.execute(sql.COUNT_BATCH, params).fetchone()
    result.log_chunks += int(chunks)
    result.log_bytes += int(size)
    if logs_only:
        if not dry_run:
            conn.execute(sql.DELETE_LOGS, params)
        return
    result.attempts += int(attempt_count)
    if dry_run:
        result.jobs += len(ids)
        return
    conn.execute(sql.DELETE_LOGS, params)
    conn.execute(sql.DELETE_ATTEMPTS, params)
    conn.execute(sql.DELETE_DEPS, params)
    result.jobs += conn.execute(sql.DELETE_JOBS, params).rowcount


# --- table sizes --------------------------------------------------------------------------------


@record
class TableSize:
    table: str
    rows: int
    bytes: int | None  # None where the database cannot tell (SQLite without dbstat)

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "rows": self.rows, "bytes": self.bytes}


def table_sizes(database: DirectDatabase) -> list[TableSize]:
    """Row counts and on-disk sizes (with indexes and, on PostgreSQL, TOAST) of jobctl's tables."""
    with database.read() as conn:
        found = conn.backend.sql_retention.table_sizes(conn)
    return [TableSize(name, *found[name]) for name in TABLES]


class RetentionSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.retention): its statements,
    named and commented, in its driver's own parameter style, and the steps that differ by
    necessity."""

    # Whether this session may delete what pruning deletes (one row, one boolean; PostgreSQL's
    # roles: jobctl_admin's alone, jobctl.store.postgres.roles).
    MAY_DELETE: str
    # Jobs old enough (:states as ids_param, :cutoff) that an unfinished job depends on.
    COUNT_KEPT: str
    # The next batch of ids to prune after :after_id (:states, :cutoff, :batch, :logs_only):
    # for a dry run, and locked for deleting.
    NEXT_BATCH: str
    NEXT_BATCH_TO_DELETE: str
    # :ids (ids_param) → (log chunks, log bytes, attempts) of those jobs.
    COUNT_BATCH: str
    # Delete the :ids jobs' output, attempts, dependency edges, and the jobs themselves.
    DELETE_LOGS: str
    DELETE_ATTEMPTS: str
    DELETE_DEPS: str
    DELETE_JOBS: str

    def after_batch(self, took_s: float) -> None:
        """Between two batches that deleted, after one that took `took_s` seconds."""
        ...

    def table_sizes(self, conn: Conn) -> dict[str, tuple[int, int | None]]:
        """(rows, bytes or None where the database cannot tell) of each of TABLES."""
        ...
