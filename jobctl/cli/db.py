"""`jobctl db …`: the schema, its tables' sizes, retention (`db prune`), and PostgreSQL's roles
(`db roles`, `db grant`, `db revoke`: jobctl.store.postgres.roles)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from jobctl.cli import complete
from jobctl.cli.common import output_option, parse_duration, state
from jobctl.cli.render import OutputFormat
from jobctl.errors import ExitCode, InvalidInput

if TYPE_CHECKING:
    from jobctl.models import JobState

app = typer.Typer(help="Manage the database: schema, sizes, retention, roles.",
                  no_args_is_help=True, rich_markup_mode=None)

_ROLE_HELP = ("viewer, submitter, operator, worker or admin (or its full name, e.g. "
              "jobctl_submitter).")


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Create the schema, or migrate it to the newest revision. Safe to run at any time."""
    st = state(ctx)
    done = st.client().upgrade_schema()
    if done.before == done.after:
        st.terminal.err(f"{done.where} is up to date (revision {done.after})")
    else:
        st.terminal.err(f"{done.where} upgraded from revision {done.before or 'none'} to "
                        f"{done.after}")
    if done.roles:
        st.terminal.err("the jobctl roles' rights are applied to every table")


@app.command()
def roles(ctx: typer.Context) -> None:
    """Create the PostgreSQL group roles and give them their rights on this database.

    jobctl_viewer, jobctl_submitter, jobctl_operator, jobctl_worker and jobctl_admin (NOLOGIN;
    see README, "Roles and permissions"); the schema's tables become jobctl_admin's, and the
    role that runs this becomes a member of it. Run as the schema's owner with CREATEROLE (or a
    superuser). Safe to run again. PostgreSQL only: on SQLite it exits 2."""
    st = state(ctx)
    where = st.client().create_roles()
    st.terminal.err(f"the jobctl roles and their rights are in place on {where}")


# The two arguments of `db grant` and `db revoke` (Typer only reads these).
_ROLE = typer.Argument(..., metavar="ROLE", help=_ROLE_HELP)
_LOGIN = typer.Argument(..., metavar="LOGIN_ROLE", help="A PostgreSQL role that can log in.")


@app.command()
def grant(ctx: typer.Context, role: str = _ROLE, login: str = _LOGIN) -> None:
    """Make a login role a member of a jobctl group role (PostgreSQL only; exit 2 on SQLite).

    A bad ROLE exits 2; a LOGIN_ROLE that does not exist exits 3."""
    _membership(ctx, role, login, grant=True)


@app.command()
def revoke(ctx: typer.Context, role: str = _ROLE, login: str = _LOGIN) -> None:
    """Take a login role out of a jobctl group role (PostgreSQL only; exit 2 on SQLite)."""
    _membership(ctx, role, login, grant=False)


def _membership(ctx: typer.Context, role: str, login: str, *, grant: bool) -> None:
    from jobctl.cli.render import visible
    from jobctl.models import group_role

    st = state(ctx)
    changed = st.client().set_role_membership(role, login, grant=grant)
    group = group_role(role)
    if grant:
        done = "is now" if changed else "was already"
        st.terminal.err(f"{visible(login)} {done} a member of {group}")
    else:
        done = "is no longer" if changed else "was not"
        st.terminal.err(f"{visible(login)} {done} a member of {group}")


@app.command()
def status(
    ctx: typer.Context,
    output: OutputFormat | None = output_option(),
) -> None:
    """Show the database's schema revision beside the one this jobctl needs.

    Exits 0 when they match, 4 when the database needs `jobctl db upgrade`."""
    if output is OutputFormat.IDS:
        raise InvalidInput("db status has no ids: use -o table, wide, plain or json")
    st = state(ctx)
    schema = st.client().db_status()
    terminal = st.terminal
    fmt = terminal.resolve(output)
    # Sizes only where the tables are the ones this jobctl knows (db_status reads them then).
    tables = schema.tables
    if fmt is OutputFormat.JSON:
        terminal.json({"database": schema.where, "current": schema.current,
                       "latest": schema.latest, "up_to_date": schema.up_to_date,
                       "tables": [t.to_json() for t in tables]})
    else:
        terminal.fields([("database", schema.where),
                         ("current", schema.current or "none (empty)"),
                         ("latest", schema.latest),
                         ("status", "up to date" if schema.up_to_date
                          else "run `jobctl db upgrade`")],
                        fmt)
        if tables:
            terminal.out()
            terminal.table(["table", "rows", "size"],
                           [[t.table, t.rows, _size(t.bytes, fmt)] for t in tables], fmt)
    if not schema.up_to_date:
        raise typer.Exit(ExitCode.DATABASE)


def _size(size: int | None, fmt: OutputFormat) -> str:
    if size is None:
        return "n/a"
    if not fmt.for_people:
        return str(size)
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@app.command()
def prune(
    ctx: typer.Context,
    older_than: str = typer.Option(..., "--older-than", metavar="DURATION",
                                   help="Delete jobs that finished longer ago than this "
                                        "(e.g. 30d, 12h)."),
    state_: list[str] | None = typer.Option(
        None, "--state", "-s", metavar="STATES",
        help="Only jobs in these final states (comma-separated or repeated) [default: "
             "succeeded,failed,cancelled,lost,skipped].", show_default=False),
    logs_only: bool = typer.Option(False, "--logs-only",
                                   help="Delete only the jobs' output; keep jobs and attempts."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Count what would be deleted; delete nothing."),
    output: OutputFormat | None = typer.Option(
        None, "--output", "-o", help="table, wide, plain or json.", show_default=False,
        autocompletion=complete.output_formats),
) -> None:
    """Delete finished jobs, their attempts and their output, in short batches.

    Jobs that a job still waiting or running depends on are kept. Prints what was deleted (or,
    with --dry-run, what would be)."""
    seconds = parse_duration(older_than, "--older-than")
    if seconds is None or seconds < 0:
        raise InvalidInput("--older-than must be 0s or more")
    states = _final_states(state_) or None  # None: every final state
    st = state(ctx)
    pruned = st.client().prune(seconds, states, logs_only=logs_only, dry_run=dry_run)
    terminal = st.terminal
    if terminal.resolve(output) is OutputFormat.JSON:
        terminal.json(pruned.to_json())
        return
    done = "to delete (dry run)" if dry_run else "deleted"
    pairs: list[tuple[str, object]] = []
    if not logs_only:
        pairs += [(f"jobs {done}", pruned.jobs), (f"attempts {done}", pruned.attempts)]
    pairs += [(f"log chunks {done}", pruned.log_chunks), (f"log bytes {done}", pruned.log_bytes),
              ("jobs kept for dependents", pruned.kept_for_dependents)]
    terminal.fields(pairs)


def _final_states(values: list[str] | None) -> list[JobState]:
    from jobctl.models import JobState

    states: list[JobState] = []
    for value in values or []:
        for name in value.split(","):
            try:
                job_state = JobState(name.strip())
            except ValueError:
                raise InvalidInput(f"--state: unknown state {name.strip()!r}") from None
            if not job_state.is_final:
                raise InvalidInput(f"--state: only finished jobs can be pruned, not "
                                   f"{job_state.value} ones")
            if job_state not in states:
                states.append(job_state)
    return states
