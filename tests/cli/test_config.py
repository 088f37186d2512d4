"""Configuration, run in-process (`run_cli`; once through the real executable): profiles in
$XDG_CONFIG_HOME/jobctl/config.toml, precedence flag > env > profile > file > default, `config
show` and `config path`, errors that name the file, and passwords that never appear in any
output."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from inprocess import run_cli

SECRET = "s3cr3t-Pa55"



def show(*args: str, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    result = run_cli(*args, "config", "show", "-o", "json", env=env)
    assert result.returncode == 0, result
    return {setting["name"]: setting for setting in json.loads(result.stdout)}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The config file the suite's isolated XDG_CONFIG_HOME points at (not yet written)."""
    folder = Path(os.environ["XDG_CONFIG_HOME"]) / "jobctl"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "config.toml"


def write_config(path: Path, tmp_path: Path) -> dict[str, str]:
    urls = {name: f"sqlite:///{tmp_path / name}.db" for name in ("file", "prod", "env", "flag")}
    path.write_text(f'''
database_url = "{urls["file"]}"

[profiles.prod]
database_url = "{urls["prod"]}"
no_color = true

[profiles.empty]
''')
    return urls


def test_config_path_follows_xdg_config_home(config_file: Path) -> None:
    result = run_cli("config", "path")
    assert (result.returncode, result.stdout) == (0, f"{config_file}\n")


def test_defaults_without_a_file(config_file: Path) -> None:
    settings = show()
    assert list(settings) == ["profile", "database_url", "no_color", "debug", "retention",
                              "on_success", "on_failure", "on_end"]
    data_home = Path(os.environ["XDG_DATA_HOME"])
    assert settings["database_url"]["value"] == f"sqlite:///{data_home / 'jobctl' / 'jobctl.db'}"
    assert {s["source"] for s in settings.values()} == {"default"}
    assert settings["profile"]["value"] is None
    assert settings["retention"]["value"] is None  # schedulers keep every job unless told


def test_precedence_flag_env_profile_file_default(config_file: Path, tmp_path: Path) -> None:
    urls = write_config(config_file, tmp_path)

    def effective(*args: str, **env: str) -> tuple[str, str]:
        setting = show(*args, env=env)["database_url"]
        return setting["value"], setting["source"]

    assert effective() == (urls["file"], "file")
    assert effective("--profile", "prod") == (urls["prod"], "profile")
    assert effective(JOBCTL_PROFILE="prod") == (urls["prod"], "profile")
    assert effective("--profile", "empty") == (urls["file"], "file")  # a profile without it
    assert effective("--profile", "prod", JOBCTL_DATABASE_URL=urls["env"]) == (urls["env"], "env")
    assert effective("--profile", "prod", "--database-url", urls["flag"],
                     JOBCTL_DATABASE_URL=urls["env"]) == (urls["flag"], "flag")
    profile = show(env={"JOBCTL_PROFILE": "empty"})["profile"]
    assert (profile["value"], profile["source"], profile["detail"]) == (
        "empty", "env", "JOBCTL_PROFILE")
    flagged = show("--profile", "prod", env={"JOBCTL_PROFILE": "empty"})
    assert (flagged["profile"]["value"], flagged["profile"]["source"]) == ("prod", "flag")
    assert (flagged["no_color"]["value"], flagged["no_color"]["source"]) == (True, "profile")
    assert flagged["no_color"]["detail"] == f"[profiles.prod] in {config_file}"
    assert show("--no-color", "--profile", "prod")["no_color"]["source"] == "flag"


def test_the_profiles_database_is_the_one_used(config_file: Path, tmp_path: Path) -> None:
    urls = write_config(config_file, tmp_path)
    submitted = run_cli("--profile", "prod", "job", "submit", "--", "true")
    assert submitted.returncode == 0, submitted
    assert (tmp_path / "prod.db").exists() and not (tmp_path / "file.db").exists()
    listed = run_cli("job", "list", "-o", "ids", env={"JOBCTL_PROFILE": "prod"})
    assert listed.stdout.split() == submitted.stdout.split()
    assert run_cli("job", "list", "-o", "ids").stdout == ""  # the top level's database
    assert urls["prod"].endswith("prod.db")


def test_an_unknown_profile_names_the_file(config_file: Path, tmp_path: Path) -> None:
    write_config(config_file, tmp_path)
    for args, env in ((["--profile", "staging"], {}), ([], {"JOBCTL_PROFILE": "staging"})):
        result = run_cli(*args, "job", "list", env=env)
        assert (result.returncode, result.stdout) == (2, ""), result
        assert result.stderr == (f"jobctl: error: no profile 'staging' in config file "
                                 f"{config_file} (profiles: empty, prod)\n")
    assert run_cli("--profile", "staging", "config", "show").returncode == 2


