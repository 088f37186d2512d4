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
from dataclasses import dataclass
from typing import Any

from jobctl.models import Delivery, JobState, WorkerState
from jobctl.store import deps, notify
from jobctl.store.direct import PG_NOW, SQLITE_NOW, Conn, pg_now_plus
from jobctl.store.direct import sqlite_now_plus as _sqlite_now_plus
from jobctl.store.reads import in_


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
    # Whether other jobs waited on it when it was claimed: its completion must settle them.
    has_dependents: bool = True


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, as the worker reports it."""

    job_id: int
    attempt: int
    state: JobState  # succeeded | failed | cancelled, or queued for a retry
    attempt_outcome: str  # what the attempts row records: succeeded | failed | cancelled
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

_CLAIM_COLUMNS = "id, attempt, argv, env, cwd, timeout_s, max_attempts, backoff_s, delivery, queue"

# SQLite runs this under BEGIN IMMEDIATE: the write lock is ours, so there is nothing to skip.
# One placeholder per queue, not a JSON list: `queue IN (?)` with one queue is an equality, and
# SQLite then reads the claim index in order; with json_each it sorts every queued job first.
@functools.cache
def _sqlite_claim(queue_count: int) -> str:
    queues = ", ".join(f":queue_{index}" for index in range(queue_count))
    return f"""
UPDATE jobs SET
    state = 'running', attempt = attempt + 1, worker_id = :worker_id,
    started_at = {SQLITE_NOW}, finished_at = NULL,
    lease_until = {_sqlite_now_plus(":lease_s")},
    exit_code = NULL, signal = NULL, error = NULL
WHERE id IN (
    SELECT id FROM jobs
    WHERE state = 'queued' AND queue IN ({queues}) AND run_at <= {SQLITE_NOW}
    ORDER BY priority DESC, run_at, id
    LIMIT :limit
)
RETURNING {_CLAIM_COLUMNS}
"""


def claim(
    conn: Conn, worker_id: int, queues: Sequence[str], limit: int, lease_s: float
) -> list[ClaimedJob]:
    """Start up to `limit` due jobs of `queues`, highest priority first, then oldest."""
    if limit <= 0:
        return []
    if conn.is_postgres:
        return complete_and_claim(conn, worker_id, [], queues, limit, lease_s)[1]
    params: dict[str, Any] = {f"queue_{index}": queue for index, queue in enumerate(queues)}
    params.update(worker_id=worker_id, limit=limit, lease_s=lease_s)
    rows = conn.execute(_sqlite_claim(len(queues)), params).fetchall()
    return [_claimed_from_row(conn, row) for row in sorted(rows, key=lambda r: r[0])]


# --- output -----------------------------------------------------------------------------------


def write_output(conn: Conn, chunks: Sequence[OutputChunk]) -> None:
    """Append output chunks (one batch: the driver's executemany). Chunks of a job whose lease
    is gone still land: they are that attempt's real output, and attempts never share a (job,
    attempt) key."""
    if not chunks:
        return
    conn.executemany(
        "INSERT INTO job_logs (job_id, attempt, stream, seq, ts, data)"
        f" VALUES (:job_id, :attempt, :stream, :seq, {conn.now}, :data)",
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
    max_attempts = max_attempts + CASE WHEN :outcome = 'released' THEN 1 ELSE 0 END
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
        return complete_and_claim(conn, worker_id, outcomes, [], 0, 0.0)[0]
    applied = set()
    ended: dict[int, str] = {}
    for o in outcomes:
        params = {
            "worker_id": worker_id, "id": o.job_id, "attempt": o.attempt,
            "state": o.state.value, "outcome": o.attempt_outcome, "exit_code": o.exit_code,
            "signal": o.signal, "error": o.error, "delay": o.retry_delay_s,
        }
        row = conn.execute(SQLITE_COMPLETE_JOB, params).fetchone()
        if row is not None:
            conn.execute(SQLITE_RECORD_ATTEMPT, {**params, "started_at": row[1]})
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
_FINAL_SQL = ", ".join(f"'{state}'" for state in deps.FINAL)
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
    released = ("UNION ALL\nSELECT NULL, id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
                "false\nFROM released") if settle else ""
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
        -- a job released by a worker that shut down under it keeps all its retries
        max_attempts = j.max_attempts + CASE WHEN d.outcome = 'released' THEN 1 ELSE 0 END
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
),
{_PG_SETTLE_DEPENDENTS if settle else ""}
picked AS MATERIALIZED (
    -- Per queue, so the claim index (queue, priority DESC, run_at, id) yields rows already in
    -- order: `queue = ANY(:queues)` would make PostgreSQL read and sort the whole backlog.
    -- SKIP LOCKED: concurrent workers never wait on each other's rows. MATERIALIZED: the planner
    -- must not re-run this per row, which could lock more than :limit.
    SELECT j.id FROM unnest(CAST(:queues AS text[])) AS q(name), LATERAL (
        SELECT id, priority, run_at FROM jobs
        WHERE queue = q.name AND state = 'queued' AND run_at <= now()
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
        exit_code = NULL, signal = NULL, error = NULL
    FROM picked WHERE jobs.id = picked.id
    RETURNING jobs.{_CLAIM_COLUMNS.replace(", ", ", jobs.")},
              EXISTS (SELECT 1 FROM job_deps dep WHERE dep.depends_on = jobs.id)
                AS has_dependents
)
SELECT true AS completed, id, NULL::int AS attempt, NULL::jsonb AS argv, NULL::jsonb AS env,
       NULL AS cwd, NULL::float8 AS timeout_s, NULL::int AS max_attempts,
       NULL::float8 AS backoff_s, NULL AS delivery, NULL AS queue,
       late_dependents AS has_dependents
FROM finished
UNION ALL
SELECT false, id, attempt, argv, env, cwd, timeout_s, max_attempts, backoff_s, delivery, queue,
       has_dependents
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
     queue) = row[:10]
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
        # SQLite's claim does not say; its completion always settles dependents anyway.
        has_dependents=row[10] if len(row) > 10 else True,
    )


def complete_and_claim(
    conn: Conn,
    worker_id: int,
    outcomes: Sequence[Outcome],
    queues: Sequence[str],
    limit: int,
    lease_s: float,
) -> tuple[set[int], list[ClaimedJob]]:
    """`complete` then `claim`: on PostgreSQL in one autocommitted statement; on SQLite the two,
    in the caller's transaction. Returns (ids whose results were applied, jobs claimed)."""
    if not conn.is_postgres:
        applied = complete(conn, worker_id, outcomes) if outcomes else set()
        return applied, claim(conn, worker_id, queues, limit, lease_s)
    if not outcomes and limit <= 0:
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
        "queues": list(queues),
        "limit": max(0, limit),
        "lease_s": lease_s,
    }
    settle = any(outcome.has_dependents for outcome in outcomes)
    statement = PG_COMPLETE_AND_CLAIM if settle else PG_COMPLETE_AND_CLAIM_PLAIN
    # Rows: (completed, id, the claim's other columns…, has_dependents); completed is true for
    # an applied result, false for a claimed job, NULL for a released dependent.
    rows = conn.execute(statement, params).fetchall()
    applied = {row[1] for row in rows if row[0]}
    claimed = sorted((_claimed_from_row(conn, row[1:]) for row in rows if row[0] is False),
                     key=lambda job: job.id)
    released = any(row[0] is None for row in rows)
    late = [row[1] for row in rows if row[0] and row[11]]
    if late:
        released = bool(conn.execute(PG_SETTLE, {"ids": late}).fetchall()) or released
    if released and len(claimed) < limit:
        # The statement could not claim the dependents it released (one snapshot): claim again
        # now, rather than on the notification, so a chain goes on without a turn's delay and
        # a burst worker does not mistake them for an empty queue.
        claimed += complete_and_claim(conn, worker_id, [], queues,
                                      limit - len(claimed), lease_s)[1]
    return applied, claimed


