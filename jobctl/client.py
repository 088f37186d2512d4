"""The Python API behind the command line. Scripts can use it too:

    from jobctl.client import Client
    from jobctl.models import JobSpec

    client = Client("postgresql://jobctl@db/jobctl")
    job_id = client.submit(JobSpec(argv=["echo", "hello"])).id
    job = client.wait([job_id])[0]

It knows nothing of terminals nor of the command line's flags: it returns data and raises
`jobctl.errors.JobctlError`s, and invalid input names the field it is about as this API names
it (`InvalidInput.field`: "retries must be between 0 and …"); the command line words the same
error with its flags (jobctl.cli.common.CLI_WORDS). No database handle leaves it: the command
line, the worker and the scheduler commands reach the database through it alone.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from jobctl.errors import (
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    PermissionDenied,
    WaitTimeout,
)
from jobctl.models import (
    MAX_ARRAY_INDEX,
    MAX_ARRAY_SIZE,
    MAX_INPUT_BYTES,
    RERUN_STATES,
    ArrayStatus,
    Attempt,
    AuditEntry,
    Check,
    Dependency,
    Job,
    JobFilters,
    JobSpec,
    JobState,
    LogChunk,
    Schedule,
    ScheduleDefinition,
    ScheduleRun,
    Stream,
    WorkerInfo,
    WorkerState,
    Workflow,
    WorkflowState,
    hook_problem,
    user_name_problem,
)
from jobctl.record import record

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Unpack

    from jobctl.capacity import Facts, QueueSettings, Reason
    from jobctl.metrics import NoMetrics, SchedulerMetrics
    from jobctl.scheduler import SchedulerSettings
    from jobctl.store.capacity import Edit, QueueInfo
    from jobctl.store.direct import Conn, DirectDatabase
    from jobctl.store.engine import Database
    from jobctl.store.notify import Subscription
    from jobctl.store.retention import Pruned as Pruned
    from jobctl.store.retention import TableSize as TableSize
    from jobctl.store.stats import QueueReport as QueueReport
    from jobctl.store.stats import Snapshot as Snapshot
    from jobctl.worker.loop import WorkerSettings

T = TypeVar("T")

SQLITE_POLL_S = 0.1
POSTGRES_POLL_S = 1.0  # a fallback: NOTIFY wakes waiters at once

# What the database can store, checked here so that an out-of-range value is invalid input (or an
# unknown id), not a driver error: ids are 64-bit, priorities and attempt counts 32-bit integers.
MAX_ID = 2**63 - 1
MAX_INT = 2**31 - 1
MAX_RETRIES = 1_000_000  # so that attempt + 1 + retries stays a 32-bit integer, retry after retry
MAX_DURATION_S = 36_500 * 86_400.0  # a century: run_at must stay a date every layer can hold


@record
class Submitted:
    id: int
    created: bool  # False: the unique key was known and this is the first job's id


@record
class DatabaseStatus:
    """`jobctl db status`: the schema's revision beside the one this jobctl needs, and the
    tables' sizes (only when the revisions match: then the tables are the ones it knows)."""

    where: str
    current: str | None  # None: no jobctl schema yet
    latest: str
    tables: list[TableSize]

    @property
    def up_to_date(self) -> bool:
        return self.current == self.latest


@record
class SchemaUpgrade:
    where: str
    before: str | None  # None: the database was empty
    after: str
    roles: bool = False  # the group roles' rights applied again (PostgreSQL, after `db roles`)


def job_exit_code(job: Job) -> int:
    """The exit code a shell would report for the job: 0 when it succeeded, its own code when it
    ran (128+N when killed by signal N), 125 when it ended without running to an exit code
    (cancelled before it started, lost with its worker)."""
    if job.state is JobState.SUCCEEDED:
        return 0
    if job.exit_code is not None:
        return job.exit_code
    return 125


