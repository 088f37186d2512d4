"""The gated claim in the transaction mode production uses (`DirectDatabase.turn()`), on both
backends: caps and limits hold with several claimers at once, a dead worker's job keeps its
place until rescued, GPU indices are given once per machine, rates hold across turns, held
jobs never start, and the hot path's claim leaves all of these alone."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jobctl.capacity import Resources
from jobctl.errors import InvalidInput
from jobctl.models import JobSpec, JobState
from jobctl.store import capacity, jobs, queue
from jobctl.store import workers as worker_rows
from jobctl.store.capacity import Edit, Gate
from jobctl.store.direct import DirectDatabase, open_or_create
from jobctl.store.queue import Outcome

LEASE_S = 60.0
BIG = Resources(cpu=64.0, mem=1 << 40, gpu=0)


@pytest.fixture
def direct(db_url: str) -> Iterator[DirectDatabase]:
    database = open_or_create(db_url)
    yield database
    database.close()


def register(db: DirectDatabase, host: str = "host", name: str = "w",
             queues: list[str] | None = None) -> int:
    with db.write() as conn:
        return worker_rows.register(conn, name=name, hostname=host, pid=1,
                                    queues=queues or ["default"], concurrency=8,
                                    version="test")


def submit(db: DirectDatabase, count: int = 1, **fields: object) -> list[int]:
    with db.write() as conn:
        return jobs.submit_many(conn, [JobSpec(argv=["true"], **fields)  # type: ignore[arg-type]
                                       for _ in range(count)])


def claim(db: DirectDatabase, worker_id: int, slots: int, *, queues: tuple[str, ...] = (
        "default",), gate: Gate | None = None, lease_s: float = LEASE_S,
          ends: list[Outcome] | None = None) -> list[queue.ClaimedJob]:
    gate = gate or Gate(host="host", resources=BIG, tags={})
    with db.turn() as conn:
        _, claimed = queue.complete_and_claim(
            conn, worker_id, ends or [], queue.Claim(queues, slots, lease_s, start_now=slots,
                                                     gate=gate))
    return claimed


def done(job: queue.ClaimedJob) -> Outcome:
    return Outcome(job.id, job.attempt, JobState.SUCCEEDED, "succeeded", 0, None, None)


def running_count(db: DirectDatabase, where: str) -> int:
    with db.read() as conn:
        return int(conn.scalar(f"SELECT count(*) FROM jobs WHERE state = 'running' AND {where}"))


def test_the_hot_path_leaves_gated_held_and_capped_work_to_the_gated_claim(
        direct: DirectDatabase) -> None:
    w = register(direct, queues=["default", "capped"])
    [limited] = submit(direct, limits={"k": 1})
    [held] = submit(direct, hold=True)
    with direct.write() as conn:
        capacity.set_queue(conn, "capped", max_running=1)
    [capped] = submit(direct, queue="capped")
    [plain] = submit(direct)
    with direct.turn() as conn:  # no gate: the hot path only
        _, claimed = queue.complete_and_claim(conn, w, [], queue.Claim(
            ["default", "capped"], 8, LEASE_S))
    assert [job.id for job in claimed] == [plain]
    claimed = claim(direct, w, 8, queues=("default", "capped"))
    assert sorted(job.id for job in claimed) == sorted([limited, capped])
    assert held not in {job.id for job in claimed}


def test_concurrent_claimers_never_exceed_a_key_limit_or_a_queue_cap(
        direct: DirectDatabase, db_url: str) -> None:
    """Four claimers, each on its own connection, claim and complete at random while an observer
    counts what runs: the limit (3) and the cap (2) are never exceeded, and every job runs."""
    with direct.write() as conn:
        capacity.set_queue(conn, "capped", max_running=2)
    keyed = submit(direct, 30, limits={"k": 3})
    capped = submit(direct, 20, queue="capped")
    seen = {"k": 0, "capped": 0}
    stop = threading.Event()
    errors: list[BaseException] = []

    def observe() -> None:
        db = open_or_create(db_url)  # a connection of its own (SQLite's are per thread)
        try:
            while not stop.is_set():
                seen["k"] = max(seen["k"], running_count(db, "gated AND queue = 'default'"))
                seen["capped"] = max(seen["capped"], running_count(db, "queue = 'capped'"))
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            db.close()

    def claimer(index: int) -> None:
        db = open_or_create(db_url)
        try:
            w = register(db, name=f"w{index}", queues=["default", "capped"])
            holding: list[queue.ClaimedJob] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                random.shuffle(holding)
                ending, holding = holding[:random.randint(0, len(holding))], holding[:]
                holding = [job for job in holding if job not in ending]
                claimed = claim(db, w, 4 - len(holding), queues=("default", "capped"),
                                ends=[done(job) for job in ending])
                holding += claimed
                if not claimed and not holding:
                    with db.read() as conn:
                        if not conn.scalar("SELECT count(*) FROM jobs WHERE state = 'queued'"):
                            return
                time.sleep(0.001)
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            db.close()

    observer = threading.Thread(target=observe)
    observer.start()
    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    observer.join()
    assert not errors, errors
    assert seen["k"] <= 3 and seen["capped"] <= 2, seen
    assert seen["k"] >= 2 and seen["capped"] >= 1, seen  # they did run side by side
    with direct.read() as conn:
        ended = conn.scalar("SELECT count(*) FROM jobs WHERE state = 'succeeded'")
    assert ended == len(keyed) + len(capped)


def test_a_dead_workers_job_keeps_its_place_until_the_rescuer_takes_it_back(
        direct: DirectDatabase) -> None:
    dead = register(direct, name="dead")
    alive = register(direct, name="alive")
    submit(direct, 2, limits={"db": 1})
    [first] = claim(direct, dead, 4, lease_s=1.0)
    assert claim(direct, alive, 4) == []  # the limit is held by a job nobody renews
    time.sleep(1.2)
    assert claim(direct, alive, 4) == []  # its lease ran out, but it is not rescued yet
    with direct.write() as conn:
        queue.rescue(conn)
    claimed = claim(direct, alive, 4)
    assert len(claimed) == 1  # the rescued first (queued again) or the second: one at a time
    assert running_count(direct, "gated") == 1
    with direct.read() as conn:
        assert conn.scalar(f"SELECT losses FROM jobs WHERE id = {first.id}") == 1


def test_gpu_indices_are_given_once_per_machine_and_freed_by_the_end(
        direct: DirectDatabase) -> None:
    gpus = Resources(cpu=64.0, mem=1 << 40, gpu=3)
    one = register(direct, host="m1", name="a")
    two = register(direct, host="m1", name="b")  # the same machine: the same three GPUs
    other = register(direct, host="m2", name="c")
    submit(direct, 4, gpus=2)
    [a] = claim(direct, one, 4, gate=Gate("m1", gpus, {}))
    assert claim(direct, two, 4, gate=Gate("m1", gpus, {})) == []  # one GPU left on m1
    [c] = claim(direct, other, 4, gate=Gate("m2", gpus, {}))
    assert len(a.gpus) == 2 and len(c.gpus) == 2
    [b] = claim(direct, one, 4, gate=Gate("m1", gpus, {}), ends=[done(a)])
    assert len(b.gpus) == 2 and set(b.gpus) <= {0, 1, 2}


def test_tags_and_resources_route_jobs(direct: DirectDatabase) -> None:
    w = register(direct)
    [eu] = submit(direct, requires={"zone": "eu"})
    [big] = submit(direct, cpus=16.0, mem_bytes=1 << 30)
    small = Gate("host", Resources(cpu=4.0, mem=8 << 30, gpu=0), {"zone": "us"})
    assert claim(direct, w, 4, gate=small) == []
    right = Gate("host", Resources(cpu=32.0, mem=8 << 30, gpu=0), {"zone": "eu", "x": "y"})
    assert sorted(job.id for job in claim(direct, w, 4, gate=right)) == sorted([eu, big])


def test_a_rate_holds_across_turns(direct: DirectDatabase) -> None:
    w = register(direct)
    with direct.write() as conn:
        capacity.set_queue(conn, "default", rate=(3, 1.0))
    submit(direct, 10)
    first = claim(direct, w, 8)
    assert len(first) == 3
    assert claim(direct, w, 8, ends=[done(job) for job in first]) == []
    time.sleep(1.05)
    assert len(claim(direct, w, 8)) == 3


def test_paused_queues_start_nothing_until_resumed(direct: DirectDatabase) -> None:
    w = register(direct)
    submit(direct, 2)
    submit(direct, 1, limits={"k": 1})
    with direct.write() as conn:
        capacity.pause(conn, ["default"], True)
    assert claim(direct, w, 8) == []
    with direct.write() as conn:
        capacity.pause(conn, ["default"], False)
    assert len(claim(direct, w, 8)) == 3


def test_pausing_an_unknown_queue_changes_nothing(direct: DirectDatabase) -> None:
    submit(direct, 1, queue="known")
    with pytest.raises(InvalidInput, match="no such queue: nope"), direct.write() as conn:
        capacity.pause(conn, ["known", "nope"], True)
    with direct.read() as conn:
        assert not any(q.settings.paused for q in capacity.list_queues(conn))


def test_held_jobs_never_start_and_edits_apply_before_the_start(direct: DirectDatabase) -> None:
    w = register(direct, queues=["default", "other"])
    [held] = submit(direct, hold=True)
    [plain] = submit(direct)
    assert [job.id for job in claim(direct, w, 8)] == [plain]
    with direct.write() as conn:
        assert capacity.hold(conn, [held], False) == {held: "queued"}
        capacity.edit(conn, held, Edit(queue="other", priority=7, limits={"k": 2}))
    [job] = claim(direct, w, 8, queues=("other",))
    assert job.id == held
    with pytest.raises(InvalidInput, match="is running"), direct.write() as conn:
        capacity.edit(conn, held, Edit(priority=1))


# --- followers --------------------------------------------------------------------------------


def claim_ahead(db: DirectDatabase, worker_id: int, free: int, room: int, *,
                queues: tuple[str, ...] = ("default",),
                ends: list[Outcome] | None = None) -> list[queue.ClaimedJob]:
    """A claim as a worker with a backlog makes it: `free` slots, and `room` more for its
    read-ahead buffer (where followers go)."""
    with db.turn() as conn:
        _, claimed = queue.complete_and_claim(
            conn, worker_id, ends or [], queue.Claim(
                queues, free + room, LEASE_S, start_now=free, slots=4,
                gate=Gate(host="host", resources=BIG, tags={})))
    return claimed


def test_concurrent_workers_with_followers_never_run_more_than_a_limit_or_a_cap(
        direct: DirectDatabase, db_url: str) -> None:
    """Four workers of four slots, modelled as the worker runs them (jobctl.worker.readahead):
    a claimed job starts in a free slot, a follower only once the job it follows has ended
    there; a job ends, its slot takes the next, and its result is written by the next turn.
    What *runs* (started, not ended), counted across the workers at each start, never exceeds
    the key's limit (3) or the queue's cap (2); followers were claimed; every job ran once."""
    with direct.write() as conn:
        capacity.set_queue(conn, "capped", max_running=2)
    keyed = submit(direct, 60, limits={"k": 3})
    capped = submit(direct, 40, queue="capped")
    lock = threading.Lock()
    live = {"k": 0, "capped": 0}
    peak = {"k": 0, "capped": 0}
    ran: list[int] = []
    followers = [0]
    errors: list[BaseException] = []

    def start(job: queue.ClaimedJob) -> None:
        kind = "capped" if job.queue == "capped" else "k"
        with lock:
            live[kind] += 1
            peak[kind] = max(peak[kind], live[kind])
            ran.append(job.id)

    def end(job: queue.ClaimedJob) -> None:
        with lock:
            live["capped" if job.queue == "capped" else "k"] -= 1

    def worker(index: int) -> None:
        db = open_or_create(db_url)
        try:
            w = register(db, name=f"w{index}", queues=["default", "capped"])
            running: list[queue.ClaimedJob] = []
            buffer: list[queue.ClaimedJob] = []
            unwritten: list[Outcome] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                random.shuffle(running)
                for job in running[:random.randint(0, len(running))]:
                    running.remove(job)
                    end(job)
                    unwritten.append(done(job))
                held = {job.id for job in running + buffer}
                for job in list(buffer):
                    if len(running) < 4 and (job.after is None or job.after not in held):
                        buffer.remove(job)
                        start(job)
                        running.append(job)
                        held.discard(job.id)
                        held.add(job.id)
                free = 4 - len(running)
                claimed = claim_ahead(db, w, free, 8 - len(buffer), queues=("default", "capped"),
                                      ends=unwritten)
                unwritten = []
                for job in claimed:
                    if job.in_buffer:
                        followers[0] += job.after is not None
                        buffer.append(job)
                    else:
                        start(job)
                        running.append(job)
                if not claimed and not running and not buffer:
                    with db.read() as conn:
                        if not conn.scalar("SELECT count(*) FROM jobs WHERE state = 'queued'"):
                            return
                time.sleep(0.001)
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            db.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert peak["k"] <= 3 and peak["capped"] <= 2, peak
    assert peak["k"] >= 2 and peak["capped"] >= 1, peak  # they did run side by side
    assert followers[0] >= 10, f"only {followers[0]} follower(s): the test tested little"
    assert sorted(ran) == sorted(keyed + capped)  # each once


def test_a_turn_with_every_slot_busy_still_reads_followers_ahead(
        direct: DirectDatabase) -> None:
    """A worker whose slots all run gated jobs, with read-ahead room: its turn must see that
    gated jobs wait and claim followers of its running jobs, in a chain behind each. (SQLite
    asked whether gated jobs wait only when a slot was free: a worker under a cap claimed in
    waves, one job per slot, each wave after the last had ended, and drained at 2/3 of plain.)"""
    w = register(direct)
    submit(direct, 12, limits={"k": 4})
    first = claim_ahead(direct, w, 4, 0)
    assert len(first) == 4 and not any(job.in_buffer for job in first)
    ahead = claim_ahead(direct, w, 0, 8)
    assert ahead and all(job.in_buffer for job in ahead), ahead
    # Chains: each follower follows a job of this worker, running or itself following one.
    assert {job.after for job in ahead} <= {job.id for job in first + ahead}
    heads = {job.after for job in ahead} & {job.id for job in first}
    assert len(ahead) == 8 and len(heads) == 4, [(job.id, job.after) for job in ahead]
    assert running_count(direct, "NOT in_buffer") == 4


def test_a_follower_of_a_job_cancelled_before_the_claim_goes_back_to_the_queue(
        direct: DirectDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gated claim chooses a job to start and followers for it; a cancel of that job lands
    between the choice and the claim: its followers must not run in a place nobody holds, so
    they go back to the queue in the same transaction, and the claim returns neither."""
    w = register(direct)
    ids = submit(direct, 3, limits={"k": 1})
    sql = direct.backend.sql_capacity
    real_claim = sql.claim

    def cancel_then_claim(conn: Any, worker_id: int, starts: Any, lease_s: float) -> Any:
        conn.execute(f"UPDATE jobs SET state = 'cancelled' WHERE id = {starts[0].id}")
        return real_claim(conn, worker_id, starts, lease_s)

    monkeypatch.setattr(sql, "claim", cancel_then_claim)
    assert claim_ahead(direct, w, 1, 4) == []
    with direct.read() as conn:
        states = dict(conn.execute("SELECT id, state FROM jobs").fetchall())
    assert states == {ids[0]: "cancelled", ids[1]: "queued", ids[2]: "queued"}, states
    monkeypatch.setattr(sql, "claim", real_claim)
    [first, *rest] = claim_ahead(direct, w, 1, 4)
    assert first.id == ids[1] and not first.in_buffer
    assert [(job.id, job.after) for job in rest] == [(ids[2], ids[1])]
