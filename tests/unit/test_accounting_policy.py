"""Accounting without a process or a database: percentiles (PostgreSQL's percentile_cont), what
`--cpus` becomes in cpu.max, reading a cgroup's figures and the out-of-memory error, the cgroup
v2 mount and a process's cgroup from /proc, a job cgroup's files (in a stand-in directory: the
real ones are tested by tests/e2e/test_e2e_accounting.py), the watchdog's guard line, the
metrics, and a job's process: wait4's figures, and its way into its cgroup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobctl.accounting import (
    Spread,
    Usage,
    cpu_max,
    flat_keyed,
    format_mib,
    oom_error,
    percentile,
    usage_from_cgroup,
    usage_from_rusage,
)
from jobctl.metrics import WorkerMetrics
from jobctl.models import Delivery
from jobctl.store.queue import ClaimedJob
from jobctl.worker import watchdog
from jobctl.worker.cgroup import JobCgroup, WorkerCgroups, cgroup_dir, own_v2_path, v2_mount
from jobctl.worker.process import JobProcess


@pytest.mark.parametrize(("values", "fraction", "expected"), [
    ([], 0.5, None),
    ([7.0], 0.95, 7.0),
    ([1.0, 2.0, 3.0, 4.0, 5.0], 0.5, 3.0),
    ([1.0, 2.0, 3.0, 4.0, 5.0], 0.95, 4.8),
    ([5.0, 1.0, 4.0, 2.0], 0.5, 3.0),  # unsorted, even count: halfway between the middle two
    ([1.0, 2.0, 3.0, 4.0, 5.0, 10.0], 0.95, 8.75),
    ([3.0, 3.0, 3.0], 0.95, 3.0),
])
def test_percentile_interpolates_like_percentile_cont(values: list[float], fraction: float,
                                                      expected: float | None) -> None:
    assert percentile(values, fraction) == (None if expected is None
                                            else pytest.approx(expected))


def test_spread_ignores_unknown_figures() -> None:
    spread = Spread.of([None, 2.0, None, 4.0])
    assert (spread.p50, spread.p95) == (pytest.approx(3.0), pytest.approx(3.9))
    assert Spread.of([None]).to_json() == {"p50": None, "p95": None}


@pytest.mark.parametrize(("cpus", "text"), [
    (0.5, "50000 100000"), (1, "100000 100000"), (2.5, "250000 100000"),
    (0.001, "1000 100000"),  # the kernel's smallest quota
])
def test_cpu_max_of_cpus(cpus: float, text: str) -> None:
    assert cpu_max(cpus) == text


def test_oom_error_names_the_limit() -> None:
    assert oom_error(50 << 20) == "killed: out of memory (memory.max 50 MiB)"
    assert oom_error(1536 << 10) == "killed: out of memory (memory.max 1.5 MiB)"
    assert oom_error(None) == "killed: out of memory"
    assert format_mib(200 << 20) == "200 MiB"


def test_usage_from_rusage_converts_kib() -> None:
    usage = usage_from_rusage(1.5, 0.25, 2048)
    assert usage == Usage(1.5, 0.25, 2 << 20, False)
    assert usage.cpu_s == 1.75 and Usage().cpu_s is None


CPU_STAT = "usage_usec 1750000\nuser_usec 1500000\nsystem_usec 250000\nnr_periods 4\n"
EVENTS_OOM = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n"
EVENTS_NONE = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"


def test_usage_from_cgroup_files_with_the_rusage_for_what_is_missing() -> None:
    fallback = Usage(0.1, 0.1, 4096, False)
    assert flat_keyed(CPU_STAT)["user_usec"] == 1_500_000
    assert usage_from_cgroup(CPU_STAT, "209715200\n", EVENTS_OOM, fallback) == Usage(
        1.5, 0.25, 200 << 20, True)
    # No memory controller (no memory.peak, no memory.events): the rusage's peak, no OOM.
    assert usage_from_cgroup(CPU_STAT, None, None, fallback) == Usage(1.5, 0.25, 4096, False)
    assert usage_from_cgroup(None, None, EVENTS_NONE, fallback) == fallback


MOUNTINFO_HYBRID = """\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
"""
MOUNTINFO_V2 = "30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_the_v2_mount_and_a_process_cgroup_from_proc() -> None:
    assert v2_mount(MOUNTINFO_HYBRID) == Path("/sys/fs/cgroup/unified")
    assert v2_mount(MOUNTINFO_V2) == Path("/sys/fs/cgroup")
    assert v2_mount("27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n") is None
    proc = "4:memory:/x\n0::/system.slice/jobctl.service/worker\n"
    assert own_v2_path(proc) == "/system.slice/jobctl.service/worker"
    assert own_v2_path("0::/\n") == "/" and own_v2_path("4:memory:/x\n") is None
    assert cgroup_dir(proc, Path("/sys/fs/cgroup")) == Path(
        "/sys/fs/cgroup/system.slice/jobctl.service/worker")


def test_a_job_cgroup_gets_its_limits_written(tmp_path: Path) -> None:
    """Against a stand-in directory (a real cgroup is made by the kernel on mkdir): the files
    the worker writes for --mem and --cpus, and only for the controllers it could enable."""
    cgroups = WorkerCgroups(tmp_path, tmp_path.parent, frozenset({"memory", "cpu"}))
    original_mkdir = os.mkdir

    def mkdir_with_files(path: str | os.PathLike[str], mode: int = 0o777) -> None:
        original_mkdir(path, mode)
        for name in ("memory.max", "memory.swap.max", "cpu.max", "cgroup.procs"):
            (Path(path) / name).write_text("max\n")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "mkdir", mkdir_with_files)
        job = cgroups.for_job(7, 2, 50 << 20, 0.5)
        assert job is not None and job.path == tmp_path / "job-7-2"
        assert (job.path / "memory.max").read_text() == str(50 << 20)
        assert (job.path / "memory.swap.max").read_text() == "0"
        assert (job.path / "cpu.max").read_text() == "50000 100000"
        assert (job.mem_bytes, job.cpus) == (50 << 20, 0.5)

        unlimited = cgroups.for_job(8, 1, None, None)
        assert unlimited is not None
        assert (unlimited.path / "memory.max").read_text() == "max\n"
        assert (unlimited.path / "cpu.max").read_text() == "max\n"

        memory_only = WorkerCgroups(tmp_path, tmp_path.parent, frozenset({"memory"}))
        partial = memory_only.for_job(9, 1, 50 << 20, 2.0)
        assert partial is not None and (partial.mem_bytes, partial.cpus) == (50 << 20, None)
        assert (partial.path / "cpu.max").read_text() == "max\n"  # not enforceable: untouched


def test_a_job_cgroup_reads_its_figures(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text(CPU_STAT)
    (tmp_path / "memory.peak").write_text("209715200\n")
    (tmp_path / "memory.events").write_text(EVENTS_OOM)
    job = JobCgroup(tmp_path, 50 << 20, None)
    assert job.usage(Usage(0.0, 0.0, 1, False)) == Usage(1.5, 0.25, 200 << 20, True)
    (tmp_path / "cgroup.events").write_text("populated 0\nfrozen 0\n")
    assert not job.populated()


def test_the_watchdog_guards_a_cgroup_too() -> None:
    groups: dict[int, tuple[str, str | None]] = {}
    watchdog._apply("guard 41 7", groups, 0.0)
    watchdog._apply("guard 42 8 /sys/fs/cgroup/a b/job-8-1", groups, 0.0)
    assert groups == {41: ("7", None), 42: ("8", "/sys/fs/cgroup/a b/job-8-1")}
    watchdog._apply("release 41", groups, 0.0)
    assert list(groups) == [42]


def test_metrics_expose_cpu_peak_memory_and_oom_kills() -> None:
    from prometheus_client import generate_latest

    metrics = WorkerMetrics(lease_s=10.0)
    metrics.used("default", Usage(1.5, 0.5, 200 << 20, False))
    metrics.used("default", Usage(0.1, 0.0, 60 << 20, True))
    metrics.used("other", Usage())  # nothing known: no observation
    text = generate_latest(metrics.registry).decode()
    sample = metrics.registry.get_sample_value
    default = {"queue": "default"}
    assert sample("jobctl_job_cpu_seconds_count", default) == 2.0
    assert sample("jobctl_job_cpu_seconds_sum", default) == pytest.approx(2.1)
    assert sample("jobctl_job_peak_memory_bytes_count", default) == 2.0
    assert sample("jobctl_job_peak_memory_bytes_sum", default) == float(260 << 20)
    assert sample("jobctl_job_peak_memory_bytes_bucket", {**default, "le": "6.7108864e+07"}) == 1
    assert 'jobctl_job_oom_kills_total{queue="default"} 1.0' in text
    assert 'jobctl_job_oom_kills_total{queue="other"} 0.0' in text
    assert 'jobctl_job_cpu_seconds_count{queue="other"}' not in text


# --- a job's process: figures from wait4, and the way into its cgroup ---------------------------


def claimed(argv: list[str], job_id: int = 1) -> ClaimedJob:
    return ClaimedJob(id=job_id, attempt=1, argv=argv, env={}, cwd=None, timeout_s=30.0,
                      max_attempts=1, backoff_s=1.0, delivery=Delivery.AT_LEAST_ONCE,
                      queue="default", mem_bytes=50 << 20, cpus=0.5)


class StandInCgroups(WorkerCgroups):
    """Job cgroups as plain directories: the child's write lands in a plain file."""

    def for_job(self, job_id: int, attempt: int, mem_bytes: int | None,
                cpus: float | None) -> JobCgroup | None:
        path = self.base / f"job-{job_id}-{attempt}"
        path.mkdir()
        (path / "cgroup.procs").write_text("")
        return JobCgroup(path, mem_bytes, cpus)


