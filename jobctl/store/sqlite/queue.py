"""SQLite: the SQL of jobctl.store.queue (see its QueueSQL protocol), in sqlite3's parameter style
(`:name`).

A worker's turn runs under BEGIN IMMEDIATE (DirectDatabase.turn): the write lock is ours for the
whole turn, so nothing needs skipping or locking row by row, and what PostgreSQL does in one
statement (jobctl.store.postgres.queue) is done here in steps, in one transaction.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jobctl.store import deps
from jobctl.store import queue as shared
from jobctl.store.queue import Turn, named_rows
from jobctl.store.sqlite import NOW, now_plus

if TYPE_CHECKING:
    from jobctl.store.direct import Conn
    from jobctl.store.queue import Claim, Outcome

# --- claim ------------------------------------------------------------------------------------

# What a worker needs to run a claimed job, by name (jobctl.store.queue.claimed_job reads them):
# every statement that claims returns these. Differs by necessity: `has_dependents` is always
# true, since SQLite's completion settles dependents in steps anyway, and a RETURNING clause
# here is better kept to the row itself.
CLAIMED_JOB = """id, attempt, argv, env, cwd, timeout_s, max_attempts, backoff_s, delivery, queue,
    losses, max_lost, input, run_as, in_buffer, gpu_indices, gated, after_id, hook_of, cpus,
    mem_bytes, array_id, array_index, retry_on_exit, no_retry_on_exit, secret_env,
    submitted_by, TRUE AS has_dependents"""

# Which jobs a worker may claim by their Unix user (`job submit --user`): a worker running as
# root can become anyone (any_user); any other only itself (user).
_USER_FITS = "(run_as IS NULL OR :any_user OR run_as = :user)"

# A job's queue is one of :queues. Differs by necessity: the queues are JSON text
# (PostgreSQL: an array).
_IN_QUEUES = "queue IN (SELECT value FROM json_each(:queues))"


def queues_param(queues: Sequence[str]) -> Any:
    """Queue names as one parameter: JSON text, read with json_each."""
    return json.dumps(list(queues))


@functools.cache
def claim_statement(queue_count: int) -> str:
    """Claim up to :limit due jobs of the queues :queue_0 … (one placeholder per queue, not a
    JSON list: `queue IN (?)` with one queue is an equality, and SQLite then reads the claim
    index in order; with json_each it sorts every queued job first). The first :start_now
    start at once, the rest go to the read-ahead buffer (at-most-once jobs never do: left
    queued). Differs by necessity: no SKIP LOCKED, the write lock is ours."""
    queues = ", ".join(f":queue_{index}" for index in range(queue_count))
    return f"""
WITH picked AS (
    SELECT id, delivery,
           row_number() OVER (ORDER BY priority DESC, run_at, id) AS rank
    FROM (SELECT id, delivery, priority, run_at FROM jobs
          WHERE state = 'queued' AND NOT held AND NOT gated AND queue IN ({queues})
            AND run_at <= {NOW} AND {_USER_FITS}
            AND queue NOT IN (SELECT name FROM queues c WHERE {shared.GATED_QUEUE})
          ORDER BY priority DESC, run_at, id
          LIMIT :limit)
)
UPDATE jobs SET
    state = 'running', attempt = attempt + 1, worker_id = :worker_id,
    started_at = {NOW}, finished_at = NULL,
    lease_until = {now_plus(":lease_s")},
    exit_code = NULL, signal = NULL, error = NULL,
    in_buffer = (SELECT rank > :start_now FROM picked WHERE picked.id = jobs.id)
WHERE id IN (SELECT id FROM picked
             WHERE rank <= :start_now OR delivery = 'at_least_once')
