"""The hot path: claim jobs, record their output and results, renew leases, rescue the lost.

Per-job database work decides jobctl's throughput, so every function here works on a batch and
costs one round trip on PostgreSQL, whatever the batch's size. Every state change is conditional
on the state it expects (`state = 'running' AND worker_id = :me AND attempt = :n`): a worker that
lost its lease can never overwrite what the rescuer or another worker did since.

An `attempts` row is written when an attempt ends (one insert, no lookup); the attempt that is
running now is described by the job's own row (started_at, worker_id).

The statements are the backend's (`conn.backend.sql_queue`: jobctl.store.postgres.queue and
jobctl.store.sqlite.queue, declared by `QueueSQL` below); where the algorithm differs (the turn
and the rescue: one statement on PostgreSQL, steps on SQLite) each backend has a function of the
same name. What follows from their results is written here, once.

Written against `store.direct.Conn` (the driver, no SQLAlchemy): a worker never imports
SQLAlchemy. The worker calls them in `DirectDatabase.turn()`s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import field, replace
from typing import Any, Protocol

from jobctl import policy
from jobctl.capacity import gpu_list
from jobctl.models import (
    DEFAULT_MAX_LOST,
    UNFINISHED_STATES,
    Delivery,
    JobState,
    WorkerState,
    sql_states,
)
from jobctl.record import record
from jobctl.store import capacity, deps, notify
from jobctl.store.capacity import Gate
from jobctl.store.direct import Conn
from jobctl.store.reads import exit_codes
from jobctl.store.workers import LIVE_WORKER


@record
class ClaimedJob:
    """What a worker needs to run one attempt of a job."""

    id: int
    attempt: int
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    timeout_s: float | None
    max_attempts: int
    backoff_s: float
    delivery: Delivery
    queue: str
    losses: int = 0  # workers lost under it so far (not retries: see DEFAULT_MAX_LOST)
    max_lost: int = DEFAULT_MAX_LOST
    input: bytes | None = None  # standard input; None: /dev/null
    user: str | None = None  # the Unix user to run it as; None: the worker's own
    # Claimed into the read-ahead buffer: its command has not started, and the database knows it
    # (`jobs.in_buffer`) until the worker says it started (`complete_and_claim`'s `started`).
    in_buffer: bool = False
    # Whether other jobs waited on it when it was claimed: its completion must settle them.
    has_dependents: bool = True
    gpus: tuple[int, ...] = ()  # the GPU indices of its machine it holds (CUDA_VISIBLE_DEVICES)
    gated: bool = False  # claimed by the gated claim (capacity control)
    # A follower (jobctl.capacity.follow): it starts only once this job of the same worker ended.
    after: int | None = None
    # What it asked for (`--cpus`, `--mem`): enforced in its cgroup where the worker has them.
    cpus: float | None = None
    mem_bytes: int | None = None
    # A hook (jobctl.models.HOOK_STATES): the job whose end started it. The worker gives it that
    # job's status document on standard input and its output in $JOBCTL_HOOK_OUTPUT.
    hook_of: int | None = None
    hook_output: bytes | None = None  # that output (the worker reads it before the start)
    # A task of an array: its id and index (JOBCTL_ARRAY_ID, JOBCTL_ARRAY_INDEX).
    array_id: int | None = None
    array_index: int | None = None
    # Which exit codes retry (jobctl.policy.should_retry); None: any failure does.
    retry_on_exit: tuple[int, ...] | None = None
    no_retry_on_exit: tuple[int, ...] | None = None
    # Secrets to resolve on this worker at the start (jobctl.secret_env): NAME → reference.
    secret_env: dict[str, str] = field(default_factory=dict)
    # Who submitted it (jobctl.store.identity): a worker with --run-as-submitter runs it as
    # that one's Unix user (jobctl.runas); None: not recorded.
    submitted_by: str | None = None


@record
class Outcome:
    """How one attempt ended, as the worker reports it."""

    job_id: int
    attempt: int
    state: JobState  # succeeded | failed | cancelled | lost, or queued for a retry
    # What the attempts row records: succeeded | failed | cancelled | lost (the worker lost the
    # job: it costs no retry and counts in `losses`) | released (never started: no retry).
    attempt_outcome: str
    exit_code: int | None
    signal: int | None
    error: str | None
    retry_delay_s: float = 0.0
    has_dependents: bool = True  # from ClaimedJob: settle its dependents in the same statement
    # What the attempt's processes used (jobctl.accounting; None: not known), for the attempts
    # row: CPU seconds, the peak memory of its tree, whether the kernel killed it for memory.
    cpu_user_s: float | None = None
    cpu_system_s: float | None = None
    max_rss_bytes: int | None = None
    oom_killed: bool | None = None


@record
class OutputChunk:
    job_id: int
    attempt: int
    stream: str
    seq: int
    data: bytes


# --- claim ------------------------------------------------------------------------------------


@record
class Claim:
    """What a worker asks of one claim."""

    queues: Sequence[str]
    limit: int  # at most this many jobs
    lease_s: float
    # The first `start_now` (in claim order; None: all) start at once in free slots; the rest go
    # to the read-ahead buffer, marked `in_buffer`. At-most-once jobs are never claimed into the
    # buffer: a job that must not run twice is known to have started before a worker can lose it.
    start_now: int | None = None
    user: str | None = None  # the worker's Unix user
    any_user: bool = False  # the worker runs as root: it can run a job as any user
    # What the worker offers for gated jobs (resources, tags); None: no gated claim at all.
    gate: Gate | None = None
    slots: int = 1  # the worker's concurrency

    def params(self) -> dict[str, Any]:
        limit = max(0, self.limit)
        start_now = limit if self.start_now is None else self.start_now
        return {"limit": limit, "start_now": start_now, "lease_s": self.lease_s,
                "user": self.user, "any_user": self.any_user}


NO_CLAIM = Claim(queues=(), limit=0, lease_s=0.0)


def named_rows(cursor: Any) -> list[dict[str, Any]]:
    """A cursor's rows as {column name: value} (either driver's cursor.description)."""
    rows = cursor.fetchall()  # first: in psycopg's pipeline mode the description comes with it
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in rows]


def claimed_job(conn: Conn, row: Mapping[str, Any]) -> ClaimedJob:
    """A ClaimedJob from a row of the backend's CLAIMED_JOB columns, by name."""
    input_ = row["input"]
    return ClaimedJob(
        id=row["id"],
        attempt=row["attempt"],
        argv=list(conn.json(row["argv"])),
        env=dict(conn.json(row["env"]) or {}),
        cwd=row["cwd"],
        timeout_s=row["timeout_s"],
        max_attempts=row["max_attempts"],
        backoff_s=row["backoff_s"],
        delivery=Delivery(row["delivery"]),
        queue=row["queue"],
        losses=row["losses"],
        max_lost=row["max_lost"],
        input=bytes(input_) if input_ is not None else None,
        user=row["run_as"],
        in_buffer=bool(row["in_buffer"]),
        has_dependents=bool(row["has_dependents"]),
        gpus=tuple(gpu_list(row["gpu_indices"])),
        gated=bool(row["gated"]),
        after=row["after_id"] if row["in_buffer"] else None,
        cpus=row["cpus"],
        mem_bytes=row["mem_bytes"],
        hook_of=row["hook_of"],
        array_id=row["array_id"],
        array_index=row["array_index"],
        retry_on_exit=exit_codes(conn, row["retry_on_exit"]),
        no_retry_on_exit=exit_codes(conn, row["no_retry_on_exit"]),
        secret_env=dict(conn.json(row["secret_env"]) or {}),
        submitted_by=row["submitted_by"],
    )


