"""Helpers for the end-to-end tests: the real `jobctl` executable, run as subprocesses.

The fixtures that hand these out are in conftest.py; test modules import the plain functions
from here (`from e2e_support import wait_for`), as the suite does with `pgcluster`, since two
conftest.py files cannot both be imported by that name.

`Jobctl` (the `jobctl` fixture) runs the CLI against the test's database and returns the
CompletedProcess; `Jobctl.start_worker(...)` starts a background worker in a session of its own,
and the fixture's teardown always stops it (SIGTERM, then SIGKILL of its group), so no test leaves
a worker or a job behind, whatever happens to it.

Every CLI call is a fresh Python process (about a second on a slow machine), so tests wait for
things with deadlines and poll in-process where they can (files, pids), never with long sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from inprocess import Result

JOBCTL = Path(sys.executable).parent / "jobctl"

# Upper bound for one CLI call that should be quick; generous for a loaded 2-core machine.
CALL_TIMEOUT_S = 60.0

# Worker options that keep the tests fast: a short lease (renewals, cancels checked on SQLite
# every lease/3 at most 0.5 s, rescue), short shutdown grace periods.
FAST_WORKER_OPTIONS = ("--lease", "5s", "--grace", "2s", "--kill-grace", "1s")


class Worker:
    """A background `jobctl worker start` process, its output going to a log file."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def wait_started(self, timeout_s: float = 30.0) -> None:
        """Until the worker has registered itself in the database (it logs "started"; not with
        --quiet)."""
        wait_for(lambda: " started: " in self.log() or self.process.poll() is not None,
                 timeout_s, lambda: f"worker {self.pid} did not start:\n{self.log()}")
        assert self.process.poll() is None, f"worker exited early:\n{self.log()}"

    def exit_after(self, signum: int, timeout_s: float = 15.0) -> tuple[int, float]:
        """Send the worker `signum`; returns (its exit status, seconds it took to exit). Fails
        the test, with the worker's log, when it has not exited within `timeout_s`."""
        self.process.send_signal(signum)
        started = time.monotonic()
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not exit within {timeout_s:.0f}s of signal {signum}:\n"
                        f"{self.log()}")
        return code, time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM the group; a second SIGTERM (stop now) and finally SIGKILL if it lingers."""
        for signum, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGTERM, 5.0),
                               (signal.SIGKILL, 10.0)):
            if self.process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(wait_s)
        # Anything the worker left in its group (it should leave nothing).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


class Jobctl:
    """Runs the real `jobctl` with JOBCTL_DATABASE_URL pointing at the test database."""

    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.database_url = database_url
        self.tmp_path = tmp_path
        self.env = {**os.environ, "JOBCTL_DATABASE_URL": database_url}
        self._background: list[subprocess.Popen[bytes]] = []
        self.workers: list[Worker] = []

    # --- one-shot commands ----------------------------------------------------------------------

    def __call__(self, *args: str, input: bytes | None = None,
                 timeout: float = CALL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run `jobctl ARGS…`; stdout and stderr are captured as text (pipes: not a terminal)."""
        result = self.run_bytes(*args, input=input, timeout=timeout)
        return subprocess.CompletedProcess(
            result.args, result.returncode,
            result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace"))

    def run_bytes(self, *args: str, input: bytes | None = None,
                  timeout: float = CALL_TIMEOUT_S) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(JOBCTL), *args], input=input, capture_output=True,
                              env=self.env, timeout=timeout, check=False,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def ok(self, *args: str, timeout: float = CALL_TIMEOUT_S) -> str:
        """Run and require exit status 0; returns stdout."""
        result = self(*args, timeout=timeout)
        assert result.returncode == 0, describe(result)
        return result.stdout

    def submit(self, *args: str) -> int:
        """`job submit ARGS…` (put `--` before the command); returns the new job's id.

        In this process (`in_process`): a submit here sets the scene for the workers and
        schedulers under test, which are real processes, and a Python start for each (about
        150 ms of CPU on PostgreSQL, psycopg's import most of it) was a tenth of the suite's CPU.
        The tests of `job submit` itself (exit codes, --wait, standard input, the bare id on a
        pipe) run the real executable (`self(...)`, `run_bytes`)."""
        result = self.in_process("job", "submit", *args)
        assert result.exit_code == 0 and "Traceback" not in result.stderr, result
        assert re.fullmatch(r"\d+\n", result.stdout), (
            f"submit did not print a bare id: {result.stdout!r}")
        return int(result.stdout)

    def in_process(self, *args: str) -> Result:
        """`jobctl ARGS…` in this process, with this object's environment, for what sets the
        scene or waits for it (submits, `job wait` for jobs whose running is the subject): the
        CLI's code path is the same (tests/inprocess.py), without a Python start per call."""
        from inprocess import run_cli

        return run_cli(*args, env=self._differences())

    def _differences(self) -> dict[str, str | None]:
        """What this object's environment sets, or removes, beyond this process's."""
        changed: dict[str, str | None] = {
            name: value for name, value in self.env.items() if os.environ.get(name) != value}
        changed.update({name: None for name in os.environ if name not in self.env})
        return changed

    def look(self, *args: str) -> str:
        """Run a command that only reads (`job status`, `job list` …) in this process, and require
        exit status 0; returns stdout. The workers and schedulers under test are real processes;
        what a test merely observes, often many times a second while it waits, need not cost a
        Python start each time (the CLI's code path is the same: tests/inprocess.py). Also for
        what merely sets the scene (a bulk submit, `workflow run`)."""
        result = self.in_process(*args)
        assert result.exit_code == 0 and "Traceback" not in result.stderr, result
        return result.stdout

    def status(self, job_id: int) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.look("job", "status", str(job_id), "-o", "json"))
        return document

    def burst(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """`worker start --burst ARGS…` in the foreground; requires exit status 0."""
        result = self("worker", "start", "--burst", *FAST_WORKER_OPTIONS, *args, timeout=timeout)
        assert result.returncode == 0, describe(result)
        return result

    # --- background processes -------------------------------------------------------------------

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start `jobctl ARGS…` in the background (own session); always killed in teardown."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        process = subprocess.Popen([str(JOBCTL), *args], env=self.env, start_new_session=True,
                                   **kwargs)
        self._background.append(process)
        return process

    def start_worker(self, *args: str, wait_started: bool = True) -> Worker:
        """A background `jobctl worker start` (FAST_WORKER_OPTIONS, then ARGS, which win)."""
        log_path = self.tmp_path / f"worker-{len(self.workers) + 1}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [str(JOBCTL), "worker", "start", *FAST_WORKER_OPTIONS, *args],
                env=self.env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                start_new_session=True)
        worker = Worker(process, log_path)
        self.workers.append(worker)
        if wait_started:
            worker.wait_started()
        return worker

    def __enter__(self) -> Jobctl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        for process in self._background:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=10)
        for worker in self.workers:
            # A frozen (SIGSTOPped) worker would sit on SIGTERM until the SIGKILL: wake it first.
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(worker.pid, signal.SIGCONT)
            worker.stop()
        for worker in self.workers:
            # Shown by pytest only when the test failed: what the workers said.
            print(f"--- {worker.log_path.name} (pid {worker.pid}, exit "
                  f"{worker.process.returncode}) ---\n{worker.log()[-6000:]}")


