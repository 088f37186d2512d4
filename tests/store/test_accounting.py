"""Accounting on both backends: the figures a worker reports with an attempt's outcome land in
its `attempts` row (both variants of PostgreSQL's turn, SQLite's steps) and come back in
`job status`'s attempts; a claimed job carries its `--cpus`/`--mem` for its cgroup; `stats`
gives the p50/p95 of duration, CPU and peak memory of the attempts in its window, the same
answer on both backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from obs_seed import now_plus_sql

from jobctl.capacity import Resources
from jobctl.models import JobSpec, JobState
from jobctl.store import jobs, queue, reads, stats
from jobctl.store import workers as worker_rows
from jobctl.store.capacity import Gate
from jobctl.store.direct import DirectDatabase
from jobctl.store.queue import Outcome
from jobctl.store.url import parse


@pytest.fixture
def db(db_url: str) -> Iterator[DirectDatabase]:
    database = DirectDatabase(parse(db_url))
    yield database
    database.close()


def register(db: DirectDatabase) -> int:
    with db.write() as conn:
        return worker_rows.register(conn, name="w", hostname="host", pid=1,
                                    queues=["default", "heavy"], concurrency=4, version="test")


def submit(db: DirectDatabase, queue_name: str = "default", **fields: object) -> int:
    with db.write() as conn:
        job_id, _ = jobs.submit(conn, JobSpec(argv=["true"], queue=queue_name,
                                              **fields))  # type: ignore[arg-type]
    return job_id


def run(db: DirectDatabase, worker: int, queue_name: str, *, state: JobState = JobState.SUCCEEDED,
        has_dependents: bool = True, **usage: object) -> int:
    """Claim the next job of `queue_name` and end it with these figures."""
    with db.turn() as conn:
        [claimed] = queue.claim(conn, worker, queue.Claim([queue_name], 1, 300.0))
    ended = Outcome(job_id=claimed.id, attempt=claimed.attempt, state=state,
                    attempt_outcome=state.value, exit_code=0 if state is JobState.SUCCEEDED
                    else 137, signal=None, error=usage.pop("error", None),  # type: ignore[arg-type]
                    has_dependents=has_dependents, **usage)  # type: ignore[arg-type]
    with db.turn() as conn:
        assert queue.complete(conn, worker, [ended]) == {claimed.id}
    return claimed.id


@pytest.mark.parametrize("has_dependents", [True, False])
def test_an_attempts_figures_are_recorded_and_read_back(db: DirectDatabase,
                                                         has_dependents: bool) -> None:
    worker = register(db)
    submit(db)
    job_id = run(db, worker, "default", has_dependents=has_dependents, cpu_user_s=1.25,
                 cpu_system_s=0.5, max_rss_bytes=210 * 1024 * 1024, oom_killed=False)
    oom_id = submit(db, "heavy")
    run(db, worker, "heavy", state=JobState.FAILED, has_dependents=has_dependents,
        cpu_user_s=0.1, cpu_system_s=0.2, max_rss_bytes=52_428_800, oom_killed=True,
        error="killed: out of memory (memory.max 50 MiB)")
    with db.read() as conn:
        [attempt] = reads.list_attempts(conn, job_id)
        [oom] = reads.list_attempts(conn, oom_id)
    assert (attempt.cpu_user_s, attempt.cpu_system_s, attempt.max_rss_bytes,
            attempt.oom_killed) == (1.25, 0.5, 210 * 1024 * 1024, False)
    assert oom.oom_killed is True and oom.error == "killed: out of memory (memory.max 50 MiB)"
    assert attempt.to_json()["max_rss_bytes"] == 210 * 1024 * 1024
    assert oom.to_json()["oom_killed"] is True


def test_an_attempt_without_figures_reads_as_unknown(db: DirectDatabase) -> None:
    worker = register(db)
    submit(db)
    job_id = run(db, worker, "default")
    with db.read() as conn:
        [attempt] = reads.list_attempts(conn, job_id)
    assert (attempt.cpu_user_s, attempt.cpu_system_s, attempt.max_rss_bytes,
            attempt.oom_killed) == (None, None, None, None)


def test_a_claimed_job_carries_its_cpus_and_memory(db: DirectDatabase) -> None:
    worker = register(db)
    submit(db, cpus=0.5, mem_bytes=50 << 20)
    plain = submit(db)
    with db.turn() as conn:
        [first] = queue.claim(conn, worker, queue.Claim(["default"], 5, 300.0))
    assert (first.id, first.cpus, first.mem_bytes) == (plain, None, None)
    with db.turn() as conn:
        claimed = queue.claim(conn, worker, queue.Claim(
            ["default"], 5, 300.0, gate=Gate("host", Resources(cpu=4, mem=1 << 32), {})))
    # A job with resources is gated (capacity control): claimed by the gated claim.
    assert [(job.cpus, job.mem_bytes) for job in claimed] == [(0.5, 50 << 20)]


def set_duration(db: DirectDatabase, job_id: int, seconds: float) -> None:
    """Make the job's attempt look as if it ran for `seconds`, ending now."""
    with db.write() as conn:
        conn.execute(f"UPDATE attempts SET started_at = {now_plus_sql(db, -seconds)}, "
                     f"finished_at = {now_plus_sql(db, 0)} WHERE job_id = {int(job_id)}")