BURN = "import os\nwhile os.times().user < 0.3: sum(range(10000))\nb = b'x' * (60 << 20)"


def test_without_cgroups_the_figures_are_the_rusage_of_the_tree() -> None:
    # The shell waits for python: python's CPU and memory are the attempt's.
    result = JobProcess(claimed(["sh", "-c", f'python3 -c "{BURN}"; true']),
                        lambda *_: None).run()
    assert result.exit_code == 0 and result.usage is not None
    assert result.usage.cpu_user_s is not None and result.usage.cpu_user_s >= 0.3
    assert result.usage.max_rss_bytes is not None and result.usage.max_rss_bytes >= 60 << 20
    assert result.usage.oom_killed is False


def test_the_child_enters_its_cgroup_before_it_execs(tmp_path: Path) -> None:
    cgroups = StandInCgroups(tmp_path, tmp_path, frozenset())
    result = JobProcess(claimed(["python3", "-c", BURN]), lambda *_: None,
                        cgroups=cgroups).run()
    assert result.exit_code == 0
    assert (tmp_path / "job-1-1" / "cgroup.procs").read_text() == "0"  # written by the child
    # No cpu.stat or memory.peak in a stand-in: the rusage's figures.
    assert result.usage is not None and result.usage.cpu_user_s is not None
    assert result.usage.cpu_user_s >= 0.3


def test_a_child_that_cannot_enter_its_cgroup_runs_without_one(tmp_path: Path) -> None:
    cgroups = StandInCgroups(tmp_path, tmp_path, frozenset())
    with pytest.MonkeyPatch.context() as patch:
        # A descriptor the child cannot write to, as where the kernel refuses the move.
        patch.setattr(JobCgroup, "open_procs",
                      lambda self: os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        result = JobProcess(claimed(["sh", "-c", "echo ran"]), lambda *_: None,
                            cgroups=cgroups).run()
    assert (result.exit_code, result.started, result.error) == (0, True, None)
    assert result.usage is not None and result.usage.max_rss_bytes


def test_no_cgroups_where_no_v2_hierarchy_is_mounted() -> None:
    from jobctl.worker import cgroup

    real_read = cgroup._read

    def read(path: Path) -> str | None:
        if str(path) == "/proc/self/mountinfo":
            return "27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        return real_read(path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cgroup, "_read", read)
        assert WorkerCgroups.create(1) == (None, "no cgroup v2 hierarchy is mounted")
