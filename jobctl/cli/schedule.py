"""`jobctl schedule …`: recurring jobs (cron or intervals) kept in the database."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from jobctl.cli import complete
from jobctl.cli.common import (
    CWD_OPTION,
    DELIVERY_OPTION,
    ENV_OPTION,
    INPUT_OPTION,
    LABEL_OPTION,
    LIMIT_OPTION,
    MAX_LOST_OPTION,
    NO_RETRY_ON_EXIT_OPTION,
    ON_END_OPTION,
    ON_FAILURE_OPTION,
    ON_SUCCESS_OPTION,
    PRIORITY_OPTION,
    QUEUE_OPTION,
    RETRIES_OPTION,
    RETRY_BACKOFF_OPTION,
    RETRY_ON_EXIT_OPTION,
    SECRET_ENV_OPTION,
    SHELL_OPTION,
    TIMEOUT_OPTION,
    USER_OPTION,
    DeliveryChoice,
    capacity_fields,
    command_argv,
    hook_fields,
    job_fields,
    output_option,
    parse_duration,
    parse_instant,
    parse_pairs,
    retry_exit_fields,
    run_fields,
    secret_fields,
    state,
)
from jobctl.cli.render import OutputFormat, shell_join, visible
from jobctl.errors import InvalidInput

if TYPE_CHECKING:
    from jobctl.cli.render import Terminal
    from jobctl.models import Schedule

app = typer.Typer(help="Recurring jobs: cron expressions or intervals, in any time zone.",
                  no_args_is_help=True, rich_markup_mode=None)


class OverlapChoice(StrEnum):
    ALLOW = "allow"
    FORBID = "forbid"
    REPLACE = "replace"


class MisfireChoice(StrEnum):
    SKIP = "skip"
    ONCE = "once"
    ALL = "all"


OUTPUT_OPTION = output_option()
NAME_ARGUMENT = typer.Argument(..., metavar="NAME", help="The schedule's name.",
                               autocompletion=complete.schedule_names)
CRON_HELP = ("A cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 "
             "with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly. Quote it.")
EVERY_HELP = "An interval instead of --cron (30s, 5m, 1h30m)."
TZ_HELP = "IANA time zone the cron expression is read in (e.g. Europe/Berlin). [default: UTC]"
OVERLAP_HELP = ("When the previous run is still queued or running: allow (run both), forbid "
                "(skip this one, recorded as a skipped job) or replace (cancel the previous run).")
MISFIRE_HELP = ("Fire times missed while no scheduler ran or the schedule was paused: skip "
                "them, fire once for the latest, or fire all (up to a cap).")
ALERT_AFTER_HELP = ("A dead-man's switch: the schedule is overdue once no run of it succeeded "
                    "for this long (30m, 1d; measured from its latest succeeded run, or from "
                    "now when it has none), whether its runs fail, are skipped, or nothing runs "
                    "them. Shown by `schedule list/show` and the scheduler's metrics.")
ON_OVERDUE_HELP = ("A command (/bin/sh -c) run as a job of its own once each time the schedule "
                   "becomes overdue; it gets JOBCTL_HOOK_NAME, JOBCTL_HOOK_STATE=overdue, "
                   "JOBCTL_HOOK_JOB_ID and JOBCTL_HOOK_EXIT_CODE (the latest run's) and the "
                   "schedule as JSON (`schedule show -o json`) on its standard input. Needs "
                   "--alert-after.")


@app.command()
def add(
    ctx: typer.Context,
    name: str = NAME_ARGUMENT,
    command: list[str] | None = typer.Argument(
        None, metavar="[--] COMMAND [ARG]...", help="The command each occurrence runs.",
        show_default=False),
    cron: str | None = typer.Option(None, "--cron", help=CRON_HELP, show_default=False),
    every: str | None = typer.Option(None, "--every", help=EVERY_HELP, show_default=False),
    tz: str = typer.Option("UTC", "--tz", help=TZ_HELP, show_default=False,
                           autocompletion=complete.time_zones),
    start_at: str | None = typer.Option(None, "--start-at", help="No fire time before this.",
                                        show_default=False),
    end_at: str | None = typer.Option(None, "--end-at", help="No fire time after this.",
                                      show_default=False),
    overlap: OverlapChoice = typer.Option(OverlapChoice.FORBID, "--overlap", help=OVERLAP_HELP),
    misfire: MisfireChoice = typer.Option(MisfireChoice.ONCE, "--misfire", help=MISFIRE_HELP),
    jitter: str | None = typer.Option(
        None, "--jitter", help="Delay each run by a random time up to this long.",
        show_default=False),
    replace: bool = typer.Option(False, "--replace",
                                 help="Redefine the schedule if the name exists already."),
    paused: bool = typer.Option(False, "--paused", help="Create it paused."),
    workflow: str | None = typer.Option(
        None, "--workflow", metavar="FILE",
        help="Start this workflow (TOML, see `jobctl workflow run`) at every fire time instead "
             "of a command; its validated definition is stored, not the path.",
        show_default=False),
    set_: list[str] | None = typer.Option(
        None, "--set", metavar="KEY=VALUE",
        help="With --workflow: replace {KEY} in its commands (repeatable).", show_default=False),
    queue: str = QUEUE_OPTION,
    priority: int = PRIORITY_OPTION,
    timeout: str | None = TIMEOUT_OPTION,
    retries: int = RETRIES_OPTION,
    retry_backoff: str = RETRY_BACKOFF_OPTION,
    delivery: DeliveryChoice = DELIVERY_OPTION,
    env: list[str] | None = ENV_OPTION,
    secret_env: list[str] | None = SECRET_ENV_OPTION,
    cwd: str | None = CWD_OPTION,
    shell: bool = SHELL_OPTION,
    label: list[str] | None = LABEL_OPTION,
    input_: str | None = INPUT_OPTION,
    user: str | None = USER_OPTION,
    max_lost: int = MAX_LOST_OPTION,
    limit: list[str] | None = LIMIT_OPTION,
    on_success: str | None = ON_SUCCESS_OPTION,
    on_failure: str | None = ON_FAILURE_OPTION,
    on_end: str | None = ON_END_OPTION,
    alert_after: str | None = typer.Option(None, "--alert-after", metavar="DURATION",
                                           help=ALERT_AFTER_HELP, show_default=False),
    on_overdue: str | None = typer.Option(None, "--on-overdue", metavar="CMD",
                                          help=ON_OVERDUE_HELP, show_default=False),
    retry_on_exit: str | None = RETRY_ON_EXIT_OPTION,
    no_retry_on_exit: str | None = NO_RETRY_ON_EXIT_OPTION,
) -> None:
    """Add a schedule: a command run at every fire time, once per fire time. Put the command
    after `--`.

    \b
        jobctl schedule add nightly-backup --cron '30 2 * * *' --tz Europe/Berlin \\
            --shell 'pg_dump db | gzip > /backup/db.gz'
        jobctl schedule add heartbeat --every 30s -- curl -fsS https://example.com/ping
        jobctl schedule add weekday-ticks --cron '31 10-15 1 * * MON-FRI' -- ./tick.sh
    """
    from jobctl.models import JobSpec, Misfire, Overlap, ScheduleDefinition

    st = state(ctx)
    stored_workflow = _workflow(workflow, set_, command)
    if stored_workflow is not None:
        # Only a description: an occurrence starts the workflow, not this command.
        command, shell = ["jobctl", "workflow", "run", str(workflow)], False
        if (input_ is not None or user is not None or max_lost != MAX_LOST_OPTION.default
                or limit or secret_env):
            raise InvalidInput("--input, --user, --max-lost, --limit and --secret-env are for a "
                               "command: a workflow's tasks take input, user, max_lost, limits "
                               "and secret_env in its file")
        if on_success is not None or on_failure is not None or on_end is not None:
            raise InvalidInput("--on-success, --on-failure and --on-end are for a command: a "
                               "workflow's tasks take hooks in its file (and the workflow's "
                               "own on_failure in its [workflow] table)")
        if retry_on_exit is not None or no_retry_on_exit is not None:
            raise InvalidInput("--retry-on-exit and --no-retry-on-exit are for a command: a "
                               "workflow's tasks take retry_on_exit and no_retry_on_exit in "
                               "its file")
    hooks: dict[str, Any] = {} if stored_workflow is not None else hook_fields(
        st.command_line, on_success=on_success, on_failure=on_failure, on_end=on_end)
    spec = JobSpec(
        argv=command_argv(command, shell, f"jobctl schedule add {name}"),
        **job_fields(queue=queue, priority=priority, timeout=timeout, retries=retries,
                     retry_backoff=retry_backoff, delivery=delivery, env=env, cwd=cwd,
                     label=label),
        **secret_fields(secret_env),
        **run_fields(input_path=input_, user=user, max_lost=max_lost,
                     stdin=st.stdin),
        **capacity_fields(limit=limit),
        **hooks,
        **retry_exit_fields(retry_on_exit=retry_on_exit, no_retry_on_exit=no_retry_on_exit),
    )
    definition = ScheduleDefinition(
        name=name, job=spec, cron=cron, every_s=parse_duration(every, "--every"), timezone=tz,
        start_at=parse_instant(start_at, "--start-at"), end_at=parse_instant(end_at, "--end-at"),
        overlap=Overlap(overlap.value), misfire=Misfire(misfire.value),
        jitter_s=parse_duration(jitter, "--jitter") or 0.0, paused=paused,
        workflow=stored_workflow, alert_after_s=parse_duration(alert_after, "--alert-after"),
        on_overdue=on_overdue,
    )
    schedule = st.client().add_schedule(definition, replace=replace)
    st.terminal.err(f"schedule {schedule.name} added; next run "
                    f"{_in_zone(schedule.next_fire_at, schedule.timezone)}")


@app.command()
def edit(
    ctx: typer.Context,
    name: str = NAME_ARGUMENT,
    cron: str | None = typer.Option(None, "--cron", help=CRON_HELP, show_default=False),
    every: str | None = typer.Option(None, "--every", help=EVERY_HELP, show_default=False),
    tz: str | None = typer.Option(None, "--tz", help=TZ_HELP, show_default=False,
                                  autocompletion=complete.time_zones),
    start_at: str | None = typer.Option(None, "--start-at", help="No fire time before this.",
                                        show_default=False),
    end_at: str | None = typer.Option(None, "--end-at", help="No fire time after this.",
                                      show_default=False),
    overlap: OverlapChoice | None = typer.Option(None, "--overlap", help=OVERLAP_HELP,
                                                 show_default=False),
    misfire: MisfireChoice | None = typer.Option(None, "--misfire", help=MISFIRE_HELP,
                                                 show_default=False),
    jitter: str | None = typer.Option(None, "--jitter", help="Random delay up to this long.",
                                      show_default=False),
    rename: str | None = typer.Option(None, "--rename", help="A new name.", show_default=False),
    alert_after: str | None = typer.Option(
        None, "--alert-after", metavar="DURATION|none",
        help=ALERT_AFTER_HELP.replace("from now", "from this edit") + " Setting it starts its "
        "clock anew; none removes the switch (and its hook).", show_default=False),
    on_overdue: str | None = typer.Option(
        None, "--on-overdue", metavar="CMD", help=ON_OVERDUE_HELP + " An empty CMD removes it.",
        show_default=False),
) -> None:
    """Change a schedule's timing, policies or dead-man's switch; its next fire time is
    computed afresh."""
    from jobctl.models import Misfire, Overlap

    if cron is not None and every is not None:
        raise InvalidInput("give --cron or --every, not both")
    changes: dict[str, Any] = {}
    if cron is not None:
        changes["cron"] = cron
    if every is not None:
        changes["every_s"] = parse_duration(every, "--every")
    if tz is not None:
        changes["timezone"] = tz
    if start_at is not None:
        changes["start_at"] = parse_instant(start_at, "--start-at")
    if end_at is not None:
        changes["end_at"] = parse_instant(end_at, "--end-at")
    if overlap is not None:
        changes["overlap"] = Overlap(overlap.value)
    if misfire is not None:
        changes["misfire"] = Misfire(misfire.value)
    if jitter is not None:
        changes["jitter_s"] = parse_duration(jitter, "--jitter")
    if rename is not None:
        changes["name"] = rename
    changes.update(_alert_changes(alert_after, on_overdue))
    if not changes:
        raise InvalidInput("nothing to change: give an option such as --cron or --overlap")
    st = state(ctx)
    schedule = st.client().edit_schedule(name, **changes)
    st.terminal.err(f"schedule {schedule.name} changed; next run "
                    f"{_in_zone(schedule.next_fire_at, schedule.timezone)}")


@app.command("list")
def list_(ctx: typer.Context, output: OutputFormat | None = OUTPUT_OPTION) -> None:
    """List schedules by name."""
    st = state(ctx)
    found = st.client().schedules()
    terminal = st.terminal
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        terminal.json([schedule.to_json() for schedule in found])
        return
    rows = [[s.name, _timing_text(s), s.timezone, "paused" if s.paused else "active",
             s.overlap, s.misfire, s.next_fire_at, s.last_fire_at, _overdue_text(s),
             shell_join(s.job.argv) if s.job else "-"] for s in found]
    terminal.table(["name", "schedule", "tz", "state", "overlap", "misfire", "next", "last",
                    "overdue", "command"], rows, fmt)


@app.command()
def show(ctx: typer.Context, name: str = NAME_ARGUMENT,
         output: OutputFormat | None = OUTPUT_OPTION) -> None:
    """A schedule's definition, its next 5 fire times (in its time zone) and its last runs."""
    from jobctl.timeparse import format_duration

    st = state(ctx)
    client = st.client()
    from jobctl.models import SHOW_FIRE_TIMES, SHOW_RUNS

    schedule = client.schedule(name)
    upcoming = client.next_fire_times(name, SHOW_FIRE_TIMES)
    runs = client.schedule_runs(name, SHOW_RUNS)
    terminal = st.terminal
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        from jobctl.models import schedule_document

        terminal.json(schedule_document(schedule, upcoming, runs))
        return
    job = schedule.job
    zone_text = schedule.timezone + (" (the default)" if schedule.timezone == "UTC" else "")
    terminal.fields([
        ("name", schedule.name),
        ("schedule", _timing_text(schedule)),
        ("time zone", zone_text),
        ("state", "paused" if schedule.paused else "active"),
        ("submitted by", schedule.submitted_by),
        ("command", shell_join(job.argv) if job else None),
        ("queue", job.queue if job else None),
        ("overlap", schedule.overlap.value),
        ("misfire", schedule.misfire.value),
        ("jitter", format_duration(schedule.jitter_s) if schedule.jitter_s else None),
        ("start at", schedule.start_at),
        ("end at", schedule.end_at),
        ("last fired", _in_zone(schedule.last_fire_at, schedule.timezone)),
        ("next runs", ", ".join(_in_zone(t, schedule.timezone) for t in upcoming) or "none"),
        *_alert_fields(schedule),
    ], fmt)
    if runs:
        terminal.out()
        rows = [[run.job_id, _in_zone(run.fire_time, schedule.timezone), run.state,
                 run.created_at, run.error] for run in runs]
        terminal.table(["job", "fire time", "state", "created", "error"], rows, fmt)


