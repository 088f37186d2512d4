"""SQLite: the SQL of jobctl.store.workers (see its WorkersSQL protocol), in sqlite3's
parameter style (`:name`)."""

from jobctl.models import WorkerState
from jobctl.store.sqlite import NOW
from jobctl.store.workers import LIVE_WORKER, WORKERS_WITH_RUNNING_JOBS

# A worker registers itself, running, heartbeat now; its id back. Differs by necessity: the
# queues are stored as the JSON text they are (PostgreSQL casts them to jsonb).
REGISTER = f"""
INSERT INTO workers (name, hostname, pid, queues, concurrency, version, started_at,
                     heartbeat_at, state, resources, tags)
VALUES (:name, :hostname, :pid, :queues, :concurrency, :version, {NOW}, {NOW},
        '{WorkerState.RUNNING.value}', :resources, :tags)
RETURNING id
"""

# A worker's new state (stopped, on its way out), its heartbeat with it.
SET_STATE = f"UPDATE workers SET state = :state, heartbeat_at = {NOW} WHERE id = :id"

# A worker's state (draining: asked to stop); no row: it is gone.
GET_STATE = "SELECT state FROM workers WHERE id = :id"

# The workers of a name, or of an id (NULL: match by name alone).
FIND = "SELECT id, state FROM workers WHERE name = :name OR id = :id"

# Ask a running worker to stop: it drains (finishes what it runs, claims nothing more).
REQUEST_STOP = f"""
UPDATE workers SET state = '{WorkerState.DRAINING.value}'
WHERE id = :id AND state = '{WorkerState.RUNNING.value}'
"""

# The workers (the live ones, unless include_ended), newest first, each with how many jobs it
# runs now (jobctl.store.workers.WORKERS_WITH_RUNNING_JOBS and LIVE_WORKER).
LIST = f"""
{WORKERS_WITH_RUNNING_JOBS}
WHERE :include_ended OR {LIVE_WORKER}
ORDER BY workers.id DESC
"""
