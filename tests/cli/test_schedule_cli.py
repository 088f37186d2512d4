"""`jobctl schedule …` run in-process (`run_cli`, SQLite): exit codes and one-line errors for bad
input, what `show`/`next` print, and `schedule import` of a crontab."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
from inprocess import Result, jobctl

# `jobctl ARGS…` in-process on a database, whatever its exit status (the tests look at it).
run = partial(jobctl, expect=None)


def error_of(result: Result, code: int) -> str:
    where = f"stdout={result.stdout!r} stderr={result.stderr!r}"
    assert result.returncode == code, where
    assert "Traceback" not in result.stderr, where
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jobctl: error: "), where
    return lines[0].removeprefix("jobctl: error: ")


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--cron", "61 * * * *"], 2, "invalid cron expression '61 * * * *': bad minute field '61'"),
    (["--cron", "0 0 * * * MONDAY"], 2, "bad day of week field 'MONDAY'"),
    (["--cron", "* * *"], 2, "it has 3 fields"),
    (["--cron", "* * * * *", "--tz", "Mars/Olympus"], 2, "unknown time zone 'Mars/Olympus'"),
    (["--every", "soon"], 2, "--every: "),
    (["--every", "0s"], 2, "--every must be longer than 0s"),
    ([], 2, "give --cron or --every (one of them)"),
    (["--cron", "@daily", "--every", "1h"], 2, "give --cron or --every (one of them)"),
    (["--every", "1h", "--start-at", "2030-01-02T00:00:00Z", "--end-at",
      "2030-01-01T00:00:00Z"], 2, "--end-at must be after --start-at"),
])
def test_add_rejects_bad_input(sqlite_url: str, args: list[str], code: int,
                               message: str) -> None:
    result = run(sqlite_url, "schedule", "add", "s", *args, "--", "true")
    assert message in error_of(result, code)
    assert run(sqlite_url, "schedule", "list", "-o", "json").stdout.strip() == "[]"


def test_add_without_a_command_is_invalid(sqlite_url: str) -> None:
    assert "no command given" in error_of(run(sqlite_url, "schedule", "add", "s", "--every",
                                              "1h"), 2)


@pytest.mark.parametrize("command", [["show"], ["next"], ["pause"], ["resume"], ["remove"],
                                     ["trigger"], ["edit", "--every", "5m"]])
def test_unknown_schedule_is_exit_3(sqlite_url: str, command: list[str]) -> None:
    result = run(sqlite_url, "schedule", command[0], "nope", *command[1:])
    assert error_of(result, 3) == "no schedule named 'nope'"


def test_add_show_next_edit(sqlite_url: str) -> None:
    added = run(sqlite_url, "schedule", "add", "tick", "--cron", "31 10-15 1 * * MON-FRI",
                "--tz", "Europe/Berlin", "--queue", "q", "--env", "A=1", "--", "echo", "-n",
                "hi")
    assert added.returncode == 0, added.stderr
    again = run(sqlite_url, "schedule", "add", "tick", "--every", "1h", "--", "true")
    assert "exists already" in error_of(again, 2)
    shown = json.loads(run(sqlite_url, "schedule", "show", "tick", "-o", "json").stdout)
    assert (shown["cron"], shown["timezone"], shown["job"]["argv"], shown["job"]["queue"],
            shown["job"]["env"], shown["overlap"], shown["misfire"]) == (
        "31 10-15 1 * * MON-FRI", "Europe/Berlin", ["echo", "-n", "hi"], "q", {"A": "1"},
        "forbid", "once")
    assert len(shown["next_fire_times"]) == 5
    lines = run(sqlite_url, "schedule", "next", "tick", "-n", "7").stdout.splitlines()
    assert len(lines) == 7
    for line in lines:  # local times in Berlin, second 31, minutes 10-15 past 01
        assert line[10:19] in {f"T01:{m}:31" for m in range(10, 16)}, line
        assert line.endswith(("+01:00", "+02:00")), line
    text = run(sqlite_url, "schedule", "show", "tick").stdout
    assert "Europe/Berlin" in text and "(the default)" not in text
    assert run(sqlite_url, "schedule", "edit", "tick", "--every", "90s", "--tz",
               "UTC").returncode == 0
    assert "UTC (the default)" in run(sqlite_url, "schedule", "show", "tick").stdout
    assert json.loads(run(sqlite_url, "schedule", "show", "tick", "-o", "json").stdout)[
        "every_s"] == 90.0


SAMPLE_CRONTAB = """\
# m h dom mon dow command  -- a typical user crontab
SHELL=/bin/bash
MAILTO=ops@example.com
*/5 * * * * /usr/local/bin/poll-queue --quick

