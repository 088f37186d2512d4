"""`jobctl top` (a live view of the cluster), `jobctl stats` (numbers for scripts and alerts), and
the re-print-on-change loop behind `job list --watch`."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from jobctl.cli.common import output_option, parse_duration, refuse_ids, state
from jobctl.cli.render import OutputFormat, Terminal
from jobctl.errors import DatabaseUnavailable, InvalidInput

if TYPE_CHECKING:
    from rich.console import RenderableType

    from jobctl.client import Client, QueueReport, Snapshot

T = TypeVar("T")

REFRESH_S = 1.0
MIN_REFRESH_S = 0.25  # a burst of notifications must not turn into a burst of queries


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
    st = state(ctx)
    interval_s = max(MIN_REFRESH_S, parse_duration(interval, "--interval") or REFRESH_S)
    window_s = _positive(parse_duration(window, "--window"), "--window")
    client = st.client()
    if once or not st.terminal.stdout_is_tty:
        # Cut to the terminal on one; whole values when piped.
        width = st.terminal.width(OutputFormat.TABLE)
        st.terminal.print_rich(render_snapshot(client.top_snapshot(window_s=window_s),
                                               client.where, width))
        return
    _live(client, st.terminal, interval_s, window_s)


def stats(
    ctx: typer.Context,
    window: str = typer.Option("1h", "--window", "-w", metavar="DURATION",
                               help="Count finished jobs within this window."),
    output: OutputFormat | None = output_option(),
) -> None:
    """Queue depth, throughput and failure rate over a window.

    Per queue: depth (waiting, queued, running), jobs that succeeded or failed within the
    window, throughput, failure rate and how long the oldest due job has been queued; then the
    p50 and p95 of the duration, CPU seconds (user + system) and peak memory of the attempts
    that ran to their end within the window (in a second table on a terminal, as more columns
    when piped).

    The JSON form (`-o json`) is meant for scripts and alerts; its rates are null when nothing
    finished in the window."""
    refuse_ids(output, "stats")
    st = state(ctx)
    window_s = _positive(parse_duration(window, "--window"), "--window")
    report = st.client().queue_stats(window_s)
    terminal = st.terminal
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        terminal.json(report.to_json())
        return
    terminal.table(*_stats_table(report, fmt), fmt)
    if fmt.for_people:  # the spread of what attempts took, beside (plain: after) the counts
        terminal.out()
        terminal.table(*_usage_table(report), fmt)


def _stats_table(report: QueueReport, fmt: OutputFormat) -> tuple[list[str], list[list[Any]]]:
    from jobctl.timeparse import format_duration

    def rate(value: float | None) -> str | None:
        if value is None:
            return None
        return f"{value:.1%}" if fmt.for_people else f"{value:.4f}"

    if fmt.for_people:
        # Short headers, so that the table fits 80 columns: ok = succeeded within the window.
        headers = ["queue", "waiting", "queued", "running", "ok", "failed", "cancelled", "/min",
                   "fail%", "oldest"]
    else:
        headers = ["queue", "waiting", "queued", "running", "succeeded", "failed", "cancelled",
                   "per_min", "failure_rate", "oldest_queued", "attempts_ended",
                   "duration_p50", "duration_p95", "cpu_p50", "cpu_p95", "peak_memory_p50",
                   "peak_memory_p95"]
    rows = [
        [q.queue, q.waiting, q.queued, q.running, q.succeeded, q.failed, q.cancelled,
         f"{q.throughput_per_min(report.window_s):.2f}", rate(q.failure_rate()),
         (format_duration(q.oldest_queued_s) if fmt.for_people else q.oldest_queued_s)]
        + ([] if fmt.for_people else [
            q.attempts_ended, _figure(q.duration_s.p50), _figure(q.duration_s.p95),
            _figure(q.cpu_s.p50), _figure(q.cpu_s.p95), _bytes(q.peak_memory_bytes.p50),
            _bytes(q.peak_memory_bytes.p95)])
        for q in [*report.queues, report.total]
    ]
    return headers, rows


def _figure(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"


def _bytes(value: float | None) -> int | None:
    return None if value is None else round(value)


def _usage_table(report: QueueReport) -> tuple[list[str], list[list[Any]]]:
    """For people: per queue, attempts that ended and the p50/p95 of their duration, CPU
    seconds and peak memory."""
    from jobctl.capacity import format_size
    from jobctl.timeparse import format_duration

    def seconds(value: float | None) -> str | None:
        return None if value is None else format_duration(value)

    def cpu(value: float | None) -> str | None:
        return None if value is None else f"{value:.2f}s"

    def memory(value: float | None) -> str | None:
        return None if value is None else format_size(round(value))

    headers = ["queue", "attempts", "time p50", "time p95", "cpu p50", "cpu p95", "mem p50",
               "mem p95"]
    rows = [[q.queue, q.attempts_ended, seconds(q.duration_s.p50), seconds(q.duration_s.p95),
             cpu(q.cpu_s.p50), cpu(q.cpu_s.p95), memory(q.peak_memory_bytes.p50),
             memory(q.peak_memory_bytes.p95)]
            for q in [*report.queues, report.total]]
    return headers, rows


def _positive(seconds: float | None, option: str) -> float:
    if seconds is None or seconds <= 0:
        raise InvalidInput(f"{option} must be longer than 0s")
    return seconds


# --- rendering ----------------------------------------------------------------------------------


def _console(terminal: Terminal) -> Any:
    """The live view's console: the terminal's, at its width (read again at each refresh)."""
    from rich.console import Console

    return Console(no_color=terminal.no_color, highlight=False)


def render_snapshot(snap: Snapshot, where: str, width: int | None = None) -> RenderableType:
    """The whole view, each table cut to `width` columns (None: whole values; see
    `jobctl.cli.render.fitted_table`, which also keeps names and errors from acting on the
    terminal or being read as Rich markup)."""
    from rich.console import Group
    from rich.text import Text

    from jobctl.cli.render import fitted_table, visible
    from jobctl.timeparse import format_age, format_duration, format_instant

    report = snap.report
    window = format_duration(report.window_s)
    queues = fitted_table(
        ["QUEUE", "WAITING", "QUEUED", "RUNNING", f"SUCCEEDED {window}", f"FAILED {window}",
         "OLDEST QUEUED"],
        [[q.queue, q.waiting, q.queued, q.running, q.succeeded, q.failed,
          format_duration(q.oldest_queued_s)] for q in [*report.queues, report.total]],
        width, title="Queues")
    workers = fitted_table(
        ["ID", "NAME", "HOST", "PID", "SLOTS", "QUEUES", "HEARTBEAT", "STATE"],
        [[w.id, w.name, w.hostname, w.pid, f"{w.running_jobs}/{w.concurrency}",
          ",".join(w.queues), format_age(w.heartbeat_at, snap.now), w.state.value]
         for w in snap.workers],
        width, title="Workers")
    running = fitted_table(
        ["ID", "NAME", "QUEUE", "WORKER", "ELAPSED"],
        [[r.id, r.name, r.queue, r.worker, format_duration(r.elapsed_s)] for r in snap.running],
        width, title=f"Running jobs ({snap.running_total})")
    failures = fitted_table(
        ["ID", "NAME", "QUEUE", "STATE", "EXIT", "FINISHED", "ERROR"],
        [[f.id, f.name, f.queue, f.state, f.exit_code, format_age(f.finished_at, snap.now),
          f.error] for f in snap.failures],
        width, title="Recent failures")
    header = Text(f"jobctl top · {visible(where)} · {format_instant(snap.now)}", style="bold")
    if width is not None:
        header.truncate(width, overflow="ellipsis")
    return Group(header, queues, workers, running, failures)


# --- the live view ------------------------------------------------------------------------------


def _live(client: Client, terminal: Terminal, interval_s: float, window_s: float) -> None:
    import logging

    from rich.live import Live
    from rich.text import Text

    # The listener's reconnect warnings would scribble over the full-screen view; the view
    # shows an unreachable database itself.
    logging.getLogger("jobctl.store.notify").addHandler(logging.NullHandler())
    logging.getLogger("jobctl.store.notify").propagate = False
    console = _console(terminal)
    with client.changes() as woken, _keys() as read_key, contextlib.suppress(
            KeyboardInterrupt), Live(Text("loading…"), console=console, screen=True,
                                     auto_refresh=False, transient=True) as live:
        while True:
            woken.clear()
            try:
                view: RenderableType = render_snapshot(client.top_snapshot(window_s=window_s),
                                                       client.where, console.width)
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


def watch_changes(client: Client, fetch: Callable[[], T], show: Callable[[T], None],
                  interval_s: float = REFRESH_S) -> None:
    """Show `fetch()`'s result, then again each time it changes (like `kubectl get -w`), until
    interrupted. Polls every `interval_s`; PostgreSQL notifications make it look sooner."""
    last: object = _NOTHING
    with client.changes() as woken:
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
