"""The hot path and the job store, called directly on both backends: claim order and limits,
concurrent claims, conditional completion, lease rescue, renewal, release, and the job
functions around them (unique keys, bulk submit, cancel, retry)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobctl.models import Attempt, Delivery, Job, JobSpec, JobState, WorkerState
from jobctl.store import jobs, queue, reads
from jobctl.store import workers as worker_rows
from jobctl.store.direct import DirectDatabase
from jobctl.store.identity import unix_user
from jobctl.store.queue import ClaimedJob, Outcome
from jobctl.store.url import parse

LEASE_S = 60.0


@pytest.fixture
def db(db_url: str) -> Iterator[DirectDatabase]:
    """The database on the production road: the worker's hot path in `turn()`s, submits, cancels,
    retries, renewals, releases and rescues in `write()`s, reads in `read()`s."""
    database = DirectDatabase(parse(db_url))
    yield database
    database.close()


# --- helpers --------------------------------------------------------------------------------------


def register(db: DirectDatabase, name: str = "w") -> int:
    with db.write() as conn:
        return worker_rows.register(conn, name=name, hostname="host", pid=1,
                                    queues=["default"], concurrency=4, version="test")


def submit(db: DirectDatabase, **fields: Any) -> int:
    fields.setdefault("argv", ["true"])
    with db.write() as conn:
        job_id, created = jobs.submit(conn, JobSpec(**fields))
    assert created
    return job_id


def claim(db: DirectDatabase, worker: int, queues: Sequence[str] = ("default",), limit: int = 10,
          lease_s: float = LEASE_S) -> list[ClaimedJob]:
    with db.turn() as conn:
        return queue.claim(conn, worker, queue.Claim(list(queues), limit, lease_s))


def claim_one(db: DirectDatabase, worker: int, **kwargs: Any) -> ClaimedJob:
    [job] = claim(db, worker, limit=1, **kwargs)
    return job


def outcome(job_id: int, attempt: int, state: JobState = JobState.SUCCEEDED,
            exit_code: int | None = 0, **fields: Any) -> Outcome:
    return Outcome(job_id=job_id, attempt=attempt, state=state,
                   attempt_outcome=fields.pop("attempt_outcome", state.value),
                   exit_code=exit_code, signal=None, error=fields.pop("error", None), **fields)


def complete(db: DirectDatabase, worker: int, *outcomes: Outcome) -> set[int]:
    with db.turn() as conn:
        return queue.complete(conn, worker, outcomes)


def get(db: DirectDatabase, job_id: int) -> Job:
    with db.read() as conn:
        job = reads.get(conn, job_id)
    assert job is not None
    return job


def attempt_rows(db: DirectDatabase, job_id: int) -> list[Attempt]:
    """The job's ended attempts (its `attempts` rows), in order."""
    with db.read() as conn:
        return [row for row in reads.list_attempts(conn, job_id) if row.outcome is not None]


def rescue(db: DirectDatabase) -> queue.Rescued:
    with db.write() as conn:
        return queue.rescue(conn)


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


# --- claim ----------------------------------------------------------------------------------------


def test_claim_takes_highest_priority_first_then_oldest(db: DirectDatabase) -> None:
    w = register(db)
    low_new = submit(db, priority=0)
    high_a = submit(db, priority=5)
    high_b = submit(db, priority=5)
    mid = submit(db, priority=1)
    low_old = submit(db, priority=0, run_at=ago(100))  # due earlier than low_new
    negative = submit(db, priority=-3, run_at=ago(1000))
    order = [claim_one(db, w).id for _ in range(6)]
    assert order == [high_a, high_b, mid, low_old, low_new, negative]
    assert claim(db, w) == []


def test_claim_in_one_batch_takes_the_best(db: DirectDatabase) -> None:
    w = register(db)
    ids = [submit(db, priority=p) for p in (1, 9, 3, 9, 7, 0)]
    claimed = claim(db, w, limit=3)
    assert {job.id for job in claimed} == {ids[1], ids[3], ids[4]}
    assert all(job.attempt == 1 for job in claimed)


