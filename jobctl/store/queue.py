"""The hot path: claim jobs, record their output and results, renew leases, rescue the lost.

Per-job database work decides jobctl's throughput, so every function here works on a batch and
costs one round trip on PostgreSQL, whatever the batch's size. Every state change is conditional
on the state it expects (`state = 'running' AND worker_id = :me AND attempt = :n`): a worker that
lost its lease can never overwrite what the rescuer or another worker did since.

An `attempts` row is written when an attempt ends (one insert, no lookup); the attempt that is
running now is described by the job's own row (started_at, worker_id).

Written against `store.direct.Conn` (the driver, no SQLAlchemy): a worker never imports
SQLAlchemy. Callers holding a SQLAlchemy connection (the scheduler's rescue, tests) pass
`Conn.of(connection)`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from jobctl import policy
from jobctl.models import (
    DEFAULT_MAX_LOST,
    FINAL_STATES,
    LIVE_WORKER_STATES,
    Delivery,
    JobState,
    WorkerState,
    sql_states,
)
from jobctl.store import deps, notify
from jobctl.store.direct import Conn
from jobctl.store.postgres import NOW as PG_NOW
from jobctl.store.postgres import now_plus as pg_now_plus
from jobctl.store.reads import in_
from jobctl.store.sqlite import NOW as SQLITE_NOW
from jobctl.store.sqlite import now_plus as _sqlite_now_plus


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class OutputChunk:
    job_id: int
    attempt: int
    stream: str
    seq: int
    data: bytes


# --- claim ------------------------------------------------------------------------------------

_CLAIM_COLUMNS = ("id, attempt, argv, env, cwd, timeout_s, max_attempts, backoff_s, delivery, "
                  "queue, losses, max_lost, input, run_as, in_buffer")
_CLAIM_COLUMN_COUNT = len(_CLAIM_COLUMNS.split(", "))

# Which jobs a worker may claim by their Unix user (`job submit --user`): a worker running as
# root can become anyone (:any_user); any other only itself (:user).
_USER_FITS = "(run_as IS NULL OR :any_user OR run_as = :user)"


@dataclass(frozen=True)
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

    def params(self) -> dict[str, Any]:
        limit = max(0, self.limit)
        start_now = limit if self.start_now is None else self.start_now
        return {"limit": limit, "start_now": start_now, "lease_s": self.lease_s,
                "user": self.user, "any_user": self.any_user}


NO_CLAIM = Claim(queues=(), limit=0, lease_s=0.0)


# SQLite runs this under BEGIN IMMEDIATE: the write lock is ours, so there is nothing to skip.
# One placeholder per queue, not a JSON list: `queue IN (?)` with one queue is an equality, and
# SQLite then reads the claim index in order; with json_each it sorts every queued job first.
@functools.cache
def _sqlite_claim(queue_count: int) -> str:
    queues = ", ".join(f":queue_{index}" for index in range(queue_count))
    return f"""
WITH picked AS (
    SELECT id, delivery,
           row_number() OVER (ORDER BY priority DESC, run_at, id) AS rank
    FROM (SELECT id, delivery, priority, run_at FROM jobs
          WHERE state = 'queued' AND queue IN ({queues}) AND run_at <= {SQLITE_NOW}
            AND {_USER_FITS}
          ORDER BY priority DESC, run_at, id
          LIMIT :limit)
)
UPDATE jobs SET
    state = 'running', attempt = attempt + 1, worker_id = :worker_id,
    started_at = {SQLITE_NOW}, finished_at = NULL,
    lease_until = {_sqlite_now_plus(":lease_s")},
    exit_code = NULL, signal = NULL, error = NULL,
    in_buffer = (SELECT rank > :start_now FROM picked WHERE picked.id = jobs.id)
WHERE id IN (SELECT id FROM picked
             WHERE rank <= :start_now OR delivery = 'at_least_once')
RETURNING {_CLAIM_COLUMNS}
"""


def claim(conn: Conn, worker_id: int, claim: Claim) -> list[ClaimedJob]:
    """Start up to `claim.limit` due jobs of its queues, highest priority first, then oldest."""
    if claim.limit <= 0:
        return []
    if conn.is_postgres:
        return complete_and_claim(conn, worker_id, [], claim)[1]
    params: dict[str, Any] = {f"queue_{index}": q for index, q in enumerate(claim.queues)}
    params.update(claim.params(), worker_id=worker_id)
    rows = conn.legacy_execute(_sqlite_claim(len(claim.queues)), params).fetchall()
    return _in_start_order([_claimed_from_row(conn, row) for row in rows])


def _in_start_order(jobs: list[ClaimedJob]) -> list[ClaimedJob]:
    """The jobs to start at once first, then the read-ahead ones; each by id."""
    return sorted(jobs, key=lambda job: (job.in_buffer, job.id))


# The worker started these jobs from its read-ahead buffer: from now on losing the worker may
# cost them (see rescue). Written in the turn after they started.
SQLITE_MARK_STARTED = """
UPDATE jobs SET in_buffer = FALSE
WHERE id IN (SELECT value FROM json_each(:ids)) AND worker_id = :worker_id
  AND state = 'running' AND in_buffer
