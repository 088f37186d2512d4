"""`jobctl schedule import` of real crontabs, run in-process (`run_cli`, SQLite): @reboot skipped
with a warning (or refused with --strict), `%` as the job's standard input, and system crontabs
(/etc/crontab, /etc/cron.d/*) whose user field becomes the job's user."""

from __future__ import annotations

import base64
import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from crontab_samples import DEBIAN_ETC_CRONTAB, DEBIAN_ETC_CRONTAB_ENTRIES, DEBIAN_EXAMPLE
from inprocess import Result, jobctl

DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin"


# `jobctl ARGS…` in-process on a database, whatever its exit status (the tests look at it).
run = partial(jobctl, expect=None)


def ok(result: Result) -> Result:
    assert result.returncode == 0, f"stdout={result.stdout!r} stderr={result.stderr!r}"
    assert "Traceback" not in result.stderr
    return result


def schedules(url: str) -> dict[str, dict[str, Any]]:
    listed = json.loads(ok(run(url, "schedule", "list", "-o", "json")).stdout)
    return {s["name"]: s for s in listed}


def stdin_of(schedule: dict[str, Any]) -> bytes | None:
    encoded = schedule["job"]["input"]
    return None if encoded is None else base64.b64decode(encoded)


USER_CRONTAB = """\
MAILTO=me@example.com
@reboot /usr/local/bin/start-agent
*/15 * * * * /usr/local/bin/poll
# after a reboot line, more of them
@reboot   sleep 30 && /usr/local/bin/warm-cache
@daily /usr/local/bin/rotate
"""


def test_reboot_entries_are_skipped_with_a_warning_and_the_rest_imported(
        sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "me.crontab"
    path.write_text(USER_CRONTAB)
    result = ok(run(sqlite_url, "schedule", "import", str(path)))
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        f"jobctl: warning: {path}:2: skipped: @reboot has no fire times (cron runs it when cron "
        "starts); start it with the machine instead",
        f"jobctl: warning: {path}:5: skipped: @reboot has no fire times (cron runs it when cron "
        "starts); start it with the machine instead",
    ]
    assert "created 2 schedules" in result.stderr
    listed = schedules(sqlite_url)
    assert sorted(listed) == ["me-3", "me-6"]
    assert listed["me-3"]["job"]["argv"] == ["/bin/sh", "-c", "/usr/local/bin/poll"]
    assert listed["me-6"]["job"]["env"] == {"MAILTO": "me@example.com"}  # kept, as before


def test_strict_refuses_a_crontab_with_reboot_and_imports_nothing(sqlite_url: str,
                                                                  tmp_path: Path) -> None:
    path = tmp_path / "me.crontab"
    path.write_text(USER_CRONTAB)
    for extra in ([], ["--dry-run"]):
        result = run(sqlite_url, "schedule", "import", "--strict", *extra, str(path))
        assert result.returncode == 2, result
        assert result.stderr.splitlines() == [
            f"jobctl: error: {path}:2: @reboot has no fire times (cron runs it when cron starts); "
            "start it with the machine instead (--strict: nothing imported)"]
        assert result.stdout == ""
    assert schedules(sqlite_url) == {}
    # without @reboot, --strict changes nothing
    path.write_text("".join(line + "\n" for line in USER_CRONTAB.splitlines()
                            if not line.startswith("@reboot")))
    ok(run(sqlite_url, "schedule", "import", "--strict", str(path)))
    assert sorted(schedules(sqlite_url)) == ["me-2", "me-4"]


def test_a_crontab_of_only_reboot_entries_imports_nothing_and_says_so(sqlite_url: str,
                                                                      tmp_path: Path) -> None:
    path = tmp_path / "boot.crontab"
    path.write_text("@reboot /usr/local/bin/start-agent\n")
    result = ok(run(sqlite_url, "schedule", "import", str(path)))
    assert result.stderr.splitlines()[-1] == "created 0 schedules"
    assert f"{path}:1: skipped" in result.stderr
    assert schedules(sqlite_url) == {}


