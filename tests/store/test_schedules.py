"""The schedule store on both backends: firing due occurrences once, misfire and overlap
policies, pause, trigger, and the locks that keep racing schedulers apart."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest

from jobctl.client import Client
from jobctl.errors import InvalidInput, NotFound
from jobctl.models import JobSpec, JobState, Misfire, Overlap, ScheduleDefinition
from jobctl.store import reads, schedules, workflows
from jobctl.store.direct import Conn, DirectDatabase
from jobctl.store.url import parse


@pytest.fixture
def db(db_url: str) -> Iterator[DirectDatabase]:
    """The database on the production road: the scheduler's work in `write()`s, reads in
    `read()`s."""
    database = DirectDatabase(parse(db_url))
    yield database
    database.close()


@pytest.fixture
def client(db_url: str) -> Client:
    return Client(db_url)


@contextmanager
def writing(db: DirectDatabase) -> Iterator[Conn]:
    """A write transaction as a scheduler runs it (SQLite: BEGIN IMMEDIATE), on a connection of
    its own: another scheduler."""
    scheduler = db.clone()
    try:
        with scheduler.write() as conn:
            yield conn
    finally:
        scheduler.close()


def db_now(db: DirectDatabase) -> datetime:
    with db.read() as conn:
        return schedules.now(conn)


def add(client: Client, name: str = "s", **fields: object) -> int:
    fields.setdefault("every_s", 10.0)
    definition = ScheduleDefinition(name=name, job=JobSpec(argv=["true"]),
                                    **fields)  # type: ignore[arg-type]
    return client.add_schedule(definition).id


def set_next_fire(db: DirectDatabase, name: str, moment: datetime) -> None:
    """As if no scheduler had run since `moment` (the scheduler's own conditional advance)."""
    with db.write() as conn:
        schedule = schedules.get(conn, name)
        assert schedule is not None and schedule.next_fire_at is not None
        conn.backend.sql_schedules.advance(conn, [schedules.Advance(
            schedule.id, schedule.next_fire_at, moment, schedule.last_fire_at)])


def fire(db: DirectDatabase, **kwargs: object) -> schedules.Fired:
    with writing(db) as conn:
        return schedules.fire_due(conn, **kwargs)  # type: ignore[arg-type]


def runs(db: DirectDatabase, schedule_id: int) -> list[tuple[datetime, str, str | None]]:
    """(fire time, state, error) of the schedule's jobs, in the order they were made."""
    with db.read() as conn:
        found = schedules.recent_runs(conn, schedule_id, limit=100_000)
    return [(run.fire_time, run.state.value, run.error)
            for run in sorted(found, key=lambda run: run.job_id)]


def whole_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


# --- firing -------------------------------------------------------------------------------------


def test_a_new_schedule_waits_for_its_first_fire_time(db: DirectDatabase, client: Client) -> None:
    add(client, every_s=3600.0)
    assert fire(db).schedules == 0
    with db.read() as conn:
        due_in = schedules.seconds_until_next_due(conn)
    assert due_in is not None and 3000 < due_in <= 3600


@pytest.mark.parametrize(("policy", "expected"), [(Misfire.SKIP, 0), (Misfire.ONCE, 1),
                                                  (Misfire.ALL, 6)])
def test_misfire_policies_after_downtime(db: DirectDatabase, client: Client, policy: Misfire,
                                         expected: int) -> None:
    start = whole_second(db_now(db)) - timedelta(seconds=55)
    schedule_id = add(client, every_s=10.0, start_at=start, misfire=policy)
    set_next_fire(db, "s", start)  # fire times start+0 … start+50 were missed
    fired = fire(db)
    times = [fire_time for fire_time, _, _ in runs(db, schedule_id)]
    assert len(times) == expected
    assert fired.missed == 6 - expected
    if policy is Misfire.ONCE:
        assert times == [start + timedelta(seconds=50)]  # the latest missed time
    if policy is Misfire.ALL:
        assert times == [start + timedelta(seconds=10 * k) for k in range(6)]
    assert client.schedule("s").next_fire_at == start + timedelta(seconds=60)


def test_misfire_all_is_capped_to_the_latest(db: DirectDatabase, client: Client) -> None:
    start = whole_second(db_now(db)) - timedelta(seconds=100)
    schedule_id = add(client, every_s=1.0, start_at=start, misfire=Misfire.ALL,
                      overlap=Overlap.ALLOW)
    set_next_fire(db, "s", start)
    fire(db, misfire_cap=7)
    times = [fire_time for fire_time, _, _ in runs(db, schedule_id)]
    assert len(times) == 7 and times == sorted(times)
    assert times[-1] >= start + timedelta(seconds=99)


def test_an_on_time_occurrence_fires_whatever_the_misfire_policy(
        db: DirectDatabase, client: Client) -> None:
    now = db_now(db)
    start = whole_second(now) - timedelta(seconds=20)
    schedule_id = add(client, every_s=20.0, start_at=start, misfire=Misfire.SKIP)
    set_next_fire(db, "s", start + timedelta(seconds=20))
    fire(db, misfire_grace_s=30.0)
    assert [t for t, _, _ in runs(db, schedule_id)] == [start + timedelta(seconds=20)]


def test_firing_twice_never_duplicates_an_occurrence(db: DirectDatabase, client: Client) -> None:
    start = whole_second(db_now(db)) - timedelta(seconds=5)
    schedule_id = add(client, every_s=1.0, start_at=start, misfire=Misfire.ALL,
                      overlap=Overlap.ALLOW)
    set_next_fire(db, "s", start)
    fire(db)
    first = runs(db, schedule_id)
    set_next_fire(db, "s", start)  # as if a stale scheduler fired the same times again
    fire(db)
    again = runs(db, schedule_id)
    assert len(first) >= 5
    assert [t for t, _, _ in again][:len(first)] == [t for t, _, _ in first]
    assert len({t for t, _, _ in again}) == len(again)


def test_jobs_carry_schedule_fire_time_name_and_template(
        db: DirectDatabase, client: Client) -> None:
    start = whole_second(db_now(db)) - timedelta(seconds=1)
    definition = ScheduleDefinition(
        name="backup", every_s=60.0, start_at=start,
        job=JobSpec(argv=["/bin/sh", "-c", "echo hi"], queue="q1", priority=5, retries=2,
                    env={"A": "1"}, labels={"team": "ops"}, timeout_s=30.0))
    schedule_id = client.add_schedule(definition).id
    set_next_fire(db, "backup", start)
    fire(db)
    [job] = client.list_jobs()
    assert (job.name, job.queue, job.priority, job.max_attempts, job.env, job.labels,
            job.timeout_s, job.argv) == ("backup", "q1", 5, 3, {"A": "1"}, {"team": "ops"},
                                         30.0, ["/bin/sh", "-c", "echo hi"])
    assert runs(db, schedule_id) == [(start, "queued", None)]


def test_paused_schedules_do_not_fire_and_resume_under_their_misfire_policy(
        db: DirectDatabase, client: Client) -> None:
    start = whole_second(db_now(db)) - timedelta(seconds=30)
    schedule_id = add(client, every_s=10.0, start_at=start, misfire=Misfire.ONCE)
    set_next_fire(db, "s", start)
    assert client.pause_schedule("s") is False
    assert fire(db).schedules == 0
    assert client.pause_schedule("s", False) is True
    fire(db)
    assert [t for t, _, _ in runs(db, schedule_id)] == [start + timedelta(seconds=30)]


# --- overlap ------------------------------------------------------------------------------------


def _overlap_case(db: DirectDatabase, client: Client, overlap: Overlap) -> tuple[int, int]:
    """A schedule with one queued run, then its next occurrence fires. Returns (schedule id,
    the first run's job id)."""
    start = whole_second(db_now(db)) - timedelta(seconds=20)
    schedule_id = add(client, every_s=10.0, start_at=start, overlap=overlap,
                      misfire=Misfire.ONCE)
    first = client.trigger_schedule("s")
    set_next_fire(db, "s", start + timedelta(seconds=20))
    fire(db, misfire_grace_s=60.0)
    return schedule_id, first


def test_overlap_forbid_records_a_skipped_occurrence(db: DirectDatabase, client: Client) -> None:
    schedule_id, first = _overlap_case(db, client, Overlap.FORBID)
    states = runs(db, schedule_id)
    assert [state for _, state, _ in states] == ["queued", "skipped"]
    assert states[1][2] == f"skipped: job {first} (queued) is still going"
    assert client.get(first).state is JobState.QUEUED


def test_overlap_replace_cancels_the_previous_run(db: DirectDatabase, client: Client) -> None:
    schedule_id, first = _overlap_case(db, client, Overlap.REPLACE)
    assert client.get(first).state is JobState.CANCELLED
    assert [state for _, state, _ in runs(db, schedule_id)] == ["cancelled", "queued"]


def test_overlap_allow_runs_both(db: DirectDatabase, client: Client) -> None:
    schedule_id, first = _overlap_case(db, client, Overlap.ALLOW)
    assert [state for _, state, _ in runs(db, schedule_id)] == ["queued", "queued"]
    assert client.get(first).state is JobState.QUEUED


def test_forbid_with_several_due_times_queues_one_and_skips_the_rest(
        db: DirectDatabase, client: Client) -> None:
    start = whole_second(db_now(db)) - timedelta(seconds=25)
    schedule_id = add(client, every_s=10.0, start_at=start, misfire=Misfire.ALL)
    set_next_fire(db, "s", start)
    fire(db)
    assert [state for _, state, _ in runs(db, schedule_id)] == ["queued", "skipped", "skipped"]


# --- the client around it -----------------------------------------------------------------------


def test_add_existing_name_needs_replace(db: DirectDatabase, client: Client) -> None:
    add(client, every_s=10.0)
    with pytest.raises(InvalidInput, match="exists already"):
        add(client, every_s=20.0)
    definition = ScheduleDefinition(name="s", job=JobSpec(argv=["false"]), cron="@hourly")
    replaced = client.add_schedule(definition, replace=True)
    assert (replaced.cron, replaced.every_s, replaced.job.argv if replaced.job else None) == (
        "0 * * * *", None, ["false"])


def test_edit_recomputes_the_next_fire_time(db: DirectDatabase, client: Client) -> None:
    add(client, every_s=3600.0)
    edited = client.edit_schedule("s", cron="*/5 * * * *", timezone="Asia/Kolkata")
    assert edited.every_s is None and edited.cron == "*/5 * * * *"
    assert edited.next_fire_at is not None
    assert edited.next_fire_at - db_now(db) <= timedelta(minutes=5)
    with pytest.raises(InvalidInput, match="bad minute field"):
        client.edit_schedule("s", cron="99 * * * *")


def test_unknown_names_are_not_found(client: Client) -> None:
    for call in (lambda: client.schedule("nope"), lambda: client.pause_schedule("nope"),
                 lambda: client.remove_schedule("nope"), lambda: client.trigger_schedule("nope"),
                 lambda: client.edit_schedule("nope", every_s=5.0)):
        with pytest.raises(NotFound, match="no schedule named 'nope'"):
            call()


def test_trigger_runs_once_now_and_remove_keeps_the_jobs(
        db: DirectDatabase, client: Client) -> None:
    schedule_id = add(client, every_s=3600.0, overlap=Overlap.ALLOW)
    job_id = client.trigger_schedule("s")
    assert client.get(job_id).state is JobState.QUEUED
    assert [state for _, state, _ in runs(db, schedule_id)] == ["queued"]
    client.remove_schedule("s")
    assert client.schedules() == []
    assert client.get(job_id).name == "s"


# --- racing schedulers (PostgreSQL: row locks) --------------------------------------------------


def test_a_locked_schedule_is_skipped_by_another_scheduler(pg_url: str) -> None:
    db = DirectDatabase(parse(pg_url))
    client = Client(pg_url)
    try:
        # Every minute, from 150 s ago: three fire times due, the next 30 s away, so that
        # "no longer due" holds however slowly a loaded machine runs the test (at every second
        # it did not: the next second came due between the commit and the last look).
        start = whole_second(db_now(db)) - timedelta(seconds=150)
        schedule_id = add(client, every_s=60.0, start_at=start, misfire=Misfire.ALL,
                          overlap=Overlap.ALLOW)
        set_next_fire(db, "s", start)
        with writing(db) as first:
            held = schedules.fire_due(first)
            assert held.schedules == 1
            # Meanwhile a second scheduler finds nothing to do: the row is locked, not waited on.
            assert fire(db).schedules == 0
        assert fire(db).schedules == 0  # and after the commit it is no longer due
        times = [t for t, _, _ in runs(db, schedule_id)]
        assert len(times) == len(set(times)) == 3
    finally:
        db.close()


def test_jitter_delays_the_run_not_the_fire_time(db: DirectDatabase, client: Client) -> None:
    start = whole_second(db_now(db)) - timedelta(seconds=40)
    schedule_id = add(client, every_s=1.0, start_at=start, misfire=Misfire.ALL,
                      overlap=Overlap.ALLOW, jitter_s=30.0)
    set_next_fire(db, "s", start)
    before = db_now(db)
    fire(db)
    after = db_now(db)
    with db.read() as conn:
        rows = [job for job in reads.list_jobs(conn, schedule="s", limit=None)
                if job.schedule_id == schedule_id]
    # Every second from `start` up to the moment it fired, once: 41 of them, or 42 when the
    # clock passed a whole second between reading `start` and firing (a loaded machine).
    due_before = int((before - start).total_seconds()) + 1
    due_after = int((after - start).total_seconds()) + 1
    assert 41 <= due_before <= len(rows) <= due_after
    assert {row.fire_time for row in rows} == {start + timedelta(seconds=k)
                                               for k in range(len(rows))}
    delays = [(row.run_at - before).total_seconds() for row in rows]
    assert all(-0.01 <= d <= 30.0 + (after - before).total_seconds() for d in delays)
    assert max(delays) - min(delays) > 1.0  # spread out, not all at once


# --- schedules of workflows ---------------------------------------------------------------------

WORKFLOW_TOML = """
[workflow]
name = "nightly"

[tasks.dump]
command = "echo dump {day}"

[tasks.upload]
command = "echo upload"
needs = ["dump"]
"""


def add_workflow_schedule(client: Client, overlap: Overlap) -> int:
    from jobctl.workflow import load

    definition = ScheduleDefinition(
        name="nightly", job=JobSpec(argv=["jobctl", "workflow", "run", "nightly.toml"]),
        every_s=10.0, overlap=overlap,
        workflow={"definition": load(WORKFLOW_TOML, "nightly.toml"), "params": {"day": "mon"}})
    return client.add_schedule(definition).id


def started_workflows(db: DirectDatabase,
                      schedule_id: int) -> list[tuple[int, list[tuple[str, str]]]]:
    """(workflow id, [(task, state)]) for each workflow the schedule started."""
    with db.read() as conn:
        found = workflows.list_workflows(conn, limit=None)
    return [(wf.id, sorted((str(task.task), task.state.value) for task in wf.tasks))
            for wf in sorted(found, key=lambda wf: wf.id) if wf.schedule_id == schedule_id]


def test_a_workflow_schedule_starts_one_workflow_per_occurrence(
        db: DirectDatabase, client: Client) -> None:
    schedule_id = add_workflow_schedule(client, Overlap.ALLOW)
    set_next_fire(db, "nightly", whole_second(db_now(db)) - timedelta(seconds=1))
    assert fire(db).jobs == 1
    [(workflow_id, tasks)] = started_workflows(db, schedule_id)
    assert tasks == [("dump", "queued"), ("upload", "waiting")]
    with db.read() as conn:
        workflow = workflows.get(conn, workflow_id)
        # the workflow's fire time (no parameter, so no backend's parameter style)
        fire_time = conn.time_not_null(conn.scalar("SELECT fire_time FROM workflows"))
    assert workflow is not None
    [argv] = [task.argv for task in workflow.tasks if task.task == "dump"]
    assert argv == ["/bin/sh", "-c", "echo dump mon"]  # --set values stored with it
    # The same fire time again (a racing scheduler): nothing new, no job row for the schedule.
    with writing(db) as conn:
        schedule = schedules.get(conn, "nightly")
        assert schedule is not None
        again = schedules.submit_occurrences(conn, [schedules.Occurrence(schedule, fire_time)])
    assert again.jobs == 0
    assert len(started_workflows(db, schedule_id)) == 1
    assert runs(db, schedule_id) == []


def test_a_workflow_schedule_forbids_overlap_until_every_task_ended(
        db: DirectDatabase, client: Client) -> None:
    schedule_id = add_workflow_schedule(client, Overlap.FORBID)
    first = whole_second(db_now(db)) - timedelta(seconds=20)
    with writing(db) as conn:
        schedule = schedules.get(conn, "nightly")
        assert schedule is not None
        started = schedules.submit_occurrences(conn, [schedules.Occurrence(schedule, first)])
        skipped = schedules.submit_occurrences(
            conn, [schedules.Occurrence(schedule, first + timedelta(seconds=10))])
    assert (started.jobs, skipped.jobs, skipped.skipped) == (1, 0, 1)
    [(workflow_id, _)] = started_workflows(db, schedule_id)
    client.cancel_workflow(workflow_id)
    with writing(db) as conn:
        later = schedules.submit_occurrences(
            conn, [schedules.Occurrence(schedule, first + timedelta(seconds=20))])
    assert later.jobs == 1
    assert len(started_workflows(db, schedule_id)) == 2


# --- the driver road ----------------------------------------------------------------------------

SCHEDULER_ONCE = """
import sys
from jobctl.scheduler import Scheduler, SchedulerSettings
from jobctl.store.direct import open_or_create

database = open_or_create(sys.argv[1])
Scheduler(database, SchedulerSettings(once=True)).run()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "alembic"))[:3])
"""


def test_the_scheduler_fires_without_importing_sqlalchemy(sqlite_url: str) -> None:
    import subprocess
    import sys

    db = DirectDatabase(parse(sqlite_url))
    client = Client(sqlite_url)
    try:
        start = whole_second(db_now(db)) - timedelta(seconds=2)
        schedule_id = add(client, every_s=1.0, start_at=start, misfire=Misfire.ALL,
                          overlap=Overlap.ALLOW)
        set_next_fire(db, "s", start)
        done = subprocess.run([sys.executable, "-c", SCHEDULER_ONCE, sqlite_url],
                              capture_output=True, text=True, timeout=60, check=True)
        assert done.stdout.strip() == "[]", done.stderr
        assert len(runs(db, schedule_id)) >= 3
    finally:
        db.close()
