#!/usr/bin/env python3
"""What `jobctl db prune` costs the rest of the cluster: writers' latency while it runs.

    python bench/prune.py [--jobs 50000] [--postgresql]

Seeds N finished jobs (one attempt and two 200-byte output chunks each) aged 40 days, then
prunes them twice on identical data: batched as `db prune` does (1,000 jobs per transaction) and,
as the baseline, in one transaction. Meanwhile a prober thread submits a job every 10 ms in a
write transaction of its own, as a client or worker would, and records how long each took.
Prints the prune's duration and the prober's median, p99 and worst latency for each.

SQLite by default (one writer at a time: a long transaction stalls every writer); with
--postgresql, on a throwaway cluster (tests/pgcluster.py), where row locks leave other writers
alone and the difference is the size of each transaction.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from jobctl.models import JobSpec  # noqa: E402
from jobctl.store import jobs, postgres, retention, sqlite  # noqa: E402
from jobctl.store.direct import DirectDatabase, open_or_create  # noqa: E402


def seed(database: DirectDatabase, count: int) -> None:
    """`count` jobs that succeeded 40 days ago, with an attempt and two output chunks each:
    submitted by the store, then finished and aged in plain SQL of the database's backend."""
    postgresql = database.backend.title == "PostgreSQL"
    aged = (postgres.now_plus if postgresql else sqlite.now_plus)(str(-40 * 86_400.0))
    data = "decode(repeat('78', 200), 'hex')" if postgresql else "zeroblob(200)"
    with database.write() as conn:
        conn.execute("DELETE FROM jobs")
    for start in range(0, count, 5000):
        size = min(5000, count - start)
        with database.write() as conn:
            ids = jobs.submit_many(conn, [JobSpec(argv=["true"], name=f"old-{start + i}")
                                          for i in range(size)])
            these = f"id IN ({', '.join(str(int(i)) for i in ids)})"
            conn.execute(f"UPDATE jobs SET state = 'succeeded', attempt = 1, exit_code = 0, "
                         f"started_at = {aged}, finished_at = {aged} WHERE {these}")
            conn.execute("INSERT INTO attempts (job_id, attempt, outcome, started_at) "
                         f"SELECT id, 1, 'succeeded', started_at FROM jobs WHERE {these}")
            conn.execute("INSERT INTO job_logs (job_id, attempt, stream, seq, ts, data) "
                         f"SELECT id, 1, 'stdout', s.seq, started_at, {data} FROM jobs "
                         f"CROSS JOIN (SELECT 0 AS seq UNION ALL SELECT 1) s WHERE {these}")


class Prober(threading.Thread):
    """Submits a job every 10 ms and records each write transaction's latency (on the driver
    road, as clients and workers do)."""

    def __init__(self, database: DirectDatabase) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            started = time.perf_counter()
            with self.database.write() as conn:
                jobs.submit(conn, JobSpec(argv=["true"], queue="probe"))
            self.latencies.append(time.perf_counter() - started)


def measure(database: DirectDatabase, count: int,
            batch: int) -> tuple[float, list[float], int]:
    seed(database, count)
    # Pruning and probing on the driver road, each on a connection of its own, as in production.
    pruner, probe = database.clone(), database.clone()
    prober = Prober(probe)
    prober.start()
    time.sleep(0.3)
    started = time.perf_counter()
    pruned = retention.prune(pruner, 30 * 86_400.0, batch=batch)
    took = time.perf_counter() - started
    time.sleep(0.3)
    prober.stop.set()
    prober.join()
    pruner.close()
    probe.close()
    return took, prober.latencies, pruned.jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--postgresql", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cluster = None
        if args.postgresql:
            from pgcluster import PgCluster

            cluster = PgCluster().start()
            url = cluster.create_database("bench_prune")
        else:
            url = f"sqlite:///{folder}/bench.db"
        database = open_or_create(url)  # created and migrated, as on first use
        try:
            backend = "PostgreSQL" if args.postgresql else "SQLite"
            print(f"{backend}, {args.jobs} finished jobs, 1 attempt and 2 output chunks each; "
                  "a prober submits a job every 10 ms meanwhile")
            print(f"{'prune':<28} {'took':>8} {'jobs/s':>9} {'probes':>7} {'median':>9} "
                  f"{'p99':>9} {'worst':>9}")
            for label, batch in (("batched (1,000 per txn)", retention.BATCH),
                                 ("one transaction (baseline)", args.jobs + 1)):
                took, latencies, pruned = measure(database, args.jobs, batch)
                assert pruned == args.jobs, pruned
                ordered = sorted(latencies)
                p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
                print(f"{label:<28} {took:>7.2f}s {pruned / took:>9.0f} {len(ordered):>7} "
                      f"{statistics.median(ordered) * 1000:>7.1f}ms {p99 * 1000:>7.1f}ms "
                      f"{ordered[-1] * 1000:>7.1f}ms")
        finally:
            database.close()
            if cluster is not None:
                cluster.stop()


if __name__ == "__main__":
    main()
