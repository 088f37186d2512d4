"""The database through its driver alone (the standard library's sqlite3, or psycopg), without
SQLAlchemy, for the commands people type all day and for bulk submit.

SQLAlchemy's import alone takes about 0.3 s on a small machine: more than `jobctl job list` or a
5,000-job `job submit --from-file` needs for everything else. So those commands talk to the
driver directly through `Conn`, which smooths over the two drivers' differences (placeholders,
transactions, how times and JSON come back), and the store functions they use (`store.reads`,
`store.submit`) are written against `Conn` only. Code that already holds a SQLAlchemy connection
calls the same functions through `Conn.of(connection)`, so each query exists once.

What stays with SQLAlchemy (`store.engine`): creating and migrating the schema, and URLs this
module does not understand. `DirectDatabase.open` returns None for those, and the caller takes
the SQLAlchemy road, which also gives the same errors for bad URLs.

The worker runs on it too (`jobctl worker start`): its main thread on the database's own
connection, with `turn()` for the hot path's statements, and its heartbeat thread on a `clone()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from jobctl.errors import DatabaseUnavailable, SchemaOutOfDate
from jobctl.store import SCHEMA_REVISION

SQLITE_BUSY_TIMEOUT_MS = 30_000
# The same connection options as the SQLAlchemy engine's (see store.engine for why).
PG_CONNECTION_OPTIONS: dict[str, int | str] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "application_name": "jobctl",
}
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
    # NORMAL is durable across application crashes in WAL mode; only power loss may drop the
    # last commits. That is the usual trade for a local queue.
    "PRAGMA synchronous=NORMAL",
)
# How SQLite stores a time (UTC, fixed width, so that text order is time order); the same as
# SQLAlchemy's SQLite DateTime and as SQLITE_NOW, where %f gives milliseconds and the trailing
# 000 pads them to microseconds.
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
# clock_timestamp(), not now(): now() stands still for a whole transaction.
PG_NOW = "clock_timestamp()"


def pg_now_plus(seconds_sql: str) -> str:
    """PostgreSQL's current time plus `seconds_sql` (a parameter or a column) seconds."""
    return f"{PG_NOW} + make_interval(secs => {seconds_sql})"


def sqlite_now_plus(seconds_sql: str) -> str:
    """SQLite's current time plus `seconds_sql` (a parameter or a column) seconds, stored alike."""
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', printf('%+.6f seconds', {seconds_sql}))"


@dataclass(frozen=True)
class Location:
    """Where a database is: a PostgreSQL conninfo URL or an SQLite file, and how to name it in
    messages (host and port, or the file; never a password)."""

    is_postgres: bool
    target: str  # the URL psycopg takes, or the SQLite file's path
    where: str


