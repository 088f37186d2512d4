"""Hooks (`--on-success/--on-failure/--on-end`) on both backends: the database starts them, as
jobs of their own, in the transaction that makes their job final, whichever statement does
(a worker's turn, the rescuer, a cancel, settling dependents, a skipped occurrence's insert);
once per final state; never for a hook's own end. One contract for the two triggers
(jobctl.store.postgres.hooks, jobctl.store.sqlite.hooks)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from jobctl.models import (
    Delivery,
    JobSpec,
    JobState,
    ScheduleDefinition,
    status_document,
)
from jobctl.store import jobs, queue, reads, schedules, submit, workflows
from jobctl.store import workers as worker_rows
from jobctl.store.direct import DirectDatabase, open_or_create
from jobctl.store.queue import Outcome
from jobctl.workflow import load

HOOKS = {"on_success": "echo ok", "on_failure": "echo bad", "on_end": "echo end"}


@pytest.fixture
def direct(db_url: str) -> Iterator[DirectDatabase]:
    database = open_or_create(db_url)
    yield database
    database.close()


def register(db: DirectDatabase) -> int:
    with db.write() as conn:
        return worker_rows.register(conn, name="w", hostname="host", pid=1, queues=["default"],
                                    concurrency=8, version="test")


def submit_job(db: DirectDatabase, **fields: object) -> int:
    with db.write() as conn:
        job_id, _ = jobs.submit(conn, JobSpec(argv=["true"], **{**HOOKS, **fields}))  # type: ignore[arg-type]
    return job_id


def hooks_of(db: DirectDatabase, job_id: int) -> list[tuple[str, dict[str, str]]]:
    """The hook jobs `job_id` started: (the hook's command, its environment), by id."""
    with db.read() as conn:
        found = [job for job in reads.list_jobs(conn, limit=None) if job.hook_of == job_id]
    return [(job.argv[-1], job.env) for job in sorted(found, key=lambda job: job.id)]


def run_turn(db: DirectDatabase, worker: int, ended: list[tuple[int, JobState, int | None]],
             lease_s: float = 60.0) -> list[int]:
    """One worker turn: complete `ended` (id, state, exit code), claim what is due."""
    with db.read() as conn:
        attempts = {job_id: job.attempt for job_id, job in
                    reads.get_many(conn, [job_id for job_id, _, _ in ended]).items()}
    outcomes = [Outcome(job_id, attempts[job_id], state, state.value, code, None,
                        None if state is JobState.SUCCEEDED else f"exit code {code}",
                        has_dependents=False)
                for job_id, state, code in ended]
    with db.turn() as conn:
        _, claimed = queue.complete_and_claim(conn, worker, outcomes,
                                              queue.Claim(["default"], 8, lease_s))
    return [job.id for job in claimed]


def test_each_final_state_starts_its_hooks_once(direct: DirectDatabase) -> None:
    w = register(direct)
    good, bad = submit_job(direct, name="good"), submit_job(direct, name="bad")
    cancelled = submit_job(direct, name="never")
    with direct.write() as conn:
        jobs.cancel(conn, cancelled)
    first = run_turn(direct, w, [])  # the two, and the cancelled job's on_end hook
    assert len(first) == 3 and {good, bad} < set(first)
    claimed = run_turn(direct, w, [(good, JobState.SUCCEEDED, 0), (bad, JobState.FAILED, 3)])
    assert hooks_of(direct, good) == [
        ("echo ok", {"JOBCTL_HOOK_JOB_ID": str(good), "JOBCTL_HOOK_STATE": "succeeded",
                     "JOBCTL_HOOK_EXIT_CODE": "0", "JOBCTL_HOOK_NAME": "good"}),
        ("echo end", {"JOBCTL_HOOK_JOB_ID": str(good), "JOBCTL_HOOK_STATE": "succeeded",
                      "JOBCTL_HOOK_EXIT_CODE": "0", "JOBCTL_HOOK_NAME": "good"})]
    assert [command for command, _ in hooks_of(direct, bad)] == ["echo bad", "echo end"]
    assert hooks_of(direct, bad)[0][1]["JOBCTL_HOOK_EXIT_CODE"] == "3"
    # a cancelled job did not fail: only its on_end
    assert hooks_of(direct, cancelled) == [
        ("echo end", {"JOBCTL_HOOK_JOB_ID": str(cancelled), "JOBCTL_HOOK_STATE": "cancelled",
                      "JOBCTL_HOOK_EXIT_CODE": "", "JOBCTL_HOOK_NAME": "never"})]
    # the hooks are claimed like any job (on PostgreSQL by the next turn: the statement that
    # created them could not see them), their queue and priority their job's
    hooks = claimed + run_turn(direct, w, []) + [job for job in first if job not in (good, bad)]
    assert len(hooks) == 5
    with direct.read() as conn:
        hook_jobs = reads.get_many(conn, hooks)
    assert {(job.queue, job.max_attempts, job.state) for job in hook_jobs.values()} == {
        ("default", 3, JobState.RUNNING)}
    # a hook's own end, failed or not, starts nothing
    run_turn(direct, w, [(hook, JobState.FAILED, 1) for hook in hooks])
    with direct.read() as conn:
        assert not [job for job in reads.list_jobs(conn, limit=None)
                    if job.hook_of in hooks]


def test_a_retried_job_starts_its_hooks_again_at_its_next_end(direct: DirectDatabase) -> None:
    w = register(direct)
    job = submit_job(direct)
    run_turn(direct, w, [])
    run_turn(direct, w, [(job, JobState.FAILED, 1)])
    with direct.write() as conn:
        assert jobs.retry(conn, job) is JobState.FAILED
    assert len(hooks_of(direct, job)) == 2  # a retry is no end
    claimed = run_turn(direct, w, [])
    assert job in claimed
    with direct.turn() as conn:
        queue.complete_and_claim(conn, w, [Outcome(job, 2, JobState.SUCCEEDED, "succeeded", 0,
                                                   None, None, has_dependents=False)],
                                 queue.Claim(["default"], 0, 60.0))
    assert [command for command, _ in hooks_of(direct, job)] == [
        "echo bad", "echo end", "echo ok", "echo end"]


def test_a_job_lost_with_its_worker_starts_on_failure(direct: DirectDatabase) -> None:
    w = register(direct)
    job = submit_job(direct, delivery=Delivery.AT_MOST_ONCE)
    assert run_turn(direct, w, [], lease_s=0.05) == [job]
    with direct.write() as conn:  # the worker started it (its output landed)
        queue.write_output(conn, [queue.OutputChunk(job, 1, "stdout", 0, b"x")])
    time.sleep(0.2)
    with direct.write() as conn:
        queue.rescue(conn)
    assert [(command, env["JOBCTL_HOOK_STATE"]) for command, env in hooks_of(direct, job)] == [
        ("echo bad", "lost"), ("echo end", "lost")]


def test_jobs_inserted_final_start_their_hooks(direct: DirectDatabase) -> None:
    w = register(direct)
    # a dependency that failed already: its dependent is inserted failed
    cause = submit_job(direct)
    run_turn(direct, w, [])
    run_turn(direct, w, [(cause, JobState.FAILED, 1)])
    dependent = submit_job(direct, after=(cause,), name="dep")
    assert [env["JOBCTL_HOOK_STATE"] for _, env in hooks_of(direct, dependent)] == [
        "failed", "failed"]
    # a schedule's occurrence inserted skipped: on_end
    fire = datetime(2030, 1, 1, tzinfo=UTC)
    with direct.write() as conn:
        schedule_id = schedules.create(conn, ScheduleDefinition(
            name="s", job=JobSpec(argv=["true"]), every_s=3600.0, paused=True))
        now = reads.database_now(conn)
        row = submit.job_row(JobSpec(argv=["true"], **HOOKS), now, JobState.SKIPPED, "skipped",
                             schedule_id=schedule_id, fire_time=fire)
        [occurrence] = submit.insert_occurrences(conn, [row])
    assert occurrence is not None
    assert hooks_of(direct, occurrence) == [
        ("echo end", {"JOBCTL_HOOK_JOB_ID": str(occurrence), "JOBCTL_HOOK_STATE": "skipped",
                      "JOBCTL_HOOK_EXIT_CODE": "", "JOBCTL_HOOK_NAME": ""})]


def test_a_workflow_on_failure_starts_once_and_again_after_a_retry(
        direct: DirectDatabase) -> None:
    definition = load("""
[workflow]
name = "wf"
on_failure = "echo {who} failed"
[tasks.a]
command = "exit 1"
[tasks.b]
command = "exit 2"
[tasks.c]
command = "true"
needs = ["a"]
""", "wf.toml")
    w = register(direct)
    with direct.write() as conn:
        workflow_id = workflows.start(conn, definition, {"who": "someone"})
    assert workflow_id is not None
    a, b = run_turn(direct, w, [])
    run_turn(direct, w, [(a, JobState.FAILED, 1), (b, JobState.FAILED, 2)])

    def workflow_hooks() -> list[tuple[str, dict[str, str]]]:
        with direct.read() as conn:
            found = [job for job in reads.list_jobs(conn, limit=None)
                     if job.name == "on_failure of workflow wf"]
        return [(job.argv[-1], job.env) for job in found]

    [(command, env)] = workflow_hooks()
    assert command == "echo someone failed"
    assert env["JOBCTL_HOOK_NAME"] == "wf" and env["JOBCTL_HOOK_WORKFLOW_ID"] == str(workflow_id)
    assert env["JOBCTL_HOOK_JOB_ID"] in (str(a), str(b))
    with direct.write() as conn:
        workflows.retry(conn, workflow_id)
    again = [job for job in run_turn(direct, w, []) if job in (a, b)]
    run_turn(direct, w, [(job, JobState.FAILED, 1) for job in again])
    assert len(workflow_hooks()) == 2


def test_a_hook_is_given_its_jobs_status_document_and_output(direct: DirectDatabase) -> None:
    w = register(direct)
    job = submit_job(direct, name="noisy")
    run_turn(direct, w, [])
    with direct.write() as conn:
        queue.write_output(conn, [queue.OutputChunk(job, 1, "stdout", 0, b"out\n"),
                                  queue.OutputChunk(job, 1, "stderr", 1, b"err\n")])
    run_turn(direct, w, [(job, JobState.FAILED, 7)])
    with direct.read() as conn:
        document, output = reads.hook_input(conn, job)
        found = reads.get(conn, job)
        assert found is not None
        expected = status_document(found, reads.list_attempts(conn, job),
                                   reads.waits_for(conn, job), reads.needed_by(conn, job))
        assert reads.hook_input(conn, 10**9) == (b"", b"")
    assert json.loads(document) == json.loads(json.dumps(expected))
    assert json.loads(document)["exit_code"] == 7 and output == b"out\nerr\n"


def test_jobs_without_hooks_start_none(direct: DirectDatabase) -> None:
    w = register(direct)
    with direct.write() as conn:
        plain = submit.insert_many(conn, [JobSpec(argv=["true"])] * 3,
                                   states=[JobState.QUEUED] * 3)
    run_turn(direct, w, [])
    run_turn(direct, w, [(job, JobState.FAILED, 1) for job in plain])
    with direct.read() as conn:
        assert [job.id for job in reads.list_jobs(conn, limit=None)] == sorted(plain,
                                                                                reverse=True)
