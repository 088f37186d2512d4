"""Plain data: what a job is, its states, its attempts, and the workers that run it.

Nothing here touches the database or the terminal, so every layer can import it cheaply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypedDict

from jobctl.record import record


class JobState(StrEnum):
    WAITING = "waiting"  # dependencies not met yet
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"  # an at-most-once job whose worker vanished: never run again
    SKIPPED = "skipped"  # a schedule's occurrence not run (overlap policy `forbid`)

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


# The state sets, defined here once for every layer (the store's SQL renders them with
# `sql_states`, or binds `state_values` as one list parameter: `Conn.ids_param`).
FINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.LOST, JobState.SKIPPED}
)
# Not finished: waiting for its dependencies, queued, or running.
UNFINISHED_STATES = frozenset(state for state in JobState if state not in FINAL_STATES)
# Not started yet: cancelled at once, without a worker.
NOT_STARTED_STATES = frozenset({JobState.WAITING, JobState.QUEUED})
# Final without success: an `ok` (`--after`, `needs`) dependency in one of these can never be
# met any more, and ends its dependents.
FAILING_STATES = FINAL_STATES - {JobState.SUCCEEDED}
# What `workflow retry` runs again: the tasks that ended without succeeding because of themselves
# or a dependency. (Skipped is final too, but only a schedule's occurrence is skipped, never a
# workflow's task.)
RERUN_STATES = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.LOST})
# Ended badly, what counts against a queue's failure rate (`jobctl stats`): failed, or lost with
# its worker. (Cancelled and skipped jobs were not run to an end, and count as neither.)
FAILURE_STATES = frozenset({JobState.FAILED, JobState.LOST})


# Hooks (`job submit --on-success/--on-failure/--on-end CMD`): the final states that start each.
# A hook is a job of its own (`/bin/sh -c CMD`), created by the database in the transaction that
# makes its job final (jobctl.store.<backend>.hooks), so it runs once per final state; a hook's
# own end starts no hook. A workflow's `on_failure` starts once, when its first task fails or is
# lost.
HOOK_STATES: dict[str, frozenset[JobState]] = {
    "on_success": frozenset({JobState.SUCCEEDED}),
    "on_failure": FAILURE_STATES,
    "on_end": FINAL_STATES,
}
# A hook job's attempts and the pause between them (a webhook's server may be down a moment).
HOOK_MAX_ATTEMPTS = 3
HOOK_BACKOFF_S = 10.0
# The most of its job's output a hook finds in $JOBCTL_HOOK_OUTPUT (MAILTO mails it): the end.
HOOK_OUTPUT_MAX_BYTES = 10 << 20


# The longest hook command (a /bin/sh -c string) a job may carry.
MAX_HOOK_BYTES = 64 << 10


def hook_problem(command: str) -> str | None:
    """Why `command` cannot be a hook (a /bin/sh -c string), or None when it can."""
    if not command.strip():
        return "a hook's command cannot be empty"
    if "\0" in command:
        return "a hook's command cannot hold a NUL character"
    if len(command.encode()) > MAX_HOOK_BYTES:
        return f"a hook's command is at most {MAX_HOOK_BYTES} bytes"
    return None


def state_values(states: Iterable[StrEnum]) -> list[str]:
    """The states' values, sorted (a query's text and parameters stay the same run to run)."""
    return sorted(state.value for state in states)


def sql_states(states: Iterable[StrEnum]) -> str:
    """The states as SQL literals for `IN (…)`: `'cancelled', 'failed'`."""
    return ", ".join(f"'{value}'" for value in state_values(states))


# A job that loses its worker this many times (kill -9, fencing, a cut, a stall) fails: losses
# cost no retry, but a job that keeps taking its workers down must not loop forever.
DEFAULT_MAX_LOST = 3

# PostgreSQL's group roles (`jobctl db roles`; their rights: jobctl.store.postgres.roles), in
# this order: viewer, submitter, operator, worker, admin. `db grant` takes them by these names
# or by their short ones (`submitter`).
GROUP_ROLES = ("jobctl_viewer", "jobctl_submitter", "jobctl_operator", "jobctl_worker",
               "jobctl_admin")


def group_role(name: str) -> str | None:
    """The group role `name` means (its full or short name), None when it is none of them."""
    full = name if name.startswith("jobctl_") else f"jobctl_{name}"
    return full if full in GROUP_ROLES else None
# The most standard input a job may carry (`job submit --input`, a crontab's `%` lines).
MAX_INPUT_BYTES = 1 << 20


def user_name_problem(name: str) -> str | None:
    """Why `name` cannot be the Unix user a job runs as, or None when it can (whether the user
    exists is the worker's to find out: users differ from machine to machine)."""
    if not name:
        return "a user name cannot be empty"
    if len(name) > 256:
        return "a user name is at most 256 characters"
    if name.isdigit():
        return "give the user's name, not a uid"
    if name.startswith("-") or any(c in ":/" or c.isspace() or not c.isprintable()
                                   for c in name):
        return "a user name cannot start with - or hold blanks, control characters, : or /"
    return None


class Delivery(StrEnum):
    AT_LEAST_ONCE = "at_least_once"
    AT_MOST_ONCE = "at_most_once"

    @classmethod
    def parse(cls, text: str) -> Delivery:
        """Accept the CLI spelling (`at-least-once`) and the stored one (`at_least_once`)."""
        return cls(text.strip().lower().replace("-", "_"))

    @property
    def label(self) -> str:
        return self.value.replace("_", "-")


class WorkerState(StrEnum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    LOST = "lost"


# Workers that hold (or may still renew) leases: a heartbeat older than a lease makes one lost.
LIVE_WORKER_STATES = frozenset({WorkerState.RUNNING, WorkerState.DRAINING})


class Stream(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"


@record
class JobSpec:
    """Everything a submitter says about a job; the database adds the rest."""

    argv: list[str]
    name: str | None = None
    queue: str = "default"
    priority: int = 0
    timeout_s: float | None = None
    retries: int = 0
    backoff_s: float = 10.0
    delivery: Delivery = Delivery.AT_LEAST_ONCE
    run_at: datetime | None = None  # None: as soon as possible (or after run_in_s)
    run_in_s: float | None = None  # start no earlier than this long after submission (DB clock)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None  # None: the worker's own directory
    unique_key: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    after: tuple[int, ...] = ()  # start only after each of these succeeded
    after_any: tuple[int, ...] = ()  # start only after each of these ended, however
    max_lost: int = DEFAULT_MAX_LOST  # fail after losing this many workers (not a retry)
    input: bytes | None = None  # standard input; None: /dev/null
    user: str | None = None  # the Unix user it runs as; None: the worker's own
    # Capacity control (jobctl.capacity): starts only while fewer than N running jobs hold each
    # key; needs these resources free on its worker's machine and these tags on the worker;
    # held: never starts until released.
    limits: dict[str, int] = field(default_factory=dict)
    cpus: float | None = None
    mem_bytes: int | None = None
    gpus: int = 0
    requires: dict[str, str] = field(default_factory=dict)
    hold: bool = False
    # Hooks: shell commands run as jobs of their own when this job ends (HOOK_STATES).
    on_success: str | None = None
    on_failure: str | None = None
    on_end: str | None = None
    # Retrying by exit code (jobctl.policy.should_retry): only these exit codes retry, or these
    # never do (at most one of the two); None: any failure retries, up to `retries`.
    retry_on_exit: tuple[int, ...] | None = None
    no_retry_on_exit: tuple[int, ...] | None = None
    # Secrets (jobctl.secret_env): NAME → "file:PATH" | "env:VAR", resolved by the worker that
    # starts the job; only these references are stored, never a value.
    secret_env: dict[str, str] = field(default_factory=dict)

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def for_commands(self, argvs: Iterable[list[str]]) -> list[JobSpec]:
        """This spec once for each argv (a bulk submit: every job alike but its command).
        Equal to JobSpec(argv=argv, …) each, and five times faster: a frozen dataclass's
        __init__ sets each field through object.__setattr__, 0.3 s for 100,000 specs of 24
        fields; this copies the instance's fields at once. The specs share the values (the
        env, the labels, …), as specs given the same keyword arguments would."""
        fields = self.__dict__
        specs = []
        for argv in argvs:
            spec = object.__new__(JobSpec)
            spec.__dict__.update(fields, argv=argv)
            specs.append(spec)
        return specs

    @property
    def gated(self) -> bool:
        """Whether only the gated claim may start it (it holds limits, asks for resources or
        tags): the hot path's claim never looks at such a job."""
        return bool(self.limits or self.cpus or self.mem_bytes or self.gpus or self.requires)


@record
class Job:
    id: int
    name: str | None
    queue: str
    priority: int
    state: JobState
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    timeout_s: float | None
    max_attempts: int
    backoff_s: float
    delivery: Delivery
    attempt: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: int | None
    lease_until: datetime | None
    exit_code: int | None
    signal: int | None
    error: str | None
    cancel_requested: bool
    unique_key: str | None
    labels: dict[str, str]
    workflow_id: int | None = None
    task: str | None = None
    max_lost: int = DEFAULT_MAX_LOST
    losses: int = 0  # attempts that ended because the worker was lost (not counted as retries)
    user: str | None = None
    input_bytes: int | None = None  # the size of its standard input; None: /dev/null
    schedule_id: int | None = None  # the schedule that made it, and for which fire time
    schedule: str | None = None  # that schedule's name (None once it is removed)
    fire_time: datetime | None = None
    held: bool = False
    limits: dict[str, int] = field(default_factory=dict)
    cpus: float | None = None
    mem_bytes: int | None = None
    gpus: int = 0
    requires: dict[str, str] = field(default_factory=dict)
    gpu_indices: str | None = None  # the GPUs its running attempt holds ("0,1")
    on_success: str | None = None
    on_failure: str | None = None
    on_end: str | None = None
    hook_of: int | None = None  # a hook: the job whose end started it
    array_id: int | None = None  # a task of this array (`job submit --array`), at this index
    array_index: int | None = None
    retry_on_exit: tuple[int, ...] | None = None
    no_retry_on_exit: tuple[int, ...] | None = None
    secret_env: dict[str, str] = field(default_factory=dict)  # references, never values
    # Who submitted it (jobctl.store.identity): a PostgreSQL role or a Unix user; None for a
    # job created before migration 0011.
    submitted_by: str | None = None
    # Its environment, secret references and standard input are not this reader's to see (a
    # PostgreSQL viewer or submitter reading another's job: jobctl.store.postgres.roles): `env`
    # and `secret_env` are then empty here, and null in JSON.
    private_hidden: bool = False

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        from jobctl.timeparse import isoformat_utc

        return {
            "id": self.id,
            "name": self.name,
            "queue": self.queue,
            "priority": self.priority,
            "state": self.state.value,
            "argv": self.argv,
            "env": self.env,
            "cwd": self.cwd,
            "timeout_s": self.timeout_s,
            "max_attempts": self.max_attempts,
            "backoff_s": self.backoff_s,
            "delivery": self.delivery.label,
            "attempt": self.attempt,
            "run_at": isoformat_utc(self.run_at),
            "created_at": isoformat_utc(self.created_at),
            "started_at": isoformat_utc(self.started_at),
            "finished_at": isoformat_utc(self.finished_at),
            "duration_s": self.duration_s,
            "worker_id": self.worker_id,
            "lease_until": isoformat_utc(self.lease_until),
            "exit_code": self.exit_code,
            "signal": self.signal,
            "error": self.error,
            "cancel_requested": self.cancel_requested,
            "unique_key": self.unique_key,
            "labels": self.labels,
            "workflow_id": self.workflow_id,
            "task": self.task,
            "max_lost": self.max_lost,
            "losses": self.losses,
            "user": self.user,
            "input_bytes": self.input_bytes,
            "schedule_id": self.schedule_id,
            "schedule": self.schedule,
            "fire_time": isoformat_utc(self.fire_time),
            "held": self.held,
            "limits": self.limits,
            "cpus": self.cpus,
            "mem_bytes": self.mem_bytes,
            "gpus": self.gpus,
            "requires": self.requires,
            "gpu_indices": self.gpu_indices,
            "on_success": self.on_success,
            "on_failure": self.on_failure,
            "on_end": self.on_end,
            "hook_of": self.hook_of,
            "array_id": self.array_id,
            "array_index": self.array_index,
            "retry_on_exit": list(self.retry_on_exit) if self.retry_on_exit is not None else None,
            "no_retry_on_exit": (list(self.no_retry_on_exit)
                                 if self.no_retry_on_exit is not None else None),
            "secret_env": None if self.private_hidden else self.secret_env,
            "submitted_by": self.submitted_by,
        } | ({"env": None, "private_hidden": True} if self.private_hidden else {})


class JobFilters(TypedDict, total=False):
    """What `job list` filters by (jobctl.store.reads.list_jobs says how, and the defaults)."""

    states: Sequence[JobState]
    queues: Sequence[str]
    name: str | None
    labels: dict[str, str] | None
    schedule: str | None
    # Who submitted it: exactly this name, or (`mine`) the current identity (the session's role
    # on PostgreSQL, evaluated by the database; the Unix user on SQLite).
    submitted_by: str | None
    mine: bool
    limit: int | None


@record
class Attempt:
    job_id: int
    attempt: int
    worker_id: int | None
    worker_name: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None  # the job state this attempt led to, or None while it runs
    exit_code: int | None
    signal: int | None
    error: str | None
    # Accounting (jobctl.accounting): CPU seconds, the peak memory of its process tree, and
    # whether the kernel killed it for memory; None where not known (running, lost, older).
    cpu_user_s: float | None = None
    cpu_system_s: float | None = None
    max_rss_bytes: int | None = None
    oom_killed: bool | None = None

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        from jobctl.timeparse import isoformat_utc

        return {
            "attempt": self.attempt,
            "worker_id": self.worker_id,
            "worker_name": self.worker_name,
            "started_at": isoformat_utc(self.started_at),
            "finished_at": isoformat_utc(self.finished_at),
            "duration_s": self.duration_s,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "error": self.error,
            "cpu_user_s": self.cpu_user_s,
            "cpu_system_s": self.cpu_system_s,
            "max_rss_bytes": self.max_rss_bytes,
            "oom_killed": self.oom_killed,
        }


@record
class WorkerInfo:
    id: int
    name: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    state: WorkerState
    running_jobs: int

    def to_json(self) -> dict[str, Any]:
        from jobctl.timeparse import isoformat_utc

        return {
            "id": self.id,
            "name": self.name,
            "hostname": self.hostname,
            "pid": self.pid,
            "queues": self.queues,
            "concurrency": self.concurrency,
            "version": self.version,
            "started_at": isoformat_utc(self.started_at),
            "heartbeat_at": isoformat_utc(self.heartbeat_at),
            "state": self.state.value,
            "running_jobs": self.running_jobs,
        }


@record
class LogChunk:
    attempt: int
    stream: Stream
    seq: int
    data: bytes


# --- dependencies and workflows -------------------------------------------------------------------


class DepCondition(StrEnum):
    OK = "ok"  # --after / needs: the dependency must succeed
    ANY = "any"  # --after-any / needs_any: the dependency must end, whatever its outcome


@record
class Dependency:
    """One edge seen from a job: the other job, the condition, and the other job's state."""

    job_id: int
    condition: DepCondition
    state: JobState

    def to_json(self) -> dict[str, Any]:
        return {"id": self.job_id, "condition": self.condition.value, "state": self.state.value}


def status_document(job: Job, attempts: Iterable[Attempt], waits_for: Iterable[Dependency],
                    needed_by: Iterable[Dependency]) -> dict[str, Any]:
    """`job status -o json`: the job, its attempts and its dependencies both ways. A hook reads
    the same document on its standard input."""
    return {**job.to_json(), "attempts": [attempt.to_json() for attempt in attempts],
            "waits_for": [dep.to_json() for dep in waits_for],
            "needed_by": [dep.to_json() for dep in needed_by]}


class WorkflowState(StrEnum):
    RUNNING = "running"  # some task has not ended
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every task ended, some failed or were lost
    CANCELLED = "cancelled"  # every task ended, some were cancelled, none failed


@record
class Workflow:
    id: int
    name: str
    created_at: datetime
    params: dict[str, str]
    definition: dict[str, Any]
    tasks: list[Job]  # in dependency order
    schedule_id: int | None = None
    submitted_by: str | None = None  # jobctl.store.identity; None: before migration 0011

    @property
    def state(self) -> WorkflowState:
        states = {task.state for task in self.tasks}
        if any(not state.is_final for state in states):
            return WorkflowState.RUNNING
        if states <= {JobState.SUCCEEDED}:
            return WorkflowState.SUCCEEDED
        if states & {JobState.FAILED, JobState.LOST}:
            return WorkflowState.FAILED
        return WorkflowState.CANCELLED

    def needs(self, task: str) -> list[str]:
        spec = self.definition["tasks"][task]
        return list(spec.get("needs", [])) + list(spec.get("needs_any", []))

    def to_json(self) -> dict[str, Any]:
        from jobctl.timeparse import isoformat_utc

        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "created_at": isoformat_utc(self.created_at),
            "params": self.params,
            "schedule_id": self.schedule_id,
            "submitted_by": self.submitted_by,
            "tasks": [
                {"task": job.task, "job_id": job.id, "state": job.state.value,
                 "attempt": job.attempt, "exit_code": job.exit_code, "error": job.error,
                 "started_at": isoformat_utc(job.started_at),
                 "finished_at": isoformat_utc(job.finished_at), "duration_s": job.duration_s,
                 "needs": self.definition["tasks"][job.task].get("needs", []) if job.task else [],
                 "needs_any": (self.definition["tasks"][job.task].get("needs_any", [])
                               if job.task else [])}
                for job in self.tasks
            ],
        }


# --- schedules --------------------------------------------------------------------------------


class Overlap(StrEnum):
    ALLOW = "allow"  # start the new run whatever the previous one does
    FORBID = "forbid"  # skip the new run while the previous one is queued or running
    REPLACE = "replace"  # cancel the previous run, start the new one


class Misfire(StrEnum):
    SKIP = "skip"  # fire nothing for fire times the scheduler missed
    ONCE = "once"  # fire one job, for the latest missed time
    ALL = "all"  # fire every missed time (up to a cap)


# The JobSpec fields a schedule's job template keeps (when a job runs is the schedule's business).
TEMPLATE_FIELDS = ("argv", "name", "queue", "priority", "timeout_s", "retries", "backoff_s",
                   "delivery", "env", "cwd", "labels", "max_lost", "input", "user", "limits",
                   "cpus", "mem_bytes", "gpus", "requires", "on_success", "on_failure", "on_end",
                   "retry_on_exit", "no_retry_on_exit", "secret_env")


def job_template(spec: JobSpec) -> dict[str, Any]:
    """A JobSpec as the JSON a schedule stores (standard input as base64)."""
    import base64

    template = {key: getattr(spec, key) for key in TEMPLATE_FIELDS}
    template["delivery"] = spec.delivery.value
    if spec.input is not None:
        template["input"] = base64.b64encode(spec.input).decode("ascii")
    return template


def spec_from_template(template: dict[str, Any]) -> JobSpec:
    import base64

    known = {key: template[key] for key in TEMPLATE_FIELDS if key in template}
    known["delivery"] = Delivery(known.get("delivery", Delivery.AT_LEAST_ONCE.value))
    if known.get("input") is not None:
        known["input"] = base64.b64decode(known["input"])
    for key in ("retry_on_exit", "no_retry_on_exit"):  # JSON lists, a JobSpec's tuples
        if known.get(key) is not None:
            known[key] = tuple(known[key])
    return JobSpec(**known)


@record
class Schedule:
    id: int
    name: str
    cron: str | None
    every_s: float | None
    timezone: str
    job: JobSpec | None
    workflow: dict[str, Any] | None
    overlap: Overlap
    misfire: Misfire
    jitter_s: float
    paused: bool
    start_at: datetime | None
    end_at: datetime | None
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # The dead-man's switch (`--alert-after`; None: it has none): overdue after no succeeded run
    # for `alert_after_s` (see policy.overdue_state); `on_overdue` is its hook's command.
    alert_after_s: float | None = None
    on_overdue: str | None = None
    alert_set_at: datetime | None = None  # when --alert-after was set: the clock's start
    # As stored: the overdue spell a scheduler noticed. As `schedule list/show` read it (store.
    # overdue.with_state): the spell as of now, whether or not a scheduler noticed it yet;
    # `overdue_at`, when it becomes overdue unless a run succeeds first; its latest success.
    overdue_since: datetime | None = None
    overdue_at: datetime | None = None
    last_success_at: datetime | None = None
    submitted_by: str | None = None  # jobctl.store.identity; None: before migration 0011

    @property
    def overdue(self) -> bool:
        return self.overdue_since is not None

    def to_json(self) -> dict[str, Any]:
        from jobctl.timeparse import isoformat_utc

        return {
            **self._to_json(),
            "alert_after_s": self.alert_after_s,
            "on_overdue": self.on_overdue,
            "alert_set_at": isoformat_utc(self.alert_set_at),
            "overdue": self.overdue,
            "overdue_since": isoformat_utc(self.overdue_since),
            "overdue_at": isoformat_utc(self.overdue_at),
            "last_success_at": isoformat_utc(self.last_success_at),
            "submitted_by": self.submitted_by,
        }

    def _to_json(self) -> dict[str, Any]:
        from jobctl.timeparse import isoformat_utc

        return {
            "id": self.id,
            "name": self.name,
            "cron": self.cron,
            "every_s": self.every_s,
            "timezone": self.timezone,
            "job": job_template(self.job) if self.job is not None else None,
            "workflow": self.workflow,
            "overlap": self.overlap.value,
            "misfire": self.misfire.value,
            "jitter_s": self.jitter_s,
            "paused": self.paused,
            "start_at": isoformat_utc(self.start_at),
            "end_at": isoformat_utc(self.end_at),
            "next_fire_at": isoformat_utc(self.next_fire_at),
            "last_fire_at": isoformat_utc(self.last_fire_at),
            "created_at": isoformat_utc(self.created_at),
            "updated_at": isoformat_utc(self.updated_at),
        }


@record
class ScheduleRun:
    """One occurrence of a schedule: the job it made."""

    job_id: int
    fire_time: datetime
    state: JobState
    created_at: datetime
    error: str | None

    def to_json(self) -> dict[str, Any]:
        from jobctl.timeparse import isoformat_utc

        return {"job_id": self.job_id, "fire_time": isoformat_utc(self.fire_time),
                "state": self.state.value, "created_at": isoformat_utc(self.created_at),
                "error": self.error}


@record
class ScheduleDefinition:
    """What `schedule add` and `schedule edit` say about a schedule."""

    name: str
    job: JobSpec
    cron: str | None = None
    every_s: float | None = None
    timezone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    overlap: Overlap = Overlap.FORBID
    misfire: Misfire = Misfire.ONCE
    jitter_s: float = 0.0
    paused: bool = False
    # A schedule of a workflow: {"definition": jobctl.workflow.load(...), "params": {--set}};
    # `job` then only describes it (its queue and a command line that says what runs).
    workflow: dict[str, Any] | None = None
    # Its dead-man's switch: overdue after no succeeded run for this long; the hook's command.
    alert_after_s: float | None = None
    on_overdue: str | None = None

    @classmethod
    def of(cls, schedule: Schedule) -> ScheduleDefinition:
        assert schedule.job is not None
        return cls(name=schedule.name, job=schedule.job, cron=schedule.cron,
                   every_s=schedule.every_s, timezone=schedule.timezone,
                   start_at=schedule.start_at, end_at=schedule.end_at, overlap=schedule.overlap,
                   misfire=schedule.misfire, jitter_s=schedule.jitter_s, paused=schedule.paused,
                   workflow=schedule.workflow, alert_after_s=schedule.alert_after_s,
                   on_overdue=schedule.on_overdue)


# What `schedule show` (and an overdue hook's standard input) lists: its next fire times, and its
# latest runs.
SHOW_FIRE_TIMES = 5
SHOW_RUNS = 10


def schedule_document(schedule: Schedule, next_fire_times: Iterable[datetime],
                      runs: Iterable[ScheduleRun]) -> dict[str, Any]:
    """`schedule show -o json`: the schedule, its next fire times and its latest runs. Also what
    its overdue hook reads on its standard input."""
    from jobctl.timeparse import isoformat_utc

    return {**schedule.to_json(), "next_fire_times": [isoformat_utc(t) for t in next_fire_times],
            "runs": [run.to_json() for run in runs]}


# --- dead-man's switches: checks (`jobctl check`) and overdue hooks ----------------------------

# A check's default grace (`check add` without --grace): half its period, at most an hour. An
# hour is healthchecks.io's default, right for daily jobs; for short periods it would hide a
# dead job for many periods, and half a period still lets a job that pings at its end run late
# by half a period (its run time varying) before anyone is told.
CHECK_GRACE_SHARE = 0.5
CHECK_GRACE_MAX_S = 3600.0
# What an overdue hook's environment says it is about (JOBCTL_HOOK_STATE).
HOOK_STATE_OVERDUE = "overdue"


@record
class Check:
    """A dead-man's switch for anything outside jobctl (`jobctl check`): pinged by a script, and
    overdue when no successful ping came for `every_s` + `grace_s` (or a ping said it failed).
    `overdue_since`/`overdue_at` as of the moment it was read (policy.overdue_state)."""

    id: int
    name: str
    every_s: float
    grace_s: float
    on_overdue: str | None
    created_at: datetime
    updated_at: datetime
    last_ping_at: datetime | None
    last_fail_at: datetime | None
    overdue_since: datetime | None
    overdue_at: datetime | None

    @property
    def overdue(self) -> bool:
        return self.overdue_since is not None

    def to_json(self) -> dict[str, Any]:
        from jobctl.timeparse import isoformat_utc

        return {
            "id": self.id,
            "name": self.name,
            "every_s": self.every_s,
            "grace_s": self.grace_s,
            "on_overdue": self.on_overdue,
            "created_at": isoformat_utc(self.created_at),
            "updated_at": isoformat_utc(self.updated_at),
            "last_ping_at": isoformat_utc(self.last_ping_at),
            "last_fail_at": isoformat_utc(self.last_fail_at),
            "overdue": self.overdue,
            "overdue_since": isoformat_utc(self.overdue_since),
            "overdue_at": isoformat_utc(self.overdue_at),
        }


# --- the audit trail (`jobctl audit`, jobctl.store.audit) ----------------------------------------


@record
class AuditEntry:
    """One row of the audit trail: who (`role`: the PostgreSQL session's role, or on SQLite the
    Unix user) did what (`action`, e.g. job.cancel, queue.pause, schedule.edit, worker.stop,
    retention.prune) to which `kind` of thing (`target`: its id or name), whose it was
    (`owner`: a job's or schedule's submitted_by), when (the database's time) and what changed
    (`changes`: column → [old, new]; a retention run's counts)."""

    id: int
    at: datetime
    role: str
    action: str
    kind: str
    target: str | None
    owner: str | None
    changes: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        from jobctl.timeparse import isoformat_utc

        return {"id": self.id, "at": isoformat_utc(self.at), "role": self.role,
                "action": self.action, "kind": self.kind, "target": self.target,
                "owner": self.owner, "changes": dict(self.changes)}


# --- job arrays (`job submit --array`) ---------------------------------------------------------

# The most tasks one array may have (a bigger one is refused, nothing submitted): 100,000 is one
# bulk insert of a few seconds; beyond, submit several arrays.
MAX_ARRAY_SIZE = 100_000
# The highest index a task may have (a 32-bit column).
MAX_ARRAY_INDEX = 2**31 - 1
# The limit key an array's tasks hold when it has a throttle (`%N`): `array:ID` = N, enforced by
# the gated claim like any `--limit` (jobctl.capacity).
ARRAY_LIMIT_PREFIX = "array:"


def array_limit_key(array_id: int) -> str:
    return f"{ARRAY_LIMIT_PREFIX}{array_id}"


@record
class ArrayStatus:
    """An array and how its tasks stand (`job wait --array`)."""

    id: int
    size: int
    throttle: int | None
    created_at: datetime
    counts: dict[str, int]  # tasks by state (only states some task is in)
    # The task of the lowest index that ended without succeeding, if any: (index, job id, exit
    # code as jobctl.client.job_exit_code gives it).
    first_failed: tuple[int, int, int] | None = None

    @property
    def finished(self) -> bool:
        return all(JobState(state).is_final for state, count in self.counts.items() if count)