"""


# --- output -----------------------------------------------------------------------------------


def write_output(conn: Conn, chunks: Sequence[OutputChunk]) -> None:
    """Append output chunks (one batch: the driver's executemany). Chunks of a job whose lease
    is gone still land: they are that attempt's real output. One case cannot land: a stalled
    worker's job that had just left its read-ahead buffer, rescued as never started and claimed
    again under the same attempt number; those chunks are dropped, not a failed turn."""
    if not chunks:
        return
    conn.legacy_executemany(
        "INSERT INTO job_logs (job_id, attempt, stream, seq, ts, data)"
        f" VALUES (:job_id, :attempt, :stream, :seq, {conn.now}, :data)"
        " ON CONFLICT DO NOTHING",
        [
            {"job_id": c.job_id, "attempt": c.attempt, "stream": c.stream, "seq": c.seq,
             "data": c.data}
            for c in chunks
        ],
    )


# --- complete ---------------------------------------------------------------------------------

SQLITE_COMPLETE_JOB = f"""
UPDATE jobs SET
    state = :state,
    finished_at = CASE WHEN :state = 'queued' THEN NULL ELSE {SQLITE_NOW} END,
    run_at = CASE WHEN :state = 'queued' THEN {_sqlite_now_plus(":delay")} ELSE run_at END,
    lease_until = NULL, exit_code = :exit_code, signal = :signal, error = :error,
    in_buffer = FALSE,
    -- released (never started) and lost (the worker went away) attempts cost no retry
    max_attempts = max_attempts + CASE WHEN :outcome IN ('released', 'lost') THEN 1 ELSE 0 END,
    losses = losses + CASE WHEN :outcome = 'lost' THEN 1 ELSE 0 END
WHERE id = :id AND attempt = :attempt AND worker_id = :worker_id AND state = 'running'
RETURNING id, started_at
"""

SQLITE_RECORD_ATTEMPT = f"""
INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, exit_code,
                      signal, error)
VALUES (:id, :attempt, :worker_id, :started_at, {SQLITE_NOW}, :outcome, :exit_code, :signal,
        :error)
