"""SQLite waits its turn: a lock held by another connection is waited for (the busy timeout, then
retries with backoff, jobctl.store.sqlite.LockWait), on both roads (the driver's and SQLAlchemy's)
and while the schema is created; only past the overall bound is it DatabaseLocked, naming the
lock. The other connection is a plain `sqlite3` one here, holding its lock from a thread.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from jobctl.client import Client
from jobctl.errors import DatabaseLocked, DatabaseUnavailable
from jobctl.models import JobSpec, JobState
from jobctl.store import SCHEMA_REVISION, reads, sqlite, submit
from jobctl.store.direct import DirectDatabase, locate
from jobctl.store.engine import Database
from jobctl.store.sqlite import LockWait


@contextmanager
def held(path: Path, begin: str, hold_s: float) -> Iterator[threading.Event]:
    """Another connection takes a lock on `path` with `begin` (in a thread) and keeps it for
    `hold_s` seconds; the event is set once it holds it. Leaves after the thread ended."""
    taken = threading.Event()
    failed: list[BaseException] = []

    def hold() -> None:
        try:
            other = sqlite3.connect(path, isolation_level=None)
            other.execute(begin)
            taken.set()
            time.sleep(hold_s)
            other.execute("COMMIT")
            other.close()
        except BaseException as error:
            failed.append(error)
            taken.set()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert taken.wait(10), "the other connection did not get its lock"
        assert not failed, failed
        yield taken
    finally:
        thread.join(30)
    assert not failed, failed


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "jobctl.db"


@pytest.fixture
def migrated_file(sqlite_url: str) -> Path:
    """The test's SQLite file with the schema (a copy of the migrated template)."""
    return Path(sqlite_url.removeprefix("sqlite:///"))


def _direct(path: Path) -> DirectDatabase:
    location = locate(f"sqlite:///{path}")
    assert location is not None
    return DirectDatabase(location)


def test_a_write_waits_for_the_write_lock_another_connection_holds(migrated_file: Path) -> None:
    database = _direct(migrated_file)
    with held(migrated_file, "BEGIN EXCLUSIVE", 1.0):
        started = time.monotonic()
        with database.write() as conn:
            submit.insert_many(conn, [JobSpec(argv=["true"])], states=[JobState.QUEUED])
        waited = time.monotonic() - started
    assert waited > 0.5, f"did not wait for the lock ({waited:.2f}s)"
    with database.read() as conn:
        assert len(reads.list_jobs(conn)) == 1
    database.close()


def test_the_sqlalchemy_road_waits_too(migrated_file: Path) -> None:
    """The migrations' road (store.engine): its write transactions wait for the lock alike."""
    database = Database(f"sqlite:///{migrated_file}")
    with held(migrated_file, "BEGIN EXCLUSIVE", 1.0):
        started = time.monotonic()
        with database.write() as connection:
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")
        assert time.monotonic() - started > 0.5
    database.dispose()
    direct = _direct(migrated_file)
    assert direct.schema_revision() == SCHEMA_REVISION
    direct.close()


def test_wal_mode_on_a_new_file_waits_for_a_writer_that_came_first(sqlite_file: Path) -> None:
    """Setting up WAL mode writes a new file's header; while another connection holds the
    write lock, SQLite answers "database is locked" at once, busy timeout or not (this is how two
    processes meeting a new file at once failed). The set-up is retried until it can."""
    for road in ("direct", "sqlalchemy"):
        sqlite_file.unlink(missing_ok=True)
        sqlite3.connect(sqlite_file).close()  # a new, empty file in rollback-journal mode
        with held(sqlite_file, "BEGIN IMMEDIATE", 0.5):
            if road == "direct":
                database = _direct(sqlite_file)
                with database.read() as conn:
                    assert conn.scalar("PRAGMA journal_mode") == "wal"
                database.close()
            else:
                engine_database = Database(f"sqlite:///{sqlite_file}")
                assert engine_database.current_revision() is None
                engine_database.dispose()


