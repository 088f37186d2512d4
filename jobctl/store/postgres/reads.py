"""PostgreSQL: the SQL of jobctl.store.reads (see its ReadsSQL protocol)."""

from jobctl.models import JobState
from jobctl.store.postgres import NOW as _NOW
from jobctl.store.postgres.roles import PRIVATE_JOB_READS
from jobctl.store.reads import select_job_columns

# A job's columns (reads.JOB_COLUMNS), its private ones through the functions that hide
# another's from a viewer or submitter (jobctl.store.postgres.roles); the tasks of workflows and
# arrays are read with these too.
SELECT_JOB_COLUMNS = select_job_columns(PRIVATE_JOB_READS)

# The database clock (clock_timestamp(): now() stands still for a whole transaction).
NOW = f"SELECT {_NOW}"

# One job, by id.
JOB = f"SELECT {SELECT_JOB_COLUMNS} FROM jobs WHERE id = %(id)s"

# Jobs by id (a bigint[]). Differs by necessity: an array, where SQLite reads a JSON list.
JOBS_BY_ID = f"SELECT {SELECT_JOB_COLUMNS} FROM jobs WHERE id = ANY(%(ids)s)"

# The tasks of workflows (a bigint[] of workflow ids), in the order they were submitted.
JOBS_OF_WORKFLOWS = (f"SELECT {SELECT_JOB_COLUMNS} FROM jobs WHERE workflow_id = ANY(%(ids)s) "
                     "ORDER BY id")

# `job list`: newest first, each filter applied only when given (a NULL parameter: no filter;
# the planner drops those branches, since it plans with the values). States and queues are
# text[]; labels a JSON object every one of whose pairs the job's labels must hold (@>: its
# values are strings, so containment is equality per key); a glob is a LIKE pattern with \
# escaping (name_like); `mine`: the role of this session, as the trigger that set submitted_by
# saw it (jobctl.store.postgres.identity); LIMIT NULL is no limit.
LIST_JOBS = f"""
SELECT {SELECT_JOB_COLUMNS} FROM jobs
WHERE (CAST(%(states)s AS text[]) IS NULL OR state = ANY(%(states)s))
  AND (CAST(%(queues)s AS text[]) IS NULL OR queue = ANY(%(queues)s))
  AND (CAST(%(name)s AS text) IS NULL OR name = %(name)s)
  AND (CAST(%(name_like)s AS text) IS NULL OR name LIKE %(name_like)s ESCAPE '\\')
  AND (CAST(%(schedule)s AS text) IS NULL
       OR schedule_id = (SELECT id FROM schedules WHERE name = %(schedule)s))
  AND (CAST(%(labels)s AS jsonb) IS NULL OR labels @> CAST(%(labels)s AS jsonb))
  AND (CAST(%(submitted_by)s AS text) IS NULL OR submitted_by = %(submitted_by)s)
  AND (NOT %(mine)s OR submitted_by = session_user)
ORDER BY id DESC
LIMIT %(limit)s"""

# A job's ended attempts, each with the name of the worker that ran it and what it used.
ATTEMPTS = """
SELECT a.attempt, a.worker_id, w.name, a.started_at, a.finished_at, a.outcome,
       a.exit_code, a.signal, a.error, a.cpu_user_s, a.cpu_system_s, a.max_rss_bytes,
       a.oom_killed
FROM attempts a LEFT JOIN workers w ON w.id = a.worker_id
WHERE a.job_id = %(job_id)s ORDER BY a.attempt"""

# Its running attempt, which has no `attempts` row until it ends: from the job's own row.
RUNNING_ATTEMPT = f"""
SELECT j.attempt, j.worker_id, w.name, j.started_at
FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id
WHERE j.id = %(job_id)s AND j.state = '{JobState.RUNNING.value}'"""

# One attempt's output after a sequence number, in the order it was written; one stream or
# both (NULL).
LOGS = """
SELECT stream, seq, data FROM job_logs
WHERE job_id = %(job_id)s AND attempt = %(attempt)s AND seq > %(after)s
  AND (CAST(%(stream)s AS text) IS NULL OR stream = %(stream)s)
ORDER BY seq LIMIT %(limit)s"""

# The jobs a job depends on, with their states (NULL: pruned since).
WAITS_FOR = """
SELECT d.depends_on, d.condition, other.state
FROM job_deps d LEFT JOIN jobs other ON other.id = d.depends_on
WHERE d.job_id = %(job_id)s ORDER BY d.depends_on"""

# The jobs that depend on a job, with their states.
NEEDED_BY = """
SELECT d.job_id, d.condition, j.state
FROM job_deps d JOIN jobs j ON j.id = d.job_id
WHERE d.depends_on = %(job_id)s ORDER BY d.job_id"""
