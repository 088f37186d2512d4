#!/usr/bin/env python3
"""Schedule lateness: N schedules firing every second, under one scheduler and under three.

    python bench/schedule_lateness.py [--schedules 1000] [--duration 60] [--database-url URL]

PostgreSQL: JOBCTL_DATABASE_URL or --database-url (a database per run is created beside it
when the server allows; else the given one is emptied), by default a throwaway cluster
(tests/pgcluster.py). For each run, N schedules `--every 1s --misfire all --overlap allow`
start together a few seconds ahead and end `--duration` seconds later; real
`jobctl scheduler run` processes fire them (no workers: jobs stay queued). Then, from the
database:

  * lateness = job created_at - fire_time: p50, p99, max;
  * the schedulers' CPU (user + system, from wait4's rusage) as a share of one core;
  * every (schedule, second) has exactly one job (checked, not assumed).

Baseline, in the same run: a plain loop that wakes at each whole second and inserts N jobs
in one transaction (`Client.submit_many`): the floor for "N jobs a second into this database".
Target (issue 5): p99 under 500 ms with 1,000 schedules on PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pgcluster import PgCluster, PgServer  # noqa: E402

JOBCTL = str(Path(sys.executable).parent / "jobctl")
SETTINGS = {"listen_addresses": "'127.0.0.1'", "max_connections": "200"}
LEAD_S = 10.0  # schedules start this far ahead of their creation (1,000 take seconds to add)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fresh_database(server: PgServer | None, url: str) -> str:
    """A new database on our own cluster; on a given server, its bench rows removed."""
    if server is not None:
        return server.create_database(f"bench_{uuid.uuid4().hex[:10]}")
    import sqlalchemy as sa

    from jobctl.store.engine import Database
    from jobctl.store.schema import jobs, schedules

    db = Database(url)
    db.ensure_schema()
    with db.write() as connection:
        ids = sa.select(schedules.c.id).where(schedules.c.name.like("bench-%"))
        connection.execute(sa.delete(jobs).where(jobs.c.schedule_id.in_(ids)))
        connection.execute(sa.delete(schedules).where(schedules.c.name.like("bench-%")))
    db.dispose()
    return url


def run_schedulers(url: str, schedules: int, duration: int, scheduler_count: int,
                   folder: Path) -> dict[str, float]:
    from jobctl.client import Client
    from jobctl.models import JobSpec, Misfire, Overlap, ScheduleDefinition
    from jobctl.store.engine import Database

    db = Database(url)
    db.ensure_schema()
    env = {**os.environ, "JOBCTL_DATABASE_URL": url}
    processes = []
    logs = []
    began = time.monotonic()
    for n in range(scheduler_count):
        logs.append(folder / f"scheduler-{scheduler_count}-{n}.log")
        with logs[-1].open("wb") as log:
            processes.append(subprocess.Popen([JOBCTL, "scheduler", "run"], env=env,
                                              stdout=log, stderr=log))
    # Started (and idle: no schedules yet) before the first fire time, so that start-up is
    # not counted as lateness; adding the schedules wakes them (NOTIFY).
    while not all(" started " in path.read_text() for path in logs):
        time.sleep(0.1)
    start = (datetime.now(UTC) + timedelta(seconds=LEAD_S)).replace(microsecond=0)
    end = start + timedelta(seconds=duration - 1)
    Client(database=db).add_schedules([
        ScheduleDefinition(name=f"bench-{n:04d}", job=JobSpec(argv=["true"]), every_s=1.0,
                           start_at=start, end_at=end, misfire=Misfire.ALL,
                           overlap=Overlap.ALLOW)
        for n in range(schedules)])
    time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds() + 3))
    cpu_s = 0.0
    for process in processes:
        process.send_signal(signal.SIGTERM)
        _, _status, usage = os.wait4(process.pid, 0)
        cpu_s += usage.ru_utime + usage.ru_stime
    lived_s = time.monotonic() - began
    result = measure(db, schedules, duration, start)
    db.dispose()
    # CPU over the schedulers' lives (start-up and the idle seconds around the window included).
    result["cpu_share"] = cpu_s / lived_s
    return result


def measure(db: object, schedules: int, duration: int, start: datetime) -> dict[str, float]:
    import sqlalchemy as sa

    from jobctl.store.schema import jobs

    with db.read() as connection:  # type: ignore[attr-defined]
        rows = connection.execute(
            sa.select(jobs.c.schedule_id, jobs.c.fire_time, jobs.c.created_at)
            .where(jobs.c.schedule_id.isnot(None))).all()
    seen = {(row.schedule_id, row.fire_time) for row in rows}
    expected = schedules * duration
    lateness = [(row.created_at - row.fire_time).total_seconds() for row in rows]
    return {"jobs": len(rows), "expected": expected, "distinct": len(seen),
            "p50": percentile(lateness, 0.5), "p99": percentile(lateness, 0.99),
            "max": max(lateness)}


def baseline(url: str, schedules: int, duration: int) -> dict[str, float]:
    """Wake at each whole second, insert N jobs in one transaction; lateness as above."""
    import sqlalchemy as sa

    from jobctl.client import Client
    from jobctl.models import JobSpec
    from jobctl.store.engine import Database
    from jobctl.store.schema import jobs

    db = Database(url)
    db.ensure_schema()
    client = Client(database=db)
    second = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    lateness: list[float] = []
    cpu_before = time.process_time()
    for _ in range(duration):
        time.sleep(max(0.0, (second - datetime.now(UTC)).total_seconds()))
        ids = client.submit_many([JobSpec(argv=["true"]) for _ in range(schedules)])
        with db.read() as connection:
            created = connection.execute(sa.select(jobs.c.created_at)
                                         .where(jobs.c.id.in_(ids))).scalars().all()
        lateness.extend((c - second).total_seconds() for c in created)
        second += timedelta(seconds=1)
    cpu = time.process_time() - cpu_before
    db.dispose()
    return {"p50": percentile(lateness, 0.5), "p99": percentile(lateness, 0.99),
            "max": max(lateness), "cpu_share": cpu / duration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=60, help="seconds of fire times")
    parser.add_argument("--schedulers", default="1,3", help="scheduler counts to run")
    parser.add_argument("--database-url", default=os.environ.get("JOBCTL_DATABASE_URL"))
    args = parser.parse_args()

    cluster: PgCluster | None = None
    server: PgServer | None = None
    if args.database_url:
        base_url = args.database_url
    else:
        cluster = PgCluster(settings=SETTINGS).start()
        server = cluster
        base_url = ""
    try:
        with tempfile.TemporaryDirectory() as folder:
            print(f"{args.schedules} schedules every second for {args.duration}s, PostgreSQL; "
                  f"{os.cpu_count()} CPUs")
            base = baseline(fresh_database(server, base_url), args.schedules, args.duration)
            print(f"baseline (one loop, {args.schedules} jobs a second in one transaction): "
                  f"lateness p50 {base['p50'] * 1000:.0f} ms, p99 {base['p99'] * 1000:.0f} ms, "
                  f"max {base['max'] * 1000:.0f} ms, CPU {base['cpu_share'] * 100:.0f} % of a "
                  "core")
            for count in (int(c) for c in args.schedulers.split(",")):
                url = fresh_database(server, base_url)
                result = run_schedulers(url, args.schedules, args.duration, count, Path(folder))
                ok = result["jobs"] == result["distinct"] == result["expected"]
                print(f"{count} scheduler(s): lateness p50 {result['p50'] * 1000:.0f} ms, "
                      f"p99 {result['p99'] * 1000:.0f} ms, max {result['max'] * 1000:.0f} ms; "
                      f"schedulers' CPU {result['cpu_share'] * 100:.0f} % of a core; "
                      f"{result['jobs']:.0f} jobs of {result['expected']:.0f} expected "
                      f"({'exactly one per second' if ok else 'MISMATCH'})")
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
