"""The root command: global options, the sub-commands, and the one place where errors become
exit codes (see `jobctl.errors.ExitCode`)."""

from __future__ import annotations

import os
import sys

import click
import typer

from jobctl import __version__
from jobctl.cli import db, job, schedule, scheduler, worker
from jobctl.cli.common import State
from jobctl.cli.render import Terminal
from jobctl.errors import ExitCode, JobctlError

HELP = """Run shell commands on a cluster of machines, coordinated through one database.

With no database configured, jobctl keeps its state in an SQLite file under
$XDG_DATA_HOME/jobctl/. Point every machine at one PostgreSQL database
(--database-url or JOBCTL_DATABASE_URL) to make them a cluster.

Exit status: 0 ok; 2 invalid input; 3 not found; 4 database unreachable or
schema out of date; 124 a wait timed out; 130 interrupted. `job submit --wait`
and `job wait` exit with the job's own exit code."""

app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(job.app, name="job")
app.add_typer(worker.app, name="worker")
app.add_typer(db.app, name="db")
app.add_typer(schedule.app, name="schedule")
app.add_typer(scheduler.app, name="scheduler")


def _version(value: bool) -> None:
    if value:
        print(f"jobctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    database_url: str | None = typer.Option(
        None, "--database-url", envvar="JOBCTL_DATABASE_URL", metavar="URL",
        help="postgresql://user@host/db or sqlite:///path (default: an SQLite file under "
             "$XDG_DATA_HOME/jobctl/)",
        show_default=False,
    ),
    debug: bool = typer.Option(False, "--debug", envvar="JOBCTL_DEBUG",
                               help="Show tracebacks for errors."),
    no_color: bool = typer.Option(False, "--no-color", envvar="JOBCTL_NO_COLOR",
                                  help="No colours in tables (NO_COLOR works too)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    ctx.obj = State(database_url=database_url or None, debug=debug,
                    terminal=Terminal(no_color=no_color))


def run(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code instead of exiting (tests call this)."""
    args = sys.argv[1:] if argv is None else argv
    debug = _debug_requested(args)
    try:
        result = app(args=args, prog_name="jobctl", standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except JobctlError as error:
        if debug:
            raise
        _error(error.message)
        return int(error.exit_code)
    except click.ClickException as error:
        return _usage_error(error, debug)
    except (KeyboardInterrupt, click.exceptions.Abort):
        sys.stderr.write("\n")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # `jobctl job list | head`: the reader left; that is not our error.
        _silence_stdout()
        return 0


def _debug_requested(args: list[str]) -> bool:
    """`--debug` among the root options (not in a job's command after `--`), or JOBCTL_DEBUG."""
    takes_value = False
    for arg in args:
        if takes_value:
            takes_value = False
        elif arg == "--debug":
            return True
        elif arg == "--database-url":
            takes_value = True
        elif arg == "--" or not arg.startswith("-"):
            break  # the sub-command: what follows is its own
    return os.environ.get("JOBCTL_DEBUG", "").strip().lower() in {"1", "true", "t", "yes", "y",
                                                                   "on"}


def _usage_error(error: click.ClickException, debug: bool) -> int:
    ctx = getattr(error, "ctx", None)
    if isinstance(error, click.exceptions.NoArgsIsHelpError) and ctx is not None:
        sys.stdout.write(ctx.get_help() + "\n")
        return 0
    if debug:
        raise error
    message = error.format_message().strip().splitlines()
    text = (message[0] if message else type(error).__name__).rstrip(".")
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    _error(text[:1].lower() + text[1:] + hint)
    return int(getattr(error, "exit_code", ExitCode.INVALID_INPUT))


def _error(message: str) -> None:
    sys.stderr.write(f"jobctl: error: {message}\n")


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main() -> None:
    sys.exit(run())
