"""SQLite: the SQL of jobctl.store.reads (see its ReadsSQL protocol)."""

from jobctl.models import JobState
from jobctl.store.reads import SELECT_JOB_COLUMNS
from jobctl.store.sqlite import NOW as _NOW

# The database clock.
NOW = f"SELECT {_NOW}"

# One job, by id.
JOB = f"SELECT {SELECT_JOB_COLUMNS} FROM jobs WHERE id = :id"

# Jobs by id. Differs by necessity: a JSON list read with json_each, where PostgreSQL takes an
# array.
JOBS_BY_ID = (f"SELECT {SELECT_JOB_COLUMNS} FROM jobs "
              "WHERE id IN (SELECT value FROM json_each(:ids))")

# The tasks of workflows (a JSON list of workflow ids), in the order they were submitted.
JOBS_OF_WORKFLOWS = (f"SELECT {SELECT_JOB_COLUMNS} FROM jobs "
                     "WHERE workflow_id IN (SELECT value FROM json_each(:ids)) ORDER BY id")

# `job list`: newest first, each filter applied only when given (a NULL parameter: no filter).
# States and queues are JSON lists; labels a JSON object every one of whose pairs the job's
# labels must hold (json_each rather than a JSON path: any key works, quotes and dots
# included); a glob is a LIKE pattern with \ escaping (name_like). Differs by necessity: JSON
# lists and json_each where PostgreSQL has arrays and @>, LIMIT -1 for no limit, and `mine` as
# `:me`, this process's Unix user (store.identity), where PostgreSQL asks session_user.
LIST_JOBS = f"""
SELECT {SELECT_JOB_COLUMNS} FROM jobs
WHERE (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
  AND (:queues IS NULL OR queue IN (SELECT value FROM json_each(:queues)))
  AND (:name IS NULL OR name = :name)
  AND (:name_like IS NULL OR name LIKE :name_like ESCAPE '\\')
  AND (:schedule IS NULL OR schedule_id = (SELECT id FROM schedules WHERE name = :schedule))
  AND (:labels IS NULL OR NOT EXISTS (
        SELECT 1 FROM json_each(:labels) AS wanted
        WHERE NOT EXISTS (SELECT 1 FROM json_each(jobs.labels) AS held
                          WHERE held.key = wanted.key AND held.value = wanted.value)))
  AND (:submitted_by IS NULL OR submitted_by = :submitted_by)
  AND (NOT :mine OR submitted_by = :me)
ORDER BY id DESC
LIMIT coalesce(:limit, -1)"""

# A job's ended attempts, each with the name of the worker that ran it and what it used.
ATTEMPTS = """
SELECT a.attempt, a.worker_id, w.name, a.started_at, a.finished_at, a.outcome,
       a.exit_code, a.signal, a.error, a.cpu_user_s, a.cpu_system_s, a.max_rss_bytes,
       a.oom_killed
FROM attempts a LEFT JOIN workers w ON w.id = a.worker_id
WHERE a.job_id = :job_id ORDER BY a.attempt"""

# Its running attempt, which has no `attempts` row until it ends: from the job's own row.
RUNNING_ATTEMPT = f"""
SELECT j.attempt, j.worker_id, w.name, j.started_at
FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id
WHERE j.id = :job_id AND j.state = '{JobState.RUNNING.value}'"""

# One attempt's output after a sequence number, in the order it was written; one stream or
# both (NULL).
LOGS = """
SELECT stream, seq, data FROM job_logs
WHERE job_id = :job_id AND attempt = :attempt AND seq > :after
  AND (:stream IS NULL OR stream = :stream)
ORDER BY seq LIMIT :limit"""

# The jobs a job depends on, with their states (NULL: pruned since).
WAITS_FOR = """
SELECT d.depends_on, d.condition, other.state
FROM job_deps d LEFT JOIN jobs other ON other.id = d.depends_on
WHERE d.job_id = :job_id ORDER BY d.depends_on"""

# The jobs that depend on a job, with their states.
NEEDED_BY = """
SELECT d.job_id, d.condition, j.state
FROM job_deps d JOIN jobs j ON j.id = d.job_id
WHERE d.depends_on = :job_id ORDER BY d.job_id"""
