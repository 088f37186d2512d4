"""Jobs outside the hot path: submit with dependencies or a unique key, cancel, retry (plain
submits, reads and output are in `store.submit` and `store.reads`).

Every function takes a `store.direct.Conn` in a `write()` transaction; the caller
(jobctl.client) owns the transaction. No SQLAlchemy here: `jobctl job …` never needs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from jobctl.errors import NotFound, PermissionDenied
from jobctl.models import (
    FINAL_STATES,
    NOT_STARTED_STATES,
    DepCondition,
    JobSpec,
    JobState,
    sql_states,
)
from jobctl.store import deps, notify
from jobctl.store import submit as submit_store
from jobctl.store.direct import Conn


def _edges(job_id: int, spec: JobSpec) -> list[tuple[int, int, DepCondition]]:
    return ([(job_id, dep, DepCondition.OK) for dep in spec.after]
            + [(job_id, dep, DepCondition.ANY) for dep in spec.after_any])


def submit(conn: Conn, spec: JobSpec) -> tuple[int, bool]:
    """Insert one job; returns (id, created). A known unique key returns the first job's id.
    With dependencies it starts `waiting` (or `queued` when they are all met already)."""
    [(state, error)] = _initials(conn, [spec])
    if spec.unique_key is None:
        [job_id] = submit_store.insert_many(conn, [spec], states=[state], errors=[error])
    else:
        found = submit_store.insert_unique(conn, spec, state, error)
        if found is None:  # the unique key was taken: hand back the job that holds it
            existing = conn.scalar(conn.backend.sql_jobs.UNIQUE_KEY_HOLDER,
                                   {"key": spec.unique_key})
            return int(existing), False
        job_id = found
    deps.add(conn, _edges(job_id, spec))
    return job_id, True


def submit_many(conn: Conn, specs: Sequence[JobSpec], *, array_id: int | None = None,
                array_indices: Sequence[int] | None = None) -> list[int]:
    """Insert many jobs in one transaction; ids come back in the order given (with `array_id`,
    the tasks of that array at `array_indices`: store.arrays).

    Unique keys are not supported here: a batch is all or nothing. Each job's --after and
    --after-any ids must exist (NotFound otherwise).
    """
    if not specs:
        return []
    initials = _initials(conn, specs)
    ids = submit_store.insert_many(conn, specs, states=[state for state, _ in initials],
                                   errors=[error for _, error in initials], array_id=array_id,
                                   array_indices=array_indices)
    if any(spec.after or spec.after_any for spec in specs):
        deps.add(conn, [edge for job_id, spec in zip(ids, specs, strict=True)
                        for edge in _edges(job_id, spec)])
    return ids


def _initials(conn: Conn, specs: Sequence[JobSpec]) -> list[tuple[JobState, str | None]]:
    """Each job's first state and error (policy.initial_state); jobs without dependencies are
    queued, and a submit of those does not import the policy module (~7 ms)."""
    if not any(spec.after or spec.after_any for spec in specs):
        return [(JobState.QUEUED, None)] * len(specs)
    from jobctl.policy import initial_state

    wanted = {dep for spec in specs for dep in (*spec.after, *spec.after_any)}
    states = deps.states_of(conn, wanted)
    missing = sorted(wanted - set(states))
    if missing:
        raise NotFound(f"no job with id {', '.join(map(str, missing))} (in --after)")
    initials = [initial_state(spec.after, spec.after_any, states) for spec in specs]
    return [(initial.state, initial.error) for initial in initials]


def existing_ids(conn: Conn, job_ids: Iterable[int]) -> set[int]:
    rows = conn.execute(conn.backend.sql_jobs.EXISTING_IDS,
                        {"ids": conn.ids_param(list(job_ids))})
    return {int(row[0]) for row in rows}


def lock_job(conn: Conn, job_id: int) -> tuple[str, str] | None:
    """The job's (state, queue), its row locked until the transaction ends; None when there is
    no such job. PermissionDenied when there is one this role may not change."""
    row = conn.execute(conn.backend.sql_jobs.LOCK_JOB, {"id": job_id}).fetchone()
    if row is None:
        deny_unless_missing(conn, job_id)
        return None
    return str(row[0]), str(row[1])


def deny_unless_missing(conn: Conn, job_id: int) -> None:
    """After a statement that locks or changes a job found no row: PermissionDenied when the
    job is there all the same. On PostgreSQL, row-level security hides another's job from a
    submitter's UPDATE and SELECT … FOR UPDATE (jobctl.store.postgres.roles) while it still
    reads it: that is a refusal, not "not found". (SQLite has no roles: never.)"""
    if existing_ids(conn, [job_id]):
        raise PermissionDenied(f"job {job_id} is not yours to change (only its submitter and "
                               "operators may)")


def cancel(conn: Conn, job_id: int) -> JobState | None:
    """Cancel one job. Returns the state it was in, or None when it does not exist.

    A job that has not started is cancelled here and now; a running one is flagged and its worker
    kills it (woken by a notification, or at its next lease renewal).
    """
    found = lock_job(conn, job_id)
    if found is None:
        return None
    state = found[0]
    if state in NOT_STARTED_STATES:
        conn.execute(conn.backend.sql_jobs.CANCEL_NOT_STARTED, {"id": job_id})
        notify.jobs_done(conn, [job_id])
        # what waits on it (--after) is cancelled too, transitively; --after-any ones may start
        deps.settle(conn, {job_id: JobState.CANCELLED.value})
    elif state == JobState.RUNNING.value:
        conn.execute(conn.backend.sql_jobs.REQUEST_CANCEL, {"id": job_id})
        notify.cancel_requested(conn, job_id)
    return JobState(state)


def retry(conn: Conn, job_id: int, retries: int = 0) -> JobState | None:
    """Queue a finished job again as a new attempt. Returns its state before, None if unknown."""
    found = lock_job(conn, job_id)
    if found is None:
        return None
    state, queue = found
    if state in FINAL_STATES:
        conn.execute(conn.backend.sql_jobs.RETRY, {"id": job_id, "retries": retries})
        notify.job_submitted(conn, queue)
    return JobState(state)


# --- SQL both backends share -------------------------------------------------------------------
# SQL text that both backends run exactly as it is (no parameter, nothing dialect-specific) lives
# here, once, named for what it means; each backend's statement (jobctl.store.<backend>.jobs)
# composes it at import. Whatever holds a parameter or the database's time stays in the
# backend's own statement.

# A job that has not started (waiting or queued), and one in a final state.
NOT_STARTED = f"state IN ({sql_states(NOT_STARTED_STATES)})"
FINAL = f"state IN ({sql_states(FINAL_STATES)})"

# What cancelling a job that has not started writes (CANCEL_NOT_STARTED; its finish time apart).
CANCELLED_BEFORE_START = (f"state = '{JobState.CANCELLED.value}', "
                          "error = 'cancelled before it started', cancel_requested = TRUE")

# What a retry writes besides its retries and its run time (RETRY): queued, its losses over, and
# nothing left of the attempt before.
QUEUED_AGAIN = f"""state = '{JobState.QUEUED.value}', losses = 0, finished_at = NULL,
       lease_until = NULL, exit_code = NULL, signal = NULL, error = NULL,
       cancel_requested = FALSE"""


class JobsSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.jobs): its statements,
    named and commented, in its driver's own parameter style."""

    UNIQUE_KEY_HOLDER: str  # :key → the id of the job holding that unique key
    EXISTING_IDS: str  # :ids (ids_param) → those that are jobs' ids
    LOCK_JOB: str  # :id → (state, queue), the row locked for the transaction
    CANCEL_NOT_STARTED: str  # :id → cancelled, if it has not started
    REQUEST_CANCEL: str  # :id → flagged for its worker to kill, if running
    RETRY: str  # :id, :retries → queued again as a new attempt, if final
