"""The heartbeat thread: lease renewal and the fencer.

Every lease/3 it renews the leases of the jobs the worker holds (and of those whose results are
not written yet), learns which were taken back (killed at once: they may run elsewhere) and
which were cancelled, and whether the worker was asked to stop (`jobctl worker stop`); where no
notification brings cancels (SQLite) it also checks for them every half second. After every
successful renewal it pushes the fencing deadline forward in the watchdog process
(jobctl/worker/watchdog.py), which kills the jobs if the pushes stop before the leases run out,
and it enforces the same deadline itself (belt and braces: the watchdog is what holds when the
worker's process is frozen).

It does nothing that could wait on somebody else's locks (rescuing other workers' jobs is the
main thread's work), on a database connection of its own, so that a slow or stuck main loop
never delays a renewal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from jobctl.errors import DatabaseUnavailable
from jobctl.metrics import NoMetrics
from jobctl.models import WorkerState
from jobctl.store import queue
from jobctl.store import workers as worker_rows
from jobctl.store.direct import DirectDatabase, first_line, rolled_back
from jobctl.worker.process import Watchdog
from jobctl.worker.readahead import Held

log = logging.getLogger("jobctl.worker")

# Where no notification brings cancels (SQLite), check for them at least this often.
CANCEL_CHECK_S = 0.5


def fence_deadline(last_renewal_ok: float, lease_s: float) -> float:
    """When our jobs must be dead if no renewal succeeds before: a margin before the leases
    taken at the last successful renewal (timed from before it was sent) run out."""
    margin = min(lease_s / 6, 5.0)
    return last_renewal_ok + lease_s - margin


class Heartbeat:
    """`database`: a connection of its own (it is closed on the thread when it ends);
    `request_drain()`: the worker was asked to stop; `draining()`: whether it is stopping."""

    def __init__(self, database: DirectDatabase, held: Held, lease_s: float,
                 metrics: NoMetrics, request_drain: Callable[[], None],
                 beat: Callable[[], object] = lambda: None,
                 draining: Callable[[], bool] = lambda: False) -> None:
        self._draining = draining
        self._beat = beat  # each pass of the thread, the database reached or not (sd_notify)
        self._db = database
        self._held = held
        self.lease_s = lease_s
        self._metrics = metrics
        self._request_drain = request_drain
        self._worker_id = 0
        self._watchdog: Watchdog | None = None
        self._last_renewal_ok = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jobctl-heartbeat", daemon=True)

    def restart_clock(self) -> None:
        """The worker has just registered: any lease it takes from now on ends after the
        deadline counted from here."""
        self._last_renewal_ok = time.monotonic()

    def fence_deadline(self) -> float:
        return fence_deadline(self._last_renewal_ok, self.lease_s)

    def start(self, worker_id: int, watchdog: Watchdog | None) -> None:
        self._worker_id = worker_id
        self._watchdog = watchdog
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    # --- the thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        renew_every = self.lease_s / 3
        next_renewal = time.monotonic() + renew_every
        try:
            # Awake for the next renewal, which comes sooner after a failed one: a second later,
            # not a whole third of the lease (a failover's new primary is found at once).
            while not self._stop.wait(min(self._check_every(renew_every),
                                          max(0.05, next_renewal - time.monotonic()))):
                # Asked each pass: a worker learns that LISTEN does not work (a transaction
                # pooler) after it started, and then this thread looks for cancels itself.
                notified = self._db.listen_target is not None
                now = time.monotonic()
                try:
                    if now >= next_renewal:
                        self._renew_again_if_rolled_back()
                        next_renewal = now + renew_every
                    elif not notified:
                        self._check_cancels()
                except DatabaseUnavailable as error:
                    self._metrics.renewal_failed()
                    log.warning("heartbeat: %s; retrying", error)
                    next_renewal = now + min(renew_every, 1.0)
                except Exception:  # this thread must outlive any surprise: it keeps our leases
                    self._metrics.renewal_failed()
                    log.exception("heartbeat failed; retrying")
                    next_renewal = now + min(renew_every, 1.0)
                self._fence_if_overdue()
                self._beat()
        finally:
            self._db.close()  # in the thread that used it

    def _check_every(self, renew_every: float) -> float:
        notified = self._db.listen_target is not None
        return min(renew_every, renew_every if notified else CANCEL_CHECK_S)

    def _renew_again_if_rolled_back(self) -> None:
        """Renew; once more at once if the database undid the renewal to break a deadlock
        (with our own turn, which updates the same rows: direct.rolled_back). Waiting for the
        next pass would cost the leases a third of their time, and could let the fencer kill
        jobs nothing is wrong with."""
        try:
            self._renew()
        except Exception as error:
            if not rolled_back(error):
                raise
            log.warning("heartbeat: renewal rolled back by the database (%s); again",
                        first_line(error))
            self._renew()

    def _renew(self) -> None:
        started = time.monotonic()
        ids = self._held.lease_ids()
        with self._db.write() as conn:
            renewal = queue.renew(conn, self._worker_id, ids, self.lease_s,
                                  draining=self._draining())
        if started - self._last_renewal_ok > self.lease_s:
            # Longer than a lease without a renewal: other workers will have marked us lost
            # and rescued our jobs; the heartbeat just made us a running worker again.
            log.warning("heartbeat: the database is back after %.0fs without a renewal "
                        "(longer than the %gs lease): running again",
                        started - self._last_renewal_ok, self.lease_s)
        self._last_renewal_ok = started
        self._metrics.renewed()
        if self._watchdog is not None:
            self._watchdog.extend(self.fence_deadline())
        lost = set(ids) - renewal.held
        if lost:
            self._held.kill(lost, "lease lost: the job was taken back by the cluster",
                            at_once=True)
        if renewal.cancel:
            self._held.kill(renewal.cancel, "cancelled", cancelled=True)
        if renewal.worker_state in (WorkerState.DRAINING, WorkerState.STOPPED):
            self._request_drain()

    def _check_cancels(self) -> None:
        """Where no notification brings them (SQLite): cancels, and `jobctl worker stop`."""
        ids = self._held.ids()
        with self._db.read() as conn:
            cancel = queue.cancel_requests(conn, self._worker_id, ids)
            state = worker_rows.get_state(conn, self._worker_id)
        if cancel:
            self._held.kill(cancel, "cancelled", cancelled=True)
        if state is not WorkerState.RUNNING:
            self._request_drain()

    def _fence_if_overdue(self) -> None:
        """The same deadline as the watchdog's, enforced from this process too."""
        if time.monotonic() < self.fence_deadline():
            return
        ids = self._held.ids()
        if ids:
            log.warning("cannot renew leases in time: killing %d job(s) (fencing)", len(ids))
            self._held.kill(ids, "fenced: the worker could not renew its lease", at_once=True)