def test_claim_never_returns_more_than_the_limit(db: DirectDatabase) -> None:
    w = register(db)
    for q in ("a", "b"):
        for _ in range(5):
            submit(db, queue=q)
    assert claim(db, w, queues=["a", "b"], limit=0) == []
    assert len(claim(db, w, queues=["a", "b"], limit=3)) == 3
    assert len(claim(db, w, queues=["a", "b"], limit=1)) == 1
    assert len(claim(db, w, queues=["a", "b"], limit=100)) == 6
    assert claim(db, w, queues=["a", "b"], limit=100) == []


def test_claim_respects_queues(db: DirectDatabase) -> None:
    w = register(db)
    a = submit(db, queue="a")
    b = submit(db, queue="b")
    c = submit(db, queue="c")
    assert claim(db, w, queues=["nope"]) == []
    assert [job.id for job in claim(db, w, queues=["b"])] == [b]
    assert {job.id for job in claim(db, w, queues=["a", "c"])} == {a, c}
    claimed = get(db, a)
    assert claimed.state is JobState.RUNNING and claimed.worker_id == w


def test_claim_respects_run_at(db: DirectDatabase) -> None:
    w = register(db)
    later = submit(db, run_at=datetime.now(UTC) + timedelta(hours=1))
    later_in = submit(db, run_in_s=3600.0)
    soon = submit(db, run_in_s=0.3)
    due = submit(db, run_at=ago(5))
    assert [job.id for job in claim(db, w)] == [due]
    time.sleep(0.5)
    assert [job.id for job in claim(db, w)] == [soon]
    assert claim(db, w) == []
    assert get(db, later).state is JobState.QUEUED
    assert get(db, later_in).state is JobState.QUEUED


def test_claimed_job_carries_what_the_worker_needs(db: DirectDatabase) -> None:
    w = register(db)
    job_id = submit(db, argv=["sh", "-c", "exit 3"], env={"A": "1"}, cwd="/tmp", timeout_s=9.5,
                    retries=2, backoff_s=4.0, delivery=Delivery.AT_MOST_ONCE, queue="q")
    [job] = claim(db, w, queues=["q"], lease_s=30.0)
    with db.read() as conn:  # who submitted it (--run-as-submitter runs it as that one)
        submitter = (conn.scalar("SELECT session_user") if db.backend.title == "PostgreSQL"
                     else unix_user())
    assert job == ClaimedJob(id=job_id, attempt=1, argv=["sh", "-c", "exit 3"], env={"A": "1"},
                             cwd="/tmp", timeout_s=9.5, max_attempts=3, backoff_s=4.0,
                             delivery=Delivery.AT_MOST_ONCE, queue="q",
                             # PostgreSQL's claim says nobody waits on it; SQLite's doesn't look
                             has_dependents=db.backend.title != "PostgreSQL",
                             submitted_by=submitter)
    row = get(db, job_id)
    assert row.lease_until is not None and row.started_at is not None
    assert timedelta(seconds=25) < row.lease_until - row.started_at <= timedelta(seconds=31)


def test_concurrent_claims_are_disjoint(db: DirectDatabase) -> None:
    total, threads, batch = 200, 4, 5
    with db.write() as conn:
        submitted = jobs.submit_many(conn, [JobSpec(argv=["true"]) for _ in range(total)])
    workers = [register(db, f"w{i}") for i in range(threads)]
    claimed: dict[int, list[int]] = {w: [] for w in workers}
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def drain(worker: int) -> None:
        own = db.clone()  # a connection of its own, as each worker process has
        try:
            start.wait()
            while True:
                got = claim(own, worker, limit=batch)
                assert len(got) <= batch
                if not got:
                    return
                claimed[worker].extend(job.id for job in got)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)
        finally:
            own.close()

    pool = [threading.Thread(target=drain, args=(w,)) for w in workers]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    assert not errors, errors
    everything = [job_id for ids in claimed.values() for job_id in ids]
    assert len(everything) == len(set(everything)), "a job was claimed twice"
    assert set(everything) == set(submitted)
    with db.read() as conn:
        rows = reads.get_many(conn, submitted)
    for worker, ids in claimed.items():
        for job_id in ids:
            assert rows[job_id].worker_id == worker
            assert rows[job_id].attempt == 1
            assert rows[job_id].state is JobState.RUNNING


