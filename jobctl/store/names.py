"""Short look-ups for shell completion: ids and names that start with what was typed.

A person is waiting on the Tab key, so these use the database drivers directly (the standard
library's sqlite3, or psycopg) rather than SQLAlchemy, whose import alone costs more than the
whole look-up; each is one small query returning at most `limit` rows, most useful first. They
never create or migrate a database: a missing one, or one without the tables, is an error the
caller swallows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

CONNECT_TIMEOUT_S = 2  # libpq's least; the caller stops waiting sooner


@contextlib.contextmanager
def connect(url: str) -> Iterator[Any]:
    """A DB-API connection for a jobctl database URL (parsed by store.url, as everywhere)."""
    from jobctl.store.url import parse

    location = parse(url)
    if location.backend == "postgresql":  # TRANSITIONAL: the backend connects
        import psycopg

        connection: Any = psycopg.connect(location.target, connect_timeout=CONNECT_TIMEOUT_S,
                                          autocommit=True, application_name="jobctl-complete")
    else:
        import sqlite3
        from urllib.parse import quote

        # mode=rw: open only a file that exists; completing must never create a database.
        connection = sqlite3.connect(f"file:{quote(location.target)}?mode=rw", uri=True,
                                     timeout=0.5)
    try:
        yield connection
    finally:
        connection.close()


def _rows(connection: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    # The two drivers differ only in their placeholder: sqlite3 takes ?, psycopg %s.
    if not type(connection).__module__.startswith("sqlite3"):
        sql = sql.replace("?", "%s")
    cursor = connection.cursor()
    try:
        cursor.execute(sql, params)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _like(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def recent_jobs(connection: Any, prefix: str, limit: int) -> list[tuple[int, str, str]]:
    """(id, name, state) of jobs whose id starts with `prefix`, newest first."""
    rows = _rows(connection,
                 # Newest first by the primary key; the prefix test reads only what it returns.
                 "SELECT id, coalesce(name, ''), state FROM jobs"
                 " WHERE CAST(id AS TEXT) LIKE ? ESCAPE '\\' ORDER BY id DESC LIMIT ?",
                 (_like(prefix), limit))
    return [(int(job_id), str(name), str(state)) for job_id, name, state in rows]


def queue_names(connection: Any, prefix: str, limit: int) -> list[str]:
    """Queues that jobs were submitted to, by name."""
    rows = _rows(connection,
                 "SELECT DISTINCT queue FROM jobs WHERE queue LIKE ? ESCAPE '\\'"
                 " ORDER BY queue LIMIT ?", (_like(prefix), limit))
    return [str(queue) for (queue,) in rows]


def worker_names(connection: Any, prefix: str, limit: int) -> list[tuple[str, str]]:
    """(name, state) of workers, newest first; a name reused by a restarted worker once."""
    rows = _rows(connection,
                 "SELECT name, state FROM workers WHERE name LIKE ? ESCAPE '\\'"
                 " ORDER BY id DESC LIMIT ?", (_like(prefix), limit * 4))
    seen: dict[str, str] = {}
    for name, state in rows:
        seen.setdefault(str(name), str(state))
    return list(seen.items())[:limit]


def schedule_names(connection: Any, prefix: str, limit: int) -> list[str]:
    rows = _rows(connection,
                 "SELECT name FROM schedules WHERE name LIKE ? ESCAPE '\\' ORDER BY name LIMIT ?",
                 (_like(prefix), limit))
    return [str(name) for (name,) in rows]


def workflow_ids(connection: Any, prefix: str, limit: int) -> list[tuple[int, str]]:
    """(id, name) of workflows whose id starts with `prefix`, newest first."""
    rows = _rows(connection,
                 "SELECT id, name FROM workflows WHERE CAST(id AS TEXT) LIKE ? ESCAPE '\\'"
                 " ORDER BY id DESC LIMIT ?", (_like(prefix), limit))
    return [(int(workflow_id), str(name)) for workflow_id, name in rows]


class NamesSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.names): its statements,
    named and commented, in its driver's own parameter style, and any step that differs by
    necessity."""
