"""PostgreSQL: the SQL of jobctl.store.jobs (see its JobsSQL protocol)."""

from jobctl.models import FINAL_STATES, NOT_STARTED_STATES, JobState, sql_states
from jobctl.store.postgres import NOW

# The job that holds a unique key (a submit whose key was taken gets its id back).
UNIQUE_KEY_HOLDER = "SELECT id FROM jobs WHERE unique_key = %(key)s"

# Which of these ids (a bigint[]) are jobs'. Differs by necessity: an array.
EXISTING_IDS = "SELECT id FROM jobs WHERE id = ANY(%(ids)s)"

# The job's state and queue, its row locked until the transaction ends (cancel and retry decide
# on them). Differs by necessity: FOR UPDATE, where SQLite's write transaction (BEGIN IMMEDIATE)
# holds the whole database already.
LOCK_JOB = "SELECT state, queue FROM jobs WHERE id = %(id)s FOR UPDATE"

# Cancel a job that has not started (waiting or queued): no worker has it, so it ends here.
CANCEL_NOT_STARTED = f"""
UPDATE jobs SET state = '{JobState.CANCELLED.value}', finished_at = {NOW},
       error = 'cancelled before it started', cancel_requested = TRUE
WHERE id = %(id)s AND state IN ({sql_states(NOT_STARTED_STATES)})"""

# Flag a running job: its worker kills it (woken by a notification, or at its next renewal).
REQUEST_CANCEL = f"""
UPDATE jobs SET cancel_requested = TRUE
WHERE id = %(id)s AND state = '{JobState.RUNNING.value}'"""

# Queue a finished job again as a new attempt, with :retries more retries after it; its
# losses start over.
RETRY = f"""
UPDATE jobs SET state = '{JobState.QUEUED.value}', max_attempts = attempt + 1 + %(retries)s,
       losses = 0, run_at = {NOW}, finished_at = NULL, lease_until = NULL, exit_code = NULL,
       signal = NULL, error = NULL, cancel_requested = FALSE
WHERE id = %(id)s AND state IN ({sql_states(FINAL_STATES)})"""
