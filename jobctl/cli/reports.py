"""What `wait` commands report besides their exit code: the JUnit file (`--junit FILE`, built by
jobctl.junit) and the one-line summary of `job wait --array`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from jobctl.errors import InvalidInput

if TYPE_CHECKING:
    from jobctl.client import Client
    from jobctl.models import ArrayStatus, Job


def check_junit_path(path: str) -> None:
    """Before waiting: FILE's directory exists and FILE is not a directory (else exit 2)."""
    target = Path(path)
    if target.is_dir():
        raise InvalidInput(f"--junit {path!r} is a directory")
    if not target.parent.is_dir():
        raise InvalidInput(f"--junit {path!r}: no directory {str(target.parent)!r}")


def case_name(job: Job) -> str:
    """A testcase's name: the task (an array's index, a workflow's task name), else the job's
    name, else `job ID`."""
    if job.array_id is not None:
        return f"{job.name or 'task'}[{job.array_index}]"
    return job.task or job.name or f"job {job.id}"


def write_junit(client: Client, path: str, suite: str, jobs: Sequence[Job],
                classname: Callable[[Job], str]) -> None:
    """The JUnit report of `jobs` to `path` (written whole, then renamed into place)."""
    import socket

    from jobctl.junit import OUTPUT_TAIL_BYTES, Case, report

    cases = []
    for job, (stdout, stderr) in zip(jobs, client.output_tails(jobs, OUTPUT_TAIL_BYTES),
                                     strict=True):
        cases.append(Case(name=case_name(job), classname=classname(job),
                          state=job.state.value, time_s=job.duration_s,
                          exit_code=job.exit_code, error=job.error, stdout=stdout,
                          stderr=stderr, started_at=job.started_at,
                          finished_at=job.finished_at, created_at=job.created_at))
    document = report(suite, cases, hostname=socket.gethostname())
    partial = f"{path}.{os.getpid()}.tmp"
    try:
        with open(partial, "wb") as file:
            file.write(document)
        os.replace(partial, path)
    except OSError as error:
        raise InvalidInput(f"--junit: cannot write {path}: {error.strerror}") from error


def array_summary(status: ArrayStatus) -> str:
    """`array 7: 1000 tasks: 998 succeeded, 2 failed; lowest failed index 3 (job 1234, exit
    code 1)`."""
    from jobctl.models import JobState

    counts = ", ".join(f"{status.counts[state.value]} {state.value}" for state in JobState
                       if status.counts.get(state.value))
    text = f"array {status.id}: {status.size} tasks: {counts}"
    if status.first_failed is not None:
        index, job_id, code = status.first_failed
        text += f"; lowest failed index {index} (job {job_id}, exit code {code})"
    return text
