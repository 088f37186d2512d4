"""SQLite: the SQL of jobctl.store.arrays (see its ArraysSQL protocol)."""

from jobctl.models import JobState
from jobctl.store.arrays import FAILING
from jobctl.store.jobs import CANCELLED_BEFORE_START, FINAL, NOT_STARTED, QUEUED_AGAIN
from jobctl.store.reads import SELECT_JOB_COLUMNS
from jobctl.store.sqlite import NOW

# A new array: its size and throttle (NULL: none), created now.
INSERT_ARRAY = f"""
INSERT INTO arrays (size, throttle, created_at) VALUES (:size, :throttle, {NOW})
RETURNING id"""

# One array.
ARRAY = "SELECT id, size, throttle, created_at FROM arrays WHERE id = :id"

# How many of its tasks are in each state (ix_jobs_array_id).
STATE_COUNTS = "SELECT state, count(*) FROM jobs WHERE array_id = :id GROUP BY state"

# The task of the lowest index that ended without succeeding (`job wait --array` exits with its
# code).
FIRST_FAILED = f"""
SELECT array_index, id, state, exit_code FROM jobs
WHERE array_id = :id AND {FAILING}
ORDER BY array_index LIMIT 1"""

# Its tasks by index, in the states given (a JSON list; NULL: any); a NULL limit is none.
# Differs by necessity: json_each, not an array.
TASKS = f"""
SELECT {SELECT_JOB_COLUMNS} FROM jobs
WHERE array_id = :id
  AND (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
ORDER BY array_index
LIMIT coalesce(:limit, -1)"""

# The ids of its tasks, by index.
TASK_IDS = "SELECT id FROM jobs WHERE array_id = :id ORDER BY array_index"

# Queue its finished tasks in :states (a JSON list) again, each as a new attempt with :retries
# more retries after it, as jobctl.store.jobs' RETRY does one job. Differs by necessity:
# json_each, not an array (the write transaction holds the whole database).
RETRY_TASKS = f"""
UPDATE jobs SET max_attempts = attempt + 1 + :retries, run_at = {NOW},
       {QUEUED_AGAIN}
WHERE array_id = :id AND {FINAL}
  AND state IN (SELECT value FROM json_each(:states))
RETURNING id, queue"""

# Cancel its tasks that have not started (waiting or queued), as CANCEL_NOT_STARTED one job.
CANCEL_NOT_STARTED_TASKS = f"""
UPDATE jobs SET {CANCELLED_BEFORE_START}, finished_at = {NOW}
WHERE array_id = :id AND {NOT_STARTED}
RETURNING id"""

# Flag its running tasks: their workers kill them.
REQUEST_CANCEL_TASKS = f"""
UPDATE jobs SET cancel_requested = TRUE
WHERE array_id = :id AND state = '{JobState.RUNNING.value}' AND NOT cancel_requested
RETURNING id"""

# One stream of one attempt's output, newest chunk first, before the chunk :before.
TAIL_CHUNKS = """
SELECT seq, data FROM job_logs
WHERE job_id = :job_id AND attempt = :attempt AND stream = :stream
  AND seq < :before
ORDER BY seq DESC
LIMIT :limit"""