@app.command("next")
def next_(ctx: typer.Context, name: str = NAME_ARGUMENT,
          count: int = typer.Option(5, "--count", "-n", help="How many fire times."),
          output: OutputFormat | None = OUTPUT_OPTION) -> None:
    """The schedule's next fire times, one a line, in its time zone (ISO 8601)."""
    if not 1 <= count <= 10_000:
        raise InvalidInput("-n must be between 1 and 10000")
    st = state(ctx)
    client = st.client()
    schedule = client.schedule(name)
    times = client.next_fire_times(name, count)
    if st.terminal.resolve(output) is OutputFormat.JSON:
        from jobctl.timeparse import isoformat_utc

        st.terminal.json([isoformat_utc(t) for t in times])
        return
    for moment in times:
        st.terminal.out(_in_zone(moment, schedule.timezone))


@app.command()
def pause(ctx: typer.Context, name: str = NAME_ARGUMENT) -> None:
    """Stop firing until resumed (fire times passed meanwhile follow the misfire policy)."""
    st = state(ctx)
    was = st.client().pause_schedule(name, True)
    st.terminal.err(f"schedule {name} {'was already paused' if was else 'paused'}")


@app.command()
def resume(ctx: typer.Context, name: str = NAME_ARGUMENT) -> None:
    """Fire again after a pause."""
    st = state(ctx)
    was = st.client().pause_schedule(name, False)
    st.terminal.err(f"schedule {name} {'resumed' if was else 'was not paused'}")


