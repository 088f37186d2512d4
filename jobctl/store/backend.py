"""The backend protocol: what jobctl needs of a database, and the two that provide it.

A backend is a package, `jobctl.store.postgres` (psycopg) or `jobctl.store.sqlite` (the standard
library's sqlite3). Each holds, together and nowhere else:

- its connection life cycle: connecting, the three kinds of transaction (`read`, `write`, and a
  worker's `turn` on the hot path), committing, and what its driver's errors mean for jobctl;
- how its driver takes and gives values (times, JSON, lists of ids);
- its SQL, per entity (`jobctl.store.<backend>.<entity>`: queue, schedules, …), named and
  commented, in the driver's own parameter style (psycopg's `%(name)s`, sqlite3's `:name`):
  nothing rewrites a statement on its way to the driver. Where the two differ by necessity (SKIP
  LOCKED, COPY, arrays, NOTIFY), the module says so beside the statement.

The entity modules of `jobctl.store` (queue, schedules, deps, …) are the named operations, written
once against `Conn`; each declares what a backend supplies for it as a Protocol
(`queue.QueueSQL`, …), and a backend's `sql_<entity>` property returns its module for that
entity, which mypy checks against the Protocol. tests/store/test_conformance.py runs every
operation on both backends, in the transaction mode production uses.

Which backend a URL names is `store.url.parse`'s answer (`Location.backend`); `backend_for` is the
one place that maps that name to its package. Nothing outside the two packages asks which backend
it is talking to: what differs is a property or an operation of the backend.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import sqlalchemy as sa

    from jobctl.errors import DatabaseUnavailable
    from jobctl.store import (
        deps,
        jobs,
        names,
        queue,
        reads,
        retention,
        schedules,
        stats,
        submit,
        workers,
        workflows,
    )
    from jobctl.store.direct import SchemaSQL
    from jobctl.store.engine import Database
    from jobctl.store.notify import Subscription
    from jobctl.store.url import Location

# A transaction's kind: `read` (never blocks a writer), `write` (may write; SQLite takes the write
# lock up front so that writers queue instead of failing on a lock upgrade), `turn` (a worker's
# hot path: on PostgreSQL no transaction, each statement commits alone).
TransactionKind = Literal["read", "write", "turn"]

# The packages of the backends, by the name store.url gives a URL's backend.
BACKENDS = {"postgresql": "jobctl.store.postgres", "sqlite": "jobctl.store.sqlite"}


class Backend(Protocol):
    """One kind of database, as jobctl uses it (see the module docstring)."""

    # How messages and `db status` name the kind: "PostgreSQL" or "SQLite".
    title: str

    # --- connections and transactions ---------------------------------------------------------

    def connect(self, location: Location) -> Any:
        """A new driver connection to `location`, set up for jobctl (transactions are begun
        explicitly by `begin`). Errors are the driver's; the caller translates them."""

    def prepare(self, raw: Any, where: str) -> None:
        """Set up a driver connection made elsewhere (SQLAlchemy's, for SQLite driver options)
        as `connect` sets up its own."""

    def exists(self, location: Location) -> bool:
        """Whether there can be a database at `location` yet (an SQLite file that does not
        exist holds none; a server is for connecting to find out)."""

    def begin(self, raw: Any, kind: TransactionKind, where: str) -> None:
        """Begin a transaction of `kind` on `raw` (nothing, for a PostgreSQL turn)."""

    def commit(self, raw: Any, kind: TransactionKind, where: str) -> None:
        """Commit what `begin` began."""

    def error(self, error: BaseException, where: str, *,
              connecting: bool) -> DatabaseUnavailable | None:
        """What a driver error means for jobctl (see direct.database_error), or None when it is
        no matter of the database's reachability."""

    def listen_target(self, location: Location) -> str | None:
        """What a LISTEN connection connects to, where the backend notifies; None where nothing
        does (SQLite), and waiters poll instead."""

    def listen(self, location: Location, channels: Sequence[str]) -> Subscription:
        """A connection of its own that receives the notifications of `channels`; only where
        `listen_target` is not None (see jobctl.store.notify.subscribe)."""

    def notify(self, raw: Any, channel: str, payload: str) -> None:
        """Send `payload` on `channel` when the current transaction commits (nothing where the
        backend has no notifications)."""

    # --- values as the driver takes and gives them -------------------------------------------

    def time(self, value: Any) -> datetime | None:
        """An aware UTC datetime from a time column."""

    def time_param(self, value: datetime | None) -> Any:
        """A datetime as the driver binds it to a time column."""

    def json(self, value: Any) -> Any:
        """A JSON column's value, decoded."""

    def json_param(self, value: Any) -> Any:
        """A value for a JSON column (its statement casts it where the backend needs a cast)."""

    def ids_param(self, ids: Sequence[int | str]) -> Any:
        """A list of ids (or names) for one parameter: an array on PostgreSQL, JSON text on
        SQLite (its SQL reads it with json_each)."""

    # --- creating and migrating the schema (SQLAlchemy and Alembic; imported for that alone) --

    def sqlalchemy_engine(self, location: Location, pool_size: int) -> sa.Engine:
        """An engine for the migrations, its connections set up as this road's are."""

    def migration_lock(self, location: Location,
                       database: Database) -> contextlib.AbstractContextManager[None]:
        """Held while one process creates or upgrades the schema."""

    # --- the SQL of each entity ----------------------------------------------------------------

    @property
    def sql_schema(self) -> SchemaSQL: ...

    @property
    def sql_queue(self) -> queue.QueueSQL: ...

    @property
    def sql_workers(self) -> workers.WorkersSQL: ...

    @property
    def sql_deps(self) -> deps.DepsSQL: ...

    @property
    def sql_schedules(self) -> schedules.SchedulesSQL: ...

    @property
    def sql_workflows(self) -> workflows.WorkflowsSQL: ...

    @property
    def sql_reads(self) -> reads.ReadsSQL: ...

    @property
    def sql_jobs(self) -> jobs.JobsSQL: ...

    @property
    def sql_submit(self) -> submit.SubmitSQL: ...

    @property
    def sql_names(self) -> names.NamesSQL: ...

    @property
    def sql_retention(self) -> retention.RetentionSQL: ...

    @property
    def sql_stats(self) -> stats.StatsSQL: ...


def backend_for(location: Location) -> Backend:
    """The backend of `location` (its package is imported on first use: SQLite never imports
    psycopg)."""
    module = importlib.import_module(BACKENDS[location.backend])
    backend: Backend = module.BACKEND
    return backend
