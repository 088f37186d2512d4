"""The numbers behind `jobctl stats` and `jobctl top`, on both backends, from a database with
jobs in every state: depth per queue, finished jobs inside the window only, failure rate, the
age of the oldest due job, workers, running jobs and recent failures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from obs_seed import Seeded, age, register_worker, run, seed, submit

from jobctl.models import JobState
from jobctl.store import stats


@pytest.fixture
def seeded(db_url: str) -> Iterator[Seeded]:
    data = seed(db_url)
    yield data
    data.close()


def test_queue_stats_count_depth_and_the_window(seeded: Seeded) -> None:
    report = stats.read_queue_stats(seeded.database, 3600.0)
    by_queue = {q.queue: q for q in report.queues}
    assert set(by_queue) == {"default", "batch"}
    default = by_queue["default"]
    assert (default.waiting, default.queued, default.running) == (1, 1, 1)
    # Only "recent-ok" finished within the hour; the old ones were aged 40 days.
    assert (default.succeeded, default.failed, default.cancelled) == (1, 0, 0)
    assert default.failure_rate() == 0.0
    assert default.oldest_queued_s is not None and 0 <= default.oldest_queued_s < 600
    batch = by_queue["batch"]
    assert (batch.running, batch.queued, batch.finished) == (1, 0, 0)
    assert batch.failure_rate() is None and batch.oldest_queued_s is None
    assert (report.total.running, report.total.queued, report.total.waiting) == (2, 1, 1)

    # A 60-day window sees the old jobs too: 4 successes, 2 failures (cancelled apart).
    wide = {q.queue: q for q in stats.read_queue_stats(seeded.database, 60 * 86_400.0).queues}
    assert (wide["default"].succeeded, wide["default"].failed,
            wide["default"].cancelled) == (4, 2, 1)
    assert wide["default"].failure_rate() == pytest.approx(2 / 6)
    document = stats.read_queue_stats(seeded.database, 60 * 86_400.0).to_json()
    [default_json] = [q for q in document["queues"] if q["queue"] == "default"]
    assert default_json["failure_rate"] == pytest.approx(0.3333, abs=1e-4)
    assert document["total"]["running"] == 2


def test_lost_jobs_count_as_failures(seeded: Seeded) -> None:
    worker = register_worker(seeded.database, "gamma", ["lossy"])
    submit(seeded.database, "lost-one", "lossy")
    run(seeded.database, worker, "lossy", JobState.LOST)
    submit(seeded.database, "ok-one", "lossy")
    run(seeded.database, worker, "lossy", JobState.SUCCEEDED)
    [lossy] = [q for q in stats.read_queue_stats(seeded.database, 3600.0).queues
               if q.queue == "lossy"]
    assert (lossy.succeeded, lossy.failed) == (1, 1) and lossy.failure_rate() == 0.5


def test_snapshot_shows_workers_running_jobs_and_recent_failures(seeded: Seeded) -> None:
    snap = stats.read_snapshot(seeded.database)
    assert {w.name for w in snap.workers} == {"alpha", "beta"}
    assert {w.name: w.running_jobs for w in snap.workers} == {"alpha": 1, "beta": 1}
    assert {(r.id, r.worker) for r in snap.running} == {(seeded["running"], "alpha"),
                                                        (seeded["batch-running"], "beta")}
    assert all(r.elapsed_s is not None and r.elapsed_s >= 0 for r in snap.running)
    # Newest failure first.
    assert [f.id for f in snap.failures] == [seeded["needed-by-done"], seeded["old-failed"]]
    age(seeded.database, seeded["old-failed"], 1)
    newest = stats.read_snapshot(seeded.database).failures[0]
    assert newest.id == seeded["old-failed"]
