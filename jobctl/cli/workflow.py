"""`jobctl workflow …`: run, list, status, cancel, retry, wait."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from jobctl.cli import complete
from jobctl.cli.common import output_option, parse_duration, parse_pairs, state
from jobctl.cli.render import OutputFormat, visible
from jobctl.errors import InvalidInput

if TYPE_CHECKING:
    from jobctl.models import Workflow

app = typer.Typer(help="Run graphs of jobs (workflows) from TOML files.", no_args_is_help=True,
                  rich_markup_mode=None)

OUTPUT_OPTION = output_option(", json or ids")
ID_ARGUMENT = typer.Argument(..., metavar="ID", help="The workflow's id.",
                             autocompletion=complete.workflow_ids)


def read_definition(path: str) -> dict[str, object]:
    """Load and validate a workflow file (exit 2 with FILE:LINE on any error)."""
    from jobctl.workflow import load

    try:
        text = Path(path).read_text()
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise InvalidInput(f"{path} is not UTF-8 text") from error
    return load(text, path)


@app.command()
def run(
    ctx: typer.Context,
    file: str = typer.Argument(..., metavar="FILE", help="The workflow's TOML file."),
    set_: list[str] | None = typer.Option(
        None, "--set", metavar="KEY=VALUE",
        help="Replace {KEY} in the tasks' commands with VALUE (repeatable).", show_default=False),
    label: list[str] | None = typer.Option(None, "--label", "-l", metavar="KEY=VALUE",
                                           help="Label the workflow (repeatable).",
                                           show_default=False),
    wait: bool = typer.Option(False, "--wait", "-w",
                              help="Wait for it to end; exit as `workflow wait` does."),
    check: bool = typer.Option(False, "--check",
                               help="Only validate the file; write nothing."),
) -> None:
    """Start a workflow: every task of FILE as a job, in one transaction. Prints its id.

    \b
        jobctl workflow run nightly.toml --set date=2024-06-01
    """
    from jobctl.workflow import parse_params

    definition = read_definition(file)
    params = parse_params(set_)
    st = state(ctx)
    if check:
        st.terminal.note(f"{file}: valid, {len(definition['tasks'])} task(s)")  # type: ignore[arg-type]
        return
    client = st.client()
    workflow_id = client.run_workflow(definition, params, labels=parse_pairs(label, "--label"))
    if st.terminal.stdout_is_tty:
        st.terminal.out(f"started workflow {workflow_id} ({visible(str(definition['name']))})")
    else:
        st.terminal.out(str(workflow_id))
    if wait:
        _exit_with(client.wait_workflow(workflow_id))


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: int = typer.Option(50, "--limit", help="At most this many (0: all)."),
    output: OutputFormat | None = OUTPUT_OPTION,
) -> None:
    """List workflows, newest first, with how many tasks are in each state."""
    if limit < 0:
        raise InvalidInput("--limit must be 0 or more")
    st = state(ctx)
    found = st.client().workflows(limit=limit or None)
    terminal = st.terminal
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        terminal.json([w.to_json() for w in found])
        return
    rows = [[w.id, w.name, w.state.value, len(w.tasks), _counts(w), w.created_at] for w in found]
    terminal.table(["id", "name", "state", "tasks", "progress", "created"], rows, fmt)


def _counts(workflow: Workflow) -> str:
    counts: dict[str, int] = {}
    for task in workflow.tasks:
        counts[task.state.value] = counts.get(task.state.value, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


@app.command()
def status(
    ctx: typer.Context,
    workflow_id: int = ID_ARGUMENT,
    output: OutputFormat | None = OUTPUT_OPTION,
) -> None:
    """Every task of a workflow in dependency order: job id, state, attempt, duration."""
    st = state(ctx)
    workflow = st.client().workflow(workflow_id)
    terminal = st.terminal
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        terminal.json(workflow.to_json())
        return
    if fmt is OutputFormat.IDS:
        for task in workflow.tasks:
            terminal.out(str(task.id))
        return
    terminal.note(f"workflow {workflow.id} ({workflow.name}): {workflow.state.value}")
    rows = [[job.task, job.id, job.state.value, job.attempt, job.duration_s, job.exit_code,
             ", ".join(workflow.needs(job.task)) if job.task else "", job.error]
            for job in workflow.tasks]
    terminal.table(["task", "job", "state", "attempt", "duration", "exit", "needs", "error"],
                   rows, fmt)


@app.command()
def cancel(ctx: typer.Context, workflow_id: int = ID_ARGUMENT) -> None:
    """Cancel every task of a workflow that has not ended (running ones are killed)."""
    st = state(ctx)
    before = st.client().cancel_workflow(workflow_id)
    st.terminal.err(f"workflow {workflow_id}: {len(before)} task(s) cancelled")


@app.command()
def retry(ctx: typer.Context, workflow_id: int = ID_ARGUMENT) -> None:
    """Run the failed, cancelled and lost tasks again and what depends on them."""
    st = state(ctx)
    ids = st.client().retry_workflow(workflow_id)
    st.terminal.err(f"workflow {workflow_id}: {len(ids)} task(s) to run again")
    if not st.terminal.stdout_is_tty:
        st.terminal.out(str(workflow_id))


@app.command("wait")
def wait_(
    ctx: typer.Context,
    workflow_id: int = ID_ARGUMENT,
    timeout: str | None = typer.Option(None, "--timeout",
                                       help="Give up after this long (exit 124).",
                                       show_default=False),
    junit: str | None = typer.Option(
        None, "--junit", metavar="FILE", show_default=False,
        help="Also write a JUnit XML report to FILE (one testcase per task, with the last 64 "
             "KiB of its stdout and stderr), for Jenkins and GitLab."),
) -> None:
    """Wait until every task ended. Exits 0 if all succeeded, else with the first failed
    task's exit code (in dependency order)."""
    from jobctl.cli import reports

    st = state(ctx)
    timeout_s = parse_duration(timeout, "--timeout")
    if junit is not None:
        reports.check_junit_path(junit)
    client = st.client()
    workflow = client.wait_workflow(workflow_id, timeout_s=timeout_s)
    if junit is not None:
        reports.write_junit(client, junit, f"workflow {workflow.id} {workflow.name}",
                            workflow.tasks, lambda job: f"workflow.{workflow.name}")
    st.terminal.note(f"workflow {workflow.id} {workflow.state.value}")
    _exit_with(workflow)


def _exit_with(workflow: Workflow) -> None:
    from jobctl.client import workflow_exit_code

    raise typer.Exit(workflow_exit_code(workflow))
