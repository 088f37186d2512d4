"""Shell completion: the request protocol, the scripts, and the completers of values.

The shells run `jobctl` with `_JOBCTL_COMPLETE` set (Click's protocol: `bash_complete`,
`zsh_complete` or `fish_complete`; Typer's order, `complete_bash`, is accepted too) and the words
typed so far in `COMP_WORDS`/`COMP_CWORD`. `jobctl.cli.app.run` hands such a request to
`handle_request` before anything else runs.

Completion must never print an error or keep the shell waiting: every completer catches
everything and answers nothing instead; look-ups in the database run in a thread that the
request waits on only until `DEFAULT_BUDGET_S` after the process started (PostgreSQL's own
connect_timeout cannot go below 2 s), then it answers without them and exits at once.
`JOBCTL_COMPLETE_TIMEOUT` (seconds) changes the budget, for a database far away.
Commands and options complete without importing SQLAlchemy, psycopg or Rich: the completers
import them only when they are asked for values from the database. Command names and the root's
options complete without Typer too (the root is plain Click; see `jobctl.cli.app`).

A completer takes (ctx, incomplete) and returns values, or (value, description) pairs; attach it
to an option or argument with `autocompletion=complete.job_ids`. Typer keeps only the values
that start with what was typed. A plain Click option (the root's) takes it as
`shell_complete=complete.for_click(complete.profile_names)`, which does the same.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    # Imported when a request comes: `jobctl --help` needs none of it.
    from click.shell_completion import CompletionItem, ShellComplete

    from jobctl.store.direct import Conn

COMPLETE_VARIABLE = "_JOBCTL_COMPLETE"
PROG_NAME = "jobctl"
SHELLS = ("bash", "zsh", "fish")
# From the process's start to the answer: Python's start-up (~0.15 s), the driver's import
# (psycopg ~0.1 s; both several times that on a loaded machine), connecting and the query. The
# rest of a second is for printing and exiting.
DEFAULT_BUDGET_S = 0.8
BUDGET_VARIABLE = "JOBCTL_COMPLETE_TIMEOUT"
THREAD_NAME = "jobctl-complete"
LIMIT = 50  # values offered at most: more than a screen is noise

Completion = str | tuple[str, str]
T = TypeVar("T")


# --- the protocol ---------------------------------------------------------------------------------


def parse_instruction(instruction: str) -> tuple[str, str] | None:
    """(shell, action) from `bash_complete` (Click) or `complete_bash` (Typer); None if neither."""
    first, _, second = instruction.partition("_")
    if first in SHELLS and second in ("complete", "source"):
        return first, second
    if second in SHELLS and first in ("complete", "source"):
        return second, first
    return None


def handle_request(command: click.Command, instruction: str) -> int:
    """Answer one completion request on stdout. Never an error: whatever goes wrong, the shell
    gets no candidates (and exit status 0)."""
    debug = os.environ.get("JOBCTL_DEBUG", "").lower() in {"1", "true", "yes", "on"}
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(
            sys.stderr if debug else devnull):
        try:
            parsed = parse_instruction(instruction)
            if parsed is None:
                return 0
            shell, action = parsed
            completer = _shell_class(shell)(command, {}, PROG_NAME, COMPLETE_VARIABLE)
            text = completer.source() if action == "source" else completer.complete()
        except Exception:
            if debug:
                raise
            text = ""
    sys.stdout.write(text + "\n" if text else "")
    if any(thread.name == THREAD_NAME for thread in threading.enumerate()):
        # A look-up still waits on the database: leave now rather than in the interpreter's
        # shutdown, which would wait on nothing useful.
        sys.stdout.flush()
        os._exit(0)
    return 0


def _shell_class(shell: str) -> type[ShellComplete]:
    # Click's own classes, not Typer's: Typer's zsh and fish ones import Rich to render every
    # description, and its bash one drops the type that lets bash complete file names.
    from click.shell_completion import BashComplete, FishComplete, ZshComplete

    classes: dict[str, type[ShellComplete]] = {
        "bash": BashComplete, "zsh": ZshComplete, "fish": FishComplete}
    return classes[shell]


def script(shell: str, command: click.Command) -> str:
    """The completion script for `shell`, as `jobctl completion SHELL` prints it."""
    from click.shell_completion import BashComplete

    class QuietBash(BashComplete):
        """Click's bash class without its check of the running bash's version (it starts `bash`
        and prints to stderr): the script must come out the same on every machine."""

        @staticmethod
        def _check_version() -> None:
            return None

    cls = QuietBash if shell == "bash" else _shell_class(shell)
    return cls(command, {}, PROG_NAME, COMPLETE_VARIABLE).source().strip() + "\n"


def for_click(completer: Callable[[click.Context, str], Sequence[Completion]]) -> Callable[
        [click.Context, click.Parameter, str], list[CompletionItem]]:
    """`completer` as Click's `shell_complete=` takes it: what Typer does with `autocompletion=`
    (values and (value, description) pairs become items; only those that start with what was
    typed are kept)."""

    def shell_complete(ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        items = [CompletionItem(found[0], help=found[1]) if isinstance(found, tuple)
                 else CompletionItem(found) for found in completer(ctx, incomplete)]
        return [item for item in items if str(item.value).startswith(incomplete)]

    return shell_complete


# --- completers of fixed values -----------------------------------------------------------------


def states(ctx: click.Context, incomplete: str) -> Sequence[Completion]:
    from jobctl.models import JobState

    return [state.value for state in JobState]


def output_formats(ctx: click.Context, incomplete: str) -> Sequence[Completion]:
    return [("table", "a table (default on a terminal), long values cut to its width"),
            ("wide", "a table with every value whole"),
            ("plain", "tab-separated with a header (default when piped)"),
            ("json", "JSON, ISO 8601 UTC times"), ("ids", "one id a line")]


def time_zones(ctx: click.Context, incomplete: str) -> Sequence[Completion]:
    """IANA time zone names (`Europe/Paris`), from the system's or tzdata's database."""
    try:
        from zoneinfo import available_timezones

        return sorted(zone for zone in available_timezones() if zone.startswith(incomplete))
    except Exception:
        return []


def profile_names(ctx: click.Context, incomplete: str) -> Sequence[Completion]:
    """The profiles in the config file."""
    try:
        from jobctl.config import load_config_file

        return sorted(load_config_file().get("profiles", {}))
    except Exception:
        return []


# --- completers of values from the database -----------------------------------------------------


def job_ids(ctx: click.Context, incomplete: str) -> Sequence[Completion]:
    """Job ids, most recent first, described by name and state."""
    from jobctl.store import names

    rows = _lookup(ctx, lambda conn: names.recent_jobs(conn, incomplete, LIMIT))
    return [(str(job_id), f"{name} {state}".strip()) for job_id, name, state in rows]


def queue_names(ctx: click.Context, incomplete: str) -> Sequence[Completion]:
    from jobctl.store import names

    return _lookup(ctx, lambda conn: names.queue_names(conn, incomplete, LIMIT))


def worker_names(ctx: click.Context, incomplete: str) -> Sequence[Completion]:
    """Worker names, most recent first, described by state."""
    from jobctl.store import names

    return _lookup(ctx, lambda conn: names.worker_names(conn, incomplete, LIMIT))


def schedule_names(ctx: click.Context, incomplete: str) -> Sequence[Completion]:
    from jobctl.store import names

    return _lookup(ctx, lambda conn: names.schedule_names(conn, incomplete, LIMIT))


def check_names(ctx: click.Context, incomplete: str) -> Sequence[Completion]:
    from jobctl.store import names

    return _lookup(ctx, lambda conn: names.check_names(conn, incomplete, LIMIT))


def workflow_ids(ctx: click.Context, incomplete: str) -> Sequence[Completion]:
    """Workflow ids, most recent first, described by name."""
    from jobctl.store import names

    rows = _lookup(ctx, lambda conn: names.workflow_ids(conn, incomplete, LIMIT))
    return [(str(workflow_id), name) for workflow_id, name in rows]


def _lookup(ctx: click.Context, query: Callable[[Conn], list[T]]) -> list[T]:
    """Run `query` (one of jobctl.store.names's look-ups) on the database the command line
    names, in a daemon thread: an unreachable or slow database yields [] when the budget is
    spent, never an error. Completion reaches the store's names directly, not through the
    Client: the Client's import (jobctl.models with it) would cost every Tab ~20 ms."""
    found: list[T] = []

    def work() -> None:
        from jobctl.store.names import connect

        with contextlib.suppress(BaseException), connect(_database_url(ctx)) as conn:
            found.extend(query(conn))

    worker = threading.Thread(target=work, name=THREAD_NAME, daemon=True)
    worker.start()
    worker.join(max(0.0, _budget_s() - _seconds_since_start()))
    return [] if worker.is_alive() else found


def _budget_s() -> float:
    try:
        return float(os.environ.get(BUDGET_VARIABLE) or DEFAULT_BUDGET_S)
    except ValueError:
        return DEFAULT_BUDGET_S


def _seconds_since_start() -> float:
    """How long ago this process started (Linux: /proc), so that a slow start-up counts
    against the budget too; 0 where that cannot be known."""
    try:
        with open("/proc/self/stat", "rb") as stat_file:
            stat = stat_file.read()
        # After "pid (comm) ", field 3 (state) is index 0; field 22, starttime, is index 19.
        start_ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


def _database_url(ctx: click.Context) -> str:
    """The database the words typed so far name (--database-url, --profile), or the
    environment's and config file's."""
    from jobctl.cli.common import command_line
    from jobctl.config import resolve

    return str(resolve(command_line(ctx))["database_url"].value)
