"""Which job runs when: priority then age, `--at`/`--in`, and queue routing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from e2e_support import Jobctl, parse_time


def _appends(record: Path, word: str) -> list[str]:
    return ["--", "sh", "-c", f"echo {word} >> {record}"]


def _jobs_by_id(jobctl: Jobctl) -> dict[int, dict[str, Any]]:
    """Every job, from one `job list -o json` (a CLI call costs about a second)."""
    return {job["id"]: job for job in json.loads(jobctl.look("job", "list", "-o", "json"))}


def _seconds_between(job: dict[str, Any], earlier: str, later: str) -> float:
    return (parse_time(job[later]) - parse_time(job[earlier])).total_seconds()


def test_highest_priority_first_then_oldest(jobctl: Jobctl, tmp_path: Path) -> None:
    record = tmp_path / "order.txt"
    # Submitted in this order with no worker running; the older of two equal priorities first.
    for word, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 10), ("e", 5), ("f", -1)]:
        jobctl.submit("--priority", str(priority), *_appends(record, word))
    assert not record.exists()

    jobctl.burst("--concurrency", "1")

    assert record.read_text().split() == ["d", "b", "e", "a", "c", "f"]


def test_a_job_due_later_neither_starts_early_nor_blocks_one_due_now(
    jobctl: Jobctl, tmp_path: Path
) -> None:
    record = tmp_path / "order.txt"
    jobctl.start_worker("--concurrency", "1")
    # Due in a minute, and first by priority: a worker that ignored run_at would take it first.
    later = jobctl.submit("--in", "60s", "--priority", "10", *_appends(record, "later"))
    soon = jobctl.submit("--in", "3s", *_appends(record, "soon"))
    at_instant = datetime.now(UTC) + timedelta(seconds=3)
    at = jobctl.submit("--at", at_instant.isoformat(), *_appends(record, "at"))
    now = jobctl.submit(*_appends(record, "now"))

    jobctl.ok("job", "wait", "--timeout", "30s", str(now), str(soon), str(at))

    assert sorted(record.read_text().split()) == ["at", "now", "soon"]
    jobs = _jobs_by_id(jobctl)
    # Not held up by the job due in a minute (blocked, it would wait that long).
    waited = _seconds_between(jobs[now], "created_at", "started_at")
    assert waited < 5, f"a job due now waited {waited:.3f}s behind a job due later"
    # The database clock decides; allow for its rounding (SQLite keeps milliseconds).
    delay = _seconds_between(jobs[soon], "created_at", "started_at")
    assert delay >= 2.95, f"--in 3s started {delay:.3f}s after it was submitted"
    started = parse_time(jobs[at]["started_at"])
    assert started >= at_instant - timedelta(milliseconds=50), (
        f"--at {at_instant.isoformat()} started at {started.isoformat()}")
    assert jobs[later]["state"] == "queued"
    assert jobs[later]["attempt"] == 0
    assert jobs[later]["started_at"] is None


def test_a_worker_takes_only_jobs_of_its_queues(jobctl: Jobctl, tmp_path: Path) -> None:
    ran_a, ran_b = tmp_path / "a.ran", tmp_path / "b.ran"
    # b first and with a higher priority: it would be claimed first were queues ignored.
    job_b = jobctl.submit("--queue", "b", "--priority", "10", "--", "touch", str(ran_b))
    job_a = jobctl.submit("--queue", "a", "--", "touch", str(ran_a))

    jobctl.burst("--queue", "a", "--concurrency", "2")

    jobs = _jobs_by_id(jobctl)
    assert jobs[job_a]["state"] == "succeeded"
    assert ran_a.exists()
    assert jobs[job_b]["state"] == "queued"
    assert jobs[job_b]["attempt"] == 0
    assert jobs[job_b]["worker_id"] is None
    assert not ran_b.exists()

    # And it was a runnable job all along: a worker of queue b runs it.
    jobctl.burst("--queue", "b")
    assert ran_b.exists()


def test_a_backlog_of_at_most_once_jobs_keeps_every_slot_busy(jobctl_pg: Jobctl,
                                                              tmp_path: Path) -> None:
    """At-most-once jobs are never read ahead (a buffered job must not be lost with its
    worker), so a read-ahead claim passes over them. The worker must still give each slot the
    next one as soon as it frees, not wait for its next poll (2 s on PostgreSQL): 60 jobs of
    0.2 s on 4 slots take about 3 s; waiting for polls, 15 batches took about 30 s."""
    jobctl = jobctl_pg
    jobctl.start_worker("--concurrency", "4")
    path = tmp_path / "jobs.txt"
    path.write_text("sleep 0.2\n" * 60)
    ids = jobctl.ok("job", "submit", "--delivery", "at-most-once", "--from-file",
                    str(path)).split()
    result = jobctl("job", "wait", *ids, "--timeout", "60s", timeout=90)
    assert result.returncode == 0, result.stderr
    jobs = json.loads(jobctl.look("job", "list", "--limit", "0", "-o", "json"))
    starts = sorted(parse_time(job["started_at"]) for job in jobs)
    ends = sorted(parse_time(job["finished_at"]) for job in jobs)
    took = (ends[-1] - starts[0]).total_seconds()
    assert len(jobs) == 60 and {job["state"] for job in jobs} == {"succeeded"}
    assert took < 15, f"60 at-most-once jobs of 0.2 s on 4 slots took {took:.1f}s"
