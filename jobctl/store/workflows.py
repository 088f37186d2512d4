"""Workflows: a graph of jobs started together under one id (`workflows` row + its jobs, with
`jobs.workflow_id` and `jobs.task`, and `job_deps` edges between them).

Every function takes an open `store.direct.Conn` (the driver, no SQLAlchemy); the caller owns the
transaction. `start` is what a schedule calls too, inside the transaction that fires the
occurrence. The statements are the backend's (`WorkflowsSQL`); which tasks a retry releases is
the dependency settling of store.deps, the same as for any job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from jobctl.models import RERUN_STATES, DepCondition, Job, JobState, Workflow
from jobctl.store import deps, reads
from jobctl.store import jobs as job_store
from jobctl.store import submit as submit_store
from jobctl.store.direct import Conn

# What `workflow retry` runs again (models.RERUN_STATES).
RERUN = RERUN_STATES

# The columns every statement that returns workflows selects, in this order (_workflow reads them).
WORKFLOW_COLUMNS = ("id", "name", "definition", "params", "created_at", "schedule_id",
                    "submitted_by")


def start(
    conn: Conn,
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
    from jobctl.workflow import job_specs, workflow_hook

    row = conn.execute(conn.backend.sql_workflows.START, {
        "name": definition["name"], "definition": json.dumps(dict(definition)),
        "params": json.dumps(dict(params)), "schedule_id": schedule_id,
        "fire_time": conn.time_param(fire_time), "labels": json.dumps(dict(labels or {})),
        "on_failure": workflow_hook(definition, params),
        "submitted_by": conn.backend.sql_submit.submitter(),
    }).fetchone()
    if row is None:
        return None
    workflow_id = int(row[0])
    tasks = list(definition["tasks"])
    specs = job_specs(definition, params)
    states = [JobState.WAITING if _needs(definition["tasks"][task]) else JobState.QUEUED
              for task in tasks]
    ids = submit_store.insert_many(conn, specs, states=states, workflow_id=workflow_id,
                                   tasks=tasks)
    by_task = dict(zip(tasks, ids, strict=True))
    edges = []
    for task, job_id in by_task.items():
        spec = definition["tasks"][task]
        edges += [(job_id, by_task[other], DepCondition.OK) for other in spec.get("needs", [])]
        edges += [(job_id, by_task[other], DepCondition.ANY)
                  for other in spec.get("needs_any", [])]
    deps.add(conn, edges)
    return workflow_id


def _needs(task: Mapping[str, Any]) -> bool:
    return bool(task.get("needs")) or bool(task.get("needs_any"))


# --- reading ------------------------------------------------------------------------------------


def _workflow(conn: Conn, row: Sequence[Any], tasks: list[Job]) -> Workflow:
    """A Workflow from a row of WORKFLOW_COLUMNS and its tasks, in the file's task order."""
    values = dict(zip(WORKFLOW_COLUMNS, row, strict=True))
    definition = dict(conn.json(values["definition"]))
    return Workflow(id=int(values["id"]), name=values["name"],
                    created_at=conn.time_not_null(values["created_at"]),
                    params=dict(conn.json(values["params"]) or {}), definition=definition,
                    tasks=_in_task_order(tasks, definition),
                    schedule_id=values["schedule_id"], submitted_by=values["submitted_by"])


def _in_task_order(found: list[Job], definition: Mapping[str, Any]) -> list[Job]:
    """Tasks in the order the file defines them (jobs of unknown tasks last, by id)."""
    order = {task: index for index, task in enumerate(definition.get("tasks", {}))}
    return sorted(found, key=lambda job: (order.get(job.task or "", len(order)), job.id))


def get(conn: Conn, workflow_id: int) -> Workflow | None:
    sql = conn.backend.sql_workflows
    row = conn.execute(sql.GET, {"id": workflow_id}).fetchone()
    if row is None:
        return None
    tasks = conn.execute(sql.TASKS, {"id": workflow_id}).fetchall()
    return _workflow(conn, row, [reads.job_from_row(conn, task) for task in tasks])


def list_workflows(conn: Conn, *, limit: int | None = 50) -> list[Workflow]:
    """Newest first, each with its tasks (for their states): two queries in all."""
    sql = conn.backend.sql_workflows
    rows = conn.execute(sql.LIST, {"limit": limit or None}).fetchall()
    if not rows:
        return []
    tasks: dict[int, list[Job]] = {int(row[0]): [] for row in rows}
    for task in conn.execute(sql.TASKS_OF, {"ids": conn.ids_param(list(tasks))}).fetchall():
        job = reads.job_from_row(conn, task)
        tasks[job.workflow_id].append(job)  # type: ignore[index]  # the condition: not None
    return [_workflow(conn, row, tasks[int(row[0])]) for row in rows]


# --- changing -----------------------------------------------------------------------------------


def cancel(conn: Conn, workflow_id: int) -> dict[int, JobState]:
    """Cancel every task that has not ended (the waiting ones first). Returns {job id: state
    before} for those."""
    rows = conn.execute(conn.backend.sql_workflows.UNFINISHED_TASKS,
                        {"id": workflow_id}).fetchall()
    before: dict[int, JobState] = {}
    for job_id, state in rows:
        # job_store.cancel locks the row and acts on the state it finds then (a task that
        # ended since the read above is left as it is)
        if job_store.cancel(conn, job_id) is not None:
            before[job_id] = JobState(state)
    return before


def retry(conn: Conn, workflow_id: int) -> list[int]:
    """Run the failed, cancelled and lost tasks again, and everything downstream of them (which
    ended because of them); succeeded tasks are kept. Returns the ids put back."""
    workflow = get(conn, workflow_id)
    if workflow is None:
        return []
    rerun = [job for job in workflow.tasks if job.state in RERUN_STATES]
    if not rerun:
        return []
    # PermissionDenied for another's workflow (PostgreSQL's roles), whose tasks this role's
    # UPDATE would silently not see: its tasks are all its submitter's.
    job_store.lock_job(conn, rerun[0].id)
    conn.executemany(conn.backend.sql_workflows.RERUN_TASK, [
        {"id": job.id,
         "retries": int(workflow.definition["tasks"].get(job.task or "", {}).get("retries", 0))}
        for job in rerun])
    conn.execute(conn.backend.sql_workflows.REARM_HOOK, {"id": workflow_id})
    ids = [job.id for job in rerun]
    # queue the ones whose dependencies are all met now (those needing only succeeded tasks),
    # as settling decides for any waiting job
    deps.settle(conn, ids)
    return ids


class WorkflowsSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.workflows): its statements,
    named and commented, in its driver's own parameter style. Statements returning workflows
    select WORKFLOW_COLUMNS, those returning tasks reads.JOB_COLUMNS."""

    START: str  # name, definition, params, schedule_id, fire_time, labels → id, or no row
    GET: str  # id → a workflow
    LIST: str  # limit (None: all) → workflows, newest first
    TASKS: str  # id → its tasks
    TASKS_OF: str  # ids (ids_param) → their tasks
    UNFINISHED_TASKS: str  # id → (job id, state), the waiting ones first
    RERUN_TASK: str  # executemany: id, retries
    REARM_HOOK: str  # id: its on_failure may start again
