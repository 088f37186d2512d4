"""PostgreSQL: the SQL of jobctl.store.stats (see its StatsSQL protocol)."""

from jobctl.models import FINAL_STATES, JobState, sql_states
from jobctl.store import stats as shared

# StatsSQL.QUEUE_STATS (jobctl.store.stats says what each branch counts and why in this order).
QUEUE_STATS = f"""
SELECT 'oldest', queue, NULL, NULL, min(run_at) FROM jobs
WHERE state = '{JobState.QUEUED.value}' AND run_at <= %(now)s
GROUP BY queue
UNION ALL
{shared.QUEUE_DEPTH}
UNION ALL
SELECT 'ended', queue, state, count(*), NULL FROM jobs
WHERE state IN ({sql_states(FINAL_STATES)}) AND finished_at >= %(since)s
GROUP BY queue, state"""

# The attempts that ran to their end within the window (jobctl.store.stats.RAN_TO_THE_END),
# with their job's queue and what they used: `stats` computes their percentiles in Python, the
# one answer on both backends. ix_attempts_finished_at finds them.
ATTEMPTS_ENDED = f"""
SELECT j.queue, a.started_at, a.finished_at, a.cpu_user_s, a.cpu_system_s, a.max_rss_bytes
FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.finished_at >= %(since)s AND a.outcome IN {shared.RAN_TO_THE_END}"""

# The running jobs, longest-running first, with the name of the worker that runs each
# (jobctl.store.stats.RUNNING_LONGEST_FIRST), at most :limit.
RUNNING_JOBS = f"""{shared.RUNNING_LONGEST_FIRST}
LIMIT %(limit)s"""

# The latest failures (failed or lost), newest first (jobctl.store.stats.FAILURES_NEWEST_FIRST),
# at most :limit.
RECENT_FAILURES = f"""{shared.FAILURES_NEWEST_FIRST}
LIMIT %(limit)s"""
