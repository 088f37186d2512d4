#!/usr/bin/env python3
"""What capacity control costs: the drain of N short jobs with no limits, with a queue cap and a
key limit, and with resources and tags; and the gated claim's time behind a deep keyed backlog.

    python bench/capacity.py [--jobs 5000] [--rounds 3] [--concurrency 8] [--turns 200]
                             [--variants plain,limits,resources] [--sqlite]

Starts a throwaway PostgreSQL cluster with default durability (tests/pgcluster.py), then:
  * drain: N jobs running `true`, submitted to queue q with `job submit --from-file` (the options
    apply to every line), drained by `jobctl worker start --queue q --concurrency C --burst` (its
    start-up and shut-down included), each drain on a fresh copy of a migrated database:
      plain      no limits: the baseline;
      limits     `queue set q --max-running C` and every job `--limit k=C`;
      resources  worker `--resources cpu=64,mem=64G --tag zone=eu`, every job
                 `--cpus 1 --mem 100M --require zone=eu`;
      (cap, key  the two halves of limits, run only when named in --variants);
    the variants alternate, in a rotated order, over --rounds drains each; the medians are
    printed, each as a fraction of plain's (issue 15's target: limits and resources within 10 %),
    and the submit's rate beside them. A warm-up drain of 50 jobs per variant is not counted; it
    also checks that `job status -o json` and `queue list -o json` show what was asked for.
  * claim: the time of one claim turn of `jobctl.store.capacity.claim_gated`, called in this
    process as a worker's turn calls it, offering the free slots of C, behind 1,000 queued jobs
    over 10 keys (`--limit key-i=1`, i = job % 10), 100,000 over 1,000 keys (i = job % 1000),
    and 100,000 over 1,000 keys in runs of 100 (i = job // 100: a key's jobs side by side);
    the jobs are submitted in-process (Client.submit_many: --from-file gives every line the same
    limits). After each claim the oldest half of the running jobs end, so claims run beside jobs
    holding keys. The backlogs take turns; the median and p95 per claim, the ratio to the
    1,000-job backlog ("stays flat": close to 1) and the jobs claimed per turn are printed.
With --sqlite both parts run on SQLite too (a fresh file each). The children run without
PYTHONDONTWRITEBYTECODE, so their start-up is that of an installed tool. A whole run takes about
2 minutes on 2 idle cores (under 3 with --sqlite).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pgcluster import PgCluster  # noqa: E402
from toolenv import tool_env  # noqa: E402

JOBCTL = str(Path(sys.executable).parent / "jobctl")
DURABLE = {"listen_addresses": "'127.0.0.1'", "max_connections": "200"}
QUEUE = "q"


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    queue_set: tuple[str, ...] = ()  # `jobctl queue set q …` before the submit
    submit: tuple[str, ...] = ()  # extra `job submit` options, for every job
    worker: tuple[str, ...] = ()  # extra `worker start` options


def variants(concurrency: int) -> list[Variant]:
    return [
        Variant("plain", "no limits (baseline)"),
        Variant("limits", f"queue cap {concurrency} + --limit k={concurrency}",
                queue_set=("--max-running", str(concurrency)),
                submit=("--limit", f"k={concurrency}")),
        Variant("resources", "resources + tags",
                submit=("--cpus", "1", "--mem", "100M", "--require", "zone=eu"),
                worker=("--resources", "cpu=64,mem=64G", "--tag", "zone=eu")),
        # Not run unless asked for (--variants): the two halves of `limits`.
        Variant("cap", f"queue cap {concurrency} alone",
                queue_set=("--max-running", str(concurrency))),
        Variant("key", f"--limit k={concurrency} alone", submit=("--limit", f"k={concurrency}")),
    ]


DEFAULT_VARIANTS = "plain,limits,resources"


def child_env(url: str) -> dict[str, str]:
    return tool_env(JOBCTL_DATABASE_URL=url)


def jobctl(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([JOBCTL, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"jobctl {' '.join(args)} exited {result.returncode}: "
                         f"{result.stderr.strip()[-500:]}")
    return result.stdout


# --- databases --------------------------------------------------------------------------------


class Databases:
    """Fresh migrated databases of one backend, one per drain (a drain leaves N finished jobs)."""

    name = ""

    def fresh(self, label: str) -> str:
        raise NotImplementedError

    def drop(self, url: str) -> None:
        raise NotImplementedError

    def settle(self, url: str) -> None:
        """Before the timed drain: what the peers harness does after a bulk load."""

    @contextmanager
    def database(self, label: str) -> Iterator[str]:
        url = self.fresh(label)
        try:
            yield url
        finally:
            self.drop(url)


class Postgres(Databases):
    name = "PostgreSQL"

    def __init__(self, cluster: PgCluster) -> None:
        self.cluster = cluster
        url = cluster.create_database("capacity_template")
        jobctl(child_env(url), "db", "upgrade")
        cluster.seal_template("capacity_template")

    def fresh(self, label: str) -> str:
        return self.cluster.create_database(label, template="capacity_template")

    def drop(self, url: str) -> None:
        self.cluster.drop_database(url.rsplit("/", 1)[1])

    def settle(self, url: str) -> None:
        import psycopg

        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("ANALYZE")
            connection.execute("CHECKPOINT")


class Sqlite(Databases):
    name = "SQLite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.template = folder / "template.db"
        jobctl(child_env(self.url(self.template)), "db", "upgrade")

    @staticmethod
    def url(path: Path) -> str:
        return f"sqlite:///{path}"

    def fresh(self, label: str) -> str:
        path = self.folder / f"{label}.db"
        shutil.copyfile(self.template, path)
        return self.url(path)

    def drop(self, url: str) -> None:
        path = Path(url.removeprefix("sqlite:///"))
        for leftover in (path, path.with_name(path.name + "-wal"),
                         path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)


# --- part 1: drains -----------------------------------------------------------------------------


def drain_rate(databases: Databases, label: str, variant: Variant, job_file: Path, jobs: int,
               concurrency: int, check: bool) -> tuple[float, float]:
    """Jobs per second of `job submit --from-file` and of one burst worker draining `jobs` jobs
    of `variant`, on a fresh database; with `check`, also that one job carries the variant's
    options."""
    with databases.database(label) as url:
        env = child_env(url)
        if variant.queue_set:
            jobctl(env, "queue", "set", QUEUE, *variant.queue_set)
        started = time.perf_counter()
        ids = jobctl(env, "job", "submit", "--queue", QUEUE, *variant.submit,
                     "--from-file", str(job_file)).split()
        if len(ids) != jobs:
            raise SystemExit(f"{variant.name}: submitted {len(ids)} jobs, not {jobs}")
        submitted = jobs / (time.perf_counter() - started)
        if check:
            check_variant(env, variant, ids[0], concurrency)
        databases.settle(url)
        started = time.perf_counter()
        jobctl(env, "worker", "start", "--queue", QUEUE, "--concurrency", str(concurrency),
               "--burst", "--quiet", *variant.worker)
        rate = jobs / (time.perf_counter() - started)
        succeeded = jobctl(env, "job", "list", "--queue", QUEUE, "--state", "succeeded",
                           "--limit", "0", "-o", "ids").split()
        if len(succeeded) != jobs:
            raise SystemExit(f"{variant.name}: only {len(succeeded)} of {jobs} jobs succeeded")
        return submitted, rate


def check_variant(env: dict[str, str], variant: Variant, job_id: str, concurrency: int) -> None:
    """The variant measures what it says: its job and queue carry the limits asked for."""
    status = json.loads(jobctl(env, "job", "status", job_id, "-o", "json"))
    expected_of: dict[str, dict[str, object]] = {
        "plain": {"limits": {}, "cpus": None, "mem_bytes": None, "requires": {}},
        "limits": {"limits": {"k": concurrency}},
        "resources": {"cpus": 1.0, "mem_bytes": 100 << 20, "requires": {"zone": "eu"}},
        "cap": {"limits": {}},
        "key": {"limits": {"k": concurrency}},
    }
    expected = expected_of[variant.name]
    wrong = {key: status.get(key) for key, value in expected.items() if status.get(key) != value}
    if wrong:
        raise SystemExit(f"{variant.name}: job {job_id} has {wrong}, expected {expected}")
    if variant.queue_set:
        queues = json.loads(jobctl(env, "queue", "list", "-o", "json"))
        row = next((queue for queue in queues if queue["name"] == QUEUE), None)
        if row is None or row["max_running"] != concurrency:
            raise SystemExit(f"{variant.name}: queue list shows {row}, expected max_running "
                             f"{concurrency}")


def drains(databases: Databases, folder: Path, jobs: int, concurrency: int, rounds: int,
           names: list[str]) -> dict[str, list[tuple[float, float]]]:
    job_file = folder / "jobs.txt"
    job_file.write_text("true\n" * jobs)
    kinds = [variant for variant in variants(concurrency) if variant.name in names]
    # Warm-up, not counted: writes the bytecode caches of every module a drain imports, and
    # checks each variant's options once.
    warm_file = folder / "warm.txt"
    warm_file.write_text("true\n" * 50)
    for variant in kinds:
        drain_rate(databases, f"warm_{variant.name}", variant, warm_file, 50, concurrency,
                   check=True)
    rates: dict[str, list[tuple[float, float]]] = {variant.name: [] for variant in kinds}
    for round_ in range(rounds):
        shift = round_ % len(kinds)
        for variant in kinds[shift:] + kinds[:shift]:
            rates[variant.name].append(drain_rate(databases, f"d_{variant.name}_{round_}",
                                                  variant, job_file, jobs, concurrency,
                                                  check=False))
    return rates


def print_drains(databases: Databases, rates: dict[str, list[tuple[float, float]]], jobs: int,
                 concurrency: int) -> None:
    kinds = {variant.name: variant for variant in variants(concurrency)}
    baseline = statistics.median(rate for _, rate in rates["plain"])
    submit_baseline = statistics.median(rate for rate, _ in rates["plain"])
    print(f"drain of {jobs:,} `true` jobs by one worker --concurrency {concurrency} --burst, "
          f"{databases.name}, median of {len(rates['plain'])} round(s), jobs/s "
          f"(submit: the whole `job submit --from-file` process)")
    print(f"  {'':34} {'drain':>6}  {'of plain':>8}  {'cost':>6}  {'target':6}  "
          f"{'each round':18}  {'submit':>6}  {'of plain':>8}")
    for name, found in rates.items():
        drain = statistics.median(rate for _, rate in found)
        submit = statistics.median(rate for rate, _ in found)
        each = " ".join(f"{rate:.0f}" for _, rate in found)
        cost, verdict = ("", "") if name == "plain" else (
            f"{1 - drain / baseline:6.0%}", "met" if drain >= 0.9 * baseline else "MISSED")
        print(f"  {kinds[name].label:34} {drain:6.0f}  {drain / baseline:8.1%}  {cost:>6}  "
              f"{verdict:6}  {each:18}  {submit:6.0f}  {submit / submit_baseline:8.1%}")
    print("  target (issue 15): each variant costs at most 10 % of plain's rate")


# --- part 2: claim time -------------------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    label: str
    queued: int
    keys: int
    runs: bool = False  # keys in runs (job j holds key j // (queued / keys)), not round robin

    def key(self, job: int) -> int:
        return job // (self.queued // self.keys) if self.runs else job % self.keys


def backlogs() -> list[Backlog]:
    return [
        Backlog("1,000 queued over 10 keys", 1_000, 10),
        Backlog("100,000 queued over 1,000 keys", 100_000, 1_000),
        Backlog("100,000 over 1,000 keys, in runs of 100", 100_000, 1_000, runs=True),
    ]


@dataclass
class ClaimTimes:
    seconds: list[float] = field(default_factory=list)  # of each counted claim turn
    claimed: int = 0  # jobs those turns claimed
    slots: int = 0  # slots they were offered


class Claimer:
    """A worker's gated claims behind `backlog` (every job `--limit key-i=1`) in a database of
    its own, made in this process on one connection as a worker's turn makes them: each turn
    calls `jobctl.store.capacity.claim_gated` with the free slots, then the oldest half of the
    running jobs end (recorded as a worker records them), so every claim runs beside jobs
    holding keys. Only the claim is timed."""

    def __init__(self, databases: Databases, backlog: Backlog, concurrency: int) -> None:
        import socket

        from jobctl.capacity import Resources
        from jobctl.client import Client
        from jobctl.models import JobSpec
        from jobctl.store import workers
        from jobctl.store.capacity import Gate
        from jobctl.store.direct import open_or_create

        self.databases = databases
        self.concurrency = concurrency
        self.url = databases.fresh(f"claim_{backlog.queued}_{backlog.keys}_{int(backlog.runs)}")
        client = Client(self.url)
        client.submit_many([JobSpec(argv=["true"], queue=QUEUE,
                                    limits={f"key-{backlog.key(job)}": 1})
                            for job in range(backlog.queued)])
        client.close()
        databases.settle(self.url)
        self.database = open_or_create(self.url)
        host = socket.gethostname()
        self.gate = Gate(host=host, resources=Resources(cpu=64.0, mem=64 << 30), tags={})
        with self.database.write() as conn:
            self.worker_id = workers.register(conn, name="bench-claim", hostname=host,
                                              pid=os.getpid(), queues=[QUEUE],
                                              concurrency=concurrency, version="bench")
        self.running: list[tuple[int, int]] = []
        self.times = ClaimTimes()

    def turn(self, counted: bool) -> None:
        from jobctl.models import JobState
        from jobctl.store import queue
        from jobctl.store.capacity import claim_gated

        free = self.concurrency - len(self.running)
        started = time.perf_counter()
        with self.database.turn() as conn:
            rows = claim_gated(conn, self.worker_id, [QUEUE], free, 60.0, self.gate, None,
                               False)
        elapsed = time.perf_counter() - started
        if counted:
            self.times.seconds.append(elapsed)
            self.times.claimed += len(rows)
            self.times.slots += free
        self.running += [(row["id"], row["attempt"]) for row in rows]
        half = self.concurrency // 2
        ending, self.running = self.running[:half], self.running[half:]
        with self.database.turn() as conn:
            queue.complete(conn, self.worker_id, [
                queue.Outcome(job_id=job_id, attempt=attempt, state=JobState.SUCCEEDED,
                              attempt_outcome="succeeded", exit_code=0, signal=None, error=None,
                              has_dependents=False)
                for job_id, attempt in ending])

    def close(self) -> None:
        self.database.close()
        self.databases.drop(self.url)


def claims(databases: Databases, concurrency: int, turns: int) -> list[tuple[Backlog, ClaimTimes]]:
    """Claim times behind each backlog; the backlogs take turns, one claim each in a row, so
    that whatever else the machine does meanwhile (autovacuum, a checkpoint) falls on all."""
    warm = 5
    claimers: list[tuple[Backlog, Claimer]] = []
    try:
        for backlog in backlogs():
            claimers.append((backlog, Claimer(databases, backlog, concurrency)))
        for turn in range(warm + turns):
            for _, claimer in claimers:
                claimer.turn(counted=turn >= warm)
        return [(backlog, claimer.times) for backlog, claimer in claimers]
    finally:
        for _, claimer in claimers:
            claimer.close()


def print_claims(databases: Databases, found: list[tuple[Backlog, ClaimTimes]],
                 concurrency: int) -> None:
    print(f"gated claim (jobctl.store.capacity.claim_gated, in-process), {databases.name}: "
          f"{len(found[0][1].seconds)} turns of up to {concurrency} slots, "
          f"every job --limit key-i=1, half of the running jobs end after each turn")
    baseline = statistics.median(found[0][1].seconds)
    for backlog, times in found:
        median = statistics.median(times.seconds)
        p95 = statistics.quantiles(times.seconds, n=20)[-1]
        print(f"  {backlog.label:42} median {median * 1e3:6.2f} ms   p95 {p95 * 1e3:6.2f} ms   "
              f"{median / baseline:5.2f}x   {times.claimed / len(times.seconds):4.1f} jobs "
              f"claimed a turn (of {times.slots / len(times.seconds):.1f} free)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per drain (default 5000)")
    parser.add_argument("--rounds", type=int, default=3, help="drains per variant (default 3)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="worker slots, queue cap and key limit (default 8)")
    parser.add_argument("--turns", type=int, default=200,
                        help="claim turns timed per backlog (default 200)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"drains to run, plain first (default {DEFAULT_VARIANTS}; also "
                             "cap and key: the halves of limits)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite too")
    args = parser.parse_args()
    names = args.variants.split(",")
    known = [variant.name for variant in variants(args.concurrency)]
    if names[0] != "plain" or not set(names) <= set(known):
        parser.error(f"--variants: plain first, then any of {', '.join(known[1:])}")
    started = time.perf_counter()
    print(f"on {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} (other work on the "
          "machine skews every figure)", flush=True)
    cluster = PgCluster(settings=DURABLE).start()
    try:
        with tempfile.TemporaryDirectory(prefix="jobctl-capacity-bench-") as tmp:
            folder = Path(tmp)
            backends: list[Databases] = [Postgres(cluster)]
            if args.sqlite:
                backends.append(Sqlite(folder))
            for databases in backends:
                rates = drains(databases, folder, args.jobs, args.concurrency, args.rounds,
                               names)
                print_drains(databases, rates, args.jobs, args.concurrency)
                print_claims(databases, claims(databases, args.concurrency, args.turns),
                             args.concurrency)
    finally:
        cluster.stop()
    print(f"whole run {time.perf_counter() - started:.0f} s; load average "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
