"""Capacity control (issue 15), end to end, on both backends: real workers run real shell jobs
that write their own start/end instants (`date +%s.%N`) to a file, and the tests judge what
really ran at once from those, never from jobctl's own tables.

- a key limit and a queue cap of 2: three workers of concurrency 4 never run more than 2 at once;
  workflow tasks' `limits` and a schedule's `--limit` are the same limits;
- a paused queue starts nothing until resumed; `queue list` shows it;
- a rate of 5/2s starts at most 5 in any window (of 2 s less 0.1 s of start jitter);
- `--require` routes jobs only to workers with the tag; GPU jobs get indices of their own
  machine (JOBCTL_HOSTNAME) that no job running beside them holds; `--cpus` and `--mem` fit in
  what the machine has free;
- held jobs never start until released; `job edit` changes a job not yet started only;
- `job explain` names the blocker, one reason a line;
- bad input exits 2 with one line on standard error and changes nothing.

The side-effect log and its parser are the chaos suite's (tests/chaos/chaos_support.py), and so is
the overlap arithmetic (shared with tests/chaos/test_chaos_capacity.py).
"""

from __future__ import annotations

import bisect
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Jobctl, Worker, describe, parse_time, wait_for

# The side-effect log of the chaos suite (its conftest.py puts this folder on sys.path the other
# way round, for e2e_support).
sys.path.append(str(Path(__file__).resolve().parent.parent / "chaos"))
from chaos_support import (
    describe_runs,
    list_jobs,
    logging_script,
    peak_overlap,
    read_events,
    runs,
    submit_batch,
    wait_succeeded,
)

JOBS_TIMEOUT_S = 60


# --- helpers -------------------------------------------------------------------------------------


