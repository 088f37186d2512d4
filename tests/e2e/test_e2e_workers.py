"""`worker list` sees a running worker; SIGTERM stops it cleanly and the list says so."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from typing import Any

import pytest
from e2e_support import Jobctl


def _worker_rows(jobctl: Jobctl, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(jobctl.ok("worker", "list", *args, "-o", "json"))
    return rows


def test_worker_list_shows_a_running_worker_and_then_it_stopped(jobctl: Jobctl) -> None:
    worker = jobctl.start_worker("--queue", "alpha,beta", "--concurrency", "3",
                                 "--name", "e2e-worker")

    rows = [row for row in _worker_rows(jobctl) if row["pid"] == worker.pid]
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["name"] == "e2e-worker"
    assert row["state"] == "running"
    assert row["queues"] == ["alpha", "beta"]
    assert row["concurrency"] == 3
    assert row["hostname"] == socket.gethostname()
    assert row["running_jobs"] == 0

    worker.process.send_signal(signal.SIGTERM)
    try:
        code = worker.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop within 10s of SIGTERM:\n{worker.log()}")
    assert code == 0, worker.log()

    assert not [r for r in _worker_rows(jobctl) if r["id"] == row["id"]], (
        "a stopped worker is listed without --all")
    stopped = [r for r in _worker_rows(jobctl, "--all") if r["id"] == row["id"]]
    assert len(stopped) == 1, stopped
    assert stopped[0]["state"] == "stopped"
