"""The SQLite backend (the standard library's sqlite3): connections, transactions, errors, values
and, per entity (`jobctl.store.sqlite.<entity>`), its SQL in sqlite3's own parameter style
(`:name`). See jobctl.store.backend for the protocol it implements.

SQLite under contention: a lock held by another process (a bulk submit, another worker's turn,
schema creation) is waited for, never reported as an unreachable database. Every connection has
a busy timeout (BUSY_TIMEOUT_MS: SQLite's own wait, inside one statement), and what SQLite
returns "database is locked" for at once, without its busy handler (WAL mode set up on a new file
by two processes at once, a snapshot that went stale, a WAL recovery), or past the busy timeout,
is retried with backoff (`LockWait`): setting up a connection, beginning a transaction
(BEGIN IMMEDIATE for writers; a read's BEGIN together with its first read, which takes the read
lock and loads the schema) and committing it. Only after LOCK_WAIT_S in all does it give up,
with DatabaseLocked (exit 4) naming the lock. A file that cannot be opened at all is still
DatabaseUnavailable at once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from jobctl.errors import DatabaseLocked, DatabaseUnavailable, InvalidInput
from jobctl.store.backend import SqlModules, TransactionKind
from jobctl.store.identity import unix_user
from jobctl.store.url import query_for_sqlalchemy

if TYPE_CHECKING:
    import sqlalchemy as sa

    from jobctl.store.engine import Database
    from jobctl.store.notify import Subscription
    from jobctl.store.url import Location

T = TypeVar("T")

# SQLite's own wait for a lock, inside one statement (its busy handler, on every connection).
BUSY_TIMEOUT_MS = 10_000
# How long jobctl waits in all for a lock another process holds, across the busy timeouts and
# the retries of what SQLite returns at once (LockWait), before DatabaseLocked (exit 4).
LOCK_WAIT_S = 60.0
# Backoff between those retries: from the first delay, doubling up to the last, each with jitter
# (a random share of it, from half to all), so that waiting processes do not retry in lockstep.
RETRY_FIRST_S = 0.005
RETRY_MAX_S = 0.25
# Taken first in a read transaction: the read lock (a snapshot, in WAL mode) and the schema,
# while a busy answer can still be retried; the caller's statements then never wait.
READ_LOCK_SQL = "SELECT 1 FROM sqlite_master LIMIT 1"
# Run on every new connection, after `PRAGMA busy_timeout` (setup_sqlite).
PRAGMAS = (
    # On a new file this writes its header: with two processes at it at once, one of them gets
    # "database is locked" at once, busy timeout or not (setup_sqlite retries it).
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    # NORMAL is durable across application crashes in WAL mode; only power loss may drop the
    # last commits. That is the usual trade for a local queue.
    "PRAGMA synchronous=NORMAL",
)
# How SQLite stores a time (UTC, fixed width, so that text order is time order); the same as
# SQLAlchemy's SQLite DateTime and as NOW, where %f gives milliseconds and the trailing 000 pads
# them to microseconds.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
# The database clock, as SQL (%% in it: these texts are SQL, not Python formats).
NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


class SqliteBackend(SqlModules):
    title = "SQLite"

    # --- connections and transactions ---------------------------------------------------------

    def connect(self, location: Location) -> Any:
        import sqlite3

        raw = sqlite3.connect(location.target, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            self.prepare(raw, location.where)
        except BaseException:
            raw.close()
            raise
        return raw

    def prepare(self, raw: Any, where: str) -> None:
        setup_sqlite(raw, LockWait(where))

    def exists(self, location: Location) -> bool:
        import os

        return os.path.exists(location.target)  # a missing file is an empty database

    def begin(self, raw: Any, kind: TransactionKind, where: str) -> None:
        # Writers (and a worker's turn: one transaction, one commit) take the write lock up
        # front, so that two writers queue on the busy timeout instead of one failing on a lock
        # upgrade.
        begin_sqlite(raw, "BEGIN" if kind == "read" else "BEGIN IMMEDIATE", LockWait(where))

    def commit(self, raw: Any, kind: TransactionKind, where: str) -> None:
        commit_sqlite(raw, LockWait(where))

    def error(self, error: BaseException, where: str, *,
              connecting: bool) -> DatabaseUnavailable | None:
        """A file that is no database: "cannot use"; a lock another process holds, where no
        retry applies: DatabaseLocked; any other operational error (a file that cannot be
        opened): "cannot reach"."""
        from jobctl.store.direct import first_line

        driver = getattr(error, "orig", None) or error  # under a SQLAlchemy error: sqlite3's
        if getattr(error, "connection_invalidated", False):
            return DatabaseUnavailable(f"lost {where}: {first_line(error)}")
        if not_an_sqlite_database(driver):
            return DatabaseUnavailable(f"cannot use {where}: {first_line(error)}")
        if is_sqlite_busy(driver):
            return DatabaseLocked(f"{where} is locked by another process: {first_line(error)}")
        if _sqlite_operational(driver):
            return DatabaseUnavailable(f"cannot reach {where}: {first_line(error)}")
        return None

    def listen_target(self, location: Location) -> str | None:
        return None  # SQLite has no notifications: waiters poll

    def listen(self, location: Location, channels: Sequence[str]) -> Subscription:
        raise ValueError(f"{location.where} has no notifications to listen to: poll it")

    def notify(self, raw: Any, channel: str, payload: str) -> None:
        return None

    # --- values --------------------------------------------------------------------------------

    def time(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite keeps UTC text
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        result: datetime = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return result

    def time_param(self, value: datetime | None) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime(TIME_FORMAT)

    def json(self, value: Any) -> Any:
        if isinstance(value, str | bytes):  # SQLite keeps JSON as text
            return json.loads(value)
        return value

    def json_param(self, value: Any) -> Any:
        return json.dumps(value)

    def ids_param(self, ids: Sequence[int | str]) -> Any:
        return json.dumps(list(ids))  # read with json_each

    # --- creating and migrating the schema (SQLAlchemy and Alembic; imported for that alone) --

    def sqlalchemy_engine(self, location: Location, pool_size: int) -> sa.Engine:
        """An engine for the migrations, its connections set up (and their BEGIN and COMMIT
        issued) as the direct road's are, so that they wait for locks alike."""
        import sqlalchemy as sa
        from sqlalchemy import event

        path = Path(location.target)
        if not path.parent.exists():
            raise DatabaseUnavailable(
                f"cannot open {location.where}: directory {path.parent} does not exist")
        url = sa.URL.create("sqlite", database=location.target,
                            query=query_for_sqlalchemy(location.options))
        engine = sa.create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            poolclass=sa.pool.QueuePool, pool_size=pool_size, max_overflow=pool_size,
        )
        where = location.where

        @event.listens_for(engine, "connect")
        def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
            # Issued on the driver's connection: the retries must see the driver's own errors.
            setup_sqlite(dbapi_connection, LockWait(where))

        @event.listens_for(engine, "begin")
        def on_begin(connection: sa.Connection) -> None:
            mode = connection.get_execution_options().get("jobctl_sqlite_begin", "DEFERRED")
            begin_sqlite(connection.connection.driver_connection, f"BEGIN {mode}",
                         LockWait(where))

        @event.listens_for(engine, "commit")
        def on_commit(connection: sa.Connection) -> None:
            # SQLAlchemy's own commit() after this one finds no transaction and does nothing.
            commit_sqlite(connection.connection.driver_connection, LockWait(where))

        return engine

    @contextlib.contextmanager
    def migration_lock(self, location: Location, database: Database) -> Iterator[None]:
        """A lock file beside the database, locked while one process creates or upgrades the
        schema; waited for as long as any other lock (LockWait), then a message naming it."""
        import fcntl
        import os

        lock_path = f"{location.target}.migrate-lock"
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as error:
            raise DatabaseUnavailable(
                f"cannot open {location.where}: cannot create its lock file {lock_path}: "
                f"{error.strerror}") from error
        try:
            wait = LockWait(location.where)
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

    def lock_schema(self, connection: sa.Connection) -> None:
        """Nothing more: the migration's transaction holds the write lock from its BEGIN
        IMMEDIATE, and `migration_lock` the lock file."""

    # --- roles: none. One machine, a file its owner controls (README, "Security") ----------

    def apply_roles(self, raw: Any, *, create: bool) -> bool:
        if create:
            raise no_roles()
        return False

    def set_membership(self, raw: Any, group: str, login: str, *, grant: bool) -> bool:
        raise no_roles()


