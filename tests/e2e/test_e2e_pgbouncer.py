"""Through PgBouncer in transaction pooling mode (tests/pgbouncer.py), what only a pooler shows:
jobctl finds it is behind one, keeps no prepared statements there, falls back to polling where
LISTEN cannot work and says so once, and creates the schema under a lock a pooler cannot lose.
(The end-to-end tests marked ALSO_THROUGH_PGBOUNCER run the rest of jobctl through it.)"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from e2e_support import Jobctl, wait_for
from pgbouncer import PgBouncer

from jobctl.store.direct import DirectDatabase
from jobctl.store.url import parse

pytestmark = pytest.mark.pgbouncer

FALLBACK = re.compile(r"LISTEN does not work through PostgreSQL at \S+ \(a transaction "
                      r"pooler\?\).*: polling every \S+s instead of waking on NOTIFY")


@pytest.fixture
def through(pgbouncer_url: str, tmp_path: Path) -> Iterator[Jobctl]:
    with Jobctl(pgbouncer_url, tmp_path) as runner:
        yield runner


def test_jobctl_knows_a_pooler_and_prepares_nothing_there(pgbouncer_url: str,
                                                          pg_url: str) -> None:
    """Directly, psycopg's automatic prepared statements stay on (they save a third of a bulk
    submit); through the pooler they are off, and a statement run often works."""
    for url, pooled in ((pg_url, False), (pgbouncer_url, True)):
        database = DirectDatabase(parse(url))
        try:
            for _ in range(20):  # psycopg would prepare it at the sixth
                with database.read() as conn:
                    assert conn.scalar("SELECT count(*) FROM jobs") == 0
            assert (database._raw.prepare_threshold is None) == pooled
        finally:
            database.close()


def test_a_worker_says_once_that_it_polls_and_runs_jobs(through: Jobctl) -> None:
    worker = through.start_worker("--concurrency", "2")
    wait_for(lambda: FALLBACK.search(worker.log()), 30,
             lambda: f"no fallback line:\n{worker.log()}")
    assert "every 0.2s" in worker.log()
    for _ in range(3):  # jobs submitted after the fallback start by polling
        job_id = through.submit("--", "echo", "polled")
        assert through.ok("job", "wait", "--timeout", "30s", str(job_id)) is not None
        assert through.ok("job", "logs", str(job_id)) == "polled\n"
    log = worker.log()
    assert len(FALLBACK.findall(log)) == 1, log
    assert "listener:" not in log, log  # no reconnect loop: the listener ended
    assert "Traceback" not in log, log


def test_a_scheduler_says_once_that_it_polls(through: Jobctl) -> None:
    log_path = through.tmp_path / "scheduler.log"
    with log_path.open("wb") as log:
        scheduler = through.popen("scheduler", "run", stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: FALLBACK.search(log_path.read_text()), 30,
             lambda: f"no fallback line:\n{log_path.read_text()}")
    scheduler.terminate()
    assert scheduler.wait(20) == 0
    text = log_path.read_text()
    assert len(FALLBACK.findall(text)) == 1, text
    assert "every 0.5s" in text, text


def test_directly_nothing_falls_back(jobctl_pg: Jobctl) -> None:
    worker = jobctl_pg.start_worker()
    job_id = jobctl_pg.submit("--", "true")
    jobctl_pg.ok("job", "wait", "--timeout", "30s", str(job_id))
    assert "LISTEN does not work" not in worker.log()


@pytest.mark.empty_database
def test_concurrent_first_use_creates_the_schema_once_and_leaves_no_lock(
        pgbouncer_url: str, pg_url: str, tmp_path: Path) -> None:
    """Four processes meet an empty database through the pooler at once: one creates the
    schema, the others wait for its transaction-scoped lock and find it made. No advisory lock
    is left behind in any server session the pooler lent."""
    with Jobctl(pgbouncer_url, tmp_path) as runner:
        processes = [runner.popen("job", "list") for _ in range(4)]
        for process in processes:
            _, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
    with psycopg.connect(pg_url, autocommit=True) as connection:
        locks = connection.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
    assert locks == (0,)


def test_the_pgbouncer_fixture_pools_in_transaction_mode(pgbouncer: PgBouncer,
                                                         pgbouncer_url: str) -> None:
    """What the marked tests rely on: two clients share a server session, so session state
    leaks between them; psycopg's automatic prepared statements (on by default) break at
    once."""
    with contextlib.ExitStack() as stack:
        first, second = (stack.enter_context(psycopg.connect(
            pgbouncer_url, autocommit=True, prepare_threshold=None)) for _ in range(2))
        pids = set()
        for _ in range(10):
            for connection in (first, second):
                row = connection.execute("SELECT pg_backend_pid()").fetchone()
                assert row is not None
                pids.add(row[0])
        assert len(pids) == 1  # in session mode: one server each; here the same one, lent
        assert first.info.backend_pid not in pids
    with contextlib.ExitStack() as stack:
        first, second = (stack.enter_context(psycopg.connect(pgbouncer_url, autocommit=True))
                         for _ in range(2))
        with pytest.raises((psycopg.errors.DuplicatePreparedStatement,
                            psycopg.errors.InvalidSqlStatementName)):
            for _ in range(10):
                for connection in (first, second):
                    connection.execute("SELECT 1")
