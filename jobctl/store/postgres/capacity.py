"""PostgreSQL: the SQL of jobctl.store.capacity (see its CapacitySQL protocol), in psycopg's
parameter style (`%(name)s`).

The gated claim is serialised by one transaction-scoped advisory lock (GATED_CLAIM_LOCK): it
works through PgBouncer's transaction pooling, and is released by the commit or by the server
when the connection dies. Every statement after the lock sees what the previous holder committed
(READ COMMITTED takes a new snapshot per statement).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobctl.capacity import gpu_text
from jobctl.store import capacity as shared
from jobctl.store.capacity import ALL_QUEUE_SETTINGS as ALL_QUEUE_SETTINGS
from jobctl.store.capacity import LIVE_WORKERS as LIVE_WORKERS
from jobctl.store.capacity import QUEUE_COUNTS as QUEUE_COUNTS
from jobctl.store.postgres import NOW, now_plus
from jobctl.store.postgres.queue import CLAIMED_JOB
from jobctl.store.queue import named_rows

if TYPE_CHECKING:
    from jobctl.store.capacity import Start
    from jobctl.store.direct import Conn

# The gated claim's lock ("jobctl-g"), distinct from the migration lock.
GATED_CLAIM_LOCK_ID = 0x6A6F6263746C2D67
LOCK = f"SELECT pg_advisory_xact_lock({GATED_CLAIM_LOCK_ID})"

_QUEUE_COLUMNS = "name, paused, max_running, rate_count, rate_window_s, recent_starts"
QUEUE_SETTINGS = f"SELECT {_QUEUE_COLUMNS} FROM queues WHERE name = ANY(%(queues)s)"

# Those of :queues with a row or any job (one index probe each: ix_jobs_claim leads with queue;
# a queue whose jobs all ended is found by the full scan only when nothing else names it).
KNOWN_QUEUES = """
SELECT q.name FROM unnest(CAST(%(queues)s AS text[])) AS q(name)
WHERE EXISTS (SELECT 1 FROM queues WHERE queues.name = q.name)
   OR EXISTS (SELECT 1 FROM jobs WHERE jobs.queue = q.name)
"""

SET_PAUSED = f"""
INSERT INTO queues (name, paused, updated_at) VALUES (%(name)s, %(paused)s, {NOW})
ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused, updated_at = EXCLUDED.updated_at
"""

UPSERT_QUEUE = f"""
INSERT INTO queues (name, max_running, rate_count, rate_window_s, recent_starts, updated_at)
VALUES (%(name)s, %(max_running)s, %(rate_count)s, %(rate_window_s)s,
        CAST(%(recent_starts)s AS jsonb), {NOW})
ON CONFLICT (name) DO UPDATE SET max_running = EXCLUDED.max_running,
    rate_count = EXCLUDED.rate_count, rate_window_s = EXCLUDED.rate_window_s,
    recent_starts = EXCLUDED.recent_starts, updated_at = EXCLUDED.updated_at
"""

SET_RECENT_STARTS = """
UPDATE queues SET recent_starts = CAST(%(recent_starts)s AS jsonb) WHERE name = %(name)s
"""

SET_HELD = """
UPDATE jobs SET held = %(held)s WHERE id = %(id)s AND state IN ('waiting', 'queued')
RETURNING state, queue
"""
JOB_STATE = "SELECT state FROM jobs WHERE id = %(id)s"
JOB_FOR_EDIT = "SELECT state, limits, queue FROM jobs WHERE id = %(id)s FOR UPDATE"

# Change a job not started; a new limit makes it gated (only the gated claim takes it).
EDIT_JOB = f"""
UPDATE jobs SET
    priority = coalesce(%(priority)s, priority),
    queue = coalesce(%(queue)s, queue),
    run_at = coalesce(CAST(%(run_at)s AS timestamptz),
                      CASE WHEN CAST(%(run_in_s)s AS float8) IS NOT NULL
                           THEN {now_plus("CAST(%(run_in_s)s AS float8)")} END, run_at),
    limits = CASE WHEN %(set_limits)s THEN CAST(%(limits)s AS jsonb) ELSE limits END,
    gated = gated OR %(set_limits)s
