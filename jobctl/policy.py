"""Pure decisions, tested without a database: when a burst worker is done.

The store gathers the facts (jobctl.store.queue.burst_backlog); these functions decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Unfinished:
    """A job that has not ended, as far as a burst worker needs to know it."""

    state: str  # queued | running | waiting
    queue: str
    deps: tuple[int, ...] = ()  # for a waiting job: its dependencies that have not ended


@dataclass(frozen=True)
class Backlog:
    """What is left in a burst worker's queues, and what it depends on."""

    due: int = 0  # queued and due, and this worker may run them
    running: int = 0  # running on any worker
    retry_in_s: float | None = None  # seconds until the next retry (a job that ran before) is due
    waiting: tuple[int, ...] = ()  # waiting jobs in its queues
    # Every unfinished job the waiting ones depend on, transitively (the waiting ones too).
    # A dependency missing here and from `ended` no longer exists (pruned).
    jobs: Mapping[int, Unfinished] = field(default_factory=dict)
    served: frozenset[str] = frozenset()  # queues some live worker (or this one) serves
    # Queued jobs this worker may not run (another user's) that no other worker can either:
    # {job id: why}.
    not_mine: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BurstDecision:
    keep_going: bool
    wait_s: float | None = None  # when to look again (None: the worker's poll interval)
    left: Mapping[int, str] = field(default_factory=dict)  # jobs left behind, and why


def stuck(jobs: Mapping[int, Unfinished], served: frozenset[str],
          candidates: Sequence[int]) -> dict[int, str]:
    """The candidates that can never start: {job id: why}. A job can still end when it is
    running (it ends, or is rescued), queued in a queue some live worker serves, or waiting in
    such a queue on jobs that can all still end. A dependency that no longer exists never ends."""
    verdicts: dict[int, str | None] = {}  # job id: the root cause it can never end, or None

    def root_cause(job_id: int) -> str | None:
        if job_id in verdicts:
            return verdicts[job_id]
        verdicts[job_id] = None  # a cycle cannot happen (a job depends on older ones); be safe
        job = jobs.get(job_id)
        reason: str | None = None
        if job is None:
            reason = f"job {job_id} no longer exists"
        elif job.state != "running" and job.queue not in served:
            reason = (f"job {job_id} is {job.state} in queue {job.queue!r}, which no live "
                      "worker serves")
        elif job.state == "waiting":
            reason = next((cause for cause in map(root_cause, job.deps) if cause), None)
        verdicts[job_id] = reason
        return reason

    found = {}
    for job_id in candidates:
        reason = root_cause(job_id)
        if reason is not None:
            found[job_id] = reason if reason.startswith(f"job {job_id} ") else (
                f"waits for what cannot end: {reason}")
    return found


def burst_decision(backlog: Backlog) -> BurstDecision:
    """A burst worker goes on while anything in its queues is due, running, waiting for a retry,
    or waiting on dependencies that can still end; otherwise it exits, naming what it left."""
    if backlog.due:
        return BurstDecision(True, wait_s=0.0)  # claim them now
    if backlog.running:
        return BurstDecision(True)
    left = dict(backlog.not_mine)
    left.update(stuck(backlog.jobs, backlog.served, backlog.waiting))
    if len(left) < len(backlog.waiting) + len(backlog.not_mine):
        return BurstDecision(True)  # some waiting job can still start
    if backlog.retry_in_s is not None:
        return BurstDecision(True, wait_s=backlog.retry_in_s)
    return BurstDecision(False, left=left)
