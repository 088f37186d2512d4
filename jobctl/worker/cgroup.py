"""A cgroup (v2) for each job, where the worker may create them: the job's whole process tree is
accounted (CPU, peak memory), limited (`--mem` → memory.max, `--cpus` → cpu.max) and killed at
once (cgroup.kill), whatever it forked, daemonised or re-grouped.

The layout, under the cgroup the worker started in (`X`: root's cgroup, or a subtree delegated
to the worker's user, e.g. systemd's Delegate=yes):

    X/jobctl-worker-<worker id>-<pid>/          memory and cpu enabled for its children
    X/jobctl-worker-<worker id>-<pid>/worker/   the worker itself (no internal processes: a
                                                cgroup that hands controllers to its children
                                                holds no process of its own)
    X/jobctl-worker-<worker id>-<pid>/job-<job id>-<attempt>/   one job's attempt

A job's process enters its cgroup before it execs its command (the child writes to the
cgroup's cgroup.procs, opened by the worker, between fork and exec), so nothing it starts
escapes. Its cgroup is removed when the attempt ends; the worker's when the worker stops (a
worker killed outright leaves its empty tree behind: the next worker to start there removes
it).

Where v2 is mounted but lacks a controller (a hybrid hierarchy binds memory and cpu to v1),
jobs still get a cgroup for accounting CPU and for cgroup.kill; what cannot be enforced is said
once, when the worker starts. Where no cgroup can be created at all, `--mem` and `--cpus` only
place jobs (jobctl.capacity) and the figures come from each command's rusage.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path

from jobctl.accounting import Usage, cpu_max, flat_keyed, usage_from_cgroup
from jobctl.record import record

WORKER_PREFIX = "jobctl-worker-"
WORKER_LEAF = "worker"
# What a job's cgroup limits, and the controllers that does it.
CONTROLLERS = ("memory", "cpu")
# A stale worker tree (its worker gone) younger than this may be one just being set up.
STALE_AFTER_S = 60.0
# How long removing a job's cgroup waits for its killed processes to be gone.
REMOVE_WAIT_S = 5.0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _write(path: Path, text: str) -> None:
    # One write(2) per value: cgroup files take one value per write.
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def v2_mount(mountinfo: str) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or …/unified when hybrid), from
    the text of /proc/self/mountinfo."""
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        if sep and after.split(" ", 1)[0] == "cgroup2":
            fields = before.split(" ")
            if len(fields) > 4:
                return Path(fields[4].replace("\\040", " "))
    return None


def own_v2_path(proc_cgroup: str) -> str | None:
    """This process's cgroup in the v2 hierarchy (`0::/path` of /proc/self/cgroup)."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def cgroup_dir(proc_cgroup: str, mount: Path) -> Path | None:
    """The directory of the cgroup a process is in (its /proc/PID/cgroup text)."""
    own = own_v2_path(proc_cgroup)
    return None if own is None else mount / own.lstrip("/")


@record
class JobCgroup:
    """One attempt's cgroup: its directory and what it was asked to enforce."""

    path: Path
    mem_bytes: int | None  # memory.max written (None: not limited or not enforceable)
    cpus: float | None  # cpu.max written

    def open_procs(self) -> int:
        """cgroup.procs opened for writing, for the job's child to enter before exec (the
        kernel checks the opener's rights, so a job that runs as another user may still)."""
        return os.open(self.path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def populated(self) -> bool:
        events = _read(self.path / "cgroup.events")
        if events is None:
            return False
        return flat_keyed(events).get("populated", 0) > 0

    def kill(self) -> None:
        """SIGKILL every process in it at once (cgroup.kill, kernel 5.14 and later; before that,
        each process it lists, until none is left)."""
        try:
            _write(self.path / "cgroup.kill", "1")
            return
        except FileNotFoundError:
            pass
        except OSError:
            return  # already gone
        for _ in range(100):  # new processes may appear while we kill: a few rounds
            pids = (_read(self.path / "cgroup.procs") or "").split()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.01)

    def usage(self, fallback: Usage) -> Usage:
        """Its figures (cpu.stat, memory.peak, memory.events), each missing one from the rusage."""
        return usage_from_cgroup(_read(self.path / "cpu.stat"), _read(self.path / "memory.peak"),
                                 _read(self.path / "memory.events"), fallback)

    def remove(self) -> None:
        """Kill whatever is left in it and remove it."""
        if self.populated():
            self.kill()
            give_up = time.monotonic() + REMOVE_WAIT_S
            while self.populated() and time.monotonic() < give_up:
                time.sleep(0.01)
        with contextlib.suppress(OSError):
            os.rmdir(self.path)


