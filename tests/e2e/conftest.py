"""Fixtures for the end-to-end tests (helpers in e2e_support.py).

`jobctl` runs the real CLI on the test's database, once per backend (`db_url`); `jobctl_pg` and
`jobctl_sqlite` for tests that are about one backend. The database comes migrated; a test about
a new database is marked `@pytest.mark.empty_database` (see tests/conftest.py). Teardown stops
every background worker and process the test started (SIGTERM, then SIGKILL of the group) and
prints the workers' logs, which pytest shows when the test failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Jobctl


@pytest.fixture
def jobctl(db_url: str, tmp_path: Path) -> Iterator[Jobctl]:
    """The real CLI on this test's database, on both backends."""
    with Jobctl(db_url, tmp_path) as runner:
        yield runner


@pytest.fixture
def jobctl_pg(pg_url: str, tmp_path: Path) -> Iterator[Jobctl]:
    """The real CLI on a PostgreSQL database only."""
    with Jobctl(pg_url, tmp_path) as runner:
        yield runner


@pytest.fixture
def jobctl_sqlite(sqlite_url: str, tmp_path: Path) -> Iterator[Jobctl]:
    """The real CLI on an SQLite database only."""
    with Jobctl(sqlite_url, tmp_path) as runner:
        yield runner
