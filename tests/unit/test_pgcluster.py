"""The test suite's own PostgreSQL plumbing (tests/pgcluster.py and the fixtures in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from pgcluster import PgCluster, PgServer


def _current_database(url: str) -> str:
    with psycopg.connect(url, connect_timeout=10) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    return str(row[0])


def test_pg_url_is_a_fresh_database_that_accepts_connections(pg_url: str) -> None:
    assert pg_url.startswith("postgresql://")
    with psycopg.connect(pg_url, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # Fresh: no tables of anyone else's.
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog',"
            " 'information_schema')"
        ).fetchone()
        assert tables == (0,)


def test_cluster_has_the_test_settings(pg_cluster: PgServer) -> None:
    if not isinstance(pg_cluster, PgCluster):
        pytest.skip("JOBCTL_TEST_DATABASE_URL server: its settings are not ours to check")
    assert pg_cluster.admin_url == f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/postgres"
    with psycopg.connect(pg_cluster.admin_url, connect_timeout=10) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('max_connections', 'fsync',"
                " 'synchronous_commit', 'full_page_writes', 'listen_addresses')"
            ).fetchall()
        )
    assert settings == {
        "max_connections": "300",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "listen_addresses": "127.0.0.1",
    }


def test_two_pg_urls_are_different_databases(
    request: pytest.FixtureRequest, pg_url: str, pg_cluster: PgServer
) -> None:
    # A second database in the same test: create it through the server, as pg_url does.
    other = f"{_current_database(pg_url)}_other"
    other_url = pg_cluster.create_database(other)
    request.addfinalizer(lambda: pg_cluster.drop_database(other))
    assert other_url != pg_url
    with psycopg.connect(pg_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE only_in_first (id integer)")
    with psycopg.connect(other_url, connect_timeout=10) as conn:
        found = conn.execute("SELECT to_regclass('only_in_first') IS NOT NULL").fetchone()
    assert found == (False,)


def test_environment_is_isolated(tmp_path: Path) -> None:
    assert not [name for name in os.environ if name.startswith("JOBCTL_")]
    for variable in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        assert os.environ[variable].startswith(str(tmp_path))


def test_db_url_gives_each_backend(db_url: str, request: pytest.FixtureRequest) -> None:
    backend = request.node.callspec.id
    assert backend in ("sqlite", "postgresql")
    assert db_url.startswith(f"{backend}://")


def test_server_restart_keeps_data_and_port(private_pg_cluster: PgCluster) -> None:
    cluster = private_pg_cluster
    url = cluster.create_database("restart_check")
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE survivor (id integer)")
        conn.execute("INSERT INTO survivor VALUES (42)")
    port = cluster.port

    cluster.stop_server()
    assert not cluster.server_running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2).close()

    cluster.start_server()
    assert cluster.server_running
    assert cluster.port == port
    with psycopg.connect(url, connect_timeout=10) as conn:
        assert conn.execute("SELECT id FROM survivor").fetchall() == [(42,)]


def test_stop_removes_the_cluster() -> None:
    cluster = PgCluster().start()
    folder = cluster.folder
    admin_url = cluster.admin_url
    assert (folder / "data" / "postmaster.pid").exists()
    cluster.stop()
    cluster.stop()  # idempotent, as atexit may call it again
    assert not folder.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(admin_url, connect_timeout=2).close()
