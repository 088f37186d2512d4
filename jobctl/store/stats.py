"""Read-only summaries for people and alerts: `jobctl top` (a snapshot of the cluster) and
`jobctl stats` (per-queue depth, throughput and failure rate over a window, and the p50/p95 of
the duration, CPU seconds and peak memory of the attempts that ended within it).

Each function reads in one short transaction and measures ages against the database clock.
Written against `store.direct.Conn` (the driver, no SQLAlchemy): `top` and `stats` never need it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from jobctl.accounting import Spread
from jobctl.models import FAILURE_STATES, UNFINISHED_STATES, JobState, WorkerInfo, sql_states
from jobctl.record import record
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
    # Attempts that ran to their end within the window (succeeded, failed or cancelled: not
    # lost, not released), and the p50/p95 of their duration, CPU seconds (user + system) and
    # peak memory (jobctl.accounting; attempts without figures count for the duration only).
    attempts_ended: int = 0
    duration_s: Spread = field(default_factory=Spread)
    cpu_s: Spread = field(default_factory=Spread)
    peak_memory_bytes: Spread = field(default_factory=Spread)

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
            "attempts_ended": self.attempts_ended,
            "duration_p50_s": _rounded(self.duration_s.p50, 3),
            "duration_p95_s": _rounded(self.duration_s.p95, 3),
            "cpu_p50_s": _rounded(self.cpu_s.p50, 3),
            "cpu_p95_s": _rounded(self.cpu_s.p95, 3),
            "peak_memory_p50_bytes": _whole(self.peak_memory_bytes.p50),
            "peak_memory_p95_bytes": _whole(self.peak_memory_bytes.p95),
        }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _whole(value: float | None) -> int | None:
    return None if value is None else round(value)


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


@record
class RunningJob:
    id: int
    name: str | None
    queue: str
    worker: str | None
    started_at: datetime | None
    elapsed_s: float | None


@record
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


def queue_stats(conn: Conn, window_s: float, usage: bool = True) -> QueueReport:
    """Per queue: depth now, jobs that ended within the window and (`usage`) the spread of what
    the attempts that ended within it took."""
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
    total = QueueStats("(all)")
    if usage:
        _attempt_figures(conn, since, stats, total)
    queues = [by_queue[name] for name in sorted(by_queue)]
    return QueueReport(now, window_s, queues, _total(queues, total))


@dataclass
class _Figures:
    durations: list[float] = field(default_factory=list)
    cpu: list[float | None] = field(default_factory=list)
    memory: list[float | None] = field(default_factory=list)

    def add(self, duration: float, cpu: float | None, memory: float | None) -> None:
        self.durations.append(duration)
        self.cpu.append(cpu)
        self.memory.append(memory)

    def into(self, entry: QueueStats) -> None:
        entry.attempts_ended = len(self.durations)
        entry.duration_s = Spread.of(self.durations)
        entry.cpu_s = Spread.of(self.cpu)
        entry.peak_memory_bytes = Spread.of(self.memory)


def _attempt_figures(conn: Conn, since: datetime, stats: Callable[[str], QueueStats],
                     total: QueueStats) -> None:
    """The percentiles of the attempts that ended since `since`, per queue and in all, computed
    here (jobctl.accounting.percentile) so that both backends give the one answer."""
    by_queue: dict[str, _Figures] = {}
    every = _Figures()
    rows = conn.execute(conn.backend.sql_stats.ATTEMPTS_ENDED,
                        {"since": conn.time_param(since)}).fetchall()
    for queue, started_at, finished_at, cpu_user_s, cpu_system_s, max_rss_bytes in rows:
        duration = max(0.0, (conn.time_not_null(finished_at)
                             - conn.time_not_null(started_at)).total_seconds())
        cpu = (None if cpu_user_s is None and cpu_system_s is None
               else (cpu_user_s or 0.0) + (cpu_system_s or 0.0))
        memory = None if max_rss_bytes is None else float(max_rss_bytes)
        by_queue.setdefault(queue, _Figures()).add(duration, cpu, memory)
        every.add(duration, cpu, memory)
    for queue, figures in by_queue.items():
        figures.into(stats(queue))
    every.into(total)


def _total(queues: list[QueueStats], total: QueueStats) -> QueueStats:
    for q in queues:
        for name in ("waiting", "queued", "running", "succeeded", "failed", "cancelled"):
            setattr(total, name, getattr(total, name) + getattr(q, name))
        if q.oldest_queued_s is not None:
            total.oldest_queued_s = max(total.oldest_queued_s or 0.0, q.oldest_queued_s)
    return total


def snapshot(conn: Conn, *, window_s: float = 3600.0, running_limit: int = 30,
             failures_limit: int = 10) -> Snapshot:
    report = queue_stats(conn, window_s, usage=False)
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

# ATTEMPTS_ENDED's outcomes: attempts that ran to their end (not lost, not released).
RAN_TO_THE_END = "('succeeded', 'failed', 'cancelled')"

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

    # :now, :since (the database clock's, read first) → (figure, queue, state, count, due).
    # Everything `stats` counts, in one statement (one round trip), one branch per figure, each
    # with its own condition so that it keeps its own index:
    #   oldest  the longest-due queued job per queue (the claim index: queued rows only), jobs
    #           due later not counted. First: PostgreSQL types a UNION's NULL columns from the
    #           branches before them, and this one types the last column (a time);
    #   depth   jobs not finished, per queue and state (QUEUE_DEPTH, shared: few rows, the
    #           claim index's states);
    #   ended   jobs that reached a final state within the window, per queue and state.
    #           Skipped occurrences are final too, but count as none of succeeded, failed or
    #           cancelled.
    # :now and :since are read first (reads.database_now), so that every branch and every age
    # is measured against one instant.
    QUEUE_STATS: str
    # :since → (queue, started_at, finished_at, cpu_user_s, cpu_system_s, max_rss_bytes) of
    # the attempts that ran to their end since then
    ATTEMPTS_ENDED: str
    RUNNING_JOBS: str  # :limit → (id, name, queue, started_at, worker name), longest first
    RECENT_FAILURES: str  # :limit → (id, name, queue, state, exit_code, error, finished_at)
