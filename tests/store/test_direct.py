"""The database through its driver alone (jobctl.store.direct): URLs, schema checks, errors, and
the reads and inserts written on it, on both backends."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobctl.client import Client
from jobctl.errors import DatabaseLocked, DatabaseUnavailable, InvalidInput, SchemaOutOfDate
from jobctl.models import JobSpec, JobState
from jobctl.store import SCHEMA_REVISION, reads, sqlite, submit
from jobctl.store.direct import DirectDatabase, locate
from jobctl.store.engine import Database
from jobctl.store.url import Location, parse

# --- URLs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "backend", "target", "where"), [
    ("sqlite:////var/lib/jobctl.db", "sqlite", "/var/lib/jobctl.db",
     "SQLite file /var/lib/jobctl.db"),
    ("sqlite:///relative.db", "sqlite", "relative.db", "SQLite file relative.db"),
    ("postgresql://u:secret@db.example:6543/jobs", "postgresql",
     "postgresql://u:secret@db.example:6543/jobs",
     "PostgreSQL at db.example:6543/jobs"),
    ("postgres://u@db/jobs", "postgresql", "postgresql://u@db/jobs", "PostgreSQL at db:5432/jobs"),
    ("postgresql+psycopg://u@/jobs?host=/run/pg", "postgresql", "postgresql://u@/jobs?host=/run/pg",
     "PostgreSQL at /run/pg (socket):5432/jobs"),
])
def test_locate_understands_the_usual_urls(url: str, backend: str, target: str,
                                           where: str) -> None:
    location = locate(url)
    assert location is not None
    assert (location.backend, location.target, location.where) == (backend, target, where)
    assert "secret" not in location.where


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://u:secret@db/jobs", "unsupported database 'mysql' in 'mysql://u:***@db/jobs'"),
    ("sqlite://", "an SQLite database URL needs a file path"),
    ("sqlite:///:memory:", "an SQLite database URL needs a file path"),
    ("postgresql://u:secret@db:notaport/jobs", "invalid database URL 'postgresql://u:***@db:"),
    ("no scheme at all", "invalid database URL 'no scheme at all'"),
])
def test_the_one_parser_refuses_what_is_no_jobctl_url(url: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(url)
    assert caught.value.message.startswith(message)
    assert "secret" not in caught.value.message


def test_sqlite_driver_options_are_left_to_sqlalchemy() -> None:
    assert locate("sqlite:///file.db?mode=ro") is None  # only SQLAlchemy's dialect honours them
    assert parse("sqlite:///file.db?mode=ro") == Location("sqlite", "file.db",
                                                          "SQLite file file.db", "mode=ro")


def test_statements_reach_the_driver_unchanged(db_url: str) -> None:
    """No placeholder rewriting: a `:word` or a `%` inside a literal is the statement's own."""
    database = DirectDatabase(parse(db_url))
    try:
        with database.read() as conn:
            assert conn.scalar("SELECT 'HH24:MI :x 50%'") == "HH24:MI :x 50%"
            param = "%(a)s" if database.backend.title == "PostgreSQL" else ":a"
            assert conn.scalar(f"SELECT 'x:y' || {param}", {"a": "!"}) == "x:y!"
    finally:
        database.close()


# --- opening: schema and errors -------------------------------------------------------------------


def test_a_missing_or_empty_database_is_left_to_the_migrations(db_url_empty: str,
                                                                tmp_path: Path) -> None:
    assert DirectDatabase.open(db_url_empty) is None  # SQLite: no file; PostgreSQL: no tables
    assert not Path(tmp_path / "jobctl.db").exists()  # and it created nothing


def test_a_database_at_another_revision_must_be_upgraded(db_url: str) -> None:
    database = DirectDatabase(parse(db_url))
    with database.write() as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    database.close()
    with pytest.raises(SchemaOutOfDate, match="revision 0001, this jobctl needs "
                       f"{SCHEMA_REVISION}: run `jobctl db upgrade`"):
        DirectDatabase.open(db_url)


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    with pytest.raises(DatabaseUnavailable) as caught:
        DirectDatabase.open("postgresql://me:hunter2@127.0.0.1:1/jobs")
    message = caught.value.message
    assert message.startswith("cannot reach PostgreSQL at 127.0.0.1:1/jobs: ")
    assert "hunter2" not in message and "\n" not in message