def claim(conn: Conn, worker_id: int, claim: Claim) -> list[ClaimedJob]:
    """Start up to `claim.limit` due jobs of its queues, highest priority first, then oldest."""
    if claim.limit <= 0:
        return []
    return complete_and_claim(conn, worker_id, [], claim)[1]


def _in_start_order(jobs: list[ClaimedJob]) -> list[ClaimedJob]:
    """The jobs to start at once first, then the read-ahead ones; each by id, except that a
    follower comes after the job it follows (the worker holds them in this order, and a
    follower held before the job it follows would find nothing to wait for)."""
    pending = sorted(jobs, key=lambda job: (job.in_buffer, job.id))
    claimed = {job.id for job in jobs}
    ordered: list[ClaimedJob] = []
    placed: set[int] = set()
    while pending:
        later = [job for job in pending if job.after in claimed and job.after not in placed]
        now = [job for job in pending if job not in later]
        if not now:  # a cycle cannot be claimed; keep every job all the same
            now, later = later, []
        ordered += now
        placed.update(job.id for job in now)
        pending = later
    return ordered


# --- output -----------------------------------------------------------------------------------


def write_output(conn: Conn, chunks: Sequence[OutputChunk]) -> None:
    """Append output chunks (one batch: the driver's executemany). Chunks of a job whose lease
    is gone still land: they are that attempt's real output. Two cases cannot land: a stalled
    worker's job that had just left its read-ahead buffer, rescued as never started and claimed
    again under the same attempt number, and a job that is no longer there at all (its row
    lost with the unreplicated writes of a primary that failed over to an asynchronous
    standby); those chunks are dropped, not a failed turn (nor a dead worker)."""
    if not chunks:
        return
    conn.executemany(conn.backend.sql_queue.INSERT_OUTPUT, [
        {"job_id": c.job_id, "attempt": c.attempt, "stream": c.stream, "seq": c.seq,
         "data": c.data}
        for c in chunks
    ])


