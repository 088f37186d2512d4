"""`jobctl service …`: systemd units for workers and schedulers (jobctl.service)."""

from __future__ import annotations

from enum import StrEnum

import typer

from jobctl.cli.common import parse_duration, state
from jobctl.errors import InvalidInput

app = typer.Typer(help="Run workers and schedulers as systemd services.", no_args_is_help=True,
                  rich_markup_mode=None)


class KindChoice(StrEnum):
    WORKER = "worker"
    SCHEDULER = "scheduler"


@app.command("print")
def print_(
    ctx: typer.Context,
    kind: KindChoice = typer.Argument(..., metavar="worker|scheduler",
                                      help="What the unit runs."),
    arguments: list[str] | None = typer.Argument(
        None, metavar="[-- OPTION...]",
        help="More options of `worker start` or `scheduler run` (--queue, --concurrency, …); "
             "not --database-url: that goes in the environment file.", show_default=False),
    user: str = typer.Option("jobctl", "--user", metavar="NAME",
                             help="The dedicated user it runs as."),
    environment_file: str = typer.Option(
        "/etc/jobctl/env", "--environment-file", metavar="PATH",
        help="Where JOBCTL_DATABASE_URL (and any JOBCTL_* setting) is kept, readable by root "
             "only: never on the command line, where ps shows it."),
    grace: str = typer.Option("30s", "--grace", metavar="DURATION",
                              help="A worker's --grace; the unit's TimeoutStopSec exceeds it."),
    kill_grace: str = typer.Option("5s", "--kill-grace", metavar="DURATION",
                                   help="A worker's --kill-grace."),
    executable: str | None = typer.Option(
        None, "--executable", metavar="PATH",
        help="The jobctl to run [default: this one].", show_default=False),
) -> None:
    """Print a systemd unit for a worker or a scheduler: Type=notify (ready once registered,
    watchdog pings from the heartbeat), KillMode=mixed with TimeoutStopSec above --grace,
    Restart=on-failure, a dedicated user, the database URL from an EnvironmentFile.

    \b
        jobctl service print worker -- --queue default --concurrency 8 \\
            > /etc/systemd/system/jobctl-worker.service
        systemctl daemon-reload && systemctl enable --now jobctl-worker
    """
    import os
    import sys

    from jobctl.models import user_name_problem
    from jobctl.service import ServiceKind, root_problem, unit_text

    extra = list(arguments or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    if any(word == "--database-url" or word.startswith("--database-url=") for word in extra):
        raise InvalidInput("--database-url would show in ps: put JOBCTL_DATABASE_URL in "
                           f"{environment_file} instead")
    problem = user_name_problem(user)
    if problem is not None:
        raise InvalidInput(f"--user {user!r}: {problem}")
    problem = root_problem(ServiceKind(kind.value), _is_root(user), extra)
    if problem is not None:
        raise InvalidInput(problem)
    if not os.path.isabs(environment_file):
        raise InvalidInput(f"--environment-file must be an absolute path, not {environment_file!r}")
    grace_s = parse_duration(grace, "--grace") or 0.0
    kill_grace_s = parse_duration(kill_grace, "--kill-grace") or 0.0
    program = executable or os.path.abspath(sys.argv[0])
    if not os.path.isabs(program):
        raise InvalidInput(f"--executable must be an absolute path, not {program!r}")
    state(ctx).terminal.out(unit_text(
        ServiceKind(kind.value), executable=program, user=user,
        environment_file=environment_file, grace_s=grace_s, kill_grace_s=kill_grace_s,
        arguments=extra).rstrip("\n"))


def _is_root(user: str) -> bool:
    """Whether `user` is root (uid 0) on this machine, or named root where it has no entry."""
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid == 0
    except KeyError:
        return user == "root"
