"""The command line: Typer apps that parse arguments, call jobctl.client and render results."""