# --- complete and claim -----------------------------------------------------------------------


def complete(conn: Conn, worker_id: int, outcomes: Sequence[Outcome]) -> set[int]:
    """Record how attempts ended. Returns the ids whose results were applied; the others had
    lost their lease (the rescuer or a cancel got there first) and were left alone."""
    if not outcomes:
        return set()
    return complete_and_claim(conn, worker_id, outcomes, NO_CLAIM)[0]


@record
class Turn:
    """What a backend's `complete_and_claim` did."""

    applied: set[int]  # the ids whose results were recorded
    claimed: list[dict[str, Any]]  # the jobs claimed: rows of the backend's CLAIMED_JOB
    # It queued dependents of the jobs it ended that it could not claim itself (PostgreSQL: one
    # statement sees one snapshot).
    released: bool
    # Jobs it ended that it did not settle the dependents of: someone started waiting on them
    # after they were claimed (PostgreSQL's turn without settling, see `has_dependents`).
    late: Sequence[int] = ()
    # Gated jobs (or jobs of capped queues) wait in the claim's queues: run the gated claim.
    gated_waiting: bool = False


def complete_and_claim(
    conn: Conn,
    worker_id: int,
    outcomes: Sequence[Outcome],
    claim_: Claim,
    started: Sequence[int] = (),
) -> tuple[set[int], list[ClaimedJob]]:
    """The worker's turn: mark `started` (jobs started from the read-ahead buffer), record
    `outcomes` and settle their dependents, then claim (`claim_`); on PostgreSQL in one
    autocommitted statement, on SQLite in steps in the caller's transaction. Returns (ids whose
    results were applied, jobs claimed: those to start at once first)."""
    ending = {outcome.job_id for outcome in outcomes}
    started = [job_id for job_id in started if job_id not in ending]
    if not outcomes and claim_.limit <= 0 and not started:
        return set(), []
    turn = conn.backend.sql_queue.complete_and_claim(conn, worker_id, outcomes, claim_, started)
    rows = turn.claimed
    free_now = claim_.params()["start_now"] - sum(not row["in_buffer"] for row in rows)
    # Followers of running gated jobs fill what the claim allows beyond the free slots (the
    # worker's read-ahead room, which it gives only while short jobs are in a backlog).
    follow = max(0, claim_.limit - len(rows) - max(0, free_now))
    # With no slot free, a gated claim (a transaction of its own) only once there is room
    # for a follower per slot: fewer, larger claims.
    if (turn.gated_waiting and claim_.gate is not None
            and (free_now > 0 or follow >= max(1, claim_.slots))):
        rows = [*rows, *capacity.claim_gated(
            conn, worker_id, claim_.queues, free_now, claim_.lease_s, claim_.gate,
            claim_.user, claim_.any_user, follow)]
    claimed = _in_start_order([claimed_job(conn, row) for row in rows])
    released = turn.released
    if turn.late:  # in their own statement, straight after (PostgreSQL's turn autocommits)
        released = bool(deps.settle(conn, turn.late).released) or released
    if released and len(claimed) < claim_.limit:
        # The statement could not claim the dependents it released (one snapshot): claim again
        # now, rather than on the notification, so a chain goes on without a turn's delay and
        # a burst worker does not mistake them for an empty queue.
        free = max(0, claim_.params()["start_now"] - sum(not job.in_buffer for job in claimed))
        more = replace(claim_, limit=claim_.limit - len(claimed), start_now=free)
        claimed = _in_start_order(claimed + complete_and_claim(conn, worker_id, [], more)[1])
    return turn.applied, claimed


