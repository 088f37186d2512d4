"""Dependencies between jobs (`job_deps`): what a new job waits for, and what happens to the jobs
that wait on one that ended.

`waiting` → `queued` happens in the transaction that ends a job's last dependency: on PostgreSQL's
hot path inside `queue.PG_COMPLETE_AND_CLAIM` itself, everywhere else (SQLite's completions, the
rescuer, cancel) through `settle` here, in the caller's transaction. A dependency that failed, was
lost or cancelled ends its `ok` dependents transitively, each with an error naming the job at the
root of it.

Two PostgreSQL transactions that end the last two dependencies of one job at the same moment each
see the other's dependency still running (one snapshot per statement), and neither releases the
job; so the rescuer, which runs on every worker every few seconds, also calls `settle()` for all
waiting jobs (`sweep`). That sweep is the backstop for this race only: the common case is
released in the completing transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from jobctl.models import FINAL_STATES, DepCondition, JobState
from jobctl.store import notify
from jobctl.store.schema import db_now, job_deps, jobs

FINAL = sorted(state.value for state in FINAL_STATES)
# An `ok` dependency in one of these states can never succeed any more.
FAILING = sorted(state.value for state in FINAL_STATES if state is not JobState.SUCCEEDED)
CHUNK = 500  # ids per IN list: SQLite limits the number of bound parameters


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start:start + CHUNK])


def dependency_error(cause: int, cause_state: str) -> str:
    return f"dependency {cause} {cause_state}"


def dependent_state(cause_state: str) -> JobState:
    """A dependent of a cancelled job is cancelled; of a failed or lost one, failed."""
    return JobState.CANCELLED if cause_state == JobState.CANCELLED.value else JobState.FAILED


# --- at submit --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Initial:
    """The state a new job starts in, given its dependencies' states now."""

    state: JobState
    error: str | None = None


def states_of(connection: sa.Connection, job_ids: Iterable[int]) -> dict[int, str]:
    """The states of existing jobs, locked against a concurrent completion (PostgreSQL: FOR
    SHARE; a completion that got there first is waited for and its result read)."""
    ids = sorted(set(job_ids))
    found: dict[int, str] = {}
    for chunk in _chunks(ids):
        query = sa.select(jobs.c.id, jobs.c.state).where(jobs.c.id.in_(chunk))
        if connection.dialect.name == "postgresql":
            query = query.with_for_update(read=True)
        found.update({row.id: row.state for row in connection.execute(query)})
    return found


def initial_state(after: Sequence[int], after_any: Sequence[int],
                  states: Mapping[int, str]) -> Initial:
    """`queued` when every dependency is already met, `waiting` while some are not, and ended
    at once (failed or cancelled) when an `--after` dependency already failed."""
    for dep in sorted(after):
        if states[dep] in FAILING:
            return Initial(dependent_state(states[dep]), dependency_error(dep, states[dep]))
    met = all(states[dep] == JobState.SUCCEEDED.value for dep in after) and all(
        states[dep] in FINAL for dep in after_any)
    return Initial(JobState.QUEUED if met else JobState.WAITING)


def add(connection: sa.Connection, edges: Sequence[tuple[int, int, DepCondition]]) -> None:
    """Insert (job, depends on, condition) rows; an id both in --after and --after-any is `ok`."""
    rows: dict[tuple[int, int], str] = {}
    for job_id, depends_on, condition in edges:
        key = (job_id, depends_on)
        if rows.get(key) != DepCondition.OK.value:
            rows[key] = condition.value
    if rows:
        connection.execute(
            sa.insert(job_deps),
            [{"job_id": j, "depends_on": d, "condition": c} for (j, d), c in rows.items()],
        )


# --- when jobs end ----------------------------------------------------------------------------


@dataclass
class Settled:
    released: list[int] = field(default_factory=list)
    ended: dict[int, JobState] = field(default_factory=dict)  # dependents failed or cancelled


