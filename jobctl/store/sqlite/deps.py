"""SQLite: dependencies between jobs (jobctl.store.deps.DepsSQL).

Settling, the one answer to "are this job's dependencies met?" on SQLite, is `settle`: two
statements, DOOM then RELEASE, the same rule as PostgreSQL's SETTLE_CTES.
# Differs by necessity: SQLite has no data-modifying CTEs, so what PostgreSQL does in one
# statement takes two here; the second sees what the first wrote (one transaction, one
# connection), so it needs no `ended` relation either.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobctl.models import FAILING_STATES, FINAL_STATES, sql_states
from jobctl.store.direct import Conn
from jobctl.store.sqlite import NOW

_FINAL = sql_states(FINAL_STATES)
_FAILING = sql_states(FAILING_STATES)

# One edge: `job_id` waits for `depends_on` under `condition` (ok | any).
ADD_EDGE = """
INSERT INTO job_deps (job_id, depends_on, condition)
VALUES (:job_id, :depends_on, :condition)"""

# The states of a new job's dependencies. No lock: the caller's write transaction (BEGIN
# IMMEDIATE) keeps every other writer out until it commits.
STATES_OF = "SELECT id, state FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))"

# The candidates: the waiting jobs among :ids and those waiting on one of :ids.
_CANDIDATES = """
    SELECT w.id FROM jobs w
    WHERE w.id IN (SELECT value FROM json_each(:ids)) AND w.state = 'waiting'
    UNION
    SELECT dep.job_id FROM job_deps dep JOIN jobs w ON w.id = dep.job_id AND w.state = 'waiting'
    WHERE dep.depends_on IN (SELECT value FROM json_each(:ids))"""
# The sweep's candidates: every waiting job that has dependencies.
_ALL_WAITING = """
    SELECT DISTINCT dep.job_id FROM job_deps dep JOIN jobs w ON w.id = dep.job_id
    WHERE w.state = 'waiting'"""


def _doom(candidates: str) -> str:
    """A candidate with an `ok` dependency that can never succeed ends, and so does every waiting
    job that needs it `ok`, recursively, each naming the root cause (the lowest id when there are
    several: SQLite takes a bare column from the row min() picked). Returns (id, state)."""
    return f"""
WITH RECURSIVE candidate(id) AS ({candidates}
), doomed(id, cause, cause_state) AS (
    SELECT c.id, dep.depends_on, dj.state
    FROM candidate c
    JOIN job_deps dep ON dep.job_id = c.id AND dep.condition = 'ok'
    JOIN jobs dj ON dj.id = dep.depends_on
    WHERE dj.state IN ({_FAILING})
  UNION
    SELECT dep.job_id, x.cause, x.cause_state
    FROM doomed x JOIN job_deps dep ON dep.depends_on = x.id AND dep.condition = 'ok'
    JOIN jobs w ON w.id = dep.job_id AND w.state = 'waiting'
), doomed_once AS (
    SELECT id, min(cause) AS cause, cause_state FROM doomed GROUP BY id
)
UPDATE jobs SET
    state = CASE WHEN x.cause_state = 'cancelled' THEN 'cancelled' ELSE 'failed' END,
    finished_at = {NOW},
    error = 'dependency ' || x.cause || ' ' || x.cause_state
FROM doomed_once x
WHERE jobs.id = x.id AND jobs.state = 'waiting'
RETURNING id, state"""


def _release(candidates: str) -> str:
    """The candidates whose every dependency is met (`ok`: succeeded; `any`: final; a pruned one:
    never) are queued, keeping a later run_at given at submit. Returns (id, queue)."""
    return f"""
UPDATE jobs SET state = 'queued',
    run_at = CASE WHEN run_at > {NOW} THEN run_at ELSE {NOW} END
WHERE state = 'waiting' AND id IN ({candidates})
  AND NOT EXISTS (
      SELECT 1 FROM job_deps dep LEFT JOIN jobs dj ON dj.id = dep.depends_on
      WHERE dep.job_id = jobs.id AND NOT coalesce(
          CASE WHEN dep.condition = 'ok' THEN dj.state = 'succeeded'
               ELSE dj.state IN ({_FINAL}) END, false))
RETURNING id, queue"""


DOOM = _doom(_CANDIDATES)
SWEEP_DOOM = _doom(_ALL_WAITING)
# After DOOM: also what waits on a job DOOM just ended (an `any` dependent may be met now); the
# caller passes those ids along with the ones it settles.
RELEASE = _release(_CANDIDATES)
SWEEP_RELEASE = _release(_ALL_WAITING)


def settle(conn: Conn, ids: Sequence[int] | None) -> list[tuple[int, str, str | None]]:
    """See DepsSQL.settle: DOOM, then RELEASE of the candidates and of what waits on the doomed."""
    if ids is None:
        doomed = [(int(job_id), state) for job_id, state in conn.execute(SWEEP_DOOM).fetchall()]
        released = conn.execute(SWEEP_RELEASE).fetchall()
    else:
        doomed = [(int(job_id), state) for job_id, state in
                  conn.execute(DOOM, {"ids": conn.ids_param(ids)}).fetchall()]
        more = [*ids, *(job_id for job_id, _ in doomed)]
        released = conn.execute(RELEASE, {"ids": conn.ids_param(more)}).fetchall()
    return ([(int(job_id), "queued", queue) for job_id, queue in released]
            + [(job_id, state, None) for job_id, state in doomed])
