"""`run_cli`: the command line run in this process, with streams, environment and terminal of
the test's choosing (`jobctl.cli.app.IOStreams`).

Click's `CliRunner.isolation` does the isolating: `sys.stdin/stdout/stderr` become in-memory
streams, `os.environ` gets the overrides (and is put back afterwards), Click's prompts read the
given input and its help is formatted 80 columns wide. `run_cli` then calls `jobctl.cli.app.run`
with an `IOStreams` built on those streams, so exceptions become exit codes exactly as in the
real program. JOBCTL_* variables are already gone (tests/conftest.py); only `env` adds some.

Nothing is cached between runs: each run builds its root context, its settings (`jobctl.config`
reads the config file and the environment on each run) and its client anew, and the lazily
loaded sub-commands are built from their modules on each use (`load_command`).

What the process boundary itself decides (the console script, signals, a pseudo-terminal,
start-up imports, a pipe's end) stays in subprocess tests.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from jobctl.cli.app import IOStreams, run

# The installed console script, for the tests that need the real executable.
JOBCTL = str(Path(sys.executable).parent / "jobctl")


def process_env() -> dict[str, str]:
    """The environment for a real process (`JOBCTL`): this one's, without JOBCTL_* variables
    but JOBCTL_ALLOW_ROOT, which every test has (tests/conftest.py: isolated_environment)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("JOBCTL_") or k == "JOBCTL_ALLOW_ROOT"}


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""

    # The names of subprocess.CompletedProcess, which these tests used before.
    @property
    def returncode(self) -> int:
        return self.exit_code

    @property
    def code(self) -> int:
        return self.exit_code


def run_cli(*args: str, env: Mapping[str, str | None] | None = None, stdin: bytes | str = b"",
            tty: bool = False, width: int = 80) -> Result:
    """Run `jobctl ARGS…` in this process. `env` adds (or, with None, removes) environment
    variables for the run; `stdin` is standard input; `tty` says stdin, stdout and stderr are
    terminals `width` columns wide."""
    runner = CliRunner()
    with runner.isolation(input=stdin, env=dict(env or {}), color=tty) as (out, err, _):
        io = IOStreams.from_process(tty=tty, width=width)
        try:
            code = run(list(args), io)
        except SystemExit as exit_:  # `run` returns codes; a stray sys.exit still counts
            code = exit_.code if isinstance(exit_.code, int) else 1
        except Exception:  # what `run` lets through (--debug): as Python's own handler does it
            traceback.print_exc(file=sys.stderr)
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = out.getvalue(), err.getvalue()
    # The text for reading (bytes that are no UTF-8 shown as U+FFFD); the bytes as written.
    return Result(code, stdout.decode(errors="replace"), stderr.decode(errors="replace"),
                  stdout, stderr)


def jobctl(url: str | None, *args: str, expect: int | None = 0,
           stdin: bytes | str = b"") -> Result:
    """`jobctl ARGS…` in-process on the database at `url` (None: the configured one); requires
    exit status `expect` (None: any) and, then, no traceback on standard error."""
    result = run_cli(*args, env={} if url is None else {"JOBCTL_DATABASE_URL": url}, stdin=stdin)
    if expect is not None:
        assert result.exit_code == expect, result
        assert "Traceback" not in result.stderr, result.stderr
    return result


def cli_ok(url: str, *args: str) -> str:
    """`jobctl ARGS…` on the database at `url`, in-process; requires exit status 0 and returns
    what it printed on standard output."""
    return jobctl(url, *args).stdout
