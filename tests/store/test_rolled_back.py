"""Which driver errors mean "the database undid the transaction, do it again" (direct.rolled_back,
what the worker retries its turn on): a real deadlock on PostgreSQL is one; a constraint
violation, and SQLite's errors, are not."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest

from jobctl.store.direct import rolled_back


def test_a_real_deadlock_is_rolled_back_and_nothing_else_is(pg_url: str, tmp_path: Path) -> None:
    url = pg_url.replace("+psycopg", "")
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute("CREATE TABLE pair (id int PRIMARY KEY, n int)")
        setup.execute("INSERT INTO pair VALUES (1, 0), (2, 0)")
    errors: list[BaseException] = []
    both_hold_one = threading.Barrier(2)

    def take(first: int, second: int) -> None:
        with psycopg.connect(url) as conn:
            try:
                conn.execute("UPDATE pair SET n = n + 1 WHERE id = %s", (first,))
                both_hold_one.wait(10)
                conn.execute("UPDATE pair SET n = n + 1 WHERE id = %s", (second,))
                conn.commit()
            except psycopg.Error as error:
                errors.append(error)
                conn.rollback()

    threads = [threading.Thread(target=take, args=order) for order in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    [deadlock] = errors  # the server broke the cycle by undoing one of the two
    assert isinstance(deadlock, psycopg.errors.DeadlockDetected) and rolled_back(deadlock)
    with (psycopg.connect(url, autocommit=True) as conn,
          pytest.raises(psycopg.errors.UniqueViolation) as duplicate):
        conn.execute("INSERT INTO pair VALUES (1, 0)")
    assert not rolled_back(duplicate.value)
    with (sqlite3.connect(tmp_path / "x.db") as lite,
          pytest.raises(sqlite3.OperationalError) as locked):
        lite.execute("SELECT * FROM missing")
    assert not rolled_back(locked.value)
    assert not rolled_back(RuntimeError("no sqlstate"))


def test_a_worker_does_its_turn_again_when_the_database_rolled_it_back(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The turn that would record a job's end is undone by a deadlock (as the server does to
    one side of a cycle): the worker does it again, and the job ends once, succeeded."""
    from jobctl.models import JobSpec, JobState
    from jobctl.store import jobs, queue, reads
    from jobctl.store.direct import open_or_create
    from jobctl.worker import loop

    database = open_or_create(pg_url)
    with database.write() as conn:
        job_id, _ = jobs.submit(conn, JobSpec(argv=["true"]))
    real = queue.complete_and_claim
    undone: list[int] = []

    def deadlocked_once(conn: object, worker_id: int, outcomes: list[object], *args: object,
                        **kwargs: object) -> object:
        if outcomes and not undone:
            undone.append(len(outcomes))
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return real(conn, worker_id, outcomes, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop.queue, "complete_and_claim", deadlocked_once)
    worker = loop.Worker(database, loop.WorkerSettings(burst=True, cgroups=False))
    assert worker.run() == 0
    assert undone == [1]
    with database.read() as conn:
        job = reads.get(conn, job_id)
        attempts = reads.list_attempts(conn, job_id)
    database.close()
    assert job is not None and job.state is JobState.SUCCEEDED
    assert [attempt.outcome for attempt in attempts] == ["succeeded"]


def test_a_renewal_the_database_rolled_back_is_done_again_at_once(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat's renewal undone by a deadlock (with the worker's own turn) is tried again
    in the same pass: the leases' clock moves on, nothing waits for the next pass."""
    from jobctl.metrics import NO_METRICS
    from jobctl.store import queue
    from jobctl.store import workers as worker_rows
    from jobctl.store.direct import open_or_create
    from jobctl.worker import heartbeat
    from jobctl.worker.readahead import Held

    database = open_or_create(pg_url)
    with database.write() as conn:
        worker_id = worker_rows.register(conn, name="w", hostname="h", pid=1,
                                         queues=["default"], concurrency=1, version="test")
    real = queue.renew
    calls: list[int] = []

    def deadlocked_once(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(heartbeat.queue, "renew", deadlocked_once)
    beat = heartbeat.Heartbeat(database, Held(1), 30.0, NO_METRICS, lambda: None)
    beat._worker_id = worker_id
    before = beat.fence_deadline()
    beat._renew_again_if_rolled_back()
    assert len(calls) == 2 and beat.fence_deadline() > before
    database.close()
