"""The database through its driver alone (the standard library's sqlite3, or psycopg), without
SQLAlchemy, for the commands people type all day and for bulk submit.

SQLAlchemy's import alone takes about 0.3 s on a small machine: more than `jobctl job list` or a
5,000-job `job submit --from-file` needs for everything else. So those commands talk to the
driver directly through `Conn`, which smooths over the two drivers' differences (placeholders,
transactions, how times and JSON come back), and the store functions they use (`store.reads`,
`store.submit`) are written against `Conn` only. Code that already holds a SQLAlchemy connection
calls the same functions through `Conn.of(connection)`, so each query exists once.

What stays with SQLAlchemy (`store.engine`): creating and migrating the schema, and making the
driver connections for SQLite URLs with driver options (`Database.direct`). URLs are parsed by
`store.url` alone, for both roads; driver errors are translated by `database_error` alone, for
both roads too.

The worker runs on it too (`jobctl worker start`): its main thread on the database's own
connection, with `turn()` for the hot path's statements, and its heartbeat thread on a `clone()`.
So does the scheduler (`jobctl scheduler run`, store.schedules), in `write()` transactions. They,
and every command (jobctl.client), open the database with `open_or_create`, which takes the
SQLAlchemy road only for an empty one.

SQLite under contention: a lock held by another process (a bulk submit, another worker's turn,
schema creation) is waited for, never reported as an unreachable database. Every connection has
a busy timeout (SQLITE_BUSY_TIMEOUT_MS: SQLite's own wait, inside one statement), and what SQLite
returns "database is locked" for at once, without its busy handler (WAL mode set up on a new file
by two processes at once, a snapshot that went stale, a WAL recovery), or past the busy timeout,
is retried with backoff (`LockWait`): setting up a connection, beginning a transaction
(BEGIN IMMEDIATE for writers; a read's BEGIN together with its first read, which takes the read
lock and loads the schema) and committing it. Only after SQLITE_LOCK_WAIT_S in all does it give
up, with DatabaseLocked (exit 4) naming the lock. A file that cannot be opened at all is still
DatabaseUnavailable at once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from jobctl.errors import DatabaseLocked, DatabaseUnavailable, SchemaOutOfDate
from jobctl.store import SCHEMA_REVISION
from jobctl.store.url import Location, parse

T = TypeVar("T")

# SQLite's own wait for a lock, inside one statement (its busy handler, on every connection).
SQLITE_BUSY_TIMEOUT_MS = 10_000
# How long jobctl waits in all for a lock another process holds, across the busy timeouts and
# the retries of what SQLite returns at once (LockWait), before DatabaseLocked (exit 4).
SQLITE_LOCK_WAIT_S = 60.0
# Backoff between those retries: from the first delay, doubling up to the last, each with jitter
# (a random share of it, from half to all), so that waiting processes do not retry in lockstep.
SQLITE_RETRY_FIRST_S = 0.005
SQLITE_RETRY_MAX_S = 0.25
# Taken first in a read transaction: the read lock (a snapshot, in WAL mode) and the schema,
# while a busy answer can still be retried; the caller's statements then never wait.
SQLITE_READ_LOCK_SQL = "SELECT 1 FROM sqlite_master LIMIT 1"
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
# Run on every new connection, after `PRAGMA busy_timeout` (setup_sqlite).
SQLITE_PRAGMAS = (
    # On a new file this writes its header: with two processes at it at once, one of them gets
    # "database is locked" at once, busy timeout or not (setup_sqlite retries it).
    "PRAGMA journal_mode=WAL",
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


def locate(url: str) -> Location | None:
    """The database a jobctl URL names (store.url.parse), when its driver alone can open it;
    None for SQLite driver options (?timeout=5), which only SQLAlchemy's dialect applies. A URL
    that is no valid jobctl URL is InvalidInput."""
    location = parse(url)
    return None if location.options else location


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

    @property
    def listen_target(self) -> str | None:
        """What a LISTEN connection connects to, where the backend notifies (PostgreSQL); None
        where nothing does (SQLite), and waiters poll instead."""
        return self.location.target if self.is_postgres else None

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
        committed at the end; without one on PostgreSQL when `begin` is None (autocommit).
        SQLite: opening, beginning and committing wait for locks other processes hold (see
        the module's docstring)."""
        with self._lock:
            try:
                with translating_errors(self.location):
                    raw = self._begin(begin)
                    yield Conn(raw, self.is_postgres, self.where)
                    if begin is not None:
                        if self.is_postgres:
                            raw.commit()
                        else:
                            commit_sqlite(raw, LockWait(self.where))
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

    def _begin(self, begin: str | None) -> Any:
        """The connection, opened if need be, with `begin` issued."""
        if self.is_postgres:
            if self._raw is None:
                self._raw = self._connect()
            if begin is not None:
                self._raw.execute(begin)
            return self._raw
        wait = LockWait(self.where)  # one bound for connecting and beginning together
        if self._raw is None:
            self._raw = self._connect(wait)
        if begin is not None:
            begin_sqlite(self._raw, begin, wait)
        return self._raw

    def _close(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()
            self._raw = None

    def _connect(self, wait: LockWait | None = None) -> Any:
        if self.is_postgres:
            import psycopg

            with translating_errors(self.location, connecting=True):
                if self._connect_driver is not None:
                    raw = self._connect_driver()
                else:
                    raw = psycopg.connect(self.location.target,
                                          **PG_CONNECTION_OPTIONS)  # type: ignore[arg-type]
                # Transactions are begun explicitly (read, write), or not at all (turn).
                raw.autocommit = True
            return raw
        import sqlite3

        with translating_errors(self.location):
            if self._connect_driver is not None:
                raw = self._connect_driver()
            else:
                raw = sqlite3.connect(self.location.target,
                                      timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
            try:
                setup_sqlite(raw, wait or LockWait(self.where))
            except BaseException:
                raw.close()
                raise
        return raw


def schema_revision(conn: Conn) -> str | None:
    """The database's Alembic revision, or None when it has no jobctl schema yet. (A catalog
    query, not SQLAlchemy's inspector: that costs a tenth of a second to import.)"""
    exists = (
        "SELECT to_regclass('alembic_version') IS NOT NULL" if conn.is_postgres
        else "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'alembic_version'"
    )
    if not conn.scalar(exists):
        return None
    revision = conn.scalar("SELECT version_num FROM alembic_version")
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
                   connecting: bool = False) -> DatabaseUnavailable | None:
    """What a driver's error (psycopg's or sqlite3's, or one SQLAlchemy wrapped) means for
    jobctl, as one line naming the database (never its password), or None when it is no matter
    of the database's reachability (the caller re-raises it). Both roads use it: this module's
    connections and the migrations' (store.engine).

    PostgreSQL: any driver error while `connecting` means the server cannot be reached; losing
    it later is "lost". SQLite: a file that is no database "cannot use"; a lock another process
    holds, where no retry applies, DatabaseLocked; any other operational error (a file that
    cannot be opened) "cannot reach"."""
    driver = getattr(error, "orig", None) or error  # under a SQLAlchemy error: the driver's
    is_postgres, where = location.is_postgres, location.where
    if is_postgres and connecting and type(driver).__module__.split(".")[0] == "psycopg":
        return DatabaseUnavailable(f"cannot reach {where}: {first_line(error)}")
    if getattr(error, "connection_invalidated", False) or (is_postgres and is_disconnect(driver)):
        return DatabaseUnavailable(f"lost {where}: {first_line(error)}")
    if is_postgres:
        return None
    if not_an_sqlite_database(driver):
        return DatabaseUnavailable(f"cannot use {where}: {first_line(error)}")
    if is_sqlite_busy(driver):
        return DatabaseLocked(f"{where} is locked by another process: {first_line(error)}")
    if _sqlite_operational(driver):
        return DatabaseUnavailable(f"cannot reach {where}: {first_line(error)}")
    return None


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

        migrated = open_database(database_url, pool_size=1)
        migrated.dispose()
        database = DirectDatabase.open(url) or migrated.direct()
    return database


# --- SQLite: waiting for locks other processes hold -----------------------------------------------


class LockWait:
    """One wait for SQLite locks, bounded by SQLITE_LOCK_WAIT_S from its creation: `retry` runs
    an action again and again, with backoff, while SQLite answers that another connection holds
    a lock; past the bound it raises DatabaseLocked naming the lock. Several actions may share
    one wait (connecting and beginning a transaction: one bound for both)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.started = time.monotonic()
        self.deadline = self.started + SQLITE_LOCK_WAIT_S
        self._delay = SQLITE_RETRY_FIRST_S

    def retry(self, action: Callable[[], T], lock: str) -> T:
        while True:
            try:
                return action()
            except Exception as error:
                if not is_sqlite_busy(error):
                    raise
                self.pause(lock, error)

    def pause(self, lock: str, error: BaseException | None = None,
              holder: str = "another connection") -> None:
        """Sleep before the next try (a jittered, growing delay); DatabaseLocked once the bound
        has passed. `lock` names what was waited for, `holder` who held it, for the message."""
        now = time.monotonic()
        if now >= self.deadline:
            cause = f" ({first_line(error)})" if error is not None else ""
            raise DatabaseLocked(
                f"gave up after {now - self.started:.0f}s waiting for {lock} of {self.where}: "
                f"{holder} held it at every try{cause}") from error
        import random  # here: only a wait needs it, not every command's start-up

        time.sleep(min(self.deadline - now, random.uniform(self._delay / 2, self._delay)))
        self._delay = min(self._delay * 2, SQLITE_RETRY_MAX_S)


def setup_sqlite(raw: Any, wait: LockWait) -> None:
    """A new sqlite3 connection made ready: BEGIN issued by us, never the sqlite3 module's guess
    (IMMEDIATE for writers), the busy timeout and SQLITE_PRAGMAS, each retried while another
    process holds a lock it needs (WAL mode on a new file)."""
    raw.isolation_level = None
    # First (the driver's connect sets it too): it takes no lock, and the others may wait.
    raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    for pragma in SQLITE_PRAGMAS:
        wait.retry(functools.partial(raw.execute, pragma), f"the lock to run {pragma}")


def begin_sqlite(raw: Any, begin: str, wait: LockWait) -> None:
    """`begin` on an sqlite3 connection, retried while another process holds the lock it needs.
    BEGIN IMMEDIATE takes the write lock; a deferred BEGIN takes nothing yet, so the read lock is
    taken here too (SQLITE_READ_LOCK_SQL), with the schema."""
    deferred = begin.split() in (["BEGIN"], ["BEGIN", "DEFERRED"])

    def attempt() -> None:
        try:
            raw.execute(begin)
            if deferred:
                raw.execute(SQLITE_READ_LOCK_SQL).fetchall()
        except BaseException:
            if raw.in_transaction:
                with contextlib.suppress(Exception):
                    raw.rollback()
            raise

    wait.retry(attempt, "a read lock" if deferred else "the write lock")


def commit_sqlite(raw: Any, wait: LockWait) -> None:
    """COMMIT, retried while another process holds the lock it needs (in rollback-journal mode,
    where WAL is not available; a COMMIT that failed as busy leaves the transaction open)."""
    if raw.in_transaction:
        wait.retry(raw.commit, "the lock to commit")


# SQLite's primary result codes for a lock held elsewhere: SQLITE_BUSY ("database is locked", and
# its extended codes: recovery, snapshot, timeout), SQLITE_LOCKED ("database table is locked")
# and SQLITE_PROTOCOL (a race for WAL locks lost too many times in a row).
_SQLITE_BUSY_CODES = (5, 6, 15)


def is_sqlite_busy(error: BaseException | None) -> bool:
    """sqlite3's error for a lock that another connection holds: worth waiting for."""
    if type(error).__module__ != "sqlite3":
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _SQLITE_BUSY_CODES
    text = str(error)
    return "is locked" in text or "locking protocol" in text


def is_driver_error(error: BaseException | None) -> bool:
    """An error of psycopg or sqlite3 itself (a deadlock, a serialization failure, an aborted
    transaction): the transaction is lost, the connection may well not be."""
    return type(error).__module__.split(".")[0] in ("psycopg", "sqlite3")


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