"""


def complete(conn: Conn, worker_id: int, outcomes: Sequence[Outcome]) -> set[int]:
    """Record how attempts ended. Returns the ids whose results were applied; the others had
    lost their lease (the rescuer or a cancel got there first) and were left alone."""
    if not outcomes:
        return set()
    if conn.is_postgres:
        return complete_and_claim(conn, worker_id, outcomes, NO_CLAIM)[0]
    applied = set()
    ended: dict[int, str] = {}
    for o in outcomes:
        params = {
            "worker_id": worker_id, "id": o.job_id, "attempt": o.attempt,
            "state": o.state.value, "outcome": o.attempt_outcome, "exit_code": o.exit_code,
            "signal": o.signal, "error": o.error, "delay": o.retry_delay_s,
        }
        row = conn.legacy_execute(SQLITE_COMPLETE_JOB, params).fetchone()
        if row is not None:
            conn.legacy_execute(SQLITE_RECORD_ATTEMPT, {**params, "started_at": row[1]})
            applied.add(o.job_id)
            if o.state.is_final:
                ended[o.job_id] = o.state.value
    if ended:
        deps.settle(conn, ended)  # the same transaction (see deps.py)
    return applied


# --- complete and claim in one round trip -----------------------------------------------------

# Dependents of the jobs this statement ends (see jobctl/store/deps.py), in the same statement and
# so the same transaction: `doomed` follows `ok` edges from failed, lost and cancelled jobs through
# waiting jobs (recursively), and those end with the root cause's id in their error; `released`
# queues the waiting jobs whose every dependency is now met, reading the new states of this
# statement's jobs from `finished`/`doomed` since all CTEs share one snapshot. A job with no
# dependents costs two index probes on job_deps (depends_on), no more.
_FINAL_SQL = sql_states(FINAL_STATES)
_PG_SETTLE_DEPENDENTS = f"""
ended AS (
    SELECT id, state FROM finished WHERE state IN ({_FINAL_SQL})
), doomed(id, cause, cause_state) AS (
    SELECT dep.job_id, e.id, e.state
    FROM ended e JOIN job_deps dep ON dep.depends_on = e.id AND dep.condition = 'ok'
    JOIN jobs w ON w.id = dep.job_id AND w.state = 'waiting'
    WHERE e.state <> 'succeeded'
  UNION
    SELECT dep.job_id, x.cause, x.cause_state
    FROM doomed x JOIN job_deps dep ON dep.depends_on = x.id AND dep.condition = 'ok'
    JOIN jobs w ON w.id = dep.job_id AND w.state = 'waiting'
), doomed_once AS (
    SELECT DISTINCT ON (id) id, cause, cause_state FROM doomed ORDER BY id, cause
), ended_by_deps AS (
    UPDATE jobs w SET
        state = CASE WHEN x.cause_state = 'cancelled' THEN 'cancelled' ELSE 'failed' END,
        finished_at = {PG_NOW},
        error = 'dependency ' || x.cause || ' ' || x.cause_state
    FROM doomed_once x
    WHERE w.id = x.id AND w.state = 'waiting'
    RETURNING w.id, pg_notify('{notify.DONE_CHANNEL}', '')
), released AS (
    UPDATE jobs w SET state = 'queued', run_at = greatest(w.run_at, {PG_NOW})
    WHERE w.state = 'waiting'
      AND w.id IN (SELECT dep.job_id FROM job_deps dep
                   WHERE dep.depends_on IN (SELECT id FROM ended UNION ALL SELECT id FROM doomed))
      AND w.id NOT IN (SELECT id FROM doomed)
      AND NOT EXISTS (
          SELECT 1 FROM job_deps dep
          LEFT JOIN jobs dj ON dj.id = dep.depends_on
          LEFT JOIN ended e ON e.id = dep.depends_on
          LEFT JOIN doomed_once x ON x.id = dep.depends_on
          WHERE dep.job_id = w.id AND NOT coalesce(
              CASE WHEN x.id IS NOT NULL THEN dep.condition = 'any'
                   WHEN dep.condition = 'ok' THEN coalesce(e.state, dj.state) = 'succeeded'
                   ELSE coalesce(e.state, dj.state) IN
                        ({_FINAL_SQL}) END, false)
      )
    RETURNING w.id, pg_notify('{notify.JOBS_CHANNEL}', w.queue)
),"""

# The worker's main loop does both every turn: finish the attempts that ended, then fill the freed
# slots. On PostgreSQL one statement does it all, autocommitted: one round trip and one commit per
# turn, however many jobs ended. The claim cannot pick a job the same statement re-queues (all
# CTEs see one snapshot), so a failed job is never retried by the statement that failed it.
def _pg_complete_and_claim(settle: bool) -> str:
    """The turn's statement, with or without the CTEs that settle dependents.

    Most jobs have no dependents, and the settling CTEs double the statement's planning time, so
    the worker uses the plain variant when none of the jobs it completes had dependents when it
    claimed them. The plain variant still reports, per job, whether someone started waiting on it
    since (`late_dependents`), and `complete_and_claim` settles those straight after.
    """
    late = "false" if settle else "EXISTS (SELECT 1 FROM job_deps dep WHERE dep.depends_on = j.id)"
    padding = "NULL, " * (_CLAIM_COLUMN_COUNT - 1)
    released = (f"UNION ALL\nSELECT NULL, id, {padding}false\nFROM released") if settle else ""
    return f"""
