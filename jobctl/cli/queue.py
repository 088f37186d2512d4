"""`jobctl queue …`: list, pause, resume, set (capacity control: see jobctl.capacity)."""

from __future__ import annotations

import typer

from jobctl.cli import complete
from jobctl.cli.common import output_option, state
from jobctl.cli.render import OutputFormat
from jobctl.errors import InvalidInput

app = typer.Typer(help="Queues: list them, pause and resume them, cap them.",
                  no_args_is_help=True, rich_markup_mode=None)

OUTPUT_OPTION = output_option(" or json")
NAMES_ARGUMENT = typer.Argument(..., metavar="NAME...", help="The queues' names.",
                                autocompletion=complete.queue_names)


@app.command("list")
def list_(ctx: typer.Context, output: OutputFormat | None = OUTPUT_OPTION) -> None:
    """Every known queue: paused or not, its cap and rate, and its jobs by state."""
    st = state(ctx)
    queues = st.client().queues()
    fmt = st.terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        st.terminal.json([queue.to_json() for queue in queues])
        return
    from jobctl.capacity import COUNTED

    rows = [[q.settings.name, "yes" if q.settings.paused else "no", q.settings.max_running,
             q.settings.rate, *(q.counts.get(key, 0) for key in COUNTED)] for q in queues]
    st.terminal.table(["name", "paused", "max running", "rate", *COUNTED], rows, fmt)


@app.command()
def pause(ctx: typer.Context, names: list[str] = NAMES_ARGUMENT) -> None:
    """Pause queues: no worker starts a job from them until resumed (running jobs go on)."""
    _pause(ctx, names, paused=True)


@app.command()
def resume(ctx: typer.Context, names: list[str] = NAMES_ARGUMENT) -> None:
    """Resume paused queues."""
    _pause(ctx, names, paused=False)


def _pause(ctx: typer.Context, names: list[str], *, paused: bool) -> None:
    """All or nothing: an unknown name changes no queue."""
    st = state(ctx)
    st.client().pause_queues(names, paused)
    for name in dict.fromkeys(names):
        st.terminal.note(f"queue {name} {'paused' if paused else 'resumed'}")


@app.command("set")
def set_(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="The queue's name.",
                               autocompletion=complete.queue_names),
    max_running: str | None = typer.Option(
        None, "--max-running", metavar="N|none", show_default=False,
        help="At most N of its jobs running at once, cluster-wide; none: no cap."),
    rate: str | None = typer.Option(
        None, "--rate", metavar="N/DURATION|none", show_default=False,
        help="At most N of its jobs started in any DURATION (10/1m, 5/2s); none: no rate."),
    output: OutputFormat | None = OUTPUT_OPTION,
) -> None:
    """Cap a queue: how many of its jobs may run at once, and how many may start per interval.

    \b
        jobctl queue set reports --max-running 2
        jobctl queue set api-calls --rate 10/1m
        jobctl queue set reports --max-running none
    """
    from jobctl import capacity

    changes: dict[str, object] = {}
    if max_running is not None:
        if max_running.strip().lower() == "none":
            changes["max_running"] = None
        elif max_running.strip().isdigit() and int(max_running) >= 1:
            changes["max_running"] = int(max_running)
        else:
            raise InvalidInput(f"--max-running takes a whole number of at least 1, or none, not "
                               f"{max_running!r} (to stop a queue, `jobctl queue pause`)")
    if rate is not None:
        changes["rate"] = None if rate.strip().lower() == "none" else capacity.parse_rate(rate)
    if not changes:
        raise InvalidInput("nothing to set: give --max-running or --rate")
    st = state(ctx)
    settings = st.client().set_queue(name, **changes)
    fmt = st.terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        st.terminal.json({"name": settings.name, "paused": settings.paused,
                          "max_running": settings.max_running, "rate": settings.rate})
        return
    st.terminal.note(f"queue {name}: max running {settings.max_running or 'none'}, "
                     f"rate {settings.rate or 'none'}")
