"""The promises under a crash, with the default job options (no `--retries`, default
`--max-lost`): a kill -9'd worker's at-least-once job runs again and succeeds; a job that keeps
taking its worker down fails after three losses; one crash during a workflow fails nothing, and
the jobs the dead worker had only claimed into its read-ahead buffer are not charged at all."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chaos_support import CHAOS_WORKER_OPTIONS, kill9, logging_script, read_events, wait_event
from e2e_support import JOBCTL, Jobctl, Worker, describe, wait_for


def default_worker(jobctl: Jobctl, name: str) -> Worker:
    """`jobctl worker start --name NAME` and nothing else: every worker option at its default."""
    log_path = jobctl.tmp_path / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([str(JOBCTL), "worker", "start", "--name", name],
                                   env=jobctl.env, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=log_file, start_new_session=True)
    worker = Worker(process, log_path)
    jobctl.workers.append(worker)
    worker.wait_started()
    return worker


def test_kill9_with_every_default_the_job_runs_again_and_succeeds(
        jobctl_sqlite: Jobctl, tmp_path: Path) -> None:
    """The README's promise on the embedded default, with no option anywhere: default job
    (at-least-once, no retries), default workers (20 s lease), default database."""
    jobctl = jobctl_sqlite
    log = tmp_path / "side-effects.log"
    victim = default_worker(jobctl, "victim")
    job_id = jobctl.submit("--shell", logging_script(log, "sleep 4"))
    wait_event(log, "start", job_id, attempt=1, timeout_s=30)
    default_worker(jobctl, "rescuer")
    kill9(victim)

    status = wait_for(lambda: (s := jobctl.status(job_id))["state"] in (
        "succeeded", "failed") and s, 90, lambda: f"job {job_id}: {jobctl.status(job_id)}")
    assert status["state"] == "succeeded", status
    assert [a["outcome"] for a in status["attempts"]] == ["lost", "succeeded"], status
    assert (status["losses"], status["max_lost"]) == (1, 3)
    assert "lost its lease" in (status["attempts"][0]["error"] or "")
    ends = [e for e in read_events(log) if e.kind == "end"]
    assert [(e.attempt, e.worker) for e in ends] == [(2, "rescuer")]


def test_tuned_lease_kill9_runs_again_on_postgresql(chaos_jobctl: Jobctl, tmp_path: Path) -> None:
    """The same with a short lease on PostgreSQL (default job options)."""
    jobctl = chaos_jobctl
    log = tmp_path / "side-effects.log"
    jobctl.ok("db", "upgrade")
    victim = jobctl.start_worker(*CHAOS_WORKER_OPTIONS, "--name", "victim")
    job_id = jobctl.submit("--shell", logging_script(log, "sleep 4"))
    wait_event(log, "start", job_id, attempt=1, timeout_s=30)
    jobctl.start_worker(*CHAOS_WORKER_OPTIONS, "--name", "rescuer")
    kill9(victim)
    result = jobctl("job", "wait", str(job_id), "--timeout", "60s", timeout=90)
    assert result.returncode == 0, describe(result)
    status = jobctl.status(job_id)
    assert [a["outcome"] for a in status["attempts"]] == ["lost", "succeeded"], status


def test_a_job_that_kills_its_worker_every_time_fails_after_three_losses(
        chaos_jobctl: Jobctl, tmp_path: Path) -> None:
    """`kill -9 $PPID`: the job takes its worker down. The test keeps a worker alive (as a
    supervisor would); the third loss fails the job, saying why: three workers died, no more."""
    jobctl = chaos_jobctl
    jobctl.ok("db", "upgrade")
    job_id = jobctl.submit("--", "sh", "-c", "kill -9 $PPID; sleep 30")
    deadline = time.monotonic() + 90
    started = 0
    while jobctl.status(job_id)["state"] not in ("failed", "succeeded"):
        assert time.monotonic() < deadline, jobctl.status(job_id)
        if all(worker.process.poll() is not None for worker in jobctl.workers):
            # Not start_worker's own wait, which wants the worker alive once it has started:
            # this one may claim the job and die before the first look.
            worker = jobctl.start_worker(*CHAOS_WORKER_OPTIONS, "--name", f"w{started}",
                                         wait_started=False)
            wait_for(lambda: " started: " in worker.log(), 30,  # noqa: B023 - waited for here
                     lambda: f"worker did not start:\n{worker.log()}")  # noqa: B023
            started += 1
        time.sleep(0.2)
    status = jobctl.status(job_id)
    assert status["state"] == "failed", status
    assert status["losses"] == 3
    assert [a["outcome"] for a in status["attempts"]] == ["lost"] * 3
    assert "3 workers lost under it" in status["error"], status["error"]
    died = [worker for worker in jobctl.workers if worker.process.poll() == -9]
    assert len(died) == 3, f"{len(died)} workers died for three losses"


# --- a crash in the middle of a workflow --------------------------------------------------------


@contextlib.contextmanager
def database(url: str) -> Iterator[Any]:
    """A plain DB-API connection to the test's database (autocommit), to look at `in_buffer`."""
    if url.startswith("sqlite"):
        connection: Any = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30,
                                          isolation_level=None)
    else:
        import psycopg

        connection = psycopg.connect(url, autocommit=True)
    try:
        yield connection
    finally:
        connection.close()