WITH RECURSIVE done AS (
    SELECT * FROM unnest(
        CAST(:ids AS bigint[]), CAST(:attempts AS int[]), CAST(:states AS text[]),
        CAST(:outcomes AS text[]), CAST(:exit_codes AS int[]), CAST(:signals AS int[]),
        CAST(:errors AS text[]), CAST(:delays AS float8[])
    ) AS d(id, attempt, state, outcome, exit_code, signal, error, delay)
), finished AS (
    UPDATE jobs j SET
        state = d.state,
        finished_at = CASE WHEN d.state = 'queued' THEN NULL ELSE {PG_NOW} END,
        run_at = CASE WHEN d.state = 'queued'
                      THEN {pg_now_plus("d.delay")} ELSE j.run_at END,
        lease_until = NULL, exit_code = d.exit_code, signal = d.signal, error = d.error,
        in_buffer = false,
        -- released (never started) and lost (the worker went away) attempts cost no retry
        max_attempts = j.max_attempts
                       + CASE WHEN d.outcome IN ('released', 'lost') THEN 1 ELSE 0 END,
        losses = j.losses + CASE WHEN d.outcome = 'lost' THEN 1 ELSE 0 END
    FROM done d
    WHERE j.id = d.id AND j.attempt = d.attempt AND j.worker_id = :worker_id
      AND j.state = 'running'
    -- one notification per commit for waiters (identical ones collapse), none for retries
    RETURNING j.id, j.attempt, j.started_at, j.state, {late} AS late_dependents,
              CASE WHEN d.state <> 'queued' THEN pg_notify('{notify.DONE_CHANNEL}', '') END
), recorded AS (
    INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome,
                          exit_code, signal, error)
    SELECT f.id, f.attempt, :worker_id, f.started_at, {PG_NOW}, d.outcome, d.exit_code,
           d.signal, d.error
    FROM finished f JOIN done d ON d.id = f.id
), marked AS (
    -- jobs this worker started from its read-ahead buffer since the last turn (none of them
    -- completes in this statement: the caller leaves those out)
    UPDATE jobs SET in_buffer = false
    WHERE id = ANY(CAST(:started AS bigint[])) AND worker_id = :worker_id
      AND state = 'running' AND in_buffer
),
{_PG_SETTLE_DEPENDENTS if settle else ""}
picked AS MATERIALIZED (
    -- Per queue, so the claim index (queue, priority DESC, run_at, id) yields rows already in
    -- order: `queue = ANY(:queues)` would make PostgreSQL read and sort the whole backlog.
    -- SKIP LOCKED: concurrent workers never wait on each other's rows. MATERIALIZED: the planner
    -- must not re-run this per row, which could lock more than :limit.
    -- `rank` orders the claim: the first :start_now start at once, the rest wait in the
    -- read-ahead buffer (at-most-once jobs never do: locked here, left queued below).
    SELECT j.id, j.delivery,
           row_number() OVER (ORDER BY j.priority DESC, j.run_at, j.id) AS rank
    FROM unnest(CAST(:queues AS text[])) AS q(name), LATERAL (
        SELECT id, priority, run_at, delivery FROM jobs
        WHERE queue = q.name AND state = 'queued' AND run_at <= now()
          AND {_USER_FITS}
        ORDER BY priority DESC, run_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ) AS j
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT :limit
), claimed AS (
    UPDATE jobs SET
        state = 'running', attempt = jobs.attempt + 1, worker_id = :worker_id,
        started_at = {PG_NOW}, finished_at = NULL,
        lease_until = {pg_now_plus(":lease_s")},
        exit_code = NULL, signal = NULL, error = NULL,
        in_buffer = picked.rank > :start_now
    FROM picked WHERE jobs.id = picked.id
      AND (picked.rank <= :start_now OR picked.delivery = 'at_least_once')
    RETURNING jobs.{_CLAIM_COLUMNS.replace(", ", ", jobs.")},
              EXISTS (SELECT 1 FROM job_deps dep WHERE dep.depends_on = jobs.id)
                AS has_dependents
)
SELECT true AS completed, id, NULL::int AS attempt, NULL::jsonb AS argv, NULL::jsonb AS env,
       NULL AS cwd, NULL::float8 AS timeout_s, NULL::int AS max_attempts,
       NULL::float8 AS backoff_s, NULL AS delivery, NULL AS queue, NULL::int AS losses,
       NULL::int AS max_lost, NULL::bytea AS input, NULL AS run_as, NULL::boolean AS in_buffer,
       late_dependents AS has_dependents
FROM finished
UNION ALL
SELECT false, {_CLAIM_COLUMNS}, has_dependents
FROM claimed
{released}
"""


PG_COMPLETE_AND_CLAIM = _pg_complete_and_claim(settle=True)
PG_COMPLETE_AND_CLAIM_PLAIN = _pg_complete_and_claim(settle=False)

# Settle the dependents of jobs that ended (id, state) without completing anything: for a job
# someone started waiting on after the worker claimed it (see `_pg_complete_and_claim`).
PG_SETTLE = f"""
WITH RECURSIVE finished AS (
    SELECT id, state FROM jobs WHERE id = ANY(CAST(:ids AS bigint[]))
),
{_PG_SETTLE_DEPENDENTS.rstrip().rstrip(",")}
SELECT id FROM released
"""


def _claimed_from_row(conn: Conn, row: Sequence[Any]) -> ClaimedJob:
    """A ClaimedJob from the claim's columns (_CLAIM_COLUMNS), then has_dependents if given."""
    (id_, attempt, argv, env, cwd, timeout_s, max_attempts, backoff_s, delivery,
     queue, losses, max_lost, input_, run_as, in_buffer) = row[:_CLAIM_COLUMN_COUNT]
    return ClaimedJob(
        id=id_,
        attempt=attempt,
        argv=list(conn.json(argv)),
        env=dict(conn.json(env) or {}),
        cwd=cwd,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        backoff_s=backoff_s,
        delivery=Delivery(delivery),
        queue=queue,
        losses=losses,
        max_lost=max_lost,
        input=bytes(input_) if input_ is not None else None,
        user=run_as,
        in_buffer=bool(in_buffer),
        # SQLite's claim does not say; its completion always settles dependents anyway.
        has_dependents=(row[_CLAIM_COLUMN_COUNT] if len(row) > _CLAIM_COLUMN_COUNT else True),
    )


