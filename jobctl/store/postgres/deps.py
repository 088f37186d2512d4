"""PostgreSQL: dependencies between jobs (jobctl.store.deps.DepsSQL).

Settling, the one answer to "are this job's dependencies met?" on PostgreSQL, is the CTE chain
SETTLE_CTES: used alone by `settle` (cancel, the rescuer, dependents that came late, workflow
retry) and spliced into the worker's complete-and-claim statement
(jobctl.store.postgres.queue), which defines `ended` from the jobs that statement itself ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobctl.models import FAILING_STATES, FINAL_STATES, sql_states
from jobctl.store.direct import Conn
from jobctl.store.postgres import NOW

_FINAL = sql_states(FINAL_STATES)
_FAILING = sql_states(FAILING_STATES)

# One edge: `job_id` waits for `depends_on` under `condition` (ok | any).
ADD_EDGE = """
INSERT INTO job_deps (job_id, depends_on, condition)
VALUES (%(job_id)s, %(depends_on)s, %(condition)s)"""

# The states of a new job's dependencies, locked against a concurrent completion: a completion
# that got there first is waited for and its result read, one that comes later waits for the
# submit and then sees the new job among the dependents it settles.
# Differs by necessity: FOR SHARE (SQLite's write transaction holds the whole database).
# Through jobctl_lock_job_states (jobctl.store.postgres.roles), as the table's owner: a
# submitter's own FOR SHARE would not see another's job (row-level security applies UPDATE's
# policies to a row lock), and a job may wait on anyone's.
STATES_OF = "SELECT id, state FROM jobctl_lock_job_states(%(ids)s)"

# Settling the waiting jobs in `candidate(id)`, transitively. The statement that splices this in
# defines, before it and under WITH RECURSIVE:
#   ended(id, state)    jobs whose new final state this statement wrote itself, which its snapshot
#                       does not show yet (empty for a statement that only settles);
#   candidate(id)       the waiting jobs to settle;
#   failing(id, state)  the jobs that can never succeed (failed, lost, cancelled) among their
#                       `ok` dependencies: those `ended` for the turn that ended them (a job
#                       needing one that had failed before would have ended with it), every one
#                       for a statement that only settles (_FAILING_DEPENDENCIES).
# `doomed`: a candidate with a failing `ok` dependency ends, and so does every waiting job that
# needs it `ok`, recursively, each naming the root cause (the lowest id when there are several).
# `released`: the candidates, and what waits on a doomed job, whose every dependency is met
# (`ok`: succeeded; `any`: final; a pruned one: never) are queued, keeping a later run_at given
# at submit. `ended_by_deps` returns (id, state), `released` (id, queue).
SETTLE_CTES = f"""
doomed(id, cause, cause_state) AS (
    SELECT c.id, f.id, f.state
    FROM failing f
    JOIN job_deps dep ON dep.depends_on = f.id AND dep.condition = 'ok'
    JOIN candidate c ON c.id = dep.job_id
  UNION
    SELECT dep.job_id, x.cause, x.cause_state
    FROM doomed x JOIN job_deps dep ON dep.depends_on = x.id AND dep.condition = 'ok'
    JOIN jobs w ON w.id = dep.job_id AND w.state = 'waiting'
), doomed_once AS (
    SELECT DISTINCT ON (id) id, cause, cause_state FROM doomed ORDER BY id, cause
), ended_by_deps AS (
    UPDATE jobs w SET
        state = CASE WHEN x.cause_state = 'cancelled' THEN 'cancelled' ELSE 'failed' END,
        finished_at = {NOW},
        error = 'dependency ' || x.cause || ' ' || x.cause_state
    FROM doomed_once x
    WHERE w.id = x.id AND w.state = 'waiting'
    RETURNING w.id, w.state
), released AS (
    UPDATE jobs w SET state = 'queued', run_at = greatest(w.run_at, {NOW})
    WHERE w.state = 'waiting'
      AND w.id IN (SELECT id FROM candidate
                   UNION ALL
                   SELECT dep.job_id FROM job_deps dep JOIN doomed_once x ON x.id = dep.depends_on)
      AND w.id NOT IN (SELECT id FROM doomed_once)
      AND NOT EXISTS (
          SELECT 1 FROM job_deps dep
          LEFT JOIN jobs dj ON dj.id = dep.depends_on
          LEFT JOIN ended e ON e.id = dep.depends_on
          LEFT JOIN doomed_once x ON x.id = dep.depends_on
          WHERE dep.job_id = w.id AND NOT coalesce(
              CASE WHEN x.id IS NOT NULL THEN dep.condition = 'any'
                   WHEN dep.condition = 'ok' THEN coalesce(e.state, dj.state) = 'succeeded'
                   ELSE coalesce(e.state, dj.state) IN ({_FINAL}) END, false)
      )
    RETURNING w.id, w.queue
)"""


# `failing` for a statement that only settles: every `ok` dependency of a candidate that failed,
# was lost or was cancelled.
_FAILING_DEPENDENCIES = f"""
    SELECT DISTINCT dj.id, dj.state
    FROM candidate c
    JOIN job_deps dep ON dep.job_id = c.id AND dep.condition = 'ok'
    JOIN jobs dj ON dj.id = dep.depends_on
    WHERE dj.state IN ({_FAILING})"""


def _settle_statement(candidates: str) -> str:
    """SETTLE_CTES on its own: nothing ended unseen (this statement ends no job itself), the
    candidates as given. Rows: (job id, new state, queue when queued)."""
    return f"""
