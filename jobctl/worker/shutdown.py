"""How a worker stops, on a thread of its own: the signals, the drain deadline, the kills, and
the bound on a "stop now" that the main loop cannot finish.

States, forward only (`advance`):

    RUNNING   claiming and running jobs
    DRAINING  no more claims; running jobs may finish until the deadline (SIGTERM, SIGINT,
              `jobctl worker stop`: --grace from then)
    STOPPING  the deadline passed (or a second signal said "now"): running jobs get SIGTERM,
              SIGKILL --kill-grace later, and at-least-once ones are released to the queue
    STOPPED   the worker has ended (its main loop and its clean-up are done)

Why a thread, and why no Python signal handler does anything: a Python handler runs on the main
thread between two bytecodes, possibly inside a lock the interrupted code holds. The worker's
used to set a threading.Event, whose internal lock the main loop holds for a moment on every
wait() and clear(): a signal landing there deadlocked the main thread in its own handler
(logged "SIGTERM again: stopping now", then killed nothing and never exited). And a handler
runs only once the main thread is back in Python code, not while it waits in a database
statement. So the handlers are empty; `signal.set_wakeup_fd` makes the C-level handler write the
signal's number to a pipe at once, whatever the main thread is doing, and this thread reads it.

The deadline is enforced here, independently of the main loop (ARCHITECTURE: Shutdown), and so
is the bound after a second signal: if the worker has not ended --kill-grace + STOP_BOUND_S
after it (its main loop waits on a lock, a dead server, ...), `abandon` writes what it can on a
connection of its own, for a bounded time, and exits the process.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("jobctl.worker")

# After "stop now", how long beyond --kill-grace the worker may take to end on its own (write
# the results of the killed jobs, deregister) before it is abandoned (see `Shutdown`).
STOP_BOUND_S = 3.0
# How long abandoning may spend writing results on a connection of its own.
ABANDON_WRITE_S = 2.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)
_WAKE = 0  # the byte other threads write to the pipe: "look again" (no signal is number 0)


class State(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"


_ORDER = list(State)


def advance(current: State, wanted: State) -> State:
    """The state after asking for `wanted` in `current`: a worker's state only moves forward
    (a drain asked for while stopping changes nothing)."""
    return wanted if _ORDER.index(wanted) > _ORDER.index(current) else current


def _noted(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler of SIGTERM and SIGINT: nothing (see the module docstring); the
    C-level handler has written the signal to the wakeup pipe already."""


