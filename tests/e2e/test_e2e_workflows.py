"""Workflows and dependencies through the real CLI and real workers: graphs run in an order
consistent with their edges (from timestamps the tasks write themselves), a failure ends exactly
its `needs` descendants, `workflow retry` finishes the job, invalid files write nothing, bulk
submit keeps line order and is all or nothing, and `--after` across separate submits."""

from __future__ import annotations

import json
import random
from pathlib import Path

from e2e_support import Jobctl, describe


def stamp(log: Path, name: str, extra: str = "") -> str:
    """A task command that records its own start and end times (and runs `extra` between)."""
    return (f'echo "{name} start $(date +%s.%N)" >> {log}; {extra}'
            f'echo "{name} end $(date +%s.%N)" >> {log}')


def times(log: Path) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        name, event, when = line.split()
        found.setdefault(name, {})[event] = float(when)
    return found


def write_workflow(path: Path, tasks: dict[str, tuple[str, list[str], list[str]]]) -> Path:
    lines = ['[workflow]\nname = "test"\n']
    for name, (command, needs, needs_any) in tasks.items():
        lines.append(f"[tasks.{name}]\ncommand = {json.dumps(command)}\n"
                     f"needs = {json.dumps(needs)}\nneeds_any = {json.dumps(needs_any)}\n")
    path.write_text("\n".join(lines))
    return path


def run_and_wait(jobctl: Jobctl, file: Path, *extra: str) -> tuple[int, int]:
    # The submit sets the scene, in this process; the wait is a real one (its exit code).
    workflow_id = int(jobctl.look("workflow", "run", str(file), *extra))
    result = jobctl("workflow", "wait", str(workflow_id), "--timeout", "120s", timeout=150)
    return workflow_id, result.returncode


def check_order(log: Path, tasks: dict[str, tuple[str, list[str], list[str]]]) -> None:
    seen = times(log)
    assert set(seen) == set(tasks)
    for name, (_, needs, needs_any) in tasks.items():
        for other in needs + needs_any:
            assert seen[name]["start"] >= seen[other]["end"], (name, other)


def test_a_random_dag_and_a_diamond_run_in_graph_order(jobctl: Jobctl, tmp_path: Path) -> None:
    for _ in range(3):
        jobctl.start_worker("--concurrency", "4")
    log = tmp_path / "diamond.log"
    diamond: dict[str, tuple[str, list[str], list[str]]] = {
        "a": (stamp(log, "a"), [], []), "b": (stamp(log, "b"), ["a"], []),
        "c": (stamp(log, "c"), ["a"], []), "d": (stamp(log, "d"), ["b", "c"], [])}
    _, code = run_and_wait(jobctl, write_workflow(tmp_path / "diamond.toml", diamond))
    assert code == 0
    check_order(log, diamond)

    rng = random.Random(7)
    log = tmp_path / "dag.log"
    dag: dict[str, tuple[str, list[str], list[str]]] = {}
    for index in range(200):
        earlier = [f"t{i}" for i in range(index)]
        needs = rng.sample(earlier, min(len(earlier), rng.randint(0, 3)))
        needs_any = [n for n in rng.sample(earlier, min(len(earlier), rng.randint(0, 1)))
                     if n not in needs]
        dag[f"t{index}"] = (stamp(log, f"t{index}"), needs, needs_any)
    names = list(dag)
    rng.shuffle(names)  # file order is not dependency order
    workflow_id, code = run_and_wait(
        jobctl, write_workflow(tmp_path / "dag.toml", {n: dag[n] for n in names}))
    assert code == 0
    check_order(log, dag)
    status = json.loads(jobctl.look("workflow", "status", str(workflow_id), "-o", "json"))
    assert status["state"] == "succeeded" and len(status["tasks"]) == 200
    position = {task["task"]: i for i, task in enumerate(status["tasks"])}
    assert all(position[other] < position[name] for name, (_, needs, any_) in dag.items()
               for other in needs + any_)


