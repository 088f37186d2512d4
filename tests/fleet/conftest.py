"""Fixtures for the fleet tests: PostgreSQL, three worker hosts and two scheduler hosts, each in
a network namespace of its own (tests/fleet/netns.py).

The helpers of tests/e2e (the real `jobctl` executable, `Worker`) and tests/chaos (side-effect
logs) are shared: their folders are put on sys.path here, as tests/chaos/conftest.py does.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for folder in ("e2e", "chaos"):
    sys.path.insert(0, str(HERE.parent / folder))

from e2e_support import Jobctl  # noqa: E402
from fleet_support import NetnsCluster  # noqa: E402
from netns import Fleet, NetnsPgCluster, sweep_orphans, unavailable  # noqa: E402

from jobctl.store.engine import Database  # noqa: E402

WORKER_HOSTS = ("w1", "w2", "w3")
SCHEDULER_HOSTS = ("s1", "s2")
DATABASE = "jobctl_fleet"


@pytest.fixture
def netns_cluster(tmp_path: Path) -> Iterator[NetnsCluster]:
    why = unavailable()
    if why is not None:
        pytest.skip(f"no network namespaces here: {why}")
    sweep_orphans()
    fleet = Fleet(tmp_path)
    pg: NetnsPgCluster | None = None
    runner: Jobctl | None = None
    try:
        db = fleet.add_host("db")
        for name in (*WORKER_HOSTS, *SCHEDULER_HOSTS):
            fleet.add_host(name)
        pg = NetnsPgCluster(db)
        pg.start()
        url = pg.create_database(DATABASE)
        database = Database(url)
        try:
            database.upgrade()
        finally:
            database.dispose()
        runner = Jobctl(url, tmp_path)
        yield NetnsCluster(fleet, db, pg, runner, pg.host_url(DATABASE))
    finally:
        # Heal every link first: a cut-off process would wait on its database before it stops.
        for host in fleet.hosts.values():
            with contextlib.suppress(Exception):
                fleet.heal(host)
        if runner is not None:
            runner.cleanup()
        if pg is not None:
            pg.stop()
        fleet.close()