def complete_and_claim(
    conn: Conn,
    worker_id: int,
    outcomes: Sequence[Outcome],
    claim_: Claim,
    started: Sequence[int] = (),
) -> tuple[set[int], list[ClaimedJob]]:
    """Mark `started` (jobs started from the read-ahead buffer), `complete` then `claim`: on
    PostgreSQL in one autocommitted statement; on SQLite in the caller's transaction. Returns
    (ids whose results were applied, jobs claimed: those to start at once first)."""
    ending = {outcome.job_id for outcome in outcomes}
    started = [job_id for job_id in started if job_id not in ending]
    if not conn.is_postgres:
        if started:
            conn.legacy_execute(SQLITE_MARK_STARTED,
                         {"ids": json.dumps(started), "worker_id": worker_id})
        applied = complete(conn, worker_id, outcomes) if outcomes else set()
        return applied, claim(conn, worker_id, claim_)
    limit = claim_.limit
    if not outcomes and limit <= 0 and not started:
        return set(), []
    params = {
        "worker_id": worker_id,
        "ids": [o.job_id for o in outcomes],
        "attempts": [o.attempt for o in outcomes],
        "states": [o.state.value for o in outcomes],
        "outcomes": [o.attempt_outcome for o in outcomes],
        "exit_codes": [o.exit_code for o in outcomes],
        "signals": [o.signal for o in outcomes],
        "errors": [o.error for o in outcomes],
        "delays": [o.retry_delay_s for o in outcomes],
        "queues": list(claim_.queues),
        "started": started,
        **claim_.params(),
    }
    settle = any(outcome.has_dependents for outcome in outcomes)
    statement = PG_COMPLETE_AND_CLAIM if settle else PG_COMPLETE_AND_CLAIM_PLAIN
    # Rows: (completed, id, the claim's other columns…, has_dependents); completed is true for
    # an applied result, false for a claimed job, NULL for a released dependent.
    rows = conn.legacy_execute(statement, params).fetchall()
    applied = {row[1] for row in rows if row[0]}
    claimed = _in_start_order([_claimed_from_row(conn, row[1:]) for row in rows
                               if row[0] is False])
    released = any(row[0] is None for row in rows)
    late = [row[1] for row in rows if row[0] and row[1 + _CLAIM_COLUMN_COUNT]]
    if late:
        released = bool(conn.legacy_execute(PG_SETTLE, {"ids": late}).fetchall()) or released
    if released and len(claimed) < limit:
        # The statement could not claim the dependents it released (one snapshot): claim again
        # now, rather than on the notification, so a chain goes on without a turn's delay and
        # a burst worker does not mistake them for an empty queue.
        free = max(0, claim_.params()["start_now"] - sum(not job.in_buffer for job in claimed))
        more = replace(claim_, limit=limit - len(claimed), start_now=free)
        claimed = _in_start_order(claimed + complete_and_claim(conn, worker_id, [], more)[1])
    return applied, claimed


RELEASE = """
UPDATE jobs SET state = 'queued', attempt = attempt - 1, started_at = NULL, lease_until = NULL,
    in_buffer = FALSE
WHERE id = :id AND attempt = :attempt AND worker_id = :worker_id AND state = 'running'
RETURNING queue
"""


def release(conn: Conn, worker_id: int, jobs: Sequence[tuple[int, int]]) -> None:
    """Put claimed jobs that never started back in the queue, their attempt not counted."""
    queues: set[str] = set()
    for job_id, attempt in jobs:
        row = conn.legacy_execute(
            RELEASE, {"id": job_id, "attempt": attempt, "worker_id": worker_id}
        ).fetchone()
        if row is not None:
            queues.add(row[0])
    for name in sorted(queues):
        notify.job_submitted(conn, name)


# --- leases and heartbeats --------------------------------------------------------------------