class Client:
    """The database at `database_url` (default: the configuration's), opened on first use and
    created when it is empty. No database handle leaves it: callers get data, or errors."""

    def __init__(self, database_url: str | None = None, *, database: Database | None = None):
        self._url = database_url
        self._db = database  # given: its URL is the one used, and it serves the migrations
        self._direct: DirectDatabase | None = None

    # Every command reads and writes through the database's driver alone, without importing
    # SQLAlchemy (see jobctl.store.direct); SQLAlchemy and Alembic are imported only to create
    # and migrate the schema (`store.direct.open_or_create`, `db status`, `db upgrade`).

    def close(self) -> None:
        """Close the database's connection; the next call opens it again."""
        if self._direct is not None:
            self._direct.close()
            self._direct = None

    @property
    def backend(self) -> str:
        """Which database the URL names, without connecting: "postgresql" or "sqlite"."""
        from jobctl.config import resolve_database_url
        from jobctl.store.url import parse

        return parse(self._db.url_text if self._db is not None
                     else resolve_database_url(self._url)).backend

    def _reading(self) -> AbstractContextManager[Conn]:
        return self._database().read()

    def _writing(self) -> AbstractContextManager[Conn]:
        return self._database().write()

    def _database(self) -> DirectDatabase:
        """The database through its driver (store.direct), opened on first use: created and
        migrated first when it is empty, or an error that explains what is wrong."""
        if self._direct is None:
            from jobctl.store.direct import open_or_create

            self._direct = open_or_create(self._db.url_text if self._db is not None
                                          else self._url)
        return self._direct

    # --- submit -------------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> Submitted:
        _validate(spec)
        from jobctl.store import jobs

        with self._writing() as conn:
            job_id, created = jobs.submit(conn, spec)
        return Submitted(job_id, created)

    def submit_many(self, specs: Sequence[JobSpec]) -> list[int]:
        """Submit many jobs in one transaction: all or none. Returns their ids in order."""
        for spec in specs:
            _validate(spec)
            if spec.unique_key is not None:
                raise InvalidInput("{unique_key} cannot be used when submitting many jobs",
                                   field="unique_key")
        from jobctl.store import jobs

        with self._writing() as conn:
            return jobs.submit_many(conn, specs)

    # --- read ---------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        from jobctl.store import reads

        _check_ids([job_id])
        with self._reading() as conn:
            job = reads.get(conn, job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id}")
        return job

    def attempts(self, job_id: int) -> list[Attempt]:
        from jobctl.store import reads

        _check_ids([job_id])
        with self._reading() as conn:
            return reads.list_attempts(conn, job_id)

    def list_jobs(self, **filters: Unpack[JobFilters]) -> list[Job]:
        """Jobs, newest first, as jobctl.store.reads.list_jobs filters them."""
        from jobctl.store import reads

        with self._reading() as conn:
            return reads.list_jobs(conn, **filters)

    def workers(self, *, include_ended: bool = False) -> list[WorkerInfo]:
        from jobctl.store import workers

        with self._reading() as conn:
            return workers.list_workers(conn, include_ended=include_ended)

    def stop_worker(self, name_or_id: str) -> list[tuple[int, WorkerState]]:
        """Ask a worker (by name or id; every live one of that name) to stop gracefully.
        Returns [(worker id, its state before)]."""
        from jobctl.store import workers

        with self._writing() as conn:
            found = workers.request_stop(conn, name_or_id)
        if not found:
            raise NotFound(f"no worker named {name_or_id!r}")
        return found

    # --- output -------------------------------------------------------------------------------

    def logs(
        self,
        job_id: int,
        *,
        attempt: int | None = None,
        stream: Stream | None = None,
        follow: bool = False,
    ) -> Iterator[LogChunk]:
        """The output of one attempt (default: the latest), chunk by chunk, in written order.
        With `follow`, keeps yielding new output until the attempt has ended."""
        from jobctl.store import reads

        job = self.get(job_id)
        if job.private_hidden:
            # Its output is hidden from this role by the database (PostgreSQL's row-level
            # security on job_logs: jobctl.store.postgres.roles); it would read as empty.
            raise PermissionDenied(f"job {job_id} is not yours: its output is for its "
                                   "submitter and operators to read")
        if attempt is None:
            attempt = max(job.attempt, 1)
        else:
            # Following may wait for the next attempt of a job that is queued to run again.
            last = job.attempt + 1 if follow and not job.state.is_final else max(job.attempt, 1)
            if not 1 <= attempt <= last:
                raise NotFound(f"job {job_id} has no attempt {attempt} (it has {job.attempt})")
        after = -1
        while True:
            # Read the job's state before its output: output written before the job ended is
            # then certain to be in the read that follows.
            attempt_over = not follow or self._attempt_over(job_id, attempt)
            while True:
                with self._reading() as conn:
                    chunks = reads.read_logs(conn, job_id, attempt, after_seq=after,
                                             stream=stream)
                if not chunks:
                    break
                yield from chunks
                after = chunks[-1].seq
            if attempt_over:
                return
            time.sleep(0.1)

    def _attempt_over(self, job_id: int, attempt: int) -> bool:
        job = self.get(job_id)
        if job.attempt > attempt:
            return True
        return job.state is not JobState.RUNNING and (job.state.is_final or job.attempt == attempt)

    # --- change -------------------------------------------------------------------------------

    def cancel(self, job_ids: Sequence[int]) -> dict[int, JobState]:
        """Cancel jobs; returns each one's state before. Unknown ids cancel nothing at all."""
        from jobctl.store import jobs

        _check_ids(job_ids)
        with self._writing() as conn:
            missing = sorted(set(job_ids) - jobs.existing_ids(conn, job_ids))
            if missing:
                raise NotFound(f"no job with id {', '.join(map(str, missing))}")
            return {job_id: jobs.cancel(conn, job_id) or JobState.CANCELLED
                    for job_id in job_ids}

    def retry(self, job_id: int, *, retries: int = 0) -> JobState:
        """Queue a finished job again. Returns the state it had."""
        from jobctl.store import jobs

        _check_ids([job_id])
        _check_retries(retries)
        with self._writing() as conn:
            before = jobs.retry(conn, job_id, retries)
        if before is None:
            raise NotFound(f"no job with id {job_id}")
        if not before.is_final:
            raise InvalidInput(f"job {job_id} is {before.value}: only a finished job can be "
                               "retried")
        return before

    # --- wait ---------------------------------------------------------------------------------

    def wait(self, job_ids: Sequence[int], *, timeout_s: float | None = None) -> list[Job]:
        """Block until every job is in a final state; returns them in the order given."""
        from jobctl.store import reads

        _check_ids(job_ids)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._wake_ups() as wait_for_change:
            while True:
                with self._reading() as conn:
                    found = reads.get_many(conn, job_ids)
                missing = sorted(set(job_ids) - set(found))
                if missing:
                    raise NotFound(f"no job with id {', '.join(map(str, missing))}")
                if all(job.state.is_final for job in found.values()):
                    return [found[job_id] for job_id in job_ids]
                if deadline is not None and time.monotonic() >= deadline:
                    pending = [str(i) for i in job_ids if not found[i].state.is_final]
                    raise WaitTimeout(f"timed out waiting for job {', '.join(pending)}")
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                wait_for_change(remaining)

    def _wake_ups(self) -> _WakeUps:
        return _WakeUps(self._pg_conninfo())

    def _pg_conninfo(self) -> str | None:
        """What a PostgreSQL listener connects to; None on SQLite (no notifications)."""
        return self._database().listen_target

    @contextmanager
    def changes(self) -> Iterator[threading.Event]:
        """An event that PostgreSQL notifications set while the context lasts: jobs submitted,
        ended or cancelled, workers asked to stop, and each (re)connect of the listener, after
        which notifications may have been missed. Never set on SQLite, which has none: watchers
        poll (`jobctl top`, `job list --watch`); clear it before each look."""
        woken = threading.Event()
        conninfo = self._pg_conninfo()
        listener = None
        if conninfo is not None:
            from jobctl.store import notify

            listener = notify.Listener(
                conninfo, [notify.JOBS_CHANNEL, notify.DONE_CHANNEL, notify.CANCEL_CHANNEL,
                           notify.WORKER_CHANNEL], lambda channel, payload: woken.set())
            listener.start()
        try:
            yield woken
        finally:
            if listener is not None:
                listener.stop()

    # --- schedules ----------------------------------------------------------------------------

    def add_schedule(self, definition: ScheduleDefinition, *, replace: bool = False) -> Schedule:
        """Create a schedule; with `replace`, an existing one of that name is redefined."""
        from jobctl.store import overdue, schedules

        definition = _validate_schedule(definition)
        with self._writing() as connection:
            _put_schedule(connection, definition, replace, ", or use {edit_schedule}")
            created = schedules.get(connection, definition.name)
            assert created is not None
            return overdue.with_state(connection, [created])[0]

    def add_schedules(self, definitions: Sequence[ScheduleDefinition], *,
                      replace: bool = False) -> None:
        """Create many schedules in one transaction: all or none (`schedule import`)."""

        checked = [_validate_schedule(definition) for definition in definitions]
        with self._writing() as connection:
            for definition in checked:
                _put_schedule(connection, definition, replace)

    def edit_schedule(self, name: str, **changes: object) -> Schedule:
        """Change some fields of a schedule's definition (ScheduleDefinition's field names).
        Giving `cron` clears `every_s` and the other way round."""
        import dataclasses

        from jobctl.store import overdue, schedules

        if changes.get("cron") is not None:
            changes["every_s"] = None
        if changes.get("every_s") is not None:
            changes["cron"] = None
        with self._writing() as connection:
            existing = schedules.get(connection, name, lock=True)
            if existing is None:
                raise NotFound(f"no schedule named {name!r}")
            definition = dataclasses.replace(ScheduleDefinition.of(existing),
                                             **changes)  # type: ignore[arg-type]
            definition = _validate_schedule(definition)
            if definition.name != name and schedules.get(connection, definition.name):
                raise InvalidInput(f"schedule {definition.name!r} exists already")
            schedules.replace(connection, existing, definition)
            edited = schedules.get(connection, definition.name)
            assert edited is not None
            return overdue.with_state(connection, [edited])[0]

    def schedules(self) -> list[Schedule]:
        """Every schedule, with its overdue state as of now (store.overdue.with_state)."""
        from jobctl.store import overdue, schedules

        with self._reading() as connection:
            return overdue.with_state(connection, schedules.list_all(connection))

    def schedule(self, name: str) -> Schedule:
        """The schedule, with its overdue state as of now (store.overdue.with_state)."""
        from jobctl.store import overdue, schedules

        with self._reading() as connection:
            found = schedules.get(connection, name)
            if found is not None:
                [found] = overdue.with_state(connection, [found])
        if found is None:
            raise NotFound(f"no schedule named {name!r}")
        return found

    def schedule_runs(self, name: str, limit: int = 5) -> list[ScheduleRun]:
        """The schedule's latest occurrences (jobs), newest first."""
        from jobctl.store import schedules

        found = self.schedule(name)
        with self._reading() as connection:
            return schedules.recent_runs(connection, found.id, limit)

    def next_fire_times(self, name: str, count: int = 5) -> list[datetime]:
        """The schedule's next `count` fire times (UTC), from its next due one on."""
        from jobctl.store import schedules

        return schedules.next_fire_times(self.schedule(name), count)

    def pause_schedule(self, name: str, paused: bool = True) -> bool:
        """Pause (or resume) a schedule; returns whether it was paused before."""
        from jobctl.store import schedules

        with self._writing() as connection:
            before = schedules.set_paused(connection, name, paused)
        if before is None:
            raise NotFound(f"no schedule named {name!r}")
        return before

    def remove_schedule(self, name: str) -> None:
        from jobctl.store import schedules

        with self._writing() as connection:
            if not schedules.delete(connection, name):
                raise NotFound(f"no schedule named {name!r}")

    def trigger_schedule(self, name: str) -> int:
        """One occurrence now (its fire time: the database's now), under the overlap policy.
        Returns the job's id (a skipped occurrence is a job too, in state `skipped`), or for a
        schedule of a workflow the workflow's id."""
        from jobctl.store import schedules

        with self._writing() as connection:
            found = schedules.get(connection, name, lock=True)
            if found is None:
                raise NotFound(f"no schedule named {name!r}")
            moment = schedules.now(connection)
            submitted = schedules.submit_occurrences(
                connection, [schedules.Occurrence(found, moment)], moment, return_ids=True)
        if found.workflow is not None:
            if not submitted.workflow_ids:
                raise InvalidInput(f"schedule {name!r} skipped this run: a workflow it started "
                                   "has unfinished tasks (overlap forbid)")
            return submitted.workflow_ids[0]
        return submitted.job_ids[0]



    # --- checks: dead-man's switches pinged from outside ----------------------------------------

    def add_check(self, name: str, every_s: float, grace_s: float | None = None,
                  on_overdue: str | None = None, *, replace: bool = False) -> Check:
        """Add a check: overdue when no successful ping came for `every_s` + `grace_s` (default:
        policy.default_grace_s). With `replace`, one of that name starts afresh."""
        from jobctl.policy import default_grace_s
        from jobctl.store import checks

        if grace_s is None and isinstance(every_s, int | float) and every_s > 0:
            grace_s = default_grace_s(every_s)
        _validate_check(name, every_s, grace_s, on_overdue)
        assert grace_s is not None
        with self._writing() as connection:
            if not checks.put(connection, name, float(every_s), float(grace_s), on_overdue,
                              replace=replace):
                raise InvalidInput(f"check {InvalidInput.literal(repr(name))} exists already: "
                                   "give {replace} to redefine it", field="replace",
                                   words={"replace": "replace=True"})
            found = checks.get(connection, name)
        assert found is not None
        return found.check

    def checks(self) -> list[Check]:
        from jobctl.store import checks

        with self._reading() as connection:
            return checks.list_all(connection)

    def audit(self, since: datetime | None = None) -> list[AuditEntry]:
        """The audit trail from `since` on (all of it for None), oldest first
        (jobctl.store.audit)."""
        from jobctl.store import audit

        with self._reading() as connection:
            return audit.since(connection, since)

    def check(self, name: str) -> Check:
        from jobctl.store import checks

        with self._reading() as connection:
            found = checks.get(connection, name)
        if found is None:
            raise NotFound(f"no check named {name!r}")
        return found.check

    def ping_check(self, name: str, *, failed: bool = False) -> None:
        """A ping: a success moves the check's deadline on and ends an overdue spell; a failure
        makes it overdue at once (its hook job is inserted in the same transaction)."""
        from jobctl.store import checks

        with self._writing() as connection:
            found = checks.ping(connection, name, failed=failed)
        if found is None:
            raise NotFound(f"no check named {name!r}")

    def remove_check(self, name: str) -> None:
        from jobctl.store import checks

        with self._writing() as connection:
            if not checks.delete(connection, name):
                raise NotFound(f"no check named {name!r}")

    # --- dependencies and workflows -----------------------------------------------------------

    def dependencies(self, job_id: int) -> tuple[list[Dependency], list[Dependency]]:
        """(the jobs `job_id` waits for, the jobs that wait for it)."""
        from jobctl.store import reads

        _check_ids([job_id])
        with self._reading() as conn:
            return reads.waits_for(conn, job_id), reads.needed_by(conn, job_id)

    def run_workflow(self, definition: dict[str, Any], params: dict[str, str] | None = None,
                     *, labels: dict[str, str] | None = None) -> int:
        """Start a workflow (a definition from `jobctl.workflow.load`) in one transaction;
        returns its id."""
        from jobctl.store import workflows
        from jobctl.workflow import job_specs

        for spec in job_specs(definition, params or {}):
            _validate(spec)
        with self._writing() as conn:
            workflow_id = workflows.start(conn, definition, params or {}, labels=labels)
        assert workflow_id is not None  # only a schedule's occurrence can conflict
        return workflow_id

    def workflow(self, workflow_id: int) -> Workflow:
        from jobctl.store import workflows

        _check_workflow_ids([workflow_id])
        with self._reading() as conn:
            found = workflows.get(conn, workflow_id)
        if found is None:
            raise NotFound(f"no workflow with id {workflow_id}")
        return found

    def workflows(self, *, limit: int | None = 50) -> list[Workflow]:
        from jobctl.store import workflows

        with self._reading() as conn:
            return workflows.list_workflows(conn, limit=limit)

    def cancel_workflow(self, workflow_id: int) -> dict[int, JobState]:
        """Cancel every task of a workflow that has not ended; {job id: state before}."""
        from jobctl.store import workflows

        self.workflow(workflow_id)
        with self._writing() as conn:
            return workflows.cancel(conn, workflow_id)

    def retry_workflow(self, workflow_id: int) -> list[int]:
        """Re-run the failed, cancelled and lost tasks and what depends on them; the ids."""
        from jobctl.store import workflows

        before = self.workflow(workflow_id)
        if before.state is WorkflowState.RUNNING and not any(
            t.state.value in workflows.RERUN for t in before.tasks
        ):
            raise InvalidInput(f"workflow {workflow_id} is running and has nothing to retry")
        with self._writing() as conn:
            ids = workflows.retry(conn, workflow_id)
        if not ids:
            raise InvalidInput(f"workflow {workflow_id} has no failed, cancelled or lost task")
        return ids

    def wait_workflow(self, workflow_id: int, *, timeout_s: float | None = None) -> Workflow:
        """Block until every task of the workflow has ended; returns it."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._wake_ups() as wait_for_change:
            while True:
                workflow = self.workflow(workflow_id)
                if workflow.state is not WorkflowState.RUNNING:
                    return workflow
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(f"timed out waiting for workflow {workflow_id}")
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                wait_for_change(remaining)

    # --- job arrays (`job submit --array`) and JUnit reports ------------------------------------

    def submit_array(self, spec: JobSpec, indices: Sequence[int],
                     throttle: int | None = None) -> tuple[int, list[int]]:
        """Submit an array: one task per index, each `spec` with `{index}` in its argv replaced
        by its index, and JOBCTL_ARRAY_ID/JOBCTL_ARRAY_INDEX in its environment; with a
        `throttle`, at most that many of them run at once. One transaction, one bulk insert.
        Returns (the array's id, the tasks' ids in the order of `indices`)."""
        from jobctl.store import arrays

        _validate(spec)
        if spec.unique_key is not None:
            raise InvalidInput("{unique_key} cannot be used with an array", field="unique_key")
        _check_array(indices, throttle)
        with self._writing() as conn:
            return arrays.create(conn, spec, indices, throttle)

    def array(self, array_id: int) -> ArrayStatus:
        """An array and how its tasks stand."""
        from jobctl.store import arrays

        _check_array_ids([array_id])
        with self._reading() as conn:
            found = arrays.status(conn, array_id)
        if found is None:
            raise NotFound(f"no array with id {array_id}")
        return found

    def array_tasks(self, array_id: int, *, states: Sequence[JobState] = (),
                    limit: int | None = None) -> list[Job]:
        """The array's tasks (in these states, if given), by index."""
        from jobctl.store import arrays

        self.array(array_id)
        with self._reading() as conn:
            return arrays.tasks(conn, array_id, states, limit)

    def array_task_ids(self, array_id: int) -> list[int]:
        """The ids of the array's tasks, by index (what `--after array:ID` waits for)."""
        from jobctl.store import arrays

        self.array(array_id)
        with self._reading() as conn:
            return arrays.task_ids(conn, array_id)

    def wait_array(self, array_id: int, *, timeout_s: float | None = None) -> ArrayStatus:
        """Block until every task of the array has ended; returns how they stand."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._wake_ups() as wait_for_change:
            while True:
                found = self.array(array_id)
                if found.finished:
                    return found
                if deadline is not None and time.monotonic() >= deadline:
                    left = found.size - sum(count for state, count in found.counts.items()
                                            if JobState(state).is_final)
                    raise WaitTimeout(f"timed out waiting for array {array_id} ({left} of "
                                      f"{found.size} tasks not ended)")
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                wait_for_change(remaining)

    def retry_array(self, array_id: int, *, states: Sequence[JobState] = tuple(RERUN_STATES),
                    retries: int = 0) -> list[int]:
        """Queue the array's tasks that ended in `states` (default: failed, lost, cancelled)
        again as new attempts; their ids. None in those states is invalid input."""
        from jobctl.store import arrays

        _check_retries(retries)
        self.array(array_id)
        with self._writing() as conn:
            arrays.check_may_change(conn, array_id)
            ids = arrays.retry(conn, array_id, states, retries)
        if not ids:
            raise InvalidInput(f"array {array_id} has no task that is "
                               f"{' or '.join(sorted(state.value for state in states))}")
        return ids

    def cancel_array(self, array_id: int) -> tuple[list[int], list[int]]:
        """Cancel every unfinished task of the array: (ids cancelled before they started, ids
        running, which their workers kill)."""
        from jobctl.store import arrays

        self.array(array_id)
        with self._writing() as conn:
            arrays.check_may_change(conn, array_id)
            return arrays.cancel(conn, array_id)

    def output_tails(self, jobs: Sequence[Job], max_bytes: int) -> list[tuple[bytes, bytes]]:
        """For each job, the last `max_bytes` of the stdout and of the stderr of its latest
        attempt (a `[jobctl: earlier output left out]` line first where more came before), read
        in one transaction."""
        from jobctl.store import arrays

        tails = []
        with self._reading() as conn:
            for job in jobs:
                pair = []
                for stream in (Stream.STDOUT, Stream.STDERR):
                    data, cut = arrays.output_tail(conn, job.id, max(job.attempt, 1),
                                                   stream.value, max_bytes)
                    pair.append((b"[jobctl: earlier output left out]\n" if cut else b"") + data)
                tails.append((pair[0], pair[1]))
        return tails

    # --- capacity control: queues, holding and editing jobs, explain ---------------------------

    def queues(self) -> list[QueueInfo]:
        """Every known queue with its settings and job counts (`jobctl queue list`)."""
        from jobctl.store import capacity

        with self._reading() as conn:
            return capacity.list_queues(conn)

    def pause_queues(self, names: Sequence[str], paused: bool = True) -> None:
        """Pause (or resume) queues: all or, when one is unknown, none (InvalidInput)."""
        from jobctl.store import capacity

        with self._writing() as conn:
            capacity.pause(conn, names, paused)

    def set_queue(self, name: str, **changes: Any) -> QueueSettings:
        """Set a queue's `max_running` (int or None) and `rate` ((count, seconds) or None)."""
        from jobctl.store import capacity

        if not name:
            raise InvalidInput("a queue name must not be empty", field="queue")
        max_running = changes.get("max_running")
        if max_running is not None and not 1 <= max_running <= MAX_INT:
            raise InvalidInput(f"{{max_running}} must be between 1 and {MAX_INT} (or none), "
                               f"not {max_running}", field="max_running")
        with self._writing() as conn:
            return capacity.set_queue(conn, name, **changes)

    def hold(self, job_ids: Sequence[int], held: bool = True) -> dict[int, str]:
        """Hold (or release) jobs not started yet: each id's state, unknown ids left out."""
        from jobctl.store import capacity

        _check_ids(job_ids)
        with self._writing() as conn:
            return capacity.hold(conn, job_ids, held)

    def edit(self, job_id: int, change: Edit) -> Job:
        """Change a job that has not started (priority, queue, due time, limits)."""
        from jobctl.store import capacity

        _check_ids([job_id])
        if change.priority is not None and not -MAX_INT - 1 <= change.priority <= MAX_INT:
            raise InvalidInput(f"{{priority}} must be between {-MAX_INT - 1} and {MAX_INT}, "
                               f"not {change.priority}", field="priority")
        if change.queue is not None and not change.queue:
            raise InvalidInput("{queue} must not be empty", field="queue")
        if change.limits:
            _check_limits(change.limits)
        with self._writing() as conn:
            capacity.edit(conn, job_id, change)
        return self.get(job_id)

    def explain(self, job_id: int) -> tuple[Facts, list[Reason]]:
        """Why a job is not running: the facts read, and one reason each."""
        from jobctl import capacity as policy
        from jobctl.store import capacity

        _check_ids([job_id])
        with self._reading() as conn:
            facts = capacity.facts(conn, job_id)
        return facts, policy.explain(facts)

    # --- observing the cluster: top, stats, retention, the schema -----------------------------

    @property
    def where(self) -> str:
        """Where the database is, for people: host and port, or the SQLite file; never a
        password."""
        return self._database().where

    def top_snapshot(self, *, window_s: float = 3600.0, running_limit: int = 30,
                     failures_limit: int = 10) -> Snapshot:
        """What `jobctl top` shows: queues, workers, running jobs and recent failures, read in
        one transaction; finished jobs counted within `window_s`."""
        from jobctl.store import stats

        with self._reading() as conn:
            return stats.snapshot(conn, window_s=window_s, running_limit=running_limit,
                                  failures_limit=failures_limit)

    def queue_stats(self, window_s: float) -> QueueReport:
        """Per queue: depth now, and jobs that ended within `window_s` (`jobctl stats`)."""
        from jobctl.store import stats

        with self._reading() as conn:
            return stats.queue_stats(conn, window_s)

    def prune(self, older_than_s: float, states: Sequence[JobState] | None = None, *,
              logs_only: bool = False, dry_run: bool = False) -> Pruned:
        """Delete finished jobs (default: in every final state) that finished more than
        `older_than_s` ago, with their attempts and output (`logs_only`: only their output), in
        short transactions of a batch each; jobs an unfinished job depends on are kept. With
        `dry_run`, count what would go."""
        from jobctl.store import retention

        states = retention.DEFAULT_STATES if states is None else states
        unfinished = [state.value for state in states if not state.is_final]
        if unfinished:
            raise InvalidInput(f"only finished jobs can be pruned, not {', '.join(unfinished)}")
        return retention.prune(self._database(), older_than_s, states, logs_only=logs_only,
                               dry_run=dry_run)

    def db_status(self) -> DatabaseStatus:
        """The schema's revision, and the tables' sizes when it is the one this jobctl needs.
        Never creates nor migrates the schema."""
        from jobctl.store import SCHEMA_REVISION
        from jobctl.store.retention import table_sizes

        database = self._schema_database()
        current = database.current_revision()
        tables: list[TableSize] = []
        if current == SCHEMA_REVISION:
            direct = database.direct()
            try:
                tables = table_sizes(direct)
            finally:
                direct.close()
        return DatabaseStatus(database.where, current, SCHEMA_REVISION, tables)

    def upgrade_schema(self) -> SchemaUpgrade:
        """Create the schema, or migrate it to the newest revision (`jobctl db upgrade`)."""
        database = self._schema_database()
        before, after = database.upgrade()
        # Where `db roles` made the roles: their rights again, for what this migration added.
        roles = database.apply_roles(create=False)
        return SchemaUpgrade(database.where, before, after, roles)

    def create_roles(self) -> str:
        """Create the group roles and give them their rights on this database (`jobctl db
        roles`; PostgreSQL only). Safe to run again. Returns where."""
        database = self._schema_database()
        database.ensure_schema()
        database.apply_roles(create=True)
        return database.where

    def set_role_membership(self, role: str, login: str, *, grant: bool) -> bool:
        """Grant (or revoke) group role `role` (full or short name) to login role `login`
        (`jobctl db grant|revoke`). Returns whether that changed anything."""
        from jobctl.models import GROUP_ROLES, group_role

        group = group_role(role)
        if group is None:
            raise InvalidInput(f"no jobctl role {role!r}: one of "
                               f"{', '.join(GROUP_ROLES)} (or without jobctl_)", field="role")
        if not login or "\0" in login:
            raise InvalidInput("the login role's name is empty", field="login")
        return self._schema_database().set_membership(group, login, grant=grant)

    # --- the long-running processes -----------------------------------------------------------

    def run_worker(self, settings: WorkerSettings, metrics: NoMetrics | None = None) -> int:
        """Run a worker on this database until it stops (`jobctl worker start`); returns its
        exit status. The connection is closed afterwards."""
        from jobctl.metrics import NO_METRICS
        from jobctl.worker.loop import Worker

        try:
            return Worker(self._database(), settings, metrics or NO_METRICS).run()
        finally:
            self.close()

    def run_scheduler(self, settings: SchedulerSettings,
                      metrics: SchedulerMetrics | None = None) -> int:
        """Run a scheduler on this database until it stops (`jobctl scheduler run`); returns
        its exit status. The connection is closed afterwards."""
        from jobctl.scheduler import Scheduler

        try:
            return Scheduler(self._database(), settings, metrics).run()
        finally:
            self.close()

    def _schema_database(self) -> Database:
        """The database on the migrations' road (SQLAlchemy and Alembic), schema unchecked:
        the one place left for them at run time is creating and checking the schema."""
        if self._db is not None:
            return self._db
        from jobctl.store.engine import open_database

        return open_database(self._url)


