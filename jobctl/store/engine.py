"""The database handle: an engine from a URL, SQLite pragmas, schema checks and connect errors.

`Database.write()` opens a transaction that may write; on SQLite it is `BEGIN IMMEDIATE`, which
takes the write lock up front so two writers queue for it instead of failing on a lock upgrade.
`Database.read()` opens a plain (deferred) one that never blocks a writer. On SQLite both wait
for a lock another process holds as the direct road does (store.direct: the busy timeout, then
retries with backoff up to SQLITE_LOCK_WAIT_S, then DatabaseLocked): the connection's set-up,
BEGIN (and a read's first read) and COMMIT are issued by this module's hooks, on the driver's
connection, each retried while busy.

Creating the schema on first use is serialised between processes (`_migration_lock`: a lock
file beside the SQLite file, an advisory lock on PostgreSQL), and whoever gets the lock checks
again whether it is still needed: two processes that meet a new, empty database at once create
it once, and neither sees a half-made schema (the migrations run in one transaction).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from jobctl.config import redact
from jobctl.errors import DatabaseLocked, DatabaseUnavailable, InvalidInput, SchemaOutOfDate
from jobctl.store import SCHEMA_REVISION
from jobctl.store.direct import (
    PG_CONNECTION_OPTIONS,
    SQLITE_BUSY_TIMEOUT_MS,
    DirectDatabase,
    Location,
    LockWait,
    begin_sqlite,
    commit_sqlite,
    first_line,
    is_disconnect,
    is_sqlite_busy,
    locate,
    not_an_sqlite_database,
    setup_sqlite,
)

_MIGRATION_LOCK_ID = 0x6A6F6263746C  # "jobctl": the advisory lock that serialises migrations


def parse_url(text: str) -> sa.URL:
    """A SQLAlchemy URL for `postgresql://…` (psycopg 3) or `sqlite:///path`."""
    try:
        url = sa.make_url(text)
        url.port  # noqa: B018 - parsed lazily; a port that is not a number raises here
    except (sa.exc.ArgumentError, ValueError) as error:
        raise InvalidInput(
            f"invalid database URL {redact(text)!r}: use postgresql://user@host/db or sqlite:///path"
        ) from error
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise InvalidInput("an SQLite database URL needs a file path: sqlite:///path/to/jobctl.db")
        return url.set(drivername="sqlite")
    raise InvalidInput(
        f"unsupported database {backend!r} in {redact(text)!r}: use postgresql:// or sqlite:///"
    )


def describe(url: sa.URL) -> str:
    """Where a database is, for messages: host and port, or the SQLite file. Never a password."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    host = url.host or "localhost (socket)"
    return f"PostgreSQL at {host}:{url.port or 5432}/{url.database or ''}"