WHERE id = %(id)s AND state IN ('waiting', 'queued')
RETURNING id
"""

RUNNING = shared.running("j.queue = ANY(CAST(%(queues)s AS text[]))")

NOW_EPOCH = "SELECT extract(epoch FROM clock_timestamp())"


# Which jobs a worker may claim by their Unix user (as jobctl.store.postgres.queue).
_USER_FITS = "(run_as IS NULL OR %(any_user)s OR run_as = %(user)s)"

# The queued jobs the gated claim may start, in claim order, at most :window: gated jobs of the
# open queues (ix_jobs_gated) whose tags this worker has, whose resources are at most :cpu, :mem
# and :gpus and whose keys are not full (:keys with :key_counts running; :slack 1: a key with as
# many holders as its limit is not full for a follower, which takes a holder's place), and every
# job of the capped queues (ix_jobs_claim). jobctl.capacity.pick and follow count within the
# batch.
CANDIDATES = f"""
SELECT id, queue, limits, cpus, mem_bytes, gpus, delivery, attempt FROM (
    SELECT j.* FROM unnest(CAST(%(open)s AS text[])) AS q(name), LATERAL (
        SELECT id, queue, limits, cpus, mem_bytes, gpus, delivery, attempt, priority, run_at
        FROM jobs
        WHERE queue = q.name AND state = 'queued' AND NOT held AND gated AND run_at <= now()
          AND {_USER_FITS}
          AND (requires IS NULL OR requires <@ CAST(%(tags)s AS jsonb))
          AND coalesce(cpus, 0) <= %(cpu)s AND coalesce(mem_bytes, 0) <= %(mem)s
          AND gpus <= %(gpus)s
          AND NOT EXISTS (
              SELECT 1 FROM jsonb_each_text(limits) AS l
              JOIN unnest(CAST(%(keys)s AS text[]), CAST(%(key_counts)s AS int[])) AS u(key, n)
                ON u.key = l.key
              WHERE CAST(l.value AS int) + %(slack)s <= u.n)
        ORDER BY priority DESC, run_at, id
        LIMIT %(window)s
    ) AS j
    UNION ALL
    SELECT j.* FROM unnest(CAST(%(capped)s AS text[])) AS q(name), LATERAL (
        SELECT id, queue, limits, cpus, mem_bytes, gpus, delivery, attempt, priority, run_at
        FROM jobs
        WHERE queue = q.name AND state = 'queued' AND NOT held AND NOT gated
          AND run_at <= now() AND {_USER_FITS}
        ORDER BY priority DESC, run_at, id
        LIMIT %(window)s
    ) AS j
) AS c
ORDER BY priority DESC, run_at, id
LIMIT %(window)s
"""

# Claim the chosen jobs, if still queued (a cancel may have come first): a follower (:after_ids
# not NULL) into the read-ahead buffer, the others to start at once. They stay gated: their end
# wakes the workers of their queue (see jobctl.store.postgres.queue).
CLAIM = f"""
UPDATE jobs SET
    state = 'running', attempt = jobs.attempt + 1, worker_id = %(worker_id)s,
    started_at = {NOW}, finished_at = NULL, lease_until = {now_plus("%(lease_s)s")},
    exit_code = NULL, signal = NULL, error = NULL, in_buffer = c.after_id IS NOT NULL,
    gated = true, gpu_indices = c.gpus, after_id = c.after_id, after_attempt = c.after_attempt
FROM unnest(CAST(%(ids)s AS bigint[]), CAST(%(gpus)s AS text[]), CAST(%(after_ids)s AS bigint[]),
            CAST(%(after_attempts)s AS int[])) AS c(id, gpus, after_id, after_attempt)
WHERE jobs.id = c.id AND jobs.state = 'queued'
RETURNING {CLAIMED_JOB}
"""


@contextlib.contextmanager
def gated_transaction(conn: Conn) -> Iterator[None]:
    """A transaction block (a savepoint inside one) that first takes LOCK, in pipeline mode:
    statements go out without waiting for each other's results, and a round trip is paid only
    where a result is read. The gated claim sends BEGIN, LOCK and its reads together (each read
    still runs after the lock is granted, with a snapshot taken then), then the candidates, then
    the claim with the COMMIT: three round trips."""
    with conn.raw.pipeline(), conn.raw.transaction():
        conn.execute(LOCK)
        yield


def candidates(conn: Conn, *, open_queues: Sequence[str], capped: Sequence[str],
               usage: Mapping[str, int], tags: Mapping[str, str], cpu: float, mem: int,
               gpus: int, window: int, user: str | None, any_user: bool,
               full_keys_too: bool) -> list[Sequence[Any]]:
    """CANDIDATES."""
    keys = sorted(usage)
    rows: list[Sequence[Any]] = conn.execute(CANDIDATES, {
        "open": list(open_queues), "capped": list(capped), "keys": keys,
        "key_counts": [usage[key] for key in keys], "tags": json.dumps(dict(tags)),
        "cpu": cpu, "mem": mem, "gpus": gpus, "window": window, "user": user,
        "any_user": any_user, "slack": int(full_keys_too)}).fetchall()
    return rows


def claim(conn: Conn, worker_id: int, starts: Sequence[Start],
          lease_s: float) -> list[dict[str, Any]]:
    return named_rows(conn.execute(CLAIM, {
        "worker_id": worker_id, "lease_s": lease_s, "ids": [start.id for start in starts],
        "gpus": [gpu_text(start.gpus) for start in starts],
        "after_ids": [start.after for start in starts],
        "after_attempts": [start.after_attempt for start in starts]}))
