"""`jobctl config …`: the effective settings and where each came from; the config file's path."""

from __future__ import annotations

import typer

from jobctl.cli.common import output_option, state
from jobctl.cli.render import OutputFormat

app = typer.Typer(help="Show the settings in effect and the config file's path.",
                  no_args_is_help=True, rich_markup_mode=None)


@app.command()
def show(
    ctx: typer.Context,
    output: OutputFormat | None = output_option(", json or ids (the setting names)"),
) -> None:
    """Print every setting in effect, its value and where it came from: flag, env (a JOBCTL_*
    variable), profile, file or default. Passwords are masked.

    Precedence: flag > env > the chosen profile (--profile, JOBCTL_PROFILE) > the config
    file's top level > default."""
    st = state(ctx)
    settings = st.settings()
    terminal = st.terminal
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        terminal.json([{"name": s.name, "value": s.shown_value(), "source": s.source,
                        "detail": s.detail or None} for s in settings.values()])
        return
    rows = [[s.name, s.shown_value(), s.source, s.detail or None] for s in settings.values()]
    terminal.table(["name", "value", "source", "from"], rows, fmt)


@app.command()
def path(ctx: typer.Context) -> None:
    """Print the config file's path ($XDG_CONFIG_HOME/jobctl/config.toml), whether or not it
    exists."""
    from jobctl.config import config_file

    state(ctx).terminal.out(str(config_file()))