class Database:
    """One database, as a URL and a lazily created engine."""

    def __init__(self, url: str | sa.URL, *, pool_size: int = 5) -> None:
        self.url = parse_url(url) if isinstance(url, str) else url
        self.is_postgres = self.url.get_backend_name() == "postgresql"
        self.where = describe(self.url)
        self._pool_size = pool_size
        self._engine: sa.Engine | None = None
        self._schema_checked = False

    @property
    def conninfo(self) -> str:
        """The URL as psycopg takes it (for a listener's own connection)."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def direct(self) -> DirectDatabase:
        """This database through its driver alone (store.direct), schema unchecked. A URL the
        direct road does not parse itself (SQLite with options) gets its driver connections
        made as SQLAlchemy would make them."""
        location = locate(self.url.render_as_string(hide_password=False))
        if location is not None:
            return DirectDatabase(location)
        dialect = self.engine.dialect
        args, options = dialect.create_connect_args(self.url)
        if self.is_postgres:
            options = {**options, **PG_CONNECTION_OPTIONS}
        else:
            options = {**options, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        return DirectDatabase(Location(self.is_postgres, str(self.url.database), self.where),
                              connect=lambda: dialect.connect(*args, **options))

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> sa.Engine:
        if self.is_postgres:
            return sa.create_engine(
                self.url,
                pool_size=self._pool_size,
                max_overflow=self._pool_size,
                pool_pre_ping=True,
                connect_args=dict(PG_CONNECTION_OPTIONS),
            )
        path = Path(str(self.url.database))
        if not path.parent.exists():
            raise DatabaseUnavailable(
                f"cannot open {self.where}: directory {path.parent} does not exist"
            )
        engine = sa.create_engine(
            self.url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            poolclass=sa.pool.QueuePool,
            pool_size=self._pool_size,
            max_overflow=self._pool_size,
        )
        _install_sqlite_hooks(engine, self.where)
        return engine

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.translate_errors(), self.engine.connect() as connection, connection.begin():
            yield connection

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        with self.translate_errors(), self.engine.connect() as connection:
            connection = connection.execution_options(jobctl_sqlite_begin="IMMEDIATE")
            with connection.begin():
                yield connection

    @contextlib.contextmanager
    def translate_errors(self) -> Iterator[None]:
        """Connection failures become one line naming the database, never its password; an
        SQLite lock held elsewhere where no retry applies is DatabaseLocked."""
        try:
            yield
        except sa.exc.OperationalError as error:
            if self.is_postgres and not _is_disconnect(error):
                raise
            if not self.is_postgres and is_sqlite_busy(error.orig):
                raise DatabaseLocked(f"{self.where} is locked by another process: "
                                     f"{first_line(error)}") from error
            raise DatabaseUnavailable(f"cannot reach {self.where}: {first_line(error)}") from error
        except sa.exc.DBAPIError as error:
            if error.connection_invalidated:
                raise DatabaseUnavailable(f"lost {self.where}: {first_line(error)}") from error
            if not self.is_postgres and not_an_sqlite_database(error.orig):
                raise DatabaseUnavailable(
                    f"cannot use {self.where}: {first_line(error)}") from error
            raise
        except Exception as error:
            # The driver's own errors, from the hooks that set up, begin and commit on it.
            if self.is_postgres or type(error).__module__ != "sqlite3":
                raise
            if not_an_sqlite_database(error):
                raise DatabaseUnavailable(
                    f"cannot use {self.where}: {first_line(error)}") from error
            if is_sqlite_busy(error):
                raise DatabaseLocked(f"{self.where} is locked by another process: "
                                     f"{first_line(error)}") from error
            import sqlite3

            if isinstance(error, sqlite3.OperationalError):
                raise DatabaseUnavailable(
                    f"cannot reach {self.where}: {first_line(error)}") from error
            raise

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    # --- schema -------------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        """The database's Alembic revision, or None when it has no jobctl schema yet."""
        # A catalog query, not sa.inspect(): the inspector costs a tenth of a second to import.
        exists = (
            "SELECT to_regclass('alembic_version') IS NOT NULL" if self.is_postgres
            else "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'alembic_version'"
        )
        with self.read() as connection:
            if not connection.execute(sa.text(exists)).scalar():
                return None
            return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    def ensure_schema(self) -> None:
        """Create the schema in an empty database; refuse one at another revision."""
        if self._schema_checked:
            return
        revision = self.current_revision()
        if revision is None:
            self.upgrade()
        elif revision != SCHEMA_REVISION:
            raise SchemaOutOfDate(
                f"{self.where} has schema revision {revision}, this jobctl needs "
                f"{SCHEMA_REVISION}: run `jobctl db upgrade`"
            )
        self._schema_checked = True

    def upgrade(self) -> tuple[str | None, str]:
        """Migrate to the newest revision; returns (revision before, revision after)."""
        with self.translate_errors(), self._migration_lock():
            before = self.current_revision()  # again: another process may have done it
            if before != SCHEMA_REVISION:
                from jobctl.store.migrate import upgrade_to_head

                # A writer from the start (SQLite: BEGIN IMMEDIATE): a deferred transaction
                # that read first could not wait for the write lock when it came to write.
                with self.write() as connection:
                    upgrade_to_head(connection)
        self._schema_checked = True
        return before, SCHEMA_REVISION

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """Two processes that meet an empty database at once must not both create the schema."""
        if self.is_postgres:
            with self.engine.connect() as connection:
                lock = {"id": _MIGRATION_LOCK_ID}
                connection.execute(sa.text("SELECT pg_advisory_lock(:id)"), lock)
                connection.commit()
                try:
                    yield
                finally:
                    connection.execute(
                        sa.text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID}
                    )
                    connection.commit()
            return
        import fcntl

        lock_path = f"{self.url.database}.migrate-lock"
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as error:
            raise DatabaseUnavailable(
                f"cannot open {self.where}: cannot create its lock file {lock_path}: "
                f"{error.strerror}") from error
        try:
            # Not forever: as long as for any other lock (LockWait), then a message naming it.
            wait = LockWait(self.where)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    wait.pause(f"the schema-creation lock {lock_path}",
                               holder="another jobctl (creating or upgrading the schema)")
            yield
        finally:
            os.close(fd)


def _is_disconnect(error: sa.exc.DBAPIError) -> bool:
    return error.connection_invalidated or is_disconnect(error.orig)


def _install_sqlite_hooks(engine: sa.Engine, where: str) -> None:
    """WAL and a busy timeout on every connection; BEGIN and COMMIT issued by us (IMMEDIATE for
    writers), each retried while another process holds the lock it needs (store.direct)."""

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Issued on the driver's connection: the retries must see the driver's own errors.
        setup_sqlite(dbapi_connection, LockWait(where))

    @event.listens_for(engine, "begin")
    def on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get("jobctl_sqlite_begin", "DEFERRED")
        begin_sqlite(connection.connection.driver_connection, f"BEGIN {mode}", LockWait(where))

    @event.listens_for(engine, "commit")
    def on_commit(connection: sa.Connection) -> None:
        # SQLAlchemy's own commit() after this one finds no transaction and does nothing.
        commit_sqlite(connection.connection.driver_connection, LockWait(where))


def open_database(url: str | None = None, *, migrate: bool = True, pool_size: int = 5) -> Database:
    """The configured database, with its schema checked (and created when it is empty)."""
    from jobctl.config import default_database_url, resolve_database_url

    text = resolve_database_url(url)
    if text == default_database_url():
        Path(str(sa.make_url(text).database)).parent.mkdir(parents=True, exist_ok=True)
    database = Database(text, pool_size=pool_size)
    if migrate:
        database.ensure_schema()
    return database
