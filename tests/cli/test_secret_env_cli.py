"""`--secret-env` on the command line, in-process on both backends: references stored and shown
as they are (job submit, schedule add, a workflow's tasks), and bad input one line, exit 2,
nothing stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from inprocess import jobctl


def job_count(url: str) -> int:
    return len(json.loads(jobctl(url, "job", "list", "-o", "json").stdout))


def test_submit_stores_the_references(db_url: str) -> None:
    job_id = jobctl(db_url, "job", "submit", "--env", "PLAIN=1",
                    "--secret-env", "TOKEN=file:/run/secrets/token",
                    "--secret-env", "API_KEY=env:CI_API_KEY", "--", "true").stdout.strip()
    status = json.loads(jobctl(db_url, "job", "status", job_id, "-o", "json").stdout)
    assert status["secret_env"] == {"TOKEN": "file:/run/secrets/token",
                                    "API_KEY": "env:CI_API_KEY"}
    assert status["env"] == {"PLAIN": "1"}
    shown = jobctl(db_url, "job", "status", job_id).stdout
    assert "file:/run/secrets/token" in shown and "env:CI_API_KEY" in shown
    plain = json.loads(jobctl(db_url, "job", "status",
                              jobctl(db_url, "job", "submit", "--", "true").stdout.strip(),
                              "-o", "json").stdout)
    assert plain["secret_env"] == {}


@pytest.mark.parametrize(("args", "message"), [
    (["--secret-env", "TOKEN"],
     "invalid --secret-env 'TOKEN': use NAME=file:PATH or NAME=env:VAR"),
    (["--secret-env", "=file:/x"],
     "invalid --secret-env '=file:/x': use NAME=file:PATH or NAME=env:VAR"),
    (["--secret-env", "1TOKEN=file:/x"],
     "--secret-env '1TOKEN' is no environment variable name (letters, digits and _, not "
     "starting with a digit)"),
    (["--secret-env", "TOKEN=vault:x"],
     "--secret-env TOKEN='vault:x': the value is file:PATH or env:VAR"),
    (["--secret-env", "TOKEN=file:"], "--secret-env TOKEN=file:: the path is empty"),
    (["--secret-env", "TOKEN=env:"], "--secret-env TOKEN=env:: the variable is empty"),
    (["--env", "TOKEN=x", "--secret-env", "TOKEN=env:Y"],
     "--secret-env TOKEN: it is in --env too; give it once"),
], ids=["no-equals", "no-name", "bad-name", "bad-kind", "empty-path", "empty-variable",
        "also-env"])
def test_bad_input_is_one_line_exit_2_and_nothing_stored(db_url: str, args: list[str],
                                                         message: str) -> None:
    result = jobctl(db_url, "job", "submit", *args, "--", "true", expect=2)
    assert result.stderr == f"jobctl: error: {message}\n"
    assert result.stdout == ""
    assert job_count(db_url) == 0
    scheduled = jobctl(db_url, "schedule", "add", "s", "--every", "1h", *args, "--", "true",
                       expect=2)
    assert scheduled.stderr == f"jobctl: error: {message}\n"
    assert json.loads(jobctl(db_url, "schedule", "list", "-o", "json").stdout) == []


def test_a_control_character_in_a_reference_is_shown_not_obeyed(db_url: str) -> None:
    result = jobctl(db_url, "job", "submit", "--secret-env", "TOKEN=\x1b[2Jx:y", "--", "true",
                    expect=2)
    assert "\x1b" not in result.stderr and result.stderr.count("\n") == 1


def test_schedule_add_keeps_the_references_for_its_jobs(db_url: str) -> None:
    jobctl(db_url, "schedule", "add", "nightly", "--every", "1h",
           "--secret-env", "TOKEN=file:/etc/token", "--", "true")
    shown = json.loads(jobctl(db_url, "schedule", "show", "nightly", "-o", "json").stdout)
    assert shown["job"]["secret_env"] == {"TOKEN": "file:/etc/token"}
    job_id = int(jobctl(db_url, "schedule", "trigger", "nightly").stdout)
    status = json.loads(jobctl(db_url, "job", "status", str(job_id), "-o", "json").stdout)
    assert status["secret_env"] == {"TOKEN": "file:/etc/token"}


def test_a_workflows_tasks_take_secret_env(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "flow.toml"
    path.write_text('[workflow]\nname = "w"\nsecret_env = { TOKEN = "env:CI_TOKEN" }\n'
                    '[tasks.a]\ncommand = "true"\n'
                    '[tasks.b]\ncommand = "true"\nsecret_env = { KEY = "file:/k" }\n')
    jobctl(db_url, "workflow", "run", str(path))
    jobs = {job["task"]: job for job in json.loads(
        jobctl(db_url, "job", "list", "-o", "json").stdout)}
    secrets = {task: json.loads(jobctl(db_url, "job", "status", str(job["id"]), "-o",
                                       "json").stdout)["secret_env"]
               for task, job in jobs.items()}
    assert secrets == {"a": {"TOKEN": "env:CI_TOKEN"}, "b": {"KEY": "file:/k"}}
    bad = tmp_path / "bad.toml"
    bad.write_text('[tasks.a]\ncommand = "true"\nsecret_env = { KEY = "/k" }\n')
    result = jobctl(db_url, "workflow", "run", str(bad), expect=2)
    assert result.stderr.startswith(f"jobctl: error: {bad}:3: ")
    assert "KEY='/k': the value is file:PATH or env:VAR" in result.stderr