# --- complete -------------------------------------------------------------------------------------


def test_complete_applies_only_for_the_right_worker_attempt_and_state(db: DirectDatabase) -> None:
    w, other = register(db, "w"), register(db, "other")
    job_id = submit(db)
    job = claim_one(db, w)
    assert complete(db, other, outcome(job_id, 1)) == set()
    assert complete(db, w, outcome(job_id, 2)) == set()
    assert get(db, job_id).state is JobState.RUNNING
    assert attempt_rows(db, job_id) == []

    assert complete(db, w, outcome(job_id, job.attempt)) == {job_id}
    done = get(db, job_id)
    assert done.state is JobState.SUCCEEDED
    assert done.exit_code == 0 and done.finished_at is not None and done.lease_until is None
    [row] = attempt_rows(db, job_id)
    assert (row.attempt, row.worker_id, row.outcome, row.exit_code) == (1, w, "succeeded", 0)

    # The same attempt again, or from another worker: refused, nothing changes.
    assert complete(db, w, outcome(job_id, 1, JobState.FAILED, 1)) == set()
    assert complete(db, other, outcome(job_id, 1, JobState.FAILED, 1)) == set()
    assert get(db, job_id) == done
    assert len(attempt_rows(db, job_id)) == 1


def test_complete_many_at_once_applies_each_on_its_own(db: DirectDatabase) -> None:
    w, other = register(db, "w"), register(db, "other")
    a, b = submit(db), submit(db)
    c = submit(db, queue="c")
    claim(db, w, limit=2)
    claim(db, other, queues=["c"])
    applied = complete(db, w, outcome(a, 1), outcome(b, 1, JobState.FAILED, 2),
                       outcome(c, 1))
    assert applied == {a, b}
    assert get(db, a).state is JobState.SUCCEEDED
    assert (get(db, b).state, get(db, b).exit_code) == (JobState.FAILED, 2)
    assert get(db, c).state is JobState.RUNNING


def test_complete_with_a_retry_requeues_later(db: DirectDatabase) -> None:
    w = register(db)
    job_id = submit(db, retries=2)
    claim_one(db, w)
    assert complete(db, w, outcome(job_id, 1, JobState.QUEUED, 1, attempt_outcome="failed",
                                   retry_delay_s=3600.0)) == {job_id}
    job = get(db, job_id)
    assert (job.state, job.attempt) == (JobState.QUEUED, 1)
    assert job.run_at > datetime.now(UTC) + timedelta(minutes=50)
    assert claim(db, w) == []
    assert [row.outcome for row in attempt_rows(db, job_id)] == ["failed"]


# --- rescue ---------------------------------------------------------------------------------------