# nightly
30 2 * * * /usr/local/bin/backup.sh > /var/log/backup.log 2>&1
@daily /usr/bin/find /tmp -mtime +7 -delete
CRON_TZ=America/New_York
0 9 * * MON-FRI echo "stand-up in 5\\% of an hour"
"""


def test_import_a_crontab(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "ops.crontab"
    path.write_text(SAMPLE_CRONTAB)
    assert len(SAMPLE_CRONTAB.splitlines()) == 10
    preview = run(sqlite_url, "schedule", "import", "--dry-run", str(path), "-o", "json")
    assert preview.returncode == 0, preview.stderr
    assert "would create 4 schedules" in preview.stderr
    assert run(sqlite_url, "schedule", "list", "-o", "json").stdout.strip() == "[]"

    imported = run(sqlite_url, "schedule", "import", str(path))
    assert imported.returncode == 0, imported.stderr
    listed = {s["name"]: s for s in json.loads(run(sqlite_url, "schedule", "list", "-o",
                                                   "json").stdout)}
    assert sorted(listed) == ["ops-10", "ops-4", "ops-7", "ops-8"]  # named by line number
    assert json.loads(preview.stdout) == [
        {"name": name, "cron": listed[name]["cron"], "timezone": listed[name]["timezone"],
         "argv": listed[name]["job"]["argv"], "env": listed[name]["job"]["env"],
         "user": None, "input": None, "on_end": listed[name]["job"]["on_end"]}
        for name in ("ops-4", "ops-7", "ops-8", "ops-10")]
    # MAILTO, as cron has it: each run's output is mailed by an on_end hook, and the import
    # says so
    assert all("| sendmail -i -- ops@example.com" in listed[name]["job"]["on_end"]
               for name in listed)
    assert ("MAILTO=ops@example.com (lines 4, 7, 8, 10): a run that prints something has its "
            "output mailed there") in imported.stderr
    assert (listed["ops-4"]["cron"], listed["ops-8"]["cron"], listed["ops-10"]["cron"]) == (
        "*/5 * * * *", "0 0 * * *", "0 9 * * MON-FRI")
    assert listed["ops-7"]["job"]["argv"] == [
        "/bin/bash", "-c", "/usr/local/bin/backup.sh > /var/log/backup.log 2>&1"]
    assert listed["ops-10"]["job"]["argv"][2] == 'echo "stand-up in 5% of an hour"'
    assert listed["ops-10"]["timezone"] == "America/New_York"
    assert listed["ops-4"]["timezone"] == "UTC"
    assert listed["ops-4"]["job"]["env"] == {"SHELL": "/bin/bash", "MAILTO": "ops@example.com"}
    assert (listed["ops-4"]["overlap"], listed["ops-4"]["misfire"]) == ("allow", "skip")

    again = run(sqlite_url, "schedule", "import", str(path))
    assert "exists already" in error_of(again, 2)
    assert run(sqlite_url, "schedule", "import", "--replace", str(path)).returncode == 0


def test_import_names_the_bad_line_and_creates_nothing(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.crontab"
    path.write_text("0 * * * * true\n# fine so far\n0 25 * * * false\n")
    message = error_of(run(sqlite_url, "schedule", "import", str(path)), 2)
    assert message == (f"{path}:3: invalid cron expression '0 25 * * *': "
                       "bad hour field '25'")
    assert run(sqlite_url, "schedule", "list", "-o", "json").stdout.strip() == "[]"


WORKFLOW = """[workflow]
name = "nightly"

[tasks.dump]
command = "echo {day}"
"""


def test_add_a_workflow_schedule_stores_its_definition(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "nightly.toml"
    path.write_text(WORKFLOW)
    result = run(sqlite_url, "schedule", "add", "n", "--every", "1h", "--workflow", str(path),
                 "--set", "day=mon")
    assert result.returncode == 0, result.stderr
    path.unlink()  # the definition was stored, not the path
    [schedule] = json.loads(run(sqlite_url, "schedule", "list", "-o", "json").stdout)
    assert schedule["workflow"]["params"] == {"day": "mon"}
    assert list(schedule["workflow"]["definition"]["tasks"]) == ["dump"]
    triggered = run(sqlite_url, "schedule", "trigger", "n")
    assert triggered.returncode == 0, triggered.stderr
    [workflow] = json.loads(run(sqlite_url, "workflow", "list", "-o", "json").stdout)
    assert workflow["name"] == "nightly"


@pytest.mark.parametrize(("args", "message"), [
    (["--workflow", "{missing}"], "cannot read"),
    (["--workflow", "{bad}"], "bad.toml:"),
    (["--workflow", "{good}", "--", "true"], "give either --workflow or a command, not both"),
    (["--set", "day=mon", "--", "true"], "--set needs --workflow"),
])
def test_add_a_workflow_schedule_rejects_bad_input(sqlite_url: str, tmp_path: Path,
                                                   args: list[str], message: str) -> None:
    (tmp_path / "good.toml").write_text(WORKFLOW)
    (tmp_path / "bad.toml").write_text("[workflow]\nname = 'x'\n[tasks.a]\nneeds = ['b']\n")
    paths = {"missing": str(tmp_path / "missing.toml"), "bad": str(tmp_path / "bad.toml"),
             "good": str(tmp_path / "good.toml")}
    args = [arg.format(**paths) for arg in args]
    result = run(sqlite_url, "schedule", "add", "n", "--every", "1h", *args)
    assert message in error_of(result, 2)
    assert run(sqlite_url, "schedule", "list", "-o", "json").stdout.strip() == "[]"
