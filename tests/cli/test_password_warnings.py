"""A database password others could see is warned of, once, on one stderr line, without the
password and without changing the exit code: `--database-url` with a password (it shows in
`ps`), and a config file holding one that its group or others can read. JOBCTL_DATABASE_URL,
a URL without a password and a config file of mode 600 are warned of by nothing."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from inprocess import JOBCTL, process_env, run_cli

SECRET = "s3cr3t-Pa55"
WITH_PASSWORD = f"postgresql://jobctl:{SECRET}@127.0.0.1:1/jobctl"
AS_PARAMETER = f"postgresql://jobctl@127.0.0.1:1/jobctl?sslmode=disable&password={SECRET}"
WITHOUT = "postgresql://jobctl@127.0.0.1:1/jobctl"


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("jobctl: warning: ")]


@pytest.fixture
def config_file() -> Path:
    """The config file the suite's isolated XDG_CONFIG_HOME points at (not yet written)."""
    folder = Path(os.environ["XDG_CONFIG_HOME"]) / "jobctl"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "config.toml"


@pytest.mark.parametrize("url", [WITH_PASSWORD, AS_PARAMETER], ids=["user-info", "parameter"])
def test_a_password_on_the_command_line_is_warned_of_once(url: str) -> None:
    result = run_cli("--database-url", url, "config", "show", "-o", "json")
    assert result.exit_code == 0, result
    assert warnings(result.stderr) == [
        "jobctl: warning: --database-url holds a password, which other users can see in ps; "
        "set JOBCTL_DATABASE_URL instead, or put it in the config file (chmod 600), or the "
        "password in ~/.pgpass"]
    assert result.stderr.count("\n") == 1
    assert SECRET not in result.stdout + result.stderr


def test_the_warning_leaves_the_exit_code_alone() -> None:
    result = run_cli("--database-url", WITH_PASSWORD, "job", "list")
    assert result.exit_code == 4, result  # unreachable, as without the warning
    warning, error = result.stderr.splitlines()
    assert warning.startswith("jobctl: warning: --database-url holds a password")
    assert error.startswith("jobctl: error: cannot reach PostgreSQL at 127.0.0.1:1")
    assert SECRET not in result.stderr


@pytest.mark.parametrize(("args", "env"), [
    (("--database-url", WITHOUT), {}),
    (("--database-url", "sqlite:////tmp/x.db"), {}),
    ((), {"JOBCTL_DATABASE_URL": WITH_PASSWORD}),
    ((), {"JOBCTL_DATABASE_URL": AS_PARAMETER}),
    ((), {"JOBCTL_DATABASE_URL": WITHOUT, "PGPASSWORD": SECRET}),
], ids=["flag-without", "flag-sqlite", "env-user-info", "env-parameter", "pgpassword"])
def test_no_warning_where_ps_shows_no_password(args: tuple[str, ...],
                                                env: dict[str, str]) -> None:
    result = run_cli(*args, "config", "show", env=env)
    assert result.exit_code == 0, result
    assert result.stderr == ""


@pytest.mark.parametrize("where", ["top", "profile", "other-profile"])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_config_file_with_a_password_others_can_read(config_file: Path, where: str,
                                                       mode: int) -> None:
    if where == "top":
        config_file.write_text(f'database_url = "{AS_PARAMETER}"\n')
    else:
        # A password in any profile is there for others to read, chosen or not.
        name = "prod" if where == "profile" else "other"
        config_file.write_text(f'[profiles.{name}]\ndatabase_url = "{WITH_PASSWORD}"\n\n'
                               '[profiles.prod]\nno_color = true\n' if name == "other" else
                               f'[profiles.prod]\ndatabase_url = "{WITH_PASSWORD}"\n')
    config_file.chmod(mode)
    args = () if where == "top" else ("--profile", "prod")
    result = run_cli(*args, "config", "show")
    assert result.exit_code == 0, result
    assert warnings(result.stderr) == [
        f"jobctl: warning: config file {config_file} holds a database password and other users "
        f"can read it; run chmod 600 {config_file}"]
    assert result.stderr.count("\n") == 1
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(("content", "mode"), [
    (f'database_url = "{WITH_PASSWORD}"\n', 0o600),
    (f'database_url = "{WITH_PASSWORD}"\n', 0o400),
    (f'[profiles.prod]\ndatabase_url = "{AS_PARAMETER}"\n', 0o600),
    (f'database_url = "{WITHOUT}"\n', 0o644),
    ('database_url = "sqlite:////tmp/x.db"\n[profiles.p]\nno_color = true\n', 0o644),
], ids=["600", "400", "profile-600", "no-password-644", "sqlite-644"])
def test_no_warning_for_a_private_file_or_one_without_a_password(
        config_file: Path, content: str, mode: int) -> None:
    config_file.write_text(content)
    config_file.chmod(mode)
    result = run_cli("config", "show")
    assert result.exit_code == 0, result
    assert result.stderr == ""


def test_both_warnings_at_once_each_once(config_file: Path) -> None:
    config_file.write_text(f'database_url = "{WITH_PASSWORD}"\n')
    config_file.chmod(0o644)
    result = run_cli("--database-url", AS_PARAMETER, "config", "show")
    assert result.exit_code == 0, result
    lines = warnings(result.stderr)
    assert len(lines) == 2 and result.stderr.count("\n") == 2, result.stderr
    assert lines[0].startswith("jobctl: warning: --database-url holds a password")
    assert lines[1].startswith(f"jobctl: warning: config file {config_file} holds")


def test_the_real_process_shows_the_password_in_ps_and_says_so(tmp_path: Path) -> None:
    """What the warning is about: another process reads the argv of this one (/proc/PID/cmdline,
    which `ps` reads), password and all; the warning comes before the command's own work."""
    process = subprocess.Popen(
        [JOBCTL, "--database-url", WITH_PASSWORD, "job", "submit", "--wait", "--", "true"],
        env=process_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        cmdline = ""
        deadline = time.monotonic() + 30
        while SECRET not in cmdline and time.monotonic() < deadline and process.poll() is None:
            try:
                cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
            except OSError:
                break
            time.sleep(0.01)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert SECRET in cmdline  # seen by anyone on the machine, as ps would show it
    assert process.returncode == 4  # unreachable: the warning changed nothing
    lines = stderr.decode().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("jobctl: warning: --database-url holds a password")
    assert SECRET.encode() not in stderr
