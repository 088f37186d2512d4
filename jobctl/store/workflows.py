"""Workflows: a graph of jobs started together under one id (`workflows` row + its jobs, with
`jobs.workflow_id` and `jobs.task`, and `job_deps` edges between them).

Every function takes an open connection; the caller owns the transaction. `start` is what a
schedule calls too, inside the transaction that fires the occurrence.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from jobctl.models import DepCondition, Job, JobState, Workflow
from jobctl.store import deps, notify, reads
from jobctl.store import jobs as job_store
from jobctl.store import submit as submit_store
from jobctl.store.direct import Conn
from jobctl.store.schema import db_now, jobs, workflows

RERUN = [JobState.FAILED.value, JobState.CANCELLED.value, JobState.LOST.value]


def start(
    connection: sa.Connection | Conn,
    definition: Mapping[str, Any],
    params: Mapping[str, str],
    *,
    schedule_id: int | None = None,
    fire_time: datetime | None = None,
    labels: Mapping[str, str] | None = None,
) -> int | None:
    """Start a validated workflow (`jobctl.workflow.load`): its row, one job per task (tasks
    without `needs` queued, the others waiting) and the edges. Returns the workflow's id, or
    None when this (schedule_id, fire_time) has started one already (nothing is written)."""
    import json

    from jobctl.workflow import job_specs

    # On the driver road (a Conn): the scheduler fires a workflow's occurrences without
    # SQLAlchemy (jobctl.store.schedules).
    conn = Conn.of(connection)

    def as_json(name: str) -> str:
        return f"CAST(:{name} AS jsonb)" if conn.is_postgres else f":{name}"

    fire_time_sql = "CAST(:fire_time AS timestamptz)" if conn.is_postgres else ":fire_time"
    sql = (f"INSERT INTO workflows (name, definition, params, created_at, schedule_id, "
           f"fire_time, labels) VALUES (:name, {as_json('definition')}, {as_json('params')}, "
           f"{conn.now}, :schedule_id, {fire_time_sql}, {as_json('labels')})")
    if schedule_id is not None:
        sql += " ON CONFLICT (schedule_id, fire_time) WHERE schedule_id IS NOT NULL DO NOTHING"
    workflow_id = conn.scalar(sql + " RETURNING id", {
        "name": definition["name"], "definition": json.dumps(dict(definition)),
        "params": json.dumps(dict(params)), "schedule_id": schedule_id,
        "fire_time": conn.time_param(fire_time), "labels": json.dumps(dict(labels or {}))})
    if workflow_id is None:
        return None
    tasks = list(definition["tasks"])
    specs = job_specs(definition, params)
    states = [JobState.WAITING if _needs(definition["tasks"][task]) else JobState.QUEUED
              for task in tasks]
    ids = submit_store.insert_many(conn, specs, states=states,
                                   workflow_id=workflow_id, tasks=tasks)
    by_task = dict(zip(tasks, ids, strict=True))
    edges = []
    for task, job_id in by_task.items():
        spec = definition["tasks"][task]
        edges += [(job_id, by_task[other], DepCondition.OK) for other in spec.get("needs", [])]
        edges += [(job_id, by_task[other], DepCondition.ANY)
                  for other in spec.get("needs_any", [])]
    deps.add(conn, edges)
    return int(workflow_id)


def _needs(task: Mapping[str, Any]) -> bool:
    return bool(task.get("needs")) or bool(task.get("needs_any"))


def _tasks(connection: sa.Connection, workflow_id: int, definition: Mapping[str, Any]) -> list[Job]:
    found = reads.select_jobs(Conn.of(connection), "workflow_id = :id", {"id": workflow_id})
    order = {task: index for index, task in enumerate(definition.get("tasks", {}))}
    return sorted(found, key=lambda job: (order.get(job.task or "", len(order)), job.id))


def get(connection: sa.Connection, workflow_id: int) -> Workflow | None:
    row = connection.execute(sa.select(workflows).where(workflows.c.id == workflow_id)).first()
    if row is None:
        return None
    definition = dict(row.definition)
    return Workflow(id=row.id, name=row.name, created_at=row.created_at,
                    params=dict(row.params or {}), definition=definition,
                    tasks=_tasks(connection, row.id, definition), schedule_id=row.schedule_id)


def list_workflows(connection: sa.Connection, *, limit: int | None = 50) -> list[Workflow]:
    """Newest first, each with its tasks (for their states)."""
    query = sa.select(workflows).order_by(workflows.c.id.desc())
    if limit:
        query = query.limit(limit)
    rows = connection.execute(query).all()
    if not rows:
        return []
    tasks: dict[int, list[Job]] = {row.id: [] for row in rows}
    conn = Conn.of(connection)
    where, params = reads.in_(conn, "workflow_id", list(tasks), "ids")
    for job in reads.select_jobs(conn, where, params):
        tasks[job.workflow_id].append(job)  # type: ignore[index]  # the condition: not None
    return [Workflow(id=row.id, name=row.name, created_at=row.created_at,
                     params=dict(row.params or {}), definition=dict(row.definition),
                     tasks=tasks[row.id], schedule_id=row.schedule_id) for row in rows]


def cancel(connection: sa.Connection | Conn, workflow_id: int) -> dict[int, JobState]:
    """Cancel every task that has not ended (the waiting ones first, so that nothing they wait
    for releases them meanwhile). Returns {job id: state before} for those."""
    conn = Conn.of(connection)
    final, params = reads.in_(conn, "state", list(deps.FINAL), "final")
    rows = conn.execute(
        f"SELECT id, state FROM jobs WHERE workflow_id = :id AND NOT ({final}) "
        "ORDER BY state <> :waiting, id",
        {"id": workflow_id, "waiting": JobState.WAITING.value, **params}).fetchall()
    before: dict[int, JobState] = {}
    for job_id, state_before in rows:
        state = job_store.cancel(conn, job_id)
        if state is not None:
            before[job_id] = JobState(state_before)
    return before


def retry(connection: sa.Connection, workflow_id: int) -> list[int]:
    """Run the failed, cancelled and lost tasks again, and everything downstream of them (which
    ended because of them); succeeded tasks are kept. Returns the ids put back."""
    workflow = get(connection, workflow_id)
    if workflow is None:
        return []
    rerun = [job for job in workflow.tasks if job.state.value in RERUN]
    if not rerun:
        return []
    by_task = {job.task: job for job in workflow.tasks}
    for job in rerun:
        retries = int(workflow.definition["tasks"].get(job.task or "", {}).get("retries", 0))
        # each gets its whole retry budget again; attempts already made are kept in the count
        connection.execute(
            sa.update(jobs)
            .where(jobs.c.id == job.id, jobs.c.state.in_(RERUN))
            .values(state=JobState.WAITING.value, max_attempts=jobs.c.attempt + 1 + retries,
                    finished_at=None, lease_until=None, exit_code=None, signal=None,
                    error=None, cancel_requested=False)
        )
    ids = [job.id for job in rerun]
    # release the ones whose dependencies are all met now (those needing only succeeded tasks)
    ready = _ready(ids, by_task, workflow)
    if ready:
        connection.execute(
            sa.update(jobs)
            .where(jobs.c.id.in_(ready), jobs.c.state == JobState.WAITING.value)
            .values(state=JobState.QUEUED.value, run_at=db_now())
        )
        for queue in sorted({job.queue for job in rerun if job.id in ready}):
            notify.job_submitted(connection, queue)
    return ids


def _ready(ids: list[int], by_task: Mapping[str | None, Job],
           workflow: Workflow) -> list[int]:
    """Of the jobs put back, those whose needs are met by the tasks' states now."""
    states = {job.task: job.state for job in by_task.values()}
    for job in by_task.values():
        if job.id in ids:
            states[job.task] = JobState.WAITING
    ready = []
    for job in by_task.values():
        if job.id not in ids or job.task is None:
            continue
        task = workflow.definition["tasks"].get(job.task, {})
        met = all(states.get(n) is JobState.SUCCEEDED for n in task.get("needs", [])) and all(
            (s := states.get(n)) is not None and s.is_final for n in task.get("needs_any", []))
        if met:
            ready.append(job.id)
    return ready
