"""PostgreSQL: the SQL of jobctl.store.queue (see its QueueSQL protocol), in psycopg's parameter
style (`%(name)s`).

The hot path costs one round trip per turn here: completing, marking read-ahead starts, settling
dependents and claiming are one autocommitted statement (`complete_and_claim`), and the rescue is
one statement too (`rescue`). SQLite does the same in steps (jobctl.store.sqlite.queue).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jobctl.models import (
    FAILING_STATES,
    FINAL_STATES,
    sql_states,
)
from jobctl.store import queue as shared
from jobctl.store.notify import DONE_CHANNEL, JOBS_CHANNEL
from jobctl.store.postgres import NOW, now_plus
from jobctl.store.postgres.deps import SETTLE_CTES
from jobctl.store.queue import Turn, named_rows

if TYPE_CHECKING:
    from jobctl.store.direct import Conn
    from jobctl.store.queue import Claim, Outcome

# --- claim ------------------------------------------------------------------------------------

# What a worker needs to run a claimed job, by name (jobctl.store.queue.claimed_job reads them):
# every statement that claims returns these. `has_dependents`: whether other jobs wait on it now,
# so that its completion takes the statement variant that settles them.
CLAIMED_JOB = """jobs.id, jobs.attempt, jobs.argv, jobs.env, jobs.cwd, jobs.timeout_s,
    jobs.max_attempts, jobs.backoff_s, jobs.delivery, jobs.queue, jobs.losses, jobs.max_lost,
    jobs.input, jobs.run_as, jobs.in_buffer, jobs.gpu_indices, jobs.gated, jobs.after_id,
    jobs.hook_of, jobs.cpus, jobs.mem_bytes,
    jobs.array_id, jobs.array_index, jobs.retry_on_exit, jobs.no_retry_on_exit,
    jobs.secret_env, jobs.submitted_by,
    EXISTS (SELECT 1 FROM job_deps dep WHERE dep.depends_on = jobs.id) AS has_dependents"""

# Which jobs a worker may claim by their Unix user (`job submit --user`): a worker running as
# root can become anyone (any_user); any other only itself (user).
_USER_FITS = "(run_as IS NULL OR %(any_user)s OR run_as = %(user)s)"

# A job's queue is one of :queues. Differs by necessity: the queues are an array (SQLite:
# json_each).
_IN_QUEUES = "queue = ANY(%(queues)s)"


def queues_param(queues: Sequence[str]) -> Any:
    """Queue names as one parameter: a text[]."""
    return list(queues)


# Whether the gated claim has work in :queues: a gated job due (ix_jobs_gated), or a job due in a
# capped queue that is not paused. Two index probes per queue when there is none.
_GATED_WAITING = """EXISTS (
    SELECT 1 FROM unnest(CAST(%(queues)s AS text[])) AS g(name)
    WHERE NOT EXISTS (SELECT 1 FROM queues c WHERE c.name = g.name AND c.paused)
      AND (EXISTS (SELECT 1 FROM jobs WHERE queue = g.name AND state = 'queued' AND NOT held
                     AND gated AND run_at <= now())
           OR (EXISTS (SELECT 1 FROM queues c WHERE c.name = g.name
                         AND (c.max_running IS NOT NULL OR c.rate_count IS NOT NULL))
               AND EXISTS (SELECT 1 FROM jobs WHERE queue = g.name AND state = 'queued'
                             AND NOT held AND NOT gated AND run_at <= now()))))"""

# --- output -----------------------------------------------------------------------------------

# Append one output chunk (executemany: one batch). A chunk already there (the same attempt, stream
# and seq, written again after a retried turn) is kept as it was; one of a job that is no longer
# there (lost in a failover to an asynchronous standby) is dropped.
INSERT_OUTPUT = f"""
INSERT INTO job_logs (job_id, attempt, stream, seq, ts, data)
SELECT %(job_id)s, %(attempt)s, %(stream)s, %(seq)s, {NOW}, %(data)s
WHERE EXISTS (SELECT 1 FROM jobs WHERE id = %(job_id)s)
ON CONFLICT DO NOTHING
"""

# --- complete and claim in one round trip -----------------------------------------------------

# Settling the dependents of the jobs this statement ends, in the same statement and so the same
# transaction: jobctl.store.postgres.deps.SETTLE_CTES, the one answer on PostgreSQL, given as
# `ended` the jobs that `finished` ended (their new states, which the statement's one snapshot
# does not show yet), as `candidate` the jobs waiting on them and as `failing` those of the
# ended that failed, were lost or cancelled (so a job waiting on many costs no look at all its
# dependencies each time one ends). A job with no dependents costs two index probes on job_deps
# (depends_on), no more.
_FINAL = sql_states(FINAL_STATES)
_SETTLE_DEPENDENTS = f"""
ended AS (
    SELECT id, state FROM finished WHERE state IN ({_FINAL})
), candidate(id) AS (
    SELECT dep.job_id FROM ended e JOIN job_deps dep ON dep.depends_on = e.id
    JOIN jobs w ON w.id = dep.job_id AND w.state = 'waiting'
), failing(id, state) AS (
    SELECT id, state FROM ended WHERE state IN ({sql_states(FAILING_STATES)})
), {SETTLE_CTES},"""

# What settling did, as columns of the final SELECT: `released`, whether it queued dependents
# (which this statement cannot claim), waking the workers of each of their queues; and
# `dependents_ended`, how many dependents it ended, waking waiters (identical notifications of one
# transaction collapse into one). Both always evaluated: each is a column of its own.
_SETTLED = f"""
    (SELECT count(pg_notify('{JOBS_CHANNEL}', queue)) FROM released) > 0 AS released,
    (SELECT count(pg_notify('{DONE_CHANNEL}', '')) FROM ended_by_deps) AS dependents_ended"""
_NOT_SETTLED = "false AS released, 0 AS dependents_ended"


def _complete_and_claim(settle: bool) -> str:
    """The turn's statement, with or without the CTEs that settle dependents.

    Most jobs have no dependents, and the settling CTEs double the statement's planning time, so
    the worker uses the plain variant when none of the jobs it completes had dependents when it
    claimed them. The plain variant still reports the jobs someone started waiting on since
    (`late`), which jobctl.store.queue.complete_and_claim settles straight after.

    One row per claimed job (CLAIMED_JOB), or one with those columns NULL when none was claimed;
    every row also says what the turn did besides: `applied` (the ids whose results were
    recorded), `late`, `released` (whether it queued dependents, which the same statement could
    not claim: all CTEs see one snapshot) and `dependents_ended` (see _SETTLED).
    """
    late = "false" if settle else "EXISTS (SELECT 1 FROM job_deps dep WHERE dep.depends_on = j.id)"
    settled = _SETTLED if settle else _NOT_SETTLED
    return f"""
