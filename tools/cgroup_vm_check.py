"""Runs inside the VM of tools/cgroup_vm_check.sh (cgroup v2 with the memory and cpu
controllers, as root): a job's cgroup enforces --mem and --cpus, reports an out-of-memory kill,
gives memory.peak, and the worker's tree is gone afterwards. Exits non-zero on a failed check."""

from __future__ import annotations

import os
import sys

from jobctl.models import Delivery
from jobctl.store.queue import ClaimedJob
from jobctl.worker.cgroup import WorkerCgroups
from jobctl.worker.process import JobProcess

ALLOCATE_200M = "b = b'x' * (200 * 1024 * 1024); import time; time.sleep(0.2)"


def job(job_id: int, argv: list[str], mem: int | None = None, cpus: float | None = None,
        timeout: float | None = None) -> ClaimedJob:
    return ClaimedJob(id=job_id, attempt=1, argv=argv, env={}, cwd=None, timeout_s=timeout,
                      max_attempts=1, backoff_s=1.0, delivery=Delivery.AT_LEAST_ONCE,
                      queue="default", cpus=cpus, mem_bytes=mem)


def main() -> int:
    failed = 0

    def check(what: str, ok: bool, detail: object) -> None:
        nonlocal failed
        print(("ok    " if ok else "FAILED") + f" {what}: {detail}", flush=True)
        failed += not ok

    cgroups, missing = WorkerCgroups.create(1)
    check("the worker's cgroups enforce memory and cpu",
          cgroups is not None and cgroups.enforced == {"memory", "cpu"}, missing)
    if cgroups is None:
        return 1
    output: list[bytes] = []

    def sink(stream: str, seq: int, data: bytes) -> None:
        output.append(data)

    oom = JobProcess(job(1, ["python3", "-c", ALLOCATE_200M], mem=50 << 20), sink,
                     cgroups=cgroups).run()
    check("--mem 50M kills a job of 200 MB and says so",
          oom.error == "killed: out of memory (memory.max 50 MiB)"
          and oom.usage is not None and oom.usage.oom_killed is True, oom)
    cpu = JobProcess(job(2, ["sh", "-c", "cat /sys/fs/cgroup$(sed -n 's/^0:://p' "
                                         "/proc/self/cgroup)/cpu.max"], cpus=0.5), sink,
                     cgroups=cgroups).run()
    check("--cpus 0.5 sets cpu.max", cpu.exit_code == 0 and output[-1] == b"50000 100000\n",
          output[-1:])
    peak = JobProcess(job(3, ["python3", "-c", ALLOCATE_200M]), sink, cgroups=cgroups).run()
    check("memory.peak of a job of 200 MB",
          peak.usage is not None and (peak.usage.max_rss_bytes or 0) >= 200 << 20, peak.usage)
    timed = JobProcess(job(4, ["sh", "-c", "setsid sleep 300 & sleep 300"], timeout=2), sink,
                       cgroups=cgroups, kill_grace_s=1).run()
    check("a timed-out job is killed, its cgroup removed",
          timed.kill_reason is not None
          and not any(name.startswith("job-") for name in os.listdir(cgroups.base)), timed)
    base = cgroups.base
    cgroups.close()
    check("the worker's tree is removed when it stops", not base.exists(), base)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