def test_a_file_that_is_no_database_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not an SQLite database, it only has its name" * 100)
    with pytest.raises(DatabaseUnavailable, match=r"cannot use SQLite file .*notes\.txt: "):
        DirectDatabase.open(f"sqlite:///{path}")


def test_a_failed_transaction_rolls_back_and_the_next_one_works(db_url: str) -> None:
    database = DirectDatabase.open(db_url)
    assert database is not None
    with pytest.raises(ZeroDivisionError), database.write() as conn:
        submit.insert_many(conn, [JobSpec(argv=["true"])], states=[JobState.QUEUED])
        raise ZeroDivisionError
    with database.read() as conn:
        assert reads.list_jobs(conn) == []
    database.close()


# --- inserts and reads -------------------------------------------------------------------------


def test_bulk_insert_returns_ids_in_order_and_stores_every_field(db_url: str) -> None:
    later = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    specs = [
        JobSpec(argv=["echo", "é", "two words"], name="first", queue="q", priority=5,
                env={"A": "1"}, labels={"team": "ops"}, timeout_s=1.5, retries=2,
                backoff_s=3.0, cwd="/tmp"),
        JobSpec(argv=["sh", "-c", "echo\t'tab'\\n"], run_at=later),
        JobSpec(argv=["true"], run_in_s=3600),
        JobSpec(argv=["printf", "a\\b\r\n\t\\N"], name="tab\there", cwd="C:\\x",
                labels={"k\n": "v\\"}, run_at=datetime(2031, 5, 6, 7, 8, 9)),
    ]
    database = DirectDatabase.open(db_url)
    assert database is not None
    with database.write() as conn:
        ids = submit.insert_many(conn, specs, states=[JobState.QUEUED] * 4)
    assert ids == sorted(ids) and len(set(ids)) == 4

    # read back in another transaction, as every command reads
    with database.read() as conn:
        rows = reads.get_many(conn, ids)
    database.close()
    first, second, third, fourth = (rows[job_id] for job_id in ids)
    assert (first.argv, first.name, first.queue, first.priority, first.env, first.labels,
            first.timeout_s, first.max_attempts, first.backoff_s, first.cwd) == (
        ["echo", "é", "two words"], "first", "q", 5, {"A": "1"}, {"team": "ops"}, 1.5, 3, 3.0,
        "/tmp")
    assert second.argv == ["sh", "-c", "echo\t'tab'\\n"] and second.run_at == later
    assert timedelta(minutes=59) < third.run_at - third.created_at < timedelta(minutes=61)
    assert first.state is JobState.QUEUED and first.created_at.tzinfo is not None
    # what COPY's text format escapes comes back as it was given; a time without zone is UTC
    assert (fourth.argv, fourth.name, fourth.cwd, fourth.labels, fourth.run_at) == (
        ["printf", "a\\b\r\n\t\\N"], "tab\there", "C:\\x", {"k\n": "v\\"},
        datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC))


def test_bulk_insert_binds_columns_some_rows_set_and_others_leave_empty(db_url: str) -> None:
    """A batch is bound column by column, a column no row sets left out: each row keeps its
    own value where the batch's rows differ (a limit, a resource, a hold on one of three)."""
    specs = [JobSpec(argv=["true"]),
             JobSpec(argv=["true"], limits={"k": 2}, cpus=1.5, mem_bytes=1 << 20, gpus=1,
                     requires={"zone": "eu"}, hold=True),
             JobSpec(argv=["false"], limits={"k": 3})]
    database = DirectDatabase.open(db_url)
    assert database is not None
    with database.write() as conn:
        ids = submit.insert_many(conn, specs, states=[JobState.QUEUED] * 3)
    with database.read() as conn:
        rows = reads.get_many(conn, ids)
    database.close()
    plain, gated, other = (rows[job_id] for job_id in ids)
    assert (plain.argv, plain.limits, plain.cpus, plain.mem_bytes, plain.gpus, plain.requires,
            plain.held) == (["true"], {}, None, None, 0, {}, False)
    assert (gated.limits, gated.cpus, gated.mem_bytes, gated.gpus, gated.requires,
            gated.held) == ({"k": 2}, 1.5, 1 << 20, 1, {"zone": "eu"}, True)
    assert (other.argv, other.limits, other.held, other.cpus) == (["false"], {"k": 3}, False, None)