class Shutdown:
    """The worker's state and the thread that moves it on signals and deadlines.

    `kill_jobs(hard)`: SIGTERM (SIGKILL when `hard`) every job the worker holds, marked
    released; `wake_main()`: wake the main loop; `abandon()`: write what can be written in a
    bounded time and end the process. All three are called on this object's thread."""

    def __init__(self, *, grace_s: float, kill_grace_s: float,
                 kill_jobs: Callable[[bool], None], wake_main: Callable[[], None],
                 abandon: Callable[[], None]) -> None:
        self.grace_s = grace_s
        self.kill_grace_s = kill_grace_s
        self._kill_jobs = kill_jobs
        self._wake_main = wake_main
        self._abandon = abandon
        self._lock = threading.Lock()  # never taken in a signal handler: there is none
        self._state = State.RUNNING
        self._deadline = float("inf")  # when running jobs are killed (time.monotonic())
        self._killed_at: float | None = None  # when they were sent SIGTERM
        self._hard_killed = False
        self._stop_now_at: float | None = None  # the second signal
        self._abandoned = False
        self.signals = 0  # SIGTERM/SIGINT received (read and written on this thread only)
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)  # required by set_wakeup_fd
        self._previous_wakeup_fd: int | None = None
        self._thread = threading.Thread(target=self._run, name="jobctl-shutdown", daemon=True)

    # --- what the other threads see ----------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def claiming(self) -> bool:
        return self._state is State.RUNNING

    @property
    def stopping_now(self) -> bool:
        """A second signal came: nothing is worth waiting for any more."""
        return self._stop_now_at is not None

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Take over SIGTERM and SIGINT (on the main thread only: elsewhere Python allows no
        handlers) and start the thread."""
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                signal.signal(signum, _noted)
            self._previous_wakeup_fd = signal.set_wakeup_fd(self._write_fd,
                                                            warn_on_full_buffer=False)
        self._thread.start()

    def finished(self) -> None:
        """The worker has ended: STOPPED; the thread ends, the wakeup pipe is handed back.
        A signal from now on is ignored (the process is about to exit)."""
        with self._lock:
            self._state = State.STOPPED
        self._poke()
        self._thread.join(timeout=5.0)
        if self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None
        if not self._thread.is_alive():
            os.close(self._read_fd)
            os.close(self._write_fd)

    # --- requests, from any thread ------------------------------------------------------------

    def drain(self, grace_s: float) -> bool:
        """Stop claiming; running jobs are killed `grace_s` from now (or sooner, if an earlier
        drain said so). True when this started the drain (the worker was RUNNING)."""
        with self._lock:
            started = self._state is State.RUNNING
            self._state = advance(self._state, State.DRAINING)
            self._deadline = min(self._deadline, time.monotonic() + grace_s)
        self._poke()
        self._wake_main()
        return started

    def stop_now(self) -> None:
        """Kill the running jobs now, and end the worker within --kill-grace + STOP_BOUND_S."""
        with self._lock:
            now = time.monotonic()
            self._state = advance(self._state, State.DRAINING)
            self._deadline = min(self._deadline, now)
            if self._stop_now_at is None:
                self._stop_now_at = now
        self._poke()
        self._wake_main()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # full (it will be read anyway) or closed
            os.write(self._write_fd, bytes([_WAKE]))

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while self._state is not State.STOPPED:
            select.select([self._read_fd], [], [], self._timeout(time.monotonic()))
            try:
                received = os.read(self._read_fd, 512)
            except BlockingIOError:
                received = b""
            for signum in received:
                if signum != _WAKE:
                    self.on_signal(signum)
            try:
                self.enforce(time.monotonic())
            except Exception:  # this thread must outlive any surprise: it owns the deadline
                log.exception("shutdown: enforcing the deadline failed")

    def on_signal(self, signum: int) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            log.info("%s: finishing running jobs (up to %.0fs); again to stop now", name,
                     self.grace_s)
            self.drain(self.grace_s)
        else:
            log.info("%s again: stopping now", name)
            self.stop_now()

    def _timeout(self, now: float) -> float | None:
        """How long the thread may sleep: until the next thing `enforce` must do."""
        due = [self._deadline] if self._killed_at is None else []
        if self._killed_at is not None and not self._hard_killed:
            due.append(self._killed_at + self.kill_grace_s)
        if self._stop_now_at is not None and not self._abandoned:
            due.append(self._stop_now_at + self.kill_grace_s + STOP_BOUND_S)
        pending = [t for t in due if t != float("inf")]
        if self._state is State.STOPPED or not pending:
            return None
        return max(0.0, min(pending) - now)

    def enforce(self, now: float) -> None:
        """Do what is due at `now`: kill at the deadline, SIGKILL --kill-grace later, abandon
        a worker that has not ended STOP_BOUND_S after that when it was told to stop now."""
        with self._lock:
            if self._state is State.STOPPED:
                return
            kill = self._killed_at is None and now >= self._deadline
            if kill:
                self._state = advance(self._state, State.STOPPING)
                self._killed_at = now
            hard = (self._killed_at is not None and not self._hard_killed
                    and now >= self._killed_at + self.kill_grace_s)
            if hard:
                self._hard_killed = True
            abandon = (self._stop_now_at is not None and not self._abandoned
                       and now >= self._stop_now_at + self.kill_grace_s + STOP_BOUND_S)
            if abandon:
                self._abandoned = True
        if kill:
            self._kill_jobs(False)
        if hard:
            self._kill_jobs(True)
        if kill or hard:
            self._wake_main()
        if abandon:
            self._abandon()