PG_RENEW = f"""
UPDATE jobs SET lease_until = {pg_now_plus(":lease_s")}
WHERE id = ANY(:ids) AND worker_id = :worker_id AND state = 'running'
  -- an expired lease is not ours any more, even before the rescuer has taken the job back
  AND lease_until >= {PG_NOW}
RETURNING id, cancel_requested
"""

SQLITE_RENEW = f"""
UPDATE jobs SET lease_until = {_sqlite_now_plus(":lease_s")}
WHERE id IN (SELECT value FROM json_each(:ids)) AND worker_id = :worker_id
  AND state = 'running' AND lease_until >= {SQLITE_NOW}
RETURNING id, cancel_requested
"""

# The heartbeat; no row back: our worker row is gone.
HEARTBEAT = "UPDATE workers SET heartbeat_at = {now} WHERE id = :worker_id RETURNING state"


@dataclass(frozen=True)
class Renewal:
    held: set[int]  # jobs whose lease we still hold (and just extended)
    cancel: set[int]  # of those, the ones somebody asked to cancel
    worker_state: WorkerState | None  # None: our worker row is gone


def renew(conn: Conn, worker_id: int, job_ids: Sequence[int], lease_s: float) -> Renewal:
    """Heartbeat and extend the leases of `job_ids`; learn which are lost or to be cancelled."""
    held: set[int] = set()
    cancel: set[int] = set()
    if job_ids:
        ids: Any = list(job_ids) if conn.is_postgres else json.dumps(list(job_ids))
        rows = conn.legacy_execute(
            PG_RENEW if conn.is_postgres else SQLITE_RENEW,
            {"ids": ids, "worker_id": worker_id, "lease_s": lease_s},
        ).fetchall()
        held = {row[0] for row in rows}
        cancel = {row[0] for row in rows if row[1]}
    state = conn.legacy_scalar(HEARTBEAT.format(now=conn.now), {"worker_id": worker_id})
    return Renewal(held, cancel, WorkerState(state) if state else None)


def cancel_requests(conn: Conn, worker_id: int, job_ids: Sequence[int]) -> set[int]:
    """Which of this worker's running jobs somebody asked to cancel (by primary key)."""
    if not job_ids:
        return set()
    where, params = in_(conn, "id", list(job_ids), "ids")
    rows = conn.legacy_execute(
        f"SELECT id FROM jobs WHERE {where} AND worker_id = :worker_id AND state = 'running'"
        " AND cancel_requested", {**params, "worker_id": worker_id})
    return {row[0] for row in rows}


# --- rescue -----------------------------------------------------------------------------------

# A job claimed into a worker's read-ahead buffer whose command never started (no output from
# this attempt either: the worker writes the start before any output): it goes back as if
# never claimed, whatever its delivery, uncharged.
_NEVER_STARTED = """(in_buffer AND NOT EXISTS (
    SELECT 1 FROM job_logs l WHERE l.job_id = jobs.id AND l.attempt = jobs.attempt))"""

# What an expired lease makes of a job. Losing a worker is not the command's failure: it costs
# no retry (max_attempts grows with it), but counts in `losses`, and a job that has taken
# `max_lost` workers down fails rather than loop forever. At-most-once jobs that may have
# started become lost: they must never run twice.
_RESCUE_STATE = f"""CASE
    WHEN cancel_requested THEN 'cancelled'
    WHEN {_NEVER_STARTED} THEN 'requeue'
    WHEN delivery = 'at_most_once' THEN 'lost'
    WHEN losses + 1 < max_lost THEN 'queued'
    ELSE 'failed' END"""

_RESCUE_ERROR = """'worker ' || coalesce(CAST(worker_id AS text), '?') || ' lost its lease'
    || CASE WHEN new_state = 'failed'
            THEN ' (' || (losses + 1) || ' workers lost under it, the most allowed)'
            ELSE '' END"""

