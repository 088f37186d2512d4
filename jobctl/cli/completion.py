"""`jobctl completion bash|zsh|fish`: print the shell's completion script."""

from __future__ import annotations

import typer

from jobctl.cli import complete
from jobctl.cli.common import state

app = typer.Typer(
    help="Print a shell completion script (commands, options, job ids, queues, workers, …).",
    no_args_is_help=True, rich_markup_mode=None)


def _print_script(ctx: typer.Context, shell: str) -> None:
    state(ctx).terminal.out(complete.script(shell, ctx.find_root().command).rstrip("\n"))


@app.command()
def bash(ctx: typer.Context) -> None:
    """Print the bash completion script (bash 4.4 or later).

    \b
        jobctl completion bash > ~/.local/share/bash-completion/completions/jobctl
        # or, for this shell only:  source <(jobctl completion bash)
    """
    _print_script(ctx, "bash")


@app.command()
def zsh(ctx: typer.Context) -> None:
    """Print the zsh completion script.

    \b
        jobctl completion zsh > "${fpath[1]}/_jobctl"    # then start a new shell
        # or, for this shell only:  source <(jobctl completion zsh)
    """
    _print_script(ctx, "zsh")


@app.command()
def fish(ctx: typer.Context) -> None:
    """Print the fish completion script.

    \b
        jobctl completion fish > ~/.config/fish/completions/jobctl.fish
    """
    _print_script(ctx, "fish")
