"""`jobctl job …`: submit, list, status, logs, cancel, retry, wait."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import typer

from jobctl.cli import complete
from jobctl.cli.common import (
    CPUS_OPTION,
    CWD_OPTION,
    DELIVERY_OPTION,
    ENV_OPTION,
    GPUS_OPTION,
    INPUT_OPTION,
    LABEL_OPTION,
    LIMIT_OPTION,
    MAX_LOST_OPTION,
    MEM_OPTION,
    NO_RETRY_ON_EXIT_OPTION,
    ON_END_OPTION,
    ON_FAILURE_OPTION,
    ON_SUCCESS_OPTION,
    PRIORITY_OPTION,
    QUEUE_OPTION,
    REQUIRE_OPTION,
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
    parse_queues,
    retry_exit_fields,
    run_fields,
    secret_fields,
    state,
)
from jobctl.cli.render import OutputFormat, Terminal, shell_join, visible
from jobctl.errors import InvalidInput

# What `job status` shows for another's environment, secret references and input where this
# role may not read them (jobctl.store.postgres.roles).
HIDDEN = "(hidden: not your job)"

if TYPE_CHECKING:
    from jobctl.arrays import ArraySpec
    from jobctl.client import Client
    from jobctl.models import Attempt, Dependency, Job, JobSpec

app = typer.Typer(help="Submit and inspect one-off jobs.", no_args_is_help=True,
                  rich_markup_mode=None)


class StateChoice(StrEnum):
    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"
    SKIPPED = "skipped"


class StreamChoice(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"


OUTPUT_OPTION = output_option(", json or ids")
JOB_ID_ARGUMENT = typer.Argument(..., metavar="ID", help="The job's id.",
                                 autocompletion=complete.job_ids)
JOB_IDS_ARGUMENT = typer.Argument(..., metavar="ID...", help="The jobs' ids.",
                                  autocompletion=complete.job_ids)
# Job ids, or --array ID instead (cancel, wait).
SOME_JOB_IDS_ARGUMENT = typer.Argument(None, metavar="[ID]...",
                                       help="The jobs' ids (or --array ID).",
                                       autocompletion=complete.job_ids, show_default=False)
ARRAY_ID_OPTION = typer.Option(None, "--array", metavar="ID", show_default=False,
                               help="The tasks of this array (the id `job submit --array` "
                                    "printed).")
JUNIT_OPTION = typer.Option(
    None, "--junit", metavar="FILE", show_default=False,
    help="Also write a JUnit XML report to FILE (one testcase per job, with the last 64 KiB "
         "of its stdout and stderr), for Jenkins and GitLab.")


@app.command(context_settings={"allow_interspersed_args": False})
def submit(
    ctx: typer.Context,
    command: list[str] | None = typer.Argument(
        None, metavar="[--] COMMAND [ARG]...",
        help="The command and its arguments, run without a shell (see --shell).",
        show_default=False),
    name: str | None = typer.Option(None, "--name", "-n", help="A name to find the job by."),
    queue: str = QUEUE_OPTION,
    priority: int = PRIORITY_OPTION,
    timeout: str | None = TIMEOUT_OPTION,
    retries: int = RETRIES_OPTION,
    retry_backoff: str = RETRY_BACKOFF_OPTION,
    delivery: DeliveryChoice = DELIVERY_OPTION,
    at: str | None = typer.Option(
        None, "--at", help="Start no earlier than this time (ISO 8601, HH:MM, tomorrow HH:MM).",
        show_default=False),
    in_: str | None = typer.Option(None, "--in", help="Start no earlier than this long from now.",
                                   show_default=False),
    env: list[str] | None = ENV_OPTION,
    secret_env: list[str] | None = SECRET_ENV_OPTION,
    cwd: str | None = CWD_OPTION,
    shell: bool = SHELL_OPTION,
    unique_key: str | None = typer.Option(
        None, "--unique-key",
        help="Submit only once: another submit with this key returns the first job's id.",
        show_default=False),
    label: list[str] | None = LABEL_OPTION,
    input_: str | None = INPUT_OPTION,
    user: str | None = USER_OPTION,
    max_lost: int = MAX_LOST_OPTION,
    from_file: str | None = typer.Option(
        None, "--from-file", metavar="PATH",
        help="Submit one job per line of PATH (- for standard input), each run by /bin/sh -c; "
             "blank lines and # comments are skipped. All or nothing.", show_default=False),
    after: str | None = typer.Option(
        None, "--after", metavar="ID[,ID...]", autocompletion=complete.job_ids,
        help="Start only after each of these jobs succeeded (array:ID: every task of that "
             "array); if one fails, is cancelled or lost, this job ends too (failed or "
             "cancelled).", show_default=False),
    after_any: str | None = typer.Option(
        None, "--after-any", metavar="ID[,ID...]", autocompletion=complete.job_ids,
        help="Start only after each of these jobs ended, whatever its outcome (array:ID: "
             "every task of that array).",
        show_default=False),
    array: str | None = typer.Option(
        None, "--array", metavar="SPEC", show_default=False,
        help="Submit an array: one task per index of SPEC (0-999, 1-100:4 or 3,7,9; %N after "
             "it: at most N running at once; at most 100,000 indices). Each task gets "
             "JOBCTL_ARRAY_ID and JOBCTL_ARRAY_INDEX, and {index} in its command becomes its "
             "index. Prints the array's id."),
    retry_on_exit: str | None = RETRY_ON_EXIT_OPTION,
    no_retry_on_exit: str | None = NO_RETRY_ON_EXIT_OPTION,
    limit: list[str] | None = LIMIT_OPTION,
    cpus: float | None = CPUS_OPTION,
    mem: str | None = MEM_OPTION,
    gpus: int = GPUS_OPTION,
    require: list[str] | None = REQUIRE_OPTION,
    hold: bool = typer.Option(False, "--hold",
                              help="Submit it held: it starts only after `jobctl job release`."),
    on_success: str | None = ON_SUCCESS_OPTION,
    on_failure: str | None = ON_FAILURE_OPTION,
    on_end: str | None = ON_END_OPTION,
    wait: bool = typer.Option(False, "--wait", "-w",
                              help="Wait for the job to end and exit with its exit code."),
    follow: bool = typer.Option(False, "--follow", "-f",
                                help="Like --wait, and stream the job's output meanwhile."),
    output: OutputFormat | None = OUTPUT_OPTION,
) -> None:
    """Submit a job: a command for a worker to run.

    Prints the new job's id (bare when piped). Examples:

    \b
        jobctl job submit -- echo hello
        jobctl job submit --queue gpu --timeout 2h -- ./train.sh --epochs 10
        jobctl job submit --shell 'pg_dump db | gzip > /backup/db.gz'
        jobctl job submit --wait -- make test    # exits with make's exit code
        jobctl job submit --input query.sql --user postgres -- psql
        jobctl job submit --array 0-999%10 -- ./shard.sh {index}
    """
    from jobctl.models import JobSpec

    st = state(ctx)
    terminal = st.terminal
    if at is not None and in_ is not None:
        raise InvalidInput("give --at or --in, not both")
    run_at = parse_instant(at, "--at")
    if input_ == "-" and from_file == "-":
        raise InvalidInput("--input - and --from-file - cannot both read standard input")
    array_spec = _parse_array(array) if array is not None else None
    client = st.client()
    template = dict(
        name=name,
        **job_fields(queue=queue, priority=priority, timeout=timeout, retries=retries,
                     retry_backoff=retry_backoff, delivery=delivery, env=env, cwd=cwd,
                     label=label),
        **secret_fields(secret_env),
        run_at=run_at,
        run_in_s=parse_duration(in_, "--in"),
        unique_key=unique_key,
        after=_parse_ids(after, "--after", client),
        after_any=_parse_ids(after_any, "--after-any", client),
        **run_fields(input_path=input_, user=user, max_lost=max_lost, stdin=st.stdin),
        **capacity_fields(limit=limit, cpus=cpus, mem=mem, gpus=gpus, require=require,
                          hold=hold),
        **hook_fields(st.command_line, on_success=on_success, on_failure=on_failure,
                      on_end=on_end),
        **retry_exit_fields(retry_on_exit=retry_on_exit, no_retry_on_exit=no_retry_on_exit),
    )
    if array_spec is not None:
        if from_file is not None or wait or follow or unique_key is not None:
            raise InvalidInput("--array cannot be given with --from-file, --wait, --follow or "
                               "--unique-key (wait with `jobctl job wait --array ID`)")
        array_template = JobSpec(argv=command_argv(command, shell, "jobctl job submit"),
                                 **template)
        array_id, ids = client.submit_array(array_template, array_spec.indices,
                                            array_spec.throttle)
        if output is OutputFormat.JSON:
            terminal.json({"id": array_id, "size": len(ids), "throttle": array_spec.throttle})
        elif terminal.stdout_is_tty and output is None:
            terminal.out(f"submitted array {array_id} ({len(ids)} tasks) to queue "
                         f"{visible(array_template.queue)}")
        else:
            terminal.out(str(array_id))
        return
    if from_file is not None:
        if command:
            raise InvalidInput("give a command or --from-file, not both")
        if wait or follow:
            raise InvalidInput("--wait and --follow work with one job, not with --from-file")
        specs = JobSpec(argv=["true"], **template).for_commands(
            ["/bin/sh", "-c", line] for line in _read_command_lines(from_file, st.stdin))
        ids = client.submit_many(specs)
        for job_id in ids:
            terminal.out(str(job_id))
        return
    argv = command_argv(command, shell, "jobctl job submit")
    spec = JobSpec(argv=argv, **template)
    submitted = client.submit(spec)
    _report_submitted(terminal, submitted.id, submitted.created, spec, output, follow)
    if wait or follow:
        job = _follow(client, terminal, submitted.id) if follow else client.wait([submitted.id])[0]
        raise typer.Exit(_exit_code(job))


def _parse_ids(text: str | None, option: str, client: Client) -> tuple[int, ...]:
    """Job ids separated by commas; `array:ID` stands for every task of that array."""
    if text is None:
        return ()
    ids: list[int] = []
    try:
        for part in (part.strip() for part in text.split(",")):
            if part.startswith("array:"):
                ids.extend(client.array_task_ids(int(part.removeprefix("array:"))))
            elif part:
                ids.append(int(part))
    except ValueError as error:
        raise InvalidInput(f"{option} takes job ids (or array:ID) separated by commas, not "
                           f"{text!r}") from error
    return tuple(ids)


def _parse_array(text: str) -> ArraySpec:
    from jobctl.arrays import parse_array_spec

    try:
        return parse_array_spec(text)
    except ValueError as error:
        raise InvalidInput(f"--array {text!r}: {error}") from error


def _read_command_lines(path: str, stdin: BinaryIO) -> list[str]:
    """The commands of a --from-file file: every line but blank ones and # comments, in order.
    A line that cannot be a command (not UTF-8, a NUL byte) rejects the file, naming the line."""
    try:
        data = stdin.read() if path == "-" else Path(path).read_bytes()
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror}") from error
    commands = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode().strip()
        except UnicodeDecodeError as error:
            raise InvalidInput(f"{path}:{number}: not UTF-8 text") from error
        if "\x00" in line:
            raise InvalidInput(f"{path}:{number}: a command cannot contain a NUL byte")
        if line and not line.startswith("#"):
            commands.append(line)
    if not commands:
        raise InvalidInput(f"{path} holds no commands")
    return commands


def _report_submitted(terminal: Terminal, job_id: int, created: bool, spec: JobSpec,
                      output: OutputFormat | None, follow: bool) -> None:
    if not created:
        terminal.err(f"jobctl: job {job_id} already has unique key {spec.unique_key!r}")
    if output is OutputFormat.JSON:
        terminal.json({"id": job_id, "created": created})
    elif follow:
        terminal.err(f"jobctl: job {job_id} submitted")
    elif terminal.stdout_is_tty and output is None:
        terminal.out(f"submitted job {job_id} to queue {visible(spec.queue)}")
    else:
        terminal.out(str(job_id))


def _follow(client: Client, terminal: Terminal, job_id: int) -> Job:
    """Stream every attempt's output until the job ends; returns the ended job."""
    attempt = 1
    while True:
        for chunk in client.logs(job_id, attempt=attempt, follow=True):
            terminal.write_bytes(chunk.stream.value, chunk.data)
        job = client.get(job_id)
        if job.state.is_final and job.attempt <= attempt:
            return job
        attempt += 1


