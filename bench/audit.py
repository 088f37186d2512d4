#!/usr/bin/env python3
"""What the audit trail's triggers (migration 0012) cost the worker's hot path: the claim and
completion of another's jobs, with the triggers and without, on the same database.

    python bench/audit.py [--jobs 2000] [--rounds 5] [--sqlite]

Each round submits N jobs (`true`, owned by another role, so that the trigger's WHEN clause is
evaluated in full), then a worker claims them 16 at a time and completes each batch as it
claims the next (`complete_and_claim`, the worker's turn), half of them failing into a retry
(running → queued: the update that comes nearest to what the trigger records). Rounds alternate
between the triggers in place and dropped (the "before": the schema of 0011 for these tables),
on a throwaway PostgreSQL cluster (tests/pgcluster.py) or, with --sqlite, a file. Prints the
median turn time of each and the difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from jobctl.models import JobSpec, JobState  # noqa: E402
from jobctl.store import jobs, queue  # noqa: E402
from jobctl.store import workers as worker_rows  # noqa: E402
from jobctl.store.direct import DirectDatabase, open_or_create  # noqa: E402
from jobctl.store.queue import Claim, Outcome  # noqa: E402

BATCH = 16


def triggers(database: DirectDatabase, present: bool) -> None:
    """The audit triggers on the tables the hot path writes: in place, or dropped."""
    postgresql = database.backend.title == "PostgreSQL"
    if postgresql:
        from jobctl.store.postgres import audit
        statements = ([audit.JOB_TRIGGER, audit.WORKER_TRIGGER, *audit.QUEUE_TRIGGERS]
                      if present else audit.DROP[:6])
    else:
        from jobctl.store.sqlite import audit  # type: ignore[no-redef]
        statements = ([audit.JOB_TRIGGER, audit.WORKER_TRIGGER, *audit.QUEUE_TRIGGERS]
                      if present else audit.DROP[:8])
    with database.write() as conn:
        for statement in statements:
            conn.execute(statement)


def seed(database: DirectDatabase, count: int) -> None:
    postgresql = database.backend.title == "PostgreSQL"
    with database.write() as conn:
        conn.execute("DELETE FROM attempts")
        conn.execute("DELETE FROM jobs")
        jobs.submit_many(conn, [JobSpec(argv=["true"], retries=1, backoff_s=3600.0)
                                for _ in range(count)])
        if postgresql:
            conn.execute("ALTER TABLE jobs DISABLE TRIGGER jobs_keep_submitter")
        conn.execute("UPDATE jobs SET submitted_by = 'someone-else'")
        if postgresql:
            conn.execute("ALTER TABLE jobs ENABLE TRIGGER jobs_keep_submitter")


def drain(database: DirectDatabase, worker: int) -> list[float]:
    """Turn after turn until nothing is left to claim; each turn's time."""
    times: list[float] = []
    running: list[queue.ClaimedJob] = []
    while True:
        outcomes = [Outcome(job.id, job.attempt,
                            JobState.QUEUED if job.id % 2 else JobState.SUCCEEDED,
                            "failed" if job.id % 2 else "succeeded", job.id % 2, None, None,
                            retry_delay_s=3600.0, has_dependents=False) for job in running]
        started = time.perf_counter()
        with database.turn() as conn:
            _, running = queue.complete_and_claim(conn, worker, outcomes,
                                                  Claim(["default"], BATCH, 60.0))
        times.append(time.perf_counter() - started)
        if not running:
            return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cluster = None
        if args.sqlite:
            url = f"sqlite:///{folder}/bench.db"
        else:
            from pgcluster import PgCluster

            cluster = PgCluster().start()
            url = cluster.create_database("bench_audit")
        try:
            database = open_or_create(url)
            with database.write() as conn:
                worker = worker_rows.register(conn, name="bench", hostname="h", pid=1,
                                              queues=["default"], concurrency=BATCH,
                                              version="bench")
            figures: dict[bool, list[float]] = {True: [], False: []}
            present = True
            for round_ in range(2 * args.rounds):
                with_triggers = round_ % 2 == 0
                if with_triggers != present:
                    triggers(database, with_triggers)
                    present = with_triggers
                seed(database, args.jobs)
                figures[with_triggers].append(statistics.median(drain(database, worker)))
            with database.read() as conn:
                rows = conn.scalar("SELECT count(*) FROM audit")
            backend = database.backend.title
            database.close()
        finally:
            if cluster is not None:
                cluster.stop()
    before = statistics.median(figures[False])
    after = statistics.median(figures[True])
    print(f"{backend}: {args.jobs} jobs a round, turns of {BATCH} (complete the last batch, "
          f"claim the next), {args.rounds} rounds each, medians")
    print(f"  without the audit triggers: {before * 1000:.3f} ms a turn")
    print(f"  with them:                  {after * 1000:.3f} ms a turn "
          f"({(after - before) / before:+.1%})")
    print(f"  audit rows written by the worker: {rows}")


if __name__ == "__main__":
    main()
