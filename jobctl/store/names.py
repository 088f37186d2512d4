"""Short look-ups for shell completion: ids and names that start with what was typed.

A person is waiting on the Tab key, so these take the driver road (`store.direct`: the standard
library's sqlite3, or psycopg) rather than SQLAlchemy, whose import alone costs more than the
whole look-up; each is one small query (the backend's, jobctl.store.<backend>.names) returning
at most `limit` rows, most useful first. They never create or migrate a database, nor check its
schema: a missing one, or one without the tables, is an error the caller swallows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from jobctl.store.direct import Conn, DirectDatabase


@contextlib.contextmanager
def connect(url: str) -> Iterator[Conn]:
    """A read transaction on the database at a jobctl URL (parsed by store.url, as everywhere;
    SQLite driver options, which only SQLAlchemy applies, do not matter to a look-up)."""
    from jobctl.errors import NotFound
    from jobctl.store.url import parse

    database = DirectDatabase(parse(url))
    if not database.backend.exists(database.location):  # completing never creates a database
        raise NotFound(f"no database at {database.where}")
    try:
        with database.read() as conn:
            yield conn
    finally:
        database.close()


def _like(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _matching(conn: Conn, statement: str, prefix: str, limit: int) -> list[tuple[Any, ...]]:
    """The rows of one of the backend's look-ups (NamesSQL) for names starting with `prefix`,
    at most `limit`."""
    return list(conn.execute(statement, {"prefix": _like(prefix), "limit": limit}).fetchall())


def recent_jobs(conn: Conn, prefix: str, limit: int) -> list[tuple[int, str, str]]:
    """(id, name, state) of jobs whose id starts with `prefix`, newest first."""
    rows = _matching(conn, conn.backend.sql_names.RECENT_JOBS, prefix, limit)
    return [(int(job_id), str(name), str(state)) for job_id, name, state in rows]


def queue_names(conn: Conn, prefix: str, limit: int) -> list[str]:
    """Queues that jobs were submitted to, by name."""
    rows = _matching(conn, conn.backend.sql_names.QUEUES, prefix, limit)
    return [str(queue) for (queue,) in rows]


def worker_names(conn: Conn, prefix: str, limit: int) -> list[tuple[str, str]]:
    """(name, state) of workers, newest first; a name reused by a restarted worker once."""
    rows = _matching(conn, conn.backend.sql_names.WORKERS, prefix, limit * 4)
    seen: dict[str, str] = {}
    for name, state in rows:
        seen.setdefault(str(name), str(state))
    return list(seen.items())[:limit]


def schedule_names(conn: Conn, prefix: str, limit: int) -> list[str]:
    rows = _matching(conn, conn.backend.sql_names.SCHEDULES, prefix, limit)
    return [str(name) for (name,) in rows]


def workflow_ids(conn: Conn, prefix: str, limit: int) -> list[tuple[int, str]]:
    """(id, name) of workflows whose id starts with `prefix`, newest first."""
    rows = _matching(conn, conn.backend.sql_names.WORKFLOWS, prefix, limit)
    return [(int(workflow_id), str(name)) for workflow_id, name in rows]


def check_names(conn: Conn, prefix: str, limit: int) -> list[str]:
    rows = _matching(conn, conn.backend.sql_names.CHECKS, prefix, limit)
    return [str(name) for (name,) in rows]


class NamesSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.names): its statements,
    named and commented, in its driver's own parameter style. Each takes :prefix (a LIKE
    pattern, \\ escaping) and :limit."""

    RECENT_JOBS: str  # (id, name or '', state) of jobs whose id starts so, newest first
    QUEUES: str  # queue names of jobs and of queue settings, in order
    WORKERS: str  # (name, state) of workers, newest first
    SCHEDULES: str  # schedule names, in order
    WORKFLOWS: str  # (id, name) of workflows whose id starts so, newest first
    CHECKS: str  # check names, in order
