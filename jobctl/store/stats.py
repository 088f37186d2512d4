"""Read-only summaries for people and alerts: `jobctl top` (a snapshot of the cluster) and
`jobctl stats` (per-queue depth, throughput and failure rate over a window).

Each function reads in one short transaction and measures ages against the database clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from jobctl.models import JobState, WorkerInfo
from jobctl.store import workers as worker_rows
from jobctl.store.direct import Conn
from jobctl.store.engine import Database
from jobctl.store.schema import db_now, jobs, workers
from jobctl.timeparse import isoformat_utc

UNFINISHED = [JobState.WAITING.value, JobState.QUEUED.value, JobState.RUNNING.value]
FAILED = [JobState.FAILED.value, JobState.LOST.value]  # what counts against the failure rate
ENDED = [JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value,
         JobState.LOST.value]


@dataclass
class QueueStats:
    queue: str
    waiting: int = 0
    queued: int = 0
    running: int = 0
    # Jobs that reached these states within the window:
    succeeded: int = 0
    failed: int = 0  # failed or lost
    cancelled: int = 0
    # How long the longest-due queued job has been due (not counting jobs due later).
    oldest_queued_s: float | None = None

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    def failure_rate(self) -> float | None:
        """Failed (or lost) out of succeeded + failed; None when none finished."""
        return self.failed / self.finished if self.finished else None

    def throughput_per_min(self, window_s: float) -> float:
        return self.finished / (window_s / 60) if window_s > 0 else 0.0

    def to_json(self, window_s: float) -> dict[str, Any]:
        rate = self.failure_rate()
        return {
            "queue": self.queue, "waiting": self.waiting, "queued": self.queued,
            "running": self.running, "succeeded": self.succeeded, "failed": self.failed,
            "cancelled": self.cancelled,
            "throughput_per_min": round(self.throughput_per_min(window_s), 3),
            "failure_rate": None if rate is None else round(rate, 4),
            "oldest_queued_s": (None if self.oldest_queued_s is None
                                else round(self.oldest_queued_s, 3)),
        }


@dataclass
class QueueReport:
    now: datetime
    window_s: float
    queues: list[QueueStats]
    total: QueueStats

    def to_json(self) -> dict[str, Any]:
        return {"now": isoformat_utc(self.now), "window_s": self.window_s,
                "queues": [q.to_json(self.window_s) for q in self.queues],
                "total": self.total.to_json(self.window_s)}


@dataclass(frozen=True)
class RunningJob:
    id: int
    name: str | None
    queue: str
    worker: str | None
    started_at: datetime | None
    elapsed_s: float | None


@dataclass(frozen=True)
class FailedJob:
    id: int
    name: str | None
    queue: str
    state: str
    exit_code: int | None
    error: str | None
    finished_at: datetime | None


@dataclass
class Snapshot:
    """What `jobctl top` shows."""

    now: datetime
    report: QueueReport
    workers: list[WorkerInfo]
    running: list[RunningJob]
    failures: list[FailedJob]
    running_total: int = 0


def database_now(connection: sa.Connection) -> datetime:
    now: datetime = connection.execute(sa.select(db_now())).scalar_one()
    return now


def queue_stats(connection: sa.Connection, window_s: float) -> QueueReport:
    now = database_now(connection)
    since = now - timedelta(seconds=window_s)
    by_queue: dict[str, QueueStats] = {}

    def stats(queue: str) -> QueueStats:
        return by_queue.setdefault(queue, QueueStats(queue))

    unfinished = (sa.select(jobs.c.queue, jobs.c.state, sa.func.count().label("n"))
                  .where(jobs.c.state.in_(UNFINISHED)).group_by(jobs.c.queue, jobs.c.state))
    for row in connection.execute(unfinished):
        setattr(stats(row.queue), row.state, row.n)
    ended = (sa.select(jobs.c.queue, jobs.c.state, sa.func.count().label("n"))
             .where(jobs.c.state.in_(ENDED), jobs.c.finished_at >= since)
             .group_by(jobs.c.queue, jobs.c.state))
    for row in connection.execute(ended):
        entry = stats(row.queue)
        if row.state == JobState.SUCCEEDED.value:
            entry.succeeded += row.n
        elif row.state == JobState.CANCELLED.value:
            entry.cancelled += row.n
        else:
            entry.failed += row.n
    # Served by the claim index (queued rows only).
    oldest = (sa.select(jobs.c.queue, sa.func.min(jobs.c.run_at).label("due"))
              .where(jobs.c.state == JobState.QUEUED.value, jobs.c.run_at <= now)
              .group_by(jobs.c.queue))
    for row in connection.execute(oldest):
        if row.due is not None:
            stats(row.queue).oldest_queued_s = max(0.0, (now - row.due).total_seconds())
    queues = [by_queue[name] for name in sorted(by_queue)]
    return QueueReport(now, window_s, queues, _total(queues))


def _total(queues: list[QueueStats]) -> QueueStats:
    total = QueueStats("(all)")
    for q in queues:
        for name in ("waiting", "queued", "running", "succeeded", "failed", "cancelled"):
            setattr(total, name, getattr(total, name) + getattr(q, name))
        if q.oldest_queued_s is not None:
            total.oldest_queued_s = max(total.oldest_queued_s or 0.0, q.oldest_queued_s)
    return total


def snapshot(connection: sa.Connection, *, window_s: float = 3600.0, running_limit: int = 30,
             failures_limit: int = 10) -> Snapshot:
    report = queue_stats(connection, window_s)
    now = report.now
    running_query = (
        sa.select(jobs.c.id, jobs.c.name, jobs.c.queue, jobs.c.started_at,
                  workers.c.name.label("worker"))
        .select_from(jobs.outerjoin(workers, workers.c.id == jobs.c.worker_id))
        .where(jobs.c.state == JobState.RUNNING.value)
        .order_by(jobs.c.started_at, jobs.c.id)
        .limit(running_limit)
    )
    running = [RunningJob(row.id, row.name, row.queue, row.worker, row.started_at,
                          None if row.started_at is None
                          else max(0.0, (now - row.started_at).total_seconds()))
               for row in connection.execute(running_query)]
    failures_query = (
        sa.select(jobs.c.id, jobs.c.name, jobs.c.queue, jobs.c.state, jobs.c.exit_code,
                  jobs.c.error, jobs.c.finished_at)
        .where(jobs.c.state.in_(FAILED))
        .order_by(jobs.c.finished_at.desc(), jobs.c.id.desc())
        .limit(failures_limit)
    )
    failures = [FailedJob(row.id, row.name, row.queue, row.state, row.exit_code, row.error,
                          row.finished_at) for row in connection.execute(failures_query)]
    return Snapshot(now=now, report=report,
                    workers=worker_rows.list_workers(Conn.of(connection)),
                    running=running, failures=failures, running_total=report.total.running)


def read_snapshot(database: Database, **options: Any) -> Snapshot:
    with database.read() as connection:
        return snapshot(connection, **options)


def read_queue_stats(database: Database, window_s: float) -> QueueReport:
    with database.read() as connection:
        return queue_stats(connection, window_s)
