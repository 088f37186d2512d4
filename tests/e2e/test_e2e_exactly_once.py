"""Several worker processes drain one queue: every job runs exactly once.

Each job appends its own id (JOBCTL_JOB_ID, set by the worker) to one file; O_APPEND writes of a
short line are atomic, so the file is the record of which job ran how often.
"""

from __future__ import annotations

import collections
import json
import subprocess
import time
from pathlib import Path

from e2e_support import Jobctl, describe


def _drain_with_workers(jobctl: Jobctl, tmp_path: Path, workers: int, jobs: int) -> None:
    record = tmp_path / "ran.txt"
    commands = tmp_path / "commands.txt"
    commands.write_text(f'echo "$JOBCTL_JOB_ID" >> {record}\n' * jobs)

    for _ in range(workers):
        # The default lease, not the tests' 5 s one: this test is about claims, and on a loaded
        # CI machine it once ended a job with no exit code (125), as a stall beyond a 5 s lease
        # does. Leases under stalls and locks are the chaos tests' subject.
        jobctl.start_worker("--concurrency", "4", "--lease", "20s", wait_started=False)
    for worker in jobctl.workers:
        worker.wait_started()

    submitted = jobctl("job", "submit", "--from-file", str(commands))
    assert submitted.returncode == 0, describe(submitted)
    ids = [int(line) for line in submitted.stdout.split()]
    assert len(ids) == jobs
    assert len(set(ids)) == jobs

    started = time.monotonic()
    waited = jobctl("job", "wait", "--timeout", "240s", *map(str, ids), timeout=300)
    assert waited.returncode == 0, _explain(jobctl, waited)
    elapsed = time.monotonic() - started

    ran = collections.Counter(int(line) for line in record.read_text().split())
    twice = sorted(job_id for job_id, count in ran.items() if count > 1)
    never = sorted(set(ids) - set(ran))
    strangers = sorted(set(ran) - set(ids))
    assert not twice, f"{len(twice)} job(s) ran more than once, e.g. {twice[:10]}"
    assert not never, f"{len(never)} job(s) never ran, e.g. {never[:10]}"
    assert not strangers, f"unknown ids in the record: {strangers[:10]}"

    listed = json.loads(jobctl.look("job", "list", "--limit", "0", "-o", "json"))
    assert len(listed) == jobs
    states = collections.Counter(job["state"] for job in listed)
    assert states == {"succeeded": jobs}, states
    assert all(job["attempt"] == 1 for job in listed), "a job was attempted more than once"
    # Every worker took part (a queue drained by one worker alone proves little).
    per_worker = collections.Counter(job["worker_id"] for job in listed)
    assert len(per_worker) == workers, per_worker
    print(f"{jobs} jobs on {workers} workers in {elapsed:.1f}s: {dict(per_worker)}")


def _explain(jobctl: Jobctl, waited: subprocess.CompletedProcess[str]) -> str:
    """The failed wait, the jobs that did not succeed, and the workers' logs."""
    listed = json.loads(jobctl.look("job", "list", "--limit", "0", "-o", "json"))
    unsuccessful = [job for job in listed if job["state"] != "succeeded"]
    telling = ("lease", "fenc", "unavailable", "fail", "error", "released", "killing")
    logs = "\n".join(
        f"--- worker {worker.pid}, the lines about trouble:\n" + "\n".join(
            [line for line in worker.log().splitlines() if any(w in line for w in telling)][-20:])
        for worker in jobctl.workers)
    return (f"{describe(waited)}\n{len(unsuccessful)} job(s) did not succeed, e.g. "
            f"{json.dumps(unsuccessful[:3], indent=1)}\n{logs}")


def test_exactly_once_postgresql_four_workers_2000_jobs(jobctl_pg: Jobctl, tmp_path: Path) -> None:
    _drain_with_workers(jobctl_pg, tmp_path, workers=4, jobs=2000)


def test_exactly_once_sqlite_two_workers_500_jobs(jobctl_sqlite: Jobctl, tmp_path: Path) -> None:
    _drain_with_workers(jobctl_sqlite, tmp_path, workers=2, jobs=500)
