"""The test suite's own PostgreSQL plumbing (tests/pgcluster.py and the fixtures in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import sqlalchemy as sa
from pgcluster import PgCluster, PgServer, SharedCluster

from jobctl.client import Client
from jobctl.models import JobSpec
from jobctl.store.engine import Database
from jobctl.store.schema import SCHEMA_REVISION, metadata


def _current_database(url: str) -> str:
    with psycopg.connect(url, connect_timeout=10) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    return str(row[0])


def test_pg_url_empty_is_a_fresh_database_that_accepts_connections(pg_url_empty: str) -> None:
    assert pg_url_empty.startswith("postgresql://")
    with psycopg.connect(pg_url_empty, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # Fresh: no tables of anyone else's.
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog',"
            " 'information_schema')"
        ).fetchone()
        assert tables == (0,)


def test_cluster_has_the_test_settings(pg_cluster: PgServer) -> None:
    if not isinstance(pg_cluster, PgCluster | SharedCluster):
        pytest.skip("JOBCTL_TEST_DATABASE_URL server: its settings are not ours to check")
    port = urlsplit(pg_cluster.admin_url).port
    assert pg_cluster.admin_url == f"postgresql://postgres@127.0.0.1:{port}/postgres"
    with psycopg.connect(pg_cluster.admin_url, connect_timeout=10) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('max_connections', 'fsync',"
                " 'synchronous_commit', 'full_page_writes', 'listen_addresses')"
            ).fetchall()
        )
    assert settings == {
        "max_connections": "1000",
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


def _revision_tables_and_jobs(url: str) -> tuple[str | None, set[str], int]:
    """The schema revision, the tables, and how many jobs the database at `url` has."""
    database = Database(url)
    try:
        revision = database.current_revision()
        with database.read() as connection:
            tables = set(sa.inspect(connection).get_table_names())
            jobs = connection.execute(sa.text("SELECT count(*) FROM jobs")).scalar()
    finally:
        database.dispose()
    return revision, tables, int(jobs or 0)


def _add_a_job(url: str) -> None:
    database = Database(url)
    try:
        Client(database=database).submit(JobSpec(argv=["true"]))
    finally:
        database.dispose()


def test_pg_url_is_migrated_to_head_and_has_no_rows(pg_url: str, pg_template: str) -> None:
    assert _current_database(pg_url) != pg_template
    assert _revision_tables_and_jobs(pg_url) == (
        SCHEMA_REVISION, set(metadata.tables) | {"alembic_version"}, 0)


def test_a_pg_url_changes_neither_the_template_nor_the_next_copy(
    request: pytest.FixtureRequest, pg_url: str, pg_cluster: PgServer, pg_template: str
) -> None:
    _add_a_job(pg_url)
    assert _revision_tables_and_jobs(pg_url)[2] == 1
    other = f"{_current_database(pg_url)}_next"
    other_url = pg_cluster.create_database(other, template=pg_template)
    request.addfinalizer(lambda: pg_cluster.drop_database(other))
    assert _revision_tables_and_jobs(other_url) == (
        SCHEMA_REVISION, set(metadata.tables) | {"alembic_version"}, 0)


def test_the_pg_template_accepts_no_connections(pg_cluster: PgServer, pg_template: str) -> None:
    """Nothing can stay connected to it, so copying it never fails on "being accessed by other
    users"."""
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        psycopg.connect(pg_cluster.database_url(pg_template), connect_timeout=10).close()


def test_a_sealed_template_can_be_dropped(pg_cluster: PgServer, pg_url: str) -> None:
    name = f"{_current_database(pg_url)}_sealed"
    pg_cluster.create_database(name)
    pg_cluster.seal_template(name)
    pg_cluster.drop_database(name)
    pg_cluster.drop_database(name)  # gone: a no-op
    with psycopg.connect(pg_url, connect_timeout=10) as conn:
        found = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        assert found.fetchone() == (0,)


def test_sqlite_url_is_a_migrated_copy_of_the_template(sqlite_url: str, sqlite_template: Path,
                                                       tmp_path: Path) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    assert path.parent == tmp_path and path != sqlite_template
    template_bytes = sqlite_template.read_bytes()
    assert _revision_tables_and_jobs(sqlite_url) == (
        SCHEMA_REVISION, set(metadata.tables) | {"alembic_version"}, 0)
    _add_a_job(sqlite_url)
    assert _revision_tables_and_jobs(sqlite_url)[2] == 1
    assert sqlite_template.read_bytes() == template_bytes  # the copy is a copy
    assert sqlite_template.stat().st_mode & 0o222 == 0  # read-only


def test_sqlite_url_empty_is_a_file_not_yet_created(sqlite_url_empty: str, tmp_path: Path) -> None:
    path = Path(sqlite_url_empty.removeprefix("sqlite:///"))
    assert path.parent == tmp_path
    assert not path.exists()


def test_db_url_empty_gives_each_backend_empty(db_url_empty: str,
                                               request: pytest.FixtureRequest) -> None:
    backend = request.node.callspec.id
    assert db_url_empty.startswith(f"{backend}://")
    database = Database(db_url_empty)
    try:
        assert database.current_revision() is None
    finally:
        database.dispose()


@pytest.mark.empty_database
def test_the_empty_database_marker_empties_db_url(db_url: str, tmp_path: Path) -> None:
    if db_url.startswith("sqlite"):
        assert not (tmp_path / "jobctl.db").exists()
        return
    with psycopg.connect(db_url, connect_timeout=10) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)


def test_environment_is_isolated(tmp_path: Path) -> None:
    # But JOBCTL_ALLOW_ROOT, which tests/conftest.py gives every test (a root worker on
    # PostgreSQL refuses to start without it, and CI runs as root).
    assert [name for name in os.environ if name.startswith("JOBCTL_")] == ["JOBCTL_ALLOW_ROOT"]
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
