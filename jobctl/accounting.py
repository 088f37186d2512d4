"""Per-attempt accounting as plain functions: what one attempt used (CPU seconds, peak memory,
whether it was killed for memory), how a cgroup's files say it, what `--cpus`/`--mem` become in
a job's cgroup, and the percentiles `jobctl stats` reports. Nothing here touches a process, a
cgroup or the database: jobctl.worker.cgroup and jobctl.worker.process gather the figures,
jobctl.store.stats reads them back.

Where the figures come from (README, "Accounting"):
- with a cgroup of its own (cgroup v2): the job's whole tree, whatever it forked or daemonised:
  `cpu.stat` (user_usec, system_usec), `memory.peak` (kernel 5.19 and later) and
  `memory.events` (oom_kill);
- without one: the rusage that wait4 returns for the job's command, which includes every
  descendant that was waited for (a shell's children are). Its peak memory (ru_maxrss) is the
  largest resident set of any one of those processes, not their sum: the tree's peak as far as
  the kernel reports it without a cgroup.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from jobctl.record import record

# cgroup v2's cpu.max period: a quota of `cpus` times this per period (the kernel's default).
CPU_MAX_PERIOD_US = 100_000
# The smallest quota the kernel accepts (cpu.max), in microseconds.
CPU_MAX_MIN_QUOTA_US = 1000


@record
class Usage:
    """What one attempt's processes used. None: not known (e.g. a command that never started)."""

    cpu_user_s: float | None = None
    cpu_system_s: float | None = None
    max_rss_bytes: int | None = None
    oom_killed: bool | None = None

    @property
    def cpu_s(self) -> float | None:
        """User plus system CPU seconds."""
        if self.cpu_user_s is None and self.cpu_system_s is None:
            return None
        return (self.cpu_user_s or 0.0) + (self.cpu_system_s or 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"cpu_user_s": self.cpu_user_s, "cpu_system_s": self.cpu_system_s,
                "max_rss_bytes": self.max_rss_bytes, "oom_killed": self.oom_killed}


NO_USAGE = Usage()


def usage_from_rusage(ru_utime: float, ru_stime: float, ru_maxrss_kib: int) -> Usage:
    """From wait4's rusage (Linux: ru_maxrss in KiB)."""
    return Usage(cpu_user_s=ru_utime, cpu_system_s=ru_stime, max_rss_bytes=ru_maxrss_kib * 1024,
                 oom_killed=False)


def flat_keyed(text: str) -> dict[str, int]:
    """A cgroup "flat keyed" file (cpu.stat, memory.events): `key value` per line."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            values[key] = int(value)
        except ValueError:
            continue
    return values


def usage_from_cgroup(cpu_stat: str | None, memory_peak: str | None,
                      memory_events: str | None, fallback: Usage) -> Usage:
    """The figures of a job's cgroup, from the text of its files (None: the file is not there),
    each missing one taken from `fallback` (the rusage)."""
    user, system = fallback.cpu_user_s, fallback.cpu_system_s
    if cpu_stat is not None:
        stat = flat_keyed(cpu_stat)
        if "user_usec" in stat and "system_usec" in stat:
            user, system = stat["user_usec"] / 1e6, stat["system_usec"] / 1e6
    peak = fallback.max_rss_bytes
    if memory_peak is not None and memory_peak.strip().isdigit():
        peak = int(memory_peak.strip())
    oom = fallback.oom_killed
    if memory_events is not None:
        oom = flat_keyed(memory_events).get("oom_kill", 0) > 0
    return Usage(cpu_user_s=user, cpu_system_s=system, max_rss_bytes=peak, oom_killed=oom)


def cpu_max(cpus: float) -> str:
    """cgroup v2's cpu.max for `--cpus N`: `QUOTA PERIOD` in microseconds (0.5 → `50000
    100000`: half a CPU's time in every period, spread over any number of CPUs)."""
    quota = max(CPU_MAX_MIN_QUOTA_US, round(cpus * CPU_MAX_PERIOD_US))
    return f"{quota} {CPU_MAX_PERIOD_US}"


def format_mib(size: int) -> str:
    """`50 MiB`, `1.5 MiB`."""
    return f"{size / (1 << 20):.1f}".rstrip("0").rstrip(".") + " MiB"


def oom_error(mem_bytes: int | None) -> str:
    """The attempt's error when the kernel killed it for memory in its cgroup."""
    if mem_bytes is None:
        return "killed: out of memory"
    return f"killed: out of memory (memory.max {format_mib(mem_bytes)})"


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The `fraction` (0..1) percentile of `values` by linear interpolation between the closest
    ranks (PostgreSQL's percentile_cont); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@record
class Spread:
    """p50 and p95 of one figure over the attempts of a window."""

    p50: float | None = None
    p95: float | None = None

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread:
        known = [value for value in values if value is not None]
        return cls(percentile(known, 0.5), percentile(known, 0.95))

    def to_json(self, digits: int = 3) -> dict[str, float | None]:
        return {"p50": None if self.p50 is None else round(self.p50, digits),
                "p95": None if self.p95 is None else round(self.p95, digits)}
