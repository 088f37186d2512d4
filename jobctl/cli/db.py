"""`jobctl db …`: the schema."""

from __future__ import annotations

import typer

from jobctl.cli import complete
from jobctl.cli.common import state
from jobctl.cli.render import OutputFormat
from jobctl.errors import ExitCode, InvalidInput

app = typer.Typer(help="Manage the database schema.", no_args_is_help=True,
                  rich_markup_mode=None)


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Create the schema, or migrate it to the newest revision. Safe to run at any time."""
    from jobctl.store.engine import open_database

    st = state(ctx)
    database = open_database(st.database_url, migrate=False)
    before, after = database.upgrade()
    if before == after:
        st.terminal.err(f"{database.where} is up to date (revision {after})")
    else:
        st.terminal.err(f"{database.where} upgraded from revision {before or 'none'} to {after}")


@app.command()
def status(
    ctx: typer.Context,
    output: OutputFormat | None = typer.Option(None, "--output", "-o",
                                               help="table, plain or json.", show_default=False,
                                               autocompletion=complete.output_formats),
) -> None:
    """Show the database's schema revision beside the one this jobctl needs.

    Exits 0 when they match, 4 when the database needs `jobctl db upgrade`."""
    from jobctl.store.engine import open_database
    from jobctl.store.schema import SCHEMA_REVISION

    if output is OutputFormat.IDS:
        raise InvalidInput("db status has no ids: use -o table, plain or json")
    st = state(ctx)
    database = open_database(st.database_url, migrate=False)
    current = database.current_revision()
    up_to_date = current == SCHEMA_REVISION
    terminal = st.terminal
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        terminal.json({"database": database.where, "current": current,
                       "latest": SCHEMA_REVISION, "up_to_date": up_to_date})
    else:
        terminal.fields([("database", database.where), ("current", current or "none (empty)"),
                         ("latest", SCHEMA_REVISION),
                         ("status", "up to date" if up_to_date else "run `jobctl db upgrade`")],
                        fmt)
    if not up_to_date:
        raise typer.Exit(ExitCode.DATABASE)
