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
from urllib.parse import parse_qsl, unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy import event

from jobctl.errors import DatabaseUnavailable
from jobctl.store import SCHEMA_REVISION
from jobctl.store.direct import (
    PG_CONNECTION_OPTIONS,
    SQLITE_BUSY_TIMEOUT_MS,
    Conn,
    DirectDatabase,
    LockWait,
    begin_sqlite,
    commit_sqlite,
    schema_out_of_date,
    schema_revision,
    setup_sqlite,
    translating_errors,
)
from jobctl.store.url import Location, parse, port_of

_MIGRATION_LOCK_ID = 0x6A6F6263746C  # "jobctl": the advisory lock that serialises migrations


def sqlalchemy_url(url: str | Location) -> sa.URL:
    """A jobctl database URL (parsed by store.url, the one parser) as SQLAlchemy's, for the
    migrations: psycopg 3 for PostgreSQL, the standard library's driver for SQLite."""
    location = parse(url) if isinstance(url, str) else url
    if not location.is_postgres:
        return sa.URL.create("sqlite", database=location.target,
                             query=_query(location.options))
    parts = urlsplit(location.target)
    return sa.URL.create(
        "postgresql+psycopg",
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=parts.hostname, port=port_of(parts.netloc),
        database=unquote(parts.path.removeprefix("/")) or None, query=_query(parts.query))


def _query(text: str) -> dict[str, str | tuple[str, ...]]:
    """A URL's query as SQLAlchemy's URLs hold it: a key given more than once, a tuple."""
    query: dict[str, str | tuple[str, ...]] = {}
    for key, value in parse_qsl(text):
        held = query.get(key)
        query[key] = value if held is None else (*((held,) if isinstance(held, str) else held),
                                                 value)
    return query


class Database:
    """One database, as a URL and a lazily created engine."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url_text = url
        self.location = parse(url)
        self.url = sqlalchemy_url(self.location)
        self.is_postgres = self.location.is_postgres
        self.where = self.location.where
        self._pool_size = pool_size
        self._engine: sa.Engine | None = None
        self._schema_checked = False

    def direct(self) -> DirectDatabase:
        """This database through its driver alone (store.direct), schema unchecked. SQLite
        driver options in the URL (?timeout=5), which the direct road does not apply itself,
        get its driver connections made as SQLAlchemy would make them."""
        if not self.location.options:
            return DirectDatabase(self.location)
        dialect = self.engine.dialect
        args, options = dialect.create_connect_args(self.url)
        options = {**options, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        return DirectDatabase(self.location, connect=lambda: dialect.connect(*args, **options))

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
        path = Path(self.location.target)
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
        with self._connect() as connection, self.translate_errors(), connection.begin():
            yield connection

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        with self._connect() as connection, self.translate_errors():
            connection = connection.execution_options(jobctl_sqlite_begin="IMMEDIATE")
            with connection.begin():
                yield connection

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        """A connection from the engine's pool; failing to make one is DatabaseUnavailable."""
        with translating_errors(self.location, connecting=True):
            connection = self.engine.connect()
        with connection:
            yield connection

    def translate_errors(self) -> contextlib.AbstractContextManager[None]:
        """Driver errors as the direct road gives them (store.direct.database_error): one line
        naming the database, never its password."""
        return translating_errors(self.location)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    # --- schema -------------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        """The database's Alembic revision, or None when it has no jobctl schema yet."""
        with self.read() as connection:
            return schema_revision(Conn.of(connection))

    def ensure_schema(self) -> None:
        """Create the schema in an empty database; refuse one at another revision."""
        if self._schema_checked:
            return
        revision = self.current_revision()
        if revision is None:
            self.upgrade()
        elif revision != SCHEMA_REVISION:
            raise schema_out_of_date(self.where, revision)
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
            with self._connect() as connection:
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

        lock_path = f"{self.location.target}.migrate-lock"
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
        Path(parse(text).target).parent.mkdir(parents=True, exist_ok=True)
    database = Database(text, pool_size=pool_size)
    if migrate:
        database.ensure_schema()
    return database