def queue_rows(jobctl: Jobctl) -> dict[str, dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(jobctl.look("queue", "list", "-o", "json"))
    return {row["name"]: row for row in rows}


def start_workers(jobctl: Jobctl, count: int, *args: str, prefix: str = "w") -> list[Worker]:
    """`count` workers named PREFIX1…, started side by side (each start costs a second)."""
    workers = [jobctl.start_worker(*args, "--name", f"{prefix}{n}", wait_started=False)
               for n in range(1, count + 1)]
    for worker in workers:
        worker.wait_started()
    return workers


def start_worker_on(jobctl: Jobctl, machine: str, *args: str) -> Worker:
    """A worker that believes it runs on machine `machine` (JOBCTL_HOSTNAME); not waited for."""
    env = jobctl.env
    jobctl.env = {**env, "JOBCTL_HOSTNAME": machine}
    try:
        return jobctl.start_worker(*args, wait_started=False)
    finally:
        jobctl.env = env


def scene(jobctl: Jobctl, *args: str) -> str:
    """`jobctl ARGS…` run in this process, for what only sets the scene of a test (submits, queue
    settings): the CLI's code path is the same (tests/inprocess.py), without a Python start per
    call; what the test is about still runs in real processes. Returns standard output."""
    from inprocess import cli_ok

    return cli_ok(jobctl.database_url, *args)


def put(jobctl: Jobctl, *args: str) -> int:
    """`job submit ARGS…` in this process (see `scene`); the new job's id."""
    out = scene(jobctl, "job", "submit", *args)
    assert re.fullmatch(r"\d+\n", out), f"submit did not print a bare id: {out!r}"
    return int(out)


def one_error_line(result: Any) -> None:
    """Exit status 2 and exactly one line on standard error, `jobctl: error: …`."""
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jobctl: error: "), describe(result)


# --- 1. caps: a key limit, a queue cap --------------------------------------------------------


@pytest.mark.parametrize("cap", ["limit", "queue_cap"])
def test_never_more_than_two_run_at_once_under_a_key_limit_or_a_queue_cap(
        jobctl: Jobctl, tmp_path: Path, cap: str) -> None:
    """12 jobs of a quarter second on three workers of concurrency 4 (12 slots): with `--limit k=2`
    (or a queue `--max-running 2`) the jobs' own start/end instants never show 3 at once.

    Left alone, the worker that ends a job claims the next one first and may run them all; so
    that the cap must hold across workers, each worker gets a third of the jobs of its own: for
    the key, each serves a queue of its own (jobs of three queues share the key); for the queue
    cap, each has a tag that a third of the jobs require. A cap kept per worker would run 6."""
    log = tmp_path / "side-effects.log"
    worker_args: list[tuple[str, ...]]
    job_args: list[tuple[str, ...]]
    if cap == "limit":
        worker_args = [("--queue", f"q{n}") for n in (1, 2, 3)]
        job_args = [("--queue", f"q{n}", "--limit", "k=2") for n in (1, 2, 3)]
    else:
        jobctl.ok("queue", "set", "capped", "--max-running", "2")
        assert queue_rows(jobctl)["capped"]["max_running"] == 2
        worker_args = [("--queue", "capped", "--tag", f"part={n}") for n in (1, 2, 3)]
        job_args = [("--queue", "capped", "--require", f"part={n}") for n in (1, 2, 3)]
    workers = [jobctl.start_worker(*args, "--concurrency", "4", "--name", f"w{n}",
                                   wait_started=False)
               for n, args in enumerate(worker_args, 1)]
    for worker in workers:
        worker.wait_started()
    ids = [job for n, args in enumerate(job_args, 1)
           for job in submit_batch(jobctl, tmp_path / f"jobs{n}.txt",
                                   [logging_script(log, "sleep 0.25")] * 4, *args)]
    if cap == "limit":
        assert all(row["limits"] == {"k": 2} for row in list_jobs(jobctl)), list_jobs(jobctl)
    wait_succeeded(jobctl, ids)

    ran = runs(read_events(log))
    assert sorted(job for job, _ in ran) == sorted(ids), "a job ran twice or never"
    intervals = {key: (start, end) for key, (start, end, _) in ran.items() if end is not None}
    assert len(intervals) == 12, f"a job wrote no end: {ran}"
    peak, at = peak_overlap(intervals.values())
    assert peak <= 2, (f"{peak} jobs ran at once under a cap of 2, at {at:.3f}: "
                       f"{describe_runs(intervals, at)}")
    assert peak == 2, "never two at once: the cap of 2 ran the jobs one by one"
    assert {worker for _, _, worker in ran.values()} == {"w1", "w2", "w3"}


@pytest.mark.parametrize("cap", ["limit", "queue_cap"])
def test_short_jobs_read_ahead_as_followers_never_overlap_past_the_cap(
        jobctl: Jobctl, tmp_path: Path, cap: str) -> None:
    """A backlog of 80 short jobs on two workers of concurrency 4 under a cap of 2, with every
    default: the workers read gated jobs ahead as followers (a follower starts once the job it
    follows ended on its worker, in its place), and the jobs' own instants never show 3 at
    once. The database says followers were used, or this tested nothing new."""
    log = tmp_path / "side-effects.log"
    if cap == "limit":
        job_args: tuple[str, ...] = ("--limit", "k=2")
    else:
        scene(jobctl, "queue", "set", "default", "--max-running", "2")
        job_args = ()
    ids = submit_batch(jobctl, tmp_path / "jobs.txt", [logging_script(log, "sleep 0.02")] * 80,
                       *job_args)
    start_workers(jobctl, 2, "--concurrency", "4")
    wait_succeeded(jobctl, ids, timeout_s=JOBS_TIMEOUT_S)

    ran = runs(read_events(log))
    assert sorted(job for job, _ in ran) == sorted(ids), "a job ran twice or never"
    intervals = {key: (start, end) for key, (start, end, _) in ran.items() if end is not None}
    peak, at = peak_overlap(intervals.values())
    assert peak <= 2, (f"{peak} jobs ran at once under a cap of 2, at {at:.3f}: "
                       f"{describe_runs(intervals, at)}")
    from jobctl.store.direct import open_or_create

    database = open_or_create(jobctl.database_url)
    try:
        with database.read() as conn:
            followers = conn.scalar("SELECT count(*) FROM jobs WHERE after_id IS NOT NULL")
    finally:
        database.close()
    assert followers >= 10, f"only {followers} job(s) ran as followers"


def test_limits_of_workflow_tasks_and_schedules_hold_as_a_submits_do(
        jobctl_pg: Jobctl, tmp_path: Path) -> None:
    """`limits = { k = 1 }` on four workflow tasks without dependencies, on a worker of
    concurrency 4: one at a time. A schedule's `--limit` is carried by the jobs it fires."""
    jobctl = jobctl_pg  # one backend: tests/store/test_capacity.py runs the SQL on both
    log = tmp_path / "side-effects.log"
    script = logging_script(log, "sleep 0.4").replace('"', '\\"')
    tasks = [f'[tasks.t{n}]\ncommand = "{script}"\nlimits = {{ k = 1 }}\n' for n in range(4)]
    path = tmp_path / "limited.toml"
    path.write_text('[workflow]\nname = "limited"\n\n' + "\n".join(tasks))
    jobctl.start_worker("--concurrency", "4")
    workflow_id = jobctl.ok("workflow", "run", str(path)).strip()
    result = jobctl("workflow", "wait", workflow_id, "--timeout", f"{JOBS_TIMEOUT_S}s",
                    timeout=JOBS_TIMEOUT_S + 30)
    assert result.returncode == 0, describe(result)
    rows = list_jobs(jobctl)
    assert [row["limits"] for row in rows] == [{"k": 1}] * 4, rows
    ran = runs(read_events(log))
    intervals = {key: (start, end) for key, (start, end, _) in ran.items() if end is not None}
    assert len(intervals) == 4, ran
    peak, at = peak_overlap(intervals.values())
    assert peak == 1, f"{peak} tasks holding k=1 ran at once: {describe_runs(intervals, at)}"

    jobctl.ok("schedule", "add", "limited", "--every", "1s", "--limit", "k=1",
              "--limit", "other=3", "--", "true")
    time.sleep(1.1)  # a fire time has come
    jobctl.ok("scheduler", "run", "--once")
    fired = [row for row in list_jobs(jobctl) if row["schedule_id"] is not None]
    assert fired, "the schedule fired no job"
    assert {json.dumps(row["limits"], sort_keys=True) for row in fired} == {
        '{"k": 1, "other": 3}'}, fired


# --- 3. pause / resume ---------------------------------------------------------------------------


def test_a_paused_queue_starts_nothing_until_resumed(jobctl_sqlite: Jobctl, tmp_path: Path) -> None:
    """A live worker of queues q and other: q paused, its jobs stay queued while a job of `other`
    submitted after them runs; `queue resume q` and they all run. `queue list` shows both."""
    jobctl = jobctl_sqlite  # one backend: tests/store/test_capacity.py runs the SQL on both
    log = tmp_path / "side-effects.log"
    jobctl.start_worker("--queue", "q,other", "--concurrency", "4")
    jobctl.ok("queue", "pause", "q")  # known: a live worker serves it
    assert queue_rows(jobctl)["q"]["paused"] is True
    ids = submit_batch(jobctl, tmp_path / "jobs.txt", [logging_script(log, "true")] * 4,
                       "--queue", "q")
    submitted = time.monotonic()
    probe = jobctl.submit("--queue", "other", "--shell", logging_script(log, "true"))
    wait_succeeded(jobctl, [probe])
    time.sleep(max(0.0, 2.0 - (time.monotonic() - submitted)))

    assert {e.job for e in read_events(log)} == {probe}, "a job of the paused queue started"
    assert {row["state"] for row in list_jobs(jobctl) if row["id"] in ids} == {"queued"}
    row = queue_rows(jobctl)["q"]
    assert (row["paused"], row["queued"], row["running"], row["held"]) == (True, 4, 0, 0), row

    jobctl.ok("queue", "resume", "q")
    wait_succeeded(jobctl, ids)
    assert {e.job for e in read_events(log) if e.kind == "end"} == {probe, *ids}
    row = queue_rows(jobctl)["q"]
    assert (row["paused"], row["waiting"], row["queued"], row["running"]) == (False, 0, 0, 0), row


# --- 4. rate -------------------------------------------------------------------------------------


def test_a_rate_of_5_per_2s_starts_at_most_5_in_any_window(
        jobctl: Jobctl, tmp_path: Path) -> None:
    """12 quick jobs on two workers of concurrency 8 under `--rate 5/2s`: in every window of
    1.9 s (2 s less the allowed start jitter) at most 5 job-side starts, and so at least ~4 s
    from the first start to the last (5 + 5 + 2)."""
    log = tmp_path / "side-effects.log"
    jobctl.ok("queue", "set", "r", "--rate", "5/2s")
    row = queue_rows(jobctl)["r"]
    assert (row["rate"], row["max_running"], row["paused"]) == ("5/2s", None, False), row
    start_workers(jobctl, 2, "--queue", "r", "--concurrency", "8")
    ids = submit_batch(jobctl, tmp_path / "jobs.txt", [logging_script(log, "true")] * 12,
                       "--queue", "r")
    wait_succeeded(jobctl, ids)

    starts = sorted(e.time for e in read_events(log) if e.kind == "start")
    assert len(starts) == 12, starts
    for index, first in enumerate(starts):
        within = bisect.bisect_left(starts, first + 1.9) - index
        assert within <= 5, (f"{within} starts within 1.9 s from {first:.3f}: "
                             f"{[round(t - starts[0], 3) for t in starts]}")
    span = starts[-1] - starts[0]
    assert span >= 3.8, f"12 starts at 5/2s took only {span:.2f}s (at least 4 s less jitter)"
    scene(jobctl, "queue", "set", "r", "--rate", "none")
    assert queue_rows(jobctl)["r"]["rate"] is None


# --- 5. tags and resources -------------------------------------------------------------------


def test_required_tags_route_jobs_only_to_workers_with_the_tag(
        jobctl_pg: Jobctl, tmp_path: Path) -> None:
    """Worker eu-worker has tag zone=eu, us-worker zone=us and disk=ssd, both free to take
    anything: jobs requiring zone=eu run only on the first, those requiring zone=us and
    disk=ssd only on the second."""
    jobctl = jobctl_pg  # one backend: tests/store/test_capacity.py runs the SQL on both
    log = tmp_path / "side-effects.log"
    eu = jobctl.start_worker("--tag", "zone=eu", "--concurrency", "4", "--name", "eu-worker",
                             wait_started=False)
    us = jobctl.start_worker("--tag", "zone=us", "--tag", "disk=ssd", "--concurrency", "4",
                             "--name", "us-worker", wait_started=False)
    eu.wait_started()
    us.wait_started()
    to_eu = submit_batch(jobctl, tmp_path / "eu.txt", [logging_script(log, "sleep 0.2")] * 6,
                         "--require", "zone=eu")
    to_us = submit_batch(jobctl, tmp_path / "us.txt", [logging_script(log, "sleep 0.2")] * 3,
                         "--require", "zone=us", "--require", "disk=ssd")
    rows = {row["id"]: row for row in list_jobs(jobctl)}
    assert rows[to_eu[0]]["requires"] == {"zone": "eu"}, rows[to_eu[0]]
    assert rows[to_us[0]]["requires"] == {"zone": "us", "disk": "ssd"}, rows[to_us[0]]
    wait_succeeded(jobctl, to_eu + to_us)

    where = {job: worker for (job, _), (_, _, worker) in runs(read_events(log)).items()}
    assert {where[job] for job in to_eu} == {"eu-worker"}, where
    assert {where[job] for job in to_us} == {"us-worker"}, where


def test_cpus_and_memory_of_a_machine_bound_what_runs_on_it(
        jobctl_sqlite: Jobctl, tmp_path: Path) -> None:
    """A worker offering `cpu=3,mem=1G` with concurrency 8: jobs of `--mem 400M` run at most 2
    at once, jobs of `--cpus 1.5` at most 2 at once (both kinds side by side); a job of
    `--mem 2G` fits no live worker, waits, and says so."""
    jobctl = jobctl_sqlite  # one backend: tests/store/test_capacity.py runs the SQL on both
    mem_log, cpu_log = tmp_path / "mem.log", tmp_path / "cpu.log"
    jobctl.start_worker("--resources", "cpu=3,mem=1G", "--concurrency", "8", "--name", "small")
    too_big = jobctl.submit("--mem", "2G", "--", "true")
    by_mem = submit_batch(jobctl, tmp_path / "mem.txt",
                          [logging_script(mem_log, "sleep 0.4")] * 6, "--mem", "400M")
    by_cpu = submit_batch(jobctl, tmp_path / "cpu.txt",
                          [logging_script(cpu_log, "sleep 0.4")] * 4, "--cpus", "1.5")
    status = jobctl.status(by_mem[0])
    assert (status["mem_bytes"], status["cpus"]) == (400 << 20, None), status
    assert jobctl.status(by_cpu[0])["cpus"] == 1.5
    wait_succeeded(jobctl, by_mem + by_cpu)

    for log, what in ((mem_log, "--mem 400M of 1G"), (cpu_log, "--cpus 1.5 of 3")):
        ran = runs(read_events(log))
        intervals = {key: (start, end) for key, (start, end, _) in ran.items()
                     if end is not None}
        peak, at = peak_overlap(intervals.values())
        assert peak <= 2, f"{peak} jobs of {what} at once: {describe_runs(intervals, at)}"
        assert peak == 2, f"jobs of {what} never ran two at once"
    assert jobctl.status(too_big)["state"] == "queued"
    assert "mem=2G" in reason(jobctl, too_big, "no_worker_fits")


def _gpu_script(log: Path, seconds: float) -> str:
    """Logs one line at its end: JOB WORKER JOBCTL_GPUS CUDA_VISIBLE_DEVICES START END."""
    return (f"s=$(date +%s.%N); sleep {seconds}; echo $JOBCTL_JOB_ID $JOBCTL_WORKER "
            f"${{JOBCTL_GPUS:--}} ${{CUDA_VISIBLE_DEVICES:--}} $s $(date +%s.%N) >> {log}")


def _gpu_runs(log: Path) -> list[tuple[int, str, str, str, float, float]]:
    found = []
    for line in log.read_text().splitlines():
        job, worker, gpus, cuda, start, end = line.split()
        found.append((int(job), worker, gpus, cuda, float(start), float(end)))
    return found


def _indices(text: str) -> set[int]:
    assert re.fullmatch(r"\d+(,\d+)*", text), f"not a list of GPU indices: {text!r}"
    return {int(part) for part in text.split(",")}


@pytest.mark.parametrize("layout", ["two-machines", "one-machine"])
def test_gpu_jobs_never_share_an_index_on_a_machine(
        jobctl: Jobctl, tmp_path: Path, layout: str) -> None:
    """Two workers with `--resources gpu=2` and concurrency 4, on two machines (JOBCTL_HOSTNAME),
    or both on one machine, whose 2 GPUs they then share: six jobs of `--gpus 2` each get both
    indices of their machine, the same in JOBCTL_GPUS and CUDA_VISIBLE_DEVICES, and two jobs
    that overlap on one machine never share one (so on one machine, one such job at a time)."""
    log = tmp_path / "gpus.log"
    if layout == "two-machines":
        machine = {"gpu-a": "machine-a", "gpu-b": "machine-b"}
    else:
        machine = {"gpu-a": "machine-a", "gpu-b": "machine-a"}
    workers = [start_worker_on(jobctl, machine[name], "--resources", "gpu=2",
                               "--concurrency", "4", "--name", name) for name in machine]
    for started in workers:
        started.wait_started()
    ids = submit_batch(jobctl, tmp_path / "jobs.txt", [_gpu_script(log, 0.4)] * 6,
                       "--gpus", "2")
    wait_succeeded(jobctl, ids)

    ran = _gpu_runs(log)
    assert sorted(job for job, *_ in ran) == sorted(ids), ran
    for job, worker, gpus, cuda, _, _ in ran:
        assert gpus == cuda, f"job {job}: JOBCTL_GPUS={gpus} but CUDA_VISIBLE_DEVICES={cuda}"
        assert _indices(gpus) == {0, 1}, f"job {job} on {worker} got GPUs {gpus}"
    for n, (job, worker, gpus, _, start, end) in enumerate(ran):
        for other, other_worker, other_gpus, _, other_start, other_end in ran[n + 1:]:
            if machine[worker] != machine[other_worker]:
                continue
            if start <= other_end and other_start <= end:
                shared = _indices(gpus) & _indices(other_gpus)
                assert not shared, (
                    f"jobs {job} on {worker} [{start:.3f}, {end:.3f}] and {other} on "
                    f"{other_worker} [{other_start:.3f}, {other_end:.3f}] overlapped on "
                    f"{machine[worker]} sharing GPU(s) {shared}")
    if layout == "two-machines":
        assert {worker for _, worker, *_ in ran} == set(machine), "one machine ran every job"


def test_one_gpu_jobs_run_two_at_a_time_on_a_worker_with_two(
        jobctl_sqlite: Jobctl, tmp_path: Path) -> None:
    """Six `--gpus 1` jobs on one worker with `--resources gpu=2` and concurrency 4: at most 2 at
    once (the GPUs, not the concurrency, decide), each with an index of its own."""
    jobctl = jobctl_sqlite  # one backend: tests/store/test_capacity.py runs the SQL on both
    log = tmp_path / "gpus.log"
    jobctl.start_worker("--resources", "gpu=2", "--concurrency", "4", "--name", "gpu-a")
    ids = submit_batch(jobctl, tmp_path / "jobs.txt", [_gpu_script(log, 0.5)] * 6,
                       "--gpus", "1")
    wait_succeeded(jobctl, ids)

    ran = _gpu_runs(log)
    assert sorted(job for job, *_ in ran) == sorted(ids), ran
    intervals = {job: (start, end) for job, _, _, _, start, end in ran}
    peak, at = peak_overlap(intervals.values())
    assert peak <= 2, f"{peak} one-GPU jobs at once on 2 GPUs: {describe_runs(intervals, at)}"
    assert peak == 2, "the two GPUs were never used at once"
    for n, (job, _, gpus, cuda, start, end) in enumerate(ran):
        assert gpus == cuda, f"job {job}: JOBCTL_GPUS={gpus} but CUDA_VISIBLE_DEVICES={cuda}"
        assert len(_indices(gpus)) == 1 and _indices(gpus) <= {0, 1}, f"job {job}: {gpus}"
        for other, _, other_gpus, _, other_start, other_end in ran[n + 1:]:
            if start <= other_end and other_start <= end:
                assert gpus != other_gpus, f"jobs {job} and {other} ran at once on GPU {gpus}"


# --- 6. hold, release, edit ----------------------------------------------------------------------


def test_a_held_job_never_starts_until_released(jobctl_sqlite: Jobctl, tmp_path: Path) -> None:
    """`submit --hold` and `job hold` of a queued job: a live worker runs a job submitted after
    them (first by age, they would go before it) but not them; `job release` and they run."""
    jobctl = jobctl_sqlite  # one backend: tests/store/test_capacity.py runs the SQL on both
    log = tmp_path / "side-effects.log"
    held = jobctl.submit("--hold", "--shell", logging_script(log, "true"))
    queued = jobctl.submit("--shell", logging_script(log, "true"))
    assert jobctl.status(queued)["held"] is False
    jobctl.ok("job", "hold", str(queued))
    for job in (held, queued):
        status = jobctl.status(job)
        assert (status["state"], status["held"]) == ("queued", True), status

    jobctl.start_worker("--concurrency", "4")
    probe = jobctl.submit("--shell", logging_script(log, "true"))
    wait_succeeded(jobctl, [probe])
    time.sleep(1.0)  # a few more turns of the worker
    assert {e.job for e in read_events(log)} == {probe}, "a held job started"
    assert queue_rows(jobctl)["default"]["held"] == 2

    jobctl.ok("job", "release", str(held), str(queued))
    wait_succeeded(jobctl, [held, queued])
    for job in (held, queued):
        assert jobctl.status(job)["held"] is False


def test_job_edit_changes_a_job_not_yet_started_and_refuses_a_finished_one(
        jobctl_sqlite: Jobctl) -> None:
    jobctl = jobctl_sqlite  # one backend: tests/store/test_capacity.py runs the SQL on both
    held = put(jobctl, "--hold", "--", "true")
    jobctl.ok("job", "edit", str(held), "--priority", "7", "--queue", "elsewhere",
              "--in", "1h", "--limit", "k=3")
    status = jobctl.status(held)
    assert (status["priority"], status["queue"], status["limits"], status["held"]) == (
        7, "elsewhere", {"k": 3}, True), status
    due_in = (parse_time(status["run_at"]) - datetime.now(UTC)).total_seconds()
    assert 3500 < due_in <= 3600, f"--in 1h: due in {due_in:.0f}s"

    queued = put(jobctl, "--queue", "nowhere", "--", "true")  # no worker serves it
    jobctl.ok("job", "edit", str(queued), "--priority", "3", "--limit", "db=1",
              "--queue", "nowhere-else")
    status = jobctl.status(queued)
    assert (status["state"], status["priority"], status["queue"], status["limits"]) == (
        "queued", 3, "nowhere-else", {"db": 1}), status

    done = put(jobctl, "--", "true")
    jobctl.burst()
    before = jobctl.status(done)
    assert before["state"] == "succeeded", before
    one_error_line(jobctl("job", "edit", str(done), "--priority", "9"))
    one_error_line(jobctl("job", "edit", str(done), "--limit", "k=1"))
    assert jobctl.status(done) == before


# --- 7. job explain ------------------------------------------------------------------------------


def explain(jobctl: Jobctl, job_id: int) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(jobctl.look("job", "explain", str(job_id), "-o", "json"))
    assert document["id"] == job_id, document
    return document


def reason(jobctl: Jobctl, job_id: int, kind: str) -> str:
    """The text of job `job_id`'s reason of `kind` (fails if it has none); also checks the plain
    output says the same reasons, one a line."""
    document = explain(jobctl, job_id)
    texts: list[str] = [r["text"] for r in document["reasons"] if r["kind"] == kind]
    assert texts, f"job {job_id}: no {kind!r} reason in {document}"
    # The plain output, a moment later: the same reasons, one a line (durations may have moved).
    plain = [_durations(line) for line in jobctl.look("job", "explain", str(job_id)).splitlines()]
    assert plain == [_durations(r["text"]) for r in document["reasons"]], (document, plain)
    return texts[0]


def _durations(text: str) -> str:
    return re.sub(r"\d+[hms](\d+[hms])*", "<duration>", text)


def wait_running(jobctl: Jobctl, job_id: int) -> None:
    wait_for(lambda: jobctl.status(job_id)["state"] == "running", 30,
             lambda: f"job {job_id} did not start: {jobctl.status(job_id)}")


def test_explain_names_the_job_that_holds_a_limit_a_cap_a_gpu_or_a_dependency(
        jobctl_pg: Jobctl) -> None:
    """One worker (queues default, capped, slow; one GPU; concurrency 8) and, for each reason,
    a long job that holds the thing and a second job that waits for it."""
    jobctl = jobctl_pg  # one backend: tests/store/test_capacity.py runs the SQL on both
    scene(jobctl, "queue", "set", "capped", "--max-running", "1")
    scene(jobctl, "queue", "set", "slow", "--rate", "1/1h")
    jobctl.start_worker("--queue", "default,capped,slow", "--resources", "gpu=1",
                        "--concurrency", "8", "--name", "explainer")
    holder = put(jobctl, "--limit", "k=1", "--", "sleep", "30")
    capper = put(jobctl, "--queue", "capped", "--", "sleep", "30")
    gpu_holder = put(jobctl, "--gpus", "1", "--", "sleep", "30")
    rated = put(jobctl, "--queue", "slow", "--", "sleep", "30")
    failing = put(jobctl, "--retries", "1", "--retry-backoff", "1h", "--", "false")
    for job in (holder, capper, gpu_holder, rated):
        wait_running(jobctl, job)
    wait_for(lambda: jobctl.status(failing)["attempt"] == 1
             and jobctl.status(failing)["state"] != "running", 30, "the failing job never ran")

    blocked = {
        "limit": put(jobctl, "--limit", "k=1", "--", "true"),
        "queue_cap": put(jobctl, "--queue", "capped", "--", "true"),
        "resources": put(jobctl, "--gpus", "1", "--", "true"),
        "rate": put(jobctl, "--queue", "slow", "--", "true"),
        "waits_for": put(jobctl, "--after", str(holder), "--", "true"),
    }
    time.sleep(1.0)  # the worker has had its turns: none of them may have started
    for kind, job in blocked.items():
        assert jobctl.status(job)["state"] in ("waiting", "queued"), (kind, jobctl.status(job))

    text = reason(jobctl, blocked["limit"], "limit")
    assert re.search(rf"\bk\b.*\b1/1\b.*\b{holder}\b", text), text
    text = reason(jobctl, blocked["queue_cap"], "queue_cap")
    assert re.search(rf"\bcapped\b.*\b1/1\b.*\b{capper}\b", text), text
    text = reason(jobctl, blocked["resources"], "resources")
    assert re.search(rf"gpu=1.*\bexplainer\b.*\b{gpu_holder}\b", text), text
    text = reason(jobctl, blocked["rate"], "rate")
    assert re.search(r"\bslow\b.*1/1h", text), text
    text = reason(jobctl, blocked["waits_for"], "waits_for")
    assert re.search(rf"\bjob {holder}\b.*running", text), text
    assert "until" in reason(jobctl, failing, "backoff")
    assert "explainer" in reason(jobctl, holder, "running")
    assert explain(jobctl, holder)["state"] == "running"
    one_error_line(jobctl("job", "edit", str(holder), "--priority", "5"))  # started: too late
    assert jobctl.status(holder)["priority"] == 0

    done = put(jobctl, "--", "true")
    wait_succeeded(jobctl, [done])
    assert "succeeded" in reason(jobctl, done, "finished")

    unknown = jobctl("job", "explain", "999999")
    assert unknown.returncode == 3, describe(unknown)
    scene(jobctl, "job", "cancel", str(holder), str(capper), str(gpu_holder), str(rated))


def test_explain_held_paused_due_and_what_no_live_worker_offers(jobctl_sqlite: Jobctl) -> None:
    """One live worker of queues default and p, no tags, no GPUs."""
    jobctl = jobctl_sqlite  # one backend: tests/store/test_capacity.py runs the SQL on both
    scene(jobctl, "queue", "set", "p", "--max-running", "none")  # creates it
    scene(jobctl, "queue", "pause", "p")
    jobctl.start_worker("--queue", "default,p", "--concurrency", "4", "--name", "plain")
    jobs = {
        "held": put(jobctl, "--hold", "--", "true"),
        "paused": put(jobctl, "--queue", "p", "--", "true"),
        "due": put(jobctl, "--in", "1h", "--", "true"),
        "no_worker_queue": put(jobctl, "--queue", "ghost", "--", "true"),
        "no_worker_tag": put(jobctl, "--require", "zone=mars", "--", "true"),
        "no_worker_fits": put(jobctl, "--gpus", "1", "--", "true"),
    }
    probe = put(jobctl, "--", "true")  # the worker is live and takes what it can
    wait_succeeded(jobctl, [probe])
    for kind, job in jobs.items():
        assert jobctl.status(job)["state"] in ("waiting", "queued"), (kind, jobctl.status(job))

    assert reason(jobctl, jobs["held"], "held")
    assert re.search(r"\bqueue p\b.*paused", reason(jobctl, jobs["paused"], "paused"))
    text = reason(jobctl, jobs["due"], "due")
    assert re.search(r"due in (59m|1h)", text), text
    assert re.search(r"\bghost\b", reason(jobctl, jobs["no_worker_queue"], "no_worker_queue"))
    assert "zone=mars" in reason(jobctl, jobs["no_worker_tag"], "no_worker_tag")
    assert "gpu=1" in reason(jobctl, jobs["no_worker_fits"], "no_worker_fits")
    # The one reason, not every other one too: the paused queue's worker is live.
    kinds = {r["kind"] for r in explain(jobctl, jobs["paused"])["reasons"]}
    assert "no_worker_queue" not in kinds, kinds


# --- 8. bad input --------------------------------------------------------------------------------


BAD_INPUT = [
    ("job", "submit", "--limit", "x", "--", "true"),
    ("job", "submit", "--limit", "k=0", "--", "true"),
    ("job", "submit", "--limit", "k=1", "--limit", "k=-1", "--", "true"),
    ("job", "submit", "--mem", "12Q", "--", "true"),
    ("job", "submit", "--gpus", "-1", "--", "true"),
    ("queue", "set", "q", "--rate", "5"),
    ("queue", "set", "q", "--max-running", "0"),
    ("queue", "set", "known", "--max-running", "0"),
    ("queue", "pause", "nosuchqueue"),
    ("queue", "pause", "known", "nosuchqueue"),
    ("queue", "resume", "nosuchqueue"),
    ("worker", "start", "--burst", "--resources", "gpu=x"),
]


def test_bad_input_exits_2_with_one_line_and_changes_nothing(jobctl_sqlite: Jobctl) -> None:
    jobctl = jobctl_sqlite  # one backend: tests/store/test_capacity.py runs the SQL on both
    scene(jobctl, "queue", "set", "known", "--max-running", "3")
    existing = put(jobctl, "--queue", "known", "--", "true")
    jobs_before = list_jobs(jobctl)
    queues_before = queue_rows(jobctl)
    assert queues_before["known"]["queued"] == 1, queues_before
    workers_before = jobctl.look("worker", "list", "--all", "-o", "json")

    for argv in BAD_INPUT:
        one_error_line(jobctl(*argv))

    assert list_jobs(jobctl) == jobs_before
    assert queue_rows(jobctl) == queues_before
    assert "q" not in queue_rows(jobctl)
    assert jobctl.look("worker", "list", "--all", "-o", "json") == workers_before
    assert jobctl.status(existing)["state"] == "queued"