def workflow_exit_code(workflow: Workflow) -> int:
    """0 when every task succeeded, else the first (in dependency order) failed task's code."""
    return next((code for code in map(job_exit_code, workflow.tasks) if code != 0), 0)


def _check_array_ids(array_ids: Sequence[int]) -> None:
    unstorable = [i for i in array_ids if not -MAX_ID - 1 <= i <= MAX_ID]
    if unstorable:
        raise NotFound(f"no array with id {', '.join(map(str, unstorable))}")


def _check_array(indices: Sequence[int], throttle: int | None) -> None:
    """An array's indices (1 to MAX_ARRAY_SIZE of them, each once, 0 to MAX_ARRAY_INDEX) and
    its throttle (None, or 1 or more)."""
    if not indices:
        raise InvalidInput("an array needs at least one index", field="array")
    if len(indices) > MAX_ARRAY_SIZE:
        raise InvalidInput(f"an array has at most {MAX_ARRAY_SIZE} tasks, not {len(indices)}",
                           field="array")
    if min(indices) < 0 or max(indices) > MAX_ARRAY_INDEX:
        raise InvalidInput(f"array indices are between 0 and {MAX_ARRAY_INDEX}", field="array")
    if len(set(indices)) != len(indices):
        raise InvalidInput("an array's indices must differ", field="array")
    if throttle is not None and (isinstance(throttle, bool) or not 1 <= throttle <= MAX_INT):
        raise InvalidInput(f"an array's throttle (%N) is between 1 and {MAX_INT}, not "
                           f"{throttle}", field="array")


