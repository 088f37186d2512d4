"""Submitting and reading jobs in the store, on both backends, on the driver road in the
transaction modes production uses: one spec becomes the same row however it goes in (a bulk
insert, a unique key, a schedule's occurrence), the job list's filters, and completion's
look-ups."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from jobctl.models import Delivery, Job, JobSpec, JobState, ScheduleDefinition
from jobctl.store import jobs, names, reads, schedules, submit
from jobctl.store.direct import DirectDatabase
from jobctl.store.url import parse


@pytest.fixture
def direct(db_url: str) -> Iterator[DirectDatabase]:
    database = DirectDatabase(parse(db_url))
    yield database
    database.close()


SPEC = JobSpec(argv=["sh", "-c", "printf 'a\\tb\\n'"], name="tab\there", queue="q",
               priority=5, timeout_s=1.5, retries=2, backoff_s=3.0,
               delivery=Delivery.AT_MOST_ONCE, env={"K": "v\\w"}, cwd="/tmp",
               labels={"team": "ops", "a.b": "c\"d"}, max_lost=7, input=b"\x00\xffin",
               user="nobody")


def fields(job: Job) -> tuple[object, ...]:
    return (job.name, job.queue, job.priority, job.argv, job.env, job.cwd, job.timeout_s,
            job.max_attempts, job.backoff_s, job.delivery, job.labels, job.max_lost,
            job.input_bytes, job.user, job.attempt, job.losses)


def test_a_spec_becomes_the_same_row_by_every_insert(direct: DirectDatabase) -> None:
    with direct.write() as conn:
        [bulk] = submit.insert_many(conn, [SPEC], states=[JobState.QUEUED])
        unique = submit.insert_unique(conn, SPEC, JobState.QUEUED, None)
        with_key = JobSpec(**{**SPEC.__dict__, "unique_key": "k"})
        keyed = submit.insert_unique(conn, with_key, JobState.QUEUED, None)
        assert submit.insert_unique(conn, with_key, JobState.QUEUED, None) is None
        fire = datetime(2030, 1, 1, tzinfo=UTC)
        schedule_id = schedules.create(conn, ScheduleDefinition(
            name="s", job=SPEC, every_s=3600.0, paused=True))
        now = reads.database_now(conn)
        row = submit.job_row(SPEC, now, JobState.SKIPPED, "skipped", schedule_id=schedule_id,
                             fire_time=fire, cancel_requested=True)
        [occurrence, again] = submit.insert_occurrences(conn, [row, row])
    assert again is None  # the same (schedule, fire time): another scheduler fired it
    assert unique is not None and keyed is not None and occurrence is not None
    with direct.read() as conn:
        found = reads.get_many(conn, [bulk, unique, keyed, occurrence])
    assert len({repr(fields(job)) for job in found.values()}) == 1
    job = found[bulk]
    assert (job.name, job.env, job.labels, job.input_bytes, job.user) == (
        "tab\there", {"K": "v\\w"}, {"team": "ops", "a.b": "c\"d"}, 4, "nobody")
    assert found[keyed].unique_key == "k"
    ended = found[occurrence]
    assert (ended.state, ended.error, ended.cancel_requested, ended.schedule_id,
            ended.schedule, ended.fire_time) == (JobState.SKIPPED, "skipped", True,
                                                 schedule_id, "s", fire)
    assert ended.finished_at == ended.created_at  # submitted ended: finished at once
    assert job.finished_at is None and job.run_at == job.created_at


def test_run_in_and_run_at_are_measured_from_the_database_clock(
        direct: DirectDatabase) -> None:
    later = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    with direct.write() as conn:
        ids = submit.insert_many(conn, [JobSpec(argv=["true"], run_in_s=600),
                                        JobSpec(argv=["true"], run_at=later)],
                                 states=[JobState.QUEUED] * 2)
        found = reads.get_many(conn, ids)
    delayed, fixed = found[ids[0]], found[ids[1]]
    assert delayed.run_at - delayed.created_at == timedelta(seconds=600)
    assert fixed.run_at == later


def test_the_job_list_filters(direct: DirectDatabase) -> None:
    with direct.write() as conn:
        ids = submit.insert_many(conn, [
            JobSpec(argv=["true"], name="build_1", labels={"k.x": "1"}),
            JobSpec(argv=["true"], name="buildX1", queue="other", labels={"k.x": "2"}),
            JobSpec(argv=["true"], name="test%1", labels={"k.x": "1", "b": "2"}),
        ], states=[JobState.QUEUED, JobState.QUEUED, JobState.WAITING])
    with direct.read() as conn:
        def listed(**options: object) -> list[int]:
            return [job.id for job in reads.list_jobs(conn, **options)]  # type: ignore[arg-type]

        assert listed() == ids[::-1]
        assert listed(limit=1) == [ids[2]] and listed(limit=None) == ids[::-1]
        assert listed(states=[JobState.WAITING]) == [ids[2]]
        assert listed(queues=["other", "nowhere"]) == [ids[1]]
        assert listed(name="build_1") == [ids[0]]  # exact: _ is no wildcard
        assert listed(name="build?1") == [ids[1], ids[0]]
        assert listed(name="test%*") == [ids[2]]  # glob: % is itself
        assert listed(name="*%2") == []
        assert listed(labels={"k.x": "1"}) == [ids[2], ids[0]]
        assert listed(labels={"k.x": "1", "b": "2"}) == [ids[2]]
        assert listed(labels={"b": "1"}) == []
        assert listed(schedule="none") == []


def test_cancel_and_retry(direct: DirectDatabase) -> None:
    with direct.write() as conn:
        job_id, created = jobs.submit(conn, JobSpec(argv=["true"]))
        assert created and jobs.existing_ids(conn, [job_id, job_id + 99]) == {job_id}
        assert jobs.cancel(conn, job_id) is JobState.QUEUED
        assert jobs.cancel(conn, job_id + 99) is None
    with direct.read() as conn:
        cancelled = reads.get(conn, job_id)
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    assert cancelled.error == "cancelled before it started" and cancelled.finished_at
    with direct.write() as conn:
        assert jobs.retry(conn, job_id, retries=2) is JobState.CANCELLED
        again = reads.get(conn, job_id)
    assert again is not None and again.state is JobState.QUEUED
    assert (again.max_attempts, again.error, again.finished_at) == (3, None, None)


def test_completion_look_ups(direct: DirectDatabase) -> None:
    with direct.write() as conn:
        ids = submit.insert_many(conn, [JobSpec(argv=["true"], name=f"n{i}", queue=q)
                                        for i, q in enumerate(["alpha", "al_x", "beta"])],
                                 states=[JobState.QUEUED] * 3)
    url = direct.location.target if direct.backend.title == "PostgreSQL" else (
        f"sqlite:///{direct.location.target}")
    with names.connect(url) as conn:
        assert names.queue_names(conn, "al", 10) == ["al_x", "alpha"]
        assert names.queue_names(conn, "al_", 10) == ["al_x"]  # _ is no wildcard
        assert [job_id for job_id, _, _ in names.recent_jobs(conn, "", 2)] == ids[:0:-1]
        assert names.recent_jobs(conn, str(ids[0]), 1) == [(ids[0], "n0", "queued")]
        assert names.schedule_names(conn, "", 5) == [] and names.workflow_ids(conn, "", 5) == []
        assert names.worker_names(conn, "", 5) == []
