"""Short look-ups for shell completion: ids and names that start with what was typed.

Each returns at most `limit` rows, most useful first, with one indexed or small query: a person
is waiting on the Tab key.
"""

from __future__ import annotations

import sqlalchemy as sa

from jobctl.store.schema import jobs, schedules, workers, workflows


def _id_starts_with(column: sa.ColumnElement[int], prefix: str) -> sa.ColumnElement[bool]:
    return sa.cast(column, sa.String).startswith(prefix, autoescape=True)


def recent_jobs(connection: sa.Connection, prefix: str, limit: int) -> list[tuple[int, str, str]]:
    """(id, name, state) of jobs whose id starts with `prefix`, newest first."""
    query = sa.select(jobs.c.id, jobs.c.name, jobs.c.state).order_by(jobs.c.id.desc()).limit(limit)
    if prefix:
        query = query.where(_id_starts_with(jobs.c.id, prefix))
    return [(row.id, row.name or "", row.state) for row in connection.execute(query)]


def queue_names(connection: sa.Connection, prefix: str, limit: int) -> list[str]:
    """Queues that jobs were submitted to, by name."""
    query = sa.select(jobs.c.queue).distinct().order_by(jobs.c.queue).limit(limit)
    if prefix:
        query = query.where(jobs.c.queue.startswith(prefix, autoescape=True))
    return [row.queue for row in connection.execute(query)]


def worker_names(connection: sa.Connection, prefix: str, limit: int) -> list[tuple[str, str]]:
    """(name, state) of workers, newest first; a name reused by a restarted worker once."""
    query = sa.select(workers.c.name, workers.c.state).order_by(workers.c.id.desc())
    if prefix:
        query = query.where(workers.c.name.startswith(prefix, autoescape=True))
    seen: dict[str, str] = {}
    for row in connection.execute(query.limit(limit * 4)):
        seen.setdefault(row.name, row.state)
    return list(seen.items())[:limit]


def schedule_names(connection: sa.Connection, prefix: str, limit: int) -> list[str]:
    query = sa.select(schedules.c.name).order_by(schedules.c.name).limit(limit)
    if prefix:
        query = query.where(schedules.c.name.startswith(prefix, autoescape=True))
    return [row.name for row in connection.execute(query)]


def workflow_ids(connection: sa.Connection, prefix: str, limit: int) -> list[tuple[int, str]]:
    """(id, name) of workflows whose id starts with `prefix`, newest first."""
    query = (sa.select(workflows.c.id, workflows.c.name).order_by(workflows.c.id.desc())
             .limit(limit))
    if prefix:
        query = query.where(_id_starts_with(workflows.c.id, prefix))
    return [(row.id, row.name) for row in connection.execute(query)]
