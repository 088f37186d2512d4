"""Wake-ups: NOTIFY on PostgreSQL, sent inside the transaction that makes the change (so a listener
never wakes before the change is visible); SQLite has no notifications and its readers poll.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from jobctl.errors import DatabaseUnavailable
from jobctl.store import url
from jobctl.store.backend import backend_for
from jobctl.store.direct import Conn

log = logging.getLogger(__name__)

JOBS_CHANNEL = "jobctl_jobs"  # payload: a queue name that has new work
CANCEL_CHANNEL = "jobctl_cancel"  # payload: the id of a running job to cancel
WORKER_CHANNEL = "jobctl_worker"  # payload: the id of a worker asked to stop
DONE_CHANNEL = "jobctl_done"  # payload: ids of jobs that reached a final state, comma-separated
SCHEDULES_CHANNEL = "jobctl_schedules"  # payload: the name of a schedule added, changed or removed


def _send(conn: Conn, channel: str, payload: str) -> None:
    """Sent when the transaction commits; nothing on SQLite."""
    conn.notify(channel, payload)


def job_submitted(conn: Conn, queue: str) -> None:
    _send(conn, JOBS_CHANNEL, queue)


def cancel_requested(conn: Conn, job_id: int) -> None:
    _send(conn, CANCEL_CHANNEL, str(job_id))


def worker_stop_requested(conn: Conn, worker_id: int) -> None:
    _send(conn, WORKER_CHANNEL, str(worker_id))


def jobs_done(conn: Conn, job_ids: list[int]) -> None:
    # A payload must stay under 8000 bytes; listeners re-read the database anyway.
    _send(conn, DONE_CHANNEL, ",".join(map(str, job_ids))[:7000])


def schedules_changed(conn: Conn, name: str) -> None:
    _send(conn, SCHEDULES_CHANNEL, name[:7000])


class ListenUnsupported(DatabaseUnavailable):
    """LISTEN does not work where a subscription connected (a transaction pooler is in the way):
    the database's `listen_target` is None from now on in this process, and its waiters poll."""


# The targets whose fallback to polling this process has logged (once each).
_SAID_POLLING: set[str] = set()
_SAID_POLLING_LOCK = threading.Lock()


def say_polling(target: str, error: ListenUnsupported, poll_s: float | None) -> None:
    """Log, once per process and target, that waiters there poll instead of waking on NOTIFY."""
    with _SAID_POLLING_LOCK:
        if target in _SAID_POLLING:
            return
        _SAID_POLLING.add(target)
    every = f"every {poll_s:g}s " if poll_s is not None else ""
    log.warning("%s: polling %sinstead of waking on NOTIFY", error, every)


class Subscription(Protocol):
    """A connection of its own that receives the notifications of some channels (a backend's
    `listen`; PostgreSQL's is jobctl.store.postgres.listen). Lost or unreachable, it raises
    DatabaseUnavailable, and a new one must be made: what was sent meanwhile is gone."""

    def wait(self, timeout: float, stop_after: int | None = None) -> Iterator[tuple[str, str]]:
        """(channel, payload) of each notification that arrives within `timeout` seconds, until
        `stop_after` of them have (None: all that do)."""
        ...

    def close(self) -> None:
        ...


def subscribe(target: str, channels: Sequence[str]) -> Subscription:
    """Receive the notifications of `channels` at `target`: a database's `listen_target`, which
    is None where nothing notifies (SQLite) and waiters poll instead."""
    location = url.parse(target)
    return backend_for(location).listen(location, channels)


class Listener:
    """A thread that listens (see `subscribe`) and calls `on_notify(channel, payload)`.

    It reconnects on its own; after every (re)connect it calls `on_notify("", "")` because
    notifications sent while it was away are gone, so its owner should look for work. Where
    LISTEN does not work, it ends (see __init__).
    """

    def __init__(
        self,
        target: str,
        channels: list[str],
        on_notify: Callable[[str, str], None],
        poll_s: Callable[[], float] | None = None,
    ) -> None:
        """`target`: a database's `listen_target` (DirectDatabase.listen_target). Where LISTEN
        turns out not to work (ListenUnsupported), the thread says so once, with how often its
        owner polls instead (`poll_s()`, asked once the owner's database offers no
        listen_target), calls `on_notify("", "")` so that the owner looks again, and ends."""
        self._target = target
        self._channels = channels
        self._on_notify = on_notify
        self._poll_s = poll_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobctl-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stopped.is_set():
            try:
                with contextlib.closing(subscribe(self._target, self._channels)) as subscription:
                    backoff = 0.5
                    self._on_notify("", "")
                    while not self._stopped.is_set():
                        for channel, payload in subscription.wait(timeout=1.0):
                            self._on_notify(channel, payload)
            except ListenUnsupported as error:
                say_polling(self._target, error, self._poll_s() if self._poll_s else None)
                self._on_notify("", "")
                return
            except DatabaseUnavailable as error:
                log.warning("listener: %s; reconnecting in %.1fs", error, backoff)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 10.0)
