"""Fixtures for the end-to-end tests (helpers in e2e_support.py).

`jobctl` runs the real CLI on the test's database, once per backend (`db_url`); `jobctl_pg` and
`jobctl_sqlite` for tests that are about one backend. The database comes migrated; a test about
a new database is marked `@pytest.mark.empty_database` (see tests/conftest.py). Teardown stops
every background worker and process the test started (SIGTERM, then SIGKILL of the group) and
prints the workers' logs, which pytest shows when the test failed.
"""

from __future__ import annotations

from e2e_support import jobctl, jobctl_pg, jobctl_sqlite

__all__ = ["jobctl", "jobctl_pg", "jobctl_sqlite"]