def _check_workflow_ids(workflow_ids: Sequence[int]) -> None:
    unstorable = [i for i in workflow_ids if not -MAX_ID - 1 <= i <= MAX_ID]
    if unstorable:
        raise NotFound(f"no workflow with id {', '.join(map(str, unstorable))}")


class _WakeUps:
    """A context whose function sleeps until a job may have ended: a notification where the
    backend sends them (store.notify.subscribe), a short poll where it does not, or the
    subscription cannot be made, or LISTEN turns out not to work (a transaction pooler).

    The subscription is made at the first wait, not on entering, so that a wait for what has
    ended already costs none (through a pooler, finding that LISTEN does not work takes a
    second); that first call returns at once, for its caller to look again: what ended before
    the LISTEN sent it nothing."""

    def __init__(self, listen_target: str | None) -> None:
        self._target = listen_target  # None: nothing notifies (SQLite)
        self._subscription: Subscription | None = None

    def __enter__(self) -> _WakeUpFunction:
        return self._wait

    def _wait(self, remaining: float | None) -> None:
        if self._target is not None:
            from jobctl.store import notify

            target, self._target = self._target, None  # tried once
            with contextlib.suppress(DatabaseUnavailable):  # no listener: polling still works
                self._subscription = notify.subscribe(target, [notify.DONE_CHANNEL])
            return
        if self._subscription is not None:
            timeout = POSTGRES_POLL_S if remaining is None else min(remaining, POSTGRES_POLL_S)
            try:
                for _ in self._subscription.wait(timeout, stop_after=1):
                    pass
            except DatabaseUnavailable:  # lost: poll from now on
                self._close()
            return
        time.sleep(SQLITE_POLL_S if remaining is None else min(remaining, SQLITE_POLL_S))

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()