RETURNING {CLAIMED_JOB}
"""


# Whether the gated claim has work in :queues (JSON): a gated job due, or a job due in a capped
# queue that is not paused.
GATED_WAITING = f"""SELECT EXISTS (
    SELECT 1 FROM json_each(:queues) AS g
    WHERE NOT EXISTS (SELECT 1 FROM queues c WHERE c.name = g.value AND c.paused)
      AND (EXISTS (SELECT 1 FROM jobs WHERE queue = g.value AND state = 'queued' AND NOT held
                     AND gated AND run_at <= {NOW})
           OR (EXISTS (SELECT 1 FROM queues c WHERE c.name = g.value
                         AND (c.max_running IS NOT NULL OR c.rate_count IS NOT NULL))
               AND EXISTS (SELECT 1 FROM jobs WHERE queue = g.value AND state = 'queued'
                             AND NOT held AND NOT gated AND run_at <= {NOW}))))"""

# The worker started these jobs from its read-ahead buffer: from now on losing the worker may
# cost them (see rescue). Written in the turn after they started.
MARK_STARTED = """
UPDATE jobs SET in_buffer = FALSE
WHERE id IN (SELECT value FROM json_each(:ids)) AND worker_id = :worker_id
  AND state = 'running' AND in_buffer
"""

# --- output -----------------------------------------------------------------------------------

# Append one output chunk (executemany: one batch). A chunk already there (the same attempt, stream
# and seq, written again after a retried turn) is kept as it was; one of a job that is no longer
# there is dropped (as on PostgreSQL, where a failover can lose the job). The WHERE also keeps
# SQLite from reading ON CONFLICT as a join's ON.
INSERT_OUTPUT = f"""
INSERT INTO job_logs (job_id, attempt, stream, seq, ts, data)
SELECT :job_id, :attempt, :stream, :seq, {NOW}, :data
WHERE EXISTS (SELECT 1 FROM jobs WHERE id = :job_id)
ON CONFLICT DO NOTHING
"""

# --- complete ---------------------------------------------------------------------------------

# Record how one attempt ended, if this worker still holds it; its started_at back for the
# attempts row.
COMPLETE_JOB = f"""
UPDATE jobs SET
    state = :state,
    finished_at = CASE WHEN :state = 'queued' THEN NULL ELSE {NOW} END,
    run_at = CASE WHEN :state = 'queued' THEN {now_plus(":delay")} ELSE run_at END,
    lease_until = NULL, exit_code = :exit_code, signal = :signal, error = :error,
    in_buffer = FALSE,
    -- released (never started) and lost (the worker went away) attempts cost no retry
    max_attempts = max_attempts + CASE WHEN :outcome IN ('released', 'lost') THEN 1 ELSE 0 END,
    losses = losses + CASE WHEN :outcome = 'lost' THEN 1 ELSE 0 END
WHERE id = :id AND attempt = :attempt AND worker_id = :worker_id AND state = 'running'
RETURNING id, started_at
"""

# The attempts row of an attempt that ended, with what it used (jobctl.accounting), as the
# worker measured it.
RECORD_ATTEMPT = f"""
INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, exit_code,
                      signal, error, cpu_user_s, cpu_system_s, max_rss_bytes, oom_killed)
VALUES (:id, :attempt, :worker_id, :started_at, {NOW}, :outcome, :exit_code, :signal, :error,
        :cpu_user_s, :cpu_system_s, :max_rss_bytes, :oom_killed)
