"""Pure decisions, tested without a database: when a burst worker is done; what a schedule's
timing, misfire and overlap policies make of its due fire times; and the state a new job starts
in given its dependencies.

The store gathers the facts (jobctl.store.queue.burst_backlog, jobctl.store.schedules,
jobctl.store.deps); these functions decide.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from jobctl.models import (
    CHECK_GRACE_MAX_S,
    CHECK_GRACE_SHARE,
    FAILING_STATES,
    FINAL_STATES,
    HOOK_BACKOFF_S,
    HOOK_MAX_ATTEMPTS,
    HOOK_STATE_OVERDUE,
    JobSpec,
    JobState,
    Misfire,
    Overlap,
)
from jobctl.record import record
from jobctl.timeparse import isoformat_utc

if TYPE_CHECKING:  # jobctl.cron is imported where a schedule's fire times are planned
    from jobctl.cron import Timing


@record
class Unfinished:
    """A job that has not ended, as far as a burst worker needs to know it."""

    state: str  # queued | running | waiting
    queue: str
    deps: tuple[int, ...] = ()  # for a waiting job: its dependencies that have not ended


@record
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


@record
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


# --- retrying by exit code -----------------------------------------------------------------------


def should_retry(attempt: int, max_attempts: int, exit_code: int | None,
                 retry_on_exit: Sequence[int] | None = None,
                 no_retry_on_exit: Sequence[int] | None = None) -> bool:
    """Whether a failed attempt (the `attempt`th of `max_attempts`) runs again.

    `exit_code` is the command's own exit status, or None when it has none of its own: killed by
    a signal, by its timeout or never started. With `retry_on_exit` (`--retry-on-exit 75,111`)
    only those exit codes retry: a kill is not one of them, so it does not. With
    `no_retry_on_exit` (`--no-retry-on-exit 2`) those exit codes never retry and everything else
    does, a kill included. With neither, every failure retries, as long as attempts are left
    (Kubernetes' podFailurePolicy and AWS Batch's evaluateOnExit, reduced to exit codes)."""
    if attempt >= max_attempts:
        return False
    if retry_on_exit is not None:
        return exit_code is not None and exit_code in retry_on_exit
    if no_retry_on_exit is not None:
        return exit_code is None or exit_code not in no_retry_on_exit
    return True


def parse_exit_codes(text: str) -> tuple[int, ...]:
    """`75,111` → (75, 111): exit codes 0 to 255, separated by commas (ValueError otherwise)."""
    codes: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 0 <= int(part) <= 255:
            raise ValueError(f"exit codes are whole numbers from 0 to 255 separated by commas, "
                             f"not {text!r}")
        if int(part) not in codes:
            codes.append(int(part))
    return tuple(codes)


# --- schedules: misfire and overlap ---------------------------------------------------------------
#
# The store (jobctl.store.schedules) gathers the facts, in one query each: a schedule's due fire
# times, the database's now, its runs that have not ended. These decide what becomes of them.


def misfire_fire_times(policy: Misfire, due: Sequence[datetime], moment: datetime,
                       grace_s: float, cap: int) -> list[datetime]:
    """Of a schedule's `due` fire times (oldest first), the ones to fire at `moment`.

    A fire time more than `grace_s` before `moment` was missed (no scheduler got to it in time).
    On-time ones always fire; of the missed ones, `all` fires every one, `once` the latest only
    when nothing is on time (one run stands for the downtime), `skip` none. At most the latest
    `cap` fire times are considered at all: a schedule of every second that was off for a week
    fires `cap` jobs, not 600,000."""
    considered = list(due)[-cap:] if cap > 0 else []
    grace = timedelta(seconds=grace_s)
    on_time = [fire_time for fire_time in considered if moment - fire_time <= grace]
    missed = [fire_time for fire_time in considered if moment - fire_time > grace]
    if policy is Misfire.ALL:
        return considered
    if policy is Misfire.ONCE and missed and not on_time:
        return missed[-1:]
    return on_time


@record
class ActiveRun:
    """A run of a schedule that has not ended (a queued, waiting or running job, or a workflow
    with unfinished tasks)."""

    id: int | None  # the job or workflow; None: a run queued earlier in the same batch
    description: str  # for the skipped occurrence's error: "job 12 (running)"


class OverlapAction(StrEnum):
    RUN = "run"  # submit it (after cancelling `cancel`, for `replace`)
    SKIP = "skip"  # record it as skipped: an earlier run is still going (`forbid`)
    SUPERSEDED = "superseded"  # record it as cancelled: a later one of the batch replaces it


@record
class OverlapDecision:
    action: OverlapAction
    error: str | None = None  # what the recorded occurrence says (skipped or superseded)
    cancel: tuple[int, ...] = ()  # runs to cancel before this one starts (`replace`)


def overlap_decisions(overlap: Overlap, fire_times: Sequence[datetime],
                      active: Sequence[ActiveRun]) -> list[OverlapDecision]:
    """What becomes of one schedule's occurrences fired together (`fire_times`, oldest first),
    given its runs that have not ended (`active`, oldest first).

    `allow` runs them all. `forbid` runs one only when nothing is going: the first of the batch,
    the others skipped behind it; with a run going, all are skipped. `replace` runs the latest,
    cancelling the runs going; the earlier ones of the batch are cancelled before they start."""
    if overlap is Overlap.ALLOW:
        return [OverlapDecision(OverlapAction.RUN) for _ in fire_times]
    decisions = []
    if overlap is Overlap.FORBID:
        going = active[0].description if active else None
        for fire_time in fire_times:
            if going is not None:
                decisions.append(OverlapDecision(OverlapAction.SKIP,
                                                 f"skipped: {going} is still going"))
                continue
            decisions.append(OverlapDecision(OverlapAction.RUN))
            going = f"the run of {isoformat_utc(fire_time)} (queued)"
        return decisions
    last = len(fire_times) - 1
    for index in range(len(fire_times)):
        if index != last:
            decisions.append(OverlapDecision(
                OverlapAction.SUPERSEDED, "replaced by a later occurrence before it started"))
        else:
            decisions.append(OverlapDecision(
                OverlapAction.RUN, cancel=tuple(run.id for run in active if run.id is not None)))
    return decisions


ScheduleKey = TypeVar("ScheduleKey", bound=Hashable)


def overlap_batch(overlaps: Sequence[tuple[ScheduleKey, Overlap, datetime]],
                  active: Mapping[ScheduleKey, Sequence[ActiveRun]]) -> list[OverlapDecision]:
    """`overlap_decisions` for a batch of occurrences of several schedules: `overlaps` is one
    (schedule, its overlap policy, fire time) per occurrence, each schedule's oldest first;
    `active` its runs that have not ended. One decision per occurrence, in the order given."""
    positions: dict[ScheduleKey, list[int]] = {}
    for index, (schedule, _, _) in enumerate(overlaps):
        positions.setdefault(schedule, []).append(index)
    decisions = [OverlapDecision(OverlapAction.RUN)] * len(overlaps)
    for schedule, indexes in positions.items():
        overlap = overlaps[indexes[0]][1]
        fire_times = [overlaps[index][2] for index in indexes]
        for index, decision in zip(indexes, overlap_decisions(
                overlap, fire_times, active.get(schedule, ())), strict=True):
            decisions[index] = decision
    return decisions


@record
class OccurrenceOutcome:
    """What an occurrence's job is recorded as, given its overlap decision."""

    state: JobState  # queued (it runs), skipped, or cancelled (superseded)
    run_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    cancel_requested: bool = False


