"""PostgreSQL: workflows (jobctl.store.workflows.WorkflowsSQL)."""

from __future__ import annotations

from jobctl.models import FINAL_STATES, RERUN_STATES, sql_states
from jobctl.store.postgres import NOW
from jobctl.store.postgres.reads import SELECT_JOB_COLUMNS
from jobctl.store.workflows import WORKFLOW_COLUMNS

_WORKFLOW = ", ".join(WORKFLOW_COLUMNS)
_JOB = SELECT_JOB_COLUMNS

# The workflow's row; nothing when this (schedule, fire time) has started one already. The
# conflict target is the partial unique index uq_workflows_schedule_fire_time; rows without a
# schedule (NULL schedule_id) never conflict, so one statement serves `workflow run` and a
# schedule's occurrence alike. Differs by necessity: no submitted_by, which the database sets
# (jobctl.store.postgres.identity).
START = f"""
INSERT INTO workflows (name, definition, params, created_at, schedule_id, fire_time, labels,
                       on_failure)
VALUES (%(name)s, CAST(%(definition)s AS jsonb), CAST(%(params)s AS jsonb), {NOW},
        %(schedule_id)s, CAST(%(fire_time)s AS timestamptz), CAST(%(labels)s AS jsonb),
        %(on_failure)s)
ON CONFLICT (schedule_id, fire_time) WHERE schedule_id IS NOT NULL DO NOTHING
RETURNING id"""

# One workflow.
GET = f"SELECT {_WORKFLOW} FROM workflows WHERE id = %(id)s"
# Newest first, at most :limit (NULL: all); their tasks are read with TASKS_OF.
LIST = f"SELECT {_WORKFLOW} FROM workflows ORDER BY id DESC LIMIT %(limit)s"
# The tasks (jobs) of one workflow, and of several.
TASKS = f"SELECT {_JOB} FROM jobs WHERE workflow_id = %(id)s ORDER BY id"
TASKS_OF = f"SELECT {_JOB} FROM jobs WHERE workflow_id = ANY(%(ids)s) ORDER BY id"

# The tasks that have not ended, the waiting ones first (so that nothing they wait for releases
# them meanwhile), then by id.
UNFINISHED_TASKS = f"""
SELECT id, state FROM jobs
WHERE workflow_id = %(id)s AND state NOT IN ({sql_states(FINAL_STATES)})
ORDER BY CASE WHEN state = 'waiting' THEN 0 ELSE 1 END, id"""

# Back to waiting, with its whole retry budget again (attempts already made are kept in the
# count); only while it is still in a state that may be re-run, so that a concurrent retry or
# anything else that moved it on is not undone. (executemany; settling queues those ready.)
RERUN_TASK = f"""
UPDATE jobs SET state = 'waiting', max_attempts = attempt + 1 + %(retries)s, finished_at = NULL,
       lease_until = NULL, exit_code = NULL, signal = NULL, error = NULL,
       cancel_requested = FALSE
WHERE id = %(id)s AND state IN ({sql_states(RERUN_STATES)})"""

# A retried workflow's on_failure may start again, once, when a task fails again.
REARM_HOOK = "UPDATE workflows SET on_failure_fired = false WHERE id = %(id)s"
