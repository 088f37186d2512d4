"""The audit trail with real processes: on PostgreSQL a second real LOGIN role submits, a real
worker (another role) runs its jobs, a retry and a failed dependency included, and the trail
stays empty; the first role cancelling the second's job is recorded under its own name, which
the second role reads with `jobctl audit`. On both backends a real scheduler's firing leaves
nothing and its retention one row with its counts."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from e2e_support import Jobctl, describe
from pgroles import create_login, drop_logins, unique_name
from test_e2e_scheduler_ops import _age_finished_jobs


def audit(jobctl: Jobctl) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(jobctl.ok("audit", "-o", "json"))
    return found


@pytest.fixture
def submitter_url(pg_url: str) -> Iterator[str]:
    """A LOGIN role that may submit and change jobs (granted directly; no superuser, no
    ownership) and only read the trail."""
    name = unique_name("jobctl_e2e")
    yield create_login(pg_url, name,
                       "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {role}",
                       "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}",
                       "REVOKE ALL ON audit FROM {role}",
                       "GRANT SELECT ON audit TO {role}",
                       password=uuid.uuid4().hex)
    drop_logins(pg_url, [name])


def test_postgresql_a_workers_run_is_silent_and_a_cancel_names_its_role(
        jobctl_pg: Jobctl, submitter_url: str, tmp_path: Path) -> None:
    admin = jobctl_pg
    other = Jobctl(submitter_url, tmp_path / "other")
    try:
        role = urlsplit(submitter_url).username
        ok = other.submit("--", "true")
        flaky = other.submit("--retries", "1", "--retry-backoff", "0s", "--", "false")
        doomed = other.submit("--after", str(flaky), "--", "true")
        assert {admin.status(job)["submitted_by"] for job in (ok, flaky, doomed)} == {role}
        admin.burst()  # the worker: the cluster's other role, running another's jobs
        states = {job: admin.status(job)["state"] for job in (ok, flaky, doomed)}
        assert states == {ok: "succeeded", flaky: "failed", doomed: "failed"}
        assert admin.status(flaky)["attempt"] == 2
        assert audit(admin) == []
        later = other.submit("--at", "+1h", "--", "true")
        mine = other.submit("--at", "+1h", "--", "true")
        other.ok("job", "cancel", str(mine))  # its own: not recorded
        admin.ok("job", "cancel", str(later))
        [entry] = audit(other)  # the submitter reads the trail
        with psycopg.connect(admin.database_url) as conn:
            me = conn.execute("SELECT session_user").fetchone()[0]  # type: ignore[index]
        assert (entry["action"], entry["target"], entry["role"], entry["owner"]) == (
            "job.cancel", str(later), me, role)
        assert entry["changes"] == {"state": ["queued", "cancelled"],
                                    "cancel_requested": [False, True]}
        # the submitter cannot erase it, by jobctl or by SQL
        with psycopg.connect(submitter_url, autocommit=True) as conn, pytest.raises(
                psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit")
        assert len(audit(admin)) == 1
    finally:
        other.cleanup()


def test_a_schedulers_firing_is_silent_and_its_retention_one_row(jobctl: Jobctl) -> None:
    old = jobctl.submit("--", "true")
    jobctl.burst()
    _age_finished_jobs(jobctl.database_url, [old], days=3)
    jobctl.ok("schedule", "add", "tick", "--every", "1s", "--", "true")
    time.sleep(1.2)
    result = jobctl("scheduler", "run", "--once", "--retention", "2d")
    assert result.returncode == 0, describe(result)
    fired = [job for job in json.loads(jobctl.look("job", "list", "-o", "json"))
             if job["id"] != old]
    assert fired, "the scheduler fired nothing"
    result = jobctl("scheduler", "run", "--once", "--retention", "2d")  # nothing left to prune
    assert result.returncode == 0, describe(result)
    entries = audit(jobctl)
    assert [e["action"] for e in entries] == ["schedule.add", "retention.prune"]
    assert entries[1]["changes"]["jobs"] == 1 and entries[1]["changes"]["older_than_s"] == 172800
    assert entries[0]["role"] == entries[1]["role"]
