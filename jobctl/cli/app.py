"""The root command: global options, the sub-commands, and the one place where errors become
exit codes (see `jobctl.errors.ExitCode`).

Sub-commands are registered by module path and imported only when used (pip's `commands_dict`
does the same): `jobctl --help` and completing a command name import none of them, and
`jobctl job list` imports only `jobctl.cli.job`.

The root itself is plain Click, not Typer: `jobctl --help`, `jobctl` alone, a usage error at the
root and completing a command name or root option import Click only (Typer costs about as much
again as Click, and `jobctl.cli.common` more). The sub-commands are Typer apps, turned into
Click commands when they are loaded (`load_command`), and a group's commands one by one, each
when it is used (`lazy_group`).

Everything the command line reads or writes goes through one `IOStreams` (gh's `IOStreams`,
httpie's `Environment`): the standard streams, whether each is a terminal, the terminal's width
and the environment variables. `run` takes one (tests pass their own, see tests/cli/conftest.py)
or makes it from the process, and returns the exit code.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, BinaryIO, TextIO

import click

from jobctl import __version__
from jobctl.cli import complete
from jobctl.errors import ExitCode, JobctlError

if TYPE_CHECKING:
    import typer
    from click.shell_completion import CompletionItem


class IOStreams:
    """Where one run of the command line reads and writes, and what it knows of its terminal
    and environment. `from_process` describes the real process; tests build their own (any
    text streams with a `.buffer`, any environment, a terminal of any width).

    Click, Rich and the configuration read `sys.std*` and `os.environ` themselves: `run` puts
    the streams and environment of an injected `IOStreams` in their place for the run (`bound`),
    so that they too see what the test gave."""

    def __init__(self, *, stdin: TextIO, stdout: TextIO, stderr: TextIO,
                 environ: MutableMapping[str, str], stdin_is_tty: bool = False,
                 stdout_is_tty: bool = False, stderr_is_tty: bool = False,
                 width: int | None = None) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.environ = environ
        self.stdin_is_tty = stdin_is_tty
        self.stdout_is_tty = stdout_is_tty
        self.stderr_is_tty = stderr_is_tty
        self._width = width

    @classmethod
    def from_process(cls, *, tty: bool | None = None, width: int | None = None) -> IOStreams:
        """The process's own streams and environment (whatever `sys.std*` and `os.environ` are
        now); `tty` overrides what `isatty` says of all three, `width` the terminal's width."""

        def is_tty(stream: TextIO | None) -> bool:
            if tty is not None:
                return tty
            try:
                return stream is not None and stream.isatty()
            except ValueError:  # closed
                return False

        return cls(stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr, environ=os.environ,
                   stdin_is_tty=is_tty(sys.stdin), stdout_is_tty=is_tty(sys.stdout),
                   stderr_is_tty=is_tty(sys.stderr), width=width)

    @property
    def stdin_bytes(self) -> BinaryIO:
        return self.stdin.buffer

    @property
    def no_color(self) -> bool:
        """NO_COLOR is set (to anything: https://no-color.org)."""
        return "NO_COLOR" in self.environ

    def terminal_width(self) -> int:
        """The terminal's columns: as given, else COLUMNS or the terminal's own (80 if none)."""
        if self._width is not None:
            return max(1, self._width)
        import shutil

        return max(1, shutil.get_terminal_size((80, 24)).columns)

    def write_bytes(self, stream: str, data: bytes) -> None:
        """Bytes as they are (a job's output) on "stdout" or "stderr", after any text before."""
        target = self.stderr if stream == "stderr" else self.stdout
        target.flush()
        target.buffer.write(data)
        target.buffer.flush()

    @contextlib.contextmanager
    def bound(self) -> Iterator[None]:
        """`sys.std*` and `os.environ` as this says while the block runs, for the code that
        reads them itself (Click's help and prompts, Rich, the configuration). Nothing changes
        for the process's own `IOStreams`."""
        saved_streams = sys.stdin, sys.stdout, sys.stderr
        saved_environ = None
        if self.environ is not os.environ:
            saved_environ = dict(os.environ)
            os.environ.clear()
            os.environ.update(self.environ)
        sys.stdin, sys.stdout, sys.stderr = self.stdin, self.stdout, self.stderr
        try:
            yield
        finally:
            try:
                self.stdout.flush()
            except BrokenPipeError:
                _silence(self.stdout)  # the reader left (see `_run`)
            except (OSError, ValueError):
                pass
            with contextlib.suppress(OSError, ValueError):
                self.stderr.flush()
            sys.stdin, sys.stdout, sys.stderr = saved_streams
            if saved_environ is not None:
                os.environ.clear()
                os.environ.update(saved_environ)


