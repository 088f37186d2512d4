"""Helpers for the chaos tests (fixtures are in conftest.py, the CLI runner in e2e_support.py).

- CHAOS_WORKER_OPTIONS: a 3 s lease renewed every second, every worker rescuing every second,
  so that a lost worker's jobs come back within seconds instead of the default half minute.
- SilentProxy: a TCP forwarder whose `cut()` makes the network silently eat every byte in both
  directions while every socket stays open, as a broken switch or a dropped route does; nothing
  tells either side that the peer is gone.
- Side-effect logs: the jobs write `start`/`end` lines to a file of their own; the tests judge
  what really ran from those, never from jobctl's own tables.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from e2e_support import Jobctl, Worker, process_gone, wait_for

LEASE_S = 3.0
CHAOS_WORKER_OPTIONS = ("--lease", "3s", "--rescue-interval", "1s", "--grace", "2s",
                        "--kill-grace", "1s")

FINAL_STATES = {"succeeded", "failed", "cancelled", "lost"}
UNFINISHED_STATES = ("waiting", "queued", "running")


# --- the side-effect log --------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One line a job wrote: `KIND JOB ATTEMPT [WORKER [TIME [PID …]]]`."""

    kind: str  # start, end, killed
    job: int
    attempt: int
    worker: str = ""
    time: float = 0.0
    pids: tuple[int, ...] = ()


def read_events(path: Path) -> list[Event]:
    """The lines of a side-effect log in the order written (appends of one short line are
    atomic, so lines never mix)."""
    events: list[Event] = []
    if not path.exists():
        return events
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) < 3:
            raise AssertionError(f"a torn line in {path}: {line!r}")
        kind, job, attempt, *rest = fields
        worker = rest[0] if rest else ""
        instant = float(rest[1]) if len(rest) > 1 else 0.0
        pids = tuple(int(value) for value in rest[2:])
        events.append(Event(kind, int(job), int(attempt), worker, instant, pids))
    return events


def by_job(events: list[Event]) -> dict[int, list[Event]]:
    grouped: dict[int, list[Event]] = collections.defaultdict(list)
    for event in events:
        grouped[event.job].append(event)
    return grouped


def overlapping_attempts(events: list[Event]) -> list[int]:
    """Jobs of which an earlier attempt still wrote its `end` after a later attempt had started:
    two runs of one job at once, which fencing must make impossible."""
    bad: list[int] = []
    for job, lines in by_job(events).items():
        latest_start = 0
        for event in lines:
            if event.kind == "start":
                latest_start = max(latest_start, event.attempt)
            elif event.kind == "end" and event.attempt < latest_start:
                bad.append(job)
                break
    return sorted(bad)


def logging_script(log: Path, body: str) -> str:
    """A /bin/sh script that logs `start` (with its pid) and `end` around BODY."""
    who = '$JOBCTL_JOB_ID $JOBCTL_ATTEMPT $JOBCTL_WORKER'
    return (f'echo start {who} $(date +%s.%N) $$ >> {log}; {body}; '
            f'echo end {who} $(date +%s.%N) >> {log}')


# --- jobs and workers through the CLI -------------------------------------------------------------


def list_jobs(jobctl: Jobctl) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        jobctl.look("job", "list", "--limit", "0", "-o", "json"))
    return rows


def unfinished_ids(jobctl: Jobctl) -> list[int]:
    args = [part for state in UNFINISHED_STATES for part in ("--state", state)]
    out = jobctl.look("job", "list", *args, "--limit", "0", "-o", "ids")
    return [int(line) for line in out.split()]


def submit_batch(jobctl: Jobctl, path: Path, lines: list[str], *options: str) -> list[int]:
    path.write_text("".join(line + "\n" for line in lines))
    out = jobctl.look("job", "submit", *options, "--from-file", str(path))  # sets the scene
    ids = [int(line) for line in out.split()]
    assert len(ids) == len(lines), out
    return ids


def worker_rows(jobctl: Jobctl) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(jobctl.look("worker", "list", "--all", "-o", "json"))
    return rows


def worker_row(jobctl: Jobctl, pid: int) -> dict[str, Any] | None:
    rows = [row for row in worker_rows(jobctl) if row["pid"] == pid]
    return rows[-1] if rows else None


def wait_exit(worker: Worker, timeout_s: float) -> int | None:
    """The worker's exit status, or None if it is still running after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = worker.process.poll()
        if code is not None:
            return code
        time.sleep(0.05)
    return worker.process.poll()


def kill9(worker: Worker) -> None:
    """SIGKILL the worker's own process only (not its group: whatever it started must be
    dealt with by jobctl itself), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait(10)


