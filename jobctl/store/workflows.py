"""Workflows: a graph of jobs started together under one id (`workflows` row + its jobs, with
`jobs.workflow_id` and `jobs.task`, and `job_deps` edges between them).

Every function takes an open connection, a `store.direct.Conn` (a SQLAlchemy connection is taken
through `Conn.of` too); the caller owns the transaction. `start` is what a schedule calls too,
inside the transaction that fires the occurrence. No SQLAlchemy here: `jobctl workflow …` talks
to the driver alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from jobctl.models import FINAL_STATES, DepCondition, Job, JobState, Workflow, sql_states
from jobctl.store import deps, notify, reads
from jobctl.store import jobs as job_store
from jobctl.store import submit as submit_store
from jobctl.store.direct import Conn

# What `workflow retry` runs again: the tasks that ended without succeeding because of
# themselves or a dependency. Skipped is final too, but only a schedule's occurrence is skipped,
# never a workflow's task.
RERUN = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.LOST})
_RERUN_SQL = sql_states(RERUN)
_FINAL_SQL = sql_states(FINAL_STATES)


def _insert_sql(conn: Conn) -> str:
    """The workflow's row; nothing when this (schedule, fire time) has started one already.

    The conflict target is the partial unique index uq_workflows_schedule_fire_time; rows without
    a schedule (NULL schedule_id) never conflict, so one statement serves `workflow run` and a
    schedule's occurrence alike. Both databases take the same text, apart from jsonb's casts."""
    def as_json(name: str) -> str:
        return f"CAST(:{name} AS jsonb)" if conn.is_postgres else f":{name}"

    return f"""
INSERT INTO workflows (name, definition, params, created_at, schedule_id, fire_time, labels)
VALUES (:name, {as_json("definition")}, {as_json("params")}, {conn.now}, :schedule_id,
        :fire_time, {as_json("labels")})