def locate(url: str) -> Location | None:
    """The database a jobctl URL names, or None when only SQLAlchemy's parser should judge it
    (a driver name we do not know, anything unusual): the caller then takes the slow road."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    if scheme == "sqlite":
        path = rest.removeprefix("/")  # sqlite:///relative, sqlite:////absolute
        if not path or "?" in path or path == ":memory:":
            return None
        return Location(False, path, f"SQLite file {path}")
    if scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        return None
    try:
        parts = urlsplit(f"postgresql://{rest}")
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or "localhost (socket)"
    database = unquote(parts.path.removeprefix("/"))
    return Location(True, f"postgresql://{rest}", f"PostgreSQL at {host}:{port or 5432}/{database}")


class Conn:
    """One DB-API connection, either driver: `execute` takes SQL with `:name` placeholders."""

    def __init__(self, raw: Any, is_postgres: bool, where: str = "the database") -> None:
        self.raw = raw
        self.is_postgres = is_postgres
        self.where = where

    @classmethod
    def of(cls, connection: Any) -> Conn:
        """The driver connection under a SQLAlchemy connection, inside its transaction (a Conn
        is returned as it is, so store functions can take either)."""
        if isinstance(connection, Conn):
            return connection
        raw = connection.connection.driver_connection
        return cls(raw, connection.dialect.name == "postgresql")

    def execute(self, sql: str, params: dict[str, Any] | Sequence[Any] | None = None) -> Any:
        """Run one statement; returns the driver's cursor (fetchall/fetchone/rowcount)."""
        cursor = self.raw.cursor()
        cursor.execute(_for_psycopg(sql) if self.is_postgres else sql, params or {})
        return cursor

    def executemany(self, sql: str, rows: Sequence[dict[str, Any]]) -> None:
        cursor = self.raw.cursor()
        cursor.executemany(_for_psycopg(sql) if self.is_postgres else sql, rows)

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        row = self.execute(sql, params).fetchone()
        return row[0] if row is not None else None

    # --- the database clock, as SQL text -----------------------------------------------------

    @property
    def now(self) -> str:
        """The database's current time (leases and run_at never use a machine's clock)."""
        return PG_NOW if self.is_postgres else SQLITE_NOW

    def now_plus(self, seconds_sql: str) -> str:
        """The database's current time plus `seconds_sql` (a parameter or a column) seconds."""
        return pg_now_plus(seconds_sql) if self.is_postgres else sqlite_now_plus(seconds_sql)

    # --- values as the drivers return them ---------------------------------------------------

    def time(self, value: Any) -> datetime | None:
        """An aware UTC datetime from a time column (SQLite keeps UTC text)."""
        if value is None:
            return None
        if isinstance(value, str):
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        result: datetime = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return result

    def time_not_null(self, value: Any) -> datetime:
        """`time()` of a NOT NULL column."""
        result = self.time(value)
        if result is None:
            raise ValueError("a NOT NULL time column held NULL")
        return result

    def time_param(self, value: datetime | None) -> Any:
        """A datetime as this driver should bind it (SQLite: UTC text in the stored format)."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if self.is_postgres:
            return value
        return value.astimezone(UTC).strftime(SQLITE_TIME_FORMAT)

    def json(self, value: Any) -> Any:
        """A JSON column's value (psycopg decodes jsonb itself; SQLite keeps text)."""
        if isinstance(value, str | bytes) and not self.is_postgres:
            return json.loads(value)
        return value

    def notify(self, channel: str, payload: str) -> None:
        """A PostgreSQL notification sent when the transaction commits; nothing on SQLite."""
        if self.is_postgres:
            self.execute("SELECT pg_notify(:channel, :payload)",
                         {"channel": channel, "payload": payload})


_PLACEHOLDER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_translated: dict[str, str] = {}