def io_of(ctx: click.Context) -> IOStreams:
    """The `IOStreams` of the run `ctx` belongs to (the process's outside `run`)."""
    obj = ctx.find_root().obj
    if isinstance(obj, IOStreams):
        return obj
    terminal = getattr(obj, "terminal", None)
    io = getattr(terminal, "io", None)
    return io if isinstance(io, IOStreams) else IOStreams.from_process()

# name → (where the command lives, the line `jobctl --help` shows for it). "module" means that
# module's `app`, a Typer group; "module:function" a single command. A test checks each line
# against the command's own help.
COMMANDS: dict[str, tuple[str, str]] = {
    "job": ("jobctl.cli.job", "Submit and inspect one-off jobs."),
    "worker": ("jobctl.cli.worker", "Run and inspect workers."),
    "queue": ("jobctl.cli.queue", "Queues: list them, pause and resume them, cap them."),
    "schedule": ("jobctl.cli.schedule",
                 "Recurring jobs: cron expressions or intervals, in any time zone."),
    "scheduler": ("jobctl.cli.scheduler", "Run the scheduler that turns schedules into jobs."),
    "check": ("jobctl.cli.check", "Dead-man's switches for scripts and jobs outside jobctl: "
                                  "ping them, be told when the pings stop."),
    "workflow": ("jobctl.cli.workflow", "Run graphs of jobs (workflows) from TOML files."),
    "service": ("jobctl.cli.service", "Run workers and schedulers as systemd services."),
    "top": ("jobctl.cli.top:top", "A live, full-screen view of the cluster: queues, workers, "
                                  "running jobs, recent failures."),
    "stats": ("jobctl.cli.top:stats", "Queue depth, throughput and failure rate over a window."),
    "db": ("jobctl.cli.db", "Manage the database: schema, sizes, retention, roles."),
    "audit": ("jobctl.cli.audit:audit", "The audit trail: who changed others' jobs, queues, "
                                        "schedules, workers, retention."),
    "config": ("jobctl.cli.config", "Show the settings in effect and the config file's path."),
    "completion": ("jobctl.cli.completion", "Print a shell completion script (commands, "
                                            "options, job ids, queues, workers, …)."),
}


def load_command(name: str) -> click.Command:
    """Import a registered command's module and build its click command."""
    import typer

    module_path, _, function = COMMANDS[name][0].partition(":")
    module = importlib.import_module(module_path)
    command: click.Command
    if not function:
        command = lazy_group(module.app)
    else:
        # A Typer with one command and no callback becomes that command itself.
        single = typer.Typer(rich_markup_mode=None)
        single.command(name=name)(getattr(module, function))
        command = typer.main.get_command(single)
    command.name = name
    return command


def lazy_group(app: typer.Typer) -> click.Group:
    """`app` as a click group whose sub-commands are built when they are asked for.

    Typer builds a command by reading its function's signature and type hints, about a
    millisecond a command: `jobctl job list` builds `list`, not the other dozen of `job`'s.
    The group itself (its callback and options) is Typer's own, built from a copy of `app`
    without commands; `jobctl job --help` still builds each, to list it. get_group, not
    get_command: a group of one command (`scheduler run`) stays a group."""
    import copy

    import typer

    shell = copy.copy(app)
    shell.registered_commands = []
    group = typer.main.get_group(shell)
    group.commands = LazyCommands(app, group.commands)
    group.suggest_commands = False  # Click's NoSuchCommand suggests already: not twice
    return group


