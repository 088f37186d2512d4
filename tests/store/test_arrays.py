"""Job arrays in the store (jobctl.store.arrays), on both backends, in the transaction modes
production uses: one bulk insert of tasks with their indices, the throttle as a limit key the
gated claim enforces, the array's status, retrying only the failed tasks, cancelling, the
columns a worker gets (array id and index, exit codes to retry on) and output tails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobctl.capacity import Resources
from jobctl.models import RERUN_STATES, JobSpec, JobState, array_limit_key
from jobctl.store import arrays, jobs, queue, reads
from jobctl.store import workers as worker_rows
from jobctl.store.capacity import Gate
from jobctl.store.direct import DirectDatabase
from jobctl.store.queue import Outcome, OutputChunk
from jobctl.store.url import parse

LEASE_S = 60.0
GATE = Gate(host="host", resources=Resources(cpu=64.0, mem=1 << 40, gpu=0), tags={})


@pytest.fixture
def direct(db_url: str) -> Iterator[DirectDatabase]:
    database = DirectDatabase(parse(db_url))
    yield database
    database.close()


def register(db: DirectDatabase) -> int:
    with db.write() as conn:
        return worker_rows.register(conn, name="w", hostname="host", pid=1, queues=["default"],
                                    concurrency=8, version="test")


def claim(db: DirectDatabase, worker_id: int, slots: int,
          ends: list[Outcome] | None = None) -> list[queue.ClaimedJob]:
    with db.turn() as conn:
        _, claimed = queue.complete_and_claim(
            conn, worker_id, ends or [], queue.Claim(("default",), slots, LEASE_S,
                                                     start_now=slots, gate=GATE))
    return claimed


def ended(job: queue.ClaimedJob, code: int) -> Outcome:
    state = JobState.SUCCEEDED if code == 0 else JobState.FAILED
    return Outcome(job.id, job.attempt, state, state.value, code, None,
                   None if code == 0 else f"exit code {code}")


def test_an_array_is_its_tasks_with_indices_and_index_in_argv(direct: DirectDatabase) -> None:
    template = JobSpec(argv=["sh", "-c", "echo {index}; echo again {index}"], name="shard",
                       limits={"db": 3})
    with direct.write() as conn:
        array_id, ids = arrays.create(conn, template, [4, 9, 2], throttle=2)
    with direct.read() as conn:
        tasks = arrays.tasks(conn, array_id)
        status = arrays.status(conn, array_id)
        assert arrays.task_ids(conn, array_id) == [ids[2], ids[0], ids[1]]  # by index
    assert [task.array_index for task in tasks] == [2, 4, 9]
    assert [task.argv[2] for task in tasks] == [f"echo {i}; echo again {i}" for i in (2, 4, 9)]
    assert all(task.array_id == array_id and task.name == "shard" for task in tasks)
    # The throttle is a limit key beside the template's own limits.
    assert all(task.limits == {"db": 3, array_limit_key(array_id): 2} for task in tasks)
    assert status is not None
    assert (status.size, status.throttle, status.counts) == (3, 2, {"queued": 3})
    assert not status.finished and status.first_failed is None


def test_the_gated_claim_holds_a_throttled_array_to_its_throttle(
        direct: DirectDatabase) -> None:
    worker = register(direct)
    with direct.write() as conn:
        array_id, _ = arrays.create(conn, JobSpec(argv=["true"]), list(range(10)), throttle=3)
    first = claim(direct, worker, 8)
    assert len(first) == 3  # 8 free slots, 3 may run
    assert claim(direct, worker, 8) == []
    second = claim(direct, worker, 8, ends=[ended(first[0], 0)])
    assert len(second) == 1  # one ended, one more starts
    with direct.read() as conn:
        status = arrays.status(conn, array_id)
    assert status is not None
    assert status.counts == {"succeeded": 1, "running": 3, "queued": 6}


def test_a_worker_gets_the_array_and_the_exit_codes_to_retry_on(
        direct: DirectDatabase) -> None:
    worker = register(direct)
    with direct.write() as conn:
        array_id, _ = arrays.create(conn, JobSpec(argv=["true"], retry_on_exit=(75, 111)),
                                    [5], None)
        plain, _ = jobs.submit(conn, JobSpec(argv=["true"], no_retry_on_exit=(2,)))
    claimed = {job.id: job for job in claim(direct, worker, 4)}
    task = next(job for job in claimed.values() if job.id != plain)
    assert (task.array_id, task.array_index) == (array_id, 5)
    assert task.retry_on_exit == (75, 111) and task.no_retry_on_exit is None
    assert claimed[plain].array_id is None
    assert claimed[plain].no_retry_on_exit == (2,) and claimed[plain].retry_on_exit is None
    with direct.read() as conn:
        job = reads.get(conn, plain)
    assert job is not None and job.no_retry_on_exit == (2,) and job.retry_on_exit is None


def test_status_names_the_lowest_failed_index_and_retry_reruns_only_failed(
        direct: DirectDatabase) -> None:
    worker = register(direct)
    with direct.write() as conn:
        array_id, ids = arrays.create(conn, JobSpec(argv=["x"]), list(range(6)), None)
    index_of = dict(zip(ids, range(6), strict=True))
    running = claim(direct, worker, 6)
    codes = {0: 0, 1: 0, 2: 0, 3: 7, 4: 0, 5: 9}
    claim(direct, worker, 0, ends=[ended(job, codes[index_of[job.id]]) for job in running])
    with direct.write() as conn:
        status = arrays.status(conn, array_id)
        assert status is not None and status.finished
        assert status.counts == {"succeeded": 4, "failed": 2}
        assert status.first_failed == (3, ids[3], 7)
        again = arrays.retry(conn, array_id, sorted(RERUN_STATES))
    assert again == [ids[3], ids[5]]
    with direct.read() as conn:
        by_index = {job.array_index: job for job in arrays.tasks(conn, array_id)}
        queued = arrays.tasks(conn, array_id, [JobState.QUEUED])
    assert [job.array_index for job in queued] == [3, 5]
    assert by_index[0].state is JobState.SUCCEEDED and by_index[0].attempt == 1
    assert by_index[3].max_attempts == 2 and by_index[3].exit_code is None
    # Nothing left to retry: a second retry finds no failed task.
    with direct.write() as conn:
        assert arrays.retry(conn, array_id, sorted(RERUN_STATES)) == []


def test_cancel_ends_queued_tasks_and_flags_running_ones(direct: DirectDatabase) -> None:
    worker = register(direct)
    with direct.write() as conn:
        array_id, ids = arrays.create(conn, JobSpec(argv=["x"]), [0, 1, 2], None)
        after, _ = jobs.submit(conn, JobSpec(argv=["y"], after=tuple(ids)))
    [running] = claim(direct, worker, 1)
    with direct.write() as conn:
        cancelled, flagged = arrays.cancel(conn, array_id)
    assert flagged == [running.id]
    assert cancelled == sorted(set(ids) - {running.id})
    with direct.read() as conn:
        tasks = {job.id: job for job in arrays.tasks(conn, array_id)}
        dependent = reads.get(conn, after)
    assert tasks[running.id].state is JobState.RUNNING and tasks[running.id].cancel_requested
    assert all(tasks[i].state is JobState.CANCELLED for i in cancelled)
    # What waits on the array (--after array:ID) is cancelled with it, as for `job cancel`.
    assert dependent is not None and dependent.state is JobState.CANCELLED


def test_output_tail_reads_the_end_of_one_stream(direct: DirectDatabase) -> None:
    worker = register(direct)
    with direct.write() as conn:
        job_id, _ = jobs.submit(conn, JobSpec(argv=["x"]))
    claim(direct, worker, 1)
    chunks = [OutputChunk(job_id, 1, "stdout" if seq % 3 else "stderr", seq,
                          f"<{seq:02d}>".encode()) for seq in range(40)]
    with direct.write() as conn:
        queue.write_output(conn, chunks)
        out, out_cut = arrays.output_tail(conn, job_id, 1, "stdout", 10)
        err, err_cut = arrays.output_tail(conn, job_id, 1, "stderr", 1000)
        none, none_cut = arrays.output_tail(conn, job_id, 2, "stdout", 10)
    stdout = b"".join(chunk.data for chunk in chunks if chunk.stream == "stdout")
    assert out == stdout[-10:] == b"5><37><38>" and out_cut
    assert err == b"".join(f"<{seq:02d}>".encode() for seq in range(0, 40, 3)) and not err_cut
    assert (none, none_cut) == (b"", False)
