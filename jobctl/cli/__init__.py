"""The command line. `main` is the console script's entry point."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        # The commonest probe of an installed tool, answered before Click and Typer are imported.
        from jobctl import __version__

        print(f"jobctl {__version__}")
        sys.exit(0)
    from jobctl.cli.app import main as run_main

    run_main()
