"""Accounting end to end: real workers run real commands and each attempt records its CPU
seconds and the peak memory of its process tree, on both backends; `job status` (table and
JSON), `stats` and the worker's /metrics show them. Where the worker can create cgroups (v2,
root), each job runs in its own: it is removed after the job, nothing the job daemonised
survives it, and with the memory and cpu controllers `--mem` kills a job over its limit (its
status says it ran out of memory) and `--cpus 0.5` sets cpu.max to "50000 100000"."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from e2e_support import Jobctl, process_gone, wait_for
from metrics_support import free_port, sample, scrape

from jobctl.worker.cgroup import cgroup_dir, v2_mount

MIB = 1 << 20
# Allocates 200 MiB and writes every page (b"x" * n is filled in, so all of it is resident).
ALLOCATE_200M = "b = b'x' * (200 * 1024 * 1024); import time; time.sleep(0.2)"
# Burns a second of user CPU, however busy the machine is.
BURN_1S = "import os\nwhile os.times().user < 1.0: sum(range(10000))"


def _cgroup_probe() -> tuple[Path | None, str, str]:
    """The cgroup v2 mount, why a worker started here could not create cgroups ("" if it can),
    and why it could not enforce --mem/--cpus in them ("" if it can): the kernel's own answer
    (the worker does the same), not jobctl's."""
    mount = v2_mount(Path("/proc/self/mountinfo").read_text())
    if mount is None:
        why = "no cgroup v2 hierarchy is mounted on this machine"
        return None, why, why
    own = cgroup_dir(Path("/proc/self/cgroup").read_text(), mount)
    if own is None or not os.access(own, os.W_OK):
        why = f"cannot create cgroups under {own} (not root, no delegated subtree)"
        return mount, why, why
    available = set((own / "cgroup.controllers").read_text().split())
    if not {"memory", "cpu"} <= available:
        return mount, "", (f"cgroup v2 here offers {sorted(available) or 'no controllers'}, not "
                           "memory and cpu (a hybrid hierarchy binds them to cgroup v1)")
    for controller in ("memory", "cpu"):
        subtree = own / "cgroup.subtree_control"
        if controller in subtree.read_text().split():
            continue
        try:  # what a worker started here does first
            subtree.write_text(f"+{controller}")
        except OSError as error:
            return mount, "", (f"cannot enable the {controller} controller under {own}: "
                               f"{error.strerror} (other processes share the cgroup)")
    return mount, "", ""


MOUNT, CANNOT, NOT_ENFORCED = _cgroup_probe()
needs_cgroups = pytest.mark.skipif(bool(CANNOT), reason=CANNOT)
needs_limits = pytest.mark.skipif(bool(NOT_ENFORCED),
                                  reason=f"--mem/--cpus cannot be enforced: {NOT_ENFORCED}")


