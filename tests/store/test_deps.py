"""Dependencies and workflows in the store, on both backends: waiting → queued in the completing
transaction (PostgreSQL's one-statement hot path and SQLite's), transitive failure naming the
root cause, --after-any, cancel cascades, rescue, unknown ids, bulk submit with dependencies,
and workflows started, cancelled and retried."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jobctl.errors import NotFound
from jobctl.models import Delivery, JobSpec, JobState
from jobctl.store import jobs, queue, reads, workflows
from jobctl.store import workers as worker_rows
from jobctl.store.direct import DirectDatabase
from jobctl.store.queue import Outcome
from jobctl.store.url import parse
from jobctl.workflow import load


@pytest.fixture
def db(db_url: str) -> Iterator[DirectDatabase]:
    """The database on the production road: the worker's hot path in `turn()`s, submits,
    cancels, rescues and workflows in `write()`s, reads in `read()`s."""
    database = DirectDatabase(parse(db_url))
    yield database
    database.close()


def register(db: DirectDatabase) -> int:
    with db.write() as conn:
        return worker_rows.register(conn, name="w", hostname="h", pid=1,
                                    queues=["default"], concurrency=4, version="test")


def submit(db: DirectDatabase, **fields: Any) -> int:
    fields.setdefault("argv", ["true"])
    with db.write() as conn:
        return jobs.submit(conn, JobSpec(**fields))[0]


def state(db: DirectDatabase, job_id: int) -> tuple[JobState, str | None]:
    with db.read() as conn:
        job = reads.get(conn, job_id)
    assert job is not None
    return job.state, job.error


def run(db: DirectDatabase, worker: int, outcome: JobState = JobState.SUCCEEDED) -> list[int]:
    """Claim everything due and end each with `outcome` (through complete_and_claim)."""
    with db.turn() as conn:
        claimed = queue.claim(conn, worker, queue.Claim(["default"], 100, 60.0))
    outcomes = [Outcome(c.id, c.attempt, outcome, outcome.value,
                        0 if outcome is JobState.SUCCEEDED else 1, None, None) for c in claimed]
    with db.turn() as conn:
        queue.complete(conn, worker, outcomes)
    return [c.id for c in claimed]


def test_a_dependent_waits_then_is_queued_by_the_completion(db: DirectDatabase) -> None:
    worker = register(db)
    a = submit(db)
    b = submit(db)
    c = submit(db, after=(a,), after_any=(b,))
    assert state(db, c)[0] is JobState.WAITING
    assert run(db, worker) == [a, b]  # c is not claimable while waiting
    assert state(db, c)[0] is JobState.QUEUED
    assert run(db, worker) == [c]


def test_the_claim_says_whether_anyone_waits_on_the_job(db: DirectDatabase) -> None:
    worker = register(db)
    a = submit(db)
    b = submit(db)
    submit(db, after=(a,))
    with db.turn() as conn:
        claimed = {job.id: job for job in queue.claim(conn, worker,
                                                      queue.Claim(["default"], 10, 60.0))}
    assert set(claimed) == {a, b}
    assert claimed[a].has_dependents
    # PostgreSQL's worker then completes `b` with the statement that skips settling.
    assert claimed[b].has_dependents is not (db.backend.title == "PostgreSQL")


def test_a_dependent_added_while_its_dependency_runs_is_released_by_the_completion(
        db: DirectDatabase) -> None:
    """`a` had no dependents when claimed, so the worker completes it with the plain statement;
    `b`, submitted --after it meanwhile, is still queued by that completion and claimed in the
    same turn."""
    worker = register(db)
    a = submit(db)
    with db.turn() as conn:
        [claimed] = queue.claim(conn, worker, queue.Claim(["default"], 10, 60.0))
    b = submit(db, after=(a,))
    assert state(db, b)[0] is JobState.WAITING
    ended = Outcome(a, 1, JobState.SUCCEEDED, "succeeded", 0, None, None,
                    has_dependents=claimed.has_dependents)
    # The worker's own turn: autocommitted statements on PostgreSQL (so `now()` moves on
    # between them), a transaction per turn on SQLite.
    with db.turn() as conn:
        applied, next_jobs = queue.complete_and_claim(
            conn, worker, [ended], queue.Claim(["default"], 10, 60.0))
    assert applied == {a}
    assert [job.id for job in next_jobs] == [b]


def test_a_failure_ends_ok_dependents_transitively_but_not_after_any_ones(
        db: DirectDatabase) -> None:
    worker = register(db)
    a = submit(db)
    b = submit(db, after=(a,))
    c = submit(db, after=(b,))
    d = submit(db, after_any=(b,))
    sibling = submit(db)
    with db.turn() as conn:
        [job] = [j for j in queue.claim(conn, worker,
                                        queue.Claim(["default"], 100, 60.0)) if j.id == a]
    with db.turn() as conn:
        queue.complete(conn, worker,
                       [Outcome(a, 1, JobState.FAILED, "failed", 3, None, None)])
    assert state(db, b) == (JobState.FAILED, f"dependency {a} failed")
    assert state(db, c) == (JobState.FAILED, f"dependency {a} failed")
    assert state(db, d)[0] is JobState.QUEUED
    assert state(db, sibling)[0] is JobState.RUNNING
    assert job.id == a


def test_cancel_cancels_what_waits_on_it(db: DirectDatabase) -> None:
    a = submit(db, run_in_s=3600.0)
    b = submit(db, after=(a,))
    c = submit(db, after=(b,))
    d = submit(db, after_any=(a,))
    e = submit(db, after_any=(c,))  # released by what the cancel ended on the way
    with db.write() as conn:
        jobs.cancel(conn, a)
    assert state(db, b) == (JobState.CANCELLED, f"dependency {a} cancelled")
    assert state(db, c) == (JobState.CANCELLED, f"dependency {a} cancelled")
    assert state(db, d)[0] is JobState.QUEUED
    assert state(db, e)[0] is JobState.QUEUED


def test_a_lost_at_most_once_dependency_fails_its_dependents_in_rescue(db: DirectDatabase) -> None:
    worker = register(db)
    a = submit(db, delivery=Delivery.AT_MOST_ONCE)
    b = submit(db, after=(a,))
    with db.turn() as conn:
        queue.claim(conn, worker, queue.Claim(["default"], 10, 0.01))
    import time

    time.sleep(0.05)
    with db.write() as conn:
        queue.rescue(conn)
    assert state(db, a)[0] is JobState.LOST
    assert state(db, b) == (JobState.FAILED, f"dependency {a} lost")


def test_unknown_dependency_is_not_found_and_writes_nothing(db: DirectDatabase) -> None:
    a = submit(db)
    with pytest.raises(NotFound, match="999"), db.write() as conn:
        jobs.submit_many(conn, [JobSpec(argv=["true"]), JobSpec(argv=["true"],
                                                               after=(a, 999))])
    with db.read() as conn:
        assert [j.id for j in reads.list_jobs(conn)] == [a]


def test_after_an_already_failed_job_ends_at_once(db: DirectDatabase) -> None:
    worker = register(db)
    a = submit(db)
    run(db, worker, JobState.FAILED)
    b = submit(db, after=(a,))
    assert state(db, b) == (JobState.FAILED, f"dependency {a} failed")
    c = submit(db, after_any=(a,))
    assert state(db, c)[0] is JobState.QUEUED


def test_status_shows_both_directions(db: DirectDatabase) -> None:
    a = submit(db)
    b = submit(db, after=(a,))
    c = submit(db, after_any=(b,))
    with db.read() as conn:
        assert [(d.job_id, d.condition.value) for d in reads.waits_for(conn, c)] == \
            [(b, "any")]
        assert [d.job_id for d in reads.needed_by(conn, a)] == [b]
        assert [d.job_id for d in reads.needed_by(conn, b)] == [c]


def test_the_sweep_releases_a_job_whose_dependencies_ended_unnoticed(db: DirectDatabase) -> None:
    """What two concurrent PostgreSQL completions can leave behind: a waiting job whose every
    dependency succeeded. The rescuer's sweep queues it."""
    a = submit(db)
    b = submit(db, after=(a,))
    with db.write() as conn:  # no parameter, so no backend's parameter style
        conn.execute(f"UPDATE jobs SET state = 'succeeded' WHERE id = {int(a)}")
    assert state(db, b)[0] is JobState.WAITING
    with db.write() as conn:
        queue.rescue(conn)
    assert state(db, b)[0] is JobState.QUEUED