def settle(connection: sa.Connection, ended: Mapping[int, str] | None) -> Settled:
    """Release or end the waiting dependents of jobs that just ended (`ended`: id → new state),
    transitively; with `ended=None`, every waiting job that has dependencies (the sweep).
    Runs in the caller's transaction and notifies workers and waiters."""
    result = Settled()
    causes: dict[int, tuple[int, str]] = {}
    if ended is None:
        candidates = _all_waiting_with_deps(connection)
    else:
        causes = {job_id: (job_id, state) for job_id, state in ended.items() if state in FAILING}
        candidates = _waiting_dependents(connection, sorted(ended))
    while candidates:
        failed_now: list[int] = []
        for job_id, deps in sorted(_deps_of(connection, candidates).items()):
            failing = sorted((dep, state) for dep, condition, state in deps
                             if condition == DepCondition.OK.value and state in FAILING)
            if failing:
                dep, state = failing[0]
                cause, cause_state = causes.get(dep, (dep, state))
                new_state = dependent_state(cause_state)
                if _end(connection, job_id, new_state, dependency_error(cause, cause_state)):
                    causes[job_id] = (cause, cause_state)
                    result.ended[job_id] = new_state
                    failed_now.append(job_id)
            elif all(_met(condition, state) for _, condition, state in deps) and _release(
                connection, job_id
            ):
                result.released.append(job_id)
        candidates = _waiting_dependents(connection, failed_now) if failed_now else []
    _notify(connection, result)
    return result


def sweep(connection: sa.Connection) -> Settled:
    """Settle every waiting job (the backstop for concurrent completions on PostgreSQL)."""
    return settle(connection, None)


def _met(condition: str, state: str | None) -> bool:
    if state is None:  # a pruned dependency never releases its dependents
        return False
    if condition == DepCondition.OK.value:
        return state == JobState.SUCCEEDED.value
    return state in FINAL


def _waiting_dependents(connection: sa.Connection, job_ids: Sequence[int]) -> list[int]:
    found: set[int] = set()
    for chunk in _chunks(list(job_ids)):
        query = (
            sa.select(job_deps.c.job_id)
            .join(jobs, jobs.c.id == job_deps.c.job_id)
            .where(job_deps.c.depends_on.in_(chunk), jobs.c.state == JobState.WAITING.value)
        )
        found.update(connection.execute(query).scalars())
    return sorted(found)


def _all_waiting_with_deps(connection: sa.Connection) -> list[int]:
    query = (
        sa.select(job_deps.c.job_id).distinct()
        .join(jobs, jobs.c.id == job_deps.c.job_id)
        .where(jobs.c.state == JobState.WAITING.value)
    )
    return sorted(connection.execute(query).scalars())


def _deps_of(connection: sa.Connection,
             job_ids: Sequence[int]) -> dict[int, list[tuple[int, str, str | None]]]:
    deps: dict[int, list[tuple[int, str, str | None]]] = {}
    dep_jobs = jobs.alias("dep")
    for chunk in _chunks(list(job_ids)):
        query = (
            sa.select(job_deps.c.job_id, job_deps.c.depends_on, job_deps.c.condition,
                      dep_jobs.c.state)
            .select_from(job_deps.outerjoin(dep_jobs, dep_jobs.c.id == job_deps.c.depends_on))
            .where(job_deps.c.job_id.in_(chunk))
        )
        for row in connection.execute(query):
            deps.setdefault(row.job_id, []).append((row.depends_on, row.condition, row.state))
    return deps


def _end(connection: sa.Connection, job_id: int, state: JobState, error: str) -> bool:
    result = connection.execute(
        sa.update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == JobState.WAITING.value)
        .values(state=state.value, finished_at=db_now(), error=error)
    )
    return bool(result.rowcount)


def _release(connection: sa.Connection, job_id: int) -> bool:
    result = connection.execute(
        sa.update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == JobState.WAITING.value)
        # run_at keeps an --at/--in given at submit when that is later than now
        .values(state=JobState.QUEUED.value,
                run_at=sa.case((jobs.c.run_at > db_now(), jobs.c.run_at), else_=db_now()))
    )
    return bool(result.rowcount)


def _notify(connection: sa.Connection, result: Settled) -> None:
    if result.released:
        queues = connection.execute(
            sa.select(jobs.c.queue).distinct().where(jobs.c.id.in_(result.released[:CHUNK]))
        ).scalars()
        for queue in sorted(set(queues)):
            notify.job_submitted(connection, queue)
    if result.ended:
        notify.jobs_done(connection, sorted(result.ended))
