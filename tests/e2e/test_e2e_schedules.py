"""Schedulers as real processes: racing (with a kill -9 and a restart), misfire after downtime,
and overlap policies with long-running jobs run by a real worker.

Jobs are counted per (schedule, fire_time) straight from the database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from e2e_support import Jobctl, wait_for

from jobctl.client import Client
from jobctl.models import Job, JobSpec, Misfire, Overlap, ScheduleDefinition
from jobctl.store import reads, schedules
from jobctl.store.direct import DirectDatabase, open_or_create


class Scheduler:
    """A background `jobctl scheduler run`, logging to a file."""

    def __init__(self, jobctl: Jobctl, number: int, *args: str) -> None:
        self.log_path = jobctl.tmp_path / f"scheduler-{number}.log"
        with self.log_path.open("ab") as log:
            self.process = jobctl.popen("scheduler", "run", *args, stdout=log,
                                        stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self) -> None:
        wait_for(lambda: " started " in self.log() or self.process.poll() is not None, 60,
                 lambda: f"the scheduler did not start:\n{self.log()}")
        assert self.process.poll() is None, self.log()

    def kill9(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> int:
        """SIGTERM; returns its exit status (it must exit, and promptly)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the scheduler ignored SIGTERM:\n{self.log()}")


@pytest.fixture
def database(jobctl: Jobctl) -> Iterator[DirectDatabase]:
    db = open_or_create(jobctl.database_url)
    yield db
    db.close()


def next_whole_second(after_s: float) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=after_s)).replace(microsecond=0)


def sleep_until(moment: datetime) -> None:
    remaining = (moment - datetime.now(UTC)).total_seconds()
    if remaining > 0:
        time.sleep(remaining)


def all_jobs(db: DirectDatabase) -> list[Job]:
    """Every job, in the order the schedules made them (by fire time)."""
    with db.read() as conn:
        found = reads.list_jobs(conn, limit=None)
    return sorted(found, key=lambda job: (job.fire_time or job.created_at, job.id))


def occurrences(db: DirectDatabase) -> Counter[tuple[str, datetime]]:
    """How many jobs each (schedule name, fire time) has."""
    with db.read() as conn:
        names = {schedule.id: schedule.name for schedule in schedules.list_all(conn)}
        found = reads.list_jobs(conn, limit=None)
    return Counter((names[job.schedule_id], job.fire_time) for job in found
                   if job.schedule_id is not None and job.fire_time is not None)


# --- racing schedulers --------------------------------------------------------------------------