def test_list_filters_by_state_queue_name_glob_and_odd_label_keys(db_url: str) -> None:
    client = Client(db_url)
    a = client.submit(JobSpec(argv=["true"], name="backup-db", queue="ops",
                              labels={'we"ird.key': "x"})).id
    b = client.submit(JobSpec(argv=["true"], name="backup_files", queue="ops")).id
    c = client.submit(JobSpec(argv=["true"], name="report", queue="default",
                              labels={"team": "data"})).id
    client.cancel([c])

    def ids(**filters: object) -> list[int]:
        return [job.id for job in client.list_jobs(**filters)]  # type: ignore[arg-type]

    assert ids() == [c, b, a]
    assert ids(states=[JobState.CANCELLED]) == [c]
    assert ids(states=[JobState.QUEUED, JobState.CANCELLED], queues=["ops"]) == [b, a]
    assert ids(name="backup*") == [b, a]
    assert ids(name="backup_?iles") == [b]  # _ is literal, ? is any one character
    assert ids(name="backup_*") == [b]
    assert ids(labels={'we"ird.key': "x"}) == [a]
    assert ids(labels={"team": "data"}) == [c]
    assert ids(labels={"team": "ops"}) == []
    assert ids(limit=1) == [c]


def test_reads_inside_a_write_transaction_see_its_inserts(db_url: str) -> None:
    database = DirectDatabase(parse(db_url))
    with database.write() as conn:
        [job_id] = submit.insert_many(conn, [JobSpec(argv=["true"])], states=[JobState.QUEUED])
        # the same transaction sees it
        assert [job.id for job in reads.list_jobs(conn)] == [job_id]
    database.close()


def test_the_client_creates_an_empty_database_then_takes_the_direct_road(db_url_empty: str
                                                                         ) -> None:
    client = Client(db_url_empty)
    job_id = client.submit(JobSpec(argv=["true"])).id
    assert client._direct is not None  # the migrations ran, then the driver took over
    assert client.get(job_id).argv == ["true"]


def test_sqlite_ids_stay_consecutive_beside_a_concurrent_writer(sqlite_url: str,
                                                                 tmp_path: Path) -> None:
    """Bulk inserts derive their ids from last_insert_rowid(); a second connection writing at
    the same time must wait for the write lock rather than interleave ids."""
    database = DirectDatabase.open(sqlite_url)
    assert database is not None
    with database.write() as conn:
        ids = submit.insert_many(conn, [JobSpec(argv=["true"])] * 3, states=[JobState.QUEUED] * 3)
        other = sqlite3.connect(tmp_path / "jobctl.db", timeout=0.1)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("INSERT INTO jobs (queue, state, argv, env, labels, run_at, "
                          "created_at) VALUES ('q', 'queued', '[]', '{}', '{}', 'x', 'x')")
        other.close()
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]
    database.close()


# --- connections: one per thread, the worker's turns, losing the database -------------------------


def test_a_clone_works_in_another_thread_on_a_connection_of_its_own(db_url: str) -> None:
    """The worker's heartbeat thread renews leases on a clone while the main thread is inside a
    turn: it must neither wait for the main thread's lock nor touch its connection."""
    database = DirectDatabase.open(db_url)
    assert database is not None
    clone = database.clone()
    seen: list[object] = []

    def heartbeat() -> None:
        try:
            with clone.read() as conn:
                seen.append(conn.raw)
                seen.append(conn.scalar("SELECT count(*) FROM jobs"))
        except Exception as error:  # e.g. sqlite3's "created in another thread"
            seen.append(error)
        finally:
            clone.close()  # in the thread that used it

    with database.write() as conn:  # holds the main connection (and its lock) meanwhile
        thread = threading.Thread(target=heartbeat)
        thread.start()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the clone waited for the other connection's lock"
        assert len(seen) == 2 and seen[0] is not conn.raw and seen[1] == 0, seen
    database.close()


def test_a_turn_autocommits_each_statement_on_postgresql(pg_url: str) -> None:
    direct = DirectDatabase.open(pg_url)
    assert direct is not None
    other = direct.clone()
    with direct.turn() as conn:
        submit.insert_many(conn, [JobSpec(argv=["true"])], states=[JobState.QUEUED])
        with other.read() as reader:  # committed already, before the turn ends
            assert len(reads.list_jobs(reader)) == 1
    direct.close()
    other.close()