def release(conn: Conn, worker_id: int, jobs: Sequence[tuple[int, int]]) -> None:
    """Put claimed jobs that never started back in the queue, their attempt not counted."""
    sql = conn.backend.sql_queue
    queues: set[str] = set()
    for job_id, attempt in jobs:
        row = conn.execute(
            sql.RELEASE, {"id": job_id, "attempt": attempt, "worker_id": worker_id}).fetchone()
        if row is not None:
            queues.add(row[0])
    for name in sorted(queues):
        notify.job_submitted(conn, name)


# --- leases and heartbeats --------------------------------------------------------------------


@record
class Renewal:
    held: set[int]  # jobs whose lease we still hold (and just extended)
    cancel: set[int]  # of those, the ones somebody asked to cancel
    worker_state: WorkerState | None  # None: our worker row is gone


def renew(conn: Conn, worker_id: int, job_ids: Sequence[int], lease_s: float,
          draining: bool = False) -> Renewal:
    """Heartbeat and extend the leases of `job_ids`; learn which are lost or to be cancelled.
    `draining`: this worker is shutting down (a lost one comes back draining, not running)."""
    sql = conn.backend.sql_queue
    held: set[int] = set()
    cancel: set[int] = set()
    if job_ids:
        rows = conn.execute(sql.RENEW, {"ids": conn.ids_param(job_ids), "worker_id": worker_id,
                                        "lease_s": lease_s}).fetchall()
        held = {row[0] for row in rows}
        cancel = {row[0] for row in rows if row[1]}
    state = conn.scalar(sql.HEARTBEAT, {"worker_id": worker_id, "draining": draining})
    return Renewal(held, cancel, WorkerState(state) if state else None)


def cancel_requests(conn: Conn, worker_id: int, job_ids: Sequence[int]) -> set[int]:
    """Which of this worker's running jobs somebody asked to cancel (by primary key)."""
    if not job_ids:
        return set()
    rows = conn.execute(conn.backend.sql_queue.CANCEL_REQUESTS,
                        {"ids": conn.ids_param(job_ids), "worker_id": worker_id})
    return {row[0] for row in rows}


# --- rescue -----------------------------------------------------------------------------------


@record
class Rescued:
    requeued: list[int]
    ended: dict[int, JobState]  # lost, failed or cancelled


def rescue(conn: Conn) -> Rescued:
    """Take back the jobs of expired leases. Idempotent; any worker or scheduler may call it."""
    # Rows: (id, new state, queue); 'requeue' is a job that never started.
    rows = conn.backend.sql_queue.rescue(conn)
    again = ("queued", "requeue")
    requeued = [id_ for id_, state, _ in rows if state in again]
    ended = {id_: JobState(state) for id_, state, _ in rows if state not in again}
    for queue_name in sorted({queue_name for _, state, queue_name in rows if state in again}):
        notify.job_submitted(conn, queue_name)
    if ended:
        notify.jobs_done(conn, sorted(ended))
        settled = deps.settle(conn, {job_id: state.value for job_id, state in ended.items()})
        ended.update(settled.ended)
    # The backstop for dependents that two concurrent completions both left waiting (deps.py).
    ended.update(deps.sweep(conn).ended)
    return Rescued(requeued, ended)


def mark_lost_workers(conn: Conn, lease_s: float) -> int:
    """Mark the workers whose heartbeat is older than a lease lost; how many."""
    cursor = conn.execute(conn.backend.sql_queue.MARK_LOST_WORKERS, {"lease_s": lease_s})
    return int(cursor.rowcount or 0)


# --- burst workers ------------------------------------------------------------------------------


