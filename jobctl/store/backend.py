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

    from jobctl.errors import DatabaseUnavailable, PermissionDenied
    from jobctl.store import (
        arrays,
        audit,
        capacity,
        checks,
        deps,
        jobs,
        names,
        overdue,
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
              connecting: bool) -> DatabaseUnavailable | PermissionDenied | None:
        """What a driver error means for jobctl (see direct.database_error), or None when it is
        no matter of the database's reachability or of this role's rights."""

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
        """Held while one process creates or upgrades the schema (around its transaction)."""

    def lock_schema(self, connection: sa.Connection) -> None:
        """Taken first in the transaction that creates or upgrades the schema (held until it
        ends), so that the revision read next is the one to upgrade from."""

    # --- roles and permissions (`jobctl db roles|grant|revoke`; PostgreSQL's alone) ----------

    def apply_roles(self, raw: Any, *, create: bool) -> bool:
        """In the caller's transaction on driver connection `raw`: create the group roles
        (when `create`) and give them their rights on the schema; with `create` False, only
        where the roles exist already (`db upgrade`). Returns whether it applied them. A
        backend without roles raises InvalidInput when `create` (it has none to make)."""

    def set_membership(self, raw: Any, group: str, login: str, *, grant: bool) -> bool:
        """Grant or revoke a group role to a login role; returns whether that changed
        anything. NotFound when `login` is no role; InvalidInput when it cannot log in."""

    # --- the SQL of each entity: the backend package's module for it (see SqlModules) ---------

    sql_schema: SchemaSQL
    sql_queue: queue.QueueSQL
    sql_workers: workers.WorkersSQL
    sql_deps: deps.DepsSQL
    sql_schedules: schedules.SchedulesSQL
    sql_workflows: workflows.WorkflowsSQL
    sql_reads: reads.ReadsSQL
    sql_jobs: jobs.JobsSQL
    sql_submit: submit.SubmitSQL
    sql_names: names.NamesSQL
    sql_retention: retention.RetentionSQL
    sql_stats: stats.StatsSQL
    sql_capacity: capacity.CapacitySQL
    sql_checks: checks.ChecksSQL
    sql_overdue: overdue.OverdueSQL
    sql_arrays: arrays.ArraysSQL
    sql_audit: audit.AuditSQL


class _EntitySQL:
    """A backend class's `sql_<entity>` attribute: the module `<entity>` of the package the class
    is defined in, imported on first use (a command imports only the SQL it runs)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.entity = name.removeprefix("sql_")

    def __get__(self, instance: object, owner: type) -> Any:
        module = importlib.import_module(f"{owner.__module__}.{self.entity}")
        if instance is not None:  # kept on the instance: the next use is a plain attribute
            vars(instance)[self.name] = module
        return module


class SqlModules:
    """The `sql_<entity>` attributes of a backend class (see _EntitySQL). That each module
    satisfies its entity's Protocol is mypy's to check, below, once for both backends."""

    (sql_schema, sql_queue, sql_workers, sql_deps, sql_schedules, sql_workflows, sql_reads,
     sql_jobs, sql_submit, sql_names, sql_retention, sql_stats, sql_capacity) = (
        _EntitySQL() for _ in range(13))
    # Dead-man's switches (schedules' alerts, checks).
    sql_checks, sql_overdue = (_EntitySQL() for _ in range(2))
    sql_arrays = _EntitySQL()
    sql_audit = _EntitySQL()


if TYPE_CHECKING:
    # mypy checks each backend's modules against their entities' Protocols here, once for both.
    from jobctl.store.postgres import arrays as pg_arrays
    from jobctl.store.postgres import capacity as pg_capacity
    from jobctl.store.postgres import checks as pg_checks
    from jobctl.store.postgres import deps as pg_deps
    from jobctl.store.postgres import jobs as pg_jobs
    from jobctl.store.postgres import names as pg_names
    from jobctl.store.postgres import overdue as pg_overdue
    from jobctl.store.postgres import queue as pg_queue
    from jobctl.store.postgres import reads as pg_reads
    from jobctl.store.postgres import retention as pg_retention
    from jobctl.store.postgres import schedules as pg_schedules
    from jobctl.store.postgres import schema as pg_schema
    from jobctl.store.postgres import stats as pg_stats
    from jobctl.store.postgres import submit as pg_submit
    from jobctl.store.postgres import workers as pg_workers
    from jobctl.store.postgres import workflows as pg_workflows
    from jobctl.store.sqlite import arrays as lite_arrays
    from jobctl.store.sqlite import capacity as lite_capacity
    from jobctl.store.sqlite import checks as lite_checks
    from jobctl.store.sqlite import deps as lite_deps
    from jobctl.store.sqlite import jobs as lite_jobs
    from jobctl.store.sqlite import names as lite_names
    from jobctl.store.sqlite import overdue as lite_overdue
    from jobctl.store.sqlite import queue as lite_queue
    from jobctl.store.sqlite import reads as lite_reads
    from jobctl.store.sqlite import retention as lite_retention
    from jobctl.store.sqlite import schedules as lite_schedules
    from jobctl.store.sqlite import schema as lite_schema
    from jobctl.store.sqlite import stats as lite_stats
    from jobctl.store.sqlite import submit as lite_submit
    from jobctl.store.sqlite import workers as lite_workers
    from jobctl.store.sqlite import workflows as lite_workflows

    def _alerts_conform(checks: checks.ChecksSQL, overdue: overdue.OverdueSQL) -> None: ...

    _alerts_conform(pg_checks, pg_overdue)
    _alerts_conform(lite_checks, lite_overdue)

    def _conforms(schema: SchemaSQL, queue: queue.QueueSQL, workers: workers.WorkersSQL,
                  deps: deps.DepsSQL, schedules: schedules.SchedulesSQL,
                  workflows: workflows.WorkflowsSQL, reads: reads.ReadsSQL, jobs: jobs.JobsSQL,
                  submit: submit.SubmitSQL, names: names.NamesSQL,
                  retention: retention.RetentionSQL, stats: stats.StatsSQL,
                  capacity: capacity.CapacitySQL) -> None: ...

    _conforms(pg_schema, pg_queue, pg_workers, pg_deps, pg_schedules, pg_workflows, pg_reads,
              pg_jobs, pg_submit, pg_names, pg_retention, pg_stats, pg_capacity)
    _conforms(lite_schema, lite_queue, lite_workers, lite_deps, lite_schedules, lite_workflows,
              lite_reads, lite_jobs, lite_submit, lite_names, lite_retention, lite_stats,
              lite_capacity)

    from jobctl.store.postgres import PostgresBackend
    from jobctl.store.sqlite import SqliteBackend

    def _arrays_conform(arrays: arrays.ArraysSQL) -> None: ...

    _arrays_conform(pg_arrays)
    _arrays_conform(lite_arrays)

    from jobctl.store.postgres import audit as pg_audit
    from jobctl.store.sqlite import audit as lite_audit

    def _audit_conforms(audit: audit.AuditSQL) -> None: ...

    _audit_conforms(pg_audit)
    _audit_conforms(lite_audit)

    _BACKENDS: tuple[Backend, ...] = (PostgresBackend(), SqliteBackend())


def backend_for(location: Location) -> Backend:
    """The backend of `location` (its package is imported on first use: SQLite never imports
    psycopg)."""
    module = importlib.import_module(BACKENDS[location.backend])
    backend: Backend = module.BACKEND
    return backend