def _race(jobctl: Jobctl, db: DirectDatabase, scheduler_count: int, schedule_count: int,
          seconds: int) -> None:
    """`scheduler_count` schedulers over `schedule_count` every-second schedules for `seconds`
    fire times each; one scheduler is killed with SIGKILL midway and restarted. Every schedule
    must have exactly one job for every second of the window."""
    # In the future by more than the time it takes to create them and start the schedulers.
    start = next_whole_second(8)
    end = start + timedelta(seconds=seconds - 1)
    client = Client(jobctl.database_url)
    client.add_schedules([
        ScheduleDefinition(name=f"race-{n:02d}", job=JobSpec(argv=["true"]), every_s=1.0,
                           start_at=start, end_at=end, misfire=Misfire.ALL,
                           overlap=Overlap.ALLOW)
        for n in range(schedule_count)])
    running = [Scheduler(jobctl, n) for n in range(scheduler_count)]
    for scheduler in running:
        scheduler.wait_started()
    sleep_until(start + timedelta(seconds=seconds // 3))
    running[0].kill9()
    time.sleep(2.5)  # a few fire times while one scheduler is dead
    restarted = Scheduler(jobctl, scheduler_count)
    running[0] = restarted
    sleep_until(end + timedelta(seconds=3))
    wait_for(lambda: sum(occurrences(db).values()) >= schedule_count * seconds, 30,
             lambda: f"only {sum(occurrences(db).values())} jobs")
    for scheduler in running:
        assert scheduler.terminate() == 0, scheduler.log()

    counts = occurrences(db)
    expected_times = [start + timedelta(seconds=k) for k in range(seconds)]
    duplicates = {key: n for key, n in counts.items() if n != 1}
    assert duplicates == {}
    for n in range(schedule_count):
        name = f"race-{n:02d}"
        fired = sorted(fire_time for (schedule, fire_time) in counts if schedule == name)
        assert fired == expected_times, f"{name}: gaps or extras"
    assert sum(counts.values()) == schedule_count * seconds
    assert "Traceback" not in "".join(s.log() for s in running)


def test_three_schedulers_race_with_a_kill9_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    with Jobctl(pg_url, tmp_path) as jobctl:
        db = open_or_create(pg_url)
        try:
            _race(jobctl, db, scheduler_count=3, schedule_count=50, seconds=12)
        finally:
            db.close()


@pytest.mark.pgbouncer
def test_three_schedulers_race_with_a_kill9_through_pgbouncer(pgbouncer_url: str,
                                                              tmp_path: Path) -> None:
    """The race through PgBouncer in transaction pooling mode (tests/pgbouncer.py): schedulers
    that poll, as LISTEN does not work there, and fire each time exactly once."""
    with Jobctl(pgbouncer_url, tmp_path) as jobctl:
        db = open_or_create(pgbouncer_url)
        try:
            _race(jobctl, db, scheduler_count=3, schedule_count=20, seconds=10)
        finally:
            db.close()


def test_two_schedulers_race_with_a_kill9_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    with Jobctl(sqlite_url, tmp_path) as jobctl:
        db = open_or_create(sqlite_url)
        try:
            _race(jobctl, db, scheduler_count=2, schedule_count=50, seconds=12)
        finally:
            db.close()


# --- misfire --------------------------------------------------------------------------------------


def test_misfire_after_a_scheduler_was_stopped_across_five_fire_times(
        jobctl_pg: Jobctl, tmp_path: Path) -> None:
    jobctl = jobctl_pg
    scheduler = Scheduler(jobctl, 0)
    scheduler.wait_started()
    start = next_whole_second(6)
    end = start + timedelta(seconds=8)  # five fire times: start, +2, +4, +6, +8
    db = open_or_create(jobctl.database_url)
    Client(jobctl.database_url).add_schedules([
        ScheduleDefinition(name=f"m-{policy}", job=JobSpec(argv=["true"]), every_s=2.0,
                           start_at=start, end_at=end, misfire=policy, overlap=Overlap.ALLOW)
        for policy in Misfire])
    assert datetime.now(UTC) < start, "too slow to set up before the first fire time"
    assert scheduler.terminate() == 0, scheduler.log()
    # Restart once every fire time is more than the misfire grace (1 s) in the past.
    sleep_until(end + timedelta(seconds=2))
    result = jobctl("scheduler", "run", "--once")
    assert result.returncode == 0, result.stderr
    try:
        counts = Counter(name for name, _ in occurrences(db))
        [once_time] = [job.fire_time for job in all_jobs(db) if job.name == "m-once"]
    finally:
        db.close()
    assert (counts["m-skip"], counts["m-once"], counts["m-all"]) == (0, 1, 5)
    assert once_time == end  # the latest missed time
    shown = jobctl.ok("schedule", "show", "m-all", "-o", "json")
    assert '"next_fire_at": null' in shown  # past its end: no further fire time


# --- overlap --------------------------------------------------------------------------------------


def test_overlap_policies_with_long_running_jobs(jobctl_pg: Jobctl) -> None:
    jobctl = jobctl_pg
    jobctl.start_worker("--concurrency", "8")
    scheduler = Scheduler(jobctl, 0)
    scheduler.wait_started()
    start = next_whole_second(3)
    end = start + timedelta(seconds=4)  # three fire times, two seconds apart
    db = open_or_create(jobctl.database_url)
    Client(jobctl.database_url).add_schedules([
        ScheduleDefinition(name=f"o-{policy}", job=JobSpec(argv=["sleep", "60"]), every_s=2.0,
                           start_at=start, end_at=end, misfire=Misfire.ALL, overlap=policy)
        for policy in Overlap])

    def states() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for job in all_jobs(db):
            found.setdefault(str(job.name), []).append(job.state.value)
        return found

    expected = {
        "o-forbid": ["running", "skipped", "skipped"],
        "o-replace": ["cancelled", "cancelled", "running"],
        "o-allow": ["running", "running", "running"],
    }
    try:
        wait_for(lambda: states() == expected, 45, lambda: f"states: {states()}\n"
                 f"{scheduler.log()}")
        forbid = [job for job in all_jobs(db) if job.name == "o-forbid"]
        errors = [job.error for job in forbid if job.state.value == "skipped"]
        [running_id] = [job.id for job in forbid if job.state.value == "running"]
    finally:
        db.close()
    assert errors == [f"skipped: job {running_id} (running) is still going"] * 2
    with contextlib.suppress(Exception):
        scheduler.terminate()


# --- wake-ups -------------------------------------------------------------------------------------


def test_a_sleeping_scheduler_wakes_for_a_new_schedule_on_postgresql(jobctl_pg: Jobctl) -> None:
    """With nothing to do and a 10-minute poll, only the NOTIFY sent by `schedule add` can wake
    it in time; then it sleeps until the fire time, not on a tick."""
    jobctl = jobctl_pg
    scheduler = Scheduler(jobctl, 0, "--poll-interval", "10m", "--rescue-interval", "10m")
    scheduler.wait_started()
    time.sleep(1.0)  # it has looked, found nothing, and gone to sleep
    start = next_whole_second(3)
    db = open_or_create(jobctl.database_url)
    try:
        Client(jobctl.database_url).add_schedules([ScheduleDefinition(
            name="woken", job=JobSpec(argv=["true"]), every_s=1.0, start_at=start,
            end_at=start + timedelta(seconds=1), misfire=Misfire.SKIP, overlap=Overlap.ALLOW)])
        wait_for(lambda: len(occurrences(db)) == 2, 30,
                 lambda: f"fired {occurrences(db)}\n{scheduler.log()}")
        late = [job.created_at - job.fire_time for job in all_jobs(db)
                if job.fire_time is not None]
        # misfire skip: both were fired within the grace (1 s), i.e. not by a late poll
        assert len(late) == 2 and all(delay <= timedelta(seconds=1) for delay in late)
    finally:
        db.close()
    assert scheduler.terminate() == 0


# --- rescue ---------------------------------------------------------------------------------------


def test_the_scheduler_rescues_expired_leases(jobctl: Jobctl,
                                              database: DirectDatabase) -> None:
    """A job whose worker vanished goes back to the queue when only a scheduler runs."""
    from jobctl.store import jobs as job_store
    from jobctl.store import queue, workers

    with database.write() as conn:
        worker = workers.register(conn, name="gone", hostname="h", pid=1,
                                  queues=["default"], concurrency=1, version="test")
        job_id, _ = job_store.submit(conn, JobSpec(argv=["true"], retries=1))
    with database.turn() as conn:  # the worker's claim, as its hot path makes it
        [claimed] = queue.claim(conn, worker, queue.Claim(["default"], 1, 0.2))
    assert claimed.id == job_id
    time.sleep(0.5)  # the lease runs out; nobody renews it
    result = jobctl("scheduler", "run", "--once")
    assert result.returncode == 0, result.stderr
    assert jobctl.status(job_id)["state"] == "queued"
    assert "lost its lease" in (jobctl.status(job_id)["error"] or "")