RELEASE = """
UPDATE jobs SET state = 'queued', attempt = attempt - 1, started_at = NULL, lease_until = NULL
WHERE id = :id AND attempt = :attempt AND worker_id = :worker_id AND state = 'running'
RETURNING queue
"""


def release(conn: Conn, worker_id: int, jobs: Sequence[tuple[int, int]]) -> None:
    """Put claimed jobs that never started back in the queue, their attempt not counted."""
    queues: set[str] = set()
    for job_id, attempt in jobs:
        row = conn.execute(
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
        rows = conn.execute(
            PG_RENEW if conn.is_postgres else SQLITE_RENEW,
            {"ids": ids, "worker_id": worker_id, "lease_s": lease_s},
        ).fetchall()
        held = {row[0] for row in rows}
        cancel = {row[0] for row in rows if row[1]}
    state = conn.scalar(HEARTBEAT.format(now=conn.now), {"worker_id": worker_id})
    return Renewal(held, cancel, WorkerState(state) if state else None)


def cancel_requests(conn: Conn, worker_id: int, job_ids: Sequence[int]) -> set[int]:
    """Which of this worker's running jobs somebody asked to cancel (by primary key)."""
    if not job_ids:
        return set()
    where, params = in_(conn, "id", list(job_ids), "ids")
    rows = conn.execute(
        f"SELECT id FROM jobs WHERE {where} AND worker_id = :worker_id AND state = 'running'"
        " AND cancel_requested", {**params, "worker_id": worker_id})
    return {row[0] for row in rows}


# --- rescue -----------------------------------------------------------------------------------

_RESCUE_STATE = """CASE
    WHEN cancel_requested THEN 'cancelled'
    WHEN delivery = 'at_most_once' THEN 'lost'
    WHEN attempt < max_attempts THEN 'queued'
    ELSE 'failed' END"""

# A running job whose lease ran out belongs to a worker that crashed, hung or was cut off (and
# that has killed the job itself: see fencing in jobctl/worker). At-least-once jobs go back to the
# queue, at-most-once jobs become lost: they may have run, and must never run again.
PG_RESCUE = f"""
WITH expired AS (
    SELECT id FROM jobs
    WHERE state = 'running' AND lease_until < {PG_NOW}
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE jobs j SET
        state = {_RESCUE_STATE},
        finished_at = CASE WHEN {_RESCUE_STATE} = 'queued' THEN NULL ELSE {PG_NOW} END,
        run_at = CASE WHEN {_RESCUE_STATE} = 'queued' THEN {PG_NOW} ELSE j.run_at END,
        lease_until = NULL,
        error = 'worker ' || coalesce(j.worker_id::text, '?') || ' lost its lease'
    FROM expired e WHERE j.id = e.id AND j.state = 'running'
    RETURNING j.id, j.attempt, j.state, j.queue, j.error, j.worker_id, j.started_at
), recorded AS (
    INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT id, attempt, worker_id, started_at, {PG_NOW}, 'lost', error FROM rescued
)
SELECT id, state, queue FROM rescued
"""

SQLITE_RESCUE = f"""
UPDATE jobs SET
    state = {_RESCUE_STATE},
    finished_at = CASE WHEN {_RESCUE_STATE} = 'queued' THEN NULL ELSE {SQLITE_NOW} END,
    run_at = CASE WHEN {_RESCUE_STATE} = 'queued' THEN {SQLITE_NOW} ELSE run_at END,
    lease_until = NULL,
    error = 'worker ' || coalesce(worker_id, '?') || ' lost its lease'
WHERE state = 'running' AND lease_until < {SQLITE_NOW}
RETURNING id, attempt, state, queue, error, worker_id, started_at
"""

SQLITE_RESCUE_ATTEMPT = f"""
INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error)
VALUES (:id, :attempt, :worker_id, :started_at, {SQLITE_NOW}, 'lost', :error)
"""

# Workers whose heartbeat is older than a lease are gone: nobody renews their jobs either.
MARK_LOST_WORKERS = f"""
UPDATE workers SET state = '{WorkerState.LOST.value}'
WHERE state IN ('{WorkerState.RUNNING.value}', '{WorkerState.DRAINING.value}')
  AND heartbeat_at < {{stale_before}}
"""


@dataclass(frozen=True)
class Rescued:
    requeued: list[int]
    ended: dict[int, JobState]  # lost, failed or cancelled


def rescue(conn: Conn) -> Rescued:
    """Take back the jobs of expired leases. Idempotent; any worker or scheduler may call it."""
    # Rows: (id, state, queue), and on SQLite what the attempts row needs after them.
    if conn.is_postgres:
        rows = conn.execute(PG_RESCUE).fetchall()
    else:
        found = conn.execute(SQLITE_RESCUE).fetchall()
        if found:
            conn.executemany(
                SQLITE_RESCUE_ATTEMPT,
                [{"id": id_, "attempt": attempt, "error": error, "worker_id": worker_id,
                  "started_at": started_at}
                 for id_, attempt, _, _, error, worker_id, started_at in found],
            )
        rows = [(id_, state, queue) for id_, _, state, queue, *_ in found]
    requeued = [id_ for id_, state, _ in rows if state == JobState.QUEUED.value]
    ended = {id_: JobState(state) for id_, state, _ in rows if state != JobState.QUEUED.value}
    for queue in sorted({queue for _, state, queue in rows if state == JobState.QUEUED.value}):
        notify.job_submitted(conn, queue)
    if ended:
        notify.jobs_done(conn, sorted(ended))
        settled = deps.settle(conn, {job_id: state.value for job_id, state in ended.items()})
        ended.update(settled.ended)
    # The backstop for dependents that two concurrent completions both left waiting (deps.py).
    ended.update(deps.sweep(conn).ended)
    return Rescued(requeued, ended)


def mark_lost_workers(conn: Conn, lease_s: float) -> int:
    cursor = conn.execute(MARK_LOST_WORKERS.format(stale_before=conn.now_plus("-(:lease_s)")),
                          {"lease_s": lease_s})
    return int(cursor.rowcount or 0)


def next_retry_due_in(conn: Conn, queues: Sequence[str]) -> float | None:
    """Seconds until the next job of `queues` that waits for a retry is due (0 if one is due
    now), None if none waits."""
    where, params = in_(conn, "queue", list(queues), "queues")
    if conn.is_postgres:
        query = f"SELECT EXTRACT(EPOCH FROM min(run_at) - {PG_NOW}) FROM jobs"
    else:
        query = f"SELECT (julianday(min(run_at)) - julianday({SQLITE_NOW})) * 86400.0 FROM jobs"
    seconds = conn.scalar(f"{query} WHERE state = 'queued' AND attempt > 0 AND {where}", params)
    return None if seconds is None else max(0.0, float(seconds))
