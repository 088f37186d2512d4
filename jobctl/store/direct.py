"""The database through its driver alone (psycopg, or the standard library's sqlite3): the one
road every command, worker and scheduler takes to the database. SQLAlchemy and Alembic are
imported only to create or migrate the schema (store.engine), never on this road.

`DirectDatabase` is one database, opened lazily; `read()`, `write()` and `turn()` give a `Conn`
in a transaction of that kind. What differs between PostgreSQL and SQLite (connecting,
beginning and committing, errors, values, each entity's SQL) is the backend's
(jobctl.store.backend); this module is written once for both. URLs are parsed by `store.url`
alone; driver errors are translated by `database_error` alone, for this road and the
migrations' alike.

The worker runs on it (`jobctl worker start`): its main thread on the database's own connection,
with `turn()` for the hot path's statements, and its heartbeat thread on a `clone()`. So does the
scheduler (`jobctl scheduler run`, store.schedules), in `write()` transactions. They, and every
command (jobctl.client), open the database with `open_or_create`, which takes SQLAlchemy's road
only for an empty one.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from jobctl.errors import (
    DatabaseLocked,
    DatabaseUnavailable,
    PermissionDenied,
    SchemaOutOfDate,
)
from jobctl.store import SCHEMA_REVISION
from jobctl.store.backend import Backend, TransactionKind, backend_for
from jobctl.store.url import Location, parse


def locate(url: str) -> Location | None:
    """The database a jobctl URL names (store.url.parse), when its driver alone can open it;
    None for SQLite driver options (?timeout=5), which only SQLAlchemy's dialect applies. A URL
    that is no valid jobctl URL is InvalidInput."""
    location = parse(url)
    return None if location.options else location


class Conn:
    """One driver connection inside a transaction, with its backend: `execute` hands SQL in the
    driver's own parameter style (the backend's SQL modules) to the driver unchanged."""

    def __init__(self, raw: Any, backend: Backend, where: str = "the database") -> None:
        self.raw = raw
        self.backend = backend
        self.where = where

    def execute(self, sql: str, params: dict[str, Any] | Sequence[Any] | None = None) -> Any:
        """Run one statement; returns the driver's cursor (fetchall/fetchone/rowcount)."""
        cursor = self.raw.cursor()
        if params is None:  # psycopg then looks for no placeholders: a literal % stays single
            cursor.execute(sql)
        else:
            cursor.execute(sql, params)
        return cursor

    def executemany(self, sql: str, rows: Sequence[dict[str, Any]]) -> None:
        cursor = self.raw.cursor()
        cursor.executemany(sql, rows)

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        row = self.execute(sql, params).fetchone()
        return row[0] if row is not None else None

    # --- values as the drivers take and give them --------------------------------------------

    def time(self, value: Any) -> datetime | None:
        """An aware UTC datetime from a time column."""
        return self.backend.time(value)

    def time_not_null(self, value: Any) -> datetime:
        """`time()` of a NOT NULL column."""
        result = self.time(value)
        if result is None:
            raise ValueError("a NOT NULL time column held NULL")
        return result

    def time_param(self, value: datetime | None) -> Any:
        """A datetime as this driver should bind it."""
        return self.backend.time_param(value)

    def json(self, value: Any) -> Any:
        """A JSON column's value."""
        return self.backend.json(value)

    def json_param(self, value: Any) -> Any:
        """A value for a JSON column (its statement casts it where the backend needs that)."""
        return self.backend.json_param(value)

    def ids_param(self, ids: Sequence[int | str]) -> Any:
        """A list of ids as one parameter (see Backend.ids_param)."""
        return self.backend.ids_param(ids)

    def notify(self, channel: str, payload: str) -> None:
        """A notification sent when the transaction commits; nothing where the backend has
        none (SQLite)."""
        self.backend.notify(self.raw, channel, payload)