def test_rescue_of_expired_leases(db: DirectDatabase) -> None:
    """Losing a worker costs no retry: an at-least-once job with none left runs again; it
    fails only when it has taken `max_lost` workers down. At-most-once jobs become lost."""
    w = register(db)
    retry_left = submit(db, retries=1, queue="a")
    at_most_once = submit(db, retries=3, delivery=Delivery.AT_MOST_ONCE, queue="b")
    no_retry_left = submit(db, queue="c")  # the defaults: no retries, max_lost 3
    cancel_me = submit(db, retries=3, queue="d")
    healthy = submit(db, queue="e")
    last_loss = submit(db, queue="f", max_lost=1)
    for q in "abcdf":
        claim(db, w, queues=[q], lease_s=0.05)
    claim(db, w, queues=["e"], lease_s=LEASE_S)
    with db.write() as conn:
        assert jobs.cancel(conn, cancel_me) is JobState.RUNNING
    time.sleep(0.2)

    rescued = rescue(db)
    assert sorted(rescued.requeued) == [retry_left, no_retry_left]
    assert rescued.ended == {at_most_once: JobState.LOST, last_loss: JobState.FAILED,
                             cancel_me: JobState.CANCELLED}

    for job_id in (retry_left, no_retry_left):
        requeued = get(db, job_id)
        assert (requeued.state, requeued.attempt, requeued.losses) == (JobState.QUEUED, 1, 1)
        assert requeued.max_attempts == get_spec_attempts(job_id, retry_left) + 1
        assert requeued.lease_until is None and requeued.finished_at is None
        [row] = attempt_rows(db, job_id)
        assert (row.attempt, row.outcome, row.worker_id) == (1, "lost", w)
    for job_id, state in rescued.ended.items():
        job = get(db, job_id)
        assert job.state is state
        assert job.finished_at is not None and job.lease_until is None
        assert [r.attempt for r in attempt_rows(db, job_id)] == [1]
    failed = get(db, last_loss)
    assert failed.losses == 1
    assert failed.error == f"worker {w} lost its lease (1 workers lost under it, the most allowed)"
    assert get(db, healthy).state is JobState.RUNNING

    # Idempotent: nothing is left to rescue.
    assert rescue(db) == queue.Rescued([], {})

    # The old worker's results are refused, whatever they say.
    for job_id in (retry_left, at_most_once, no_retry_left, cancel_me):
        before = get(db, job_id)
        assert complete(db, w, outcome(job_id, 1)) == set()
        assert get(db, job_id) == before

    # The requeued job runs again as attempt 2; its old attempt still cannot complete.
    other = register(db, "other")
    again = claim_one(db, other, queues=["a"])
    assert (again.id, again.attempt) == (retry_left, 2)
    assert complete(db, w, outcome(retry_left, 1)) == set()
    assert complete(db, w, outcome(retry_left, 2)) == set()
    assert get(db, retry_left).state is JobState.RUNNING
    assert complete(db, other, outcome(retry_left, 2)) == {retry_left}
    assert [r.outcome for r in attempt_rows(db, retry_left)] == ["lost", "succeeded"]


def get_spec_attempts(job_id: int, retry_left: int) -> int:
    """max_attempts as submitted by the test above: retries + 1."""
    return 2 if job_id == retry_left else 1


def test_a_job_that_keeps_losing_its_worker_fails_after_max_lost(db: DirectDatabase) -> None:
    """The default max_lost is 3: two losses re-queue it, the third fails it; every loss has
    its attempts row."""
    w = register(db)
    job_id = submit(db)
    for round_ in range(3):
        claim(db, w, lease_s=0.05)
        time.sleep(0.15)
        rescued = rescue(db)
        if round_ < 2:
            assert rescued.requeued == [job_id]
    job = get(db, job_id)
    assert (job.state, job.losses, job.attempt) == (JobState.FAILED, 3, 3)
    assert "3 workers lost under it" in (job.error or "")
    assert [r.outcome for r in attempt_rows(db, job_id)] == ["lost"] * 3