def test_stats_report_p50_and_p95_per_queue(db: DirectDatabase) -> None:
    worker = register(db)
    for index in range(1, 6):  # default: 1 … 5 s, CPU 1 … 5 s, 100 … 500 MiB
        submit(db)
        job_id = run(db, worker, "default", cpu_user_s=float(index) - 0.25, cpu_system_s=0.25,
                     max_rss_bytes=index * 100 << 20, oom_killed=False)
        set_duration(db, job_id, float(index))
    submit(db, "heavy")
    heavy = run(db, worker, "heavy", cpu_user_s=10.0, cpu_system_s=0.0,
                max_rss_bytes=1 << 30, oom_killed=False)
    set_duration(db, heavy, 20.0)
    submit(db, "heavy")  # no figures (an older worker): its duration counts, nothing else
    unknown = run(db, worker, "heavy")
    set_duration(db, unknown, 30.0)

    report = stats.read_queue_stats(db, 3600.0)
    by_queue = {q.queue: q for q in report.queues}
    default = by_queue["default"]
    assert default.attempts_ended == 5
    # percentile_cont: p50 the middle value, p95 interpolated between the 4th and 5th.
    assert default.duration_s.p50 == pytest.approx(3.0, abs=0.01)
    assert default.duration_s.p95 == pytest.approx(4.8, abs=0.01)
    assert default.cpu_s.p50 == pytest.approx(3.0)
    assert default.cpu_s.p95 == pytest.approx(4.8)
    assert default.peak_memory_bytes.p50 == pytest.approx(300 << 20)
    assert default.peak_memory_bytes.p95 == pytest.approx(480 << 20)
    heavy_stats = by_queue["heavy"]
    assert heavy_stats.attempts_ended == 2
    assert heavy_stats.duration_s.p50 == pytest.approx(25.0, abs=0.01)
    assert (heavy_stats.cpu_s.p50, heavy_stats.peak_memory_bytes.p95) == (10.0, 1 << 30)
    total = report.total
    assert total.attempts_ended == 7
    assert total.cpu_s.p50 == pytest.approx(3.5)  # 1 2 3 4 5 10: between 3 and 4
    document = report.to_json()
    [default_json] = [q for q in document["queues"] if q["queue"] == "default"]
    assert (default_json["cpu_p50_s"], default_json["cpu_p95_s"]) == (3.0, 4.8)
    assert default_json["peak_memory_p95_bytes"] == 480 << 20
    assert default_json["duration_p50_s"] == pytest.approx(3.0, abs=0.01)

    # Outside the window: none of it.
    with db.write() as conn:
        conn.execute(f"UPDATE attempts SET finished_at = {now_plus_sql(db, -7200.0)}")
    later = stats.read_queue_stats(db, 3600.0)
    assert later.total.attempts_ended == 0 and later.total.cpu_s.p50 is None