def test_past_the_bound_it_is_database_locked_naming_the_lock(
        migrated_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only after SQLITE_LOCK_WAIT_S in all; the connection stays, and the next use works."""
    monkeypatch.setattr(sqlite, "LOCK_WAIT_S", 0.5)
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_MS", 100)
    database = _direct(migrated_file)
    with held(migrated_file, "BEGIN EXCLUSIVE", 2.0):
        started = time.monotonic()
        with pytest.raises(DatabaseLocked) as caught, database.write():
            pass
        waited = time.monotonic() - started
    assert 0.5 <= waited < 1.5, waited
    message = caught.value.message
    assert message.startswith("gave up after 1s waiting for the write lock of SQLite file ")
    assert message.endswith("jobctl.db: another connection held it at every try "
                            "(database is locked)")
    assert caught.value.exit_code == 4
    with database.write() as conn:
        assert conn.scalar("PRAGMA busy_timeout") == 100  # the same connection: it was sound
    database.close()

    engine_database = Database(f"sqlite:///{migrated_file}")  # the SQLAlchemy road: the same
    locked = r"^gave up after 1s waiting for the write lock"
    with (held(migrated_file, "BEGIN EXCLUSIVE", 2.0), pytest.raises(DatabaseLocked, match=locked),
          engine_database.write()):
        pass
    with engine_database.write() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM jobs").scalar() == 0
    engine_database.dispose()


def test_lock_wait_retries_busy_answers_only_with_growing_jittered_delays(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(sqlite.time, "sleep", sleeps.append)
    answers: list[BaseException | None] = [
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("database table is locked"),
        sqlite3.OperationalError("database is locked"),
        None,
    ]

    def action() -> str:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return "done"

    assert LockWait("here").retry(action, "the write lock") == "done"
    assert len(sleeps) == 3
    for delay, (low, high) in zip(sleeps, [(0.0025, 0.005), (0.005, 0.01), (0.01, 0.02)],
                                  strict=True):
        assert low <= delay <= high, sleeps

    def unopenable() -> None:
        raise sqlite3.OperationalError("unable to open database file")

    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        LockWait("here").retry(unopenable, "the write lock")
    assert len(sleeps) == 3  # never retried


def test_a_commit_that_finds_the_database_busy_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """In rollback-journal mode (no WAL) COMMIT needs a lock of its own; a busy COMMIT leaves
    the transaction open, and is tried again."""
    monkeypatch.setattr(sqlite.time, "sleep", lambda seconds: None)

    class Raw:
        in_transaction = True
        commits = 0

        def commit(self) -> None:
            self.commits += 1
            if self.commits < 3:
                raise sqlite3.OperationalError("database is locked")
            self.in_transaction = False

    raw = Raw()
    sqlite.commit_sqlite(raw, LockWait("here"))
    assert raw.commits == 3


def test_a_new_file_gets_its_schema_once_the_creation_lock_is_free(sqlite_file: Path) -> None:
    """Creating the schema is serialised by a lock file beside the database; whoever waited for
    it checks again, and finds the schema there (here: made while it waited)."""
    lock_path = f"{sqlite_file}.migrate-lock"
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    result: list[object] = []

    def submit_one() -> None:
        try:
            result.append(Client(f"sqlite:///{sqlite_file}").submit(JobSpec(argv=["true"])).id)
        except BaseException as error:
            result.append(error)

    thread = threading.Thread(target=submit_one)
    thread.start()
    time.sleep(1.0)
    assert not result, f"did not wait for the schema-creation lock: {result}"
    other = Database(f"sqlite:///{sqlite_file}")
    from jobctl.store.migrate import upgrade_to_head

    with other.write() as connection:  # what the lock's holder was doing
        upgrade_to_head(connection)
    other.dispose()
    os.close(fd)
    thread.join(30)
    assert result == [1]


def test_the_schema_creation_lock_is_not_waited_for_forever(
        sqlite_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite, "LOCK_WAIT_S", 0.5)
    lock_path = f"{sqlite_file}.migrate-lock"
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(DatabaseLocked) as caught:
            Client(f"sqlite:///{sqlite_file}").submit(JobSpec(argv=["true"]))
    finally:
        os.close(fd)
    assert caught.value.message.startswith(
        f"gave up after 1s waiting for the schema-creation lock {lock_path} of SQLite file ")
    assert caught.value.message.endswith(
        ": another jobctl (creating or upgrading the schema) held it at every try")


def test_an_upgrade_waits_for_writers_instead_of_failing_on_a_lock_upgrade(
        sqlite_file: Path) -> None:
    """The migrations run in a writer's transaction from the start: a deferred one that read
    first would get "database is locked" at once when another connection held the write lock."""
    from alembic import command

    from jobctl.store.migrate import alembic_config

    database = Database(f"sqlite:///{sqlite_file}")
    with database.write() as connection:
        command.upgrade(alembic_config(connection), "0001")  # type: ignore[arg-type]
    with held(sqlite_file, "BEGIN IMMEDIATE", 1.0):
        assert database.upgrade() == ("0001", SCHEMA_REVISION)
    database.dispose()


@pytest.mark.parametrize("kind", ["directory", "not-a-database"])
def test_a_file_that_cannot_be_opened_is_not_waited_for(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "jobctl.db"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"not an SQLite database" * 200)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as caught:
        Client(f"sqlite:///{path}").list_jobs()
    assert not isinstance(caught.value, DatabaseLocked)
    assert time.monotonic() - started < 5