def test_a_turn_is_one_transaction_on_sqlite(sqlite_url: str) -> None:
    direct = DirectDatabase.open(sqlite_url)
    assert direct is not None
    with pytest.raises(ZeroDivisionError), direct.turn() as conn:
        submit.insert_many(conn, [JobSpec(argv=["true"])], states=[JobState.QUEUED])
        raise ZeroDivisionError
    with direct.read() as conn:
        assert reads.list_jobs(conn) == []
    direct.close()


def test_a_lost_server_connection_is_one_line_and_the_next_use_reconnects(pg_url: str) -> None:
    direct = DirectDatabase.open(pg_url)
    assert direct is not None
    with direct.read() as conn:
        first = conn.scalar("SELECT pg_backend_pid()")
    killer = direct.clone()
    with killer.write() as conn:
        assert conn.scalar("SELECT pg_terminate_backend(%(pid)s)", {"pid": first})
    killer.close()
    for use in (direct.read, direct.turn):
        with pytest.raises(DatabaseUnavailable) as caught, use() as conn:
            conn.scalar("SELECT 1")
        assert caught.value.message.startswith("lost PostgreSQL at ")
        assert "\n" not in caught.value.message
        with direct.read() as conn:  # a new connection, at once
            second = conn.scalar("SELECT pg_backend_pid()")
        assert second != first
        with direct.clone().write() as conn:
            conn.scalar("SELECT pg_terminate_backend(%(pid)s)", {"pid": second})
        first = second
    direct.close()


def test_a_locked_sqlite_file_is_waited_for_and_then_database_locked(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock held elsewhere is waited for (see test_sqlite_locks.py), up to the overall bound:
    then DatabaseLocked (exit 4, the worker retries later); the connection is kept."""
    monkeypatch.setattr(sqlite, "LOCK_WAIT_S", 0.2)
    holder = DirectDatabase.open(sqlite_url)
    waiter = DirectDatabase.open(sqlite_url)
    assert holder is not None and waiter is not None
    with waiter.read() as conn:
        conn.execute("PRAGMA busy_timeout = 10")
    locked = r"^gave up after \d+s waiting for the write lock of SQLite file .*jobctl\.db: "
    with holder.write(), pytest.raises(DatabaseLocked, match=locked), waiter.write():
        pass
    with waiter.write() as conn:
        assert conn.scalar("PRAGMA busy_timeout") == 10  # the same connection
    holder.close()
    waiter.close()


def test_a_url_only_sqlalchemy_parses_still_gets_a_direct_database(tmp_path: Path) -> None:
    """SQLite with driver options: the connections are made as SQLAlchemy makes them."""
    url = f"sqlite:///{tmp_path / 'jobctl.db'}?timeout=5"
    assert locate(url) is None
    database = Database(url)
    database.ensure_schema()
    direct = database.direct()
    database.dispose()
    assert direct.checked() is direct
    with direct.write() as conn:
        [job_id] = submit.insert_many(conn, [JobSpec(argv=["true"])], states=[JobState.QUEUED])
    with direct.read() as conn:
        assert [job.id for job in reads.list_jobs(conn)] == [job_id]
        assert conn.scalar("PRAGMA journal_mode") == "wal"
    direct.close()


def test_the_server_notices_a_vanished_client_within_seconds_on_every_connection(
        pg_url: str) -> None:
    """Each session sets the server's own TCP keepalives and user timeout for its socket to us
    (jobctl.store.postgres.SERVER_SOCKET_SETTINGS): a client cut off mid-transaction must not
    keep its row locks for the kernel's hours (tests/fleet: the cut-off scheduler). The
    listener's connection too."""
    from jobctl.store.postgres.listen import PgSubscription

    direct = DirectDatabase.open(pg_url)
    assert direct is not None
    expected = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2",
                "tcp_keepalives_count": "3", "tcp_user_timeout": "10000"}  # s, s, -, ms
    with direct.read() as conn:
        assert {name: conn.scalar(f"SHOW {name}") for name in expected} == expected
    direct.close()
    listening = PgSubscription(parse(pg_url), ["jobctl_test"])
    try:
        raw = listening._raw
        assert {name: raw.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in expected} == expected
    finally:
        listening.close()
