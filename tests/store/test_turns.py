"""The hot path's new parts in the transaction mode production uses (`DirectDatabase.turn()`:
autocommitted statements on PostgreSQL, one BEGIN IMMEDIATE transaction on SQLite), on both
backends: read-ahead claims, start marks, losses, and what a burst worker sees."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobctl.models import Delivery, JobSpec, JobState
from jobctl.store import jobs, queue, reads
from jobctl.store import workers as worker_rows
from jobctl.store.direct import DirectDatabase, open_or_create
from jobctl.store.queue import Outcome

LEASE_S = 60.0


@pytest.fixture
def direct(db_url: str) -> Iterator[DirectDatabase]:
    database = open_or_create(db_url)
    yield database
    database.close()


def register(db: DirectDatabase, queues: list[str] | None = None, name: str = "w") -> int:
    with db.write() as conn:
        return worker_rows.register(conn, name=name, hostname="host", pid=1,
                                    queues=queues or ["default"], concurrency=1,
                                    version="test")


def submit(db: DirectDatabase, **fields: object) -> int:
    with db.write() as conn:
        job_id, _ = jobs.submit(conn, JobSpec(argv=["true"], **fields))  # type: ignore[arg-type]
    return job_id


def in_buffer(db: DirectDatabase, job_id: int) -> bool:
    with db.read() as conn:
        # The id written into the statement: no parameter, so no backend's parameter style.
        return bool(conn.scalar(f"SELECT in_buffer FROM jobs WHERE id = {int(job_id)}"))


def test_a_turn_marks_started_jobs_and_completes_others(direct: DirectDatabase) -> None:
    w = register(direct)
    first, second, third = (submit(direct, priority=p) for p in (9, 5, 1))
    with direct.turn() as conn:
        _, claimed = queue.complete_and_claim(
            conn, w, [], queue.Claim(["default"], 3, LEASE_S, start_now=1))
    assert [(job.id, job.in_buffer) for job in claimed] == [
        (first, False), (second, True), (third, True)]
    done = Outcome(first, 1, JobState.SUCCEEDED, "succeeded", 0, None, None,
                   has_dependents=False)
    # `second` started from the buffer; `first` ends in the same turn (listed in both: the
    # completion wins, and one statement never touches a row twice).
    with direct.turn() as conn:
        applied, more = queue.complete_and_claim(
            conn, w, [done], queue.Claim(["default"], 0, LEASE_S), [second, first])
    assert applied == {first} and more == []
    assert not in_buffer(direct, second)
    assert in_buffer(direct, third)
    with direct.read() as conn:
        ended = reads.get(conn, first)
    assert ended is not None and ended.state is JobState.SUCCEEDED


def test_at_most_once_jobs_are_never_claimed_into_the_buffer(direct: DirectDatabase) -> None:
    w = register(direct)
    now = submit(direct, priority=9, delivery=Delivery.AT_MOST_ONCE)
    later = submit(direct, priority=5, delivery=Delivery.AT_MOST_ONCE)
    least = submit(direct, priority=1)
    with direct.turn() as conn:
        _, claimed = queue.complete_and_claim(
            conn, w, [], queue.Claim(["default"], 3, LEASE_S, start_now=1))
    assert [(job.id, job.in_buffer) for job in claimed] == [(now, False), (least, True)]
    with direct.read() as conn:
        left = reads.get(conn, later)
    assert left is not None and left.state is JobState.QUEUED


def test_a_lost_outcome_costs_no_retry_and_counts_a_loss(direct: DirectDatabase) -> None:
    """The worker fenced its own job: the completion re-queues it with its retries intact."""
    w = register(direct)
    job_id = submit(direct)
    with direct.turn() as conn:
        _, [job] = queue.complete_and_claim(conn, w, [], queue.Claim(["default"], 1, LEASE_S))
    assert (job.id, job.in_buffer, job.losses, job.max_lost) == (job_id, False, 0, 3)
    lost = Outcome(job_id, 1, JobState.QUEUED, "lost", None, 9, "fenced", has_dependents=False)
    with direct.turn() as conn:
        applied, _ = queue.complete_and_claim(conn, w, [lost], queue.NO_CLAIM)
    assert applied == {job_id}
    with direct.read() as conn:
        found = reads.get(conn, job_id)
        outcomes = [a.outcome for a in reads.list_attempts(conn, job_id)]
    assert found is not None
    assert (found.state, found.losses, found.max_attempts) == (JobState.QUEUED, 1, 2)
    assert outcomes == ["lost"]


def test_a_burst_worker_sees_due_running_and_stuck_work(direct: DirectDatabase) -> None:
    w = register(direct)
    blocker = submit(direct, queue="gpu")
    waiting = submit(direct, after=(blocker,))
    claim = queue.Claim(["default"], 0, LEASE_S, user="nobody-here")
    with direct.read() as conn:
        backlog = queue.burst_backlog(conn, claim)
    assert (backlog.due, backlog.running, backlog.waiting) == (0, 0, (waiting,))
    assert backlog.jobs[blocker].queue == "gpu" and "gpu" not in backlog.served
    register(direct, queues=["gpu"], name="gpu-worker")
    with direct.read() as conn:
        assert "gpu" in queue.burst_backlog(conn, claim).served
    mine_not = submit(direct, user="somebody-else")
    with direct.read() as conn:
        backlog = queue.burst_backlog(conn, claim)
    assert backlog.due == 0 and list(backlog.not_mine) == [mine_not]
    due = submit(direct)
    with direct.read() as conn:
        backlog = queue.burst_backlog(conn, claim)
    assert backlog.due == 1, (due, backlog)
    with direct.turn() as conn:
        queue.complete_and_claim(conn, w, [], queue.Claim(["default"], 5, LEASE_S,
                                                          user="nobody-here"))
    with direct.read() as conn:
        backlog = queue.burst_backlog(conn, claim)
    assert (backlog.due, backlog.running) == (0, 1)


def test_output_and_the_end_of_a_job_that_is_no_longer_there_are_dropped(
        direct: DirectDatabase) -> None:
    """A worker's job can vanish under it: its row lost with a primary that failed over to an
    asynchronous standby. Its output and its result are then dropped, in a turn that goes on
    (before, the output's foreign key failed the turn, and the worker died of it)."""
    w = register(direct)
    gone, kept = submit(direct), submit(direct)
    with direct.turn() as conn:
        _, claimed = queue.complete_and_claim(conn, w, [], queue.Claim(["default"], 2, LEASE_S,
                                                                       start_now=2))
    assert {job.id for job in claimed} == {gone, kept}
    with direct.write() as conn:
        conn.execute(f"DELETE FROM jobs WHERE id = {int(gone)}")
    with direct.turn() as conn:
        queue.write_output(conn, [queue.OutputChunk(gone, 1, "stdout", 0, b"lost\n"),
                                  queue.OutputChunk(kept, 1, "stdout", 0, b"kept\n")])
        applied, _ = queue.complete_and_claim(conn, w, [
            Outcome(job_id, 1, JobState.SUCCEEDED, "succeeded", 0, None, None,
                    has_dependents=False) for job_id in (gone, kept)],
            queue.Claim(["default"], 0, LEASE_S))
    assert applied == {kept}
    with direct.read() as conn:
        chunks = conn.execute("SELECT job_id, data FROM job_logs").fetchall()
    assert [(job_id, bytes(data)) for job_id, data in chunks] == [(kept, b"kept\n")]
