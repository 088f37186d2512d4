"""PostgreSQL: `kill -9` of a worker in the middle of a 50-task workflow. The graph is delayed,
never broken: the workflow still ends `succeeded`, and every at-most-once task ran exactly once.

The workflow has three layers: 10 quick at-most-once tasks, then 20 slow at-least-once tasks that
need all of the first layer, then 20 quick at-most-once tasks that need all of the second. The
worker is killed while the second layer runs (so only at-least-once tasks die with it); a second
worker rescues them once their leases expire and finishes the graph.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from chaos_support import CHAOS_WORKER_OPTIONS, kill9, logging_script, read_events
from e2e_support import Jobctl, describe, wait_for

FIRST = [f"prepare{n}" for n in range(10)]
SECOND = [f"crunch{n}" for n in range(20)]
THIRD = [f"publish{n}" for n in range(20)]


def _toml_list(names: list[str]) -> str:
    return "[" + ", ".join(f'"{name}"' for name in names) + "]"


def _workflow(log: Path) -> str:
    """The workflow file: every task logs its start and end (job, attempt, worker) to `log`."""
    lines = ['[workflow]\nname = "chaos"\n']
    # A crashed worker's at-least-once job runs again if it has an attempt left: retries = 1.
    layers = [(FIRST, [], "at-most-once", 0, "true"),
              (SECOND, FIRST, "at-least-once", 1, "sleep 2"),
              (THIRD, SECOND, "at-most-once", 0, "true")]
    for names, needs, delivery, retries, body in layers:
        for name in names:
            script = logging_script(log, body).replace('"', '\\"')
            lines.append(f'[tasks.{name}]\ncommand = "{script}"\ndelivery = "{delivery}"\n'
                         f"retries = {retries}\nneeds = {_toml_list(needs)}\n")
    return "\n".join(lines)


def test_kill9_in_the_middle_of_a_workflow(chaos_jobctl: Jobctl, tmp_path: Path) -> None:
    jobctl = chaos_jobctl
    log = tmp_path / "side-effects.log"
    path = tmp_path / "chaos.toml"
    path.write_text(_workflow(log))
    jobctl.ok("db", "upgrade")
    workflow_id = jobctl.ok("workflow", "run", str(path)).strip()
    tasks = {task["job_id"]: task["task"]
             for task in _status(jobctl, workflow_id)["tasks"]}
    assert len(tasks) == 50

    victim = jobctl.start_worker(*CHAOS_WORKER_OPTIONS, "--concurrency", "4", "--name", "victim")
    second_layer_starts = lambda: [e for e in read_events(log)  # noqa: E731
                                   if e.kind == "start" and tasks[e.job] in SECOND]
    wait_for(lambda: len(second_layer_starts()) >= 4, 60, "the second layer never started")
    kill9(victim)
    running_at_kill = {e.job for e in second_layer_starts()}
    rescuer = jobctl.start_worker(*CHAOS_WORKER_OPTIONS, "--concurrency", "4",
                                  "--name", "rescuer")

    result = jobctl("workflow", "wait", workflow_id, "--timeout", "120", timeout=150)
    assert result.returncode == 0, describe(result) + rescuer.log()
    assert _status(jobctl, workflow_id)["state"] == "succeeded"

    starts = Counter(tasks[e.job] for e in read_events(log) if e.kind == "start")
    for name in FIRST + THIRD:  # at most once, and the workflow succeeded: exactly once
        assert starts[name] == 1, (name, starts[name])
    assert all(starts[name] >= 1 for name in SECOND)
    # The kill hit: the second-layer tasks it interrupted ran again on the rescuer.
    rerun = [tasks[job] for job in running_at_kill if starts[tasks[job]] >= 2]
    assert rerun, f"no task ran twice: the kill interrupted nothing ({starts})"
    assert {e.worker for e in read_events(log)
            if e.kind == "start" and e.attempt == 2} == {"rescuer"}


def _status(jobctl: Jobctl, workflow_id: str) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(jobctl.look("workflow", "status", workflow_id,
                                                     "-o", "json"))
    return status
