"""The scheduler: turns due schedule occurrences into jobs, notices overdue schedules and checks
(dead-man's switches, jobctl.store.overdue), and rescues expired leases.

It talks to the database through its driver alone (jobctl.store.direct: no SQLAlchemy, whose
import costs more than a pass over a thousand schedules), on one connection.

It does not tick: it asks the database when the next schedule is due and sleeps until then,
woken early by a NOTIFY on `jobctl_schedules` when a schedule is added or changed (PostgreSQL);
on SQLite it polls, at most `poll_s` apart. Any number of schedulers may run; the store makes
each occurrence fire once (see jobctl.store.schedules).

SIGTERM or SIGINT stops it between transactions: the one under way commits first; exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from jobctl.errors import DatabaseUnavailable
from jobctl.record import record
from jobctl.sdnotify import Notifier
from jobctl.store.direct import first_line, is_driver_error

if TYPE_CHECKING:
    from jobctl.metrics import SchedulerMetrics
    from jobctl.store.direct import DirectDatabase
    from jobctl.store.notify import Listener
    from jobctl.store.overdue import Noticed
    from jobctl.store.schedules import Fired

log = logging.getLogger("jobctl.scheduler")

# With metrics on: which schedules and checks are overdue is read for them after every pass
# that changed something, and at least this often (a ping that ended a check's spell, a switch
# added or removed, show up within it).
OVERDUE_REPORT_EVERY_S = 1.0


@record
class SchedulerSettings:
    once: bool = False  # fire what is due now, then exit
    batch: int = 200  # schedules per transaction
    misfire_grace_s: float = 1.0  # a fire time later than this when we get to it was missed
    misfire_cap: int = 100  # `--misfire all` fires at most this many missed times at once
    poll_s: float | None = None  # longest sleep (default: 5 s on PostgreSQL, 0.5 s on SQLite)
    rescue_every_s: float = 5.0
    # Retention: delete finished jobs older than this (None: keep everything), every
    # `prune_every_s`, the first time at start.
    retention_s: float | None = None
    prune_every_s: float = 3600.0


class Scheduler:
    def __init__(self, database: DirectDatabase, settings: SchedulerSettings,
                 metrics: SchedulerMetrics | None = None) -> None:
        self._db = database
        self._settings = settings
        self._metrics = metrics
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._next_rescue = 0.0
        self._next_prune = 0.0
        self._overdue_reported = False
        self._next_overdue_report = 0.0

    @property
    def poll_s(self) -> float:
        if self._settings.poll_s is not None:
            return self._settings.poll_s
        return 5.0 if self._db.listen_target else 0.5  # slower where notifications wake us

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> int:
        """Fire until stopped (or once, with `once`). Returns the exit status."""
        self._install_signal_handlers()
        listener = self._start_listener()
        log.info("started (%s)", self._db.where)
        notifier = Notifier.from_environment()  # systemd's, when it started us
        notifier.ready(f"scheduler ({self._db.where})")
        backoff = 0.5
        try:
            while not self._stop.is_set():
                notifier.watchdog()  # each pass, the database reached or not: we are alive
                try:
                    self.fire_all()
                    self.notice_overdue()
                    self._rescue_if_due()
                    self._prune_if_due()
                    backoff = 0.5
                    if self._metrics is not None:
                        self._metrics.pass_ok()
                except Exception as error:
                    # A database that went away, or a transaction it aborted (a deadlock, a
                    # restart): nothing was committed, so the next try fires the same times.
                    if not isinstance(error, DatabaseUnavailable) and not is_driver_error(error):
                        raise
                    if self._settings.once:
                        raise
                    message = (error.message if isinstance(error, DatabaseUnavailable)
                               else first_line(error))
                    if self._metrics is not None:
                        self._metrics.pass_failed(message)
                    log.warning("%s; retrying in %.1fs", message, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if self._settings.once:
                    break
                self._sleep()
        finally:
            notifier.stopping()
            if listener is not None:
                listener.stop()
        log.info("stopped")
        return 0

    def fire_all(self) -> Fired:
        """Fire every due occurrence, a batch of schedules per transaction."""
        from jobctl.store import schedules
        from jobctl.store.schedules import Fired

        total = Fired()
        while not self._stop.is_set():
            with self._db.write() as conn:
                fired = schedules.fire_due(conn, limit=self._settings.batch,
                                           misfire_grace_s=self._settings.misfire_grace_s,
                                           misfire_cap=self._settings.misfire_cap)
            total.schedules += fired.schedules
            total.jobs += fired.jobs
            total.skipped += fired.skipped
            total.missed += fired.missed
            if self._metrics is not None:
                self._metrics.fired(fired.jobs, fired.skipped, fired.missed, fired.lateness_s)
            if fired.skipped or fired.missed:
                log.info("fired %d jobs; %d skipped (overlap), %d missed (misfire)",
                         fired.jobs, fired.skipped, fired.missed)
            if fired.schedules < self._settings.batch:
                break
        return total

    def notice_overdue(self) -> Noticed:
        """The overdue pass (jobctl.store.overdue): what may have become overdue is read first,
        in a read transaction (an index probe or three: no write lock taken when nothing is
        due), then judged and written in a write transaction, each change conditional on the
        row being as read, so that of several schedulers exactly one begins each spell and
        inserts its hook job."""
        from jobctl.store import overdue

        with self._db.read() as conn:
            due = overdue.due(conn, self._settings.batch)
        noticed = overdue.Noticed()
        written = overdue.to_write(due)
        if written:
            with self._db.write() as conn:
                noticed = overdue.apply(conn, overdue.due(conn, self._settings.batch))
        for what in noticed.ended:
            log.info("%s is no longer overdue", what)
        for what in noticed.began:
            log.warning("%s is overdue", what)
        if noticed.hooks:
            log.info("overdue hook job(s) %s submitted", ", ".join(map(str, noticed.hooks)))
        if self._metrics is not None and (written or not self._overdue_reported
                                          or time.monotonic() >= self._next_overdue_report):
            with self._db.read() as conn:
                self._metrics.overdue(overdue.overdue_now(conn))
            self._overdue_reported = True
            self._next_overdue_report = time.monotonic() + OVERDUE_REPORT_EVERY_S
        return noticed

    def _rescue_if_due(self) -> None:
        if time.monotonic() < self._next_rescue:
            return
        from jobctl.store import queue

        with self._db.write() as conn:
            rescued = queue.rescue(conn)
        if rescued.requeued or rescued.ended:
            log.info("rescued %d jobs of expired leases",
                     len(rescued.requeued) + len(rescued.ended))
            if self._metrics is not None:
                self._metrics.rescued(len(rescued.requeued) + len(rescued.ended))
        self._next_rescue = time.monotonic() + self._settings.rescue_every_s

    def _prune_if_due(self) -> None:
        """Retention: finished jobs older than `retention_s` go, in short batches (see
        jobctl.store.retention); every scheduler may do it, they only share the work."""
        if self._settings.retention_s is None or time.monotonic() < self._next_prune:
            return
        from jobctl.store import retention

        pruned = retention.prune(self._db, self._settings.retention_s, audit_empty=False)
        if pruned.jobs:
            log.info("retention: deleted %d finished job(s) older than %gs", pruned.jobs,
                     self._settings.retention_s)
            if self._metrics is not None:
                self._metrics.pruned(pruned.jobs)
        self._next_prune = time.monotonic() + self._settings.prune_every_s

    def _sleep(self) -> None:
        from jobctl.store import overdue, schedules

        with self._db.read() as conn:
            due_in = schedules.seconds_until_next_due(conn)
            overdue_in = overdue.seconds_until_next(conn)
        if overdue_in is not None:
            due_in = overdue_in if due_in is None else min(due_in, overdue_in)
        until_rescue = max(0.0, self._next_rescue - time.monotonic())
        timeout = min(self.poll_s, until_rescue, self.poll_s if due_in is None else due_in)
        if timeout <= 0:
            return
        self._wake.wait(timeout + 0.001)  # a hair past the due time, not a hair before it
        self._wake.clear()

    def _start_listener(self) -> Listener | None:
        if self._db.listen_target is None or self._settings.once:
            return None
        from jobctl.store import notify

        listener = notify.Listener(self._db.listen_target, [notify.SCHEDULES_CHANNEL],
                                   lambda channel, payload: self._wake.set(),
                                   lambda: self.poll_s)
        listener.start()
        return listener

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
