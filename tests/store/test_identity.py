"""Who submitted it (`submitted_by`, jobctl.store.identity) on both backends: every way a job,
schedule or workflow is created records the right name; occurrences, workflow tasks and hooks
take the name of the row they belong to; `job list --mine/--submitted-by` filter by it. On
PostgreSQL the database sets it: a role with INSERT and UPDATE on the tables cannot write
another name (the forge tests, as a real LOGIN role of their own)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from pgroles import LoginRole
from psycopg import sql

from jobctl.models import JobSpec, JobState, ScheduleDefinition
from jobctl.store import arrays, jobs, queue, reads, schedules, workflows
from jobctl.store import workers as worker_rows
from jobctl.store.direct import Conn, DirectDatabase, open_or_create
from jobctl.store.identity import unix_user
from jobctl.store.queue import Outcome
from jobctl.workflow import load

WORKFLOW = """
[workflow]
name = "wf"
[tasks.a]
command = "true"
[tasks.b]
command = "true"
needs = ["a"]
"""


@pytest.fixture
def direct(db_url: str) -> Iterator[DirectDatabase]:
    database = open_or_create(db_url)
    yield database
    database.close()


def me(conn: Conn, url: str) -> str:
    """The name this connection's rows get: the session's role, or this process's Unix user."""
    if url.startswith("postgresql"):
        return str(conn.scalar("SELECT session_user"))
    return unix_user()

# A job's columns without a default, for a plain INSERT.
COLUMNS = "queue, state, argv, env, labels, delivery, run_at, created_at"
VALUES = "'default', 'queued', '[\"true\"]', '{}', '{}', 'at_least_once', now(), now()"


