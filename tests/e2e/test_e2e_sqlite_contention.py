"""SQLite waits its turn: commands and workers that meet a lock held by another process wait for it
instead of exiting 4 ("cannot reach SQLite file …: database is locked"), also while they create
the schema of a new file together; a file that cannot be opened at all still exits 4 at once.

The load test is the issue's scene made harder: a new SQLite file, four workers and eight bulk
submits started at once while two CPU burners keep the machine busy.
"""

from __future__ import annotations

import collections
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_support import Jobctl, describe, wait_for

WORKERS = 4
SUBMITS = 8
LINES = 200  # jobs per submit
BURNERS = 2


def _database_file(jobctl: Jobctl) -> Path:
    return Path(jobctl.database_url.removeprefix("sqlite:///"))


def _finish(process: subprocess.Popen[bytes], timeout: float = 120.0
            ) -> subprocess.CompletedProcess[str]:
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode,
                                       out.decode(errors="replace"), err.decode(errors="replace"))


@pytest.mark.empty_database  # a new file
@pytest.mark.slow
def test_a_new_file_four_workers_eight_bulk_submits_and_cpu_burners(
        jobctl_sqlite: Jobctl, tmp_path: Path) -> None:
    """Everything exits 0 and every job runs exactly once, its output its own line."""
    database = _database_file(jobctl_sqlite)
    assert not database.exists()
    files = []
    for submit in range(SUBMITS):
        path = tmp_path / f"commands-{submit}.txt"
        path.write_text("".join(f"echo {submit * LINES + line}\n" for line in range(LINES)))
        files.append(path)

    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(BURNERS)]
    try:
        started = time.monotonic()
        for _ in range(WORKERS):
            # The default lease, not the tests' 5 s one: this test is about locks, not stalls.
            jobctl_sqlite.start_worker("--concurrency", "2", "--lease", "20s",
                                       wait_started=False)
        submits = [jobctl_sqlite.popen("job", "submit", "--from-file", str(path))
                   for path in files]
        results = [_finish(process) for process in submits]
        for result in results:
            assert result.returncode == 0, describe(result)
        ids = [int(line) for result in results for line in result.stdout.split()]
        assert len(ids) == len(set(ids)) == SUBMITS * LINES

        def all_ended() -> bool:
            with sqlite3.connect(database, timeout=60) as reader:
                (left,) = reader.execute(
                    "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')").fetchone()
            exited = [w for w in jobctl_sqlite.workers if w.process.poll() is not None]
            assert not exited, f"a worker exited ({exited[0].process.returncode}):\n" \
                               f"{exited[0].log()[-3000:]}"
            return left == 0

        wait_for(all_ended, 240, "the jobs did not all end within 240 s", interval_s=0.5)
        elapsed = time.monotonic() - started
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()

    for worker in jobctl_sqlite.workers:
        code, _ = worker.exit_after(signal.SIGTERM, timeout_s=30)
        assert code == 0, worker.log()[-3000:]
        trouble = [line for line in worker.log().splitlines()
                   if "unavailable" in line or "locked" in line]
        assert not trouble, f"worker {worker.pid} met the lock as an error: {trouble[:5]}"

    with sqlite3.connect(database) as reader:
        jobs = reader.execute("SELECT id, state, attempt, argv FROM jobs").fetchall()
        attempts = collections.Counter(job_id for (job_id,) in reader.execute(
            "SELECT job_id FROM attempts WHERE outcome = 'succeeded'"))
        all_attempts = collections.Counter(job_id for (job_id,) in reader.execute(
            "SELECT job_id FROM attempts"))
        output: dict[int, bytes] = collections.defaultdict(bytes)
        for job_id, data in reader.execute(
                "SELECT job_id, data FROM job_logs WHERE stream = 'stdout' "
                "ORDER BY job_id, attempt, seq"):
            output[job_id] += data
    assert sorted(job_id for job_id, *_ in jobs) == sorted(ids)
    states = collections.Counter(state for _, state, _, _ in jobs)
    assert states == {"succeeded": SUBMITS * LINES}, states
    assert all(attempt == 1 for _, _, attempt, _ in jobs), "a job was attempted more than once"
    assert set(attempts.values()) == {1} and len(attempts) == SUBMITS * LINES
    assert set(all_attempts.values()) == {1}, "a job was started more than once"
    # Each job is `/bin/sh -c "echo N"`: its output is N and a newline.
    wrong = [(job_id, argv, output[job_id]) for job_id, _, _, argv in jobs
             if output[job_id] != json.loads(argv)[2].removeprefix("echo ").encode() + b"\n"]
    assert not wrong, f"{len(wrong)} job(s) with the wrong output, e.g. {wrong[:3]}"
    print(f"{SUBMITS * LINES} jobs, {WORKERS} workers, {BURNERS} burners: {elapsed:.1f}s")