@app.command()
def remove(ctx: typer.Context, name: str = NAME_ARGUMENT) -> None:
    """Delete a schedule. The jobs it made stay."""
    st = state(ctx)
    st.client().remove_schedule(name)
    st.terminal.err(f"schedule {name} removed")


@app.command()
def trigger(ctx: typer.Context, name: str = NAME_ARGUMENT) -> None:
    """Run the schedule once now (its overlap policy applies). Prints the job's id (the
    workflow's, for a schedule of a workflow)."""
    st = state(ctx)
    job_id = st.client().trigger_schedule(name)
    st.terminal.out(str(job_id))


@app.command("import")
def import_(
    ctx: typer.Context,
    path: str = typer.Argument(..., metavar="FILE", help="A crontab file (- for standard input)."),
    prefix: str | None = typer.Option(
        None, "--prefix", help="Schedules are named PREFIX-LINE (LINE: the entry's line number). "
        "[default: the file's name]", show_default=False),
    tz: str = typer.Option("UTC", "--tz", autocompletion=complete.time_zones,
                           help="Time zone of entries without CRON_TZ above "
                           "them. [default: UTC]", show_default=False),
    system: bool | None = typer.Option(
        None, "--system/--no-system", help="A system crontab (/etc/crontab, /etc/cron.d/*): a "
        "user field after the time fields, the user each job runs as. [default: by the path: a "
        "file in a cron.d directory, or etc/crontab]", show_default=False),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse the file (and import nothing) if an entry would be "
        "skipped (@reboot)."),
    overlap: OverlapChoice = typer.Option(
        OverlapChoice.ALLOW, "--overlap", help="cron itself starts a run whatever the last one "
        "does: allow."),
    misfire: MisfireChoice = typer.Option(
        MisfireChoice.SKIP, "--misfire", help="cron itself runs nothing it missed: skip."),
    queue: str = QUEUE_OPTION,
    replace: bool = typer.Option(False, "--replace", help="Redefine schedules that exist."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be created."),
    output: OutputFormat | None = OUTPUT_OPTION,
) -> None:
    """Create one schedule per crontab line (`m h dom mon dow command`, @daily…). Comments are
    skipped; NAME=value lines set the environment of the lines below them, CRON_TZ their time
    zone. Each command runs with /bin/sh -c (or the crontab's SHELL); as in cron, the text after
    its first unescaped % is its standard input, each further % a newline. @reboot entries are
    skipped with a warning. Any other error imports nothing."""
    from jobctl.cron import (
        CrontabError,
        is_system_crontab,
        mailto_addresses,
        mailto_hook,
        parse_crontab,
    )
    from jobctl.models import MAX_INPUT_BYTES, JobSpec, Misfire, Overlap, ScheduleDefinition

    where = "<stdin>" if path == "-" else path
    try:
        text = state(ctx).terminal.io.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise InvalidInput(f"{path} is not UTF-8 text") from error
    if system is None:
        system = path != "-" and is_system_crontab(path)
    try:
        crontab = parse_crontab(text, system=system)
    except CrontabError as error:
        raise InvalidInput(f"{where}:{error.line}: {error.reason}") from error
    if not crontab.entries and not crontab.skipped:
        raise InvalidInput(f"{path} holds no crontab entries")
    if strict and crontab.skipped:
        first = crontab.skipped[0]
        raise InvalidInput(f"{where}:{first.line}: {first.reason} (--strict: nothing imported)")
    st = state(ctx)
    for skip in crontab.skipped:
        st.terminal.err(f"jobctl: warning: {where}:{skip.line}: skipped: {skip.reason}")
    stem = prefix or ("stdin" if path == "-" else Path(path).name.split(".")[0] or "crontab")
    definitions = []
    mailed: dict[str, list[int]] = {}  # MAILTO: the lines whose output goes to it
    for entry in crontab.entries:
        if entry.input is not None and len(entry.input) > MAX_INPUT_BYTES:
            raise InvalidInput(f"{where}:{entry.line}: the standard input after % is more than "
                               f"1 MiB ({MAX_INPUT_BYTES} bytes)")
        shell = entry.env.get("SHELL", "/bin/sh")
        addresses = mailto_addresses(entry.env)
        if addresses:
            mailed.setdefault(", ".join(addresses), []).append(entry.line)
        definitions.append(ScheduleDefinition(
            name=f"{stem}-{entry.line}",
            job=JobSpec(argv=[shell, "-c", entry.command], env=entry.env, queue=queue,
                        input=entry.input, user=entry.user,
                        on_end=mailto_hook(addresses) if addresses else None),
            cron=entry.cron, timezone=entry.timezone or tz, overlap=Overlap(overlap.value),
            misfire=Misfire(misfire.value)))
    if definitions and not dry_run:
        st.client().add_schedules(definitions, replace=replace)
    _print_imported(st.terminal, definitions, output, dry_run)
    for mailto, lines in mailed.items():
        st.terminal.err(f"jobctl: MAILTO={visible(mailto)} (line{'s' * (len(lines) > 1)} "
                        f"{', '.join(map(str, lines))}): a run that prints something has its "
                        "output mailed there through the worker's sendmail, by an --on-end hook")


