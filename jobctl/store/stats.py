"""Read-only summaries for people and alerts: `jobctl top` (a snapshot of the cluster) and
`jobctl stats` (per-queue depth, throughput and failure rate over a window).

Each function reads in one short transaction and measures ages against the database clock.
Written against `store.direct.Conn` (the driver, no SQLAlchemy): `top` and `stats` never need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from jobctl.models import FAILURE_STATES, UNFINISHED_STATES, JobState, WorkerInfo, sql_states
from jobctl.store import workers as worker_rows
from jobctl.store.direct import Conn, DirectDatabase
from jobctl.store.reads import database_now
from jobctl.timeparse import isoformat_utc


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


def queue_stats(conn: Conn, window_s: float) -> QueueReport:
    now = database_now(conn)
    since = now - timedelta(seconds=window_s)
    by_queue: dict[str, QueueStats] = {}

    def stats(queue: str) -> QueueStats:
        return by_queue.setdefault(queue, QueueStats(queue))

    rows = conn.execute(conn.backend.sql_stats.QUEUE_STATS, {
        "now": conn.time_param(now), "since": conn.time_param(since)}).fetchall()
    for figure, queue, state, count, due in rows:
        entry = stats(queue)
        if figure == "depth":
            setattr(entry, state, count)
        elif figure == "ended":
            if state == JobState.SUCCEEDED.value:
                entry.succeeded += count
            elif state == JobState.CANCELLED.value:
                entry.cancelled += count
            elif state in FAILURE_STATES:
                entry.failed += count
        elif due is not None:
            entry.oldest_queued_s = max(0.0, (now - conn.time_not_null(due)).total_seconds())
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


def snapshot(conn: Conn, *, window_s: float = 3600.0, running_limit: int = 30,
             failures_limit: int = 10) -> Snapshot:
    report = queue_stats(conn, window_s)
    now = report.now
    running = []
    sql: StatsSQL = conn.backend.sql_stats
    for id_, name, queue, started_at, worker in conn.execute(
            sql.RUNNING_JOBS, {"limit": running_limit}).fetchall():
        started = conn.time(started_at)
        running.append(RunningJob(id_, name, queue, worker, started,
                                  None if started is None
                                  else max(0.0, (now - started).total_seconds())))
    failures = [FailedJob(id_, name, queue, state, exit_code, error, conn.time(finished_at))
                for id_, name, queue, state, exit_code, error, finished_at in conn.execute(
                    sql.RECENT_FAILURES, {"limit": failures_limit}).fetchall()]
    return Snapshot(now=now, report=report, workers=worker_rows.list_workers(conn),
                    running=running, failures=failures, running_total=report.total.running)


def read_snapshot(database: DirectDatabase, **options: Any) -> Snapshot:
    """One snapshot, in one read transaction of `database`."""
    with database.read() as conn:
        return snapshot(conn, **options)


def read_queue_stats(database: DirectDatabase, window_s: float) -> QueueReport:
    with database.read() as conn:
        return queue_stats(conn, window_s)


# --- SQL both backends share -------------------------------------------------------------------
# SQL text that both backends run exactly as it is (no parameter, nothing dialect-specific) lives
# here, once, named for what it means; each backend's statement (jobctl.store.<backend>.stats)
# composes it at import. Whatever holds a parameter stays in the backend's own statement.

# QUEUE_STATS's `depth` branch: jobs not finished, per queue and state.
QUEUE_DEPTH = f"""SELECT 'depth', queue, state, count(*), NULL FROM jobs
WHERE state IN ({sql_states(UNFINISHED_STATES)})
GROUP BY queue, state"""

# RUNNING_JOBS without its limit: the running jobs, longest-running first, with the name of the
# worker that runs each.
RUNNING_LONGEST_FIRST = f"""SELECT jobs.id, jobs.name, jobs.queue, jobs.started_at, workers.name
FROM jobs LEFT OUTER JOIN workers ON workers.id = jobs.worker_id
WHERE jobs.state = '{JobState.RUNNING.value}'
ORDER BY jobs.started_at, jobs.id"""

# RECENT_FAILURES without its limit: the failures (failed or lost), newest first.
FAILURES_NEWEST_FIRST = f"""SELECT id, name, queue, state, exit_code, error, finished_at FROM jobs
WHERE state IN ({sql_states(FAILURE_STATES)})
ORDER BY finished_at DESC, id DESC"""


class StatsSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.stats): its statements,
    named and commented, in its driver's own parameter style."""

    # :now, :since (the database clock's, read first) → (figure, queue, state, count, due)
    QUEUE_STATS: str
    RUNNING_JOBS: str  # :limit → (id, name, queue, started_at, worker name), longest first
    RECENT_FAILURES: str  # :limit → (id, name, queue, state, exit_code, error, finished_at)