if TYPE_CHECKING:
    _WakeUpFunction = Callable[[float | None], None]
else:
    _WakeUpFunction = object


def _put_schedule(connection: Conn, definition: ScheduleDefinition, replace: bool,
                  more: str = "") -> None:
    """Create the schedule, or redefine the one of that name with `replace`; else invalid input
    that says so (and `more`, a template's end)."""
    from jobctl.store import schedules

    existing = schedules.get(connection, definition.name, lock=True)
    if existing is None:
        schedules.create(connection, definition)
    elif replace:
        schedules.replace(connection, existing, definition, keep_created=False)
    else:
        raise InvalidInput(f"schedule {InvalidInput.literal(repr(definition.name))} exists "
                           f"already: give {{replace}} to redefine it{more}", field="replace",
                           words={"replace": "replace=True", "edit_schedule": "edit_schedule"})


def _validate_schedule(definition: ScheduleDefinition) -> ScheduleDefinition:
    """Checked, with the cron expression normalized (aliases expanded)."""
    import dataclasses

    from jobctl.cron import CronError, normalize, zone

    if not definition.name or definition.name != definition.name.strip():
        raise InvalidInput("a schedule needs a name without leading or trailing blanks")
    try:
        zone(definition.timezone)
        if (definition.cron is None) == (definition.every_s is None):
            raise InvalidInput("give {cron} or {every_s} (one of them)", field="cron")
        if definition.every_s is not None and definition.every_s <= 0:
            raise InvalidInput("{every_s} must be longer than 0s", field="every_s")
        cron = None if definition.cron is None else normalize(definition.cron)
    except CronError as error:
        raise InvalidInput(str(error)) from error
    if definition.every_s is not None and definition.every_s > MAX_DURATION_S:
        raise _too_long("every_s")
    if not 0 <= definition.jitter_s <= MAX_DURATION_S:
        raise InvalidInput("{jitter_s} must be 0s or more", field="jitter_s")
    _validate_alert(definition.alert_after_s, "alert_after_s", definition.on_overdue)
    if definition.alert_after_s is not None and definition.workflow is not None:
        # Its runs are workflows, whose tasks are no jobs of the schedule.
        raise InvalidInput("{alert_after_s} is for a schedule of a command, not of a workflow: "
                           "let the workflow's last task ping a check (`jobctl check`)",
                           field="alert_after_s")
    if (definition.start_at is not None and definition.end_at is not None
            and definition.end_at <= definition.start_at):
        raise InvalidInput("{end_at} must be after {start_at}", field="end_at")
    _validate(definition.job)
    return dataclasses.replace(definition, cron=cron)


