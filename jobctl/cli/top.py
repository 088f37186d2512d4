"""`jobctl top` (a live view of the cluster), `jobctl stats` (numbers for scripts and alerts), and
the re-print-on-change loop behind `job list --watch`."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from jobctl.cli.common import parse_duration, state
from jobctl.cli.render import OutputFormat, Terminal
from jobctl.errors import DatabaseUnavailable, InvalidInput

if TYPE_CHECKING:
    from rich.console import RenderableType

    from jobctl.store.engine import Database
    from jobctl.store.stats import QueueReport, Snapshot

T = TypeVar("T")

REFRESH_S = 1.0
MIN_REFRESH_S = 0.25  # a burst of notifications must not turn into a burst of queries
ONCE_WIDTH = 160  # columns for a snapshot printed to a pipe or file


def top(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Print one snapshot and exit."),
    interval: str = typer.Option("1s", "--interval", metavar="DURATION",
                                 help="Refresh this often (PostgreSQL notifications refresh "
                                      "sooner)."),
    window: str = typer.Option("1h", "--window", metavar="DURATION",
                               help="Count jobs that succeeded or failed within this window."),
) -> None:
    """A live, full-screen view of the cluster: queues, workers, running jobs, recent failures.

    Press q or Ctrl-C to leave. With --once (or when stdout is not a terminal) it prints one
    snapshot instead."""
    from jobctl.store.stats import read_snapshot

    st = state(ctx)
    interval_s = max(MIN_REFRESH_S, parse_duration(interval, "--interval") or REFRESH_S)
    window_s = _positive(parse_duration(window, "--window"), "--window")
    database = st.client().db
    if once or not st.terminal.stdout_is_tty:
        console = _console(st.terminal)
        console.print(render_snapshot(read_snapshot(database, window_s=window_s), database.where))
        return
    _live(database, st.terminal, interval_s, window_s)


def stats(
    ctx: typer.Context,
    window: str = typer.Option("1h", "--window", "-w", metavar="DURATION",
                               help="Count finished jobs within this window."),
    output: OutputFormat | None = typer.Option(None, "--output", "-o",
                                               help="table, plain or json.", show_default=False),
) -> None:
    """Queue depth, throughput and failure rate over a window.

    Per queue: depth (waiting, queued, running), jobs that succeeded or failed within the
    window, throughput, failure rate and how long the oldest due job has been queued.

    The JSON form (`-o json`) is meant for scripts and alerts; its rates are null when nothing
    finished in the window."""
    from jobctl.store.stats import read_queue_stats

    st = state(ctx)
    window_s = _positive(parse_duration(window, "--window"), "--window")
    report = read_queue_stats(st.client().db, window_s)
    terminal = st.terminal
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.IDS:
        raise InvalidInput("stats: -o ids is not supported; use table, plain or json")
    if fmt is OutputFormat.JSON:
        terminal.json(report.to_json())
        return
    terminal.table(*_stats_table(report, fmt), fmt)


def _stats_table(report: QueueReport, fmt: OutputFormat) -> tuple[list[str], list[list[Any]]]:
    from jobctl.timeparse import format_duration

    def rate(value: float | None) -> str | None:
        if value is None:
            return None
        return f"{value:.1%}" if fmt is OutputFormat.TABLE else f"{value:.4f}"

    headers = ["queue", "waiting", "queued", "running", "succeeded", "failed", "cancelled",
               "per_min", "failure_rate", "oldest_queued"]
    rows = [
        [q.queue, q.waiting, q.queued, q.running, q.succeeded, q.failed, q.cancelled,
         f"{q.throughput_per_min(report.window_s):.2f}", rate(q.failure_rate()),
         (format_duration(q.oldest_queued_s) if fmt is OutputFormat.TABLE
          else q.oldest_queued_s)]
        for q in [*report.queues, report.total]
    ]
    return headers, rows


def _positive(seconds: float | None, option: str) -> float:
    if seconds is None or seconds <= 0:
        raise InvalidInput(f"{option} must be longer than 0s")
    return seconds


# --- rendering ----------------------------------------------------------------------------------


def _console(terminal: Terminal) -> Any:
    from rich.console import Console

    if terminal.stdout_is_tty:
        return Console(no_color=terminal.no_color, highlight=False)
    return Console(no_color=True, highlight=False, width=ONCE_WIDTH, color_system=None)


def render_snapshot(snap: Snapshot, where: str) -> RenderableType:
    """The whole view. Every value goes in as Text: names and errors are never Rich markup."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from jobctl.timeparse import format_age, format_duration, format_instant

    def table(title: str, *headers: str) -> Table:
        grid = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False,
                     expand=False)
        for header in headers:
            grid.add_column(header, overflow="fold")
        return grid

    def cells(*values: Any) -> list[Text]:
        return [Text("-" if value is None else str(value), style=_style(value))
                for value in values]

    report = snap.report
    window = format_duration(report.window_s)
    queues = table("Queues", "QUEUE", "WAITING", "QUEUED", "RUNNING", f"SUCCEEDED {window}",
                   f"FAILED {window}", "OLDEST QUEUED")
    for q in [*report.queues, report.total]:
        queues.add_row(*cells(q.queue, q.waiting, q.queued, q.running, q.succeeded, q.failed,
                              format_duration(q.oldest_queued_s)))
    workers = table("Workers", "ID", "NAME", "HOST", "PID", "SLOTS", "QUEUES", "HEARTBEAT",
                    "STATE")
    for w in snap.workers:
        workers.add_row(*cells(w.id, w.name, w.hostname, w.pid,
                               f"{w.running_jobs}/{w.concurrency}", ",".join(w.queues),
                               format_age(w.heartbeat_at, snap.now), w.state.value))
    running = table(f"Running jobs ({snap.running_total})", "ID", "NAME", "QUEUE", "WORKER",
                    "ELAPSED")
    for r in snap.running:
        running.add_row(*cells(r.id, r.name, r.queue, r.worker, format_duration(r.elapsed_s)))
    failures = table("Recent failures", "ID", "NAME", "QUEUE", "STATE", "EXIT", "FINISHED",
                     "ERROR")
    for f in snap.failures:
        failures.add_row(*cells(f.id, f.name, f.queue, f.state, f.exit_code,
                                format_age(f.finished_at, snap.now), _one_line(f.error)))
    header = Text(f"jobctl top · {where} · {format_instant(snap.now)}", style="bold")
    return Group(header, queues, workers, running, failures)