def occurrence_outcome(decision: OverlapDecision, moment: datetime, jitter_s: float,
                       rng: random.Random | None = None) -> OccurrenceOutcome:
    """A skipped occurrence is recorded ended at `moment`, a superseded one cancelled; one that
    runs is due at `moment`, delayed by a random jitter up to `jitter_s` (the fire time stays)."""
    if decision.action is OverlapAction.SKIP:
        return OccurrenceOutcome(JobState.SKIPPED, moment, finished_at=moment,
                                 error=decision.error)
    if decision.action is OverlapAction.SUPERSEDED:
        return OccurrenceOutcome(JobState.CANCELLED, moment, finished_at=moment,
                                 error=decision.error, cancel_requested=True)
    jitter = (rng or random).uniform(0.0, jitter_s) if jitter_s > 0 else 0.0
    return OccurrenceOutcome(JobState.QUEUED,
                             moment + timedelta(seconds=jitter) if jitter else moment)


# --- schedules: timing ---------------------------------------------------------------------------


def schedule_timing(cron: str | None, every_s: float | None, timezone: str,
                    start_at: datetime | None, end_at: datetime | None,
                    created_at: datetime) -> Timing:
    """A schedule's fire times: its cron expression or interval, an interval counted from its
    start_at or else from its creation, within [start_at, end_at]."""
    from jobctl.cron import Timing, interval_anchor

    return Timing(cron=cron, every_s=every_s, timezone=timezone,
                  anchor=start_at or interval_anchor(created_at), start_at=start_at,
                  end_at=end_at)


@record
class FiringPlan:
    """What one pass does with one due schedule."""

    fire_times: list[datetime]  # to fire now, oldest first
    missed: int  # due fire times the misfire policy drops
    next_fire_at: datetime | None  # the first fire time after now (None: the schedule ended)
    last_fire_at: datetime | None  # the latest fire time fired, so far