# A running job whose lease ran out belongs to a worker that crashed, hung or was cut off (and
# that has killed the job itself: see fencing in jobctl/worker). `requeue` (never started) puts
# it back with its attempt uncounted and no attempts row; every other outcome records a `lost`
# attempt.
PG_RESCUE = f"""
WITH expired AS (
    SELECT id, {_RESCUE_STATE} AS new_state FROM jobs
    WHERE state = 'running' AND lease_until < {PG_NOW}
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE jobs j SET
        state = CASE WHEN e.new_state = 'requeue' THEN 'queued' ELSE e.new_state END,
        attempt = j.attempt - CASE WHEN e.new_state = 'requeue' THEN 1 ELSE 0 END,
        losses = j.losses + CASE WHEN e.new_state = 'requeue' THEN 0 ELSE 1 END,
        max_attempts = j.max_attempts + CASE WHEN e.new_state = 'queued' THEN 1 ELSE 0 END,
        finished_at = CASE WHEN e.new_state IN ('queued', 'requeue') THEN NULL ELSE {PG_NOW} END,
        run_at = CASE WHEN e.new_state = 'queued' THEN {PG_NOW} ELSE j.run_at END,
        started_at = CASE WHEN e.new_state = 'requeue' THEN NULL ELSE j.started_at END,
        worker_id = CASE WHEN e.new_state = 'requeue' THEN NULL ELSE j.worker_id END,
        lease_until = NULL, in_buffer = false,
        error = CASE WHEN e.new_state = 'requeue' THEN j.error ELSE
            {_RESCUE_ERROR.replace("new_state", "e.new_state").replace("worker_id", "j.worker_id")
             .replace("losses", "j.losses")} END
    FROM expired e WHERE j.id = e.id AND j.state = 'running'
    RETURNING j.id, j.attempt, e.new_state, j.queue, j.error, j.worker_id, j.started_at
), recorded AS (
    INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT id, attempt, worker_id, started_at, {PG_NOW}, 'lost', error FROM rescued
    WHERE new_state <> 'requeue'
)
SELECT id, new_state, queue FROM rescued
"""

# SQLite: the same in two steps under the caller's write transaction (nothing else writes
# meanwhile): decide, then update and record.
SQLITE_EXPIRED = f"""
SELECT id, {_RESCUE_STATE} AS new_state FROM jobs
WHERE state = 'running' AND lease_until < {SQLITE_NOW}
"""

SQLITE_RESCUE = f"""
UPDATE jobs SET
    state = CASE WHEN :new_state = 'requeue' THEN 'queued' ELSE :new_state END,
    attempt = attempt - CASE WHEN :new_state = 'requeue' THEN 1 ELSE 0 END,
    losses = losses + CASE WHEN :new_state = 'requeue' THEN 0 ELSE 1 END,
    max_attempts = max_attempts + CASE WHEN :new_state = 'queued' THEN 1 ELSE 0 END,
    finished_at = CASE WHEN :new_state IN ('queued', 'requeue') THEN NULL ELSE {SQLITE_NOW} END,
    run_at = CASE WHEN :new_state = 'queued' THEN {SQLITE_NOW} ELSE run_at END,
    started_at = CASE WHEN :new_state = 'requeue' THEN NULL ELSE started_at END,
    worker_id = CASE WHEN :new_state = 'requeue' THEN NULL ELSE worker_id END,
    lease_until = NULL, in_buffer = FALSE,
    error = CASE WHEN :new_state = 'requeue' THEN error ELSE
        {_RESCUE_ERROR.replace("new_state", ":new_state")} END
WHERE id = :id AND state = 'running' AND lease_until < {SQLITE_NOW}
RETURNING id, attempt, queue, error, worker_id, started_at
"""

SQLITE_RESCUE_ATTEMPT = f"""
INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error)
VALUES (:id, :attempt, :worker_id, :started_at, {SQLITE_NOW}, 'lost', :error)
"""

# Workers whose heartbeat is older than a lease are gone: nobody renews their jobs either.
MARK_LOST_WORKERS = f"""
UPDATE workers SET state = '{WorkerState.LOST.value}'
WHERE state IN ({sql_states(LIVE_WORKER_STATES)})
  AND heartbeat_at < {{stale_before}}
"""


@dataclass(frozen=True)
class Rescued:
    requeued: list[int]
    ended: dict[int, JobState]  # lost, failed or cancelled


def rescue(conn: Conn) -> Rescued:
    """Take back the jobs of expired leases. Idempotent; any worker or scheduler may call it."""
    # Rows: (id, new state, queue); 'requeue' is a job that never started.
    if conn.is_postgres:
        rows = conn.legacy_execute(PG_RESCUE).fetchall()
    else:
        rows = []
        for id_, new_state in conn.legacy_execute(SQLITE_EXPIRED).fetchall():
            row = conn.legacy_execute(SQLITE_RESCUE, {"id": id_, "new_state": new_state}).fetchone()
            if row is None:
                continue
            _, attempt, queue_name, error, worker_id, started_at = row
            if new_state != "requeue":
                conn.legacy_execute(SQLITE_RESCUE_ATTEMPT, {
                    "id": id_, "attempt": attempt, "error": error, "worker_id": worker_id,
                    "started_at": started_at})
            rows.append((id_, new_state, queue_name))
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
    cursor = conn.legacy_execute(
        MARK_LOST_WORKERS.format(stale_before=conn.now_plus("-(:lease_s)")),
                          {"lease_s": lease_s})
    return int(cursor.rowcount or 0)