"""


def complete_and_claim(conn: Conn, worker_id: int, outcomes: Sequence[Outcome], claim: Claim,
                       started: Sequence[int]) -> Turn:
    """The turn in steps, in the caller's transaction: mark the started jobs (MARK_STARTED),
    complete each outcome (COMPLETE_JOB, RECORD_ATTEMPT), settle the dependents of those that
    ended (deps.settle), then claim: the claim sees the dependents just released."""
    if started:
        conn.execute(MARK_STARTED, {"ids": json.dumps(list(started)), "worker_id": worker_id})
    applied: set[int] = set()
    ended: dict[int, str] = {}
    for o in outcomes:
        params = {
            "worker_id": worker_id, "id": o.job_id, "attempt": o.attempt,
            "state": o.state.value, "outcome": o.attempt_outcome, "exit_code": o.exit_code,
            "signal": o.signal, "error": o.error, "delay": o.retry_delay_s,
            "cpu_user_s": o.cpu_user_s, "cpu_system_s": o.cpu_system_s,
            "max_rss_bytes": o.max_rss_bytes, "oom_killed": o.oom_killed,
        }
        row = conn.execute(COMPLETE_JOB, params).fetchone()
        if row is not None:
            conn.execute(RECORD_ATTEMPT, {**params, "started_at": row[1]})
            applied.add(o.job_id)
            if o.state.is_final:
                ended[o.job_id] = o.state.value
    if ended:
        deps.settle(conn, ended)  # the same transaction (see deps.py)
    claimed: list[dict[str, Any]] = []
    if claim.limit > 0:
        params = {f"queue_{index}": name for index, name in enumerate(claim.queues)}
        params.update(claim.params(), worker_id=worker_id)
        claimed = named_rows(conn.execute(claim_statement(len(claim.queues)), params))
    gated_waiting = False
    # Asked whenever the claim came short, free slots or not: with none free, gated jobs may
    # still be read ahead as followers (as PostgreSQL's statement always asks).
    if claim.gate is not None and claim.limit > len(claimed):
        gated_waiting = bool(conn.scalar(GATED_WAITING, {"queues": json.dumps(list(claim.queues))}))
    return Turn(applied=applied, claimed=claimed, released=False, gated_waiting=gated_waiting)


# --- release ----------------------------------------------------------------------------------

# Put a claimed job that never started back in its queue, its attempt not counted; its queue
# back (to wake the workers of that queue).
RELEASE = """
UPDATE jobs SET state = 'queued', attempt = attempt - 1, started_at = NULL, lease_until = NULL,
    in_buffer = FALSE
WHERE id = :id AND attempt = :attempt AND worker_id = :worker_id AND state = 'running'
RETURNING queue
"""

# --- leases and heartbeats --------------------------------------------------------------------

# A job's id is one of :ids. Differs by necessity: the ids are JSON text (PostgreSQL: an array).
_IN_IDS = "id IN (SELECT value FROM json_each(:ids))"

# Extend the leases of this worker's running jobs; which it still holds, and which somebody
# asked to cancel. An expired lease is not ours any more, even before the rescuer has taken the
# job back.
RENEW = f"""
UPDATE jobs SET lease_until = {now_plus(":lease_s")}
WHERE {_IN_IDS} AND worker_id = :worker_id AND state = 'running'
  AND lease_until >= {NOW}
RETURNING id, cancel_requested
"""

# The heartbeat, and the worker's state (draining: asked to stop); no row back: our worker row
# is gone. A worker marked lost (no heartbeat for a lease: cut off, stalled) that beats again
# is back: running, or draining when it says so (jobctl.store.queue.back_from_lost).
HEARTBEAT = f"""UPDATE workers SET heartbeat_at = {NOW},
    state = {shared.back_from_lost(':draining')}
WHERE id = :worker_id RETURNING state"""

# Which of this worker's running jobs somebody asked to cancel.
CANCEL_REQUESTS = f"""
SELECT id FROM jobs WHERE {_IN_IDS} AND worker_id = :worker_id
  AND state = 'running' AND cancel_requested
