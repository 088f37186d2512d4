"""Dead-man's switches on both backends (jobctl.store.overdue, jobctl.store.checks): a schedule
with no succeeded run for its --alert-after, and a check with no ping, become overdue once per
spell, whoever notices it; exactly one hook job per spell even when schedulers race; a success
(a run, a ping) ends the spell and a later one fires again; the pass reads nothing when nothing is
due."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from jobctl.client import Client
from jobctl.models import JobSpec, JobState, ScheduleDefinition
from jobctl.store import checks, overdue, queue, reads, schedules
from jobctl.store import workers as worker_rows
from jobctl.store.direct import DirectDatabase
from jobctl.store.queue import Outcome
from jobctl.store.url import parse

HOUR = 3600.0


@pytest.fixture
def db(db_url: str) -> Iterator[DirectDatabase]:
    database = DirectDatabase(parse(db_url))
    yield database
    database.close()


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    found = Client(db_url)
    yield found
    found.close()


def db_now(db: DirectDatabase) -> datetime:
    with db.read() as conn:
        return schedules.now(conn)


def add_schedule(client: Client, name: str = "s", alert_after_s: float = HOUR,
                 on_overdue: str | None = "echo late") -> int:
    return client.add_schedule(ScheduleDefinition(
        # (a priority above its hooks': a test's worker claims its run first)
        name=name, job=JobSpec(argv=["true"], queue="runs", priority=10), every_s=HOUR,
        alert_after_s=alert_after_s, on_overdue=on_overdue)).id


def arm_ago(db: DirectDatabase, name: str, seconds: float) -> None:
    """As if the schedule's --alert-after had been set `seconds` ago (and a scheduler had last
    looked then): the database clock cannot be wound, so the facts are."""
    with db.write() as conn:
        found = schedules.get(conn, name)
        assert found is not None
        then = schedules.now(conn) - timedelta(seconds=seconds)
        conn.execute(conn.backend.sql_overdue.SET_ALERT, {
            "id": found.id, "alert_after_s": found.alert_after_s,
            "on_overdue": found.on_overdue, "alert_set_at": conn.time_param(then),
            "overdue_since": None, "alert_check_at": conn.time_param(then)})


def add_check_ago(db: DirectDatabase, name: str, every_s: float, seconds: float,
                  on_overdue: str | None = "echo late") -> None:
    """A check added `seconds` ago, never pinged."""
    with db.write() as conn:
        assert checks.put(conn, name, every_s, 0.0, on_overdue, replace=False)
        then = schedules.now(conn) - timedelta(seconds=seconds)
        conn.execute(conn.backend.sql_checks.REPLACE, {
            "name": name, "every_s": every_s, "grace_s": 0.0, "on_overdue": on_overdue,
            "now": conn.time_param(then),
            "overdue_at": conn.time_param(then + timedelta(seconds=every_s))})


def hook_jobs(db: DirectDatabase, name: str) -> list[int]:
    """The hook jobs an overdue `name` made (named after it), oldest first."""
    with db.read() as conn:
        found = reads.list_jobs(conn, limit=1000)
    return sorted(job.id for job in found if job.name == f"on_overdue of {name}")


def evaluate(db: DirectDatabase) -> overdue.Noticed:
    scheduler = db.clone()
    try:
        with scheduler.write() as conn:
            return overdue.evaluate(conn)
    finally:
        scheduler.close()


def run_once(db: DirectDatabase, name: str, state: JobState) -> int:
    """One occurrence of the schedule, run to `state` by a worker (queue `runs`)."""
    client_job = None
    with db.write() as conn:
        found = schedules.get(conn, name)
        assert found is not None
        moment = schedules.now(conn)
        submitted = schedules.submit_occurrences(conn, [schedules.Occurrence(found, moment)],
                                                 moment, return_ids=True)
        [client_job] = submitted.job_ids
        worker = worker_rows.register(conn, name=f"w{client_job}", hostname="h", pid=1,
                                      queues=["runs"], concurrency=1, version="test")
    with db.write() as conn:
        [claimed] = queue.claim(conn, worker, queue.Claim(["runs"], 1, 60.0))
    assert claimed.id == client_job
    with db.write() as conn:
        queue.complete(conn, worker, [Outcome(
            job_id=claimed.id, attempt=claimed.attempt, state=state,
            attempt_outcome=state.value, exit_code=0 if state is JobState.SUCCEEDED else 7,
            signal=None, error=None)])
    return client_job


# --- schedules --------------------------------------------------------------------------------


def test_a_schedule_becomes_overdue_once_and_its_hook_gets_the_facts(
        db: DirectDatabase, client: Client) -> None:
    add_schedule(client)
    failed = run_once(db, "s", JobState.FAILED)
    assert not client.schedule("s").overdue
    assert evaluate(db).began == []  # not due: nothing judged, nothing changed
    arm_ago(db, "s", 2 * HOUR)
    noticed = evaluate(db)
    assert noticed.began == ["schedule s"]
    [hook] = noticed.hooks
    assert hook_jobs(db, "s") == [hook]
    assert evaluate(db).hooks == []  # the spell goes on: no second hook
    assert hook_jobs(db, "s") == [hook]
    with db.read() as conn:
        job = reads.get(conn, hook)
        data = conn.scalar("SELECT input FROM jobs WHERE id = " + str(hook))
    assert job is not None and job.state is JobState.QUEUED
    assert job.argv == ["/bin/sh", "-c", "echo late"]
    assert job.queue == "runs"  # the schedule's template's queue
    assert job.schedule_id is None  # a hook is no run of the schedule
    assert job.env["JOBCTL_HOOK_NAME"] == "s"
    assert job.env["JOBCTL_HOOK_STATE"] == "overdue"
    assert job.env["JOBCTL_HOOK_JOB_ID"] == str(failed)
    assert job.env["JOBCTL_HOOK_EXIT_CODE"] == "7"
    import json

    document = json.loads(bytes(data))
    assert document["name"] == "s" and document["overdue"] is True
    assert document["runs"][0]["job_id"] == failed and "next_fire_times" in document
    shown = client.schedule("s")
    assert shown.overdue and shown.overdue_since is not None
    assert document["overdue_since"] == shown.to_json()["overdue_since"]


def test_two_schedulers_racing_mark_it_overdue_once_with_one_hook(
        db_url: str, db: DirectDatabase, client: Client) -> None:
    """Both read the schedule as due; the first writes (and holds its transaction open); the
    second's write waits (PostgreSQL: the row lock; SQLite: the write lock) and then, its
    conditional UPDATE finding overdue_since set, changes nothing and inserts no hook."""
    add_schedule(client)
    arm_ago(db, "s", 2 * HOUR)
    results: dict[str, overdue.Noticed] = {}
    read, go = threading.Event(), threading.Event()

    def race() -> None:  # the second scheduler, on its own connection (and thread)
        second = DirectDatabase(parse(db_url))
        try:
            with second.read() as conn:
                seen = overdue.due(conn)
            assert len(seen.schedules) == 1
            read.set()
            go.wait(30)
            with second.write() as conn:
                results["second"] = overdue.apply(conn, seen)
        finally:
            second.close()

    racer = threading.Thread(target=race)
    racer.start()
    first = DirectDatabase(parse(db_url))
    try:
        with first.read() as conn:
            seen_first = overdue.due(conn)
        assert read.wait(30) and len(seen_first.schedules) == 1
        with first.write() as conn:
            results["first"] = overdue.apply(conn, seen_first)
            go.set()
            racer.join(0.5)
            assert racer.is_alive(), "the second scheduler did not wait for the first"
        racer.join(30)
        assert not racer.is_alive()
    finally:
        go.set()
        first.close()
    assert results["first"].began == ["schedule s"] and len(results["first"].hooks) == 1
    assert results["second"].began == [] and results["second"].hooks == []
    assert hook_jobs(db, "s") == results["first"].hooks


def test_a_succeeded_run_ends_the_spell_and_a_later_spell_fires_again(
        db: DirectDatabase, client: Client) -> None:
    add_schedule(client, alert_after_s=0.5)
    arm_ago(db, "s", 60)
    [first] = evaluate(db).hooks
    run_once(db, "s", JobState.SUCCEEDED)
    shown = client.schedule("s")
    assert not shown.overdue and shown.last_success_at is not None  # live, before any pass
    noticed = evaluate(db)
    assert noticed.ended == ["schedule s"] and noticed.hooks == []
    with db.read() as conn:
        stored = schedules.get(conn, "s")
    assert stored is not None and stored.overdue_since is None
    time.sleep(0.6)  # no success for longer than 0.5 s again
    assert client.schedule("s").overdue
    [second] = evaluate(db).hooks
    assert hook_jobs(db, "s") == [first, second]


def test_failed_and_skipped_runs_do_not_end_a_spell(db: DirectDatabase, client: Client) -> None:
    add_schedule(client)
    arm_ago(db, "s", 2 * HOUR)
    evaluate(db)
    run_once(db, "s", JobState.FAILED)
    assert evaluate(db).ended == []
    assert client.schedule("s").overdue
    assert len(hook_jobs(db, "s")) == 1


def test_a_success_moves_the_next_look_on_without_a_spell(
        db: DirectDatabase, client: Client) -> None:
    """A schedule whose runs succeed is looked at once per alert period (alert_check_at moves
    to its latest success plus --alert-after), never marked overdue."""
    add_schedule(client, alert_after_s=HOUR)
    arm_ago(db, "s", HOUR - 1)
    run_once(db, "s", JobState.SUCCEEDED)
    time.sleep(1.1)
    with db.read() as conn:
        assert len(overdue.due(conn).schedules) == 1
    assert evaluate(db).began == []
    with db.read() as conn:
        assert not overdue.due(conn)  # not due again until an hour after the success
    shown = client.schedule("s")
    assert not shown.overdue and shown.overdue_at is not None
    assert shown.last_success_at is not None
    assert shown.overdue_at == shown.last_success_at + timedelta(hours=1)


def test_setting_alert_after_starts_its_clock_and_none_removes_it(
        db: DirectDatabase, client: Client) -> None:
    add_schedule(client)
    arm_ago(db, "s", 2 * HOUR)
    evaluate(db)
    assert client.schedule("s").overdue
    edited = client.edit_schedule("s", alert_after_s=2 * HOUR)
    assert not edited.overdue and edited.alert_set_at is not None
    assert edited.overdue_at == edited.alert_set_at + timedelta(hours=2)
    edited = client.edit_schedule("s", on_overdue="echo other")  # the clock goes on
    assert edited.alert_set_at == client.schedule("s").alert_set_at
    removed = client.edit_schedule("s", alert_after_s=None, on_overdue=None)
    assert removed.alert_after_s is None and not removed.overdue
    with db.read() as conn:
        assert not overdue.due(conn)
        assert overdue.overdue_now(conn).schedules == {}


def test_a_schedule_without_a_hook_is_overdue_all_the_same(
        db: DirectDatabase, client: Client) -> None:
    add_schedule(client, on_overdue=None)
    arm_ago(db, "s", 2 * HOUR)
    noticed = evaluate(db)
    assert noticed.began == ["schedule s"] and noticed.hooks == []
    with db.read() as conn:
        assert overdue.overdue_now(conn).schedules == {"s": True}


# --- checks -------------------------------------------------------------------------------------


def test_a_check_becomes_overdue_once_and_a_ping_ends_the_spell(
        db: DirectDatabase, client: Client) -> None:
    add_check_ago(db, "c", 1.0, seconds=60)
    assert client.check("c").overdue  # live, before any scheduler noticed
    noticed = evaluate(db)
    assert noticed.began == ["check c"]
    [hook] = noticed.hooks
    assert evaluate(db).hooks == []
    with db.read() as conn:
        job = reads.get(conn, hook)
        assert overdue.overdue_now(conn).checks == {"c": True}
    assert job is not None and job.queue == "default"
    assert job.env["JOBCTL_HOOK_NAME"] == "c" and job.env["JOBCTL_HOOK_JOB_ID"] == ""
    client.ping_check("c")
    pinged = client.check("c")
    assert not pinged.overdue and pinged.last_ping_at is not None
    assert pinged.overdue_at == pinged.last_ping_at + timedelta(seconds=1)
    time.sleep(1.1)
    assert client.check("c").overdue
    [again] = evaluate(db).hooks
    assert hook_jobs(db, "c") == [hook, again]


def test_a_failure_ping_makes_a_check_overdue_at_once_and_runs_its_hook(
        db: DirectDatabase, client: Client) -> None:
    client.add_check("c", every_s=HOUR, on_overdue="echo failed")
    client.ping_check("c", failed=True)
    failed = client.check("c")
    assert failed.overdue and failed.overdue_since == failed.last_fail_at
    assert len(hook_jobs(db, "c")) == 1
    client.ping_check("c", failed=True)  # the spell goes on: no second hook
    assert evaluate(db).hooks == []
    assert len(hook_jobs(db, "c")) == 1
    client.ping_check("c")
    assert not client.check("c").overdue
    client.ping_check("c", failed=True)  # a new spell
    assert len(hook_jobs(db, "c")) == 2


def test_two_schedulers_racing_over_a_check_insert_one_hook(
        db_url: str, db: DirectDatabase) -> None:
    add_check_ago(db, "c", 1.0, seconds=60)
    first, second = DirectDatabase(parse(db_url)), DirectDatabase(parse(db_url))
    try:
        with first.read() as conn:
            seen_first = overdue.due(conn)
        with second.read() as conn:
            seen_second = overdue.due(conn)
        with first.write() as conn:
            won = overdue.apply(conn, seen_first)
        with second.write() as conn:
            lost = overdue.apply(conn, seen_second)
    finally:
        first.close()
        second.close()
    assert won.began == ["check c"] and len(won.hooks) == 1
    assert lost.began == [] and lost.hooks == []
    assert hook_jobs(db, "c") == won.hooks


def test_a_ping_between_the_read_and_the_write_wins(db: DirectDatabase,
                                                     client: Client) -> None:
    """A scheduler read the check as due; a ping came before it wrote: not overdue, no hook."""
    add_check_ago(db, "c", 1.0, seconds=60)
    with db.read() as conn:
        seen = overdue.due(conn)
    client.ping_check("c")
    with db.write() as conn:
        noticed = overdue.apply(conn, seen)
    assert noticed.hooks == [] and not client.check("c").overdue


def test_checks_are_added_listed_and_removed(client: Client) -> None:
    added = client.add_check("c", every_s=60.0)
    assert added.grace_s == 30.0 and not added.overdue  # the default grace: half the period
    assert [c.name for c in client.checks()] == ["c"]
    from jobctl.errors import InvalidInput, NotFound

    with pytest.raises(InvalidInput):
        client.add_check("c", every_s=60.0)
    assert client.add_check("c", every_s=120.0, grace_s=5.0, replace=True).grace_s == 5.0
    client.remove_check("c")
    with pytest.raises(NotFound):
        client.ping_check("c")
    with pytest.raises(NotFound):
        client.remove_check("c")


# --- cheap when nothing is due -------------------------------------------------------------------


def test_the_pass_reads_through_its_indexes(db: DirectDatabase, client: Client) -> None:
    """What each pass runs is bounded by a partial index (a probe that finds nothing when
    nothing is due), not a scan of every schedule or check."""
    for index in range(20):
        add_schedule(client, name=f"s{index}")
        client.add_check(f"c{index}", every_s=HOUR)
    expected = {"DUE_SCHEDULES": "ix_schedules_alert_check_at",
                "OVERDUE_SCHEDULES": "ix_schedules_overdue_since",
                "DUE": "ix_checks_overdue_at"}
    with db.write() as conn:
        postgres = conn.backend.title == "PostgreSQL"
        if postgres:
            conn.execute("SET LOCAL enable_seqscan = off")  # tiny tables: show it *can*
        now = conn.time_param(schedules.now(conn))
        for name, index in expected.items():
            module = conn.backend.sql_checks if name == "DUE" else conn.backend.sql_overdue
            sql = getattr(module, name)
            params = {"now": now, "limit": 10} if "now" in sql else None
            plan = conn.execute(("EXPLAIN " if postgres else "EXPLAIN QUERY PLAN ") + sql,
                                params).fetchall()
            text = " ".join(str(part) for row in plan for part in row)
            assert index in text, f"{name}: {text}"
    evaluate(db)  # new: looked at once, and not again for an hour
    with db.read() as conn:
        assert not overdue.due(conn)