# --- burst workers ------------------------------------------------------------------------------

# A burst worker's view of its queues when it has nothing to run (see policy.burst_decision):
# jobs due that it may run, jobs running anywhere, the next retry (a queued job that ran before
# and waits out its backoff; one merely submitted for later is not waited for), waiting jobs.
_BURST_COUNTS = """
SELECT
    coalesce(sum(CASE WHEN state = 'queued' AND run_at <= {now} AND {user_fits}
                      THEN 1 ELSE 0 END), 0),
    coalesce(sum(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0),
    min(CASE WHEN state = 'queued' AND attempt > 0 AND run_at > {now} AND {user_fits}
             THEN run_at END),
    coalesce(sum(CASE WHEN state = 'waiting' THEN 1 ELSE 0 END), 0),
    {now}
FROM jobs WHERE {in_queues}
"""

# Queued jobs of these queues that this worker may not run (another Unix user's).
_NOT_MINE = "SELECT id, run_as FROM jobs WHERE state = 'queued' AND {in_queues} AND NOT {user_fits}"

# The dependencies of some jobs that have not ended (a missing dependency: state NULL).
_OPEN_DEPS = """
SELECT dep.job_id, dep.depends_on, j.state, j.queue
FROM job_deps dep LEFT JOIN jobs j ON j.id = dep.depends_on
WHERE {in_jobs} AND (j.state IS NULL OR j.state IN ('queued', 'running', 'waiting'))
"""

_LIVE_WORKER_QUEUES = (
    f"SELECT queues FROM workers WHERE state IN ({sql_states(LIVE_WORKER_STATES)})")


def burst_backlog(conn: Conn, claim_: Claim) -> policy.Backlog:
    """What is left in `claim_.queues` for a burst worker to wait for (see policy)."""
    in_queues, params = in_(conn, "queue", list(claim_.queues), "queues")
    params.update(claim_.params())
    due, running, next_retry, waiting, now = conn.legacy_execute(_BURST_COUNTS.format(
        now=conn.now, user_fits=_USER_FITS, in_queues=in_queues), params).fetchone()
    if due or running:
        return policy.Backlog(due=due, running=running)
    retry_in = None
    if next_retry is not None:
        retry_in = max(0.0, (conn.time_not_null(next_retry)
                             - conn.time_not_null(now)).total_seconds())
    served = set(claim_.queues)
    for (queues,) in conn.legacy_execute(_LIVE_WORKER_QUEUES).fetchall():
        served.update(conn.json(queues))
    not_mine = {
        job_id: f"runs as user {user!r}, which this worker cannot become"
        for job_id, user in conn.legacy_execute(
            _NOT_MINE.format(in_queues=in_queues, user_fits=_USER_FITS), params).fetchall()}
    waiting_ids: tuple[int, ...] = ()
    jobs: dict[int, policy.Unfinished] = {}
    if waiting:
        rows = conn.legacy_execute(
            f"SELECT id, queue FROM jobs WHERE state = 'waiting' AND {in_queues}",
                            params).fetchall()
        waiting_ids = tuple(row[0] for row in rows)
        # Walk the dependencies that have not ended, waiting ones level by level.
        pending = {job_id: policy.Unfinished("waiting", queue_name) for job_id, queue_name in rows}
        while pending:
            jobs.update(pending)
            in_jobs, ids = in_(conn, "dep.job_id", list(pending), "ids")
            open_deps: dict[int, list[int]] = {}
            found: dict[int, policy.Unfinished] = {}
            for job_id, dep, state, queue_name in conn.legacy_execute(
                    _OPEN_DEPS.format(in_jobs=in_jobs), ids).fetchall():
                open_deps.setdefault(job_id, []).append(dep)
                if state is not None and dep not in jobs:
                    found[dep] = policy.Unfinished(state, queue_name)
            for job_id, deps_ in open_deps.items():
                jobs[job_id] = replace(jobs[job_id], deps=tuple(deps_))
            jobs.update({job_id: job for job_id, job in found.items() if job.state != "waiting"})
            pending = {job_id: job for job_id, job in found.items() if job.state == "waiting"}
    return policy.Backlog(retry_in_s=retry_in, waiting=waiting_ids, jobs=jobs,
                          served=frozenset(served), not_mine=not_mine)


class QueueSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.queue): its statements,
    named and commented, in its driver's own parameter style, and any step that differs by
    necessity."""