WITH RECURSIVE done AS (
    SELECT * FROM unnest(
        CAST(%(ids)s AS bigint[]), CAST(%(attempts)s AS int[]), CAST(%(states)s AS text[]),
        CAST(%(outcomes)s AS text[]), CAST(%(exit_codes)s AS int[]), CAST(%(signals)s AS int[]),
        CAST(%(errors)s AS text[]), CAST(%(delays)s AS float8[]),
        CAST(%(cpu_user_s)s AS float8[]), CAST(%(cpu_system_s)s AS float8[]),
        CAST(%(max_rss_bytes)s AS bigint[]), CAST(%(oom_killed)s AS boolean[])
    ) AS d(id, attempt, state, outcome, exit_code, signal, error, delay, cpu_user_s,
           cpu_system_s, max_rss_bytes, oom_killed)
), finished AS (
    UPDATE jobs j SET
        state = d.state,
        finished_at = CASE WHEN d.state = 'queued' THEN NULL ELSE {NOW} END,
        run_at = CASE WHEN d.state = 'queued' THEN {now_plus("d.delay")} ELSE j.run_at END,
        lease_until = NULL, exit_code = d.exit_code, signal = d.signal, error = d.error,
        in_buffer = false,
        -- released (never started) and lost (the worker went away) attempts cost no retry
        max_attempts = j.max_attempts
                       + CASE WHEN d.outcome IN ('released', 'lost') THEN 1 ELSE 0 END,
        losses = j.losses + CASE WHEN d.outcome = 'lost' THEN 1 ELSE 0 END
    FROM done d
    WHERE j.id = d.id AND j.attempt = d.attempt AND j.worker_id = %(worker_id)s
      AND j.state = 'running'
    -- one notification per commit for waiters (identical ones collapse), none for retries
    RETURNING j.id, j.attempt, j.started_at, j.state, {late} AS late_dependents,
              CASE WHEN d.state <> 'queued' THEN pg_notify('{DONE_CHANNEL}', '') END,
              -- a gated job's end may let another start: wake the workers of its queue
              CASE WHEN j.gated THEN pg_notify('{JOBS_CHANNEL}', j.queue) END
), recorded AS (
    -- with what the attempt used (jobctl.accounting), as the worker measured it
    INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome,
                          exit_code, signal, error, cpu_user_s, cpu_system_s, max_rss_bytes,
                          oom_killed)
    SELECT f.id, f.attempt, %(worker_id)s, f.started_at, {NOW}, d.outcome, d.exit_code,
           d.signal, d.error, d.cpu_user_s, d.cpu_system_s, d.max_rss_bytes, d.oom_killed
    FROM finished f JOIN done d ON d.id = f.id
), marked AS (
    -- jobs this worker started from its read-ahead buffer since the last turn (none of them
    -- completes in this statement: the caller leaves those out)
    UPDATE jobs SET in_buffer = false
    WHERE id = ANY(CAST(%(started)s AS bigint[])) AND worker_id = %(worker_id)s
      AND state = 'running' AND in_buffer
),
{_SETTLE_DEPENDENTS if settle else ""}
picked AS MATERIALIZED (
    -- Per queue, so the claim index (queue, priority DESC, run_at, id) yields rows already in
    -- order: `queue = ANY(queues)` would make PostgreSQL read and sort the whole backlog.
    -- SKIP LOCKED: concurrent workers never wait on each other's rows. MATERIALIZED: the planner
    -- must not re-run this per row, which could lock more than the limit.
    -- `rank` orders the claim: the first start_now start at once, the rest wait in the
    -- read-ahead buffer (at-most-once jobs never do: locked here, left queued below).
    SELECT j.id, j.delivery,
           row_number() OVER (ORDER BY j.priority DESC, j.run_at, j.id) AS rank
    FROM unnest(CAST(%(queues)s AS text[])) AS q(name), LATERAL (
        SELECT id, priority, run_at, delivery FROM jobs
        WHERE queue = q.name AND state = 'queued' AND NOT held AND NOT gated
          AND run_at <= now() AND {_USER_FITS}
          AND NOT EXISTS (SELECT 1 FROM queues c WHERE c.name = q.name AND {shared.GATED_QUEUE})
        ORDER BY priority DESC, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS j
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT %(limit)s
), claimed AS (
    UPDATE jobs SET
        state = 'running', attempt = jobs.attempt + 1, worker_id = %(worker_id)s,
        started_at = {NOW}, finished_at = NULL,
        lease_until = {now_plus("%(lease_s)s")},
        exit_code = NULL, signal = NULL, error = NULL,
        in_buffer = picked.rank > %(start_now)s
    FROM picked WHERE jobs.id = picked.id
      AND (picked.rank <= %(start_now)s OR picked.delivery = 'at_least_once')
    RETURNING {CLAIMED_JOB}
)
SELECT turn.*, claimed.*
FROM (SELECT ARRAY(SELECT id FROM finished) AS applied,
             ARRAY(SELECT id FROM finished WHERE late_dependents) AS late,
             {settled}, {_GATED_WAITING} AS gated_waiting) AS turn
LEFT JOIN claimed ON true
"""


# Differs by necessity: arrays (unnest, ANY), SKIP LOCKED, data-modifying CTEs and pg_notify make
# the whole turn one statement; SQLite takes it in steps under its write lock.
COMPLETE_AND_CLAIM = _complete_and_claim(settle=True)
COMPLETE_AND_CLAIM_PLAIN = _complete_and_claim(settle=False)


def complete_and_claim(conn: Conn, worker_id: int, outcomes: Sequence[Outcome], claim: Claim,
                       started: Sequence[int]) -> Turn:
    """The turn in one autocommitted statement (COMPLETE_AND_CLAIM, or its plain variant when no
    completed job had dependents); dependents that came late are the caller's to settle."""
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
        "cpu_user_s": [o.cpu_user_s for o in outcomes],
        "cpu_system_s": [o.cpu_system_s for o in outcomes],
        "max_rss_bytes": [o.max_rss_bytes for o in outcomes],
        "oom_killed": [o.oom_killed for o in outcomes],
        "queues": list(claim.queues),
        "started": list(started),
        **claim.params(),
    }
    settle = any(outcome.has_dependents for outcome in outcomes)
    statement = COMPLETE_AND_CLAIM if settle else COMPLETE_AND_CLAIM_PLAIN
    rows = named_rows(conn.execute(statement, params))
    turn = rows[0]  # the statement always returns a row
    return Turn(applied=set(turn["applied"]),
                claimed=[row for row in rows if row["id"] is not None],
                released=bool(turn["released"]), late=list(turn["late"]),
                gated_waiting=bool(turn["gated_waiting"]))