def no_roles() -> InvalidInput:
    return InvalidInput("roles are PostgreSQL's: an SQLite database has none (whoever can "
                        "write its file can do everything)")


class LockWait:
    """One wait for SQLite locks, bounded by LOCK_WAIT_S from its creation: `retry` runs
    an action again and again, with backoff, while SQLite answers that another connection holds
    a lock; past the bound it raises DatabaseLocked naming the lock. Several actions may share
    one wait (connecting and beginning a transaction: one bound for both)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.started = time.monotonic()
        self.deadline = self.started + LOCK_WAIT_S
        self._delay = RETRY_FIRST_S

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
            from jobctl.store.direct import first_line

            cause = f" ({first_line(error)})" if error is not None else ""
            raise DatabaseLocked(
                f"gave up after {now - self.started:.0f}s waiting for {lock} of {self.where}: "
                f"{holder} held it at every try{cause}") from error
        import random  # here: only a wait needs it, not every command's start-up

        time.sleep(min(self.deadline - now, random.uniform(self._delay / 2, self._delay)))
        self._delay = min(self._delay * 2, RETRY_MAX_S)


def setup_sqlite(raw: Any, wait: LockWait) -> None:
    """A new sqlite3 connection made ready: BEGIN issued by us, never the sqlite3 module's guess
    (IMMEDIATE for writers), the busy timeout and PRAGMAS, each retried while another
    process holds a lock it needs (WAL mode on a new file)."""
    raw.isolation_level = None
    # First (the driver's connect sets it too): it takes no lock, and the others may wait.
    raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # The name the audit trail's triggers record (jobctl.store.sqlite.audit): this process's
    # Unix user, as jobctl.store.identity gives it to the rows it inserts.
    raw.create_function("jobctl_session_user", 0, unix_user, deterministic=True)
    for pragma in PRAGMAS:
        wait.retry(functools.partial(raw.execute, pragma), f"the lock to run {pragma}")


def begin_sqlite(raw: Any, begin: str, wait: LockWait) -> None:
    """`begin` on an sqlite3 connection, retried while another process holds the lock it needs.
    BEGIN IMMEDIATE takes the write lock; a deferred BEGIN takes nothing yet, so the read lock is
    taken here too (READ_LOCK_SQL), with the schema."""
    deferred = begin.split() in (["BEGIN"], ["BEGIN", "DEFERRED"])

    def attempt() -> None:
        try:
            raw.execute(begin)
            if deferred:
                raw.execute(READ_LOCK_SQL).fetchall()
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




def not_an_sqlite_database(error: BaseException | None) -> bool:
    """sqlite3's error for a file that is not an SQLite database, or a damaged one."""
    text = str(error)
    return (type(error).__module__ == "sqlite3"
            and ("file is not a database" in text or "malformed" in text))


def _sqlite_operational(error: BaseException) -> bool:
    import sqlite3

    return isinstance(error, sqlite3.OperationalError)




def now_plus(seconds_sql: str) -> str:
    """The current time plus `seconds_sql` (a parameter or a column) seconds, stored alike."""
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', printf('%+.6f seconds', {seconds_sql}))"


BACKEND = SqliteBackend()