def _exit_code(job: Job) -> int:
    from jobctl.client import job_exit_code

    return job_exit_code(job)


@app.command("list")
def list_(
    ctx: typer.Context,
    state_: list[StateChoice] | None = typer.Option(
        None, "--state", "-s", help="Only jobs in this state (repeatable).", show_default=False),
    queue: list[str] | None = typer.Option(None, "--queue", "-q", help="Only this queue.",
                                           show_default=False,
                                           autocompletion=complete.queue_names),
    name: str | None = typer.Option(None, "--name", "-n",
                                    help="Only jobs of this name (* and ? match any).",
                                    show_default=False),
    label: list[str] | None = typer.Option(None, "--label", "-l", metavar="KEY=VALUE",
                                           help="Only jobs with this label (repeatable).",
                                           show_default=False),
    schedule: str | None = typer.Option(None, "--schedule",
                                        help="Only jobs this schedule made.",
                                        show_default=False,
                                        autocompletion=complete.schedule_names),
    mine: bool = typer.Option(
        False, "--mine",
        help="Only jobs I submitted (the database role on PostgreSQL, the Unix user on "
             "SQLite)."),
    submitted_by: str | None = typer.Option(None, "--submitted-by", metavar="NAME",
                                            help="Only jobs this role or user submitted.",
                                            show_default=False),
    limit: int = typer.Option(50, "--limit", help="At most this many (0: all)."),
    output: OutputFormat | None = OUTPUT_OPTION,
    watch: bool = typer.Option(False, "--watch", "-w",
                               help="Print the list again each time it changes, until Ctrl-C."),
    array: int | None = typer.Option(
        None, "--array", metavar="ID", show_default=False,
        help="Only the tasks of this array, by index (with --state and --limit)."),
) -> None:
    """List jobs, newest first (an array's tasks: by index)."""
    from jobctl.models import JobState

    if limit < 0:
        raise InvalidInput("--limit must be 0 or more")
    if mine and submitted_by is not None:
        raise InvalidInput("give --mine or --submitted-by, not both")
    if array is not None and (queue or name is not None or label or schedule is not None
                              or mine or submitted_by is not None):
        raise InvalidInput("--array lists an array's tasks: give --state and --limit with it, "
                           "not --queue, --name, --label, --schedule, --mine or "
                           "--submitted-by")
    st = state(ctx)
    client = st.client()

    def fetch() -> list[Job]:
        if array is not None:
            return client.array_tasks(array, states=[JobState(s.value) for s in state_ or []],
                                      limit=limit or None)
        return client.list_jobs(
            states=[JobState(s.value) for s in state_ or []],
            queues=parse_queues(queue),
            name=name,
            labels=parse_pairs(label, "--label"),
            schedule=schedule,
            submitted_by=submitted_by,
            mine=mine,
            limit=limit or None,
        )

    if watch:
        from jobctl.cli.top import watch_changes

        watch_changes(client, fetch, lambda jobs: _print_jobs(st.terminal, jobs, output))
    else:
        _print_jobs(st.terminal, fetch(), output)


