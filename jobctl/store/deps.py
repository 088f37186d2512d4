"""Dependencies between jobs (`job_deps`): what a new job waits for, and what happens to the jobs
that wait on one that ended.

`waiting` → `queued` happens in the transaction that ends a job's last dependency: on PostgreSQL's
hot path inside the worker's turn statement itself (jobctl.store.postgres.queue, which splices in
SETTLE_CTES), everywhere else (SQLite's completions, the rescuer, cancel, `workflow retry`, a
dependent that came after its dependency was claimed) through `settle` here, in the caller's
transaction. Whether a
job's dependencies are met is answered once per backend, by the same rule:
`jobctl.store.postgres.deps.SETTLE_CTES` (one statement) and `jobctl.store.sqlite.deps.settle`
(two). A dependency that failed, was lost or cancelled ends its `ok` dependents transitively, each
with an error naming the job at the root of it.

Two PostgreSQL transactions that end the last two dependencies of one job at the same moment each
see the other's dependency still running (one snapshot per statement), and neither releases the
job; so the rescuer, which runs on every worker every few seconds, also calls `settle()` for all
waiting jobs (`sweep`). That sweep is the backstop for this race only: the common case is
released in the completing transaction.

Written against `store.direct.Conn` (the driver, no SQLAlchemy); the statements are the backend's
(`DepsSQL`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from jobctl.models import DepCondition, JobState
from jobctl.store import notify
from jobctl.store.direct import Conn

__all__ = ["Settled", "add", "settle", "states_of", "sweep"]


# --- at submit --------------------------------------------------------------------------------


def states_of(conn: Conn, job_ids: Iterable[int]) -> dict[int, str]:
    """The states of existing jobs, locked against a concurrent completion (see STATES_OF)."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    rows = conn.execute(conn.backend.sql_deps.STATES_OF, {"ids": conn.ids_param(ids)})
    return {int(job_id): state for job_id, state in rows}


def add(conn: Conn, edges: Sequence[tuple[int, int, DepCondition]]) -> None:
    """Insert (job, depends on, condition) rows; an id both in --after and --after-any is `ok`."""
    rows: dict[tuple[int, int], str] = {}
    for job_id, depends_on, condition in edges:
        key = (job_id, depends_on)
        if rows.get(key) != DepCondition.OK.value:
            rows[key] = condition.value
    if rows:
        conn.executemany(
            conn.backend.sql_deps.ADD_EDGE,
            [{"job_id": j, "depends_on": d, "condition": c} for (j, d), c in rows.items()],
        )


# --- when jobs end ----------------------------------------------------------------------------


@dataclass
class Settled:
    released: list[int] = field(default_factory=list)
    ended: dict[int, JobState] = field(default_factory=dict)  # dependents failed or cancelled


def settle(conn: Conn, jobs: Iterable[int] | None) -> Settled:
    """Release or end the waiting jobs among `jobs` and the waiting dependents of `jobs` (jobs
    that just ended; a mapping of id → new state will do), transitively; with `jobs=None`, every
    waiting job that has dependencies (the sweep). Runs in the caller's transaction and notifies
    workers and waiters."""
    ids = None if jobs is None else sorted(set(jobs))
    result = Settled()
    if ids == []:
        return result
    queues: set[str] = set()
    for job_id, state, queue in conn.backend.sql_deps.settle(conn, ids):
        if state == JobState.QUEUED.value:
            result.released.append(job_id)
            queues.add(queue or "default")
        else:
            result.ended[job_id] = JobState(state)
    result.released.sort()
    for queue in sorted(queues):
        notify.job_submitted(conn, queue)
    if result.ended:
        notify.jobs_done(conn, sorted(result.ended))
    return result


def sweep(conn: Conn) -> Settled:
    """Settle every waiting job (the backstop for concurrent completions on PostgreSQL)."""
    return settle(conn, None)


class DepsSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.deps): its statements,
    named and commented, in its driver's own parameter style, and the settling step whose
    algorithm differs by necessity."""

    ADD_EDGE: str  # executemany: job_id, depends_on, condition
    STATES_OF: str  # ids → (id, state), locked where the backend must lock

    def settle(self, conn: Conn, ids: Sequence[int] | None) -> list[tuple[int, str, str | None]]:
        """Settle the waiting jobs among `ids` and those waiting on one of `ids`, transitively
        (None: every waiting job with dependencies). Returns (job id, its new state, its queue
        when that state is queued) for each job released or ended."""
        ...
