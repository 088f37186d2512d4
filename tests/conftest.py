"""Fixtures shared by the whole suite: database URLs for both backends, and an isolated environment.

PostgreSQL comes from a throwaway cluster per test process (tests/pgcluster.py), started only when
a test first asks for it, or from the server named by JOBCTL_TEST_DATABASE_URL when that is set.
Under pytest-xdist every worker is its own process, so each gets its own cluster; database names
also carry the worker id so that workers sharing a JOBCTL_TEST_DATABASE_URL server never clash.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgcluster import PgCluster, PgServer, server_from_url_or_new_cluster

# Read once at import: the autouse fixture below removes every JOBCTL_* variable during tests.
EXTERNAL_DATABASE_URL = os.environ.get("JOBCTL_TEST_DATABASE_URL") or None

# "gw0", "gw1", … under xdist; "main" in a plain run.
WORKER_ID = os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgServer]:
    """The PostgreSQL server for this test process: a PgCluster, or a PgServer for
    JOBCTL_TEST_DATABASE_URL. Tests that stop the server should use `private_pg_cluster`."""
    server = server_from_url_or_new_cluster(EXTERNAL_DATABASE_URL)
    try:
        yield server
    finally:
        if isinstance(server, PgCluster):
            server.stop()


@pytest.fixture
def private_pg_cluster() -> Iterator[PgCluster]:
    """A cluster of this test's own (about a second to start), for tests that stop and restart
    the server and must not disturb the shared one. Always local, even with
    JOBCTL_TEST_DATABASE_URL, since we cannot stop someone else's server."""
    cluster = PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgServer) -> Iterator[str]:
    """URL of a new, empty PostgreSQL database for this test only; dropped afterwards."""
    # 63 bytes is PostgreSQL's limit on names; this is about 30.
    name = f"jobctl_test_{WORKER_ID}_{uuid.uuid4().hex[:12]}".lower()
    url = pg_cluster.create_database(name)
    yield url
    # A chaos test that failed between stop_server() and start_server() would otherwise break
    # this drop and every later test in the process.
    if isinstance(pg_cluster, PgCluster) and not pg_cluster.server_running:
        pg_cluster.start_server()
    pg_cluster.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite database file in this test's temporary directory (not yet created)."""
    return f"sqlite:///{tmp_path / 'jobctl.db'}"


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Both backends in turn: a test taking `db_url` runs once with each."""
    # getfixturevalue, not a dependency on both fixtures, so that the sqlite run never starts
    # the cluster (and `-k sqlite` runs never need PostgreSQL at all).
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the developer's own jobctl configuration, data and database."""
    for variable, folder in (
        ("XDG_DATA_HOME", "xdg-data"),
        ("XDG_CONFIG_HOME", "xdg-config"),
        ("XDG_CACHE_HOME", "xdg-cache"),
    ):
        path = tmp_path / folder
        path.mkdir()
        monkeypatch.setenv(variable, str(path))
    for variable in [name for name in os.environ if name.startswith("JOBCTL_")]:
        monkeypatch.delenv(variable)