class LazyCommands(MutableMapping[str, click.Command]):
    """A Typer app's commands by name, in the order they were registered, each built by Typer
    on first use (see `lazy_group`); `built` holds what is already built (sub-groups)."""

    def __init__(self, app: typer.Typer, built: MutableMapping[str, click.Command]) -> None:
        import typer

        self._app = app
        self._infos = {info.name or typer.main.get_command_name(info.callback.__name__): info
                       for info in app.registered_commands if info.callback is not None}
        self._built = dict(built)

    def __getitem__(self, name: str) -> click.Command:
        command = self._built.get(name)
        if command is None:
            import typer

            command = typer.main.get_command_from_info(
                self._infos[name], pretty_exceptions_short=self._app.pretty_exceptions_short,
                rich_markup_mode=self._app.rich_markup_mode)
            self._built[name] = command
        return command

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._infos and name not in self._built:
            raise KeyError(name)
        self._built.pop(name, None)
        self._infos.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self._infos), **dict.fromkeys(self._built)})

    def __len__(self) -> int:
        return len({**self._infos, **self._built})


class LazyGroup(click.Group):
    """The root group: knows its sub-commands by name and imports one only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMANDS else None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as error:
            from difflib import get_close_matches

            # Click suggests from `self.commands`, which stays empty here.
            matches = get_close_matches(args[0], list(COMMANDS)) if args else []
            if not matches:
                raise
            suggestions = ", ".join(repr(match) for match in matches)
            message = f"{error.message.rstrip('.')}. Did you mean {suggestions}?"
            raise click.UsageError(message, ctx=error.ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, line) for name, (_, line) in COMMANDS.items()])

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        items = [CompletionItem(name, help=line) for name, (_, line) in COMMANDS.items()
                 if name.startswith(incomplete)]
        # click.Command's own completion: the root's options, no sub-command imports.
        return items + click.Command.shell_complete(self, ctx, incomplete)


HELP = """Run shell commands on a cluster of machines, coordinated through one database.

With no database configured, jobctl keeps its state in an SQLite file under
$XDG_DATA_HOME/jobctl/. Point every machine at one PostgreSQL database
(--database-url or JOBCTL_DATABASE_URL) to make them a cluster.

Exit status: 0 ok; 2 invalid input; 3 not found; 4 database unreachable or
schema out of date; 5 permission denied; 124 a wait timed out; 130
interrupted. `job submit --wait`
and `job wait` exit with the job's own exit code."""


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:  # not while completing: that prints candidates
        io_of(ctx).stdout.write(f"jobctl {__version__}\n")
        ctx.exit(0)


@click.pass_context
def root(ctx: click.Context, database_url: str | None, profile: str | None, debug: bool,
         no_color: bool) -> None:
    # Imported here, not at the top: `--help` and completion never get this far, and
    # `jobctl.cli.common` imports Typer, which every sub-command needs anyway.
    from jobctl.cli.common import State, command_line
    from jobctl.cli.render import Terminal

    # The options' values are read back from ctx with their sources (flag or variable).
    ctx.obj = State(command_line=command_line(ctx), debug=debug,
                    terminal=Terminal(io_of(ctx), no_color=no_color))
    # The run's database connection ends with the run (one process may run many: tests).
    ctx.call_on_close(ctx.obj.close)
    if ctx.invoked_subcommand not in ("config", "completion"):
        # Read the config file now: an unknown profile or invalid file is an error before
        # anything runs. (`config` commands report it themselves; completion never errors.)
        ctx.obj.settings()


def root_group() -> LazyGroup:
    """A new root command. `run` uses `app`; whatever builds contexts of its own takes a new one
    (the man page generator does): Click builds a command's help option once, with the names
    the first context that asks for it has, and a bare `click.Context` knows `--help` only.
    (Typer built a new command on each `typer.main.get_command(app)`.)"""
    return LazyGroup(
        name=complete.PROG_NAME,
        callback=root,
        help=HELP,
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},
        params=[
            click.Option(
                ["--database-url"], envvar="JOBCTL_DATABASE_URL", metavar="URL", show_envvar=True,
                help="postgresql://user@host/db or sqlite:///path (default: the profile's, the "
                     "config file's, else an SQLite file under $XDG_DATA_HOME/jobctl/); a "
                     "password here shows in ps, so keep it in the variable, the config file "
                     "or ~/.pgpass"),
            click.Option(
                ["--profile"], envvar="JOBCTL_PROFILE", metavar="NAME", show_envvar=True,
                help="Use the settings of [profiles.NAME] in the config file (see `jobctl config "
                     "path`).",
                shell_complete=complete.for_click(complete.profile_names)),
            click.Option(["--debug"], is_flag=True, envvar="JOBCTL_DEBUG", show_envvar=True,
                         help="Show tracebacks for errors."),
            click.Option(["--no-color"], is_flag=True, envvar="JOBCTL_NO_COLOR", show_envvar=True,
                         help="No colours in tables (NO_COLOR works too)."),
            click.Option(["--version"], is_flag=True, expose_value=False, is_eager=True,
                         callback=_version, help="Print the version and exit."),
        ],
    )