def test_debian_crontab5_example_verbatim(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "paul"
    path.write_text(DEBIAN_EXAMPLE)
    preview = ok(run(sqlite_url, "schedule", "import", "--dry-run", str(path)))
    rows = [line.split("\t") for line in preview.stdout.splitlines()]
    assert rows[0] == ["NAME", "CRON", "TZ", "USER", "STDIN", "COMMAND"]
    assert rows[3] == ["paul-11", "0 22 * * 1-5", "UTC", "", "27 bytes",
                       "/bin/bash -c 'mail -s \"It'\"'\"'s 10pm\" joe'"]
    assert [row[4] for row in rows[1:]] == ["", "", "27 bytes", "", "", "", "", ""]
    assert "would create 8 schedules" in preview.stderr
    assert schedules(sqlite_url) == {}

    as_json = json.loads(ok(run(sqlite_url, "schedule", "import", "--dry-run", "-o", "json",
                                str(path))).stdout)
    assert base64.b64decode(as_json[2]["input"]) == b"Joe,\n\nWhere are your kids?\n"

    ok(run(sqlite_url, "schedule", "import", str(path)))
    listed = schedules(sqlite_url)
    assert sorted(listed, key=lambda name: int(name.split("-")[1])) == [
        "paul-7", "paul-9", "paul-11", "paul-12", "paul-13", "paul-14", "paul-15", "paul-17"]
    mail = listed["paul-11"]
    assert mail["job"]["argv"] == ["/bin/bash", "-c", "mail -s \"It's 10pm\" joe"]
    assert stdin_of(mail) == b"Joe,\n\nWhere are your kids?\n"
    assert (mail["cron"], mail["job"]["user"]) == ("0 22 * * 1-5", None)
    assert listed["paul-17"]["job"]["argv"][2] == 'test $(date +%u) -eq 6 && echo "2nd Saturday"'
    assert [name for name, s in listed.items() if stdin_of(s) is not None] == ["paul-11"]
    assert all(s["job"]["env"] == {"SHELL": "/bin/bash", "MAILTO": "paul"}
               for s in listed.values())


def _check_debian_etc_crontab(url: str, prefix: str) -> None:
    listed = schedules(url)
    assert sorted(listed) == [f"{prefix}-{line}" for line, _, _ in DEBIAN_ETC_CRONTAB_ENTRIES]
    for line, cron, command in DEBIAN_ETC_CRONTAB_ENTRIES:
        schedule = listed[f"{prefix}-{line}"]
        assert (schedule["cron"], schedule["job"]["argv"], schedule["job"]["user"]) == (
            cron, ["/bin/sh", "-c", command], "root")
        assert schedule["job"]["env"] == {"SHELL": "/bin/sh", "PATH": DEBIAN_PATH}
        assert stdin_of(schedule) is None


def test_debian_etc_crontab_with_system(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "system.txt"
    path.write_text(DEBIAN_ETC_CRONTAB)
    preview = ok(run(sqlite_url, "schedule", "import", "--system", "--dry-run", str(path)))
    rows = [line.split("\t") for line in preview.stdout.splitlines()]
    assert rows[1] == ["system-18", "17 * * * *", "UTC", "root", "",
                       "cd / && run-parts --report /etc/cron.hourly"]
    ok(run(sqlite_url, "schedule", "import", "--system", str(path)))
    _check_debian_etc_crontab(sqlite_url, "system")


@pytest.mark.parametrize("where", ["etc/crontab", "etc/cron.d/debian"])
def test_system_crontabs_are_recognised_by_their_path(sqlite_url: str, tmp_path: Path,
                                                      where: str) -> None:
    path = tmp_path / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEBIAN_ETC_CRONTAB)
    ok(run(sqlite_url, "schedule", "import", str(path)))
    _check_debian_etc_crontab(sqlite_url, path.name)


def test_no_system_reads_a_system_path_as_a_user_crontab(sqlite_url: str,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "etc" / "cron.d" / "odd"
    path.parent.mkdir(parents=True)
    path.write_text("0 * * * * /usr/bin/poll%now\n")
    assert run(sqlite_url, "schedule", "import", "--dry-run", str(path)).returncode == 2
    ok(run(sqlite_url, "schedule", "import", "--no-system", str(path)))
    only = schedules(sqlite_url)["odd-1"]
    assert (only["job"]["argv"][2], only["job"]["user"], stdin_of(only)) == (
        "/usr/bin/poll", None, b"now\n")


def test_a_system_crontab_line_without_a_user_is_refused(sqlite_url: str,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "etc" / "cron.d" / "forgetful"
    path.parent.mkdir(parents=True)
    path.write_text("# m h dom mon dow user command\n@daily root true\n"
                    "30 2 * * * /usr/local/bin/backup --all\n")
    result = run(sqlite_url, "schedule", "import", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"jobctl: error: {path}:3: no user field: '/usr/local/bin/backup' is not a user name (a "
        "system crontab reads `m h dom mon dow user command`; --no-system reads a user crontab)"]
    assert schedules(sqlite_url) == {}


def test_standard_input_is_a_user_crontab_unless_system(sqlite_url: str) -> None:
    text = "@daily root run-parts --report /etc/cron.daily\n"
    user = json.loads(ok(run(sqlite_url, "schedule", "import", "-", "--dry-run", "-o", "json",
                             stdin=text)).stdout)
    assert (user[0]["argv"][2], user[0]["user"]) == ("root run-parts --report /etc/cron.daily",
                                                     None)
    system = json.loads(ok(run(sqlite_url, "schedule", "import", "-", "--system", "--dry-run",
                               "-o", "json", stdin=text)).stdout)
    assert (system[0]["name"], system[0]["argv"][2], system[0]["user"]) == (
        "stdin-1", "run-parts --report /etc/cron.daily", "root")
    bad = run(sqlite_url, "schedule", "import", "-", "--system", stdin="@reboot\n")
    assert bad.returncode == 2
    assert bad.stderr == "jobctl: error: <stdin>:1: expected a user and a command after @reboot\n"


def test_a_crontab_on_standard_input_with_a_prefix(sqlite_url: str) -> None:
    """`schedule import -` reads all of standard input."""
    result = run(sqlite_url, "schedule", "import", "-", "--prefix", "piped",
                 stdin="*/5 * * * * /usr/local/bin/poll\n")
    assert result.returncode == 0, result
    assert "created 1 schedule" in result.stderr, result
    listed = schedules(sqlite_url)
    assert listed["piped-1"]["job"]["argv"] == ["/bin/sh", "-c", "/usr/local/bin/poll"]