# --- release ----------------------------------------------------------------------------------

# Put a claimed job that never started back in its queue, its attempt not counted; its queue
# back (to wake the workers of that queue).
RELEASE = """
UPDATE jobs SET state = 'queued', attempt = attempt - 1, started_at = NULL, lease_until = NULL,
    in_buffer = FALSE
WHERE id = %(id)s AND attempt = %(attempt)s AND worker_id = %(worker_id)s AND state = 'running'
RETURNING queue
"""

# --- leases and heartbeats --------------------------------------------------------------------

# A job's id is one of :ids. Differs by necessity: the ids are an array (SQLite: json_each).
_IN_IDS = "id = ANY(%(ids)s)"

# Extend the leases of this worker's running jobs; which it still holds, and which somebody
# asked to cancel. An expired lease is not ours any more, even before the rescuer has taken the
# job back.
RENEW = f"""
UPDATE jobs SET lease_until = {now_plus("%(lease_s)s")}
WHERE {_IN_IDS} AND worker_id = %(worker_id)s AND state = 'running'
  AND lease_until >= {NOW}
RETURNING id, cancel_requested
"""

# The heartbeat, and the worker's state (draining: asked to stop); no row back: our worker row
# is gone. A worker marked lost (no heartbeat for a lease: cut off, stalled) that beats again
# is back: running, or draining when it says so (jobctl.store.queue.back_from_lost).
HEARTBEAT = f"""UPDATE workers SET heartbeat_at = {NOW},
    state = {shared.back_from_lost('%(draining)s')}
WHERE id = %(worker_id)s RETURNING state"""

