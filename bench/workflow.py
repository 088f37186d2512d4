#!/usr/bin/env python3
"""Dependency hand-off latency on PostgreSQL: how long from a task ending to its dependent
starting, on idle workers, measured from timestamps the tasks write themselves.

    python bench/workflow.py [--chain 500] [--fanout 500] [--concurrency 8]

  * chain: t0 → t1 → … → tN-1 (each needs the previous): gap = start(ti) - end(ti-1);
  * fan-out: one root, N children needing it: gap = start(child) - end(root) (children queue
    for the worker's slots, so the median includes that wait; the first is the hand-off alone).
Baseline in the same run: a single job's submit-to-start latency on the same idle worker
(`job submit` → its own start stamp, CLI start-up not counted: created_at is the DB's).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pgcluster import PgCluster  # noqa: E402
from toolenv import tool_env  # noqa: E402

JOBCTL = str(Path(sys.executable).parent / "jobctl")


def jobctl(env: dict[str, str], *args: str) -> str:
    return subprocess.run([JOBCTL, *args], env=env, check=True, capture_output=True,
                          text=True).stdout


def stamps(log: Path) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        name, event, when = line.split()
        found.setdefault(name, {})[event] = float(when)
    return found


def task(log: Path, name: str, needs: list[str]) -> str:
    command = (f'echo "{name} start $(date +%s.%N)" >> {log}; '
               f'echo "{name} end $(date +%s.%N)" >> {log}')
    return f"[tasks.{name}]\ncommand = {json.dumps(command)}\nneeds = {json.dumps(needs)}\n"


def run(env: dict[str, str], folder: Path, name: str, tasks: list[str]) -> None:
    path = folder / f"{name}.toml"
    path.write_text(f'[workflow]\nname = "{name}"\n' + "\n".join(tasks))
    workflow_id = jobctl(env, "workflow", "run", str(path)).strip()
    subprocess.run([JOBCTL, "workflow", "wait", workflow_id, "--timeout", "600s"], env=env,
                   check=True)


def ms(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:7.1f} ms, p95 "
            f"{sorted(values)[int(len(values) * 0.95)] * 1000:7.1f} ms, min "
            f"{min(values) * 1000:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=500)
    parser.add_argument("--fanout", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    cluster = PgCluster().start()
    worker = None
    try:
        url = cluster.create_database("bench_workflow")
        env = tool_env(JOBCTL_DATABASE_URL=url)
        jobctl(env, "db", "upgrade")
        worker = subprocess.Popen([JOBCTL, "worker", "start", "--concurrency",
                                   str(args.concurrency), "--quiet"], env=env,
                                  start_new_session=True)
        time.sleep(2)
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            log = folder / "single.log"
            single = []
            for i in range(args.samples):
                job_id = jobctl(env, "job", "submit", "--shell",
                                f'echo "s{i} start $(date +%s.%N)" >> {log}').strip()
                jobctl(env, "job", "wait", job_id)
                created = json.loads(jobctl(env, "job", "status", job_id, "-o", "json"))
                started = stamps(log)[f"s{i}"]["start"]
                single.append(started - datetime.fromisoformat(
                    created["created_at"].replace("Z", "+00:00")).timestamp())
                time.sleep(0.15)

            log = folder / "chain.log"
            run(env, folder, "chain", [task(log, f"t{i}", [f"t{i - 1}"] if i else [])
                                       for i in range(args.chain)])
            seen = stamps(log)
            chain = [seen[f"t{i}"]["start"] - seen[f"t{i - 1}"]["end"]
                     for i in range(1, args.chain)]

            log = folder / "fanout.log"
            run(env, folder, "fanout", [task(log, "root", [])] + [
                task(log, f"c{i}", ["root"]) for i in range(args.fanout)])
            seen = stamps(log)
            fan = [seen[f"c{i}"]["start"] - seen["root"]["end"] for i in range(args.fanout)]
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
        cluster.stop()
    print(f"PostgreSQL, one idle worker, concurrency {args.concurrency}:")
    print(f"  baseline: single job submit → start ({args.samples}): {ms(single)}")
    print(f"  chain of {args.chain}: task end → next task start:  {ms(chain)}")
    print(f"  fan-out 1 → {args.fanout}: root end → child start:     {ms(fan)}")


if __name__ == "__main__":
    main()