def test_jobs_claimed_into_the_read_ahead_buffer_go_back_uncharged(db: DirectDatabase) -> None:
    """A claim that starts one job at once and buffers the rest: when the worker is lost, the
    started one is charged a loss, the buffered ones go back as if never claimed (no attempt,
    no attempts row), and at-most-once jobs are never buffered at all."""
    w = register(db)
    first = submit(db, priority=9)
    buffered = [submit(db, priority=5) for _ in range(2)]
    most_once = submit(db, priority=1, delivery=Delivery.AT_MOST_ONCE)
    with db.turn() as conn:
        claimed = queue.claim(conn, w,
                              queue.Claim(["default"], 10, 0.05, start_now=1))
    assert [(job.id, job.in_buffer) for job in claimed] == (
        [(first, False)] + [(job_id, True) for job_id in buffered])
    assert get(db, most_once).state is JobState.QUEUED  # never into a buffer
    time.sleep(0.15)
    rescued = rescue(db)
    assert sorted(rescued.requeued) == sorted([first, *buffered])
    assert get(db, first).losses == 1
    for job_id in buffered:
        job = get(db, job_id)
        assert (job.state, job.attempt, job.losses, job.worker_id) == (
            JobState.QUEUED, 0, 0, None)
        assert attempt_rows(db, job_id) == []


def test_a_buffered_job_marked_started_is_charged(db: DirectDatabase) -> None:
    """Once the worker says it started a buffered job (the next turn's `started`), losing the
    worker costs the job a loss like any other."""
    w = register(db)
    job_id = submit(db)
    with db.turn() as conn:
        [job] = queue.claim(conn, w, queue.Claim(["default"], 1, 0.05,
                                                                  start_now=0))
    assert job.in_buffer
    with db.turn() as conn:
        queue.complete_and_claim(conn, w, [], queue.NO_CLAIM, [job_id])
    time.sleep(0.15)
    assert rescue(db).requeued == [job_id]
    found = get(db, job_id)
    assert (found.attempt, found.losses) == (1, 1)
    assert [r.outcome for r in attempt_rows(db, job_id)] == ["lost"]


def test_workers_claim_only_jobs_they_can_run_as(db: DirectDatabase) -> None:
    """`--user`: a root worker may run a job as anyone, any other worker only as itself."""
    w = register(db)
    mine = submit(db, user="alice")
    theirs = submit(db, user="bob")
    anyone = submit(db)
    with db.turn() as conn:
        got = queue.claim(conn, w,
                          queue.Claim(["default"], 10, LEASE_S, user="alice"))
    assert sorted(job.id for job in got) == [mine, anyone]
    assert [job.user for job in got if job.id == mine] == ["alice"]
    with db.turn() as conn:
        got = queue.claim(conn, w,
                          queue.Claim(["default"], 10, LEASE_S, user="root", any_user=True))
    assert [job.id for job in got] == [theirs]


def test_rescue_leaves_live_leases_alone(db: DirectDatabase) -> None:
    w = register(db)
    job_id = submit(db)
    claim(db, w, lease_s=LEASE_S)
    assert rescue(db) == queue.Rescued([], {})
    assert get(db, job_id).state is JobState.RUNNING


# --- renew ----------------------------------------------------------------------------------------


def test_renew_reports_lost_leases_and_cancel_requests(db: DirectDatabase) -> None:
    w, other = register(db, "w"), register(db, "other")
    a, b = submit(db), submit(db)
    expiring = submit(db, queue="x")
    theirs = submit(db, queue="y")
    claim(db, w, limit=2, lease_s=5.0)
    claim(db, w, queues=["x"], lease_s=0.05)
    claim(db, other, queues=["y"])
    lease_before = get(db, a).lease_until
    assert lease_before is not None
    time.sleep(0.2)
    rescue(db)  # takes `expiring` away from w

    with db.write() as conn:
        renewal = queue.renew(conn, w, [a, b, expiring, theirs], LEASE_S)
    assert renewal.held == {a, b}
    assert renewal.cancel == set()
    assert renewal.worker_state is WorkerState.RUNNING
    lease_after = get(db, a).lease_until
    assert lease_after is not None and lease_after > lease_before + timedelta(seconds=30)

    with db.write() as conn:
        jobs.cancel(conn, b)
    with db.write() as conn:
        renewal = queue.renew(conn, w, [a, b], LEASE_S)
    assert renewal.held == {a, b}
    assert renewal.cancel == {b}
    with db.read() as conn:
        assert queue.cancel_requests(conn, w, [a, b]) == {b}

    with db.write() as conn:
        assert queue.renew(conn, 987654, [a], LEASE_S).worker_state is None
    with db.write() as conn:
        assert queue.renew(conn, w, [], LEASE_S).held == set()