def _one_line(text: str | None, width: int = 80) -> str | None:
    if text is None:
        return None
    line = text.replace("\n", " ").replace("\t", " ")
    return line if len(line) <= width else line[: width - 1] + "…"


_STYLES = {"failed": "red", "lost": "red", "running": "cyan", "draining": "yellow"}


def _style(value: Any) -> str:
    return _STYLES.get(value, "") if isinstance(value, str) else ""


# --- the live view ------------------------------------------------------------------------------


def _live(database: Database, terminal: Terminal, interval_s: float, window_s: float) -> None:
    import logging

    from rich.live import Live
    from rich.text import Text

    from jobctl.store.stats import read_snapshot

    # The listener's reconnect warnings would scribble over the full-screen view; the view
    # shows an unreachable database itself.
    logging.getLogger("jobctl.store.notify").addHandler(logging.NullHandler())
    logging.getLogger("jobctl.store.notify").propagate = False
    console = _console(terminal)
    with _wake_ups(database) as woken, _keys() as read_key, contextlib.suppress(
            KeyboardInterrupt), Live(Text("loading…"), console=console, screen=True,
                                     auto_refresh=False, transient=True) as live:
        while True:
            woken.clear()
            try:
                view: RenderableType = render_snapshot(read_snapshot(database, window_s=window_s),
                                                       database.where)
            except DatabaseUnavailable as error:
                view = Text(f"jobctl top: {error.message} (retrying; q to quit)", style="red")
            live.update(view, refresh=True)
            started = time.monotonic()
            while True:
                elapsed = time.monotonic() - started
                if elapsed >= interval_s or (woken.is_set() and elapsed >= MIN_REFRESH_S):
                    break
                if read_key(min(0.1, interval_s - elapsed)) in ("q", "Q"):
                    return


@contextlib.contextmanager
def _wake_ups(database: Database) -> Iterator[threading.Event]:
    """An event that PostgreSQL notifications (submits, ends, cancels, stops) set."""
    woken = threading.Event()
    listener = None
    if database.is_postgres:
        from jobctl.store import notify

        listener = notify.Listener(
            database.conninfo,
            [notify.JOBS_CHANNEL, notify.DONE_CHANNEL, notify.CANCEL_CHANNEL,
             notify.WORKER_CHANNEL],
            lambda channel, payload: woken.set())
        listener.start()
    try:
        yield woken
    finally:
        if listener is not None:
            listener.stop()


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[float], str | None]]:
    """A function that waits up to a timeout for one key press. Keys are read in cbreak mode
    (no Enter needed) only when stdin is a terminal, whose settings are restored on the way out."""
    if not sys.stdin.isatty():
        def sleep(timeout: float) -> str | None:
            time.sleep(max(0.0, timeout))
            return None

        yield sleep
        return
    import os
    import select
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def read_key(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
        if not ready:
            return None
        return os.read(fd, 1).decode(errors="replace")

    try:
        tty.setcbreak(fd)
        yield read_key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# --- job list --watch ---------------------------------------------------------------------------

_NOTHING = object()


def watch_changes(database: Database, fetch: Callable[[], T], show: Callable[[T], None],
                  interval_s: float = REFRESH_S) -> None:
    """Show `fetch()`'s result, then again each time it changes (like `kubectl get -w`), until
    interrupted. Polls every `interval_s`; PostgreSQL notifications make it look sooner."""
    last: object = _NOTHING
    with _wake_ups(database) as woken:
        while True:
            woken.clear()
            current = fetch()
            if current != last:
                if last is not _NOTHING:
                    sys.stdout.write("\n")  # one blank line between two versions
                show(current)
                sys.stdout.flush()
                last = current
            woken.wait(interval_s)
            time.sleep(MIN_REFRESH_S if woken.is_set() else 0.0)