def _for_psycopg(sql: str) -> str:
    """`:name` placeholders as psycopg's `%(name)s` (and a literal % doubled); `::` casts stay."""
    translated = _translated.get(sql)
    if translated is None:
        translated = _PLACEHOLDER.sub(r"%(\1)s", sql.replace("%", "%%"))
        _translated[sql] = translated
    return translated


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
        self.is_postgres = location.is_postgres
        self.where = location.where
        self._connect_driver = connect
        self._raw: Any = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, url: str) -> DirectDatabase | None:
        """The database at `url` with its schema checked, or None when the direct road does
        not apply: a URL only SQLAlchemy parses, a missing SQLite file or an empty database
        (creating one is the migrations' job). A schema at another revision is SchemaOutOfDate,
        an unreachable server DatabaseUnavailable."""
        location = locate(url)
        if location is None:
            return None
        if not location.is_postgres and not os.path.exists(location.target):
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
            raise SchemaOutOfDate(
                f"{self.where} has schema revision {revision}, this jobctl needs "
                f"{SCHEMA_REVISION}: run `jobctl db upgrade`"
            )
        return self

    def clone(self) -> DirectDatabase:
        """The same database on a connection of its own (opened on first use), for a thread
        that must not take turns with this one's users."""
        return DirectDatabase(self.location, self._connect_driver)

    def schema_revision(self) -> str | None:
        exists = (
            "SELECT to_regclass('alembic_version') IS NOT NULL" if self.is_postgres
            else "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'alembic_version'"
        )
        with self.read() as conn:
            if not conn.scalar(exists):
                return None
            revision = conn.scalar("SELECT version_num FROM alembic_version")
            return str(revision) if revision is not None else None

    @contextlib.contextmanager
    def read(self) -> Iterator[Conn]:
        with self._use("BEGIN") as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Conn]:
        # SQLite: take the write lock up front, so that two writers queue on the busy timeout
        # instead of one failing on a lock upgrade.
        with self._use("BEGIN IMMEDIATE" if not self.is_postgres else "BEGIN") as conn:
            yield conn

    @contextlib.contextmanager
    def turn(self) -> Iterator[Conn]:
        """A worker's turn on the hot path. PostgreSQL: no transaction around the statements,
        each commits alone (one round trip and one commit each; the hot path's statements are
        built to be atomic alone). SQLite: one BEGIN IMMEDIATE transaction, one commit for the
        turn."""
        with self._use(None if self.is_postgres else "BEGIN IMMEDIATE") as conn:
            yield conn

    def close(self) -> None:
        with self._lock:
            self._close()

    @contextlib.contextmanager
    def _use(self, begin: str | None) -> Iterator[Conn]:
        """The connection (opened if need be), in a transaction begun with `begin` and
        committed at the end; without one on PostgreSQL when `begin` is None (autocommit)."""
        with self._lock:
            try:
                with self._translate_errors():
                    if self._raw is None:
                        self._raw = self._connect()
                    raw = self._raw
                    if begin is not None:
                        raw.execute(begin)
                    yield Conn(raw, self.is_postgres, self.where)
                    if begin is not None:
                        raw.commit()
            except BaseException as error:
                if isinstance(error, DatabaseUnavailable):
                    self._close()  # lost, or never there: the next use connects anew
                elif self._raw is not None:
                    # Roll back; a connection that cannot even do that is dropped for a new one.
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
        if self.is_postgres:
            import psycopg

            try:
                if self._connect_driver is not None:
                    raw = self._connect_driver()
                else:
                    raw = psycopg.connect(self.location.target,
                                          **PG_CONNECTION_OPTIONS)  # type: ignore[arg-type]
                # Transactions are begun explicitly (read, write), or not at all (turn).
                raw.autocommit = True
            except psycopg.Error as error:
                raise DatabaseUnavailable(
                    f"cannot reach {self.where}: {first_line(error)}") from error
            return raw
        import sqlite3

        with self._translate_errors():
            if self._connect_driver is not None:
                raw = self._connect_driver()
            else:
                raw = sqlite3.connect(self.location.target,
                                      timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
            # We issue BEGIN ourselves (IMMEDIATE for writers), rather than the sqlite3
            # module's guess.
            raw.isolation_level = None
            for pragma in SQLITE_PRAGMAS:
                raw.execute(pragma)
        return raw

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """Losing the server, or a file that is no database, is one line naming the database.
        As on the SQLAlchemy road (store.engine), any operational error of SQLite (locked past
        the busy timeout, a file that cannot be opened) means the database cannot be reached."""
        try:
            yield
        except Exception as error:
            if self.is_postgres and is_disconnect(error):
                raise DatabaseUnavailable(f"lost {self.where}: {first_line(error)}") from error
            if not self.is_postgres and not_an_sqlite_database(error):
                raise DatabaseUnavailable(
                    f"cannot use {self.where}: {first_line(error)}") from error
            if not self.is_postgres and _sqlite_operational(error):
                raise DatabaseUnavailable(
                    f"cannot reach {self.where}: {first_line(error)}") from error
            raise


def is_disconnect(error: BaseException | None) -> bool:
    """psycopg's error for a refused, failed or cut connection (sqlstate None, 08xxx, 57Pxx)."""
    if type(error).__module__.split(".")[0] != "psycopg":
        return False
    import psycopg

    if not isinstance(error, psycopg.OperationalError):
        return False
    sqlstate = getattr(error, "sqlstate", None)
    return sqlstate is None or str(sqlstate).startswith(("08", "57P"))


def not_an_sqlite_database(error: BaseException | None) -> bool:
    """sqlite3's error for a file that is not an SQLite database, or a damaged one."""
    text = str(error)
    return (type(error).__module__ == "sqlite3"
            and ("file is not a database" in text or "malformed" in text))


def _sqlite_operational(error: BaseException) -> bool:
    import sqlite3

    return isinstance(error, sqlite3.OperationalError)


def first_line(error: BaseException) -> str:
    """The driver's own message, first line only (under a SQLAlchemy error: its `orig`, without
    SQLAlchemy's background link)."""
    original = getattr(error, "orig", None) or error
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__