# Which of this worker's running jobs somebody asked to cancel.
CANCEL_REQUESTS = f"""
SELECT id FROM jobs WHERE {_IN_IDS} AND worker_id = %(worker_id)s
  AND state = 'running' AND cancel_requested
"""

# --- rescue -----------------------------------------------------------------------------------

# A running job whose lease ran out belongs to a worker that crashed, hung or was cut off (and
# that has killed the job itself: see fencing in jobctl/worker). `requeue` (never started) puts
# it back with its attempt uncounted and no attempts row; every other outcome records a `lost`
# attempt (new_state: jobctl.store.queue.RESCUE_STATE). Rows: id, new_state, queue. Differs by
# necessity: SKIP LOCKED and data-modifying CTEs make it one statement that concurrent rescuers
# can run at once; SQLite takes steps.
RESCUE = f"""
WITH expired AS (
    SELECT id, {shared.RESCUE_STATE} AS new_state FROM jobs
    WHERE state = 'running' AND lease_until < {NOW}
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE jobs j SET
        state = CASE WHEN e.new_state = 'requeue' THEN 'queued' ELSE e.new_state END,
        attempt = j.attempt - CASE WHEN e.new_state = 'requeue' THEN 1 ELSE 0 END,
        losses = j.losses + CASE WHEN e.new_state = 'requeue' THEN 0 ELSE 1 END,
        max_attempts = j.max_attempts + CASE WHEN e.new_state = 'queued' THEN 1 ELSE 0 END,
        finished_at = CASE WHEN e.new_state IN ('queued', 'requeue') THEN NULL ELSE {NOW} END,
        run_at = CASE WHEN e.new_state = 'queued' THEN {NOW} ELSE j.run_at END,
        started_at = CASE WHEN e.new_state = 'requeue' THEN NULL ELSE j.started_at END,
        worker_id = CASE WHEN e.new_state = 'requeue' THEN NULL ELSE j.worker_id END,
        lease_until = NULL, in_buffer = false,
        error = CASE WHEN e.new_state = 'requeue' THEN j.error ELSE
            'worker ' || coalesce(CAST(j.worker_id AS text), '?') || ' lost its lease'
            || CASE WHEN e.new_state = 'failed'
                    THEN ' (' || (j.losses + 1) || ' workers lost under it, the most allowed)'
                    ELSE '' END END
    FROM expired e WHERE j.id = e.id AND j.state = 'running'
    RETURNING j.id, j.attempt, e.new_state, j.queue, j.error, j.worker_id, j.started_at
), recorded AS (
    INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT id, attempt, worker_id, started_at, {NOW}, 'lost', error FROM rescued
    WHERE new_state <> 'requeue'
)
SELECT id, new_state, queue FROM rescued
"""


