"""`scheduler run` for operators: `--metrics-port` (occurrences fired, lateness, /healthz) and
retention (`--retention`, JOBCTL_RETENTION or `retention` in the config file) deleting old
finished jobs and nothing else."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from e2e_support import Jobctl, describe, wait_for
from metrics_support import free_port, health, sample, scrape

from jobctl.store import reads
from jobctl.store.direct import DirectDatabase
from jobctl.store.url import parse


def test_scheduler_metrics_count_occurrences_and_health_is_200(jobctl_sqlite: Jobctl) -> None:
    jobctl = jobctl_sqlite
    jobctl.ok("schedule", "add", "tick", "--every", "1s", "--overlap", "allow", "--", "true")
    port = free_port()
    scheduler = jobctl.popen("scheduler", "run", "--poll-interval", "0.2s", "--metrics-port",
                             str(port), "--metrics-address", "127.0.0.1")

    def fired() -> float:
        try:
            return sample(scrape(port), "jobctl_schedule_occurrences_total", result="fired")
        except OSError:
            return 0.0

    wait_for(lambda: fired() >= 2, 30, "the scrape never showed two occurrences fired")
    samples = scrape(port)
    assert sample(samples, "jobctl_schedule_lateness_seconds_count") >= 2
    assert sample(samples, "jobctl_scheduler_pass_failures_total") == 0
    assert sample(samples, "jobctl_scheduler_healthy") == 1
    assert health(port) == 200
    created = len(json.loads(jobctl.look("job", "list", "-o", "json", "--limit", "1000")))
    assert created >= 2
    scheduler.terminate()
    assert scheduler.wait(timeout=15) == 0


def _age_finished_jobs(url: str, job_ids: list[int], days: int) -> None:
    """As if these jobs had finished `days` days ago (the database clock cannot be wound)."""
    database = DirectDatabase(parse(url))
    try:
        with database.write() as conn:
            found = reads.get_many(conn, job_ids)
            assert sorted(found) == sorted(job_ids)
            assert all(job.finished_at is not None for job in found.values())
            # Each backend's own date arithmetic; no parameter, so no parameter style.
            ids = ", ".join(str(int(job_id)) for job_id in job_ids)
            conn.execute(
                f"UPDATE jobs SET finished_at = finished_at - interval '{int(days)} days' "
                f"WHERE id IN ({ids})" if database.backend.title == "PostgreSQL" else
                f"UPDATE jobs SET finished_at = strftime('%Y-%m-%d %H:%M:%f000', finished_at, "
                f"'-{int(days)} days') WHERE id IN ({ids})")
    finally:
        database.close()


def _job_ids(jobctl: Jobctl) -> set[int]:
    return {job["id"] for job in json.loads(jobctl.look("job", "list", "-o", "json"))}


def test_retention_deletes_old_finished_jobs_only(jobctl: Jobctl, tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "jobctl").mkdir(parents=True)
    (config / "jobctl" / "config.toml").write_text('retention = "30d"\n')
    jobctl.env["XDG_CONFIG_HOME"] = str(config)
    old, recent = jobctl.submit("--", "true"), jobctl.submit("--", "true")
    assert jobctl.burst().returncode == 0
    _age_finished_jobs(jobctl.database_url, [old], days=40)
    _age_finished_jobs(jobctl.database_url, [recent], days=10)
    queued = jobctl.submit("--", "true")  # not finished: never pruned, however old
    _age_finished_jobs_created(jobctl.database_url, queued)

    # The file's 30d: only the job that finished 40 days ago goes.
    result = jobctl("scheduler", "run", "--once")
    assert result.returncode == 0, describe(result)
    assert _job_ids(jobctl) == {recent, queued}
    # The flag wins over the file (and JOBCTL_RETENTION would too): 5d takes the 10-day-old one.
    result = jobctl("scheduler", "run", "--once", "--retention", "5d")
    assert result.returncode == 0, describe(result)
    assert _job_ids(jobctl) == {queued}


def _age_finished_jobs_created(url: str, job_id: int) -> None:
    """Make a queued job look ancient too (created long ago): retention still keeps it."""
    database = DirectDatabase(parse(url))
    try:
        with database.write() as conn:  # a time as each backend stores it
            ancient = ("'2001-01-01 00:00:00+00'" if database.backend.title == "PostgreSQL"
                       else "'2001-01-01 00:00:00.000000'")
            conn.execute(f"UPDATE jobs SET created_at = {ancient} WHERE id = {int(job_id)}")
        with database.read() as conn:
            job = reads.get(conn, job_id)
        assert job is not None and job.created_at == datetime(2001, 1, 1, tzinfo=UTC)
    finally:
        database.close()


def test_a_bad_retention_is_a_one_line_error(jobctl_sqlite: Jobctl) -> None:
    jobctl = jobctl_sqlite
    jobctl.env["JOBCTL_RETENTION"] = "soon"
    result = jobctl("scheduler", "run", "--once")
    assert result.returncode == 2, describe(result)
    assert result.stderr.startswith("jobctl: error: retention (JOBCTL_RETENTION): invalid "
                                    "duration 'soon'"), describe(result)
    assert result.stderr.count("\n") == 1