def burst_backlog(conn: Conn, claim_: Claim) -> policy.Backlog:
    """What is left in `claim_.queues` for a burst worker to wait for (see policy)."""
    sql = conn.backend.sql_queue
    params = {"queues": sql.queues_param(claim_.queues), **claim_.params()}
    [counts] = named_rows(conn.execute(sql.BURST_COUNTS, params))
    due, running = counts["due"], counts["running"]
    if not due and not running and claim_.gate is not None:
        # Gated jobs this worker could run with everything it has free (a held key, a full
        # queue or a busy GPU elsewhere shows as `running`).
        due = capacity.gated_due(conn, claim_.queues, claim_.gate, claim_.user,
                                 claim_.any_user)
    if due or running:
        return policy.Backlog(due=due, running=running)
    retry_in = None
    if counts["next_retry"] is not None:
        retry_in = max(0.0, (conn.time_not_null(counts["next_retry"])
                             - conn.time_not_null(counts["now"])).total_seconds())
    served = set(claim_.queues)
    for (queues,) in conn.execute(sql.LIVE_WORKER_QUEUES).fetchall():
        served.update(conn.json(queues))
    not_mine = {
        job_id: f"runs as user {user!r}, which this worker cannot become"
        for job_id, user in conn.execute(sql.NOT_MINE, params).fetchall()}
    waiting_ids: tuple[int, ...] = ()
    jobs: dict[int, policy.Unfinished] = {}
    if counts["waiting"]:
        rows = conn.execute(sql.WAITING, params).fetchall()
        waiting_ids = tuple(row[0] for row in rows)
        # Walk the dependencies that have not ended, waiting ones level by level.
        pending = {job_id: policy.Unfinished("waiting", queue_name) for job_id, queue_name in rows}
        while pending:
            jobs.update(pending)
            open_deps: dict[int, list[int]] = {}
            found: dict[int, policy.Unfinished] = {}
            for job_id, dep, state, queue_name in conn.execute(
                    sql.OPEN_DEPS, {"ids": conn.ids_param(list(pending))}).fetchall():
                open_deps.setdefault(job_id, []).append(dep)
                if state is not None and dep not in jobs:
                    found[dep] = policy.Unfinished(state, queue_name)
            for job_id, deps_ in open_deps.items():
                jobs[job_id] = replace(jobs[job_id], deps=tuple(deps_))
            jobs.update({job_id: job for job_id, job in found.items() if job.state != "waiting"})
            pending = {job_id: job for job_id, job in found.items() if job.state == "waiting"}
    return policy.Backlog(retry_in_s=retry_in, waiting=waiting_ids, jobs=jobs,
                          served=frozenset(served), not_mine=not_mine)


# --- SQL both backends share -------------------------------------------------------------------
# SQL text that both backends run exactly as it is (no parameter, nothing dialect-specific) lives
# here, once, named for what it means; each backend's statement (jobctl.store.<backend>.queue)
# composes it at import. Where the backends' statements differ only in named fragments of their
# own (the database's time, the test of a job's queue or id against a list, the parameters of
# who may run a job), the shape is a function here that each backend calls with its fragments;
# the statement stays a named constant in the backend's module. Never a rewriting of parameters.

# A queue the hot path leaves to the gated claim (jobctl.store.capacity): paused, capped or
# rate-limited (`c`: its row of `queues`).
GATED_QUEUE = "(c.paused OR c.max_running IS NOT NULL OR c.rate_count IS NOT NULL)"

# A job claimed into a worker's read-ahead buffer whose command never started (no output from
# this attempt either: the worker writes the start before any output): it goes back as if
# never claimed, whatever its delivery, uncharged.
NEVER_STARTED = """(in_buffer AND NOT EXISTS (
    SELECT 1 FROM job_logs l WHERE l.job_id = jobs.id AND l.attempt = jobs.attempt))"""

# What an expired lease makes of a running job (the rescue's `new_state`). Losing a worker is
# not the command's failure: it costs no retry (max_attempts grows with it), but counts in
# `losses`, and a job that has taken `max_lost` workers down fails rather than loop forever.
# At-most-once jobs that may have started become lost: they must never run twice. `requeue`:
# never started (NEVER_STARTED).
RESCUE_STATE = f"""CASE
    WHEN cancel_requested THEN 'cancelled'
    WHEN {NEVER_STARTED} THEN 'requeue'
    WHEN delivery = 'at_most_once' THEN 'lost'
    WHEN losses + 1 < max_lost THEN 'queued'
    ELSE 'failed' END"""

# MARK_LOST_WORKERS without its test of the heartbeat's age (which holds the lease parameter):
# the live workers become lost.
LIVE_WORKERS_LOST = f"UPDATE workers SET state = '{WorkerState.LOST.value}' WHERE {LIVE_WORKER}"

# A heartbeat's new worker state: a worker marked lost is live again, running or, when it says
# it is draining (`draining`: the backend's parameter), draining; the others keep theirs
# (draining: asked to stop). A lost worker that beats never died: its heartbeat did not reach the
# database for longer than a lease (a cut network, a stall); its jobs were rescued meanwhile
# (and fenced by itself), and it goes on taking work (or finishing it, draining), so `worker
# list`, `worker stop`, capacity control and burst workers must count it again.
def back_from_lost(draining: str) -> str:
    return (f"CASE WHEN state = '{WorkerState.LOST.value}' THEN CASE WHEN {draining} "
            f"THEN '{WorkerState.DRAINING.value}' ELSE '{WorkerState.RUNNING.value}' END "
            "ELSE state END")