def _validate_alert(period_s: object, field: str, on_overdue: object) -> None:
    """A dead-man's switch's period (None: no switch, for a schedule) and hook command."""
    if period_s is not None:
        if isinstance(period_s, bool) or not isinstance(period_s, int | float):
            raise InvalidInput(f"{{{field}}} must be a number of seconds", field=field)
        if not 0 < period_s <= MAX_DURATION_S:
            raise InvalidInput(f"{{{field}}} must be longer than 0s and at most "
                               f"{MAX_DURATION_S / 86_400:.0f}d", field=field)
    if on_overdue is not None:
        _check_hook("on_overdue", on_overdue)
        if period_s is None:
            raise InvalidInput(f"{{on_overdue}} needs {{{field}}}", field="on_overdue")


def _validate_check(name: object, every_s: object, grace_s: object, on_overdue: object) -> None:
    if not isinstance(name, str) or not name or name != name.strip() or not name.isprintable():
        raise InvalidInput("a check needs a name without leading or trailing blanks or control "
                           "characters")
    _validate_alert(every_s, "every_s", on_overdue)
    if every_s is None:
        raise InvalidInput("a check needs {every_s}", field="every_s")
    if (isinstance(grace_s, bool) or not isinstance(grace_s, int | float)
            or not 0 <= grace_s <= MAX_DURATION_S):
        raise InvalidInput(f"{{grace_s}} must be 0s or more and at most "
                           f"{MAX_DURATION_S / 86_400:.0f}d", field="grace_s")


