"""SQLite: the SQL of jobctl.store.capacity (see its CapacitySQL protocol), in sqlite3's parameter
style (`:name`). The gated claim runs under the write lock its caller's turn or write transaction
holds (BEGIN IMMEDIATE): nothing else can claim meanwhile, so no lock of its own is needed.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobctl.capacity import gpu_text
from jobctl.store import capacity as shared
from jobctl.store.capacity import ALL_QUEUE_SETTINGS as ALL_QUEUE_SETTINGS
from jobctl.store.capacity import LIVE_WORKERS as LIVE_WORKERS
from jobctl.store.capacity import QUEUE_COUNTS as QUEUE_COUNTS
from jobctl.store.queue import named_rows
from jobctl.store.sqlite import NOW, now_plus
from jobctl.store.sqlite.queue import CLAIMED_JOB

if TYPE_CHECKING:
    from jobctl.store.capacity import Start
    from jobctl.store.direct import Conn

_QUEUE_COLUMNS = "name, paused, max_running, rate_count, rate_window_s, recent_starts"
QUEUE_SETTINGS = (f"SELECT {_QUEUE_COLUMNS} FROM queues "
                  "WHERE name IN (SELECT value FROM json_each(:queues))")

KNOWN_QUEUES = """
SELECT q.value FROM json_each(:queues) AS q
WHERE EXISTS (SELECT 1 FROM queues WHERE queues.name = q.value)
   OR EXISTS (SELECT 1 FROM jobs WHERE jobs.queue = q.value)
"""

SET_PAUSED = f"""
INSERT INTO queues (name, paused, updated_at) VALUES (:name, :paused, {NOW})
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at
"""

UPSERT_QUEUE = f"""
INSERT INTO queues (name, max_running, rate_count, rate_window_s, recent_starts, updated_at)
VALUES (:name, :max_running, :rate_count, :rate_window_s, :recent_starts, {NOW})
ON CONFLICT (name) DO UPDATE SET max_running = excluded.max_running,
    rate_count = excluded.rate_count, rate_window_s = excluded.rate_window_s,
    recent_starts = excluded.recent_starts, updated_at = excluded.updated_at
"""

SET_RECENT_STARTS = "UPDATE queues SET recent_starts = :recent_starts WHERE name = :name"

SET_HELD = """
UPDATE jobs SET held = :held WHERE id = :id AND state IN ('waiting', 'queued')
RETURNING state, queue
"""
JOB_STATE = "SELECT state FROM jobs WHERE id = :id"
JOB_FOR_EDIT = "SELECT state, limits, queue FROM jobs WHERE id = :id"

EDIT_JOB = f"""
UPDATE jobs SET
    priority = coalesce(:priority, priority),
    queue = coalesce(:queue, queue),
    run_at = coalesce(:run_at, CASE WHEN :run_in_s IS NOT NULL
                                    THEN {now_plus(":run_in_s")} END, run_at),
    limits = CASE WHEN :set_limits THEN :limits ELSE limits END,
    gated = gated OR :set_limits
