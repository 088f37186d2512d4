#!/usr/bin/env python3
"""Submitting a job array: `jobctl job submit --array 0-99999 --shell 'echo {index}'` (one
process, one bulk insert of 100,000 tasks) beside `jobctl job submit --from-file` of the same
100,000 commands (`echo 0` … `echo 99999`, each run by /bin/sh -c: the same argv as the
array's tasks), into PostgreSQL (a throwaway cluster, tests/pgcluster.py) and SQLite, in the
same run. Each figure is the whole CLI process, start-up included, timed from outside; each
submit goes into a fresh database; the best of --rounds.

    python bench/arrays.py [--tasks 100000] [--rounds 3] [--throttle 0]

--throttle N submits the array with %N (every task then also holds the limit key array:ID).
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pgcluster import PgCluster  # noqa: E402
from toolenv import tool_env  # noqa: E402

JOBCTL = str(Path(sys.executable).parent / "jobctl")


def timed_submit(url: str, args: list[str], expect_lines: int) -> float:
    """Seconds of one `jobctl job submit ARGS` into the (migrated) database at `url`."""
    env = tool_env(JOBCTL_DATABASE_URL=url)
    subprocess.run([JOBCTL, "db", "upgrade"], env=env, check=True, capture_output=True)
    started = time.perf_counter()
    out = subprocess.run([JOBCTL, "job", "submit", "--queue", "bench", *args], env=env,
                         check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert len(out.stdout.split()) == expect_lines, out.stdout[:200]
    return elapsed


def count_jobs(url: str) -> int:
    out = subprocess.run([JOBCTL, "job", "list", "--limit", "0", "-o", "ids"],
                         env=tool_env(JOBCTL_DATABASE_URL=url), check=True,
                         capture_output=True, text=True)
    return len(out.stdout.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--throttle", type=int, default=0, help="%%N for the array (0: none)")
    args = parser.parse_args()
    tasks = args.tasks
    spec = f"0-{tasks - 1}" + (f"%{args.throttle}" if args.throttle else "")
    array_args = ["--array", spec, "--shell", "echo {index}"]
    counter = itertools.count()
    with tempfile.TemporaryDirectory() as folder:
        job_file = Path(folder) / "commands.txt"
        job_file.write_text("".join(f"echo {index}\n" for index in range(tasks)))
        file_args = ["--from-file", str(job_file)]
        cluster = PgCluster().start()
        try:
            def pg_url() -> str:
                return cluster.create_database(f"bench_array_{next(counter)}")

            def lite_url() -> str:
                return f"sqlite:///{folder}/bench-{next(counter)}.db"

            results: dict[tuple[str, str], float] = {}
            for backend, new_url in (("postgresql", pg_url), ("sqlite", lite_url)):
                for kind, submit_args, lines in (("--array", array_args, 1),
                                                 ("--from-file", file_args, tasks)):
                    results[(backend, kind)] = best(args.rounds, new_url, submit_args, lines,
                                                    tasks)
        finally:
            cluster.stop()
    print(f"{tasks:,} jobs in one `jobctl job submit` (whole CLI process, best of "
          f"{args.rounds}; array spec {spec}):")
    for backend in ("postgresql", "sqlite"):
        array_s = results[(backend, "--array")]
        file_s = results[(backend, "--from-file")]
        print(f"  {backend:<10}  --array {tasks / array_s:10,.0f} jobs/s ({array_s:.2f} s)   "
              f"--from-file {tasks / file_s:10,.0f} jobs/s ({file_s:.2f} s)   "
              f"array/file {file_s / array_s:.2f}x")


def best(rounds: int, new_url: Callable[[], str], submit_args: list[str], lines: int,
         tasks: int) -> float:
    times = []
    for _ in range(rounds):
        url = new_url()
        times.append(timed_submit(url, submit_args, lines))
        assert count_jobs(url) == tasks
    return min(times)


if __name__ == "__main__":
    main()