def test_a_failure_ends_its_descendants_and_retry_completes(jobctl: Jobctl,
                                                             tmp_path: Path) -> None:
    jobctl.start_worker("--concurrency", "4")
    flag = tmp_path / "fixed"
    log = tmp_path / "run.log"
    tasks = {
        "a": (stamp(log, "a"), [], []),
        "bad": (f"test -e {flag} || exit 7", ["a"], []),
        "sibling": (stamp(log, "sibling"), ["a"], []),
        "child": (stamp(log, "child"), ["bad"], []),
        "grandchild": (stamp(log, "grandchild"), ["child"], []),
        "cleanup": (stamp(log, "cleanup"), [], ["bad"]),
    }
    workflow_id, code = run_and_wait(jobctl, write_workflow(tmp_path / "w.toml", tasks))
    assert code == 7
    status = json.loads(jobctl.look("workflow", "status", str(workflow_id), "-o", "json"))
    states = {t["task"]: t["state"] for t in status["tasks"]}
    assert states == {"a": "succeeded", "bad": "failed", "sibling": "succeeded",
                      "child": "failed", "grandchild": "failed", "cleanup": "succeeded"}
    bad_id = next(t["job_id"] for t in status["tasks"] if t["task"] == "bad")
    errors = {t["task"]: t["error"] for t in status["tasks"]}
    assert errors["grandchild"] == f"dependency {bad_id} failed"
    assert set(times(log)) == {"a", "sibling", "cleanup"}

    flag.touch()
    log.unlink()
    jobctl.ok("workflow", "retry", str(workflow_id))
    result = jobctl("workflow", "wait", str(workflow_id), "--timeout", "60s")
    assert result.returncode == 0, describe(result)
    assert set(times(log)) == {"child", "grandchild"}  # only what was needed ran again
    status = json.loads(jobctl.look("workflow", "status", str(workflow_id), "-o", "json"))
    assert status["state"] == "succeeded"
    listed = json.loads(jobctl.look("workflow", "list", "-o", "json"))
    assert [w["id"] for w in listed] == [workflow_id]


def test_invalid_workflow_files_write_nothing(jobctl: Jobctl, tmp_path: Path) -> None:
    for text, where in [
        ("[tasks.a]\ncommand = 'x'\nneeds = ['b']\n[tasks.b]\ncommand = 'y'\nneeds = ['a']\n",
         ":3: tasks.a.needs: a cycle: a -> b -> a"),
        ("[tasks.a]\ncommand = 'x'\nneeds = ['zz']\n", ":3: tasks.a.needs: unknown task 'zz'"),
        ("[tasks.a]\ncommand = 'x'\n[tasks.a]\ncommand = 'x'\n", ":3: duplicate task 'a'"),
        ("[tasks.a]\ncommand = 'x'\nqueu = 'q'\n", ":3: tasks.a: unknown key 'queu'"),
        ("[tasks.a\ncommand = 'x'\n", ":1: invalid TOML"),
    ]:
        path = tmp_path / "bad.toml"
        path.write_text(text)
        result = jobctl("workflow", "run", str(path))
        assert result.returncode == 2, describe(result)
        assert result.stderr.startswith(f"jobctl: error: {path}{where}"), result.stderr
        assert result.stderr.count("\n") == 1
    assert jobctl.look("workflow", "list", "-o", "json").strip() == "[]"
    assert jobctl.look("job", "list", "-o", "json").strip() == "[]"


def test_bulk_submit_and_after(jobctl: Jobctl, tmp_path: Path) -> None:
    lines = ["# a comment", ""] + [f"echo {i}" for i in range(10_000)]
    result = jobctl("job", "submit", "--from-file", "-", "--queue", "bulk",
                    input="\n".join(lines).encode())
    assert result.returncode == 0, describe(result)
    ids = [int(line) for line in result.stdout.split()]
    assert len(ids) == 10_000 and ids == sorted(ids) and len(set(ids)) == 10_000
    first = jobctl.status(ids[0])
    assert first["argv"] == ["/bin/sh", "-c", "echo 0"] and first["queue"] == "bulk"
    assert jobctl.status(ids[-1])["argv"] == ["/bin/sh", "-c", "echo 9999"]

    bad = "echo ok\necho \xff\n".encode("latin-1")
    result = jobctl("job", "submit", "--from-file", "-", input=bad)
    assert result.returncode == 2 and "-:2:" in result.stderr, describe(result)
    listed = json.loads(jobctl.look("job", "list", "--limit", "0", "-o", "json"))
    assert len(listed) == 10_000

    result = jobctl("job", "submit", "--after", f"{ids[0]},99999999", "--", "true")
    assert result.returncode == 3 and "99999999" in result.stderr, describe(result)

    first_job = jobctl.submit("--queue", "x", "--", "true")
    second = jobctl.submit("--queue", "x", "--after", str(first_job), "--", "true")
    assert jobctl.status(second)["state"] == "waiting"
    status = jobctl.status(second)
    assert status["waits_for"] == [{"id": first_job, "condition": "ok", "state": "queued"}]
    assert jobctl.status(first_job)["needed_by"][0]["id"] == second
    jobctl.burst("--queue", "x")
    assert jobctl.status(second)["state"] == "succeeded"
