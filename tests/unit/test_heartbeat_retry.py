"""The heartbeat tries a failed renewal again a second later, not a third of the lease later: a
worker whose database failed over finds the new primary while its leases still have room."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from jobctl.errors import DatabaseUnavailable
from jobctl.metrics import NO_METRICS
from jobctl.worker.heartbeat import Heartbeat
from jobctl.worker.readahead import Held


class UnreachableDatabase:
    """Stands in for a PostgreSQL DirectDatabase (it notifies: the heartbeat wakes only to
    renew) that cannot be reached: every renewal fails; when each was tried is kept."""

    listen_target = "postgresql://db.example/jobctl"

    def __init__(self) -> None:
        self.tries: list[float] = []
        self.second_try = threading.Event()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        self.tries.append(time.monotonic())
        if len(self.tries) >= 2:
            self.second_try.set()
        raise DatabaseUnavailable("cannot reach PostgreSQL at db.example:5432/jobctl")
        yield  # a generator, for contextmanager

    def close(self) -> None:
        pass


def test_a_failed_renewal_is_tried_again_after_a_second_not_a_third_of_the_lease() -> None:
    database = UnreachableDatabase()
    lease_s = 6.0  # renewals every 2 s
    beat = Heartbeat(database, Held(1), lease_s, NO_METRICS,  # type: ignore[arg-type]
                     lambda: None)
    beat.start(worker_id=1, watchdog=None)
    try:
        assert database.second_try.wait(lease_s), f"tried only at {database.tries}"
    finally:
        beat.stop()
    gap = database.tries[1] - database.tries[0]
    assert 0.9 <= gap < 1.6, f"the second try came {gap:.2f}s after the first"
