"""Dead-man's switches on the command line, in-process on both backends: `schedule add/edit
--alert-after/--on-overdue` and `schedule list/show` saying who is overdue (in tables, plain
output and JSON), and `jobctl check add/ping/list/show/remove`."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta
from functools import partial

from inprocess import jobctl

from jobctl.store import overdue
from jobctl.store.direct import DirectDatabase
from jobctl.store.url import parse

run = partial(jobctl, expect=None)


def notice(url: str) -> overdue.Noticed:
    """A scheduler's overdue pass."""
    database = DirectDatabase(parse(url))
    try:
        with database.write() as conn:
            return overdue.evaluate(conn)
    finally:
        database.close()


def plain_rows(url: str, *args: str) -> list[dict[str, str]]:
    lines = jobctl(url, *args, "-o", "plain").stdout.splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def test_schedule_list_and_show_say_who_is_overdue(db_url: str) -> None:
    jobctl(db_url, "schedule", "add", "late", "--every", "1h", "--alert-after", "1s",
           "--on-overdue", "echo late", "--", "false")
    jobctl(db_url, "schedule", "add", "plain", "--every", "1h", "--", "true")
    fresh = json.loads(jobctl(db_url, "schedule", "show", "late", "-o", "json").stdout)
    assert fresh["alert_after_s"] == 1.0 and fresh["on_overdue"] == "echo late"
    assert fresh["overdue"] is False and fresh["overdue_since"] is None
    assert (datetime.fromisoformat(fresh["overdue_at"])
            == datetime.fromisoformat(fresh["alert_set_at"]) + timedelta(seconds=1))
    time.sleep(1.1)
    # Overdue as of now, whether or not a scheduler noticed it yet.
    rows = {row["NAME"]: row for row in plain_rows(db_url, "schedule", "list")}
    assert rows["late"]["OVERDUE"] == "yes" and rows["plain"]["OVERDUE"] == "-"
    [listed] = [s for s in json.loads(jobctl(db_url, "schedule", "list", "-o", "json").stdout)
                if s["name"] == "late"]
    assert listed["overdue"] is True and listed["overdue_at"] is None
    assert listed["overdue_since"] == fresh["overdue_at"]
    assert notice(db_url).began == ["schedule late"]
    shown = jobctl(db_url, "schedule", "show", "late", "-o", "plain").stdout
    assert re.search(r"^alert after: +1\.0s$", shown, re.MULTILINE), shown
    assert re.search(r"^on overdue: +echo late$", shown, re.MULTILINE), shown
    assert re.search(r"^overdue: +yes$", shown, re.MULTILINE), shown
    assert re.search(r"^overdue since: +\d{4}-", shown, re.MULTILINE), shown
    plain = json.loads(jobctl(db_url, "schedule", "show", "plain", "-o", "json").stdout)
    assert plain["alert_after_s"] is None and plain["overdue"] is False
    assert "alert after" not in jobctl(db_url, "schedule", "show", "plain").stdout


def test_schedule_edit_sets_and_removes_the_switch(db_url: str) -> None:
    jobctl(db_url, "schedule", "add", "s", "--every", "1h", "--", "true")
    jobctl(db_url, "schedule", "edit", "s", "--alert-after", "2h", "--on-overdue", "echo x")
    shown = json.loads(jobctl(db_url, "schedule", "show", "s", "-o", "json").stdout)
    assert shown["alert_after_s"] == 7200.0 and shown["on_overdue"] == "echo x"
    jobctl(db_url, "schedule", "edit", "s", "--on-overdue", "")
    assert json.loads(jobctl(db_url, "schedule", "show", "s", "-o", "json").stdout)[
        "on_overdue"] is None
    jobctl(db_url, "schedule", "edit", "s", "--alert-after", "none")
    shown = json.loads(jobctl(db_url, "schedule", "show", "s", "-o", "json").stdout)
    assert shown["alert_after_s"] is None and shown["overdue_at"] is None


def test_checks_from_add_to_remove(db_url: str) -> None:
    added = run(db_url, "check", "add", "backup", "--every", "1s", "--grace", "0s",
                "--on-overdue", "echo late")
    assert added.returncode == 0 and "check backup added" in added.stderr
    jobctl(db_url, "check", "add", "daily", "--every", "1d")
    daily = json.loads(jobctl(db_url, "check", "show", "daily", "-o", "json").stdout)
    assert daily["grace_s"] == 3600.0 and daily["overdue"] is False  # the default grace
    assert daily["last_ping_at"] is None
    pinged = run(db_url, "check", "ping", "backup")
    assert (pinged.returncode, pinged.stdout, pinged.stderr) == (0, "", "")
    assert json.loads(jobctl(db_url, "check", "show", "backup", "-o", "json").stdout)[
        "last_ping_at"] is not None
    time.sleep(1.1)
    rows = {row["NAME"]: row for row in plain_rows(db_url, "check", "list")}
    assert rows["backup"]["OVERDUE"] == "yes" and rows["daily"]["OVERDUE"] == "no"
    assert notice(db_url).began == ["check backup"]
    listed = {c["name"]: c for c in json.loads(jobctl(db_url, "check", "list", "-o",
                                                      "json").stdout)}
    assert listed["backup"]["overdue"] is True and listed["backup"]["overdue_since"]
    assert "overdue since:" in jobctl(db_url, "check", "show", "backup").stdout
    jobctl(db_url, "check", "ping", "backup")
    assert json.loads(jobctl(db_url, "check", "show", "backup", "-o", "json").stdout)[
        "overdue"] is False
    failed = run(db_url, "check", "ping", "daily", "--fail")
    assert failed.returncode == 0
    daily = json.loads(jobctl(db_url, "check", "show", "daily", "-o", "json").stdout)
    assert daily["overdue"] is True and daily["overdue_since"] == daily["last_fail_at"]
    exists = run(db_url, "check", "add", "daily", "--every", "1d")
    assert exists.returncode == 2 and "--replace" in exists.stderr
    jobctl(db_url, "check", "add", "daily", "--every", "2d", "--replace")
    assert json.loads(jobctl(db_url, "check", "show", "daily", "-o", "json").stdout)[
        "overdue"] is False
    jobctl(db_url, "check", "remove", "daily")
    assert [c["name"] for c in json.loads(jobctl(db_url, "check", "list", "-o",
                                                 "json").stdout)] == ["backup"]
