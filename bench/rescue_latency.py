#!/usr/bin/env python3
"""Time from `kill -9` of a worker running a job to that job running again elsewhere.

    python bench/rescue_latency.py [--samples 10] [--lease 20s] [--rescue-interval 5s]

On a throwaway PostgreSQL cluster (tests/pgcluster.py, default durability), two workers with the
DEFAULT lease and rescue interval (unless given) serve one queue. For each sample: submit an
at-least-once job (`--retries 1`) that logs its start with `date +%s.%N` and sleeps; once it has
started, wait a random fraction of a renewal period (so the kill lands at any phase of the lease),
`kill -9` the worker that runs it (its pid only; its watchdog kills the job), and time until the
job logs its second start, on the surviving worker. Then a new worker replaces the killed one.

Expected: between lease - lease/3 and lease, plus up to one rescue interval, plus the claim
(woken by NOTIFY). Prints every sample, the median, min and max.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pgcluster import PgCluster  # noqa: E402
from toolenv import tool_env  # noqa: E402

JOBCTL = str(Path(sys.executable).parent / "jobctl")
DURABLE = {"listen_addresses": "'127.0.0.1'", "max_connections": "200"}
SAMPLE_TIMEOUT_S = 180.0


def jobctl(env: dict[str, str], *args: str) -> str:
    return subprocess.run([JOBCTL, *args], env=env, check=True, capture_output=True,
                          text=True).stdout


def seconds(text: str) -> float:
    """'20s', '1m', '500ms' or a bare number of seconds (enough for this script's options)."""
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * factor
    return float(text)


class Workers:
    """The two workers, by name; each in a session of its own, its log in the folder."""

    def __init__(self, env: dict[str, str], folder: Path, extra: list[str]) -> None:
        self.env, self.folder, self.extra = env, folder, extra
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.count = 0

    def start(self) -> str:
        self.count += 1
        name = f"bench-{self.count}"
        log = (self.folder / f"{name}.log").open("wb")
        self.running[name] = subprocess.Popen(
            [JOBCTL, "worker", "start", "--queue", "rescue", "--name", name, *self.extra],
            env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while " started: " not in (self.folder / f"{name}.log").read_text(errors="replace"):
            if time.monotonic() > deadline or self.running[name].poll() is not None:
                raise SystemExit(f"worker {name} did not start")
            time.sleep(0.05)
        return name

    def kill9(self, name: str) -> None:
        process = self.running.pop(name)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for process in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def starts(log: Path, job_id: str) -> list[tuple[int, str, float, int]]:
    """(attempt, worker, time, pid) of each start the job logged."""
    found = []
    if log.exists():
        for line in log.read_text().splitlines():
            job, attempt, worker, instant, pid = line.split()
            if job == job_id:
                found.append((int(attempt), worker, float(instant), int(pid)))
    return found


def wait_start(log: Path, job_id: str, attempt: int) -> tuple[int, str, float, int]:
    deadline = time.monotonic() + SAMPLE_TIMEOUT_S
    while time.monotonic() < deadline:
        for start in starts(log, job_id):
            if start[0] == attempt:
                return start
        time.sleep(0.01)
    raise SystemExit(f"job {job_id} attempt {attempt} did not start within {SAMPLE_TIMEOUT_S}s")


def sample(env: dict[str, str], workers: Workers, log: Path, renew_s: float,
           rng: random.Random) -> float:
    script = (f'echo $JOBCTL_JOB_ID $JOBCTL_ATTEMPT $JOBCTL_WORKER $(date +%s.%N) $$ >> {log}; '
              f'[ "$JOBCTL_ATTEMPT" -gt 1 ] || exec sleep 600')
    job_id = jobctl(env, "job", "submit", "--queue", "rescue", "--retries", "1",
                    "--shell", script).strip()
    _, victim, _, pid = wait_start(log, job_id, 1)
    time.sleep(rng.uniform(0, renew_s))
    killed_at = time.time()
    workers.kill9(victim)
    _, rescuer, restarted_at, _ = wait_start(log, job_id, 2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # only if the watchdog failed to
    assert rescuer != victim, (rescuer, victim)
    workers.start()
    return restarted_at - killed_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--lease", default=None, help="default: the worker's own (20s)")
    parser.add_argument("--rescue-interval", default=None, help="default: the worker's (5s)")
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    extra: list[str] = []
    if options.lease:
        extra += ["--lease", options.lease]
    if options.rescue_interval:
        extra += ["--rescue-interval", options.rescue_interval]
    lease_s = seconds(options.lease or "20s")
    rng = random.Random(options.seed)
    cluster = PgCluster(settings=DURABLE).start()
    found: list[float] = []
    try:
        env = tool_env(JOBCTL_DATABASE_URL=cluster.create_database("bench"))
        jobctl(env, "db", "upgrade")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            workers = Workers(env, folder, extra)
            try:
                workers.start()
                workers.start()
                for index in range(options.samples):
                    took = sample(env, workers, folder / "starts.log", lease_s / 3, rng)
                    found.append(took)
                    print(f"  sample {index + 1:2d}: {took:6.2f} s", flush=True)
            finally:
                workers.stop_all()
    finally:
        cluster.stop()
    settings = " ".join(extra) or "default lease (20s) and rescue interval (5s)"
    print(f"kill -9 to running elsewhere, {settings}, N={len(found)}: median "
          f"{statistics.median(found):.2f} s, min {min(found):.2f} s, max {max(found):.2f} s")


if __name__ == "__main__":
    main()