ON CONFLICT (schedule_id, fire_time) WHERE schedule_id IS NOT NULL DO NOTHING
RETURNING id"""


def start(
    connection: Any,
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
    from jobctl.workflow import job_specs

    conn = Conn.of(connection)
    row = conn.legacy_execute(_insert_sql(conn), {
        "name": definition["name"], "definition": json.dumps(dict(definition)),
        "params": json.dumps(dict(params)), "schedule_id": schedule_id,
        "fire_time": conn.time_param(fire_time), "labels": json.dumps(dict(labels or {})),
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

_WORKFLOW_COLUMNS = "id, name, definition, params, created_at, schedule_id"
SELECT_WORKFLOW = f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE id = :id"
# Newest first; the tasks of all of them are read in one more query (list_workflows).
SELECT_WORKFLOWS = f"SELECT {_WORKFLOW_COLUMNS} FROM workflows ORDER BY id DESC"


def _workflow(conn: Conn, row: Sequence[Any], tasks: list[Job]) -> Workflow:
    id_, name, definition, params, created_at, schedule_id = row
    return Workflow(id=id_, name=name, created_at=conn.time_not_null(created_at),
                    params=dict(conn.json(params) or {}), definition=dict(conn.json(definition)),
                    tasks=tasks, schedule_id=schedule_id)


def _in_task_order(found: list[Job], definition: Mapping[str, Any]) -> list[Job]:
    """Tasks in the order the file defines them (jobs of unknown tasks last, by id)."""
    order = {task: index for index, task in enumerate(definition.get("tasks", {}))}
    return sorted(found, key=lambda job: (order.get(job.task or "", len(order)), job.id))


def get(connection: Any, workflow_id: int) -> Workflow | None:
    conn = Conn.of(connection)
    row = conn.legacy_execute(SELECT_WORKFLOW, {"id": workflow_id}).fetchone()
    if row is None:
        return None
    found = reads.select_jobs(conn, "workflow_id = :id", {"id": workflow_id})
    return _workflow(conn, row, _in_task_order(found, conn.json(row[2])))


def list_workflows(connection: Any, *, limit: int | None = 50) -> list[Workflow]:
    """Newest first, each with its tasks (for their states): two queries in all."""
    conn = Conn.of(connection)
    sql, params = SELECT_WORKFLOWS, {}
    if limit:
        sql, params = f"{sql} LIMIT :limit", {"limit": limit}
    rows = conn.legacy_execute(sql, params).fetchall()
    if not rows:
        return []
    tasks: dict[int, list[Job]] = {row[0]: [] for row in rows}
    where, in_params = reads.in_(conn, "workflow_id", list(tasks), "ids")
    for job in reads.select_jobs(conn, where, in_params):
        tasks[job.workflow_id].append(job)  # type: ignore[index]  # the condition: not None
    return [_workflow(conn, row, tasks[row[0]]) for row in rows]


# --- changing -----------------------------------------------------------------------------------

# The tasks that have not ended, the waiting ones first (so that nothing they wait for releases
# them meanwhile), then by id.
SELECT_UNFINISHED_TASKS = f"""
SELECT id, state FROM jobs
WHERE workflow_id = :id AND state NOT IN ({_FINAL_SQL})
ORDER BY CASE WHEN state = 'waiting' THEN 0 ELSE 1 END, id"""


def cancel(connection: Any, workflow_id: int) -> dict[int, JobState]:
    """Cancel every task that has not ended (the waiting ones first). Returns {job id: state
    before} for those."""
    conn = Conn.of(connection)
    rows = conn.legacy_execute(SELECT_UNFINISHED_TASKS, {"id": workflow_id}).fetchall()
    before: dict[int, JobState] = {}
    for job_id, state in rows:
        # job_store.cancel locks the row and acts on the state it finds then (a task that
        # ended since the read above is left as it is)
        if job_store.cancel(conn, job_id) is not None:
            before[job_id] = JobState(state)
    return before


# Back to waiting, each with its whole retry budget again (attempts already made are kept in the
# count); only while it is still in a state that may be re-run, so that a concurrent retry or
# anything else that moved it on is not undone. One statement for all of them (executemany).
RERUN_TASK = f"""
UPDATE jobs SET state = 'waiting', max_attempts = attempt + 1 + :retries, finished_at = NULL,
       lease_until = NULL, exit_code = NULL, signal = NULL, error = NULL,
       cancel_requested = FALSE
WHERE id = :id AND state IN ({_RERUN_SQL})"""


def _release_sql(conn: Conn, where: str) -> str:
    """Queue the re-run tasks whose needs are met, now; only those still waiting."""
    return (f"UPDATE jobs SET state = 'queued', run_at = {conn.now} "
            f"WHERE {where} AND state = 'waiting'")


def retry(connection: Any, workflow_id: int) -> list[int]:
    """Run the failed, cancelled and lost tasks again, and everything downstream of them (which
    ended because of them); succeeded tasks are kept. Returns the ids put back."""
    conn = Conn.of(connection)
    workflow = get(conn, workflow_id)
    if workflow is None:
        return []
    rerun = [job for job in workflow.tasks if job.state.value in RERUN]
    if not rerun:
        return []
    by_task = {job.task: job for job in workflow.tasks}
    conn.legacy_executemany(RERUN_TASK, [
        {"id": job.id,
         "retries": int(workflow.definition["tasks"].get(job.task or "", {}).get("retries", 0))}
        for job in rerun])
    ids = [job.id for job in rerun]
    # release the ones whose dependencies are all met now (those needing only succeeded tasks)
    ready = _ready(ids, by_task, workflow)
    if ready:
        where, params = reads.in_(conn, "id", ready, "ids")
        conn.legacy_execute(_release_sql(conn, where), params)
        for queue in sorted({job.queue for job in rerun if job.id in ready}):
            notify.job_submitted(conn, queue)
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


class WorkflowsSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.workflows): its statements,
    named and commented, in its driver's own parameter style, and any step that differs by
    necessity."""
