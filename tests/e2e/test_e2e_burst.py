"""Burst workers finish what their queues can finish (`worker start --burst`): several started
after `workflow run` all exit 0 with the workflow done; dependents of jobs another worker runs
are waited for; one whose jobs wait on something no live worker can run exits and says why."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

from e2e_support import FAST_WORKER_OPTIONS, Jobctl, describe
from test_e2e_workflows import check_order, stamp, write_workflow

Tasks = dict[str, tuple[str, list[str], list[str]]]


def run_bursts(jobctl: Jobctl, count: int, timeout_s: float = 120.0) -> list[str]:
    """Start `count` burst workers at once (concurrency 3); each must exit 0. Their logs."""
    processes = [jobctl.popen("worker", "start", "--burst", *FAST_WORKER_OPTIONS,
                              "--concurrency", "3") for _ in range(count)]
    logs = []
    for process in processes:
        try:
            _, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
            raise AssertionError(f"a burst worker did not exit:\n{err.decode()}") from None
        assert process.returncode == 0, err.decode()
        logs.append(err.decode())
    return logs


def test_three_burst_workers_finish_a_diamond_and_a_random_dag(
        jobctl: Jobctl, tmp_path: Path) -> None:
    log = tmp_path / "diamond.log"
    diamond: Tasks = {
        "a": (stamp(log, "a", "sleep 0.5; "), [], []),
        "b": (stamp(log, "b", "sleep 0.3; "), ["a"], []),
        "c": (stamp(log, "c"), ["a"], []),
        "d": (stamp(log, "d"), ["b", "c"], [])}
    diamond_id = jobctl.ok("workflow", "run",
                           str(write_workflow(tmp_path / "diamond.toml", diamond))).strip()
    rng = random.Random(13)
    dag_log = tmp_path / "dag.log"
    dag: Tasks = {}
    for index in range(60):
        earlier = [f"t{i}" for i in range(index)]
        needs = rng.sample(earlier, min(len(earlier), rng.randint(0, 3)))
        needs_any = [n for n in rng.sample(earlier, min(len(earlier), rng.randint(0, 1)))
                     if n not in needs]
        dag[f"t{index}"] = (stamp(dag_log, f"t{index}", "sleep 0.05; "), needs, needs_any)
    dag_id = jobctl.ok("workflow", "run", str(write_workflow(tmp_path / "dag.toml", dag))).strip()

    run_bursts(jobctl, 3)

    for workflow_id in (diamond_id, dag_id):
        result = jobctl("workflow", "wait", workflow_id, "--timeout", "0s")
        assert result.returncode == 0, describe(result)
    check_order(log, diamond)
    check_order(dag_log, dag)
    for path, tasks in ((log, diamond), (dag_log, dag)):
        starts = [line.split()[0] for line in path.read_text().splitlines()
                  if line.split()[1] == "start"]
        assert sorted(starts) == sorted(tasks), "a task ran twice or never"


def test_after_and_after_any_with_one_burst_worker(jobctl: Jobctl) -> None:
    a = jobctl.submit("--", "sh", "-c", "sleep 0.2")
    b = jobctl.submit("--after", str(a), "--", "true")
    failing = jobctl.submit("--", "false")
    any_ = jobctl.submit("--after-any", str(failing), "--", "true")
    doomed = jobctl.submit("--after", str(failing), "--", "true")

    jobctl.burst()

    states = {job_id: jobctl.status(job_id)["state"] for job_id in (a, b, failing, any_, doomed)}
    assert states == {a: "succeeded", b: "succeeded", failing: "failed", any_: "succeeded",
                      doomed: "failed"}


def test_a_burst_worker_waits_for_a_dependency_another_worker_runs(
        jobctl: Jobctl, tmp_path: Path) -> None:
    """The dependency runs in another queue on a long-lived worker: the burst worker on the
    dependent's queue waits for it instead of leaving at once."""
    gate = tmp_path / "gate"
    other = jobctl.start_worker("--queue", "other")
    first = jobctl.submit("--queue", "other", "--",
                          "sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.1; done")
    second = jobctl.submit("--after", str(first), "--", "true")
    burst = jobctl.popen("worker", "start", "--burst", *FAST_WORKER_OPTIONS)
    time.sleep(2)
    assert burst.poll() is None, "the burst worker left while its job could still start"
    gate.touch()
    _, err = burst.communicate(timeout=60)
    assert burst.returncode == 0, err.decode()
    assert jobctl.status(second)["state"] == "succeeded"
    assert other.process.poll() is None


def test_a_burst_worker_leaves_what_cannot_start_and_says_why(jobctl: Jobctl) -> None:
    """Its job waits on a job in a queue no live worker serves: it exits 0 at once, naming both."""
    blocker = jobctl.submit("--queue", "gpu", "--", "true")
    stuck = jobctl.submit("--after", str(blocker), "--", "true")
    started = time.monotonic()
    result = jobctl.burst()
    assert time.monotonic() - started < 30
    assert f"leaving job {stuck}" in result.stderr, result.stderr
    assert f"job {blocker} is queued in queue 'gpu', which no live worker serves" in result.stderr
    assert jobctl.status(stuck)["state"] == "waiting"
