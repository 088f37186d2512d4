"""PostgreSQL: the SQL of jobctl.store.retention (see its RetentionSQL protocol)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobctl.models import FINAL_STATES, sql_states
from jobctl.store.retention import AGE_FROM, HAS_OUTPUT, NEEDED_BY_UNFINISHED, TABLES

if TYPE_CHECKING:
    from jobctl.store.direct import Conn

# The lists of states and ids below are arrays (bigint[], text[]). Differs by necessity:
# SQLite reads JSON lists with json_each.

# Old enough: in one of the states asked for, and finished (jobctl.store.retention.AGE_FROM)
# before the cutoff.
_OLD_ENOUGH = f"jobs.state = ANY(%(states)s) AND {AGE_FROM} < %(cutoff)s"

# Whether this session may delete what pruning deletes: jobctl_admin's alone, where the roles
# of jobctl.store.postgres.roles exist (the tables' owner, and a superuser, may).
MAY_DELETE = ("SELECT has_table_privilege('jobs', 'DELETE') "
              "AND has_table_privilege('job_logs', 'DELETE') "
              "AND has_table_privilege('attempts', 'DELETE')")

# How many jobs are old enough but kept for their dependents
# (jobctl.store.retention.NEEDED_BY_UNFINISHED).
COUNT_KEPT = f"SELECT count(*) FROM jobs WHERE {_OLD_ENOUGH} AND {NEEDED_BY_UNFINISHED}"

# The next batch by id (keyset: each batch starts after the last one's highest id); with
# --logs-only, only jobs that still have output.
NEXT_BATCH = f"""
SELECT id FROM jobs
WHERE id > %(after_id)s AND {_OLD_ENOUGH} AND NOT {NEEDED_BY_UNFINISHED}
  AND (NOT %(logs_only)s OR {HAS_OUTPUT})
ORDER BY id LIMIT %(batch)s"""
# When deleting: lock what we delete, so that a submit that makes one of them a dependency (and
# locks it to check it exists) either waits for us or is seen by the check above; SKIP LOCKED
# leaves rows someone is busy with for the next run. Differs by necessity: SQLite's write
# transaction (BEGIN IMMEDIATE) holds the whole database already.
NEXT_BATCH_TO_DELETE = NEXT_BATCH + "\nFOR UPDATE OF jobs SKIP LOCKED"

# What a batch holds, in one round trip: its output (chunks and bytes) and its attempts.
COUNT_BATCH = """
SELECT (SELECT count(*) FROM job_logs WHERE job_id = ANY(%(ids)s)),
       (SELECT coalesce(sum(length(data)), 0) FROM job_logs WHERE job_id = ANY(%(ids)s)),
       (SELECT count(*) FROM attempts WHERE job_id = ANY(%(ids)s))"""

# Children first: the foreign keys cascade too, but explicit deletes do not depend on SQLite's
# foreign_keys pragma being on for the connection. The jobs themselves only while final.
DELETE_LOGS = "DELETE FROM job_logs WHERE job_id = ANY(%(ids)s)"
DELETE_ATTEMPTS = "DELETE FROM attempts WHERE job_id = ANY(%(ids)s)"
DELETE_DEPS = "DELETE FROM job_deps WHERE job_id = ANY(%(ids)s)"
DELETE_JOBS = f"DELETE FROM jobs WHERE id = ANY(%(ids)s) AND state IN ({sql_states(FINAL_STATES)})"

# Row counts of every table in one statement, with each one's on-disk size (its indexes and
# TOAST included). The names are TABLES, never input.
TABLE_SIZES = " UNION ALL ".join(
    f"SELECT '{name}', count(*), pg_total_relation_size('{name}') FROM {name}" for name in TABLES)


def after_batch(took_s: float) -> None:
    """Nothing: writers do not wait for each other's whole transactions here (row locks)."""


def table_sizes(conn: Conn) -> dict[str, tuple[int, int | None]]:
    return {name: (int(count), int(size))
            for name, count, size in conn.execute(TABLE_SIZES).fetchall()}
