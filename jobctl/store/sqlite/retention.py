"""SQLite: the SQL of jobctl.store.retention (see its RetentionSQL protocol)."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from jobctl.models import FINAL_STATES, sql_states
from jobctl.store.retention import AGE_FROM, HAS_OUTPUT, NEEDED_BY_UNFINISHED, TABLES

if TYPE_CHECKING:
    from jobctl.store.direct import Conn

# The lists of states and ids below are JSON lists, read with json_each. Differs by necessity:
# PostgreSQL takes arrays.

# Old enough: in one of the states asked for, and finished (jobctl.store.retention.AGE_FROM)
# before the cutoff.
_OLD_ENOUGH = f"jobs.state IN (SELECT value FROM json_each(:states)) AND {AGE_FROM} < :cutoff"

# Whether this session may delete what pruning deletes: always (no roles: whoever can write
# the file may).
MAY_DELETE = "SELECT 1"

# How many jobs are old enough but kept for their dependents
# (jobctl.store.retention.NEEDED_BY_UNFINISHED).
COUNT_KEPT = f"SELECT count(*) FROM jobs WHERE {_OLD_ENOUGH} AND {NEEDED_BY_UNFINISHED}"

# The next batch by id (keyset: each batch starts after the last one's highest id); with
# --logs-only, only jobs that still have output.
NEXT_BATCH = f"""
SELECT id FROM jobs
WHERE id > :after_id AND {_OLD_ENOUGH} AND NOT {NEEDED_BY_UNFINISHED}
  AND (NOT :logs_only OR {HAS_OUTPUT})
ORDER BY id LIMIT :batch"""
# When deleting: the write transaction (BEGIN IMMEDIATE) holds the whole database already.
# Differs by necessity: PostgreSQL locks the rows (FOR UPDATE SKIP LOCKED).
NEXT_BATCH_TO_DELETE = NEXT_BATCH

# What a batch holds, in one round trip: its output (chunks and bytes) and its attempts.
COUNT_BATCH = """
SELECT (SELECT count(*) FROM job_logs WHERE job_id IN (SELECT value FROM json_each(:ids))),
       (SELECT coalesce(sum(length(data)), 0) FROM job_logs
        WHERE job_id IN (SELECT value FROM json_each(:ids))),
       (SELECT count(*) FROM attempts WHERE job_id IN (SELECT value FROM json_each(:ids)))"""

# Children first: the foreign keys cascade too, but explicit deletes do not depend on SQLite's
# foreign_keys pragma being on for the connection. The jobs themselves only while final.
DELETE_LOGS = "DELETE FROM job_logs WHERE job_id IN (SELECT value FROM json_each(:ids))"
DELETE_ATTEMPTS = "DELETE FROM attempts WHERE job_id IN (SELECT value FROM json_each(:ids))"
DELETE_DEPS = "DELETE FROM job_deps WHERE job_id IN (SELECT value FROM json_each(:ids))"
DELETE_JOBS = (f"DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(:ids)) "
               f"AND state IN ({sql_states(FINAL_STATES)})")

# Row counts of every table in one statement. The names are TABLES, never input.
COUNT_ROWS = " UNION ALL ".join(f"SELECT '{name}', count(*) FROM {name}" for name in TABLES)
# Bytes per table, its indexes included, from the dbstat virtual table, which not every build
# of SQLite has ("no such table: dbstat" then, and the sizes are unknown). Differs by
# necessity: PostgreSQL has pg_total_relation_size.
SIZES = """
SELECT m.tbl_name, SUM(s.pgsize) FROM dbstat AS s
JOIN sqlite_master AS m ON m.name = s.name GROUP BY m.tbl_name"""


def after_batch(took_s: float) -> None:
    """SQLite has one writer at a time, and a writer that waits polls for the lock every 100 ms
    at most: were the next batch to take it straight back, workers and clients could wait
    through many batches. Pausing as long as a batch took lets them in."""
    time.sleep(min(took_s, 1.0))


def table_sizes(conn: Conn) -> dict[str, tuple[int, int | None]]:
    rows = {name: int(count) for name, count in conn.execute(COUNT_ROWS).fetchall()}
    try:
        sizes = {name: size for name, size in conn.execute(SIZES).fetchall()}
    except sqlite3.OperationalError as error:  # a failed prepare leaves the transaction as is
        if "dbstat" not in str(error):
            raise
        sizes = {}
    return {name: (count, None if (size := sizes.get(name)) is None else int(size))
            for name, count in rows.items()}