def _check_ids(job_ids: Sequence[int]) -> None:
    """An id no database can hold is an unknown id, like any other."""
    unstorable = [job_id for job_id in job_ids if not -MAX_ID - 1 <= job_id <= MAX_ID]
    if unstorable:
        raise NotFound(f"no job with id {', '.join(map(str, unstorable))}")


def _check_retries(retries: int) -> None:
    if not 0 <= retries <= MAX_RETRIES:
        raise InvalidInput(f"{{retries}} must be between 0 and {MAX_RETRIES}, not {retries}",
                           field="retries")


def _validate(spec: JobSpec) -> None:
    if not spec.argv or not spec.argv[0]:
        raise InvalidInput("no command given: {argv}", field="argv",
                           words={"argv": "argv is empty"})
    _check_retries(spec.retries)
    if spec.timeout_s is not None and spec.timeout_s <= 0:
        raise InvalidInput("{timeout_s} must be longer than 0s", field="timeout_s")
    if not spec.queue:
        raise InvalidInput("{queue} must not be empty", field="queue")
    if not -MAX_INT - 1 <= spec.priority <= MAX_INT:
        raise InvalidInput(f"{{priority}} must be between {-MAX_INT - 1} and {MAX_INT}, "
                           f"not {spec.priority}", field="priority")
    if spec.after or spec.after_any:  # (each check costs: a bulk submit runs them 100,000 times)
        _check_ids([*spec.after, *spec.after_any])
    if spec.timeout_s is not None and spec.timeout_s > MAX_DURATION_S:
        raise _too_long("timeout_s")
    if spec.backoff_s is not None and spec.backoff_s > MAX_DURATION_S:
        raise _too_long("backoff_s")
    if spec.run_in_s is not None and spec.run_in_s > MAX_DURATION_S:
        raise _too_long("run_in_s")
    _validate_run_fields(spec)