WITH RECURSIVE ended(id, state) AS (
    SELECT CAST(NULL AS bigint), CAST(NULL AS text) WHERE false
), candidate(id) AS ({candidates}
), failing(id, state) AS ({_FAILING_DEPENDENCIES}
), {SETTLE_CTES}
SELECT id, 'queued', queue FROM released
UNION ALL
SELECT id, state, NULL FROM ended_by_deps"""


def _waiting_among_or_on(ids: str) -> str:
    """The waiting jobs among `ids` (an SQL bigint[]) and those waiting on one of them (the
    jobs that just ended)."""
    return f"""
    SELECT w.id FROM jobs w WHERE w.id = ANY({ids}) AND w.state = 'waiting'
    UNION
    SELECT dep.job_id FROM job_deps dep JOIN jobs w ON w.id = dep.job_id AND w.state = 'waiting'
    WHERE dep.depends_on = ANY({ids})"""


# Settling after jobs ended goes through jobctl_settle (jobctl.store.postgres.roles), which runs
# this as the tables' owner (SECURITY DEFINER): a submitter that cancels its own job must settle
# the jobs of others that wait on it, which row-level security hides from its own UPDATE. It
# does only what the rules of dependencies say, so anyone may call it. Created by migration
# 0013, with the text this code had then: a change to SETTLE_CTES needs a migration that
# creates it again (tests/store/test_conformance.py's test_settle_function_is_frozen reminds).
def _settle_function_body() -> str:
    """The body of jobctl_settle(ids bigint[])."""
    return _settle_statement(_waiting_among_or_on("ids"))


SETTLE = "SELECT id, state, queue FROM jobctl_settle(%(ids)s)"

# Every waiting job that has dependencies: the rescuer's backstop for what two concurrent
# completions both left waiting (each saw the other's dependency still running).
SWEEP = _settle_statement("""
    SELECT DISTINCT dep.job_id FROM job_deps dep JOIN jobs w ON w.id = dep.job_id
    WHERE w.state = 'waiting'""")


def settle(conn: Conn, ids: Sequence[int] | None) -> list[tuple[int, str, str | None]]:
    """See DepsSQL.settle: one statement."""
    rows: list[Any]
    if ids is None:
        rows = conn.execute(SWEEP, {}).fetchall()
    else:
        rows = conn.execute(SETTLE, {"ids": conn.ids_param(ids)}).fetchall()
    return [(int(job_id), state, queue) for job_id, state, queue in rows]
