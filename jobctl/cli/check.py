"""`jobctl check …`: dead-man's switches for anything outside jobctl (healthchecks.io-style).

A script pings its check when it has done its work (`jobctl check ping NAME`); a check that
hears nothing for its period and grace, or hears `--fail`, becomes overdue, and the schedulers
run its `--on-overdue` hook once (jobctl.store.checks, jobctl.store.overdue).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from jobctl.cli import complete
from jobctl.cli.common import output_option, parse_duration, state
from jobctl.cli.render import OutputFormat

if TYPE_CHECKING:
    from jobctl.models import Check

app = typer.Typer(help="Dead-man's switches for scripts and jobs outside jobctl: ping them, be "
                       "told when the pings stop.", no_args_is_help=True, rich_markup_mode=None)

OUTPUT_OPTION = output_option()
NAME_ARGUMENT = typer.Argument(..., metavar="NAME", help="The check's name.",
                               autocompletion=complete.check_names)


@app.command()
def add(
    ctx: typer.Context,
    name: str = NAME_ARGUMENT,
    every: str = typer.Option(..., "--every", metavar="DURATION",
                              help="How often a successful ping is expected (5m, 1h, 1d).",
                              show_default=False),
    grace: str | None = typer.Option(
        None, "--grace", metavar="DURATION",
        help="How late a ping may be before the check is overdue [default: half of --every, "
             "at most 1h].", show_default=False),
    on_overdue: str | None = typer.Option(
        None, "--on-overdue", metavar="CMD",
        help="A command (/bin/sh -c) run as a job of its own once each time the check becomes "
             "overdue; it gets JOBCTL_HOOK_NAME, JOBCTL_HOOK_STATE=overdue (and empty "
             "JOBCTL_HOOK_JOB_ID, JOBCTL_HOOK_EXIT_CODE) and the check as JSON (`check show -o "
             "json`) on its standard input.", show_default=False),
    replace: bool = typer.Option(False, "--replace",
                                 help="Redefine the check if the name exists (it starts afresh)."),
) -> None:
    """Add a check: overdue when no successful ping came for --every plus --grace, since the
    last one (or since it was added).

    \b
        jobctl check add nightly-backup --every 1d --grace 2h \\
            --on-overdue 'mail -s "backup overdue" ops@example.com'
        pg_dump db > /backup/db.sql && jobctl check ping nightly-backup
    """
    st = state(ctx)
    check = st.client().add_check(name, parse_duration(every, "--every") or 0.0,
                                  parse_duration(grace, "--grace"), on_overdue or None,
                                  replace=replace)
    st.terminal.err(f"check {check.name} added; overdue unless pinged by "
                    f"{_iso(check.overdue_at)}")


@app.command()
def ping(
    ctx: typer.Context,
    name: str = NAME_ARGUMENT,
    fail: bool = typer.Option(False, "--fail",
                              help="Report a failure: the check is overdue at once."),
) -> None:
    """Tell the check its job ran (exit 0; an unknown check exits 3). A successful ping moves
    its deadline on and ends an overdue spell."""
    state(ctx).client().ping_check(name, failed=fail)


@app.command("list")
def list_(ctx: typer.Context, output: OutputFormat | None = OUTPUT_OPTION) -> None:
    """List checks by name."""
    from jobctl.timeparse import format_duration

    st = state(ctx)
    found = st.client().checks()
    terminal = st.terminal
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        terminal.json([check.to_json() for check in found])
        return
    rows = [[c.name, format_duration(c.every_s), format_duration(c.grace_s),
             c.last_ping_at or "never", _overdue_text(c), c.overdue_since, c.overdue_at,
             c.on_overdue or "-"]
            for c in found]
    # since: when it became overdue; due: when it becomes overdue unless pinged first.
    terminal.table(["name", "every", "grace", "last ping", "overdue", "since", "due",
                    "on overdue"], rows, fmt, free={"name", "on overdue"})


@app.command()
def show(ctx: typer.Context, name: str = NAME_ARGUMENT,
         output: OutputFormat | None = OUTPUT_OPTION) -> None:
    """A check's definition, its last pings and whether it is overdue."""
    from jobctl.timeparse import format_duration

    st = state(ctx)
    check = st.client().check(name)
    terminal = st.terminal
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        terminal.json(check.to_json())
        return
    fields: list[tuple[str, Any]] = [
        ("name", check.name),
        ("every", format_duration(check.every_s)),
        ("grace", format_duration(check.grace_s)),
        ("on overdue", check.on_overdue),
        ("added", check.created_at),
        ("last ping", check.last_ping_at or "never"),
        ("last failure", check.last_fail_at or "never"),
        ("overdue", _overdue_text(check)),
        ("overdue since" if check.overdue else "overdue at",
         check.overdue_since if check.overdue else check.overdue_at),
    ]
    terminal.fields(fields, fmt)


@app.command()
def remove(ctx: typer.Context, name: str = NAME_ARGUMENT) -> None:
    """Delete a check (the jobs its hook ran stay)."""
    st = state(ctx)
    st.client().remove_check(name)
    st.terminal.err(f"check {name} removed")


def _overdue_text(check: Check) -> str:
    return "yes" if check.overdue else "no"


def _iso(moment: Any) -> str:
    from jobctl.timeparse import isoformat_utc

    return str(isoformat_utc(moment))
