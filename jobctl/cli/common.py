"""What every command shares: the state the root options set, and argument parsers."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar

import click
import typer

from jobctl.cli import complete
from jobctl.cli.render import OutputFormat, Terminal
from jobctl.config import CommandLine, Setting
from jobctl.errors import InvalidInput, JobctlError

if TYPE_CHECKING:
    from jobctl.client import Client


@dataclass
class State:
    """What the root options said; the settings they lead to are resolved on first use (see
    `jobctl.config`), so that `config path` works even when the config file does not parse."""

    command_line: CommandLine = field(default_factory=lambda: CommandLine({}, {}))
    debug: bool = False
    terminal: Terminal = field(default_factory=Terminal)
    _settings: dict[str, Setting] | None = None
    _client: Client | None = None

    def settings(self) -> dict[str, Setting]:
        if self._settings is None:
            from jobctl.config import resolve

            warnings: list[str] = []
            self._settings = resolve(self.command_line, warnings)
            # Once a run (the settings are resolved once): a password others may see, one
            # line each on stderr; the exit code stays what the command makes it.
            for warning in warnings:
                self.terminal.err(f"jobctl: warning: {warning}")  # a path may hold anything
            if self._settings["no_color"].value:
                self.terminal.no_color = True
        return self._settings

    @property
    def stdin(self) -> BinaryIO:
        """The run's standard input, as bytes (see `jobctl.cli.app.IOStreams`)."""
        return self.terminal.io.stdin_bytes

    @property
    def database_url(self) -> str:
        return str(self.settings()["database_url"].value)

    def close(self) -> None:
        """Close the client's connection, if the run opened one."""
        if self._client is not None:
            self._client.close()

    def client(self) -> Client:
        if self._client is None:
            from jobctl.client import Client

            self._client = Client(self.database_url)
        return self._client


ROOT_SETTINGS = ("database_url", "profile", "debug", "no_color")


def command_line(ctx: click.Context) -> CommandLine:
    """The root options' values, and whether each came from its flag or its JOBCTL_* variable
    (Click records which; the config file comes into it later, in `jobctl.config.resolve`)."""
    from click.core import ParameterSource

    from jobctl.config import Source

    root = ctx.find_root()
    named = {ParameterSource.COMMANDLINE: Source.FLAG, ParameterSource.ENVIRONMENT: Source.ENV}
    values = {name: root.params.get(name) for name in ROOT_SETTINGS}
    sources = {name: named.get(root.get_parameter_source(name), Source.DEFAULT)  # type: ignore[arg-type]
               for name in ROOT_SETTINGS}
    return CommandLine(values, sources)


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def parse_pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """KEY=VALUE options (--env, --label) as a dict; the last one of a key wins."""
    pairs: dict[str, str] = {}
    for value in values or []:
        key, sep, rest = value.partition("=")
        if not sep or not key or key != key.strip():
            raise InvalidInput(f"invalid {option} {value!r}: use KEY=VALUE")
        pairs[key] = rest
    return pairs


# How the command line names what the Python API's errors name by field (jobctl.errors.
# InvalidInput): its flags, and its own words for the rest. The one place they are mapped; a field
# not named here keeps its own name (max_lost, input, user: the CLI checks those flags itself
# first, and a workflow file's keys are these names).
CLI_WORDS = {
    "argv": "put it after --, e.g. jobctl job submit -- echo hi",
    "retries": "--retries",
    "timeout_s": "--timeout",
    "backoff_s": "--retry-backoff",
    "run_in_s": "--in",
    "queue": "--queue",
    "priority": "--priority",
    "unique_key": "--unique-key",
    "cron": "--cron",
    "every_s": "--every",
    "jitter_s": "--jitter",
    "start_at": "--start-at",
    "end_at": "--end-at",
    "replace": "--replace",
    "edit_schedule": "`jobctl schedule edit`",
    "limits": "--limit",
    "cpus": "--cpus",
    "mem_bytes": "--mem",
    "gpus": "--gpus",
    "requires": "--require",
    "max_running": "--max-running",
    "on_success": "--on-success",
    "on_failure": "--on-failure",
    "on_end": "--on-end",
    # dead-man's switches (schedule add/edit, check add)
    "alert_after_s": "--alert-after",
    "on_overdue": "--on-overdue",
    "grace_s": "--grace",
    "retry_on_exit": "--retry-on-exit",
    "secret_env": "--secret-env",
    "env": "--env",
    "no_retry_on_exit": "--no-retry-on-exit",
}