def test_invalid_toml_names_the_file_and_line(config_file: Path) -> None:
    config_file.write_text('database_url = "sqlite:///x.db"\n\n[profiles.prod\n')
    result = run_cli("job", "list")
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"jobctl: error: invalid config file {config_file}: ")
    assert "line 3" in result.stderr
    assert "Traceback" not in result.stderr
    assert run_cli("config", "path").returncode == 0  # still tells where the file is


def test_an_unknown_or_mistyped_setting_is_refused(config_file: Path) -> None:
    config_file.write_text('databse_url = "sqlite:///x.db"\n')
    result = run_cli("config", "show")
    assert result.returncode == 2
    assert "unknown setting 'databse_url'" in result.stderr and str(config_file) in result.stderr
    config_file.write_text("[profiles.prod]\nno_color = 'yes'\n")
    result = run_cli("config", "show")
    assert result.returncode == 2
    assert "[profiles.prod] no_color must be a boolean" in result.stderr


def test_passwords_never_appear_in_any_output(config_file: Path, tmp_path: Path) -> None:
    in_file = f"postgresql://jobctl:{SECRET}@127.0.0.1:1/jobctl"
    config_file.write_text(f'[profiles.prod]\ndatabase_url = "{in_file}"\n')
    in_env = f"postgresql://jobctl@127.0.0.1:1/jobctl?password={SECRET}&sslmode=disable"
    runs = [
        run_cli("--profile", "prod", "config", "show"),
        run_cli("--profile", "prod", "config", "show", "-o", "json"),
        run_cli("--profile", "prod", "config", "show", "-o", "table"),
        run_cli("--profile", "prod", "job", "list"),  # unreachable: the error names the database
        run_cli("--profile", "prod", "db", "status"),
        run_cli("config", "show", "-o", "plain", env={"JOBCTL_DATABASE_URL": in_env}),
        run_cli("--database-url", in_env, "config", "show", "-o", "json"),
        run_cli("--debug", "--profile", "prod", "config", "show"),
    ]
    for result in runs:
        assert SECRET not in result.stdout + result.stderr, result
    assert runs[3].returncode == 4, runs[3]
    shown = {s["name"]: s for s in json.loads(runs[1].stdout)}
    assert shown["database_url"]["value"] == "postgresql://jobctl:***@127.0.0.1:1/jobctl"
    assert "password=***&sslmode=disable" in runs[5].stdout


def test_default_hooks_come_from_the_profile_and_a_flag_wins(config_file: Path,
                                                              tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hooks.db'}"
    config_file.write_text(f'''
database_url = "{url}"
on_failure = "echo file-wide"

[profiles.ops]
on_failure = "page-oncall"
on_end = "logger ended"
''')

    def hooks(*args: str, env: dict[str, str] | None = None) -> tuple[object, ...]:
        submitted = run_cli(*args, "job", "submit", "--", "true", env=env)
        assert submitted.returncode == 0, submitted
        result = run_cli("job", "status", submitted.stdout.strip(), "-o", "json")
        job = json.loads(result.stdout)
        return job["on_success"], job["on_failure"], job["on_end"]

    assert hooks() == (None, "echo file-wide", None)
    assert hooks("--profile", "ops") == (None, "page-oncall", "logger ended")
    assert hooks(env={"JOBCTL_ON_FAILURE": "from-env"}) == (None, "from-env", None)
    submitted = run_cli("--profile", "ops", "job", "submit", "--on-failure", "", "--on-success",
                        "yay", "--", "true")
    job = json.loads(run_cli("job", "status", submitted.stdout.strip(), "-o", "json").stdout)
    assert (job["on_success"], job["on_failure"], job["on_end"]) == ("yay", None,
                                                                     "logger ended")
    # a bad default is named with where it came from, and nothing is submitted
    config_file.write_text(f'database_url = "{url}"\non_end = "   "\n')
    refused = run_cli("job", "submit", "--", "true")
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"jobctl: error: on_end ({config_file}): a hook's command "
                                     "cannot be empty")
    flagged = run_cli("job", "submit", "--on-success", "x\x00y", "--", "true")
    assert flagged.returncode == 2
    assert flagged.stderr == ("jobctl: error: --on-success: a hook's command cannot hold a NUL "
                              "character\n")
    listed = json.loads(run_cli("job", "list", "-o", "json").stdout)
    assert len(listed) == 4  # the four submitted above; the refused ones changed nothing