# The queues the live workers serve (JSON lists): LIVE_WORKER_QUEUES on both backends.
QUEUES_OF_LIVE_WORKERS = f"SELECT queues FROM workers WHERE {LIVE_WORKER}"


def burst_statements(now: str, user_fits: str, in_queues: str) -> tuple[str, str, str]:
    """BURST_COUNTS, NOT_MINE and WAITING, from a backend's database time (`now`), its test that
    the worker may run a job (`user_fits`: :user, :any_user) and its test that a job's queue is
    one of :queues (`in_queues`).

    BURST_COUNTS: jobs due that the worker may run (neither held, nor in a paused queue, nor
    gated: see burst_backlog), jobs running anywhere, the next retry (a
    queued job that ran before and waits out its backoff; one merely submitted for later is not
    waited for), waiting jobs, and the database's time. NOT_MINE: the queued jobs of :queues
    that the worker may not run (another Unix user's). WAITING: the waiting jobs of :queues."""
    counts = f"""
SELECT
    coalesce(sum(CASE WHEN state = 'queued' AND NOT held AND NOT gated AND run_at <= {now}
                      AND {user_fits} AND queue NOT IN (SELECT name FROM queues WHERE paused)
                      THEN 1 ELSE 0 END), 0) AS due,
    coalesce(sum(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0) AS running,
    min(CASE WHEN state = 'queued' AND attempt > 0 AND run_at > {now} AND {user_fits}
             THEN run_at END) AS next_retry,
    coalesce(sum(CASE WHEN state = 'waiting' THEN 1 ELSE 0 END), 0) AS waiting,
    {now} AS now
FROM jobs WHERE {in_queues}
"""
    not_mine = (f"SELECT id, run_as FROM jobs WHERE state = 'queued' AND {in_queues}"
                f" AND NOT {user_fits}")
    waiting = f"SELECT id, queue FROM jobs WHERE state = 'waiting' AND {in_queues}"
    return counts, not_mine, waiting


def open_deps(in_ids: str) -> str:
    """OPEN_DEPS, from a backend's test that `dep.job_id` is one of :ids (`in_ids`): those
    jobs' dependencies that have not ended (a missing dependency: state NULL)."""
    return f"""
SELECT dep.job_id, dep.depends_on, j.state, j.queue
FROM job_deps dep LEFT JOIN jobs j ON j.id = dep.depends_on
WHERE {in_ids}
  AND (j.state IS NULL OR j.state IN ({sql_states(UNFINISHED_STATES)}))
"""


class QueueSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.queue): its statements,
    named and commented, in its driver's own parameter style, and the steps that differ by
    necessity (the turn and the rescue)."""

    CLAIMED_JOB: str  # the columns of a claimed job, as claimed_job reads them by name
    INSERT_OUTPUT: str  # job_id, attempt, stream, seq, data
    RELEASE: str  # id, attempt, worker_id → queue
    RENEW: str  # ids, worker_id, lease_s → id, cancel_requested
    HEARTBEAT: str  # worker_id, draining → state
    CANCEL_REQUESTS: str  # ids, worker_id → id
    MARK_LOST_WORKERS: str  # lease_s
    BURST_COUNTS: str  # queues, user, any_user → due, running, next_retry, waiting, now
    NOT_MINE: str  # queues, user, any_user → id, run_as
    WAITING: str  # queues → id, queue
    OPEN_DEPS: str  # ids → job_id, depends_on, state, queue
    LIVE_WORKER_QUEUES: str  # → queues

    def queues_param(self, queues: Sequence[str]) -> Any:
        """Queue names as one parameter of BURST_COUNTS, NOT_MINE and WAITING."""
        ...

    def complete_and_claim(self, conn: Conn, worker_id: int, outcomes: Sequence[Outcome],
                           claim: Claim, started: Sequence[int]) -> Turn:
        """Mark `started`, record `outcomes`, settle their dependents (all but those it
        reports in Turn.late), claim (see the module function of the same name, which calls it
        and settles the late ones)."""
        ...

    def rescue(self, conn: Conn) -> list[tuple[int, str, str]]:
        """Take back the jobs of expired leases: (id, new state, queue) each, the new state
        `requeue` for one that never started."""
        ...