@pytest.fixture
def role(pg_url: str) -> Iterator[LoginRole]:
    """A LOGIN role of this test's own on the test database, with what jobctl needs on its
    tables and sequences (no superuser, no ownership): `url` connects as it."""
    found = LoginRole(pg_url, "jobctl_submitter",
                      "GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}",
                      "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    yield found
    found.drop()


def register(db: DirectDatabase) -> int:
    with db.write() as conn:
        return worker_rows.register(conn, name="w", hostname="host", pid=1, queues=["default"],
                                    concurrency=8, version="test")


def submitters(db: DirectDatabase) -> dict[int, str | None]:
    with db.read() as conn:
        return {job.id: job.submitted_by for job in reads.list_jobs(conn, limit=None)}


def end(db: DirectDatabase, worker: int, job_id: int, state: JobState) -> None:
    """Claim what is due, then end `job_id` in `state`."""
    with db.turn() as conn:
        queue.complete_and_claim(conn, worker, [], queue.Claim(["default"], 8, 60.0))
    with db.read() as conn:
        job = reads.get(conn, job_id)
    assert job is not None and job.state is JobState.RUNNING
    with db.turn() as conn:
        queue.complete_and_claim(conn, worker, [Outcome(
            job_id, job.attempt, state, state.value, 0 if state is JobState.SUCCEEDED else 1,
            None, None, has_dependents=False)], queue.Claim(["default"], 0, 60.0))


def is_postgres(conn: Conn) -> bool:
    return conn.backend.title == "PostgreSQL"


def make_due(db: DirectDatabase, name: str) -> None:
    """Make schedule `name` due (its next occurrence an hour ago)."""
    with db.write() as conn:
        moment = reads.database_now(conn) - timedelta(hours=1)
        mark = "%(moment)s" if is_postgres(conn) else ":moment"
        conn.execute(f"UPDATE schedules SET next_fire_at = {mark} WHERE name = '{name}'",
                     {"moment": conn.time_param(moment)})


def without_submitter(conn: Conn, job_id: int) -> None:
    """Make a job's submitted_by NULL, as a row from before migration 0011 (on PostgreSQL with
    the trigger that keeps it disabled for the while: the tests' role owns the tables)."""
    postgres = is_postgres(conn)
    if postgres:
        conn.execute("ALTER TABLE jobs DISABLE TRIGGER jobs_keep_submitter")
    conn.execute(f"UPDATE jobs SET submitted_by = NULL WHERE id = {job_id}")
    if postgres:
        conn.execute("ALTER TABLE jobs ENABLE TRIGGER jobs_keep_submitter")


def test_each_way_of_submitting_records_the_submitter(direct: DirectDatabase,
                                                      db_url: str) -> None:
    with direct.write() as conn:
        name = me(conn, db_url)
        one, _ = jobs.submit(conn, JobSpec(argv=["true"]))
        keyed, _ = jobs.submit(conn, JobSpec(argv=["true"], unique_key="k"))
        many = jobs.submit_many(conn, [JobSpec(argv=["true"]) for _ in range(3)])
        _, tasks = arrays.create(conn, JobSpec(argv=["echo", "{index}"]), [1, 2, 3], None)
        workflow_id = workflows.start(conn, load(WORKFLOW, "wf.toml"), {})
        schedule_id = schedules.create(conn, ScheduleDefinition(
            name="s", job=JobSpec(argv=["true"]), every_s=3600.0))
    assert workflow_id is not None
    found = submitters(direct)
    assert name and {found[job_id] for job_id in [one, keyed, *many, *tasks]} == {name}
    with direct.read() as conn:
        workflow = workflows.get(conn, workflow_id)
        schedule = schedules.get(conn, "s")
    assert workflow is not None and workflow.submitted_by == name
    assert {task.submitted_by for task in workflow.tasks} == {name}
    assert workflow.to_json()["submitted_by"] == name
    assert schedule is not None and schedule.id == schedule_id
    assert schedule.submitted_by == name and schedule.to_json()["submitted_by"] == name


def test_sqlite_occurrences_tasks_and_hooks_take_the_name_of_their_row(
        sqlite_url: str) -> None:
    """SQLite's triggers copy the name of the schedule, workflow or job a row belongs to (here
    written directly: one Unix user cannot play two in a test)."""
    db = open_or_create(sqlite_url)
    try:
        with db.write() as conn:
            schedules.create(conn, ScheduleDefinition(
                name="s", job=JobSpec(argv=["true"]), every_s=3600.0))
            schedules.create(conn, ScheduleDefinition(
                name="wfs", job=JobSpec(argv=["jobctl", "workflow", "run"]), every_s=3600.0,
                workflow={"definition": load(WORKFLOW, "wf.toml"), "params": {}}))
            conn.execute("UPDATE schedules SET submitted_by = 'alice'")
            parent, _ = jobs.submit(conn, JobSpec(argv=["true"], on_end="echo end"))
            conn.execute(f"UPDATE jobs SET submitted_by = 'bob' WHERE id = {parent}")
        make_due(db, "s")
        make_due(db, "wfs")
        with db.write() as conn:
            fired = schedules.fire_due(conn)
        assert fired.jobs >= 1
        worker = register(db)
        end(db, worker, parent, JobState.SUCCEEDED)
        with db.read() as conn:
            everything = reads.list_jobs(conn, limit=None)
            [workflow] = workflows.list_workflows(conn)
        by_kind = {("hook" if job.hook_of else "task" if job.workflow_id else
                    "occurrence" if job.schedule_id else "job"): job.submitted_by
                   for job in everything if job.id != parent}
        assert by_kind == {"hook": "bob", "task": "alice", "occurrence": "alice"}
        assert workflow.submitted_by == "alice"
    finally:
        db.close()


def test_postgresql_occurrences_tasks_hooks_and_retries_keep_the_submitter(
        pg_url: str, role: LoginRole) -> None:
    """The role makes a schedule and a job with a hook; the scheduler, the worker and a retry
    run as another role (the superuser): every row keeps the role's name."""
    mine = open_or_create(role.url)
    admin = open_or_create(pg_url)
    try:
        with mine.write() as conn:
            assert me(conn, pg_url) == role.name
            schedules.create(conn, ScheduleDefinition(
                name="s", job=JobSpec(argv=["true"]), every_s=3600.0))
            schedules.create(conn, ScheduleDefinition(
                name="wfs", job=JobSpec(argv=["jobctl", "workflow", "run"]), every_s=3600.0,
                workflow={"definition": load(WORKFLOW, "wf.toml"), "params": {}}))
            parent, _ = jobs.submit(conn, JobSpec(argv=["true"], on_failure="echo bad"))
        with admin.write() as conn:
            assert me(conn, pg_url) != role.name
        make_due(admin, "s")
        make_due(admin, "wfs")
        with admin.write() as conn:
            assert schedules.fire_due(conn).jobs >= 1
        worker = register(admin)
        end(admin, worker, parent, JobState.FAILED)
        with admin.write() as conn:
            assert jobs.retry(conn, parent) is JobState.FAILED
            [workflow] = workflows.list_workflows(conn)
        found = submitters(admin)
        assert set(found.values()) == {role.name}
        assert len(found) == 1 + 1 + 2 + 1  # the job, its occurrence, the tasks, the hook
        assert workflow.submitted_by == role.name
    finally:
        mine.close()
        admin.close()


def test_postgresql_submitted_by_cannot_be_forged(pg_url: str, role: LoginRole) -> None:
    """As a role with INSERT and UPDATE on jobs, schedules and workflows: a row naming another
    role, an UPDATE to another name, and a job that claims to be another's hook or a task of
    another's workflow all keep the role's own name."""
    db = open_or_create(pg_url)
    try:
        with db.write() as conn:
            victim, _ = jobs.submit(conn, JobSpec(argv=["true"]))
            victim_workflow = workflows.start(conn, load(WORKFLOW, "wf.toml"), {})
    finally:
        db.close()
    with psycopg.connect(role.url, autocommit=True) as conn:
        job_id = conn.execute(
            f"INSERT INTO jobs ({COLUMNS}, submitted_by) VALUES ({VALUES}, 'postgres') "
            "RETURNING id").fetchone()
        hook_id = conn.execute(
            f"INSERT INTO jobs ({COLUMNS}, hook_of, submitted_by) "
            f"VALUES ({VALUES}, %s, 'postgres') RETURNING id", [victim]).fetchone()
        task_id = conn.execute(
            f"INSERT INTO jobs ({COLUMNS}, workflow_id, task, submitted_by) "
            f"VALUES ({VALUES}, %s, 'a', 'postgres') RETURNING id", [victim_workflow]).fetchone()
        schedule_id = conn.execute(
            "INSERT INTO schedules (name, every_s, created_at, updated_at, submitted_by) "
            "VALUES ('forged', 60, now(), now(), 'postgres') RETURNING id").fetchone()
        workflow_id = conn.execute(
            "INSERT INTO workflows (name, definition, params, created_at, labels, submitted_by) "
            "VALUES ('forged', '{}', '{}', now(), '{}', 'postgres') RETURNING id").fetchone()
        assert job_id and hook_id and task_id and schedule_id and workflow_id

        def stored() -> list[str]:
            return [row[0] for row in conn.execute(
                "SELECT submitted_by FROM jobs WHERE id IN (%s, %s, %s) UNION ALL "
                "SELECT submitted_by FROM schedules WHERE id = %s UNION ALL "
                "SELECT submitted_by FROM workflows WHERE id = %s",
                [job_id[0], hook_id[0], task_id[0], schedule_id[0], workflow_id[0]]).fetchall()]

        assert stored() == [role.name] * 5
        for table in ("jobs", "schedules", "workflows"):
            conn.execute(sql.SQL("UPDATE {} SET submitted_by = 'postgres'")
                         .format(sql.Identifier(table)))
        assert stored() == [role.name] * 5
        [(victim_by,)] = conn.execute("SELECT submitted_by FROM jobs WHERE id = %s",
                                      [victim]).fetchall()
        assert victim_by == "postgres"  # nor can the role take the name away from another's


def test_list_filters_by_submitter(direct: DirectDatabase, db_url: str) -> None:
    with direct.write() as conn:
        name = me(conn, db_url)
        mine, _ = jobs.submit(conn, JobSpec(argv=["true"]))
        unknown, _ = jobs.submit(conn, JobSpec(argv=["true"]))
        without_submitter(conn, unknown)
    with direct.read() as conn:
        assert [job.id for job in reads.list_jobs(conn, mine=True)] == [mine]
        assert [job.id for job in reads.list_jobs(conn, submitted_by=name)] == [mine]
        assert reads.list_jobs(conn, submitted_by=name + "x") == []
        assert [job.id for job in reads.list_jobs(conn)] == [unknown, mine]
        job = reads.get(conn, unknown)
    assert job is not None and job.submitted_by is None and job.to_json()["submitted_by"] is None


def test_postgresql_mine_is_the_session_role(pg_url: str, role: LoginRole) -> None:
    admin = open_or_create(pg_url)
    mine = open_or_create(role.url)
    try:
        with admin.write() as conn:
            theirs, _ = jobs.submit(conn, JobSpec(argv=["true"]))
        with mine.write() as conn:
            own, _ = jobs.submit(conn, JobSpec(argv=["true"]))
        with mine.read() as conn:
            assert [job.id for job in reads.list_jobs(conn, mine=True)] == [own]
        with admin.read() as conn:
            assert [job.id for job in reads.list_jobs(conn, mine=True)] == [theirs]
            assert [job.id for job in reads.list_jobs(conn, submitted_by=role.name)] == [own]
    finally:
        admin.close()
        mine.close()


def test_a_job_keeps_its_submitter_however_long_it_waits(direct: DirectDatabase,
                                                         db_url: str) -> None:
    with direct.write() as conn:
        name = me(conn, db_url)
        job_id, _ = jobs.submit(conn, JobSpec(argv=["true"], run_in_s=timedelta(
            hours=1).total_seconds()))
        jobs.cancel(conn, job_id)
        assert jobs.retry(conn, job_id) is JobState.CANCELLED
    assert submitters(direct)[job_id] == name