def plan_firing(timing: Timing, misfire: Misfire, next_fire_at: datetime,
                last_fire_at: datetime | None, moment: datetime, grace_s: float,
                cap: int) -> FiringPlan:
    """The due fire times from `next_fire_at` up to `moment` (at most `cap`), what the misfire
    policy fires of them (misfire_fire_times), and where the schedule goes next."""
    due = timing.due(next_fire_at, moment, cap)
    chosen = misfire_fire_times(misfire, due, moment, grace_s, cap)
    return FiringPlan(chosen, len(due) - len(chosen), timing.next_after(moment),
                      chosen[-1] if chosen else last_fire_at)


# --- dependencies ---------------------------------------------------------------------------------


def dependency_error(cause: int, cause_state: str) -> str:
    """The error of a job ended by its dependency `cause` (the root of the chain)."""
    return f"dependency {cause} {cause_state}"


def dependent_state(cause_state: str) -> JobState:
    """A dependent of a cancelled job is cancelled; of a failed or lost one, failed."""
    return JobState.CANCELLED if cause_state == JobState.CANCELLED.value else JobState.FAILED


@record
class Initial:
    """The state a new job starts in, given its dependencies' states now."""

    state: JobState
    error: str | None = None


def initial_state(after: Sequence[int], after_any: Sequence[int],
                  states: Mapping[int, str]) -> Initial:
    """`queued` when every dependency is already met, `waiting` while some are not, and ended
    at once (failed or cancelled) when an `--after` dependency already failed. (The same rule
    the store's settling statements apply to waiting jobs: jobctl.store.deps.)"""
    for dep in sorted(after):
        if states[dep] in FAILING_STATES:
            return Initial(dependent_state(states[dep]), dependency_error(dep, states[dep]))
    met = all(states[dep] == JobState.SUCCEEDED.value for dep in after) and all(
        states[dep] in FINAL_STATES for dep in after_any)
    return Initial(JobState.QUEUED if met else JobState.WAITING)


# --- dead-man's switches: overdue schedules and checks ---------------------------------------


@record
class OverdueState:
    """Whether a dead-man's switch is overdue at a moment: since when (None: it is not), or else
    when it becomes overdue unless a success comes first."""

    since: datetime | None
    due_at: datetime | None = None  # None while overdue

    @property
    def overdue(self) -> bool:
        return self.since is not None


def overdue_state(now: datetime, period_s: float, armed_at: datetime,
                  last_success: datetime | None, spell: datetime | None) -> OverdueState:
    """Is this overdue now, given these times? A switch is overdue once `period_s` passed
    without a success: since its latest success, or since it was armed (`--alert-after` set,
    the check added) when it has had none. `spell`: the overdue spell begun before (by a
    scheduler that noticed it, or a failure ping), which lasts until a success newer than its
    start; after that a new spell can begin, and a spell is due once past the period again.
    A new spell (`since` not `spell`) is one to run the hook for."""
    if spell is not None and (last_success is None or last_success <= spell):
        return OverdueState(since=spell)
    deadline = overdue_deadline(last_success if last_success is not None else armed_at,
                                period_s)
    if deadline <= now:
        return OverdueState(since=deadline)
    return OverdueState(since=None, due_at=deadline)


def overdue_deadline(start: datetime, period_s: float) -> datetime:
    """When a switch whose clock started at `start` becomes overdue (one computation, so that a
    stored deadline equals the one recomputed from the same facts)."""
    return start + timedelta(seconds=period_s)


def default_grace_s(every_s: float) -> float:
    """A check's grace when `check add` is given none: a share of its period, capped (see
    models.CHECK_GRACE_SHARE)."""
    return min(every_s * CHECK_GRACE_SHARE, CHECK_GRACE_MAX_S)


def overdue_hook(name: str, command: str, queue: str, document: Mapping[str, object],
                 job_id: int | None = None, exit_code: int | None = None) -> JobSpec:
    """The job an overdue schedule or check runs as its hook: `command` by /bin/sh -c, told in
    its environment what became overdue (JOBCTL_HOOK_NAME, JOBCTL_HOOK_STATE; for a schedule
    its latest run's JOBCTL_HOOK_JOB_ID and JOBCTL_HOOK_EXIT_CODE, empty when none), reading
    `document` (what `show -o json` prints) as JSON on its standard input; retried after a
    failure as every hook is (models.HOOK_MAX_ATTEMPTS)."""
    import json

    return JobSpec(
        argv=["/bin/sh", "-c", command],
        name=f"on_{HOOK_STATE_OVERDUE} of {name}",  # as the per-job hooks: "on_failure of …"
        queue=queue,
        retries=HOOK_MAX_ATTEMPTS - 1,
        backoff_s=HOOK_BACKOFF_S,
        env={"JOBCTL_HOOK_NAME": name, "JOBCTL_HOOK_STATE": HOOK_STATE_OVERDUE,
             "JOBCTL_HOOK_JOB_ID": "" if job_id is None else str(job_id),
             "JOBCTL_HOOK_EXIT_CODE": "" if exit_code is None else str(exit_code)},
        input=(json.dumps(document, indent=2) + "\n").encode(),
    )