class DirectDatabase:
    """A database opened through its driver; `read()`/`write()` give a `Conn` in a transaction,
    `turn()` one for a worker's hot path.

    It keeps one connection, opened on first use and opened again after it was lost, and runs
    one transaction at a time on it (a lock makes threads take turns). A thread that must not
    wait for another, like a worker's heartbeat, works on a `clone()`: a connection of its own.
    A driver connection is never used by two threads at once.
    """

    def __init__(self, location: Location, connect: Callable[[], Any] | None = None) -> None:
        self.location = location
        self.backend = backend_for(location)
        self.where = location.where
        self._connect_driver = connect
        self._raw: Any = None
        self._lock = threading.Lock()

    @property
    def listen_target(self) -> str | None:
        """What a LISTEN connection connects to, where the backend notifies (PostgreSQL); None
        where nothing does (SQLite), and waiters poll instead."""
        return self.backend.listen_target(self.location)

    @classmethod
    def open(cls, url: str) -> DirectDatabase | None:
        """The database at `url` with its schema checked, or None when the direct road does
        not apply: SQLite driver options only SQLAlchemy applies, a missing SQLite file or an
        empty database (creating one is the migrations' job). An invalid URL is InvalidInput,
        a schema at another revision SchemaOutOfDate, an unreachable server
        DatabaseUnavailable."""
        location = locate(url)
        if location is None:
            return None
        if not backend_for(location).exists(location):
            return None
        return cls(location).checked()

    def checked(self) -> DirectDatabase | None:
        """Itself once its schema is the one this jobctl needs; None (and closed) when it has
        none yet; SchemaOutOfDate when it has another."""
        revision = self.schema_revision()
        if revision is None:
            self.close()
            return None
        if revision != SCHEMA_REVISION:
            self.close()
            raise schema_out_of_date(self.where, revision)
        return self

    def clone(self) -> DirectDatabase:
        """The same database on a connection of its own (opened on first use), for a thread
        that must not take turns with this one's users."""
        return DirectDatabase(self.location, self._connect_driver)

    def schema_revision(self) -> str | None:
        with self.read() as conn:
            return schema_revision(conn)

    @contextlib.contextmanager
    def read(self) -> Iterator[Conn]:
        """A transaction that only reads (it never blocks a writer)."""
        with self._use("read") as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Conn]:
        """A transaction that may write."""
        with self._use("write") as conn:
            yield conn

    @contextlib.contextmanager
    def turn(self) -> Iterator[Conn]:
        """A worker's turn on the hot path. PostgreSQL: no transaction around the statements,
        each commits alone (one round trip and one commit each; the hot path's statements are
        built to be atomic alone). SQLite: one BEGIN IMMEDIATE transaction, one commit for the
        turn."""
        with self._use("turn") as conn:
            yield conn

    def close(self) -> None:
        with self._lock:
            self._close()

    @contextlib.contextmanager
    def _use(self, kind: TransactionKind) -> Iterator[Conn]:
        """The connection (opened if need be), in a transaction of `kind`, committed at the
        end. SQLite: opening, beginning and committing wait for locks other processes hold
        (see jobctl.store.sqlite)."""
        with self._lock:
            try:
                with translating_errors(self.location):
                    if self._raw is None:
                        self._raw = self._connect()
                    self.backend.begin(self._raw, kind, self.where)
                    yield Conn(self._raw, self.backend, self.where)
                    self.backend.commit(self._raw, kind, self.where)
            except BaseException as error:
                if isinstance(error, DatabaseUnavailable) and not isinstance(error,
                                                                           DatabaseLocked):
                    self._close()  # lost, or never there: the next use connects anew
                elif self._raw is not None:
                    # Roll back; a connection that cannot even do that is dropped for a new one.
                    # (One that waited too long for a lock is sound: it is kept.)
                    try:
                        self._raw.rollback()
                    except Exception:
                        self._close()
                raise

    def _close(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()
            self._raw = None

    def _connect(self) -> Any:
        with translating_errors(self.location, connecting=True):
            if self._connect_driver is not None:
                raw = self._connect_driver()
                try:
                    self.backend.prepare(raw, self.where)
                except BaseException:
                    raw.close()
                    raise
                return raw
            return self.backend.connect(self.location)


class SchemaSQL(Protocol):
    """What a backend supplies for the schema check (jobctl.store.<backend>.schema)."""

    HAS_SCHEMA: str  # one row, one boolean column: does the database have a jobctl schema?
    REVISION: str  # one row: its Alembic revision


def schema_revision(conn: Conn) -> str | None:
    """The database's Alembic revision, or None when it has no jobctl schema yet. (A catalog
    query, not SQLAlchemy's inspector: that costs a tenth of a second to import.)"""
    sql: SchemaSQL = conn.backend.sql_schema
    if not conn.scalar(sql.HAS_SCHEMA):
        return None
    revision = conn.scalar(sql.REVISION)
    return str(revision) if revision is not None else None


def schema_out_of_date(where: str, revision: str) -> SchemaOutOfDate:
    return SchemaOutOfDate(f"{where} has schema revision {revision}, this jobctl needs "
                           f"{SCHEMA_REVISION}: run `jobctl db upgrade`")


@contextlib.contextmanager
def translating_errors(location: Location, *, connecting: bool = False) -> Iterator[None]:
    """`database_error` applied to what the block raises."""
    try:
        yield
    except Exception as error:
        translated = database_error(error, location, connecting=connecting)
        if translated is None:
            raise
        raise translated from error


def database_error(error: BaseException, location: Location, *,
                   connecting: bool = False) -> DatabaseUnavailable | PermissionDenied | None:
    """What a driver's error (psycopg's or sqlite3's, or one SQLAlchemy wrapped) means for
    jobctl, as one line naming the database (never its password), or None when it is no matter
    of the database's reachability (the caller re-raises it). Both roads use it: this module's
    connections and the migrations' (store.engine). The backend decides (Backend.error)."""
    return backend_for(location).error(error, location.where, connecting=connecting)


def open_or_create(database_url: str | None) -> DirectDatabase:
    """The configured database (`database_url`, else the configuration's) through its driver
    alone, once it has its schema: for every command (jobctl.client) and the long-running
    processes (`worker start`, `scheduler run`). An empty or missing one is created and migrated
    first, the one thing SQLAlchemy and Alembic are imported for."""
    from jobctl.config import resolve_database_url

    url = resolve_database_url(database_url)
    database = DirectDatabase.open(url)
    if database is None:
        from jobctl.store.engine import open_database

        migrated = open_database(url, pool_size=1)
        try:
            migrated.ensure_schema()
        finally:
            migrated.dispose()
        database = DirectDatabase.open(url) or migrated.direct()
    return database


def is_driver_error(error: BaseException | None) -> bool:
    """An error of psycopg or sqlite3 itself (a deadlock, a serialization failure, an aborted
    transaction): the transaction is lost, the connection may well not be."""
    return type(error).__module__.split(".")[0] in ("psycopg", "sqlite3")

def rolled_back(error: BaseException) -> bool:
    """Whether the database rolled the transaction back to break a deadlock or a serialization
    conflict (SQLSTATE class 40, which psycopg's errors carry): none of it happened, and doing
    it again is the remedy. (SQLite has one writer at a time, so its errors never say this.)"""
    original = getattr(error, "orig", None) or error
    return str(getattr(original, "sqlstate", None) or "").startswith("40")


def first_line(error: BaseException) -> str:
    """The driver's own message, first line only (under a SQLAlchemy error: its `orig`, without
    SQLAlchemy's background link)."""
    original = getattr(error, "orig", None) or error
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__