def test_attempts_record_cpu_and_peak_memory(jobctl: Jobctl) -> None:
    port = free_port()
    jobctl.start_worker("--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    memory = jobctl.submit("--", "python3", "-c", ALLOCATE_200M)
    cpu = jobctl.submit("--", "python3", "-c", BURN_1S)
    # The shell waits for its child: the child's CPU is the attempt's too (rusage or cgroup).
    tree = jobctl.submit("--shell", f'python3 -c "{BURN_1S}"; true')
    ids = [memory, cpu, tree]
    wait_for(lambda: all(jobctl.status(i)["state"] == "succeeded" for i in ids), 90,
             lambda: [jobctl.status(i) for i in ids])

    [allocated] = jobctl.status(memory)["attempts"]
    assert allocated["max_rss_bytes"] >= 200 * MIB
    assert allocated["oom_killed"] is False
    for job_id in (cpu, tree):
        [burnt] = jobctl.status(job_id)["attempts"]
        assert burnt["cpu_user_s"] >= 0.8, burnt
        assert burnt["cpu_system_s"] is not None and burnt["cpu_system_s"] >= 0
        assert 0 < burnt["max_rss_bytes"] < 200 * MIB

    # The table shows the figures too (plain: raw figures under their JSON names).
    lines = jobctl.look("job", "status", str(memory)).splitlines()
    header = lines[-2].split("\t")
    row = dict(zip(header, lines[-1].split("\t"), strict=True))
    assert int(row["MAX_RSS_BYTES"]) >= 200 * MIB and row["OOM_KILLED"] == "false"

    report = json.loads(jobctl.look("stats", "-o", "json"))
    [default] = [q for q in report["queues"] if q["queue"] == "default"]
    assert default["attempts_ended"] == 3
    assert default["cpu_p50_s"] >= 0.8  # two of three burnt a second
    assert default["peak_memory_p95_bytes"] >= 0.9 * 200 * MIB
    assert default["duration_p95_s"] >= default["duration_p50_s"] > 0
    stats_screen = jobctl.look("stats")
    assert "DURATION_P95" in stats_screen.splitlines()[0]

    def cpu_count() -> float:
        return sample(scrape(port), "jobctl_job_cpu_seconds_count", queue="default")

    wait_for(lambda: cpu_count() == 3, 10, lambda: scrape(port))
    scraped = scrape(port)
    assert sample(scraped, "jobctl_job_cpu_seconds_sum", queue="default") >= 1.6
    assert sample(scraped, "jobctl_job_peak_memory_bytes_count", queue="default") == 3
    assert sample(scraped, "jobctl_job_peak_memory_bytes_sum", queue="default") >= 200 * MIB
    assert sample(scraped, "jobctl_job_oom_kills_total", queue="default") == 0


def test_the_worker_says_once_what_mem_and_cpus_mean_here(jobctl: Jobctl) -> None:
    worker = jobctl.start_worker()
    said = [line for line in worker.log().splitlines() if "cgroups:" in line]
    assert len(said) == 1, worker.log()
    if NOT_ENFORCED:
        assert "only place" in said[0] and "not enforced" in said[0]
    else:
        assert "--mem and --cpus are enforced" in said[0]


@needs_cgroups
def test_by_default_only_jobs_with_mem_or_cpus_get_a_cgroup(jobctl: Jobctl) -> None:
    assert MOUNT is not None
    worker = jobctl.start_worker()
    plain = jobctl.submit("--", "cat", "/proc/self/cgroup")
    limited = jobctl.submit("--mem", "1G", "--", "cat", "/proc/self/cgroup")
    wait_for(lambda: all(jobctl.status(i)["state"] == "succeeded" for i in (plain, limited)),
             60, lambda: worker.log())
    shared = cgroup_dir(jobctl.look("job", "logs", str(plain)), MOUNT)
    assert shared is not None and not shared.name.startswith("job-"), shared  # the worker's
    path = cgroup_dir(jobctl.look("job", "logs", str(limited)), MOUNT)
    assert path is not None and path.name == f"job-{limited}-1", path


def test_no_cgroups_when_told(jobctl: Jobctl) -> None:
    worker = jobctl.start_worker("--no-cgroups")
    said = [line for line in worker.log().splitlines() if "cgroups:" in line]
    assert len(said) == 1 and "none for jobs (--no-cgroups)" in said[0], worker.log()
    job = jobctl.submit("--", "cat", "/proc/self/cgroup")
    wait_for(lambda: jobctl.status(job)["state"] == "succeeded", 60, lambda: worker.log())
    assert "/job-" not in jobctl.look("job", "logs", str(job))
    [attempt] = jobctl.status(job)["attempts"]  # the figures are the rusage's
    assert attempt["max_rss_bytes"] > 0 and attempt["oom_killed"] is False


@needs_cgroups
def test_each_job_runs_in_a_cgroup_of_its_own_removed_after_it(jobctl: Jobctl) -> None:
    assert MOUNT is not None
    worker = jobctl.start_worker("--cgroups")
    job = jobctl.submit("--", "cat", "/proc/self/cgroup")
    # A daemon that leaves the job's process group (setsid) still dies with the job.
    daemon = jobctl.submit("--shell", "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!")
    wait_for(lambda: all(jobctl.status(i)["state"] == "succeeded" for i in (job, daemon)), 60,
             lambda: worker.log())
    path = cgroup_dir(jobctl.look("job", "logs", str(job)), MOUNT)
    assert path is not None and path.name == f"job-{job}-1", path
    assert path.parent.name.startswith("jobctl-worker-")
    assert not path.exists()  # removed when the attempt ended
    daemon_pid = int(jobctl.look("job", "logs", str(daemon)))
    wait_for(lambda: process_gone(daemon_pid), 10, "the daemonised process outlived its job")
    assert path.parent.exists()  # the worker's own, until it stops
    worker.stop()
    assert not path.parent.exists(), "the worker left its cgroup behind"


@needs_limits
def test_mem_kills_a_job_over_its_limit_and_says_so(jobctl: Jobctl) -> None:
    jobctl.start_worker()
    job = jobctl.submit("--mem", "50M", "--", "python3", "-c", ALLOCATE_200M)
    wait_for(lambda: jobctl.status(job)["state"] == "failed", 60, lambda: jobctl.status(job))
    status = jobctl.status(job)
    [attempt] = status["attempts"]
    assert attempt["oom_killed"] is True
    assert status["error"] == "killed: out of memory (memory.max 50 MiB)"
    assert attempt["error"] == status["error"]
    assert "out of memory" in jobctl.look("job", "status", str(job))


@needs_limits
def test_cpus_sets_cpu_max_in_the_jobs_cgroup(jobctl: Jobctl) -> None:
    jobctl.start_worker()
    job = jobctl.submit("--cpus", "0.5", "--shell",
                        f'cat "{MOUNT}$(sed -n "s/^0:://p" /proc/self/cgroup)/cpu.max"')
    wait_for(lambda: jobctl.status(job)["state"] in ("succeeded", "failed"), 60,
             lambda: jobctl.status(job))
    assert jobctl.look("job", "logs", str(job)).strip() == "50000 100000"