def _print_imported(terminal: Terminal, definitions: list[Any], output: OutputFormat | None,
                    dry_run: bool) -> None:
    from jobctl.models import job_template

    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        # user and input as `schedule show` has them (input in base64)
        terminal.json([{"name": d.name, "cron": d.cron, "timezone": d.timezone,
                        "argv": d.job.argv, "env": d.job.env, "user": d.job.user,
                        "input": job_template(d.job)["input"], "on_end": d.job.on_end}
                       for d in definitions])
    else:
        rows = [[d.name, d.cron, d.timezone, d.job.user,
                 None if d.job.input is None else f"{len(d.job.input)} bytes",
                 shell_join(d.job.argv)] for d in definitions]
        terminal.table(["name", "cron", "tz", "user", "stdin", "command"], rows, fmt)
    verb = "would create" if dry_run else "created"
    terminal.err(f"{verb} {len(definitions)} schedules")


def _alert_changes(alert_after: str | None, on_overdue: str | None) -> dict[str, Any]:
    """`schedule edit --alert-after DURATION|none --on-overdue CMD|''` as changes."""
    changes: dict[str, Any] = {}
    if alert_after is not None:
        if alert_after.strip().lower() == "none":
            changes["alert_after_s"] = changes["on_overdue"] = None
        else:
            changes["alert_after_s"] = parse_duration(alert_after, "--alert-after")
    if on_overdue is not None:
        changes["on_overdue"] = on_overdue or None
    return changes