DIAMOND = """
[workflow]
name = "diamond"
retries = 2
[tasks.a]
command = "echo {day}"
[tasks.b]
command = ["echo", "b-{day}"]
needs = ["a"]
[tasks.c]
command = "exit 1"
needs = ["a"]
[tasks.d]
command = "true"
needs = ["b", "c"]
[tasks.e]
command = "true"
needs_any = ["c"]
"""


def test_workflow_start_fail_and_retry(db: DirectDatabase) -> None:
    worker = register(db)
    with db.write() as conn:
        wid = workflows.start(conn, load(DIAMOND, "d.toml"), {"day": "mon"})
    assert wid is not None
    with db.read() as conn:
        wf = workflows.get(conn, wid)
    assert wf is not None
    assert [t.task for t in wf.tasks] == ["a", "b", "c", "d", "e"]
    assert wf.tasks[0].argv == ["/bin/sh", "-c", "echo mon"]
    assert wf.tasks[1].argv == ["echo", "b-mon"]
    assert [t.state for t in wf.tasks] == [JobState.QUEUED] + [JobState.WAITING] * 4
    ids = {t.task: t.id for t in wf.tasks}
    run(db, worker)  # a
    with db.turn() as conn:
        claimed = queue.claim(conn, worker, queue.Claim(["default"], 10, 60.0))
        by_id = {c.id: c for c in claimed}
        queue.complete(conn, worker, [
            Outcome(ids["b"], by_id[ids["b"]].attempt, JobState.SUCCEEDED, "succeeded", 0, None,
                    None),
            Outcome(ids["c"], by_id[ids["c"]].attempt, JobState.FAILED, "failed", 1, None, None),
        ])
    assert state(db, ids["d"]) == (JobState.FAILED, f"dependency {ids['c']} failed")
    assert state(db, ids["e"])[0] is JobState.QUEUED
    run(db, worker)  # e
    with db.read() as conn:
        assert workflows.get(conn, wid).state.value == "failed"  # type: ignore[union-attr]
    with db.write() as conn:
        again = workflows.retry(conn, wid)
    assert sorted(again) == sorted([ids["c"], ids["d"]])
    assert state(db, ids["c"])[0] is JobState.QUEUED
    assert state(db, ids["d"])[0] is JobState.WAITING
    assert run(db, worker) == [ids["c"]]
    assert run(db, worker) == [ids["d"]]
    with db.read() as conn:
        wf = workflows.get(conn, wid)
    assert wf is not None and wf.state.value == "succeeded"
    assert {t.task: t.attempt for t in wf.tasks} == {"a": 1, "b": 1, "c": 2, "d": 1, "e": 1}


def test_workflow_cancel_and_schedule_uniqueness(db: DirectDatabase) -> None:
    from datetime import UTC, datetime

    definition = load(DIAMOND, "d.toml")
    fire = datetime(2024, 1, 1, tzinfo=UTC)
    with db.write() as conn:
        wid = workflows.start(conn, definition, {}, schedule_id=7, fire_time=fire)
        again = workflows.start(conn, definition, {}, schedule_id=7, fire_time=fire)
    assert wid is not None and again is None
    with db.write() as conn:
        cancelled = workflows.cancel(conn, wid)
    assert len(cancelled) == 5
    with db.read() as conn:
        wf = workflows.get(conn, wid)
    assert wf is not None
    assert {t.state for t in wf.tasks} == {JobState.CANCELLED}
    assert wf.state.value == "cancelled"
