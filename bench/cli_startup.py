#!/usr/bin/env python3
"""How fast the command line answers: the commands people type all day, beside `python -c pass`.

    python bench/cli_startup.py [--runs 10]

Each command runs `--runs` times after one uncounted warm-up (which also writes the bytecode
caches a real installation has); the table shows the median, min and max wall time, and the
median minus the interpreter's own start-up. Database commands use a fresh SQLite file holding
1,000 jobs. Targets: `--help` and command completion under 120 ms, `job list` under 300 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolenv import tool_env

JOBCTL = str(Path(sys.executable).parent / "jobctl")


def timed_runs(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall seconds of `runs` runs, after one warm-up; fails loudly if a jobctl command fails
    or prints nothing (a completion that found nothing would time the wrong thing)."""
    subprocess.run(argv, env=env, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(argv, env=env, capture_output=True)
        times.append(time.perf_counter() - started)
        if result.returncode != 0 or (argv[0] == JOBCTL and not result.stdout):
            raise SystemExit(f"{' '.join(argv)} failed or printed nothing: "
                             f"{result.returncode} {result.stderr.decode()[-300:]}")
    return times


def completion_env(env: dict[str, str], words: str) -> dict[str, str]:
    """Bash's side of Click's completion protocol, as the generated script sets it."""
    return {**env, "_JOBCTL_COMPLETE": "bash_complete", "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="jobctl-cli-bench-"))
    env = tool_env(JOBCTL_DATABASE_URL=f"sqlite:///{folder / 'bench.db'}")
    env["XDG_CONFIG_HOME"] = str(folder / "config")
    (folder / "jobs.txt").write_text("".join(f"echo {n}\n" for n in range(1000)))
    subprocess.run([JOBCTL, "job", "submit", "--from-file", str(folder / "jobs.txt")], env=env,
                   check=True, capture_output=True)

    cases: list[tuple[str, list[str], dict[str, str]]] = [
        ("python -c pass", [sys.executable, "-c", "pass"], env),
        ("jobctl --version", [JOBCTL, "--version"], env),
        ("jobctl --help", [JOBCTL, "--help"], env),
        ("complete: jobctl j<TAB>", [JOBCTL], completion_env(env, "jobctl j")),
        ("complete: jobctl job status <TAB>", [JOBCTL],
         completion_env(env, "jobctl job status ")),
        ("jobctl job list (1,000 jobs)", [JOBCTL, "job", "list"], env),
    ]
    results = [(label, timed_runs(argv, case_env, args.runs)) for label, argv, case_env in cases]
    baseline = statistics.median(results[0][1])
    print(f"{args.runs} runs each, wall ms (median, min, max; 'over python' = median - python's)")
    print(f"{'command':38} {'median':>7} {'min':>7} {'max':>7} {'over python':>12}")
    for label, times in results:
        median = statistics.median(times)
        print(f"{label:38} {median * 1e3:7.1f} {min(times) * 1e3:7.1f} {max(times) * 1e3:7.1f} "
              f"{(median - baseline) * 1e3:12.1f}")


if __name__ == "__main__":
    main()