def test_a_lost_worker_that_renews_again_is_running_again(db: DirectDatabase) -> None:
    """Marked lost while cut off from the database for longer than a lease, a worker whose
    heartbeat gets through again is a running worker again (tests/fleet: a worker host cut
    off); one that was draining, draining; a stopped one stays stopped."""
    cut_off, stopped = register(db, "cut-off"), register(db, "stopped")
    draining = register(db, "draining")
    with db.write() as conn:
        worker_rows.request_stop(conn, "draining")
        worker_rows.set_state(conn, stopped, WorkerState.STOPPED)
    time.sleep(0.1)
    with db.write() as conn:
        assert queue.mark_lost_workers(conn, 0.05) == 2  # cut-off and draining
    with db.read() as conn:
        assert worker_rows.get_state(conn, cut_off) is WorkerState.LOST

    with db.write() as conn:
        assert queue.renew(conn, cut_off, [], LEASE_S).worker_state is WorkerState.RUNNING
    with db.write() as conn:
        assert queue.renew(conn, stopped, [], LEASE_S).worker_state is WorkerState.STOPPED
    with db.read() as conn:
        assert worker_rows.get_state(conn, draining) is WorkerState.LOST
    with db.write() as conn:  # it was shutting down when cut off: it still is
        assert queue.renew(conn, draining, [], LEASE_S,
                           draining=True).worker_state is WorkerState.DRAINING
    with db.read() as conn:
        assert worker_rows.get_state(conn, cut_off) is WorkerState.RUNNING
        live = [worker.name for worker in worker_rows.list_workers(conn)]
    assert sorted(live) == ["cut-off", "draining"]


# --- release --------------------------------------------------------------------------------------


def test_release_returns_a_job_to_the_queue_with_its_attempt_not_counted(
        db: DirectDatabase) -> None:
    w, other = register(db, "w"), register(db, "other")
    job_id = submit(db, retries=0)
    job = claim_one(db, w)
    with db.write() as conn:
        queue.release(conn, other, [(job_id, job.attempt)])  # not theirs: no effect
    assert get(db, job_id).state is JobState.RUNNING
    with db.write() as conn:
        # wrong attempt: no effect
        queue.release(conn, w, [(job_id, job.attempt + 1)])
    assert get(db, job_id).state is JobState.RUNNING

    with db.write() as conn:
        queue.release(conn, w, [(job_id, job.attempt)])
    released = get(db, job_id)
    assert (released.state, released.attempt) == (JobState.QUEUED, 0)
    assert released.started_at is None and released.lease_until is None
    assert attempt_rows(db, job_id) == []
    assert complete(db, w, outcome(job_id, 1)) == set()

    again = claim_one(db, other)
    assert (again.id, again.attempt) == (job_id, 1)


# --- submit ---------------------------------------------------------------------------------------


def test_submit_with_the_same_unique_key_returns_the_first_id(db: DirectDatabase) -> None:
    with db.write() as conn:
        first = jobs.submit(conn, JobSpec(argv=["true"], unique_key="k"))
    with db.write() as conn:
        second = jobs.submit(conn, JobSpec(argv=["false"], unique_key="k", queue="other"))
    with db.write() as conn:
        third = jobs.submit(conn, JobSpec(argv=["true"], unique_key="k2"))
    with db.write() as conn:
        keyless = [jobs.submit(conn, JobSpec(argv=["true"]))[0] for _ in range(2)]
    assert first[1] is True and second == (first[0], False)
    assert third[1] is True and third[0] != first[0]
    assert len(set(keyless)) == 2
    kept = get(db, first[0])
    assert (kept.argv, kept.queue) == (["true"], "default")
    with db.read() as conn:
        assert len(reads.list_jobs(conn, limit=None)) == 4


