"""Which job runs when: priority then age, `--at`/`--in`, and queue routing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from e2e_support import Jobctl, parse_time


def _appends(record: Path, word: str) -> list[str]:
    return ["--", "sh", "-c", f"echo {word} >> {record}"]


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
    # Not held up by the job due later (nor by the ones due in a few seconds).
    now_status = jobctl.status(now)
    wait = (parse_time(now_status["started_at"])
            - parse_time(now_status["created_at"])).total_seconds()
    assert wait < 2.5, f"a job due now waited {wait:.3f}s behind jobs due later"

    soon_status = jobctl.status(soon)
    delay = (parse_time(soon_status["started_at"])
             - parse_time(soon_status["created_at"])).total_seconds()
    # The database clock decides; allow for its rounding (SQLite keeps milliseconds).
    assert delay >= 2.95, f"--in 3s started {delay:.3f}s after it was submitted"

    at_status = jobctl.status(at)
    started = parse_time(at_status["started_at"])
    assert started >= at_instant - timedelta(milliseconds=50), (
        f"--at {at_instant.isoformat()} started at {started.isoformat()}")

    later_status = jobctl.status(later)
    assert later_status["state"] == "queued"
    assert later_status["attempt"] == 0
    assert later_status["started_at"] is None


def test_a_worker_takes_only_jobs_of_its_queues(jobctl: Jobctl, tmp_path: Path) -> None:
    ran_a, ran_b = tmp_path / "a.ran", tmp_path / "b.ran"
    # b first and with a higher priority: it would be claimed first were queues ignored.
    job_b = jobctl.submit("--queue", "b", "--priority", "10", "--", "touch", str(ran_b))
    job_a = jobctl.submit("--queue", "a", "--", "touch", str(ran_a))

    jobctl.burst("--queue", "a", "--concurrency", "2")

    assert jobctl.status(job_a)["state"] == "succeeded"
    assert ran_a.exists()
    status_b = jobctl.status(job_b)
    assert status_b["state"] == "queued"
    assert status_b["attempt"] == 0
    assert status_b["worker_id"] is None
    assert not ran_b.exists()

    # And it was a runnable job all along: a worker of queue b runs it.
    jobctl.burst("--queue", "b")
    assert jobctl.status(job_b)["state"] == "succeeded"
    assert ran_b.exists()