def wait_gone(pids: list[int], timeout_s: float) -> float | None:
    """Poll until every pid has ended; the wall-clock time (time.time()) at which that was first
    seen, or None if one is still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        if all(process_gone(pid) for pid in pids):
            return time.time()
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def wait_event(log: Path, kind: str, job: int, attempt: int | None = None,
               timeout_s: float = 30.0) -> Event:
    def found() -> Event | None:
        for event in read_events(log):
            if event.kind == kind and event.job == job and attempt in (None, event.attempt):
                return event
        return None

    event: Event = wait_for(found, timeout_s,
                            lambda: f"no {kind!r} of job {job} (attempt {attempt}) within "
                                    f"{timeout_s}s; log:\n{_text(log)}",
                            interval_s=0.01)
    return event


def _text(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text()
    return "(none)"


# --- a network that fails silently ----------------------------------------------------------------


class SilentProxy:
    """Forwards 127.0.0.1:`port` to a PostgreSQL server, one thread per direction and connection.

    `cut()`: from then on nothing is forwarded in either direction and nothing is closed: bytes
    already read wait in the proxy, the rest waits in the kernel's buffers, and new connections
    are accepted but not connected onwards, so both ends see a network that went silent.
    `restore()` forwards again, late, as a healed network does once TCP has retransmitted.
    `close()` closes every socket (both ends then see the connection reset).
    """

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.port}" if user else f"127.0.0.1:{self.port}"
        self.url = urlunsplit(parts._replace(netloc=netloc))
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.held_bytes = 0  # read during a cut, forwarded only after restore()
        threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True).start()

    def cut(self) -> None:
        self._forwarding.clear()

    def restore(self) -> None:
        self._forwarding.set()

    def close(self) -> None:
        self._closed.set()
        self._forwarding.set()  # wakes every waiting thread, which then sees _closed
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._keep(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        # During a cut the SYN goes nowhere, as far as the client can tell: it waits.
        self._forwarding.wait()
        if self._closed.is_set():
            return
        try:
            upstream = socket.create_connection(self._target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        self._keep(upstream)
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while not self._closed.is_set():
            self._forwarding.wait()
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not self._forwarding.is_set():
                self.held_bytes += len(data)
                self._forwarding.wait()
            if self._closed.is_set():
                return
            try:
                if not data:  # the peer closed: pass that on, as a working network does
                    target.shutdown(socket.SHUT_WR)
                    return
                target.sendall(data)
            except OSError:
                return


# --- what ran at once, from the jobs' own start/end lines (the capacity tests) ----------------


def runs(events: list[Event]) -> dict[tuple[int, int], tuple[float, float | None, str]]:
    """Each attempt that really ran, by (job, attempt): (start, end or None, worker name), from
    the job's own `start`/`end` lines."""
    found: dict[tuple[int, int], tuple[float, float | None, str]] = {}
    for event in events:
        key = (event.job, event.attempt)
        if event.kind == "start":
            assert key not in found, f"attempt {key} started twice"
            found[key] = (event.time, None, event.worker)
        elif event.kind == "end":
            assert key in found, f"attempt {key} ended without a start"
            start, _, worker = found[key]
            found[key] = (start, event.time, worker)
    return found


def peak_overlap(intervals: Iterable[tuple[float, float]]) -> tuple[int, float]:
    """The most closed intervals [start, end] that hold one instant, and the first such instant
    (at equal instants a start counts before an end: touching intervals overlap)."""
    points = sorted(point for start, end in intervals for point in ((start, 0), (end, 1)))
    open_now, peak, at = 0, 0, 0.0
    for instant, is_end in points:
        open_now += -1 if is_end else 1
        if open_now > peak:
            peak, at = open_now, instant
    return peak, at


def describe_runs(intervals: dict[Any, tuple[float, float]], at: float) -> str:
    """The attempts open at instant `at`, for assertion messages."""
    return ", ".join(f"{key} [{start:.3f}, {end:.3f}]" for key, (start, end)
                     in sorted(intervals.items()) if start <= at <= end)


def wait_succeeded(jobctl: Jobctl, ids: list[int], timeout_s: int = 60) -> None:
    """`job wait` for every job (in this process: the waiting is not what is tested), then
    require each to have succeeded."""
    result = jobctl.in_process("job", "wait", *map(str, ids), "--timeout", f"{timeout_s}s")
    states = {row["id"]: row["state"] for row in list_jobs(jobctl)}
    not_ok = {job: states.get(job) for job in ids if states.get(job) != "succeeded"}
    assert not not_ok, f"jobs not succeeded: {not_ok}\n{result}"
    assert result.returncode == 0, result
