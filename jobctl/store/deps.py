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

Written against `store.direct.Conn` (the driver, no SQLAlchemy), since the worker settles
dependents; callers holding a SQLAlchemy connection pass `Conn.of(connection)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from jobctl.models import FINAL_STATES, DepCondition, JobState
from jobctl.store import notify
from jobctl.store.direct import Conn
from jobctl.store.reads import in_

# An `ok` dependency in one of these states can never succeed any more.
FAILING = FINAL_STATES - {JobState.SUCCEEDED}


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


def states_of(conn: Conn, job_ids: Iterable[int]) -> dict[int, str]:
    """The states of existing jobs, locked against a concurrent completion (PostgreSQL: FOR
    SHARE; a completion that got there first is waited for and its result read)."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    where, params = in_(conn, "id", ids, "ids")
    lock = " FOR SHARE" if conn.is_postgres else ""
    rows = conn.legacy_execute(f"SELECT id, state FROM jobs WHERE {where}{lock}", params)
    return {job_id: state for job_id, state in rows}


def initial_state(after: Sequence[int], after_any: Sequence[int],
                  states: Mapping[int, str]) -> Initial:
    """`queued` when every dependency is already met, `waiting` while some are not, and ended
    at once (failed or cancelled) when an `--after` dependency already failed."""
    for dep in sorted(after):
        if states[dep] in FAILING:
            return Initial(dependent_state(states[dep]), dependency_error(dep, states[dep]))
    met = all(states[dep] == JobState.SUCCEEDED.value for dep in after) and all(
        states[dep] in FINAL_STATES for dep in after_any)
    return Initial(JobState.QUEUED if met else JobState.WAITING)


def add(conn: Conn, edges: Sequence[tuple[int, int, DepCondition]]) -> None:
    """Insert (job, depends on, condition) rows; an id both in --after and --after-any is `ok`."""
    rows: dict[tuple[int, int], str] = {}
    for job_id, depends_on, condition in edges:
        key = (job_id, depends_on)
        if rows.get(key) != DepCondition.OK.value:
            rows[key] = condition.value
    if rows:
        conn.legacy_executemany(
            "INSERT INTO job_deps (job_id, depends_on, condition)"
            " VALUES (:job_id, :depends_on, :condition)",
            [{"job_id": j, "depends_on": d, "condition": c} for (j, d), c in rows.items()],
        )


# --- when jobs end ----------------------------------------------------------------------------


@dataclass
class Settled:
    released: list[int] = field(default_factory=list)
    ended: dict[int, JobState] = field(default_factory=dict)  # dependents failed or cancelled


def settle(conn: Conn, ended: Mapping[int, str] | None) -> Settled:
    """Release or end the waiting dependents of jobs that just ended (`ended`: id → new state),
    transitively; with `ended=None`, every waiting job that has dependencies (the sweep).
    Runs in the caller's transaction and notifies workers and waiters."""
    result = Settled()
    causes: dict[int, tuple[int, str]] = {}
    if ended is None:
        candidates = _all_waiting_with_deps(conn)
    else:
        causes = {job_id: (job_id, state) for job_id, state in ended.items() if state in FAILING}
        candidates = _waiting_dependents(conn, sorted(ended))
    while candidates:
        failed_now: list[int] = []
        for job_id, deps in sorted(_deps_of(conn, candidates).items()):
            failing = sorted((dep, state) for dep, condition, state in deps
                             if condition == DepCondition.OK.value and state in FAILING)
            if failing:
                dep, state = failing[0]
                cause, cause_state = causes.get(dep, (dep, state))
                new_state = dependent_state(cause_state)
                if _end(conn, job_id, new_state, dependency_error(cause, cause_state)):
                    causes[job_id] = (cause, cause_state)
                    result.ended[job_id] = new_state
                    failed_now.append(job_id)
            elif all(_met(condition, state) for _, condition, state in deps) and _release(
                conn, job_id
            ):
                result.released.append(job_id)
        candidates = _waiting_dependents(conn, failed_now) if failed_now else []
    _notify(conn, result)
    return result


def sweep(conn: Conn) -> Settled:
    """Settle every waiting job (the backstop for concurrent completions on PostgreSQL)."""
    return settle(conn, None)


def _met(condition: str, state: str | None) -> bool:
    if state is None:  # a pruned dependency never releases its dependents
        return False
    if condition == DepCondition.OK.value:
        return state == JobState.SUCCEEDED.value
    return state in FINAL_STATES


def _waiting_dependents(conn: Conn, job_ids: Sequence[int]) -> list[int]:
    if not job_ids:
        return []
    where, params = in_(conn, "dep.depends_on", list(job_ids), "ids")
    rows = conn.legacy_execute(
        "SELECT dep.job_id FROM job_deps dep JOIN jobs ON jobs.id = dep.job_id"
        f" WHERE {where} AND jobs.state = 'waiting'", params)
    return sorted({row[0] for row in rows})


def _all_waiting_with_deps(conn: Conn) -> list[int]:
    rows = conn.legacy_execute(
        "SELECT DISTINCT dep.job_id FROM job_deps dep JOIN jobs ON jobs.id = dep.job_id"
        " WHERE jobs.state = 'waiting'")
    return sorted(row[0] for row in rows)


def _deps_of(conn: Conn, job_ids: Sequence[int]) -> dict[int, list[tuple[int, str, str | None]]]:
    """Each job's dependencies: (depends on, condition, its state; None once pruned)."""
    where, params = in_(conn, "job_deps.job_id", list(job_ids), "ids")
    rows = conn.legacy_execute(
        "SELECT job_deps.job_id, job_deps.depends_on, job_deps.condition, dep.state"
        " FROM job_deps LEFT OUTER JOIN jobs AS dep ON dep.id = job_deps.depends_on"
        f" WHERE {where}", params)
    deps: dict[int, list[tuple[int, str, str | None]]] = {}
    for job_id, depends_on, condition, state in rows:
        deps.setdefault(job_id, []).append((depends_on, condition, state))
    return deps


def _end(conn: Conn, job_id: int, state: JobState, error: str) -> bool:
    cursor = conn.legacy_execute(
        f"UPDATE jobs SET state = :state, finished_at = {conn.now}, error = :error"
        " WHERE id = :id AND state = 'waiting'",
        {"state": state.value, "error": error, "id": job_id})
    return bool(cursor.rowcount)


def _release(conn: Conn, job_id: int) -> bool:
    # run_at keeps an --at/--in given at submit when that is later than now
    cursor = conn.legacy_execute(
        f"UPDATE jobs SET state = 'queued',"
        f" run_at = CASE WHEN run_at > {conn.now} THEN run_at ELSE {conn.now} END"
        " WHERE id = :id AND state = 'waiting'", {"id": job_id})
    return bool(cursor.rowcount)


def _notify(conn: Conn, result: Settled) -> None:
    if result.released:
        where, params = in_(conn, "id", result.released, "ids")
        rows = conn.legacy_execute(f"SELECT DISTINCT queue FROM jobs WHERE {where}", params)
        for queue in sorted({row[0] for row in rows}):
            notify.job_submitted(conn, queue)
    if result.ended:
        notify.jobs_done(conn, sorted(result.ended))


class DepsSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.deps): its statements,
    named and commented, in its driver's own parameter style, and any step that differs by
    necessity."""