def _check_limits(limits: Any) -> None:
    """A job's limits: {key: N}, N a whole number from 1."""
    import re

    for key, count in dict(limits).items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_.:/@+-]{1,200}", key):
            raise InvalidInput(f"a {{limits}} key is 1 to 200 letters, digits or _ . : / @ + -, "
                               f"not {InvalidInput.literal(repr(key))}", field="limits")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_INT:
            raise InvalidInput(f"{{limits}} {InvalidInput.literal(key)}: N must be a whole "
                               f"number of at least 1, not {InvalidInput.literal(repr(count))}",
                               field="limits")


def _too_long(field: str) -> InvalidInput:
    return InvalidInput(f"{{{field}}} must be at most {MAX_DURATION_S / 86_400:.0f}d",
                        field=field)


def _validate_run_fields(spec: JobSpec) -> None:
    """max_lost, input and user: worded after the JobSpec fields (the CLI checks its own flags
    first, and a workflow file its keys)."""
    if isinstance(spec.max_lost, bool) or not 1 <= spec.max_lost <= MAX_INT:
        raise InvalidInput(f"{{max_lost}} must be between 1 and {MAX_INT}, not "
                           f"{InvalidInput.literal(repr(spec.max_lost))}", field="max_lost")
    if spec.input is not None:
        if not isinstance(spec.input, bytes):
            raise InvalidInput("a job's {input} must be bytes (encode text first)",
                               field="input")
        if len(spec.input) > MAX_INPUT_BYTES:
            raise InvalidInput(f"a job's {{input}} is at most {MAX_INPUT_BYTES} bytes (1 MiB), "
                               f"not {len(spec.input)}", field="input")
    if spec.limits:
        _check_limits(spec.limits)
    if spec.cpus is not None and (isinstance(spec.cpus, bool) or not 0 < spec.cpus <= MAX_INT):
        raise InvalidInput(f"{{cpus}} must be more than 0, not {spec.cpus!r}", field="cpus")
    if spec.mem_bytes is not None and (isinstance(spec.mem_bytes, bool)
                                       or not 0 < spec.mem_bytes <= MAX_ID):
        raise InvalidInput(f"{{mem_bytes}} must be more than 0, not {spec.mem_bytes!r}",
                           field="mem_bytes")
    if isinstance(spec.gpus, bool) or not 0 <= spec.gpus <= 1024:
        raise InvalidInput(f"{{gpus}} must be between 0 and 1024, not {spec.gpus!r}",
                           field="gpus")
    for key, value in spec.requires.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key or not value:
            raise InvalidInput("{requires} takes names and values (strings, not empty)",
                               field="requires")
    if spec.on_success is not None:
        _check_hook("on_success", spec.on_success)
    if spec.on_failure is not None:
        _check_hook("on_failure", spec.on_failure)
    if spec.on_end is not None:
        _check_hook("on_end", spec.on_end)
    if spec.retry_on_exit is not None or spec.no_retry_on_exit is not None:
        _check_exit_codes(spec)
    if spec.secret_env:
        _check_secret_env(spec)
    if spec.user is not None:
        problem = user_name_problem(spec.user)
        if problem is not None:
            raise InvalidInput(f"invalid {{user}} {InvalidInput.literal(repr(spec.user))}: "
                               f"{InvalidInput.literal(problem)}", field="user")


def _check_hook(field: str, command: object) -> None:
    """A hook (a job's, or an overdue schedule's or check's): a /bin/sh -c command."""
    problem = (hook_problem(command) if isinstance(command, str)
               else "must be a command (for /bin/sh -c)")
    if problem is not None:
        raise InvalidInput(f"{{{field}}}: {InvalidInput.literal(problem)}", field=field)


def _check_secret_env(spec: JobSpec) -> None:
    """secret_env: {NAME: "file:PATH" | "env:VAR"}, each NAME a variable name not also in env."""
    from jobctl.secret_env import reference_problem

    if not isinstance(spec.secret_env, dict):
        raise InvalidInput("{secret_env} takes names and references (file:PATH or env:VAR)",
                           field="secret_env")
    for name, reference in spec.secret_env.items():
        if isinstance(name, str) and name in spec.env:
            raise InvalidInput(f"{{secret_env}} {InvalidInput.literal(name)}: it is in {{env}} "
                               "too; give it once", field="secret_env")
        problem = reference_problem(name, reference)
        if problem is not None:
            raise InvalidInput(f"{{secret_env}} {InvalidInput.literal(problem)}",
                               field="secret_env")


def _check_exit_codes(spec: JobSpec) -> None:
    """retry_on_exit and no_retry_on_exit: at most one of them, each exit codes 0 to 255."""
    if spec.retry_on_exit is not None and spec.no_retry_on_exit is not None:
        raise InvalidInput("give {retry_on_exit} or {no_retry_on_exit}, not both",
                           field="retry_on_exit")
    for field, codes in (("retry_on_exit", spec.retry_on_exit),
                         ("no_retry_on_exit", spec.no_retry_on_exit)):
        if codes is None:
            continue
        if not codes or any(isinstance(code, bool) or not isinstance(code, int)
                            or not 0 <= code <= 255 for code in codes):
            raise InvalidInput(f"{{{field}}} takes exit codes from 0 to 255, not "
                               f"{InvalidInput.literal(repr(codes))}", field=field)
