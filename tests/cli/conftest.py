"""The CLI tests run the command line in this process where the process boundary does not
matter: see `inprocess.run_cli` (a plain module beside this file, imported as `from inprocess
import run_cli` the way `obs_seed` is, and also offered here as the `run_cli` fixture)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from inprocess import Result
from inprocess import run_cli as _run_cli


@pytest.fixture
def run_cli() -> Callable[..., Result]:
    """`run_cli(*args, env=…, stdin=b"…", tty=False, width=80) -> Result(exit_code, stdout,
    stderr)`: `jobctl ARGS…` run in-process with streams and environment of its own."""
    return _run_cli
