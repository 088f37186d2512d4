"""Fixtures shared by the whole suite: database URLs for both backends, and an isolated environment.

PostgreSQL comes from a throwaway cluster per test process (tests/pgcluster.py), started only when
a test first asks for it, or from the server named by JOBCTL_TEST_DATABASE_URL when that is set.
Under pytest-xdist every worker is its own process, so each gets its own cluster; database names
also carry the worker id so that workers sharing a JOBCTL_TEST_DATABASE_URL server never clash.

A test's database comes already migrated to the newest schema revision: the migrations run once
per test process, through jobctl's own upgrade path (`Database.upgrade`, to Alembic's head), into
a template, and each test gets a copy of it. PostgreSQL copies with `CREATE DATABASE … TEMPLATE`
(`pg_url`); SQLite copies the file (`sqlite_url`). Tests about an EMPTY database (the schema made
on first use, `db upgrade` from nothing, the migrations themselves) ask for `pg_url_empty`,
`sqlite_url_empty` or `db_url_empty` instead; `db_url` and `db_url_empty` run on both backends.
A test that gets its database through another fixture (`jobctl`, `jobctl_sqlite`, `chaos_jobctl`
…) is marked `@pytest.mark.empty_database` instead, which makes `pg_url`, `sqlite_url` and so
`db_url` hand out empty databases for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from pgbouncer import MISSING, PgBouncer, pgbouncer_binary
from pgcluster import (
    PgCluster,
    PgServer,
    SharedCluster,
    memory_folder,
    server_from_url_or_new_cluster,
)

from jobctl.store.engine import Database


def pytest_configure(config: pytest.Config) -> None:
    """Bytecode for jobctl's modules, as an installed jobctl has it (pip compiles at install):
    the suite starts a few thousand `jobctl` processes, and where PYTHONDONTWRITEBYTECODE is set
    (some sandboxes and CI images) each would otherwise compile jobctl's source again. Files
    already compiled and unchanged are skipped; the writes are atomic (xdist workers may race)."""
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "jobctl"), quiet=1)
    # tmp_path (the SQLite test databases, logs, scratch files) in memory too, as the clusters
    # are (pgcluster.memory_folder): on this machine's ext4 every file system call costs tens of
    # microseconds of kernel time, and SQLite makes many. PYTEST_DEBUG_TEMPROOT is pytest's own
    # setting for the root of its temporary folders, read when the first is made (after this;
    # under xdist by the controller, which hands each process a folder of its own).
    if "PYTEST_DEBUG_TEMPROOT" not in os.environ and (memory := memory_folder()) is not None:
        os.environ["PYTEST_DEBUG_TEMPROOT"] = memory
    if _is_xdist_controller(config):
        if EXTERNAL_DATABASE_URL is None:
            _start_shared_cluster(config)
        _rewrite_test_modules_once(config)


def _rewrite_test_modules_once(config: pytest.Config) -> None:
    """pytest's assertion rewriting of every test module and conftest.py, done once by xdist's
    controller and cached where pytest caches it (`__pycache__/*-pytest-*.pyc`, checked by the
    source's hash), before the test processes start. Otherwise each of them parses and rewrites
    all ~110 modules itself as it collects (about 2 of its 3.8 CPU-s of collection), and where
    PYTHONDONTWRITEBYTECODE is set (as in some CI images) pytest never caches them, run after
    run. Only a cache: without these private helpers (another pytest) the processes rewrite as
    before."""
    try:
        from _pytest.assertion.rewrite import (
            PYC_TAIL,
            _read_pyc,
            _rewrite_test,
            _write_pyc,
            assertstate_key,
            get_cache_dir,
        )
    except ImportError:
        return
    state = config.stash.get(assertstate_key, None)
    if state is None:  # --assert=plain
        return
    for source in sorted(Path(__file__).resolve().parent.rglob("*.py")):
        if not (source.name.startswith("test_") or source.name == "conftest.py"):
            continue
        cache = get_cache_dir(source)
        pyc = cache / (source.name[:-3] + PYC_TAIL)
        if _read_pyc(source, pyc) is not None:
            continue
        with contextlib.suppress(OSError):
            cache.mkdir(exist_ok=True)
            source_hash, code = _rewrite_test(source, config)
            _write_pyc(state, code, source_hash, pyc)


def pytest_unconfigure(config: pytest.Config) -> None:
    shared: _Shared | None = getattr(config, "_jobctl_shared_cluster", None)
    if shared is not None:
        shared.stop()


# --- the order tests run in under xdist: the longest tests at the start of different processes -
#
# xdist's worksteal hands each process one contiguous slice of the collection at the start, and
# an idle process later steals the second half of the longest queue; a test already running
# cannot be stolen. Collected as written, tests/fleet's four tests (network cuts and a 30 s
# outage: up to a minute each) fall into one slice, one after another, and the run ends with
# that process working through them while the others wait. So each goes first in a slice of its
# own. The other tests that mostly wait (tests/chaos: kills, outages, leases running out; the
# scheduler races and misfires of tests/e2e: 5 to 25 s each) are dealt out likewise and spread
# evenly through the first two thirds of each slice, so that their waits overlap the CPU-bound
# tests around them and the run ends on short tests. Collected as written, the chaos tests sat
# together in the first slice and were stolen last, and the run ended with six processes
# waiting on leases while the CPU idled (a quarter of the last 40 s). Everything else keeps its
# place. (Putting every end-to-end and chaos test first was tried: on 2 cores they then all
# contend at once, and a run took half as long again.) Every process computes the same order,
# as xdist requires: from the paths alone.

LONGEST_FIRST_FOLDERS = ("fleet",)
SPREAD_FOLDERS = ("chaos",)
SPREAD_MODULES = ("test_e2e_schedules.py", "test_e2e_overdue.py")


# Folders whose every test is `slow`: real jobctl processes and workers, through crashes, outages
# and network cuts. `-m "not slow"` leaves them out for a quick loop while editing (about 60 s
# against the suite's 180 s on 2 cores: those 230 tests use most of its CPU).
SLOW_FOLDERS = ("e2e", "chaos", "fleet")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _folder(item) in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)
    workers = int(getattr(config, "workerinput", {}).get("workercount", 0))
    if workers < 2:
        return
    longest = [item for item in items if _folder(item) in LONGEST_FIRST_FOLDERS]
    spread = [item for item in items if item not in longest and (
        _folder(item) in SPREAD_FOLDERS or Path(str(item.fspath)).name in SPREAD_MODULES)]
    rest = [item for item in items if item not in longest and item not in spread]
    # The slices as worksteal cuts them: len(pending) // processes left, in turn.
    order: list[pytest.Item] = []
    left = len(items)
    for taken in range(workers):
        size = left // (workers - taken)
        left -= size
        head, dealt = longest[taken::workers], spread[taken::workers]
        plain = rest[:size - len(head) - len(dealt)]
        rest = rest[len(plain):]
        order += head + _interleave(plain, dealt)
    items[:] = order + rest


def _folder(item: pytest.Item) -> str:
    return Path(str(item.fspath)).parent.name


def _interleave(plain: list[pytest.Item], dealt: list[pytest.Item]) -> list[pytest.Item]:
    """`plain` in its order with `dealt`'s items spread evenly through its first two thirds, the
    first after a gap (the slice's head is its longest test, if it has one)."""
    out: list[pytest.Item] = []
    step = len(plain) * 2 / 3 / (len(dealt) + 1) if dealt else 0.0
    taken = 0
    for index, item in enumerate(dealt, 1):
        until = round(step * index)
        out += plain[taken:until]
        taken = until
        out.append(item)
    return out + plain[taken:]


# --- one PostgreSQL cluster for all of xdist's test processes ----------------------------------
#
# Under pytest-xdist the controller starts one cluster, and migrates one template on it, in a
# thread while its test processes start and collect; each process reads the cluster's URL and
# the template's name from a file named in SHARED_CLUSTER_FILE once its first test asks for
# PostgreSQL. One cluster, not one per process: initdb, a server's start and the migrations are
# paid once instead of six times. The controller stops it when the run ends (PgCluster's
# watchdog, should the controller die first). A plain run (no -n) starts its own, lazily.

ALLOW_ROOT = "JOBCTL_ALLOW_ROOT"  # set for every test (isolated_environment)
SHARED_CLUSTER_FILE = "JOBCTL_SUITE_SHARED_CLUSTER_FILE"  # not JOBCTL_*: tests clear those
SHARED_CLUSTER_PATH = os.environ.get(SHARED_CLUSTER_FILE) or None
SHARED_CLUSTER_WAIT_SECONDS = 120


def _is_xdist_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and bool(config.getoption("numprocesses", None))


class _Shared:
    """The controller's side: the cluster, started and migrated in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cluster: PgCluster | None = None
        self.thread = threading.Thread(target=self._start, name="shared-pg-cluster", daemon=True)
        self.thread.start()

    def _start(self) -> None:
        try:
            self.cluster = PgCluster().start()
            template = f"jobctl_template_shared_{uuid.uuid4().hex[:12]}"
            _migrate(self.cluster.create_database(template))
            self.cluster.seal_template(template)
            result = {"url": self.cluster.admin_url, "template": template}
        except BaseException as error:  # the test processes report it
            result = {"error": f"{type(error).__name__}: {error}"}
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(result))
        partial.rename(self.path)  # whole, or not there

    def stop(self) -> None:
        self.thread.join()
        if self.cluster is not None:
            self.cluster.stop()
        shutil.rmtree(self.path.parent, ignore_errors=True)


def _start_shared_cluster(config: pytest.Config) -> None:
    path = Path(tempfile.mkdtemp(prefix="jobctl-suite-")) / "cluster.json"
    os.environ[SHARED_CLUSTER_FILE] = str(path)  # xdist's test processes inherit it
    config._jobctl_shared_cluster = _Shared(path)  # type: ignore[attr-defined]


def _shared_cluster(path: Path) -> SharedCluster:
    """The controller's cluster, once it is up (a test process's side)."""
    deadline = time.monotonic() + SHARED_CLUSTER_WAIT_SECONDS
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the suite's PostgreSQL cluster did not start: no {path}")
        time.sleep(0.05)
    found = json.loads(path.read_text())
    if "error" in found:
        raise RuntimeError(f"the suite's PostgreSQL cluster did not start: {found['error']}")
    return SharedCluster(found["url"], found["template"])


# Read once at import: the autouse fixture below removes every JOBCTL_* variable during tests.
EXTERNAL_DATABASE_URL = os.environ.get("JOBCTL_TEST_DATABASE_URL") or None

# "gw0", "gw1", … under xdist; "main" in a plain run.
WORKER_ID = os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgServer]:
    """The PostgreSQL server for this test process: a PgCluster, or a PgServer for
    JOBCTL_TEST_DATABASE_URL. Tests that stop the server should use `private_pg_cluster`."""
    if SHARED_CLUSTER_PATH is not None and EXTERNAL_DATABASE_URL is None:
        yield _shared_cluster(Path(SHARED_CLUSTER_PATH))
        return
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


def _migrate(url: str) -> None:
    """Bring the database at `url` to the newest revision, as `jobctl db upgrade` does, and leave
    no connection open (a PostgreSQL template must have none)."""
    database = Database(url)
    try:
        database.upgrade()
    finally:
        database.dispose()


@pytest.fixture(scope="session")
def pg_template(pg_cluster: PgServer) -> Iterator[str]:
    """Name of a database of `pg_cluster` migrated to head once for this test process: `pg_url`
    copies it. Sealed (a template that accepts no connections), so that nothing a test leaves
    connected can make the copy fail; dropped at the end of the session. On the shared cluster
    (xdist): the one template the controller made there."""
    if isinstance(pg_cluster, SharedCluster):
        yield pg_cluster.template
        return
    name = f"jobctl_template_{WORKER_ID}_{uuid.uuid4().hex[:12]}".lower()
    _migrate(pg_cluster.create_database(name))
    pg_cluster.seal_template(name)
    yield name
    if isinstance(pg_cluster, PgCluster) and not pg_cluster.server_running:
        return  # stop() at the end of the session deletes the cluster anyway
    pg_cluster.drop_database(name)


def _pg_database(pg_cluster: PgServer, template: str | None) -> Iterator[str]:
    # 63 bytes is PostgreSQL's limit on names; this is about 30.
    name = f"jobctl_test_{WORKER_ID}_{uuid.uuid4().hex[:12]}".lower()
    url = pg_cluster.create_database(name, template=template)
    yield url
    # A chaos test that failed between stop_server() and start_server() would otherwise break
    # this drop and every later test in the process.
    if isinstance(pg_cluster, PgCluster) and not pg_cluster.server_running:
        pg_cluster.start_server()
    pg_cluster.drop_database(name)


def _wants_empty(request: pytest.FixtureRequest) -> bool:
    """Whether the test is marked `empty_database` (see the module's docstring)."""
    return request.node.get_closest_marker("empty_database") is not None


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, pg_cluster: PgServer) -> Iterator[str]:
    """URL of a new PostgreSQL database for this test only, migrated to head and without rows (a
    copy of `pg_template`; empty under `@pytest.mark.empty_database`); dropped afterwards."""
    template = None if _wants_empty(request) else str(request.getfixturevalue("pg_template"))
    yield from _pg_database(pg_cluster, template)


@pytest.fixture
def pg_url_empty(pg_cluster: PgServer) -> Iterator[str]:
    """URL of a new, EMPTY PostgreSQL database (no schema) for this test only; dropped
    afterwards. For tests of what happens on first use, and of the migrations."""
    yield from _pg_database(pg_cluster, None)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated to head once for this test process: `sqlite_url` copies it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "jobctl.db"
    _migrate(f"sqlite:///{path}")
    # jobctl runs SQLite in WAL mode: fold the log into the main file, so that copying that one
    # file copies everything. (Closing the last connection does that too; this makes it sure.)
    with closing(sqlite3.connect(path)) as connection:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, "the SQLite template is still in use"
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, f"{wal} was not checkpointed"
    path.chmod(0o444)  # no test may change the template; shutil.copyfile does not copy the mode
    return path


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an SQLite database file in this test's temporary directory, migrated to head and
    without rows (a copy of `sqlite_template`; not yet created under
    `@pytest.mark.empty_database`)."""
    path = tmp_path / "jobctl.db"
    if not _wants_empty(request):
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_url_empty(tmp_path: Path) -> str:
    """URL of an SQLite database file in this test's temporary directory, NOT yet created: the
    first jobctl command creates and migrates it. For tests of first use and of the
    migrations."""
    return f"sqlite:///{tmp_path / 'jobctl.db'}"


@pytest.fixture(scope="session")
def pgbouncer(pg_cluster: PgServer) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode in front of `pg_cluster`, for this test process
    (tests/pgbouncer.py); the test is skipped where pgbouncer is not installed."""
    if pgbouncer_binary() is None:
        pytest.skip(MISSING)
    bouncer = PgBouncer(pg_cluster).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def pgbouncer_url(pg_url: str, pgbouncer: PgBouncer) -> str:
    """`pg_url`'s database (migrated; empty under `empty_database`) reached through
    `pgbouncer`."""
    return pgbouncer.url_for(pg_url)


# What `db_url` (and so the end-to-end tests' `jobctl`) hands out for each of its parameters.
DB_URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "pg_url", "pgbouncer": "pgbouncer_url"}


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Both backends in turn, migrated: a test taking `db_url` runs once with each (and through
    PgBouncer too, under tests/pgbouncer.py's ALSO_THROUGH_PGBOUNCER)."""
    # getfixturevalue, not a dependency on both fixtures, so that the sqlite run never starts
    # the cluster (and `-k sqlite` runs never need PostgreSQL at all).
    return str(request.getfixturevalue(DB_URL_FIXTURES[request.param]))


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def db_url_empty(request: pytest.FixtureRequest) -> str:
    """Both backends in turn, EMPTY (see `pg_url_empty`, `sqlite_url_empty`)."""
    fixture = "sqlite_url_empty" if request.param == "sqlite" else "pg_url_empty"
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
    # The suite runs as root (CI too), and a root worker on PostgreSQL refuses to start without
    # --run-as-submitter or --allow-root (jobctl.runas): every worker a test starts, in this
    # process or in a child, allows root. The tests of the refusal remove it.
    monkeypatch.setenv(ALLOW_ROOT, "1")
