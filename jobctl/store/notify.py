"""Wake-ups: NOTIFY on PostgreSQL, sent inside the transaction that makes the change (so a listener
never wakes before the change is visible); SQLite has no notifications and its readers poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from jobctl.store.direct import Conn, first_line

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


class Listener:
    """A thread that LISTENs on PostgreSQL and calls `on_notify(channel, payload)`.

    It reconnects on its own; after every (re)connect it calls `on_notify("", "")` because
    notifications sent while it was away are gone, so its owner should look for work.
    """

    def __init__(
        self,
        conninfo: str,
        channels: list[str],
        on_notify: Callable[[str, str], None],
    ) -> None:
        """`conninfo`: what psycopg connects to (a `postgresql://` URL; see
        `DirectDatabase.location.target`, as store.url parses it)."""
        self._conninfo = conninfo
        self._channels = channels
        self._on_notify = on_notify
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobctl-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        import psycopg

        backoff = 0.5
        while not self._stopped.is_set():
            try:
                from jobctl.store.postgres import CONNECTION_OPTIONS

                with psycopg.connect(self._conninfo, autocommit=True,
                                     **CONNECTION_OPTIONS) as conn:  # type: ignore[arg-type]
                    for channel in self._channels:
                        conn.execute(f"LISTEN {channel}")
                    backoff = 0.5
                    self._on_notify("", "")
                    while not self._stopped.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._on_notify(note.channel, note.payload)
            except psycopg.Error as error:
                log.warning("listener: %s; reconnecting in %.1fs", first_line(error), backoff)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 10.0)

