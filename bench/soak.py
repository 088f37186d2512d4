#!/usr/bin/env python3
"""Throughput of a soak with and without chaos, in one run.

    python bench/soak.py [--jobs 1000] [--workers 3] [--concurrency 4] [--kill-every 2.5]

On a throwaway PostgreSQL cluster (tests/pgcluster.py, default durability): `--workers` workers
(concurrency `--concurrency`, lease 3 s, rescue every 1 s) drain `--jobs` jobs, half at-least-once
and half at-most-once, each sleeping 0-300 ms. Once calmly, once while a chaos loop `kill -9`s a
random worker every `--kill-every` seconds and starts a new one. Prints jobs/s for both, the ratio,
and how the jobs ended (at-most-once jobs of a killed worker end `lost`; that is the guarantee).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pgcluster import PgCluster  # noqa: E402

JOBCTL = str(Path(sys.executable).parent / "jobctl")
DURABLE = {"listen_addresses": "'127.0.0.1'", "max_connections": "200"}
FINAL = {"succeeded", "failed", "cancelled", "lost"}


def jobctl(env: dict[str, str], *args: str) -> str:
    return subprocess.run([JOBCTL, *args], env=env, check=True, capture_output=True,
                          text=True).stdout


def start_worker(env: dict[str, str], concurrency: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [JOBCTL, "worker", "start", "--queue", "soak", "--concurrency", str(concurrency),
         "--lease", "3s", "--rescue-interval", "1s", "--grace", "1s", "--quiet"],
        env=env, start_new_session=True, stderr=subprocess.DEVNULL)


def states(env: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in json.loads(jobctl(env, "job", "list", "--queue", "soak", "--limit", "0",
                                 "-o", "json")):
        counts[job["state"]] = counts.get(job["state"], 0) + 1
    return counts


def soak(env: dict[str, str], folder: Path, options: argparse.Namespace,
         chaos: bool) -> tuple[float, dict[str, int], int]:
    rng = random.Random(7)
    for delivery in ("at-least-once", "at-most-once"):
        lines = [f"sleep 0.{rng.randint(0, 300):03d}" for _ in range(options.jobs // 2)]
        job_file = folder / f"{delivery}.txt"
        job_file.write_text("\n".join(lines) + "\n")
        jobctl(env, "job", "submit", "--queue", "soak", "--delivery", delivery,
               "--retries", "5", "--from-file", str(job_file))
    workers = [start_worker(env, options.concurrency) for _ in range(options.workers)]
    kills = 0
    started = time.monotonic()
    next_kill = started + options.kill_every
    try:
        while True:
            counts = states(env)
            if sum(n for state, n in counts.items() if state in FINAL) >= options.jobs:
                break
            if time.monotonic() - started > 600:
                raise SystemExit(f"soak did not finish: {counts}")
            if chaos and time.monotonic() >= next_kill:
                victim = workers.pop(rng.randrange(len(workers)))
                victim.kill()
                victim.wait()
                kills += 1
                workers.append(start_worker(env, options.concurrency))
                next_kill = time.monotonic() + options.kill_every
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.wait(30)
    return options.jobs / elapsed, counts, kills


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=2.5)
    options = parser.parse_args()
    cluster = PgCluster(settings=DURABLE).start()
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for chaos in (False, True):
                url = cluster.create_database("calm" if not chaos else "chaos")
                # JOBCTL_ALLOW_ROOT: a root worker on PostgreSQL refuses to start without it.
                env = {**os.environ, "JOBCTL_DATABASE_URL": url, "JOBCTL_ALLOW_ROOT": "1"}
                jobctl(env, "db", "upgrade")
                results[chaos] = soak(env, Path(tmp), options, chaos)
    finally:
        cluster.stop()
    calm, chaotic = results[False], results[True]
    print(f"{options.jobs} jobs (half at-most-once), {options.workers} workers x "
          f"{options.concurrency}, 0-300 ms each")
    print(f"  without chaos  {calm[0]:7.1f} jobs/s   {calm[1]}")
    print(f"  with chaos     {chaotic[0]:7.1f} jobs/s   {chaotic[1]}   ({chaotic[2]} kill -9)")
    print(f"  ratio          {chaotic[0] / calm[0]:.2f}")


if __name__ == "__main__":
    main()
