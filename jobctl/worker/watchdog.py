"""The fencing watchdog: a tiny process beside each worker that owns its jobs' lease deadline.

A worker that cannot renew its leases must kill its jobs before the leases run out, because from
then on the cluster may start them elsewhere. The worker's own threads cannot promise that: a
frozen process (SIGSTOP, a stalled VM, swap storm) runs no thread at all. So the deadline lives
here, in a separate process that only sleeps until it and kills: the worker tells it which process
groups to guard and pushes the deadline forward after every successful renewal. When the pushes
stop, the deadline passes and the groups die. When the worker itself dies (kill -9), this
process reads end of input and kills the groups at once: nobody is left to report their results.

It runs in a session of its own, ignores SIGINT and SIGTERM (a Ctrl-C or a kill of the worker's
process group must not take the guard away before the worker's jobs are gone), and imports only
the standard library, so it starts in milliseconds.

Protocol, one line each on its standard input:
    guard PGID JOB_ID [CGROUP]
                         a job's process group to kill when the deadline passes, and its
                         cgroup's directory where it has one (killed whole: cgroup.kill)
    release PGID         that job has ended
    deadline T           kill every guarded group at time.monotonic() == T (the clock is the
                         system's CLOCK_MONOTONIC, the same in every process)
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time


def _kill(groups: dict[int, tuple[str, str | None]], why: str) -> None:
    for pgid, (job_id, cgroup) in groups.items():
        if cgroup is not None:
            try:
                fd = os.open(os.path.join(cgroup, "cgroup.kill"), os.O_WRONLY)
                try:
                    os.write(fd, b"1")
                finally:
                    os.close(fd)
            except OSError:
                pass  # gone already, or a kernel before 5.14: the group still dies below
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        sys.stderr.write(f"jobctl watchdog: killed job {job_id} (process group {pgid}): {why}\n")
    sys.stderr.flush()
    groups.clear()


def _apply(line: str, groups: dict[int, tuple[str, str | None]], deadline: float) -> float:
    """One protocol line; returns the deadline, maybe moved."""
    words = line.split(" ", 3)
    if len(words) in (3, 4) and words[0] == "guard":
        groups[int(words[1])] = (words[2], words[3] if len(words) == 4 else None)
    elif len(words) == 2 and words[0] == "release":
        groups.pop(int(words[1]), None)
    elif len(words) == 2 and words[0] == "deadline":
        deadline = float(words[1])
    return deadline


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: dict[int, tuple[str, str | None]] = {}
    deadline = float(sys.argv[1]) if len(sys.argv) > 1 else float("inf")
    pending = b""
    while True:
        timeout = max(0.0, deadline - time.monotonic()) if groups else None
        readable, _, _ = select.select([0], [], [], timeout)
        if not readable:
            _kill(groups, "its worker did not renew the lease in time (fencing)")
            continue
        data = os.read(0, 65536)
        if not data:
            _kill(groups, "its worker is gone")
            return
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            deadline = _apply(line.decode(), groups, deadline)
        if groups and time.monotonic() >= deadline:
            _kill(groups, "its worker did not renew the lease in time (fencing)")


if __name__ == "__main__":
    main()
