#!/usr/bin/env python3
"""Throughput and latency of one jobctl worker on PostgreSQL, beside xargs in the same run.

    python bench/throughput.py [--jobs 5000] [--concurrency 8] [--latency-samples 30]

Starts a throwaway PostgreSQL cluster with default durability (tests/pgcluster.py), then:
  * xargs: `seq N | xargs -P C -n 1 true`: spawning alone, no queue (the limit on this machine);
  * jobctl drain: N jobs running `true` submitted with `job submit --from-file`, drained by
    `jobctl worker start --concurrency C --burst` (its start-up and shut-down included);
  * jobctl latency: K single jobs submitted to an idle worker, each `sh -c 'date +%s.%N >> F'`;
    latency = the job's own start time minus its created_at (CLI start-up not counted).
Prints each figure and jobctl's rate as a fraction of xargs's.
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
DURABLE = {"listen_addresses": "'127.0.0.1'", "max_connections": "200"}


def jobctl(env: dict[str, str], *args: str) -> str:
    return subprocess.run([JOBCTL, *args], env=env, check=True, capture_output=True,
                          text=True).stdout


def xargs_rate(jobs: int, concurrency: int) -> float:
    started = time.perf_counter()
    subprocess.run(f"seq {jobs} | xargs -P {concurrency} -n 1 true", shell=True, check=True)
    return jobs / (time.perf_counter() - started)


def drain_rate(env: dict[str, str], folder: Path, jobs: int, concurrency: int,
               db_url: str) -> tuple[float, float]:
    job_file = folder / "jobs.txt"
    job_file.write_text("true\n" * jobs)
    started = time.perf_counter()
    jobctl(env, "job", "submit", "--queue", "bench", "--from-file", str(job_file))
    enqueue = jobs / (time.perf_counter() - started)
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as connection:  # as the peers harness does
        connection.execute("ANALYZE")
        connection.execute("CHECKPOINT")
    started = time.perf_counter()
    jobctl(env, "worker", "start", "--queue", "bench", "--concurrency", str(concurrency),
           "--burst", "--quiet")
    drain = jobs / (time.perf_counter() - started)
    succeeded = jobctl(env, "job", "list", "--queue", "bench", "--state", "succeeded",
                       "--limit", "0", "-o", "ids").split()
    if len(succeeded) != jobs:
        raise SystemExit(f"only {len(succeeded)} of {jobs} jobs succeeded")
    return enqueue, drain


def latencies(env: dict[str, str], folder: Path, samples: int) -> list[float]:
    worker = subprocess.Popen([JOBCTL, "worker", "start", "--queue", "latency", "--quiet"],
                              env=env, start_new_session=True)
    try:
        time.sleep(1.5)
        found: list[float] = []
        for index in range(samples + 1):  # the first one warms up and is not counted
            stamp = folder / f"start-{index}"
            job_id = jobctl(env, "job", "submit", "--queue", "latency", "--", "sh", "-c",
                            f"date +%s.%N > {stamp}").strip()
            jobctl(env, "job", "wait", "--timeout", "30s", job_id)
            status = json.loads(jobctl(env, "job", "status", job_id, "-o", "json"))
            created = datetime.fromisoformat(status["created_at"]).timestamp()
            if index:
                found.append((float(stamp.read_text()) - created) * 1000)
            time.sleep(0.15)
        return found
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-samples", type=int, default=30)
    options = parser.parse_args()
    cluster = PgCluster(settings=DURABLE).start()
    try:
        db_url = cluster.create_database("bench")
        env = tool_env(JOBCTL_DATABASE_URL=db_url)
        jobctl(env, "db", "upgrade")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            limit = xargs_rate(options.jobs, options.concurrency)
            enqueue, drain = drain_rate(env, folder, options.jobs, options.concurrency, db_url)
            waits = latencies(env, folder, options.latency_samples)
    finally:
        cluster.stop()
    print(f"N={options.jobs} C={options.concurrency} PostgreSQL, one worker, on {os.cpu_count()} "
          "cores")
    print(f"  xargs -P{options.concurrency}        {limit:8.0f} jobs/s   (the limit)")
    print(f"  jobctl submit --from-file {enqueue:8.0f} jobs/s   (whole CLI process)")
    print(f"  jobctl worker --burst     {drain:8.0f} jobs/s   {drain / limit:.2f} of xargs")
    print(f"  submit-to-start latency   p50 {statistics.median(waits):6.1f} ms   "
          f"p95 {statistics.quantiles(waits, n=20)[-1]:6.1f} ms   (K={len(waits)})")


if __name__ == "__main__":
    main()
