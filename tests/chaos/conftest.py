"""Fixtures for the chaos tests: real workers, real signals, a PostgreSQL server that goes away.

The helpers that run the real `jobctl` executable live in tests/e2e/e2e_support.py; its folder is
put on sys.path here so that both suites share them (`from e2e_support import Jobctl`), and the
chaos-only helpers (a TCP proxy that can silently cut the network, side-effect logs) are in
chaos_support.py beside this file.

Every fixture stops what it started, whatever happened to the test: workers (SIGCONT first, since
a test may have frozen one, then SIGTERM and SIGKILL of the group), jobs whose pids the test
registered with `leftover_pids`, and the test's database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from e2e_support import Jobctl, jobctl, jobctl_sqlite
from pgcluster import PgCluster

__all__ = ["jobctl", "jobctl_sqlite"]  # fixtures shared with tests/e2e


@pytest.fixture
def chaos_jobctl(pg_url: str, tmp_path: Path) -> Iterator[Jobctl]:
    """The real CLI on a fresh database of the shared PostgreSQL cluster (which stays up),
    already migrated (`pg_url`)."""
    with Jobctl(pg_url, tmp_path) as runner:
        yield runner


@pytest.fixture
def jobctl_factory(tmp_path: Path) -> Iterator[Callable[[str, str], Jobctl]]:
    """Makes more `Jobctl` runners (another database URL, e.g. through a proxy), each with a
    folder of its own for its worker logs; all of them are cleaned up after the test."""
    made: list[Jobctl] = []

    def make(database_url: str, label: str) -> Jobctl:
        folder = tmp_path / label
        folder.mkdir(exist_ok=True)
        runner = Jobctl(database_url, folder)
        made.append(runner)
        return runner

    try:
        yield make
    finally:
        for runner in made:
            runner.cleanup()


@pytest.fixture
def restartable_jobctl(private_pg_cluster: PgCluster, tmp_path: Path) -> Iterator[Jobctl]:
    """The real CLI on a database of this test's own cluster, which the test may stop and start
    (`restartable_jobctl.cluster`). The database is empty: a template would cost as much as the
    migration it saves on a cluster made for one test, so the test runs `db upgrade` itself."""
    url = private_pg_cluster.create_database("jobctl_chaos")
    runner = Jobctl(url, tmp_path)
    runner.cluster = private_pg_cluster  # type: ignore[attr-defined]
    try:
        yield runner
    finally:
        if not private_pg_cluster.server_running:
            private_pg_cluster.start_server()
        runner.cleanup()


@pytest.fixture
def leftover_pids() -> Iterator[list[int]]:
    """Pids of job processes (each the leader of its own process group) that the test saw; any
    still alive at the end are killed with their group, so that a failed fencing test leaves no
    `sleep 30` behind."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            if not _still_our_job_group(pid):
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _still_our_job_group(pgid: int) -> bool:
    """Whether group `pgid` may still hold one of our jobs: its leader (a /bin/sh) is alive, or
    gone with members left behind. A live leader running something else is a reused pid."""
    try:
        command = Path(f"/proc/{pgid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return True  # the leader is gone; only its own leftovers can carry its group id
    return not command or command.endswith(b"sh")  # empty: a zombie leader
