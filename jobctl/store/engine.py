"""The database handle: an engine from a URL, SQLite pragmas, schema checks and connect errors.

`Database.write()` opens a transaction that may write; on SQLite it is `BEGIN IMMEDIATE`, which
takes the write lock up front so two writers queue for it instead of failing on a lock upgrade.
`Database.read()` opens a plain (deferred) one that never blocks a writer. On SQLite both wait
for a lock another process holds as the direct road does (store.direct: the busy timeout, then
retries with backoff up to SQLITE_LOCK_WAIT_S, then DatabaseLocked): the connection's set-up,
BEGIN (and a read's first read) and COMMIT are issued by this module's hooks, on the driver's
connection, each retried while busy.

Creating the schema on first use is serialised between processes (a lock file beside the
SQLite file, `_migration_lock`; on PostgreSQL a transaction-scoped advisory lock taken first in
the migration's transaction, `lock_schema`, which a transaction pooler cannot part from it), and
whoever gets the lock checks again whether it is still needed: two processes that meet a new,
empty database at once create it once, and neither sees a half-made schema (the migrations run
in one transaction).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from jobctl.store import SCHEMA_REVISION
from jobctl.store.backend import backend_for
from jobctl.store.direct import (
    Conn,
    DirectDatabase,
    schema_out_of_date,
    schema_revision,
    translating_errors,
)
from jobctl.store.url import parse


class Database:
    """One database, as a URL and a lazily created SQLAlchemy engine: for creating and migrating
    its schema (the engine, its pool and the migration lock are the backend's)."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url_text = url
        self.location = parse(url)
        self.backend = backend_for(self.location)
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
        args, options = dialect.create_connect_args(self.engine.url)
        return DirectDatabase(self.location, connect=lambda: dialect.connect(*args, **options))

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = self.backend.sqlalchemy_engine(self.location, self._pool_size)
        return self._engine

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
            return schema_revision(Conn(connection.connection.driver_connection, self.backend,
                                        self.where))

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
            before = self.current_revision()
            if before != SCHEMA_REVISION:
                from jobctl.store.migrate import upgrade_to_head

                # A writer from the start (SQLite: BEGIN IMMEDIATE): a deferred transaction
                # that read first could not wait for the write lock when it came to write.
                with self.write() as connection:
                    self.backend.lock_schema(connection)
                    # Again, under the lock: another process may have done it meanwhile.
                    before = schema_revision(Conn(connection.connection.driver_connection,
                                                  self.backend, self.where))
                    if before != SCHEMA_REVISION:
                        upgrade_to_head(connection)
        self._schema_checked = True
        return before, SCHEMA_REVISION

    def apply_roles(self, *, create: bool) -> bool:
        """The group roles and their rights (Backend.apply_roles), in one transaction: `db
        roles` (`create`), and `db upgrade` after migrating (only where they exist)."""
        with self.translate_errors(), self.write() as connection:
            return self.backend.apply_roles(connection.connection.driver_connection,
                                            create=create)

    def set_membership(self, group: str, login: str, *, grant: bool) -> bool:
        """`db grant` / `db revoke` (Backend.set_membership), in one transaction."""
        with self.translate_errors(), self.write() as connection:
            return self.backend.set_membership(connection.connection.driver_connection, group,
                                               login, grant=grant)

    def _migration_lock(self) -> contextlib.AbstractContextManager[None]:
        """Two processes that meet an empty database at once must not both create the schema."""
        return self.backend.migration_lock(self.location, self)


def open_database(url: str | None = None, *, pool_size: int = 5) -> Database:
    """The configured database on the migrations' road, its schema unchecked: for `db status`,
    `db upgrade`, and `store.direct.open_or_create` when the database is empty (the one path
    that creates the schema on first use)."""
    from jobctl.config import default_database_url, resolve_database_url

    text = resolve_database_url(url)
    if text == default_database_url():
        Path(parse(text).target).parent.mkdir(parents=True, exist_ok=True)
    return Database(text, pool_size=pool_size)