def _print_jobs(terminal: Terminal, jobs: list[Job], output: OutputFormat | None) -> None:
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        terminal.json([job.to_json() for job in jobs])
        return
    rows = [
        [job.id, job.name, job.queue,
         f"{job.state} (held)" if job.held and not job.state.is_final else job.state,
         job.attempt, job.exit_code, job.created_at, job.duration_s, shell_join(job.argv)]
        for job in jobs
    ]
    headers = ["id", "name", "queue", "state", "attempt", "exit", "created", "duration",
               "command"]
    if jobs and all(job.array_id is not None for job in jobs):  # an array's tasks
        rows = [[row[0], job.array_index, *row[1:]] for row, job in zip(rows, jobs, strict=True)]
        headers.insert(1, "index")
    terminal.table(headers, rows, fmt)


@app.command()
def status(
    ctx: typer.Context,
    job_id: int = JOB_ID_ARGUMENT,
    output: OutputFormat | None = OUTPUT_OPTION,
) -> None:
    """Everything about one job, and one row per attempt."""
    st = state(ctx)
    client = st.client()
    job = client.get(job_id)
    attempts = client.attempts(job_id)
    waits_for, needed_by = client.dependencies(job_id)
    terminal = st.terminal
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        from jobctl.models import status_document

        terminal.json(status_document(job, attempts, waits_for, needed_by))
        return
    if fmt is OutputFormat.IDS:
        terminal.out(str(job.id))
        return
    from jobctl.timeparse import format_duration

    terminal.fields([
        ("id", job.id),
        ("name", job.name),
        ("state", job.state.value + (" (cancel requested)" if job.cancel_requested
                                     and not job.state.is_final else "")),
        ("command", shell_join(job.argv)),
        ("queue", job.queue),
        ("priority", job.priority),
        ("delivery", job.delivery.label),
        ("attempts", f"{job.attempt} of {job.max_attempts}"),
        ("workers lost", f"{job.losses} of {job.max_lost}"),
        ("timeout", format_duration(job.timeout_s) if job.timeout_s else None),
        ("retry backoff", format_duration(job.backoff_s)),
        ("cwd", job.cwd),
        ("user", job.user),
        ("submitted by", job.submitted_by),  # None ("-"): created before migration 0011
        # Another's job, read by a viewer or submitter (PostgreSQL roles): not ours to show.
        ("input", HIDDEN if job.private_hidden else
         "/dev/null" if job.input_bytes is None else f"{job.input_bytes} bytes"),
        ("env", HIDDEN if job.private_hidden else job.env or None),
        # the references: the values are the worker's
        ("secret env", HIDDEN if job.private_hidden else job.secret_env or None),
        ("labels", job.labels or None),
        ("unique key", job.unique_key),
        ("created", job.created_at),
        ("run at", job.run_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
        ("duration", format_duration(job.duration_s) if job.duration_s is not None else None),
        ("exit code", job.exit_code),
        ("error", job.error),
        ("workflow", f"{job.workflow_id} (task {job.task})" if job.workflow_id else None),
        ("array", f"{job.array_id} (index {job.array_index})" if job.array_id is not None
         else None),
        ("retry on exit", ",".join(map(str, job.retry_on_exit))
         if job.retry_on_exit is not None else None),
        ("no retry on exit", ",".join(map(str, job.no_retry_on_exit))
         if job.no_retry_on_exit is not None else None),
        ("held", "yes: `jobctl job release` lets it start" if job.held else None),
        ("on success", job.on_success),
        ("on failure", job.on_failure),
        ("on end", job.on_end),
        ("hook of", f"job {job.hook_of}" if job.hook_of is not None else None),
        ("limits", ", ".join(f"{k}={n}" for k, n in sorted(job.limits.items())) or None),
        ("needs", _describe_needs(job)),
        ("requires", ", ".join(f"{k}={v}" for k, v in sorted(job.requires.items())) or None),
        ("gpus held", job.gpu_indices if job.state.value == "running" else None),
        ("waits for", _describe_deps(waits_for)),
        ("needed by", _describe_deps(needed_by)),
    ], fmt)
    if attempts:
        terminal.out()
        rows = [[a.attempt, a.worker_name or a.worker_id, a.started_at, a.finished_at,
                 a.duration_s, a.outcome or "running", a.exit_code,
                 *_attempt_usage(a, fmt.for_people), a.error] for a in attempts]
        usage = (["cpu user", "cpu sys", "peak mem"] if fmt.for_people
                 else ["cpu_user_s", "cpu_system_s", "max_rss_bytes", "oom_killed"])
        terminal.table(["attempt", "worker", "started", "finished", "duration", "outcome",
                        "exit", *usage, "error"], rows, fmt)


def _attempt_usage(attempt: Attempt, for_people: bool) -> list[Any]:
    """What an attempt used (accounting): formatted for people (its error says whether it ran
    out of memory), the raw figures otherwise."""
    if not for_people:
        return [attempt.cpu_user_s, attempt.cpu_system_s, attempt.max_rss_bytes,
                None if attempt.oom_killed is None else str(attempt.oom_killed).lower()]
    from jobctl.capacity import format_size

    def cpu(value: float | None) -> str | None:
        return None if value is None else f"{value:.2f}s"

    return [cpu(attempt.cpu_user_s), cpu(attempt.cpu_system_s),
            None if attempt.max_rss_bytes is None else format_size(attempt.max_rss_bytes)]


def _describe_needs(job: Job) -> str | None:
    """`cpu=2, mem=4G, gpu=1`: the resources it asks for."""
    from jobctl.capacity import format_size

    parts = [f"cpu={job.cpus:g}" if job.cpus else "",
             f"mem={format_size(job.mem_bytes)}" if job.mem_bytes else "",
             f"gpu={job.gpus}" if job.gpus else ""]
    return ", ".join(part for part in parts if part) or None


def _describe_deps(found: list[Dependency]) -> str | None:
    """`41 (succeeded), 42 (running, any)`: each job with its state; `any` for --after-any."""
    if not found:
        return None
    return ", ".join(f"{d.job_id} ({d.state.value}{', any' if d.condition.value == 'any' else ''})"
                     for d in found)


@app.command()
def logs(
    ctx: typer.Context,
    job_id: int = JOB_ID_ARGUMENT,
    follow: bool = typer.Option(False, "--follow", "-f",
                                help="Keep printing new output until the attempt ends."),
    attempt: int | None = typer.Option(None, "--attempt", "-a",
                                       help="Which attempt (default: the latest).",
                                       show_default=False),
    stream: StreamChoice | None = typer.Option(None, "--stream",
                                               help="Only stdout or only stderr.",
                                               show_default=False),
) -> None:
    """Print a job's output, byte for byte: its stdout to stdout, its stderr to stderr."""
    from jobctl.models import Stream

    st = state(ctx)
    chosen = Stream(stream.value) if stream is not None else None
    for chunk in st.client().logs(job_id, attempt=attempt, stream=chosen, follow=follow):
        st.terminal.write_bytes(chunk.stream.value, chunk.data)


@app.command()
def cancel(
    ctx: typer.Context,
    job_ids: list[int] | None = SOME_JOB_IDS_ARGUMENT,
    array: int | None = ARRAY_ID_OPTION,
) -> None:
    """Cancel jobs: a queued one never runs; a running one is killed wherever it runs."""
    from jobctl.models import JobState

    st = state(ctx)
    if _ids_or_array(job_ids, array) is None:
        assert array is not None
        cancelled, running = st.client().cancel_array(array)
        st.terminal.err(f"array {array}: {len(cancelled)} tasks cancelled, {len(running)} "
                        "running (their workers will kill them)")
        return
    assert job_ids
    before = st.client().cancel(job_ids)
    for job_id, was in before.items():
        if was in (JobState.QUEUED, JobState.WAITING):
            st.terminal.err(f"job {job_id} cancelled")
        elif was is JobState.RUNNING:
            st.terminal.err(f"job {job_id} is running: its worker will kill it")
        else:
            st.terminal.err(f"job {job_id} had already ended ({was.value}); nothing to cancel")


@app.command()
def retry(
    ctx: typer.Context,
    job_id: int | None = typer.Argument(None, metavar="[ID]", show_default=False,
                                        help="The job's id (or --array ID --failed).",
                                        autocompletion=complete.job_ids),
    retries: int = typer.Option(0, "--retries", help="Further retries if this attempt fails."),
    array: int | None = ARRAY_ID_OPTION,
    failed: bool = typer.Option(False, "--failed",
                                help="With --array: run its failed, lost and cancelled tasks "
                                     "again (and only those)."),
) -> None:
    """Run a finished job again, as a new attempt (or an array's failed tasks)."""
    if retries < 0:
        raise InvalidInput("--retries must be 0 or more")
    st = state(ctx)
    if array is not None or failed:
        if job_id is not None or array is None or not failed:
            raise InvalidInput("give a job's ID, or --array ID --failed")
        ids = st.client().retry_array(array, retries=retries)
        st.terminal.err(f"array {array}: {len(ids)} tasks queued again")
        if not st.terminal.stdout_is_tty:
            for task_id in ids:
                st.terminal.out(str(task_id))
        return
    if job_id is None:
        raise InvalidInput("give a job's ID, or --array ID --failed")
    st.client().retry(job_id, retries=retries)
    st.terminal.note(f"job {job_id} queued again")
    if not st.terminal.stdout_is_tty:
        st.terminal.out(str(job_id))


@app.command("wait")
def wait_(
    ctx: typer.Context,
    job_ids: list[int] | None = SOME_JOB_IDS_ARGUMENT,
    timeout: str | None = typer.Option(None, "--timeout",
                                       help="Give up after this long (exit 124).",
                                       show_default=False),
    array: int | None = typer.Option(
        None, "--array", metavar="ID", show_default=False,
        help="Wait for every task of this array; exit 0 if all succeeded, else with the "
             "lowest failed index's own exit code (one summary line on stderr)."),
    junit: str | None = JUNIT_OPTION,
) -> None:
    """Wait until jobs end. Exits 0 if all succeeded, else with the first failed one's code."""
    from jobctl.cli import reports

    st = state(ctx)
    timeout_s = parse_duration(timeout, "--timeout")
    which = _ids_or_array(job_ids, array)
    if junit is not None:
        reports.check_junit_path(junit)
    client = st.client()
    if which is None:
        assert array is not None
        status_ = client.wait_array(array, timeout_s=timeout_s)
        if junit is not None:
            reports.write_junit(client, junit, f"array {array}", client.array_tasks(array),
                                lambda job: f"array.{array}")
        st.terminal.err(reports.array_summary(status_))
        raise typer.Exit(status_.first_failed[2] if status_.first_failed else 0)
    jobs = client.wait(which, timeout_s=timeout_s)
    if junit is not None:
        reports.write_junit(client, junit, "jobctl job wait", jobs,
                            lambda job: f"jobctl.{job.queue}")
    for job in jobs:
        st.terminal.note(f"job {job.id} {job.state.value}")
    codes = [_exit_code(job) for job in jobs]
    raise typer.Exit(next((code for code in codes if code != 0), 0))


def _ids_or_array(job_ids: list[int] | None, array: int | None) -> list[int] | None:
    """The job ids given, or None for --array ID: one of the two."""
    if bool(job_ids) == (array is not None):
        raise InvalidInput("give job ids or --array ID (one of the two)")
    return job_ids or None


@app.command()
def hold(
    ctx: typer.Context,
    job_ids: list[int] = JOB_IDS_ARGUMENT,
) -> None:
    """Hold jobs not started yet: a held job never starts until released."""
    _hold(ctx, job_ids, held=True)


@app.command()
def release(
    ctx: typer.Context,
    job_ids: list[int] = JOB_IDS_ARGUMENT,
) -> None:
    """Release held jobs: they start as any other."""
    _hold(ctx, job_ids, held=False)


def _hold(ctx: typer.Context, job_ids: list[int], *, held: bool) -> None:
    st = state(ctx)
    states = st.client().hold(job_ids, held)
    word = "held" if held else "released"
    for job_id, job_state in states.items():
        started = job_state not in ("waiting", "queued")
        st.terminal.err(f"job {job_id} is {job_state}: only a job not started can be {word}; "
                        "nothing changed" if started else f"job {job_id} {word}")


@app.command()
def edit(
    ctx: typer.Context,
    job_id: int = JOB_ID_ARGUMENT,
    priority: int | None = typer.Option(None, "--priority", "-p", show_default=False,
                                        help="Its new priority (higher runs first)."),
    queue: str | None = typer.Option(None, "--queue", "-q", show_default=False,
                                     autocompletion=complete.queue_names,
                                     help="Move it to this queue."),
    at: str | None = typer.Option(None, "--at", show_default=False,
                                  help="Start no earlier than this time."),
    in_: str | None = typer.Option(None, "--in", show_default=False,
                                   help="Start no earlier than this long from now."),
    limit: list[str] | None = LIMIT_OPTION,
    output: OutputFormat | None = OUTPUT_OPTION,
) -> None:
    """Change a job that has not started: its priority, queue, start time or limits."""
    from jobctl import capacity
    from jobctl.store.capacity import Edit

    if at is not None and in_ is not None:
        raise InvalidInput("give --at or --in, not both")
    change = Edit(priority=priority, queue=queue, run_at=parse_instant(at, "--at"),
                  run_in_s=parse_duration(in_, "--in"),
                  limits=capacity.parse_limits(limit) if limit else None)
    if change == Edit():
        raise InvalidInput("nothing to change: give --priority, --queue, --at, --in or --limit")
    st = state(ctx)
    job = st.client().edit(job_id, change)
    fmt = st.terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        st.terminal.json(job.to_json())
    else:
        st.terminal.note(f"job {job_id} changed")
        if not st.terminal.stdout_is_tty:
            st.terminal.out(str(job_id))


@app.command()
def explain(
    ctx: typer.Context,
    job_id: int = JOB_ID_ARGUMENT,
    output: OutputFormat | None = OUTPUT_OPTION,
) -> None:
    """Why a job is not running: one specific reason a line."""
    st = state(ctx)
    facts, reasons = st.client().explain(job_id)
    fmt = st.terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        st.terminal.json({"id": facts.id, "state": facts.state,
                          "reasons": [reason.to_json() for reason in reasons]})
        return
    if fmt is OutputFormat.IDS:
        st.terminal.out(str(facts.id))
        return
    for reason in reasons:
        st.terminal.out(visible(reason.text))
