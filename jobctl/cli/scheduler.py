"""`jobctl scheduler run`: fire due schedule occurrences (and rescue expired leases)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from jobctl.cli.common import (
    METRICS_ADDRESS_OPTION,
    RESCUE_INTERVAL_OPTION,
    State,
    check_metrics_port,
    configure_logging,
    metrics_port_option,
    metrics_served,
    parse_duration,
    state,
)
from jobctl.errors import InvalidInput

if TYPE_CHECKING:
    from jobctl.metrics import SchedulerMetrics

app = typer.Typer(help="Run the scheduler that turns schedules into jobs.", no_args_is_help=True,
                  rich_markup_mode=None)


@app.command()
def run(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Fire what is due now, then exit."),
    misfire_grace: str = typer.Option(
        "1s", "--misfire-grace", envvar="JOBCTL_MISFIRE_GRACE",
        help="A fire time we reach later than this was missed (its schedule's misfire policy "
             "applies)."),
    misfire_cap: int = typer.Option(
        100, "--misfire-cap", envvar="JOBCTL_MISFIRE_CAP",
        help="`--misfire all` fires at most this many missed times of a schedule at once."),
    poll_interval: str | None = typer.Option(
        None, "--poll-interval", envvar="JOBCTL_SCHEDULER_POLL_INTERVAL",
        help="Longest sleep between looks at the schedules [default: 5s on PostgreSQL, woken "
             "by NOTIFY when a schedule changes; 0.5s on SQLite].", show_default=False),
    rescue_interval: str = RESCUE_INTERVAL_OPTION,
    retention: str | None = typer.Option(
        None, "--retention", metavar="DURATION",
        help="Delete finished jobs older than this (e.g. 30d), hourly, in short batches; also "
             "JOBCTL_RETENTION or `retention` in the config file [default: keep everything].",
        show_default=False),
    metrics_port: int = metrics_port_option("passes over the schedules succeed on time"),
    metrics_address: str = METRICS_ADDRESS_OPTION,
    quiet: bool = typer.Option(False, "--quiet", help="Log only warnings."),
) -> None:
    """Fire due occurrences until stopped. Run as many as you like (on any machines): each
    occurrence becomes one job. SIGTERM or Ctrl-C stops it after the transaction under way."""
    from jobctl.scheduler import SchedulerSettings

    if misfire_cap < 1:
        raise InvalidInput("--misfire-cap must be at least 1")
    poll_s = parse_duration(poll_interval, "--poll-interval")
    if poll_s is not None and poll_s <= 0:
        raise InvalidInput("--poll-interval must be longer than 0s")
    check_metrics_port(metrics_port)
    st = state(ctx)
    settings = SchedulerSettings(
        retention_s=_retention_s(st, retention),
        once=once,
        misfire_grace_s=parse_duration(misfire_grace, "--misfire-grace") or 0.0,
        misfire_cap=misfire_cap,
        poll_s=poll_s,
        rescue_every_s=max(0.1, parse_duration(rescue_interval, "--rescue-interval") or 0.0),
    )
    configure_logging(quiet, "scheduler")
    with metrics_served(metrics_port, metrics_address,
                        lambda: _scheduler_metrics(settings.poll_s)) as metrics:
        raise typer.Exit(st.client().run_scheduler(settings, metrics))


def _scheduler_metrics(poll_s: float | None) -> SchedulerMetrics:
    from jobctl.metrics import SchedulerMetrics

    return SchedulerMetrics(poll_s or 5.0)


def _retention_s(st: State, flag: str | None) -> float | None:
    """`--retention`, else JOBCTL_RETENTION, else the profile's or file's `retention`."""
    from jobctl.config import resolve_with_flag

    setting = resolve_with_flag(st.command_line, "retention", flag or None)
    if setting.value in (None, ""):
        return None
    where = f"retention ({setting.detail})"
    seconds = parse_duration(str(setting.value), where)
    if not seconds or seconds <= 0:
        raise InvalidInput(f"{where} must be longer than 0s")
    return seconds
