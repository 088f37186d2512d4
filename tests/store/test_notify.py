"""Wake-ups on PostgreSQL (the only backend that notifies): a subscription receives what a
commit sends, the worker's turn wakes the workers of the queues it released dependents into,
the listener thread tells its owner of each connect, and an unreachable server is
DatabaseUnavailable (what the listener retries on)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from jobctl.errors import DatabaseUnavailable
from jobctl.models import JobSpec, JobState
from jobctl.store import jobs, notify, queue
from jobctl.store import workers as worker_rows
from jobctl.store.direct import DirectDatabase
from jobctl.store.queue import Outcome


@pytest.fixture
def direct(pg_url: str) -> Iterator[DirectDatabase]:
    database = DirectDatabase.open(pg_url)
    assert database is not None
    yield database
    database.close()


def received(subscription: notify.Subscription) -> set[tuple[str, str]]:
    """What arrives within a second (a commit's notifications come together, right after it)."""
    return set(subscription.wait(timeout=1.0))


def test_a_subscription_receives_what_a_commit_sends(direct: DirectDatabase) -> None:
    assert direct.listen_target is not None
    with contextlib.closing(notify.subscribe(direct.listen_target,
                                             [notify.JOBS_CHANNEL])) as subscription:
        with direct.write() as conn:
            jobs.submit(conn, JobSpec(argv=["true"], queue="first"))
            notify.cancel_requested(conn, 1)  # another channel: not received
        assert next(subscription.wait(timeout=5.0, stop_after=1)) == (notify.JOBS_CHANNEL,
                                                                      "first")


def test_the_turn_that_releases_dependents_wakes_their_queues(direct: DirectDatabase) -> None:
    assert direct.listen_target is not None
    with direct.write() as conn:
        worker = worker_rows.register(conn, name="w", hostname="h", pid=1, queues=["default"],
                                      concurrency=4, version="test")
        a = jobs.submit(conn, JobSpec(argv=["true"]))[0]
        jobs.submit(conn, JobSpec(argv=["true"], queue="later", after=(a,)))
    with direct.write() as conn:  # a transaction's now() is its start: the jobs are due after
        [claimed] = queue.claim(conn, worker, queue.Claim(["default"], 10, 60.0))
    assert claimed.has_dependents  # so the turn takes the statement that settles
    with contextlib.closing(notify.subscribe(
            direct.listen_target, [notify.JOBS_CHANNEL, notify.DONE_CHANNEL])) as subscription:
        with direct.turn() as conn:
            queue.complete(conn, worker, [Outcome(a, 1, JobState.SUCCEEDED, "succeeded", 0,
                                                  None, None)])
        assert received(subscription) == {(notify.JOBS_CHANNEL, "later"),
                                          (notify.DONE_CHANNEL, "")}


def test_the_listener_tells_its_owner_of_each_connect_then_passes_notifications_on(
        direct: DirectDatabase) -> None:
    assert direct.listen_target is not None
    heard: list[tuple[str, str]] = []
    woken = threading.Condition()

    def on_notify(channel: str, payload: str) -> None:
        with woken:
            heard.append((channel, payload))
            woken.notify_all()

    listener = notify.Listener(direct.listen_target, [notify.WORKER_CHANNEL], on_notify)
    listener.start()
    try:
        with woken:
            assert woken.wait_for(lambda: heard == [("", "")], timeout=10.0)
        with direct.write() as conn:
            notify.worker_stop_requested(conn, 7)
        with woken:
            assert woken.wait_for(lambda: len(heard) == 2, timeout=10.0)
        assert heard == [("", ""), (notify.WORKER_CHANNEL, "7")]
    finally:
        listener.stop()


def test_an_unreachable_server_is_database_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(DatabaseUnavailable, match=f"cannot reach PostgreSQL at .*:{port}/"):
            notify.subscribe(f"postgresql://nobody@127.0.0.1:{port}/db", [notify.JOBS_CHANNEL])
