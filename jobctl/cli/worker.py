"""`jobctl worker …`: start a worker on this machine, list the cluster's workers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from jobctl.cli import complete
from jobctl.cli.common import (
    METRICS_ADDRESS_OPTION,
    RESCUE_INTERVAL_OPTION,
    check_metrics_port,
    configure_logging,
    metrics_port_option,
    metrics_served,
    output_option,
    parse_duration,
    parse_queues,
    state,
)
from jobctl.cli.render import OutputFormat
from jobctl.errors import InvalidInput

if TYPE_CHECKING:
    from jobctl.metrics import WorkerMetrics

MAX_CONCURRENCY = 2**31 - 1  # stored as a 32-bit integer

app = typer.Typer(help="Run and inspect workers.", no_args_is_help=True, rich_markup_mode=None)


@app.command()
def start(
    ctx: typer.Context,
    queue: list[str] | None = typer.Option(
        None, "--queue", "-q", envvar="JOBCTL_QUEUES",
        help="Take jobs from this queue (repeatable, or comma-separated). [default: default]",
        show_default=False, autocompletion=complete.queue_names),
    concurrency: int = typer.Option(1, "--concurrency", "-c", envvar="JOBCTL_CONCURRENCY",
                                    help="Run up to this many jobs at once."),
    name: str | None = typer.Option(None, "--name", envvar="JOBCTL_WORKER_NAME",
                                    help="Name shown in `worker list` [default: HOST.PID].",
                                    show_default=False),
    burst: bool = typer.Option(False, "--burst",
                               help="Run what the queues can finish (due jobs, their retries "
                                    "and dependents, jobs other workers run), then exit; log "
                                    "jobs left that nothing can start."),
    lease: str = typer.Option("20s", "--lease", envvar="JOBCTL_LEASE",
                              help="How long a job stays ours without renewal; a crashed "
                                   "worker's jobs are rescued after it."),
    grace: str = typer.Option("30s", "--grace", envvar="JOBCTL_GRACE",
                              help="On SIGTERM/SIGINT, how long running jobs may finish."),
    kill_grace: str = typer.Option("5s", "--kill-grace", envvar="JOBCTL_KILL_GRACE",
                                   help="Between SIGTERM and SIGKILL for a job being killed."),
    poll_interval: str | None = typer.Option(
        None, "--poll-interval", envvar="JOBCTL_POLL_INTERVAL",
        help="Look for due jobs this often [default: 2s on PostgreSQL, woken by NOTIFY; "
             "0.2s on SQLite].", show_default=False),
    rescue_interval: str = RESCUE_INTERVAL_OPTION,
    output_cap: int = typer.Option(
        64 * 1024 * 1024, "--output-cap", envvar="JOBCTL_OUTPUT_CAP", metavar="BYTES",
        help="Keep at most this much of each attempt's output (the head), then a marker."),
    quiet: bool = typer.Option(False, "--quiet", help="Log only warnings, not every job."),
    resources: str | None = typer.Option(
        None, "--resources", envvar="JOBCTL_RESOURCES", metavar="cpu=N,mem=SIZE,gpu=N",
        help="What jobs that ask for resources may use here (shared by every worker of this "
             "machine) [default: the machine's CPUs and memory, no GPUs].", show_default=False),
    tag: list[str] | None = typer.Option(
        None, "--tag", metavar="KEY=VALUE", show_default=False,
        help="A tag jobs can --require (repeatable)."),
    metrics_port: int = metrics_port_option("leases are renewed on time"),
    metrics_address: str = METRICS_ADDRESS_OPTION,
    cgroups: bool | None = typer.Option(
        None, "--cgroups/--no-cgroups", envvar="JOBCTL_CGROUPS", show_default=False,
        help="--cgroups: run every job in a cgroup of its own where this worker can create "
             "them (cgroup v2: whole-tree figures, kills that reach every process), at a few "
             "ms of kernel time per job; --no-cgroups: none. [default: a cgroup for each job "
             "with --mem or --cpus, which are enforced there]"),
    run_as_submitter: bool = typer.Option(
        False, "--run-as-submitter", envvar="JOBCTL_RUN_AS_SUBMITTER",
        help="Run each job as the Unix user named like its submitter (its PostgreSQL role; "
             "on SQLite its Unix user), or as --user-map maps it; never as root. A job whose "
             "user does not exist here, or whose --user is another user, fails (exit code "
             "125). Root workers only."),
    user_map: str | None = typer.Option(
        None, "--user-map", envvar="JOBCTL_USER_MAP", metavar="FILE", show_default=False,
        help="With --run-as-submitter: a TOML file of ROLE = \"unixuser\" lines, for "
             "submitters whose Unix user is named otherwise."),
    allow_root: bool = typer.Option(
        False, "--allow-root", envvar="JOBCTL_ALLOW_ROOT",
        help="Let a worker running as root on PostgreSQL run every job as root (it refuses "
             "to start without this or --run-as-submitter: anyone who can submit could run "
             "commands as root)."),
) -> None:
    """Start a worker: claim jobs from the database and run them here until stopped.

    SIGTERM or Ctrl-C stops claiming and lets running jobs finish (up to --grace); a second
    one stops at once. Jobs still running then go back to the queue (at-least-once)."""
    import os

    from jobctl import capacity
    from jobctl.runas import load_user_map, worker_start_problem
    from jobctl.worker.loop import WorkerSettings

    st = state(ctx)
    problem = worker_start_problem(os.geteuid(), st.client().backend,
                                   run_as_submitter, allow_root, user_map is not None)
    if problem is not None:
        raise InvalidInput(problem)
    submitters = None
    if run_as_submitter:
        from jobctl.runas import SubmitterUsers

        try:
            submitters = (SubmitterUsers({}) if user_map is None
                          else load_user_map(os.path.abspath(user_map)))
        except ValueError as error:
            raise InvalidInput(f"--user-map: {error}") from None
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidInput(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
    if output_cap < 0:
        raise InvalidInput("--output-cap must be 0 or more")
    lease_s = parse_duration(lease, "--lease") or 0.0
    if lease_s < 1:
        raise InvalidInput("--lease must be at least 1s")
    settings = WorkerSettings(
        queues=parse_queues(queue) or ["default"],
        concurrency=concurrency,
        name=name,
        burst=burst,
        lease_s=lease_s,
        grace_s=parse_duration(grace, "--grace") or 0.0,
        kill_grace_s=parse_duration(kill_grace, "--kill-grace") or 0.0,
        poll_s=parse_duration(poll_interval, "--poll-interval"),
        output_cap=output_cap,
        rescue_every_s=max(0.1, parse_duration(rescue_interval, "--rescue-interval") or 0.0),
        resources=capacity.parse_resources(resources, capacity.machine_resources()),
        tags=capacity.parse_pairs(tag or (), "--tag"),
        cgroups=cgroups,
        submitters=submitters,
    )
    check_metrics_port(metrics_port)
    with metrics_served(metrics_port, metrics_address,
                        lambda: _worker_metrics(settings.lease_s)) as metrics:
        configure_logging(quiet, "worker")
        raise typer.Exit(st.client().run_worker(settings, metrics))


def _worker_metrics(lease_s: float) -> WorkerMetrics:
    from jobctl.metrics import WorkerMetrics

    return WorkerMetrics(lease_s)


@app.command("list")
def list_(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", "-a", help="Include stopped and lost workers."),
    output: OutputFormat | None = output_option(", json or ids"),
) -> None:
    """List the cluster's workers, newest first."""
    st = state(ctx)
    workers = st.client().workers(include_ended=all_)
    terminal = st.terminal
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        terminal.json([w.to_json() for w in workers])
        return
    if fmt.for_people:
        # SLOTS, jobs running of the concurrency (as `top` shows it): one column, not two, so
        # that a row fits 80 columns.
        terminal.table(["id", "name", "host", "pid", "queues", "slots", "started", "heartbeat",
                        "state"],
                       [[w.id, w.name, w.hostname, w.pid, ",".join(w.queues),
                         f"{w.running_jobs}/{w.concurrency}", w.started_at, w.heartbeat_at,
                         w.state] for w in workers], fmt)
        return
    rows = [
        [w.id, w.name, w.hostname, w.pid, ",".join(w.queues), w.concurrency, w.running_jobs,
         w.started_at, w.heartbeat_at, w.state]
        for w in workers
    ]
    terminal.table(["id", "name", "host", "pid", "queues", "concurrency", "running",
                    "started", "heartbeat", "state"], rows, fmt)


@app.command()
def stop(
    ctx: typer.Context,
    workers: list[str] = typer.Argument(..., metavar="NAME_OR_ID...",
                                        help="Workers, by name or id (see `worker list`).",
                                        autocompletion=complete.worker_names),
) -> None:
    """Stop workers gracefully, from any machine: like SIGTERM on their own machine, they stop
    claiming, let running jobs finish (up to their --grace) and exit."""
    from jobctl.models import WorkerState

    st = state(ctx)
    client = st.client()
    for name in workers:
        for worker_id, before in client.stop_worker(name):
            if before is WorkerState.RUNNING:
                st.terminal.err(f"worker {worker_id} ({name}) asked to stop")
            else:
                st.terminal.err(f"worker {worker_id} ({name}) is already {before.value}")
