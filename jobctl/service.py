"""systemd units for `worker start` and `scheduler run` (`jobctl service print`): plain text from
plain values, unit-tested without systemd and checked by `systemd-analyze verify` in the tests.

What each line is for:
- `Type=notify`: the process says READY=1 once it is up (jobctl.sdnotify), so `systemctl start`
  returns when the worker is registered, and WATCHDOG=1 from its heartbeat (`WatchdogSec`).
- `KillMode=mixed`: `systemctl stop` sends SIGTERM to the main process only (the worker drains:
  running jobs get `--grace`, then its own SIGTERM/SIGKILL of each job's group), and SIGKILL to
  whatever is left in the cgroup only after `TimeoutStopSec`, which is longer than the grace
  plus the kill grace.
- `Restart=on-failure`: a crash (or a watchdog timeout) starts it again; a drain does not.
- a dedicated `User=`, and the database URL from `EnvironmentFile=` (JOBCTL_DATABASE_URL), never
  on the command line, where `ps` shows it to everyone.
- `Delegate=yes` (workers): the service's cgroup subtree is the worker's to divide, so it can
  give jobs cgroups of their own (`--mem`, `--cpus`) without being root.
- a worker unit whose user is root says what root is for (`root_problem`): --run-as-submitter
  (each job as its submitter's Unix user: no sandboxing option here takes away the setuid it
  needs) or --allow-root.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from enum import StrEnum

# Beyond the grace and the kill grace, what a stop may take to write results and deregister.
STOP_MARGIN_S = 30
# The watchdog's interval: several heartbeats (a worker's lease / 3, 20 s by default; a
# scheduler's pass, 5 s at most) fit in it.
WATCHDOG_S = 60


class ServiceKind(StrEnum):
    WORKER = "worker"
    SCHEDULER = "scheduler"


def start_command(kind: ServiceKind) -> list[str]:
    """The jobctl subcommand a unit of this kind runs."""
    return ["worker", "start"] if kind is ServiceKind.WORKER else ["scheduler", "run"]


def unit_text(kind: ServiceKind, *, executable: str, user: str, environment_file: str,
              grace_s: float, kill_grace_s: float, arguments: Sequence[str]) -> str:
    """The unit file of a worker or a scheduler running `executable` as `user`, the database
    and other JOBCTL_* settings from `environment_file`, with `arguments` after the start
    command (a worker's also get `--grace` and `--kill-grace`)."""
    command = [executable, *start_command(kind)]
    if kind is ServiceKind.WORKER:
        command += ["--grace", _seconds(grace_s), "--kill-grace", _seconds(kill_grace_s)]
    command += list(arguments)
    stop_s = int(grace_s + kill_grace_s) + STOP_MARGIN_S if kind is ServiceKind.WORKER else (
        STOP_MARGIN_S)
    lines = [
        "[Unit]",
        f"Description=jobctl {kind.value}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={' '.join(_quoted(word) for word in command)}",
        f"User={user}",
        f"Group={user}",
        # The leading `-`: a missing file is no error (the config file may hold the URL).
        f"EnvironmentFile=-{environment_file}",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={stop_s}s",
        "Restart=on-failure",
        "RestartSec=5s",
        f"WatchdogSec={WATCHDOG_S}s",
        *(["Delegate=yes"] if kind is ServiceKind.WORKER else []),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def root_problem(kind: ServiceKind, runs_as_root: bool, arguments: Sequence[str]) -> str | None:
    """Why a unit with these `worker start` arguments would not start as its user (one line),
    or None. A worker running as root on PostgreSQL refuses to start without
    --run-as-submitter or --allow-root (jobctl.runas), and --run-as-submitter needs root: a
    unit that cannot start is refused when it is printed, not when systemd restarts it forever."""
    if kind is not ServiceKind.WORKER:
        return None
    flags = {word.partition("=")[0] for word in arguments}
    if runs_as_root and not flags & {"--run-as-submitter", "--allow-root"}:
        return ("a worker unit running as root needs -- --run-as-submitter (each job as its "
                "submitter's Unix user) or -- --allow-root (every job as root): on PostgreSQL "
                "it refuses to start without one")
    if not runs_as_root and "--run-as-submitter" in flags:
        return "--run-as-submitter needs a worker running as root: --user root"
    return None


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _quoted(word: str) -> str:
    """A word of ExecStart= (systemd.service(5): C-style quoting, like a shell's for what jobctl
    passes), with `%` doubled (a specifier otherwise) and `$` doubled (a variable otherwise)."""
    return shlex.quote(word.replace("%", "%%").replace("$", "$$"))