WHERE id = :id AND state IN ('waiting', 'queued')
RETURNING id
"""

RUNNING = shared.running("j.queue IN (SELECT value FROM json_each(:queues))")

# The database clock (UTC) as epoch seconds, to the microsecond.
NOW_EPOCH = "SELECT (julianday('now') - 2440587.5) * 86400.0"


_USER_FITS = "(run_as IS NULL OR :any_user OR run_as = :user)"

# The candidates of one queue, in claim order (jobctl.store.postgres.capacity.CANDIDATES says
# what they are). Differs by necessity: JSON objects stand for arrays and jsonb containment
# (:tags, :usage: {key: running count}), and one of these per queue, `queue = :q` (a list in
# json_each would make SQLite sort every queued job first, as jobctl.store.sqlite.queue says).
_GATED_OF = f"""SELECT * FROM (
    SELECT id, queue, limits, cpus, mem_bytes, gpus, delivery, attempt, priority, run_at
    FROM jobs
    WHERE queue = :{{name}} AND state = 'queued' AND NOT held AND gated AND run_at <= {NOW}
      AND {_USER_FITS}
      AND NOT EXISTS (SELECT 1 FROM json_each(jobs.requires) AS r
                      WHERE json_extract(:tags, '$.' || json_quote(r.key)) IS NOT r.value)
      AND coalesce(cpus, 0) <= :cpu AND coalesce(mem_bytes, 0) <= :mem AND gpus <= :gpus
      AND NOT EXISTS (SELECT 1 FROM json_each(jobs.limits) AS l
                      WHERE l.value + :slack <= json_extract(:usage, '$.' || json_quote(l.key)))
    ORDER BY priority DESC, run_at, id LIMIT :window)"""
_CAPPED_OF = f"""SELECT * FROM (
    SELECT id, queue, limits, cpus, mem_bytes, gpus, delivery, attempt, priority, run_at
    FROM jobs
    WHERE queue = :{{name}} AND state = 'queued' AND NOT held AND NOT gated
      AND run_at <= {NOW} AND {_USER_FITS}
    ORDER BY priority DESC, run_at, id LIMIT :window)"""


@functools.cache
def candidates_statement(open_count: int, capped_count: int) -> str:
    """The candidates of :open_0 … and :capped_0 …, in claim order, at most :window."""
    parts = ([_GATED_OF.format(name=f"open_{index}") for index in range(open_count)]
             + [_CAPPED_OF.format(name=f"capped_{index}") for index in range(capped_count)])
    return ("SELECT id, queue, limits, cpus, mem_bytes, gpus, delivery, attempt FROM (\n"
            + "\nUNION ALL\n".join(parts)
            + "\n) ORDER BY priority DESC, run_at, id LIMIT :window")


CLAIM = f"""
UPDATE jobs SET
    state = 'running', attempt = attempt + 1, worker_id = :worker_id,
    started_at = {NOW}, finished_at = NULL, lease_until = {now_plus(":lease_s")},
    exit_code = NULL, signal = NULL, error = NULL, in_buffer = :after_id IS NOT NULL,
    gated = TRUE, gpu_indices = :gpus, after_id = :after_id, after_attempt = :after_attempt
WHERE id = :id AND state = 'queued'
RETURNING {CLAIMED_JOB}
"""


@contextlib.contextmanager
def gated_transaction(conn: Conn) -> Iterator[None]:
    """Nothing to take: the caller's transaction holds the write lock."""
    yield


def candidates(conn: Conn, *, open_queues: Sequence[str], capped: Sequence[str],
               usage: Mapping[str, int], tags: Mapping[str, str], cpu: float, mem: int,
               gpus: int, window: int, user: str | None, any_user: bool,
               full_keys_too: bool) -> list[Sequence[Any]]:
    """candidates_statement for these queues."""
    if not open_queues and not capped:
        return []
    params: dict[str, Any] = {"usage": json.dumps(dict(usage)), "tags": json.dumps(dict(tags)),
                              "cpu": cpu, "mem": mem, "gpus": gpus, "window": window,
                              "user": user, "any_user": any_user, "slack": int(full_keys_too)}
    params.update({f"open_{index}": name for index, name in enumerate(open_queues)})
    params.update({f"capped_{index}": name for index, name in enumerate(capped)})
    rows: list[Sequence[Any]] = conn.execute(
        candidates_statement(len(open_queues), len(capped)), params).fetchall()
    return rows


def claim(conn: Conn, worker_id: int, starts: Sequence[Start],
          lease_s: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for start in starts:
        rows += named_rows(conn.execute(CLAIM, {
            "worker_id": worker_id, "lease_s": lease_s, "id": start.id,
            "gpus": gpu_text(start.gpus), "after_id": start.after,
            "after_attempt": start.after_attempt}))
    return rows