app = root_group()


def run(argv: list[str] | None = None, io: IOStreams | None = None) -> int:
    """Run the command line with `argv` (default: the process's arguments) and `io` (default:
    the process's streams and environment); returns the exit code instead of exiting. Tests
    call this. Every exception becomes an exit code here, and only here."""
    args = sys.argv[1:] if argv is None else list(argv)
    io = IOStreams.from_process() if io is None else io
    with io.bound():
        return _run(args, io)


def _run(args: list[str], io: IOStreams) -> int:
    instruction = io.environ.get(complete.COMPLETE_VARIABLE)
    if instruction:
        # A shell asking for completions: answer before anything else can print or fail.
        return complete.handle_request(app, instruction)
    debug = _debug_requested(args, io)
    try:
        # Click's `main` without its standalone handling: the errors are ours to report.
        with app.make_context(complete.PROG_NAME, args, obj=io) as ctx:
            result = app.invoke(ctx)
        return int(result) if isinstance(result, int) else 0
    except click.exceptions.Exit as exit_:  # `typer.Exit` is this one
        return int(exit_.exit_code)
    except JobctlError as error:
        if debug:
            raise
        from jobctl.cli.common import cli_message

        _error(io, cli_message(error))
        return int(error.exit_code)
    except click.ClickException as error:
        return _usage_error(io, error, debug)
    except (KeyboardInterrupt, EOFError, click.exceptions.Abort):
        io.stderr.write("\n")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # `jobctl job list | head`: the reader left; that is not our error.
        _silence(io.stdout)
        return 0
    except Exception as error:  # a bug, or a failure nobody foresaw: still one line, exit 1
        if debug:
            raise
        detail = " ".join(str(error).split())[:300] or "no details"
        _error(io, f"unexpected {type(error).__name__}: {detail} (run with --debug for the "
                   "trace; this is a bug worth reporting)")
        return int(ExitCode.FAILURE)


def _debug_requested(args: list[str], io: IOStreams) -> bool:
    """`--debug` among the root options (not in a job's command after `--`), or JOBCTL_DEBUG."""
    takes_value = False
    for arg in args:
        if takes_value:
            takes_value = False
        elif arg == "--debug":
            return True
        elif arg in ("--database-url", "--profile"):
            takes_value = True
        elif arg == "--" or not arg.startswith("-"):
            break  # the sub-command: what follows is its own
    return io.environ.get("JOBCTL_DEBUG", "").strip().lower() in {"1", "true", "t", "yes", "y",
                                                                   "on"}


def _usage_error(io: IOStreams, error: click.ClickException, debug: bool) -> int:
    ctx = getattr(error, "ctx", None)
    if isinstance(error, click.exceptions.NoArgsIsHelpError) and ctx is not None:
        io.stdout.write(ctx.get_help() + "\n")
        return 0
    if debug:
        raise error
    message = error.format_message().strip().splitlines()
    text = (message[0] if message else type(error).__name__).rstrip(".")
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    _error(io, text[:1].lower() + text[1:] + hint)
    return int(getattr(error, "exit_code", ExitCode.INVALID_INPUT))


def _error(io: IOStreams, message: str) -> None:
    if not message.isprintable():
        # A name or value in the message with control characters: shown, never obeyed (and
        # render imported only then, to keep usage errors cheap).
        from jobctl.cli.render import visible

        message = visible(message)
    io.stderr.write(f"jobctl: error: {message}\n")


def _silence(stdout: TextIO) -> None:
    """Whatever is still buffered for a reader that left goes nowhere (not to a traceback at
    exit)."""
    try:
        fd = stdout.fileno()
    except (OSError, ValueError):  # not a file (a test's buffer): nothing to silence
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)


def main() -> None:
    sys.exit(run())