def test_commands_wait_for_a_lock_another_process_holds(jobctl_sqlite: Jobctl) -> None:
    """An `sqlite3` connection holds BEGIN EXCLUSIVE for a few seconds: a submit waits for it,
    then succeeds; a listing (which WAL lets read meanwhile) succeeds too."""
    jobctl_sqlite.ok("job", "list")  # creates the database
    database = _database_file(jobctl_sqlite)
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        submit = jobctl_sqlite.popen("job", "submit", "--", "echo", "waited")
        listing = jobctl_sqlite.popen("job", "list", "-o", "ids")
        time.sleep(2.5)
        assert submit.poll() is None, describe(_finish(submit))
    finally:
        released = time.monotonic()
        holder.execute("COMMIT")
        holder.close()
    submitted = _finish(submit)
    assert submitted.returncode == 0, describe(submitted)
    assert time.monotonic() >= released
    listed = _finish(listing)
    assert listed.returncode == 0, describe(listed)
    assert jobctl_sqlite.ok("job", "list", "-o", "ids").split() == [submitted.stdout.strip()]


@pytest.mark.empty_database  # a new file
def test_a_new_file_another_process_holds_locked_is_waited_for(jobctl_sqlite: Jobctl) -> None:
    """A new, empty file that another process holds an exclusive lock on: listing and two
    submits all wait, then create the schema once between them and succeed."""
    database = _database_file(jobctl_sqlite)
    holder = sqlite3.connect(database, isolation_level=None)  # rollback-journal mode, empty
    holder.execute("BEGIN EXCLUSIVE")
    try:
        processes = [jobctl_sqlite.popen("job", "list"),
                     jobctl_sqlite.popen("job", "submit", "--", "echo", "one"),
                     jobctl_sqlite.popen("job", "submit", "--", "echo", "two")]
        time.sleep(2.5)
        for process in processes:
            assert process.poll() is None, describe(_finish(process))
    finally:
        holder.execute("COMMIT")
        holder.close()
    for process in processes:
        result = _finish(process)
        assert result.returncode == 0, describe(result)
    assert len(jobctl_sqlite.ok("job", "list", "-o", "ids").split()) == 2


def test_a_worker_waits_out_a_lock_held_while_its_job_runs(jobctl_sqlite: Jobctl,
                                                          tmp_path: Path) -> None:
    """The lock is taken while the job runs and released after it ended: the worker's result,
    output and next claim wait for it; the job ran once and succeeded, and the worker never
    met the lock as an error."""
    worker = jobctl_sqlite.start_worker("--lease", "20s")
    started, go = tmp_path / "started", tmp_path / "go"
    job_id = jobctl_sqlite.submit("--shell", f"touch {started}; while [ ! -e {go} ]; do "
                                  "sleep 0.05; done; echo done")
    wait_for(started.exists, 30, "the job did not start")
    holder = sqlite3.connect(_database_file(jobctl_sqlite), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        go.touch()
        time.sleep(3)
    finally:
        holder.execute("COMMIT")
        holder.close()
    jobctl_sqlite.ok("job", "wait", "--timeout", "60s", str(job_id))
    status = jobctl_sqlite.status(job_id)
    assert (status["state"], status["attempt"]) == ("succeeded", 1), status
    assert jobctl_sqlite.ok("job", "logs", str(job_id)) == "done\n"
    assert worker.process.poll() is None, worker.log()
    trouble = [line for line in worker.log().splitlines()
               if "unavailable" in line or "locked" in line]
    assert not trouble, trouble


@pytest.mark.empty_database  # a new file
@pytest.mark.parametrize("argv", [("job", "list"), ("job", "submit", "--", "true"),
                                  ("worker", "start", "--burst")],
                         ids=["list", "submit", "worker"])
@pytest.mark.parametrize("kind", ["directory", "not-a-database"])
def test_a_file_that_cannot_be_opened_still_exits_4_at_once(
        jobctl_sqlite: Jobctl, kind: str, argv: tuple[str, ...]) -> None:
    database = _database_file(jobctl_sqlite)
    if kind == "directory":
        database.mkdir()
    else:
        database.write_bytes(b"not an SQLite database, " * 200)
    started = time.monotonic()
    result = jobctl_sqlite(*argv)
    took = time.monotonic() - started
    assert result.returncode == 4, describe(result)
    assert str(database) in result.stderr and "locked" not in result.stderr, result.stderr
    assert took < 10, f"took {took:.1f}s"
