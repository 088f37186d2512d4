"""The audit trail (jobctl.store.audit) on both backends: each audited action leaves one row with
the role, the database's time and what changed; a worker's, a scheduler's and an owner's own
changes leave none; nobody can change or erase a row. On PostgreSQL a second real LOGIN role
cancels the first's job and the trail names it; that role cannot write the table at all, the
owner cannot UPDATE, DELETE or TRUNCATE it, and an INSERT cannot name another role."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import psycopg
import pytest
from pgroles import LoginRole
from psycopg import sql

from jobctl.capacity import QueueSettings
from jobctl.models import AuditEntry, JobSpec, JobState, ScheduleDefinition
from jobctl.store import audit, capacity, jobs, queue, reads, retention, schedules
from jobctl.store import workers as worker_rows
from jobctl.store.capacity import Edit
from jobctl.store.direct import Conn, DirectDatabase, open_or_create
from jobctl.store.identity import unix_user
from jobctl.store.queue import Claim, Outcome

OTHER = "someone-else"


@pytest.fixture
def direct(db_url: str) -> Iterator[DirectDatabase]:
    database = open_or_create(db_url)
    yield database
    database.close()


def is_postgres(conn: Conn) -> bool:
    return conn.backend.title == "PostgreSQL"


def me(conn: Conn) -> str:
    return str(conn.scalar("SELECT session_user")) if is_postgres(conn) else unix_user()


def trail(db: DirectDatabase) -> list[AuditEntry]:
    with db.read() as conn:
        return audit.since(conn, None)


def owned_by(conn: Conn, job_id: int, name: str | None) -> None:
    """Give a job another submitter (on PostgreSQL with the trigger that keeps the name disabled
    for the while: the tests' role owns the tables)."""
    postgres = is_postgres(conn)
    if postgres:
        conn.execute("ALTER TABLE jobs DISABLE TRIGGER jobs_keep_submitter")
    conn.execute(f"UPDATE jobs SET submitted_by = {'NULL' if name is None else repr(name)} "
                 f"WHERE id = {job_id}")
    if postgres:
        conn.execute("ALTER TABLE jobs ENABLE TRIGGER jobs_keep_submitter")


def submit(db: DirectDatabase, owner: str | None = OTHER, **spec: object) -> int:
    with db.write() as conn:
        job_id, _ = jobs.submit(conn, JobSpec(argv=["true"], **spec))  # type: ignore[arg-type]
        if owner is not None:
            owned_by(conn, job_id, owner)
    return job_id


def register(db: DirectDatabase) -> int:
    with db.write() as conn:
        return worker_rows.register(conn, name="w", hostname="host", pid=1,
                                    queues=["default"], concurrency=8, version="test")


def claim(db: DirectDatabase, worker: int, lease_s: float = 60.0) -> list[int]:
    with db.turn() as conn:
        _, claimed = queue.complete_and_claim(conn, worker, [], Claim(["default"], 8, lease_s))
    return [job.id for job in claimed]


def finish(db: DirectDatabase, worker: int, job_id: int, state: JobState,
           delay: float = 0.0) -> None:
    with db.read() as conn:
        job = reads.get(conn, job_id)
    assert job is not None and job.state is JobState.RUNNING
    with db.turn() as conn:
        queue.complete_and_claim(conn, worker, [Outcome(
            job_id, job.attempt, state, "failed" if state is JobState.QUEUED else state.value,
            0 if state is JobState.SUCCEEDED else 1, None, None, retry_delay_s=delay)],
            Claim(["default"], 0, 60.0))


def test_each_user_action_on_anothers_job_is_recorded(direct: DirectDatabase) -> None:
    held = submit(direct)
    edited = submit(direct)
    cancelled = submit(direct)
    running = submit(direct)
    with direct.read() as conn:
        name = me(conn)
        start = reads.database_now(conn)
    worker = register(direct)
    # the worker claims all four: leave `running` running, put the others back as they were
    assert set(claim(direct, worker)) == {held, edited, cancelled, running}
    with direct.turn() as conn:
        queue.release(conn, worker, [(job_id, 1) for job_id in (held, edited, cancelled)])
    assert trail(direct) == []  # claiming and releasing are the worker's, not a user's
    with direct.write() as conn:
        capacity.hold(conn, [held], True)
        capacity.hold(conn, [held], False)
        capacity.edit(conn, edited, Edit(priority=7, queue="other"))
        jobs.cancel(conn, cancelled)
        jobs.cancel(conn, running)
        jobs.retry(conn, cancelled, retries=2)
    entries = trail(direct)
    assert [(e.action, e.kind, e.target) for e in entries] == [
        ("job.hold", "job", str(held)), ("job.release", "job", str(held)),
        ("job.edit", "job", str(edited)), ("job.cancel", "job", str(cancelled)),
        ("job.cancel", "job", str(running)), ("job.retry", "job", str(cancelled))]
    assert {e.role for e in entries} == {name}
    assert {e.owner for e in entries} == {OTHER}
    with direct.read() as conn:
        end = reads.database_now(conn)
    assert all(start <= e.at <= end for e in entries)
    changes = [e.changes for e in entries]
    assert changes[0] == {"held": [False, True]}
    assert changes[1] == {"held": [True, False]}
    assert changes[2] == {"priority": [0, 7], "queue": ["default", "other"]}
    assert changes[3] == {"state": ["queued", "cancelled"], "cancel_requested": [False, True]}
    assert changes[4] == {"cancel_requested": [False, True]}
    assert changes[5]["state"] == ["cancelled", "queued"]
    assert changes[5]["cancel_requested"] == [True, False]
    assert changes[5]["max_attempts"][1] == 3
    assert [e.to_json()["at"].endswith("+00:00") for e in entries] == [True] * 6


def test_a_run_at_edit_is_shown_in_utc(direct: DirectDatabase) -> None:
    job_id = submit(direct)
    with direct.write() as conn:
        moment = reads.database_now(conn) + timedelta(hours=5)
        capacity.edit(conn, job_id, Edit(run_at=moment))
    [entry] = trail(direct)
    old, new = entry.changes["run_at"]
    assert new.endswith("+00:00") and old.endswith("+00:00")
    assert abs((reads_time(new) - moment).total_seconds()) < 0.001


def reads_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_changes_of_ones_own_jobs_are_not_recorded(direct: DirectDatabase) -> None:
    first = submit(direct, owner=None)
    second = submit(direct, owner=None)
    with direct.write() as conn:
        capacity.hold(conn, [first], True)
        capacity.hold(conn, [first], False)
        capacity.edit(conn, second, Edit(priority=3))
        jobs.cancel(conn, first)
        jobs.retry(conn, first)
    assert trail(direct) == []


def test_a_job_with_no_submitter_counts_as_anothers(direct: DirectDatabase) -> None:
    """A row from before migration 0011 (submitted_by NULL) is nobody's: its cancel is recorded."""
    job_id = submit(direct, owner=None)
    with direct.write() as conn:
        owned_by(conn, job_id, None)
        jobs.cancel(conn, job_id)
    [entry] = trail(direct)
    assert (entry.action, entry.owner) == ("job.cancel", None)


def test_a_workers_normal_run_records_nothing(direct: DirectDatabase) -> None:
    """Another's jobs claimed, renewed, completed, retried after a failure, rescued after a
    lost lease, and their dependents settled (released, failed): no row."""
    ok = submit(direct)
    flaky = submit(direct, retries=2)
    doomed = submit(direct)
    lost = submit(direct)
    with direct.write() as conn:
        after_ok, _ = jobs.submit(conn, JobSpec(argv=["true"], after=(ok,)))
        after_doomed, _ = jobs.submit(conn, JobSpec(argv=["true"], after=(doomed,)))
        owned_by(conn, after_ok, OTHER)
        owned_by(conn, after_doomed, OTHER)
    worker = register(direct)
    assert set(claim(direct, worker)) == {ok, flaky, doomed, lost}
    with direct.turn() as conn:
        queue.renew(conn, worker, [ok, flaky, doomed, lost], 60.0)
    finish(direct, worker, ok, JobState.SUCCEEDED)
    finish(direct, worker, flaky, JobState.QUEUED)  # a retry after a failure
    finish(direct, worker, doomed, JobState.FAILED)
    with direct.write() as conn:
        # `lost`'s lease ran out: the rescuer takes it back
        mark = "%(m)s" if is_postgres(conn) else ":m"
        conn.execute(f"UPDATE jobs SET lease_until = {mark} WHERE id = {lost}",
                     {"m": conn.time_param(reads.database_now(conn) - timedelta(hours=1))})
        queue.rescue(conn)
    with direct.read() as conn:
        states = {job_id: reads.get(conn, job_id).state  # type: ignore[union-attr]
                  for job_id in (ok, flaky, doomed, lost, after_ok, after_doomed)}
    assert states == {ok: JobState.SUCCEEDED, flaky: JobState.QUEUED, doomed: JobState.FAILED,
                      lost: JobState.QUEUED, after_ok: JobState.QUEUED,
                      after_doomed: JobState.FAILED}
    assert trail(direct) == []


def test_queue_actions_are_recorded(direct: DirectDatabase) -> None:
    submit(direct, owner=None, queue="q")
    with direct.write() as conn:
        name = me(conn)
        capacity.pause(conn, ["q"], True)
        capacity.pause(conn, ["q"], True)  # already paused: nothing changes, nothing recorded
        capacity.pause(conn, ["q"], False)
        capacity.set_queue(conn, "q", max_running=4)
        capacity.set_queue(conn, "q", rate=(10, 60.0))
    entries = trail(direct)
    assert [(e.action, e.target, e.role) for e in entries] == [
        ("queue.pause", "q", name), ("queue.resume", "q", name), ("queue.set", "q", name),
        ("queue.set", "q", name)]
    assert entries[0].changes["paused"] == [None, True]
    assert entries[1].changes == {"paused": [True, False]}
    assert entries[2].changes == {"max_running": [None, 4]}
    assert entries[3].changes == {"rate_count": [None, 10], "rate_window_s": [None, 60.0]}


def test_a_rated_queues_claims_record_nothing(direct: DirectDatabase) -> None:
    with direct.write() as conn:
        capacity.set_queue(conn, "default", rate=(100, 60.0))
    before = trail(direct)
    submit(direct)
    worker = register(direct)
    with direct.turn() as conn:
        started = capacity.claim_gated(conn, worker, ["default"], 4, 60.0, capacity.Gate(
            host="host", resources=capacity.Resources(cpu=8.0, mem=1 << 34), tags={}), None, True)
    assert len(started) == 1
    with direct.read() as conn:
        assert capacity.queue_settings(conn, ["default"])["default"] != QueueSettings("default")
    assert trail(direct) == before


def test_schedule_actions_are_recorded_and_firing_is_not(direct: DirectDatabase) -> None:
    definition = ScheduleDefinition(name="s", job=JobSpec(argv=["true"], env={"TOKEN": "xyz"}),
                                    every_s=3600.0)
    with direct.write() as conn:
        name = me(conn)
        schedules.create(conn, definition)
    with direct.write() as conn:
        existing = schedules.get(conn, "s", lock=True)
        assert existing is not None
        schedules.replace(conn, existing, ScheduleDefinition(
            name="s", job=JobSpec(argv=["true"], env={"TOKEN": "abc"}), every_s=60.0))
        schedules.set_paused(conn, "s", True)
        schedules.set_paused(conn, "s", False)
    with direct.write() as conn:  # make it due, then fire it: the scheduler's, not recorded
        mark = "%(m)s" if is_postgres(conn) else ":m"
        conn.execute(f"UPDATE schedules SET next_fire_at = {mark}",
                     {"m": conn.time_param(reads.database_now(conn) - timedelta(minutes=5))})
    with direct.write() as conn:
        assert schedules.fire_due(conn).jobs >= 1
    with direct.write() as conn:
        schedules.delete(conn, "s")
    entries = trail(direct)
    assert [e.action for e in entries] == ["schedule.add", "schedule.edit", "schedule.pause",
                                           "schedule.resume", "schedule.remove"]
    assert {(e.kind, e.target, e.role, e.owner) for e in entries} == {
        ("schedule", "s", name, name)}
    assert entries[0].changes["every_s"] == [None, 3600.0]
    assert entries[1].changes["every_s"] == [3600.0, 60.0]
    assert entries[1].changes["job.env"] == "changed"
    assert entries[2].changes == {"paused": [False, True]}
    # the template's environment is never in the trail
    assert all("xyz" not in str(e.changes) and "abc" not in str(e.changes) for e in entries)


def test_a_stop_request_is_recorded_and_heartbeats_are_not(direct: DirectDatabase) -> None:
    worker = register(direct)
    with direct.write() as conn:
        name = me(conn)
        queue_sql = conn.backend.sql_queue
        conn.execute(queue_sql.HEARTBEAT, {"worker_id": worker, "draining": False})
    assert trail(direct) == []
    with direct.write() as conn:
        worker_rows.request_stop(conn, str(worker))
    with direct.write() as conn:
        worker_rows.set_state(conn, worker, worker_rows.WorkerState.STOPPED)
    [entry] = trail(direct)
    assert (entry.action, entry.kind, entry.target, entry.role) == (
        "worker.stop", "worker", str(worker), name)
    assert entry.changes == {"state": ["running", "draining"], "worker": "w@host"}


def test_a_prune_is_one_row_with_its_counts(direct: DirectDatabase) -> None:
    worker = register(direct)
    done = [submit(direct, owner=None) for _ in range(3)]
    claim(direct, worker)
    for job_id in done:
        finish(direct, worker, job_id, JobState.SUCCEEDED)
    # Retention takes jobs that ended before the database's now: past the clock tick (SQLite's
    # is a millisecond) of the last end, or that job may be kept (seen under a loaded suite).
    time.sleep(0.01)
    retention.prune(direct, 0.0, dry_run=True)
    assert trail(direct) == []  # a dry run deletes nothing and records nothing
    pruned = retention.prune(direct, 0.0, batch=2)  # two batches, one row
    assert pruned.jobs == 3 and pruned.batches == 2
    retention.prune(direct, 0.0, audit_empty=False)  # nothing left: a scheduler's, no row
    [entry] = trail(direct)
    with direct.read() as conn:
        name = me(conn)
    assert (entry.action, entry.kind, entry.role) == ("retention.prune", "retention", name)
    assert entry.changes["jobs"] == 3 and entry.changes["attempts"] == 3
    assert entry.changes["older_than_s"] == 0.0
    retention.prune(direct, 0.0)  # `db prune` that found nothing: still its row
    assert [e.changes["jobs"] for e in trail(direct)] == [3, 0]


def test_since_reads_from_a_time_on(direct: DirectDatabase) -> None:
    with direct.write() as conn:
        capacity.pause(conn, ["default"], True)
    time.sleep(0.01)  # past the clock tick of the pause (SQLite's is a millisecond): seen equal
    with direct.read() as conn:
        middle = reads.database_now(conn)
    time.sleep(0.01)
    with direct.write() as conn:
        capacity.pause(conn, ["default"], False)
    with direct.read() as conn:
        assert [e.action for e in audit.since(conn, middle)] == ["queue.resume"]
        assert [e.action for e in audit.since(conn, None)] == ["queue.pause", "queue.resume"]
        assert audit.since(conn, middle + timedelta(hours=1)) == []


def test_nobody_changes_or_erases_the_trail(direct: DirectDatabase) -> None:
    """Not even the owner of the tables (the tests' role on PostgreSQL, the file's on SQLite)."""
    with direct.write() as conn:
        capacity.pause(conn, ["default"], True)
    with direct.read() as conn:
        postgres = is_postgres(conn)
    refused = ["UPDATE audit SET role = 'nobody'", "DELETE FROM audit"]
    if postgres:  # a statement trigger: even a DELETE that matches no row
        refused.append("DELETE FROM audit WHERE id < 0")
    for statement in refused:
        with (pytest.raises(Exception, match="audit trail cannot be changed or erased"),
              direct.write() as conn):
            conn.execute(statement)
    if postgres:
        with pytest.raises(Exception, match="TRUNCATE refused"), direct.write() as conn:
            conn.execute("TRUNCATE audit")
    [entry] = trail(direct)
    assert entry.action == "queue.pause" and entry.role != "nobody"


def test_sqlite_an_insert_cannot_name_another(sqlite_url: str) -> None:
    db = open_or_create(sqlite_url)
    try:
        with pytest.raises(Exception, match="names its own"), db.write() as conn:
            conn.execute("INSERT INTO audit (at, role, action, kind, changes) "
                         "VALUES ('2026-01-01 00:00:00.000000', 'root2', 'x', 'x', '{}')")
        assert trail(db) == []
    finally:
        db.close()


# --- PostgreSQL: real roles ---------------------------------------------------------------------


@pytest.fixture
def role(pg_url: str) -> Iterator[LoginRole]:
    """A LOGIN role of this test's own, granted directly what cancelling a job needs (SELECT and
    UPDATE on the tables) and SELECT on `audit`: no superuser, no ownership, no write on the
    trail."""
    found = LoginRole(pg_url, "jobctl_audit",
                      "GRANT SELECT, UPDATE ON ALL TABLES IN SCHEMA public TO {role}",
                      "REVOKE ALL ON audit FROM {role}",
                      "GRANT SELECT ON audit TO {role}")
    yield found
    found.drop()


def test_postgresql_another_role_cancels_and_the_trail_names_it(pg_url: str,
                                                                  role: LoginRole) -> None:
    owner_db = open_or_create(pg_url)
    other_db = open_or_create(role.url)
    try:
        with owner_db.write() as conn:
            owner = me(conn)
            job_id, _ = jobs.submit(conn, JobSpec(argv=["true"]))
        assert owner != role.name
        with other_db.write() as conn:
            assert jobs.cancel(conn, job_id) is JobState.QUEUED
        [entry] = trail(other_db)  # the role reads the trail (SELECT granted)
        assert (entry.action, entry.target, entry.role, entry.owner) == (
            "job.cancel", str(job_id), role.name, owner)
    finally:
        other_db.close()
        owner_db.close()


def test_postgresql_a_role_without_rights_on_audit_still_leaves_rows(pg_url: str,
                                                                     role: LoginRole) -> None:
    """The trigger functions are SECURITY DEFINER: the role has no INSERT on `audit`."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("REVOKE ALL ON audit FROM {}").format(sql.Identifier(role.name)))
        job_id = conn.execute("INSERT INTO jobs (queue, state, argv, env, labels, run_at, "
                              "created_at) VALUES ('default', 'queued', '[\"true\"]', '{}', "
                              "'{}', now(), now()) RETURNING id").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(role.url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET held = true WHERE id = %s", [job_id])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM audit")
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT role, action, target FROM audit").fetchall()
    assert rows == [(role.name, "job.hold", str(job_id))]


@pytest.mark.parametrize("statement", [
    "DELETE FROM audit", "UPDATE audit SET role = 'x'", "TRUNCATE audit",
    "INSERT INTO audit (at, role, action, kind, changes) VALUES (now(), 'x', 'x', 'x', '{}')"])
def test_postgresql_a_role_cannot_write_the_trail(pg_url: str, role: LoginRole,
                                                  statement: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO queues (name, paused, updated_at) VALUES ('q', true, now())")
    with (psycopg.connect(role.url, autocommit=True) as conn,
          pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied")):
        conn.execute(statement)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT action, target FROM audit").fetchall() == [
            ("queue.pause", "q")]


def test_postgresql_an_insert_cannot_forge_the_role(pg_url: str, role: LoginRole) -> None:
    """The owner's own INSERT, and a role wrongly granted INSERT, get their own names."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        owner = conn.execute("SELECT session_user").fetchone()[0]  # type: ignore[index]
        conn.execute("INSERT INTO audit (at, role, action, kind, changes) VALUES "
                     "('2000-01-01', 'alice', 'job.cancel', 'job', '{}')")
        conn.execute(sql.SQL("GRANT INSERT ON audit TO {}").format(sql.Identifier(role.name)))
    with psycopg.connect(role.url, autocommit=True) as conn:
        conn.execute("INSERT INTO audit (at, role, action, kind, changes) VALUES "
                     "('2000-01-01', 'alice', 'job.cancel', 'job', '{}')")
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT role, at > now() - interval '1 hour' FROM audit "
                            "ORDER BY id").fetchall()
    assert rows == [(owner, True), (role.name, True)]


def test_postgresql_public_gets_no_right_on_the_trail(pg_url_empty: str) -> None:
    """Even where the database gives PUBLIC every right on new tables by default (ALTER DEFAULT
    PRIVILEGES), the migration takes them away from `audit`, and only from it."""
    with psycopg.connect(pg_url_empty, autocommit=True) as conn:
        conn.execute("ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC")
    open_or_create(pg_url_empty).close()  # creates the schema: every migration, 0012 included
    with psycopg.connect(pg_url_empty) as conn:
        rights = {table: [bool(conn.execute("SELECT has_table_privilege('public', %s, %s)",
                                            [table, right]).fetchone()[0])  # type: ignore[index]
                          for right in ("INSERT", "UPDATE", "DELETE", "TRUNCATE")]
                  for table in ("jobs", "audit")}
    assert rights == {"jobs": [True] * 4, "audit": [False] * 4}