# --- small helpers --------------------------------------------------------------------------------


def describe(result: subprocess.CompletedProcess[Any]) -> str:
    """A failed command, for assertion messages."""
    args = result.args if isinstance(result.args, Sequence) else [result.args]
    return (f"{' '.join(map(str, args))!s}\nexit status {result.returncode}\n"
            f"stdout: {result.stdout!r}\nstderr: {result.stderr!r}")


def wait_for(condition: Callable[[], Any], timeout_s: float,
             message: Callable[[], str] | str = "condition not met",
             interval_s: float = 0.05) -> Any:
    """Poll `condition` until it returns something true; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(message() if callable(message) else message)
        time.sleep(interval_s)


def parse_time(text: str) -> datetime:
    """An instant from `-o json`: ISO 8601, in UTC, saying so (the CLI contract)."""
    instant = datetime.fromisoformat(text)
    assert instant.utcoffset() == timedelta(0), f"{text!r} is not marked as UTC"
    return instant


def process_gone(pid: int) -> bool:
    """Whether process `pid` has ended. A zombie counts as ended: a killed grandchild is
    reparented to PID 1, and in a container PID 1 may never reap it, so os.kill(pid, 0) alone
    would still succeed for a process that is long dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def read_until(stream: Any, needle: bytes, timeout_s: float) -> bytes:
    """Read from a pipe (unbuffered, as it comes) until `needle` has arrived or EOF; returns
    everything read. Fails the test at the deadline."""
    data = b""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout_s
    while needle not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"{needle!r} did not arrive within {timeout_s}s; got {data!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    return data


# --- fixtures (registered by tests/e2e/conftest.py and tests/chaos/conftest.py) ---------------


@pytest.fixture
def jobctl(db_url: str, tmp_path: Path) -> Iterator[Jobctl]:
    """The real CLI on this test's database, on both backends."""
    with Jobctl(db_url, tmp_path) as runner:
        yield runner


@pytest.fixture
def jobctl_pg(pg_url: str, tmp_path: Path) -> Iterator[Jobctl]:
    """The real CLI on a PostgreSQL database only."""
    with Jobctl(pg_url, tmp_path) as runner:
        yield runner


@pytest.fixture
def jobctl_sqlite(sqlite_url: str, tmp_path: Path) -> Iterator[Jobctl]:
    """The real CLI on an SQLite database only."""
    with Jobctl(sqlite_url, tmp_path) as runner:
        yield runner