def test_submit_many_returns_ids_in_order(db: DirectDatabase) -> None:
    in_an_hour = datetime.now(UTC) + timedelta(hours=1)
    specs = [
        JobSpec(argv=["echo", str(i)], name=f"n{i}", queue=f"q{i % 2}", priority=i,
                labels={"i": str(i)}, run_at=in_an_hour if i == 3 else None,
                run_in_s=600.0 if i == 4 else None)
        for i in range(7)
    ]
    with db.write() as conn:
        ids = jobs.submit_many(conn, specs)
    assert len(ids) == len(specs) == len(set(ids))
    assert ids == sorted(ids)
    for job_id, spec in zip(ids, specs, strict=True):
        job = get(db, job_id)
        assert (job.name, job.queue, job.priority, job.argv, job.labels) == (
            spec.name, spec.queue, spec.priority, spec.argv, spec.labels)
        assert job.state is JobState.QUEUED and job.attempt == 0
    assert abs(get(db, ids[3]).run_at - in_an_hour) < timedelta(seconds=1)
    assert get(db, ids[4]).run_at > datetime.now(UTC) + timedelta(minutes=9)
    assert get(db, ids[0]).run_at < datetime.now(UTC) + timedelta(seconds=5)
    with db.write() as conn:
        assert jobs.submit_many(conn, []) == []


# --- cancel and retry -----------------------------------------------------------------------------


def test_cancel_queued_and_running(db: DirectDatabase) -> None:
    w = register(db)
    running = submit(db, queue="r")
    queued = submit(db)
    claim(db, w, queues=["r"])

    with db.write() as conn:
        assert jobs.cancel(conn, queued) is JobState.QUEUED
    cancelled = get(db, queued)
    assert cancelled.state is JobState.CANCELLED and cancelled.finished_at is not None
    assert claim(db, w) == []  # a cancelled job never runs

    with db.write() as conn:
        assert jobs.cancel(conn, running) is JobState.RUNNING
    flagged = get(db, running)
    assert flagged.state is JobState.RUNNING and flagged.cancel_requested  # its worker kills it
    assert complete(db, w, outcome(running, 1, JobState.CANCELLED, None)) == {running}
    assert get(db, running).state is JobState.CANCELLED

    with db.write() as conn:
        assert jobs.cancel(conn, running) is JobState.CANCELLED  # ended: nothing to do
        assert jobs.cancel(conn, 987654) is None
    assert get(db, running).state is JobState.CANCELLED


def test_retry_of_a_finished_job(db: DirectDatabase) -> None:
    w = register(db)
    job_id = submit(db, retries=0)
    claim_one(db, w)
    complete(db, w, outcome(job_id, 1, JobState.FAILED, 7, error="exit 7"))

    with db.write() as conn:
        assert jobs.retry(conn, job_id, 1) is JobState.FAILED
    job = get(db, job_id)
    assert (job.state, job.attempt, job.max_attempts) == (JobState.QUEUED, 1, 3)
    assert job.exit_code is None and job.error is None and job.finished_at is None
    again = claim_one(db, w)
    assert (again.id, again.attempt) == (job_id, 2)
    assert complete(db, w, outcome(job_id, 2)) == {job_id}
    assert [r.outcome for r in attempt_rows(db, job_id)] == ["failed", "succeeded"]

    queued = submit(db)
    with db.write() as conn:
        assert jobs.retry(conn, queued) is JobState.QUEUED  # not finished: unchanged
        assert jobs.retry(conn, 987654) is None
    assert get(db, queued).attempt == 0 and get(db, queued).max_attempts == 1
