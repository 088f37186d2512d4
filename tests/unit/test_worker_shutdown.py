"""The worker's shutdown thread alone (jobctl/worker/shutdown.py): its states, its deadlines and
its signals, without a database or a worker."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from jobctl.worker import shutdown
from jobctl.worker.shutdown import Shutdown, State, advance


class Recorder:
    """The worker's side of a Shutdown: what it was asked to do, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.woken = 0

    def kill_jobs(self, hard: bool) -> None:
        self.calls.append("SIGKILL" if hard else "SIGTERM")

    def wake_main(self) -> None:
        self.woken += 1

    def abandon(self) -> None:
        self.calls.append("abandon")

    def shutdown(self, grace_s: float = 30.0, kill_grace_s: float = 2.0) -> Shutdown:
        return Shutdown(grace_s=grace_s, kill_grace_s=kill_grace_s, kill_jobs=self.kill_jobs,
                        wake_main=self.wake_main, abandon=self.abandon)


@pytest.mark.parametrize(("current", "wanted", "after"), [
    (State.RUNNING, State.DRAINING, State.DRAINING),
    (State.RUNNING, State.STOPPING, State.STOPPING),
    (State.DRAINING, State.STOPPING, State.STOPPING),
    (State.DRAINING, State.RUNNING, State.DRAINING),
    (State.STOPPING, State.DRAINING, State.STOPPING),
    (State.STOPPED, State.DRAINING, State.STOPPED),
    (State.STOPPING, State.STOPPED, State.STOPPED),
])
def test_states_only_move_forward(current: State, wanted: State, after: State) -> None:
    assert advance(current, wanted) is after


def test_a_drain_kills_at_the_deadline_then_sigkills_after_the_kill_grace() -> None:
    worker = Recorder()
    stopper = worker.shutdown(grace_s=30.0, kill_grace_s=2.0)
    assert stopper.claiming and stopper.state is State.RUNNING
    assert stopper.drain(30.0) is True
    assert stopper.drain(60.0) is False, "a second drain is not a new one"
    assert stopper.state is State.DRAINING and not stopper.claiming and worker.woken == 2
    now = time.monotonic()

    stopper.enforce(now + 29.0)
    assert worker.calls == [] and stopper.state is State.DRAINING
    stopper.enforce(now + 30.5)
    assert worker.calls == ["SIGTERM"] and stopper.state is State.STOPPING
    stopper.enforce(now + 31.0)
    assert worker.calls == ["SIGTERM"], "SIGKILL before the kill grace was over"
    stopper.enforce(now + 32.6)
    stopper.enforce(now + 3600.0)
    # Not told to stop now: the main loop may take its time writing results; never abandoned.
    assert worker.calls == ["SIGTERM", "SIGKILL"]


def test_stop_now_kills_at_once_and_abandons_a_worker_that_does_not_end_in_time() -> None:
    worker = Recorder()
    stopper = worker.shutdown(grace_s=60.0, kill_grace_s=1.0)
    stopper.drain(60.0)
    stopper.stop_now()
    assert stopper.stopping_now
    now = time.monotonic()
    stopper.enforce(now)
    assert worker.calls == ["SIGTERM"] and stopper.state is State.STOPPING
    stopper.enforce(now + 1.1)
    assert worker.calls == ["SIGTERM", "SIGKILL"]
    stopper.enforce(now + 1.0 + shutdown.STOP_BOUND_S - 0.2)
    assert "abandon" not in worker.calls
    stopper.enforce(now + 1.0 + shutdown.STOP_BOUND_S + 0.1)
    stopper.enforce(now + 1.0 + shutdown.STOP_BOUND_S + 5.0)
    assert worker.calls == ["SIGTERM", "SIGKILL", "abandon"], "abandoned once, and only then"


def test_a_drain_after_the_kill_changes_nothing() -> None:
    worker = Recorder()
    stopper = worker.shutdown(kill_grace_s=1.0)
    stopper.stop_now()
    now = time.monotonic()
    stopper.enforce(now)
    stopper.drain(0.0)
    assert stopper.state is State.STOPPING
    stopper.enforce(now + 1.5)
    assert worker.calls == ["SIGTERM", "SIGKILL"]


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """The process's SIGTERM/SIGINT handlers as they were before the test."""
    saved = {signum: signal.getsignal(signum) for signum in shutdown.SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_signals_reach_the_thread_while_the_main_thread_is_inside_an_event_wait(
        signal_handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flake this thread fixed: a handler that set a threading.Event deadlocked the main
    thread when the signal landed while it held the Event's lock (in wait() or clear(), which
    the main loop calls all the time). Here the main thread does nothing else, and two SIGTERMs
    must still drain, then kill, then abandon."""
    if threading.current_thread() is not threading.main_thread():
        pytest.fail("signal handlers can only be installed on the main thread")
    monkeypatch.setattr(shutdown, "STOP_BOUND_S", 0.2)
    worker = Recorder()
    abandoned = threading.Event()
    stopper = Shutdown(grace_s=60.0, kill_grace_s=0.1, kill_jobs=worker.kill_jobs,
                       wake_main=worker.wake_main, abandon=abandoned.set)
    stopper.start()

    def send_two() -> None:
        for _ in range(2):
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_two)
    sender.start()
    event = threading.Event()
    give_up = time.monotonic() + 10.0
    while not abandoned.is_set() and time.monotonic() < give_up:
        event.clear()
        event.wait(0.0001)
    sender.join()
    stopper.finished()
    assert abandoned.is_set(), f"not abandoned; the worker was asked for {worker.calls}"
    assert stopper.signals == 2 and worker.calls == ["SIGTERM", "SIGKILL"]
    assert stopper.state is State.STOPPED
