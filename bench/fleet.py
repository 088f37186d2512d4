#!/usr/bin/env python3
"""A fleet on one host: W worker processes x S slots on one PostgreSQL, jobs of `sleep 0.2`.

    python bench/fleet.py [--workers 32] [--slots 8] [--jobs-per-slot 10] [--deep 1000000]

Starts a throwaway cluster (tests/pgcluster.py, durable settings, max_connections 300), then in
the same run, each on a fresh database:
  * the small fleet (4 workers x S slots) and the big one (W x S), each draining
    jobs-per-slot x slots jobs `sh -c 'date +%s.%N; sleep 0.2'`; printed: throughput against
    the ideal (slots / 0.2 s), p50/p99 claim-to-start (the job's own first output line, its
    start, minus `started_at`, its claim, one host's clock; a job claimed into a worker's
    read-ahead buffer waits there for a slot, and that wait counts), the most connections in
    use (pg_stat_activity, sampled every 0.2 s) and the primary's CPU (its processes' user +
    system seconds, the exited backends' included, per wall second);
  * the claim's time (one hot-path claim of S jobs, in this process, median of 20) behind
    1,000 queued jobs and behind --deep queued jobs (submitted with `job submit --from-file`).
On 2 cores the big fleet is CPU-bound (W Python workers and the jobs' processes): the ideal is
what the slots could do, not what the machine can.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pgcluster import PgCluster  # noqa: E402
from toolenv import tool_env  # noqa: E402

JOBCTL = str(Path(sys.executable).parent / "jobctl")
SETTINGS = {"listen_addresses": "'127.0.0.1'", "max_connections": "300"}
SLEEP_S = 0.2
COMMAND = f"date +%s.%N; sleep {SLEEP_S}"


def primary_cpu_s(cluster: PgCluster) -> float:
    """User + system seconds of the cluster's postmaster, its live children and its reaped ones."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def drain(cluster: PgCluster, name: str, workers: int, slots: int, jobs: int) -> str:
    import psycopg

    url = cluster.create_database(name)
    env = tool_env(JOBCTL_DATABASE_URL=url)
    subprocess.run([JOBCTL, "db", "upgrade"], env=env, check=True, capture_output=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as job_file:
        job_file.write(f"{COMMAND}\n" * jobs)
        job_file.flush()
        subprocess.run([JOBCTL, "job", "submit", "--queue", "fleet", "--hold", "--from-file",
                        job_file.name], env=env, check=True, capture_output=True)
    plain = url.replace("+psycopg", "")
    processes = [subprocess.Popen([JOBCTL, "worker", "start", "--queue", "fleet",
                                   "--concurrency", str(slots), "--name", f"w{n}", "--quiet"],
                                  env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
                 for n in range(workers)]
    most = [0]
    done = threading.Event()

    def sample() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            while not done.wait(0.2):
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                   (name,)).fetchone()
                most[0] = max(most[0], int(row[0]) if row else 0)

    with psycopg.connect(plain, autocommit=True) as conn:
        while (row := conn.execute("SELECT count(*) FROM workers WHERE state = 'running'")
               .fetchone()) and int(row[0]) < workers:
            time.sleep(0.2)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu_before, started = primary_cpu_s(cluster), time.monotonic()
        conn.execute("UPDATE jobs SET held = false")  # all at once, as one release
        conn.execute("NOTIFY jobctl_jobs, 'fleet'")
        while (row := conn.execute("SELECT count(*) FROM jobs WHERE state <> 'succeeded'")
               .fetchone()) and int(row[0]) > 0:
            time.sleep(0.1)
        wall, cpu = time.monotonic() - started, primary_cpu_s(cluster) - cpu_before
        done.set()
        rows = conn.execute("""
            SELECT extract(epoch FROM j.started_at), extract(epoch FROM j.finished_at),
                   convert_from(l.data, 'UTF8')
            FROM jobs j JOIN job_logs l ON l.job_id = j.id AND l.attempt = j.attempt
                                       AND l.seq = 0""").fetchall()
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(60)
    first = min(float(start) for start, _, _ in rows)
    last = max(float(end) for _, end, _ in rows)
    delays_ms = sorted((float(out.split()[0]) - float(start)) * 1000 for start, _, out in rows)
    p99 = delays_ms[min(len(delays_ms) - 1, int(len(delays_ms) * 0.99))]
    ideal = workers * slots / SLEEP_S
    rate = len(rows) / (last - first)
    return (f"{workers:>3} workers x {slots} slots  {len(rows):>6} jobs  {rate:7.0f} jobs/s "
            f"(ideal {ideal:.0f}, {rate / ideal:5.1%})  claim-to-start p50 "
            f"{statistics.median(delays_ms):6.1f} ms p99 {p99:7.1f} ms  connections "
            f"{most[0]:>3}  primary CPU {cpu / wall:4.2f} s/s")


def claim_ms(cluster: PgCluster, name: str, depth: int, slots: int) -> float:
    from jobctl.store import queue
    from jobctl.store import workers as worker_rows
    from jobctl.store.direct import open_or_create

    url = cluster.create_database(name)
    env = tool_env(JOBCTL_DATABASE_URL=url)
    subprocess.run([JOBCTL, "db", "upgrade"], env=env, check=True, capture_output=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as job_file:
        job_file.write("true\n" * depth)
        job_file.flush()
        subprocess.run([JOBCTL, "job", "submit", "--queue", "deep", "--from-file",
                        job_file.name], env=env, check=True, capture_output=True)
    database = open_or_create(url)
    with database.write() as conn:
        conn.execute("ANALYZE jobs")
        worker = worker_rows.register(conn, name="bench", hostname="bench", pid=1,
                                      queues=["deep"], concurrency=slots, version="bench")
    times = []
    for _ in range(20):
        started = time.perf_counter()
        with database.turn() as conn:
            claimed = queue.claim(conn, worker, queue.Claim(["deep"], slots, 60.0))
        times.append((time.perf_counter() - started) * 1000)
        assert len(claimed) == slots
    database.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--jobs-per-slot", type=int, default=10)
    parser.add_argument("--deep", type=int, default=1_000_000)
    args = parser.parse_args()
    cluster = PgCluster(settings=SETTINGS).start()
    try:
        for n, workers in enumerate((4, args.workers)):
            print(drain(cluster, f"fleet{n}", workers, args.slots,
                        workers * args.slots * args.jobs_per_slot), flush=True)
        shallow = claim_ms(cluster, "shallow", 1_000, args.slots)
        deep = claim_ms(cluster, "deep", args.deep, args.slots)
        print(f"claim of {args.slots}: {shallow:.2f} ms behind 1,000 queued jobs, {deep:.2f} ms "
              f"behind {args.deep:,} ({deep / shallow:.2f}x)")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
