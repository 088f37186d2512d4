"""SQLite: the SQL of jobctl.store.stats (see its StatsSQL protocol)."""

from jobctl.models import FAILURE_STATES, FINAL_STATES, UNFINISHED_STATES, JobState, sql_states

# Everything `stats` counts, in one statement (one round trip), one branch per figure, each with
# its own condition so that it keeps its own index:
#   oldest  the longest-due queued job per queue (the claim index: queued rows only), jobs due
#           later not counted. First: PostgreSQL types a UNION's NULL columns from the branches
#           before them, and this one types the last column (a time);
#   depth   jobs not finished, per queue and state (few rows: the claim index's states);
#   ended   jobs that reached a final state within the window, per queue and state. Skipped
#           occurrences are final too, but count as none of succeeded, failed or cancelled.
# :now and :since are the database clock's time, read first (reads.database_now), so that
# every branch and every age is measured against one instant.
QUEUE_STATS = f"""
SELECT 'oldest', queue, NULL, NULL, min(run_at) FROM jobs
WHERE state = '{JobState.QUEUED.value}' AND run_at <= :now
GROUP BY queue
UNION ALL
SELECT 'depth', queue, state, count(*), NULL FROM jobs
WHERE state IN ({sql_states(UNFINISHED_STATES)})
GROUP BY queue, state
UNION ALL
SELECT 'ended', queue, state, count(*), NULL FROM jobs
WHERE state IN ({sql_states(FINAL_STATES)}) AND finished_at >= :since
GROUP BY queue, state"""

# The running jobs, longest-running first, with the name of the worker that runs each.
RUNNING_JOBS = f"""
SELECT jobs.id, jobs.name, jobs.queue, jobs.started_at, workers.name
FROM jobs LEFT OUTER JOIN workers ON workers.id = jobs.worker_id
WHERE jobs.state = '{JobState.RUNNING.value}'
ORDER BY jobs.started_at, jobs.id
LIMIT :limit"""

# The latest failures (failed or lost), newest first.
RECENT_FAILURES = f"""
SELECT id, name, queue, state, exit_code, error, finished_at FROM jobs
WHERE state IN ({sql_states(FAILURE_STATES)})
ORDER BY finished_at DESC, id DESC
LIMIT :limit"""