def rescue(conn: Conn) -> list[tuple[int, str, str]]:
    """Take back the jobs of expired leases in one statement (RESCUE): (id, new state, queue)."""
    return [(id_, new_state, queue) for id_, new_state, queue
            in conn.execute(RESCUE).fetchall()]


# Workers whose heartbeat is older than a lease are gone: nobody renews their jobs either
# (jobctl.store.queue.LIVE_WORKERS_LOST).
MARK_LOST_WORKERS = (f"{shared.LIVE_WORKERS_LOST}\n"
                     f"  AND heartbeat_at < {now_plus('-CAST(%(lease_s)s AS float8)')}")

# --- burst workers ----------------------------------------------------------------------------

# A burst worker's view of its queues when it has nothing to run (see policy.burst_decision):
# jobs due that it may run, jobs running anywhere, the next retry, waiting jobs, and the
# database's time (BURST_COUNTS); the queued jobs of these queues that this worker may not run,
# another Unix user's (NOT_MINE); the waiting jobs of these queues (WAITING). The shapes:
# jobctl.store.queue.burst_statements.
BURST_COUNTS, NOT_MINE, WAITING = shared.burst_statements(NOW, _USER_FITS, _IN_QUEUES)

# The dependencies of some jobs that have not ended (a missing dependency: state NULL).
# Differs by necessity: the ids are an array (SQLite: json_each).
OPEN_DEPS = shared.open_deps("dep.job_id = ANY(%(ids)s)")

# The queues the live workers serve (JSON lists): jobctl.store.queue.QUEUES_OF_LIVE_WORKERS.
LIVE_WORKER_QUEUES = shared.QUEUES_OF_LIVE_WORKERS
