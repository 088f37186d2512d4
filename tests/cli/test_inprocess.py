"""The in-process harness itself (`inprocess.run_cli`, `jobctl.cli.app.IOStreams`): the injected
terminal decides the format and width, stdin and the environment are the run's own, and
nothing of one run leaks into the next."""

from __future__ import annotations

import io
import json
import os
import re

from inprocess import run_cli

from jobctl.cli.app import IOStreams, run


def test_a_terminal_gets_a_table_cut_to_its_width(sqlite_url: str) -> None:
    env = {"JOBCTL_DATABASE_URL": sqlite_url}
    name = "a-name-far-too-long-for-forty-columns-of-terminal"
    assert run_cli("job", "submit", "--name", name, "--", "true", env=env).exit_code == 0
    screen = re.sub(r"\x1b\[[0-9;]*m", "", run_cli("job", "list", env=env, tty=True,
                                                   width=40).stdout)
    assert "\t" not in screen and "…" in screen, screen
    assert all(len(line) <= 40 for line in screen.splitlines()), screen
    piped = run_cli("job", "list", env=env).stdout
    assert piped.splitlines()[1].split("\t")[1] == name


def test_stdin_and_environment_are_the_runs_own(sqlite_url: str) -> None:
    env = {"JOBCTL_DATABASE_URL": sqlite_url}
    submitted = run_cli("job", "submit", "--input", "-", "--", "cat", env=env, stdin=b"\x00\xff")
    assert submitted.exit_code == 0, submitted
    [job] = json.loads(run_cli("job", "list", "-o", "json", env=env).stdout)
    assert job["input_bytes"] == 2
    assert "JOBCTL_DATABASE_URL" not in os.environ  # put back after each run
    # Without the variable, the next run uses the default database: an empty list.
    assert run_cli("job", "list", "-o", "ids").stdout == ""


def test_usage_errors_and_help_go_to_the_injected_streams() -> None:
    out, err = io.StringIO(), io.StringIO()
    streams = IOStreams(stdin=io.StringIO(), stdout=out, stderr=err,
                        environ={"PATH": os.environ.get("PATH", "")})
    assert run(["jbo"], streams) == 2
    assert out.getvalue() == ""
    assert err.getvalue().startswith("jobctl: error: no such command 'jbo'"), err.getvalue()
    assert run(["--help"], streams) == 0
    assert out.getvalue().startswith("Usage: jobctl"), out.getvalue()


def test_the_environment_given_is_the_one_click_reads() -> None:
    out, err = io.StringIO(), io.StringIO()
    environ = {**os.environ, "JOBCTL_DATABASE_URL": "mysql://x"}
    streams = IOStreams(stdin=io.StringIO(), stdout=out, stderr=err, environ=environ)
    assert run(["job", "list"], streams) == 2, err.getvalue()
    assert "mysql" in err.getvalue()
    assert "JOBCTL_DATABASE_URL" not in os.environ


def test_debug_lets_the_exception_through_as_python_would_show_it() -> None:
    result = run_cli("--debug", "job", "submit", "--timeout", "5x", "--", "true")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
