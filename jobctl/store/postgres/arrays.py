"""PostgreSQL: the SQL of jobctl.store.arrays (see its ArraysSQL protocol)."""

from jobctl.models import JobState
from jobctl.store.arrays import FAILING
from jobctl.store.jobs import CANCELLED_BEFORE_START, FINAL, NOT_STARTED, QUEUED_AGAIN
from jobctl.store.postgres import NOW
from jobctl.store.postgres.reads import SELECT_JOB_COLUMNS

# A new array: its size and throttle (NULL: none), created now.
INSERT_ARRAY = f"""
INSERT INTO arrays (size, throttle, created_at) VALUES (%(size)s, %(throttle)s, {NOW})
RETURNING id"""

# One array.
ARRAY = "SELECT id, size, throttle, created_at FROM arrays WHERE id = %(id)s"

# How many of its tasks are in each state (ix_jobs_array_id).
STATE_COUNTS = "SELECT state, count(*) FROM jobs WHERE array_id = %(id)s GROUP BY state"

# The task of the lowest index that ended without succeeding (`job wait --array` exits with its
# code).
FIRST_FAILED = f"""
SELECT array_index, id, state, exit_code FROM jobs
WHERE array_id = %(id)s AND {FAILING}
ORDER BY array_index LIMIT 1"""

# Its tasks by index, in the states given (a text[]; NULL: any); LIMIT NULL is no limit.
TASKS = f"""
SELECT {SELECT_JOB_COLUMNS} FROM jobs
WHERE array_id = %(id)s
  AND (CAST(%(states)s AS text[]) IS NULL OR state = ANY(%(states)s))
ORDER BY array_index
LIMIT %(limit)s"""

# The ids of its tasks, by index.
TASK_IDS = "SELECT id FROM jobs WHERE array_id = %(id)s ORDER BY array_index"

# Queue its finished tasks in :states (a text[]) again, each as a new attempt with :retries more
# retries after it, as jobctl.store.jobs' RETRY does one job. Row locks make a task that a
# worker ends meanwhile wait, and its new state is checked again.
RETRY_TASKS = f"""
UPDATE jobs SET max_attempts = attempt + 1 + %(retries)s, run_at = {NOW},
       {QUEUED_AGAIN}
WHERE array_id = %(id)s AND {FINAL} AND state = ANY(%(states)s)
RETURNING id, queue"""

# Cancel its tasks that have not started (waiting or queued), as CANCEL_NOT_STARTED one job.
CANCEL_NOT_STARTED_TASKS = f"""
UPDATE jobs SET {CANCELLED_BEFORE_START}, finished_at = {NOW}
WHERE array_id = %(id)s AND {NOT_STARTED}
RETURNING id"""

# Flag its running tasks: their workers kill them.
REQUEST_CANCEL_TASKS = f"""
UPDATE jobs SET cancel_requested = TRUE
WHERE array_id = %(id)s AND state = '{JobState.RUNNING.value}' AND NOT cancel_requested
RETURNING id"""

# One stream of one attempt's output, newest chunk first, before the chunk :before.
TAIL_CHUNKS = """
SELECT seq, data FROM job_logs
WHERE job_id = %(job_id)s AND attempt = %(attempt)s AND stream = %(stream)s
  AND seq < %(before)s
ORDER BY seq DESC
LIMIT %(limit)s"""
