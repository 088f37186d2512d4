"""`worker start` and `scheduler run` speak sd_notify to a real datagram socket, as systemd's
Type=notify expects: READY=1 once up (a worker: registered), WATCHDOG=1 from the heartbeat or
the scheduler's pass while WATCHDOG_USEC asks, STOPPING=1 when a SIGTERM starts the stop."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import FAST_WORKER_OPTIONS, JOBCTL, Jobctl


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    yield path, sock
    sock.close()


def messages_until(sock: socket.socket, wanted: str, timeout_s: float) -> list[list[str]]:
    """Every datagram until one holding the line `wanted` (the test fails after timeout_s)."""
    seen: list[list[str]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            lines = sock.recv(4096).decode().split("\n")
        except TimeoutError:
            break
        seen.append(lines)
        if wanted in lines:
            return seen
    pytest.fail(f"no {wanted} within {timeout_s}s; got {seen}")


@pytest.mark.parametrize("command", [
    ["worker", "start", *FAST_WORKER_OPTIONS, "--lease", "3s"],
    ["scheduler", "run", "--poll-interval", "0.5s"],
], ids=["worker", "scheduler"])
def test_ready_watchdog_and_stopping(jobctl: Jobctl, notify_socket: tuple[str, socket.socket],
                                     command: list[str], tmp_path: Path) -> None:
    path, sock = notify_socket
    log = (tmp_path / "process.log").open("wb")
    process = subprocess.Popen(
        [str(JOBCTL), *command], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        env={**jobctl.env, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"},
        start_new_session=True)
    try:
        [ready] = messages_until(sock, "READY=1", 60)
        assert f"MAINPID={process.pid}" in ready
        if command[0] == "worker":  # registered before it says so
            listed = json.loads(jobctl.look("worker", "list", "-o", "json"))
            assert any(w["pid"] == process.pid for w in listed)
        pings = [m for m in messages_until(sock, "WATCHDOG=1", 10) if m == ["WATCHDOG=1"]]
        pings += [m for m in messages_until(sock, "WATCHDOG=1", 10) if m == ["WATCHDOG=1"]]
        assert len(pings) == 2
        process.send_signal(signal.SIGTERM)
        messages_until(sock, "STOPPING=1", 30)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
