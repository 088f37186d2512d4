"""Retention: delete finished jobs (with their attempts and output) older than a cutoff, and the
sizes of the tables, for `jobctl db prune` and `jobctl db status`.

Pruning goes in batches of short transactions (a few thousand rows each), so it never holds a
lock for long: workers keep claiming and completing meanwhile. A job is kept while a job that has
not finished depends on it, since deleting it would leave that dependent waiting on nothing.
Times come from the database clock.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from jobctl.models import FINAL_STATES, JobState
from jobctl.store.engine import Database
from jobctl.store.schema import (
    attempts,
    db_now,
    job_deps,
    job_logs,
    jobs,
    metadata,
)

BATCH = 1000
DEFAULT_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.LOST,
                  JobState.SKIPPED)


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


def _needed_by_unfinished() -> sa.ColumnElement[bool]:
    """Whether some job that has not reached a final state depends on `jobs.id`."""
    dependent = jobs.alias("dependent")
    return sa.exists(
        sa.select(1)
        .select_from(job_deps.join(dependent, dependent.c.id == job_deps.c.job_id))
        .where(job_deps.c.depends_on == jobs.c.id,
               dependent.c.state.notin_([s.value for s in FINAL_STATES]))
    )


def _old_enough(states: Sequence[JobState], cutoff: Any) -> sa.ColumnElement[bool]:
    # A job that ended without a finish time (none should) counts from its creation.
    return sa.and_(jobs.c.state.in_([s.value for s in states]),
                   sa.func.coalesce(jobs.c.finished_at, jobs.c.created_at) < cutoff)


def check_states(states: Sequence[JobState]) -> None:
    unfinished = [s.value for s in states if not s.is_final]
    if unfinished:
        raise ValueError(f"only finished jobs can be pruned, not {', '.join(unfinished)}")


def prune(database: Database, older_than_s: float, states: Sequence[JobState] = DEFAULT_STATES,
          logs_only: bool = False, dry_run: bool = False, batch: int = BATCH) -> Pruned:
    """Delete jobs in `states` that finished more than `older_than_s` ago, with their attempts
    and output (or, with `logs_only`, only their output). Jobs that an unfinished job depends on
    are kept. The scheduler may call this periodically."""
    check_states(states)
    result = Pruned(dry_run=dry_run, logs_only=logs_only)
    with database.read() as connection:
        cutoff = connection.execute(sa.select(db_now())).scalar_one() - timedelta(
            seconds=older_than_s)
        result.kept_for_dependents = connection.execute(
            sa.select(sa.func.count()).select_from(jobs)
            .where(_old_enough(states, cutoff), _needed_by_unfinished())
        ).scalar_one()
    after_id = 0
    while True:
        started = time.monotonic()
        with database.read() if dry_run else database.write() as connection:
            ids = _next_batch(connection, states, cutoff, after_id, batch, logs_only, dry_run)
            if not ids:
                break
            result.batches += 1
            after_id = ids[-1]
            _count_or_delete(connection, ids, logs_only, dry_run, result)
        if len(ids) < batch:
            break
        if not dry_run and not database.is_postgres:
            # SQLite has one writer at a time, and a writer that waits polls for the lock every
            # 100 ms at most: were the next batch to take it straight back, workers and clients
            # could wait through many batches. Pausing as long as a batch took lets them in.
            time.sleep(min(time.monotonic() - started, 1.0))
    return result


def _next_batch(connection: sa.Connection, states: Sequence[JobState], cutoff: Any,
                after_id: int, batch: int, logs_only: bool, dry_run: bool) -> list[int]:
    query = (sa.select(jobs.c.id)
             .where(jobs.c.id > after_id, _old_enough(states, cutoff),
                    sa.not_(_needed_by_unfinished()))
             .order_by(jobs.c.id).limit(batch))
    if logs_only:
        query = query.where(sa.exists(sa.select(1).where(job_logs.c.job_id == jobs.c.id)))
    if not dry_run and connection.dialect.name == "postgresql":
        # Lock what we delete, so that a submit that makes one of them a dependency (and locks
        # it to check it exists) either waits for us or is seen by the check above; SKIP LOCKED
        # leaves rows someone is busy with for the next run.
        query = query.with_for_update(of=jobs, skip_locked=True)
    return [row.id for row in connection.execute(query)]


def _count_or_delete(connection: sa.Connection, ids: list[int], logs_only: bool, dry_run: bool,
                     result: Pruned) -> None:
    chunks, size = connection.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(job_logs.c.data)),
                                                    0))
        .where(job_logs.c.job_id.in_(ids))
    ).one()
    result.log_chunks += int(chunks)
    result.log_bytes += int(size)
    if logs_only:
        if not dry_run:
            connection.execute(sa.delete(job_logs).where(job_logs.c.job_id.in_(ids)))
        return
    result.attempts += connection.execute(
        sa.select(sa.func.count()).select_from(attempts).where(attempts.c.job_id.in_(ids))
    ).scalar_one()
    if dry_run:
        result.jobs += len(ids)
        return
    # Children first: the foreign keys cascade too, but explicit deletes do not depend on
    # SQLite's foreign_keys pragma being on for this connection.
    connection.execute(sa.delete(job_logs).where(job_logs.c.job_id.in_(ids)))
    connection.execute(sa.delete(attempts).where(attempts.c.job_id.in_(ids)))
    connection.execute(sa.delete(job_deps).where(job_deps.c.job_id.in_(ids)))
    result.jobs += connection.execute(
        sa.delete(jobs).where(jobs.c.id.in_(ids),
                              jobs.c.state.in_([s.value for s in FINAL_STATES]))).rowcount


# --- table sizes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSize:
    table: str
    rows: int
    bytes: int | None  # None where the database cannot tell (SQLite without dbstat)

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "rows": self.rows, "bytes": self.bytes}


def table_sizes(database: Database) -> list[TableSize]:
    """Row counts and on-disk sizes (with indexes and, on PostgreSQL, TOAST) of jobctl's tables."""
    names = sorted(metadata.tables)
    with database.read() as connection:
        rows = {name: connection.execute(
            sa.select(sa.func.count()).select_from(metadata.tables[name])).scalar_one()
            for name in names}
        if database.is_postgres:
            sizes = {name: connection.execute(
                sa.text("SELECT pg_total_relation_size(CAST(:name AS regclass))"),
                {"name": name}).scalar_one() for name in names}
        else:
            sizes = _sqlite_sizes(connection, names)
    return [TableSize(name, int(rows[name]), None if sizes.get(name) is None
                      else int(sizes[name])) for name in names]


def _sqlite_sizes(connection: sa.Connection, names: list[str]) -> dict[str, int | None]:
    """Bytes per table, its indexes included, from the dbstat virtual table when SQLite was
    built with it; nothing otherwise."""
    try:
        with connection.begin_nested():
            found = connection.execute(sa.text(
                "SELECT m.tbl_name AS name, SUM(s.pgsize) AS size FROM dbstat AS s "
                "JOIN sqlite_master AS m ON m.name = s.name GROUP BY m.tbl_name")).all()
    except sa.exc.OperationalError:  # no such table: dbstat
        return {}
    by_name = {row.name: row.size for row in found}
    return {name: by_name.get(name) for name in names}