def cli_message(error: JobctlError) -> str:
    """The error's message as the command line words it (CLI_WORDS)."""
    if isinstance(error, InvalidInput):
        return error.worded(CLI_WORDS)
    return error.message


P = TypeVar("P")


def parse_duration(text: str | None, option: str) -> float | None:
    from jobctl.timeparse import parse_duration as parse

    return _parsed(text, option, parse)


def parse_instant(text: str | None, option: str) -> datetime | None:
    from jobctl.timeparse import parse_instant as parse

    return _parsed(text, option, parse)


def _parsed(text: str | None, option: str, parse: Callable[[str], P]) -> P | None:
    """`parse(text)`, None for None; what it cannot read is invalid input of `option`."""
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as error:
        raise InvalidInput(f"{option}: {error}") from error


def parse_queues(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated queue names, in order, without duplicates."""
    queues: list[str] = []
    for value in values or []:
        for name in value.split(","):
            name = name.strip()
            if not name:
                raise InvalidInput(f"invalid queue list {value!r}: empty queue name")
            if name not in queues:
                queues.append(name)
    return queues


# --- the job options that `job submit` and `schedule add/edit` share ------------------------------


class DeliveryChoice(StrEnum):
    AT_LEAST_ONCE = "at-least-once"
    AT_MOST_ONCE = "at-most-once"


QUEUE_OPTION = typer.Option("default", "--queue", "-q", envvar="JOBCTL_QUEUE",
                            help="The queue; only workers of this queue take the job.",
                            autocompletion=complete.queue_names)
PRIORITY_OPTION = typer.Option(0, "--priority", "-p", help="Higher runs first.")
def output_option(more: str = "") -> Any:
    """The `-o/--output` option; `more` names the formats beyond table, wide, plain and json
    (", json or ids")."""
    last = more or " or json"
    return typer.Option(
        None, "--output", "-o", help="table (default on a terminal, cut to its width), wide (a "
        f"table, nothing cut), plain (tab-separated, default when piped){last}.",
        show_default=False, autocompletion=complete.output_formats)


def refuse_ids(output: OutputFormat | None, command: str) -> None:
    """`-o ids` given to a command whose rows have no ids (`output_option()` without "ids"):
    exit 2, before any work."""
    if output is OutputFormat.IDS:
        raise InvalidInput(f"{command}: -o ids is not supported; use table, wide, plain or json")


TIMEOUT_OPTION = typer.Option(
    None, "--timeout", help="Kill the job after this long (90s, 10m, 1h30m).", show_default=False)
RETRIES_OPTION = typer.Option(0, "--retries", help="Run again this many times if it fails.")
RETRY_BACKOFF_OPTION = typer.Option(
    "10s", "--retry-backoff",
    help="Wait before the first retry; doubles for each further one (±25 % jitter).")
DELIVERY_OPTION = typer.Option(
    DeliveryChoice.AT_LEAST_ONCE, "--delivery",
    help="at-least-once: a job whose worker died runs again; at-most-once: it never does "
         "(it becomes lost).")
ENV_OPTION = typer.Option(
    None, "--env", "-e", metavar="KEY=VALUE",
    help="Set an environment variable for the job (repeatable); the rest of its environment "
         "is the worker's.", show_default=False)
SECRET_ENV_OPTION = typer.Option(
    None, "--secret-env", metavar="NAME=file:PATH|env:VAR",
    help="Set NAME for the job to a secret the worker reads when it starts the job: a file's "
         "contents (less one trailing newline) or a variable of its environment. Only the "
         "reference is stored; the value is masked (***) in the job's output (repeatable).",
    show_default=False)
CWD_OPTION = typer.Option(
    None, "--cwd", help="Directory to run in, on the worker (default: the worker's).",
    show_default=False)
SHELL_OPTION = typer.Option(False, "--shell", help="COMMAND is one string run by /bin/sh -c.")
LABEL_OPTION = typer.Option(
    None, "--label", "-l", metavar="KEY=VALUE", help="Label the job (repeatable).",
    show_default=False)


def job_fields(
    *,
    queue: str,
    priority: int,
    timeout: str | None,
    retries: int,
    retry_backoff: str,
    delivery: DeliveryChoice,
    env: list[str] | None,
    cwd: str | None,
    label: list[str] | None,
) -> dict[str, Any]:
    """The shared job options, parsed into JobSpec fields."""
    from jobctl.models import Delivery

    return dict(
        queue=queue,
        priority=priority,
        timeout_s=parse_duration(timeout, "--timeout"),
        retries=retries,
        backoff_s=parse_duration(retry_backoff, "--retry-backoff") or 0.0,
        delivery=Delivery.parse(delivery.value),
        env=parse_pairs(env, "--env"),
        cwd=os.path.abspath(cwd) if cwd else None,
        labels=parse_pairs(label, "--label"),
    )


def secret_fields(secret_env: list[str] | None) -> dict[str, Any]:
    """--secret-env as the JobSpec field (checked with the rest of the spec by the client)."""
    if not secret_env:
        return {}
    from jobctl.secret_env import parse

    try:
        return {"secret_env": parse(secret_env)}
    except ValueError as error:
        raise InvalidInput(f"invalid --secret-env {error}") from error


# Hooks (jobctl.models.HOOK_STATES); their defaults come from the config file (on_success, …).
_HOOK_HELP = (" (a /bin/sh -c command), as a job of its own that gets JOBCTL_HOOK_JOB_ID, "
              "JOBCTL_HOOK_STATE, JOBCTL_HOOK_EXIT_CODE, JOBCTL_HOOK_NAME, the job's `job status "
              "-o json` on standard input and its output in the file $JOBCTL_HOOK_OUTPUT. "
              "[default: {0} in the config file or JOBCTL_{1}, else none; '' for none]")
ON_SUCCESS_OPTION = typer.Option(
    None, "--on-success", metavar="CMD", show_default=False,
    help="When the job succeeds, run CMD" + _HOOK_HELP.format("on_success", "ON_SUCCESS"))
ON_FAILURE_OPTION = typer.Option(
    None, "--on-failure", metavar="CMD", show_default=False,
    help="When the job fails or is lost, run CMD" + _HOOK_HELP.format("on_failure",
                                                                      "ON_FAILURE"))
ON_END_OPTION = typer.Option(
    None, "--on-end", metavar="CMD", show_default=False,
    help="When the job ends, however, run CMD" + _HOOK_HELP.format("on_end", "ON_END"))


def hook_fields(command_line: CommandLine, *, on_success: str | None, on_failure: str | None,
                on_end: str | None) -> dict[str, str | None]:
    """--on-success, --on-failure and --on-end as JobSpec fields: each flag, else its default
    (JOBCTL_ON_*, the profile, the config file); an empty command is no hook."""
    from jobctl.config import resolve_with_flag
    from jobctl.models import hook_problem

    fields: dict[str, str | None] = {}
    for name, flag in (("on_success", on_success), ("on_failure", on_failure),
                       ("on_end", on_end)):
        setting = resolve_with_flag(command_line, name, flag) if flag is None else None
        command = flag if setting is None else setting.value
        where = f"--{name.replace('_', '-')}" if setting is None else (
            f"{name} ({setting.detail})")
        if command in (None, ""):
            fields[name] = None
            continue
        problem = hook_problem(str(command))
        if problem is not None:
            raise InvalidInput(f"{where}: {problem}")
        fields[name] = str(command)
    return fields


INPUT_OPTION = typer.Option(
    None, "--input", metavar="FILE|-",
    help="Feed FILE (- for standard input) to the job's standard input, byte for byte, at "
         "most 1 MiB. Without it, the job's standard input is /dev/null.", show_default=False)
USER_OPTION = typer.Option(
    None, "--user", metavar="NAME",
    help="Run as this Unix user (its uid, groups, HOME, USER, LOGNAME and SHELL); only a "
         "worker running as root or as NAME takes the job. [default: the worker's user]",
    show_default=False)
# 3: models.DEFAULT_MAX_LOST (not imported here: `--help` stays quick).
MAX_LOST_OPTION = typer.Option(
    3, "--max-lost", metavar="N",
    help="Fail after its worker was lost N times (N >= 1); losing a worker costs no retry.")


LIMIT_OPTION = typer.Option(
    None, "--limit", metavar="KEY=N",
    help="Start only while fewer than N running jobs hold KEY, cluster-wide (repeatable; "
         "KEY=1 is a mutex).", show_default=False)
CPUS_OPTION = typer.Option(None, "--cpus", metavar="N", show_default=False,
                           help="CPUs it needs free on its worker's machine.")
MEM_OPTION = typer.Option(None, "--mem", metavar="SIZE", show_default=False,
                          help="Memory it needs free on its worker's machine (512M, 2G).")
GPUS_OPTION = typer.Option(0, "--gpus", metavar="N",
                           help="GPUs it needs; it gets CUDA_VISIBLE_DEVICES and JOBCTL_GPUS.")
REQUIRE_OPTION = typer.Option(None, "--require", metavar="KEY=VALUE", show_default=False,
                              help="Run only on a worker with this --tag (repeatable).")


def capacity_fields(*, limit: list[str] | None, cpus: float | None = None,
                    mem: str | None = None, gpus: int = 0, require: list[str] | None = None,
                    hold: bool = False) -> dict[str, Any]:
    """--limit, --cpus, --mem, --gpus, --require and --hold as JobSpec fields."""
    if not (limit or cpus is not None or mem is not None or gpus or require):
        return dict(hold=hold)  # the rest at JobSpec's defaults; jobctl.capacity costs ~8 ms
    from jobctl import capacity

    return dict(limits=capacity.parse_limits(limit or ()), cpus=capacity.parse_cpus(cpus),
                mem_bytes=None if mem is None else capacity.parse_size(mem),
                gpus=capacity.parse_gpus(gpus),
                requires=capacity.parse_pairs(require or (), "--require"), hold=hold)


RETRY_ON_EXIT_OPTION = typer.Option(
    None, "--retry-on-exit", metavar="CODES",
    help="Retry (within --retries) only when the command exits with one of these codes "
         "(75,111); a kill by signal or timeout then does not retry.", show_default=False)
NO_RETRY_ON_EXIT_OPTION = typer.Option(
    None, "--no-retry-on-exit", metavar="CODES",
    help="Never retry when the command exits with one of these codes (2,64); any other "
         "failure retries (within --retries).", show_default=False)


def retry_exit_fields(*, retry_on_exit: str | None,
                      no_retry_on_exit: str | None) -> dict[str, Any]:
    """--retry-on-exit and --no-retry-on-exit as JobSpec fields (at most one of them)."""
    if retry_on_exit is None and no_retry_on_exit is None:
        return {}
    if retry_on_exit is not None and no_retry_on_exit is not None:
        raise InvalidInput("give --retry-on-exit or --no-retry-on-exit, not both")
    from jobctl.policy import parse_exit_codes

    option, text = (("--retry-on-exit", retry_on_exit) if retry_on_exit is not None
                     else ("--no-retry-on-exit", no_retry_on_exit))
    assert text is not None
    try:
        codes = parse_exit_codes(text)
    except ValueError as error:
        raise InvalidInput(f"{option}: {error}") from error
    field = "retry_on_exit" if retry_on_exit is not None else "no_retry_on_exit"
    return {field: codes}


def run_fields(*, input_path: str | None, user: str | None, max_lost: int,
               stdin: BinaryIO | None = None) -> dict[str, Any]:
    """--input, --user and --max-lost as JobSpec fields (`input` read here, from `stdin` for
    `--input -`: the run's, `State.stdin`)."""
    from jobctl.models import user_name_problem

    if not 1 <= max_lost <= 2**31 - 1:  # a 32-bit column
        raise InvalidInput(f"--max-lost must be between 1 and {2**31 - 1}, not {max_lost}")
    problem = None if user is None else user_name_problem(user)
    if problem is not None:
        raise InvalidInput(f"--user {user!r}: {problem}")
    return dict(input=read_input(input_path, stdin), user=user, max_lost=max_lost)


def read_input(path: str | None, stdin: BinaryIO | None = None) -> bytes | None:
    """`--input FILE|-`: the bytes of FILE (of `stdin`, by default the process's standard
    input, for -), at most MAX_INPUT_BYTES; None without --input (the job reads /dev/null)."""
    from jobctl.models import MAX_INPUT_BYTES

    if path is None:
        return None
    source = "standard input" if path == "-" else path
    try:
        if path == "-":
            data = (stdin or sys.stdin.buffer).read(MAX_INPUT_BYTES + 1)
        else:
            with open(path, "rb") as file:
                data = file.read(MAX_INPUT_BYTES + 1)
    except OSError as error:
        raise InvalidInput(f"--input: cannot read {source}: {error.strerror}") from error
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidInput(f"--input: {source} holds more than 1 MiB ({MAX_INPUT_BYTES} bytes), "
                           "the most a job's input may be")
    return data


def command_argv(command: list[str] | None, shell: bool, usage: str) -> list[str]:
    """The job's argv from COMMAND [ARG]… (or one string for /bin/sh -c with --shell)."""
    argv = list(command or [])
    if shell:
        if len(argv) != 1:
            raise InvalidInput(f"--shell takes the command as one string: {usage} --shell "
                               "'echo a && echo b'")
        argv = ["/bin/sh", "-c", argv[0]]
    return argv


# --- what `worker start` and `scheduler run` share ----------------------------------------------

RESCUE_INTERVAL_OPTION = typer.Option(
    "5s", "--rescue-interval", envvar="JOBCTL_RESCUE_INTERVAL",
    help="How often to take back the jobs of workers whose leases ran out.")


def metrics_port_option(healthy_while: str) -> Any:
    """The `--metrics-port` option; `healthy_while` says when /healthz answers 200."""
    return typer.Option(
        0, "--metrics-port", envvar="JOBCTL_METRICS_PORT", metavar="PORT",
        help="Serve Prometheus metrics on /metrics and a health check on /healthz (200 while "
             f"{healthy_while}, else 503) on this port; 0: off.")


METRICS_ADDRESS_OPTION = typer.Option(
    "127.0.0.1", "--metrics-address", envvar="JOBCTL_METRICS_ADDRESS", metavar="ADDRESS",
    help="Listen on this address for --metrics-port (0.0.0.0: every interface; the default is "
         "this machine only).")


def check_metrics_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise InvalidInput("--metrics-port must be between 0 (off) and 65535")


class ServedMetrics(Protocol):
    registry: Any

    def health(self) -> tuple[bool, str]: ...


M = TypeVar("M", bound=ServedMetrics)


@contextlib.contextmanager
def metrics_served(port: int, address: str, make: Callable[[], M]) -> Iterator[M | None]:
    """The metrics `make()` builds, served on `port` while the block runs; None when the port is
    0 (and prometheus_client is never imported). It listens before the block starts, so a port
    in use fails before anything else happens."""
    if not port:
        yield None
        return
    from jobctl.metrics import serve

    metrics = make()
    server = serve(port, metrics.registry, metrics.health, address)
    try:
        yield metrics
    finally:
        server.close()


def configure_logging(quiet: bool, who: str) -> None:
    """Log lines on stderr: `TIME jobctl WHO: message`; with `quiet`, warnings only."""
    import logging

    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format=f"%(asctime)s jobctl {who}: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