def claimed_jobs(url: str, worker_name: str) -> dict[int, bool]:
    """The worker's running jobs: id -> whether it waits in its read-ahead buffer (True) or
    was claimed or reported as started (False)."""
    query = ("SELECT j.id, j.in_buffer FROM jobs j JOIN workers w ON w.id = j.worker_id"
             " WHERE j.state = 'running' AND w.name = '" + worker_name + "'")
    with database(url) as connection:
        return {row[0]: bool(row[1]) for row in connection.execute(query).fetchall()}


def buffered_jobs(url: str, worker_name: str) -> set[int]:
    return {job for job, in_buffer in claimed_jobs(url, worker_name).items() if in_buffer}


def test_kill9_of_one_of_three_workers_during_a_workflow_fails_nothing(
        jobctl: Jobctl, tmp_path: Path) -> None:
    """30 tasks with the default task options on three workers (`--concurrency 2`); one worker is
    killed while it holds jobs in its read-ahead buffer. The workflow succeeds, every task
    succeeded once, and the tasks that never started there carry no loss and no extra attempt."""
    log = tmp_path / "side-effects.log"
    jobctl.ok("db", "upgrade")
    options = (*CHAOS_WORKER_OPTIONS, "--concurrency", "2")
    victim = jobctl.start_worker(*options, "--name", "victim")
    # Warm the victim up on short jobs, as a busy worker is: it reads ahead only while they are.
    warm = [jobctl.submit("--", "true") for _ in range(30)]
    result = jobctl("job", "wait", *map(str, warm), "--timeout", "60s", timeout=90)
    assert result.returncode == 0, describe(result)
    for index in (1, 2):
        jobctl.start_worker(*options, "--name", f"other{index}")

    lines = ['[workflow]\nname = "crash"\n']
    first = [f"a{n}" for n in range(20)]
    for name in first:
        script = logging_script(log, "sleep 0.5").replace('"', '\\"')
        lines.append(f'[tasks.{name}]\ncommand = "{script}"\n')
    for n in range(10):
        script = logging_script(log, "sleep 0.1").replace('"', '\\"')
        needs = json.dumps(first[2 * n:2 * n + 2])
        lines.append(f'[tasks.b{n}]\ncommand = "{script}"\nneeds = {needs}\n')
    path = tmp_path / "crash.toml"
    path.write_text("\n".join(lines))
    workflow_id = jobctl.ok("workflow", "run", str(path)).strip()

    wait_for(lambda: buffered_jobs(jobctl.database_url, "victim"), 30,
             "the victim never held a job in its read-ahead buffer")
    # Frozen, the victim's claims are what the database says at the kill: a job claimed to
    # start at once counts as started from its claim (the worker may have spawned it already;
    # an at-most-once job must not run twice), a buffered one from the turn after it started.
    os.kill(victim.pid, signal.SIGSTOP)
    at_kill = claimed_jobs(jobctl.database_url, "victim")
    kill9(victim)
    buffered = {job for job, in_buffer in at_kill.items() if in_buffer}

    result = jobctl("workflow", "wait", workflow_id, "--timeout", "90s", timeout=120)
    assert result.returncode == 0, describe(result)
    tasks = json.loads(jobctl.look("workflow", "status", workflow_id, "-o", "json"))["tasks"]
    assert len(tasks) == 30 and {t["state"] for t in tasks} == {"succeeded"}
    events = read_events(log)
    started_on_victim = {e.job for e in events if e.kind == "start" and e.worker == "victim"}
    # A job whose process the watchdog killed had started, even if it died before its first
    # line reached the side-effect log: charging it a loss is right.
    started_on_victim |= {int(n) for n in re.findall(r"watchdog: killed job (\d+)", victim.log())}
    ends = sorted(e.job for e in events if e.kind == "end")
    assert sorted(set(ends)) == sorted(t["job_id"] for t in tasks), "a task never ended"
    # A task may end twice only when its first run ended on the victim, whose kill came before
    # it wrote the result: at-least-once runs it again (its second attempt, after a loss).
    ended_on_victim = {e.job for e in events if e.kind == "end" and e.worker == "victim"}
    twice = {job for job in ends if ends.count(job) > 1}
    assert twice <= ended_on_victim and all(ends.count(job) == 2 for job in twice), \
        f"task(s) ended twice without their worker dying: {sorted(twice - ended_on_victim)}"
    # Claimed to start at once, it may have been killed before its first line: it started
    # as far as the database knows, and a loss is its due.
    started_on_victim |= {job for job, in_buffer in at_kill.items() if not in_buffer}
    never_started_there = {t["job_id"] for t in tasks} - started_on_victim
    assert buffered & never_started_there, (buffered, started_on_victim)
    for task in tasks:
        status = jobctl.status(task["job_id"])
        outcomes = [a["outcome"] for a in status["attempts"]]
        if task["job_id"] in never_started_there:
            assert outcomes == ["succeeded"], (task["task"], status)
            assert (status["attempt"], status["losses"]) == (1, 0), (task["task"], status)
        else:
            assert outcomes in (["succeeded"], ["lost", "succeeded"]), (task["task"], status)