def _overdue_text(schedule: Schedule) -> str:
    """The list's OVERDUE column: yes, no, or - without --alert-after."""
    if schedule.alert_after_s is None:
        return "-"
    return "yes" if schedule.overdue else "no"


def _alert_fields(schedule: Schedule) -> list[tuple[str, Any]]:
    """`schedule show`'s lines about its dead-man's switch (none without one)."""
    from jobctl.timeparse import format_duration

    if schedule.alert_after_s is None:
        return []
    return [
        ("alert after", format_duration(schedule.alert_after_s)),
        ("on overdue", schedule.on_overdue),
        ("last success", schedule.last_success_at or "never"),
        ("overdue", "yes" if schedule.overdue else "no"),
        ("overdue since" if schedule.overdue else "overdue at",
         schedule.overdue_since if schedule.overdue else schedule.overdue_at),
    ]


def _timing_text(schedule: Schedule) -> str:
    from jobctl.timeparse import format_duration

    if schedule.every_s is not None:
        return f"every {format_duration(schedule.every_s)}"
    return schedule.cron or "-"


def _workflow(path: str | None, params: list[str] | None,
              command: list[str] | None) -> dict[str, Any] | None:
    """`--workflow FILE [--set K=V]…`: the definition and parameters to store, validated now."""
    if path is None:
        if params:
            raise InvalidInput("--set needs --workflow")
        return None
    if command:
        raise InvalidInput("give either --workflow or a command, not both")
    from jobctl.cli.workflow import read_definition
    from jobctl.workflow import job_specs

    definition = read_definition(path)
    values = parse_pairs(params, "--set")
    job_specs(definition, values)  # every task's command must build with these values
    return {"definition": definition, "params": values}


def _in_zone(moment: datetime | None, timezone: str) -> str:
    """A time in the schedule's zone, ISO 8601 with its offset (what a cron user reads)."""
    if moment is None:
        return "never"
    from zoneinfo import ZoneInfo

    local = moment.astimezone(ZoneInfo(timezone))
    return local.isoformat(timespec="seconds" if local.microsecond == 0 else "microseconds")