class WorkerCgroups:
    """The worker's cgroup tree (see the module docstring); `for_job` makes a job's cgroup."""

    def __init__(self, base: Path, origin: Path, enforced: frozenset[str]) -> None:
        self.base = base  # X/jobctl-worker-…
        self.origin = origin  # X: where the worker came from, and goes back to when it stops
        self.enforced = enforced  # the controllers its jobs' cgroups have

    @classmethod
    def create(cls, worker_id: int) -> tuple[WorkerCgroups | None, str]:
        """Set up the worker's tree under the cgroup it runs in; None and why not where this
        machine or the worker's rights do not allow. The text: what the worker says at start."""
        mountinfo = _read(Path("/proc/self/mountinfo"))
        mount = v2_mount(mountinfo or "")
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
        origin = cgroup_dir(proc_cgroup, mount) if mount is not None else None
        if mount is None or origin is None:
            return None, "no cgroup v2 hierarchy is mounted"
        sweep_stale(origin)
        base = origin / f"{WORKER_PREFIX}{worker_id}-{os.getpid()}"
        try:
            os.mkdir(base)
        except OSError as error:
            return None, f"cannot create a cgroup under {origin}: {error.strerror}"
        try:
            os.mkdir(base / WORKER_LEAF)
            _write(base / WORKER_LEAF / "cgroup.procs", "0")  # this whole process moves
        except OSError as error:
            with contextlib.suppress(OSError):
                os.rmdir(base / WORKER_LEAF)
            with contextlib.suppress(OSError):
                os.rmdir(base)
            return None, f"cannot move the worker into a cgroup under {origin}: {error.strerror}"
        enforced, missing = enable_controllers(origin, base)
        return cls(base, origin, enforced), missing

    def for_job(self, job_id: int, attempt: int, mem_bytes: int | None,
                cpus: float | None) -> JobCgroup | None:
        """A new cgroup for one attempt, its limits written; None if it cannot be made (the job
        then runs in the worker's cgroup, as where there are none)."""
        path = self.base / f"job-{job_id}-{attempt}"
        with contextlib.suppress(OSError):
            os.rmdir(path)  # left over by an attempt of the same number (a rescued one)
        try:
            os.mkdir(path)
        except OSError:
            return None
        mem = mem_bytes if "memory" in self.enforced else None
        cpu = cpus if "cpu" in self.enforced else None
        try:
            if mem is not None:
                _write(path / "memory.max", str(mem))
                # Over the limit means killed, not swapped out (no swap accounting: no file).
                with contextlib.suppress(FileNotFoundError):
                    _write(path / "memory.swap.max", "0")
            if cpu is not None:
                _write(path / "cpu.max", cpu_max(cpu))
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            return None
        return JobCgroup(path, mem, cpu)

    def close(self) -> None:
        """Remove what is left of the jobs' cgroups, go back to where the worker came from and
        remove the tree (left for the next worker to sweep where the worker cannot go back)."""
        for child in _children(self.base):
            if child.name != WORKER_LEAF:
                JobCgroup(child, None, None).remove()
        try:
            _write(self.origin / "cgroup.procs", "0")
        except OSError:
            return
        for path in (self.base / WORKER_LEAF, self.base):
            with contextlib.suppress(OSError):
                os.rmdir(path)


def enable_controllers(origin: Path, base: Path) -> tuple[frozenset[str], str]:
    """Hand memory and cpu down to the jobs' cgroups (origin → base → jobs); which it could,
    and a sentence on the rest for the worker's start-up line."""
    available = set((_read(origin / "cgroup.controllers") or "").split())
    enforced: set[str] = set()
    why: list[str] = []
    for controller in CONTROLLERS:
        if controller not in available:
            why.append(f"the {controller} controller is not available in cgroup v2 here")
            continue
        try:
            if controller not in (_read(origin / "cgroup.subtree_control") or "").split():
                _write(origin / "cgroup.subtree_control", f"+{controller}")
            _write(base / "cgroup.subtree_control", f"+{controller}")
        except OSError as error:
            reason = ("other processes share the worker's cgroup; give the worker a delegated "
                      "cgroup of its own" if error.errno == errno.EBUSY else error.strerror)
            why.append(f"cannot enable the {controller} controller under {origin}: {reason}")
            continue
        enforced.add(controller)
    return frozenset(enforced), "; ".join(why)


def _children(path: Path) -> list[Path]:
    try:
        return [entry for entry in path.iterdir() if entry.is_dir()]
    except OSError:
        return []


def sweep_stale(origin: Path) -> None:
    """Remove the trees of workers that died without removing theirs (empty, and not new)."""
    now = time.time()
    for tree in _children(origin):
        if not tree.name.startswith(WORKER_PREFIX):
            continue
        events = _read(tree / "cgroup.events")
        if events is None or flat_keyed(events).get("populated", 1) != 0:
            continue
        try:
            if now - tree.stat().st_mtime < STALE_AFTER_S:
                continue
        except OSError:
            continue
        for child in _children(tree):
            with contextlib.suppress(OSError):
                os.rmdir(child)
        with contextlib.suppress(OSError):
            os.rmdir(tree)