"""

# --- rescue -----------------------------------------------------------------------------------

# The running jobs whose lease ran out, and what that makes of each (new_state:
# jobctl.store.queue.RESCUE_STATE; `requeue`: never started).
EXPIRED = f"""
SELECT id, {shared.RESCUE_STATE} AS new_state
FROM jobs
WHERE state = 'running' AND lease_until < {NOW}
"""

# Take one expired job back as EXPIRED decided: `requeue` puts it back with its attempt
# uncounted; every other outcome is a lost attempt (RESCUE_ATTEMPT records it).
RESCUE_JOB = f"""
UPDATE jobs SET
    state = CASE WHEN :new_state = 'requeue' THEN 'queued' ELSE :new_state END,
    attempt = attempt - CASE WHEN :new_state = 'requeue' THEN 1 ELSE 0 END,
    losses = losses + CASE WHEN :new_state = 'requeue' THEN 0 ELSE 1 END,
    max_attempts = max_attempts + CASE WHEN :new_state = 'queued' THEN 1 ELSE 0 END,
    finished_at = CASE WHEN :new_state IN ('queued', 'requeue') THEN NULL ELSE {NOW} END,
    run_at = CASE WHEN :new_state = 'queued' THEN {NOW} ELSE run_at END,
    started_at = CASE WHEN :new_state = 'requeue' THEN NULL ELSE started_at END,
    worker_id = CASE WHEN :new_state = 'requeue' THEN NULL ELSE worker_id END,
    lease_until = NULL, in_buffer = FALSE,
    error = CASE WHEN :new_state = 'requeue' THEN error ELSE
        'worker ' || coalesce(CAST(worker_id AS text), '?') || ' lost its lease'
        || CASE WHEN :new_state = 'failed'
                THEN ' (' || (losses + 1) || ' workers lost under it, the most allowed)'
                ELSE '' END END
WHERE id = :id AND state = 'running' AND lease_until < {NOW}
RETURNING id, attempt, queue, error, worker_id, started_at
"""

# The attempts row of a lost attempt.
RESCUE_ATTEMPT = f"""
INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error)
VALUES (:id, :attempt, :worker_id, :started_at, {NOW}, 'lost', :error)
"""


def rescue(conn: Conn) -> list[tuple[int, str, str]]:
    """Take back the jobs of expired leases in steps under the caller's write transaction
    (nothing else writes meanwhile): decide (EXPIRED), then update and record each
    (RESCUE_JOB, RESCUE_ATTEMPT). Returns (id, new state, queue)."""
    rows: list[tuple[int, str, str]] = []
    for id_, new_state in conn.execute(EXPIRED).fetchall():
        row = conn.execute(RESCUE_JOB, {"id": id_, "new_state": new_state}).fetchone()
        if row is None:
            continue
        _, attempt, queue_name, error, worker_id, started_at = row
        if new_state != "requeue":
            conn.execute(RESCUE_ATTEMPT, {"id": id_, "attempt": attempt, "error": error,
                                          "worker_id": worker_id, "started_at": started_at})
        rows.append((id_, new_state, queue_name))
    return rows


# Workers whose heartbeat is older than a lease are gone: nobody renews their jobs either
# (jobctl.store.queue.LIVE_WORKERS_LOST).
MARK_LOST_WORKERS = (f"{shared.LIVE_WORKERS_LOST}\n"
                     f"  AND heartbeat_at < {now_plus('-(:lease_s)')}")

# --- burst workers ----------------------------------------------------------------------------

# A burst worker's view of its queues when it has nothing to run (see policy.burst_decision):
# jobs due that it may run, jobs running anywhere, the next retry, waiting jobs, and the
# database's time (BURST_COUNTS); the queued jobs of these queues that this worker may not run,
# another Unix user's (NOT_MINE); the waiting jobs of these queues (WAITING). The shapes:
# jobctl.store.queue.burst_statements.
BURST_COUNTS, NOT_MINE, WAITING = shared.burst_statements(NOW, _USER_FITS, _IN_QUEUES)

# The dependencies of some jobs that have not ended (a missing dependency: state NULL).
# Differs by necessity: the ids are JSON text (PostgreSQL: an array).
OPEN_DEPS = shared.open_deps("dep.job_id IN (SELECT value FROM json_each(:ids))")

# The queues the live workers serve (JSON lists): jobctl.store.queue.QUEUES_OF_LIVE_WORKERS.
LIVE_WORKER_QUEUES = shared.QUEUES_OF_LIVE_WORKERS
