"""Jobs carry their origin in JSON: `schedule_id`, `schedule` (its name) and `fire_time`, null
when not scheduled; `job list --schedule NAME` lists one schedule's jobs."""

from __future__ import annotations

import json
from typing import Any

from inprocess import cli_ok as run


def as_json(url: str, *args: str) -> Any:
    return json.loads(run(url, *args, "-o", "json"))


def test_scheduled_jobs_say_which_schedule_and_fire_time(sqlite_url: str) -> None:
    run(sqlite_url, "schedule", "add", "hourly", "--every", "1h", "--", "true")
    run(sqlite_url, "schedule", "add", "other", "--every", "1h", "--", "true")
    fired = int(run(sqlite_url, "schedule", "trigger", "hourly"))
    run(sqlite_url, "schedule", "trigger", "other")
    plain = int(run(sqlite_url, "job", "submit", "--", "true"))
    schedule = as_json(sqlite_url, "schedule", "show", "hourly")

    [listed] = as_json(sqlite_url, "job", "list", "--schedule", "hourly")
    status = as_json(sqlite_url, "job", "status", str(fired))
    for document in (listed, status):
        assert document["id"] == fired
        assert document["schedule_id"] == schedule["id"]
        assert document["schedule"] == "hourly"
        assert document["fire_time"] is not None and document["fire_time"].endswith("+00:00")
    unscheduled = as_json(sqlite_url, "job", "status", str(plain))
    assert (unscheduled["schedule_id"], unscheduled["schedule"], unscheduled["fire_time"]) == (
        None, None, None)
    assert as_json(sqlite_url, "job", "list", "--schedule", "nope") == []

    run(sqlite_url, "schedule", "remove", "hourly")
    after = as_json(sqlite_url, "job", "status", str(fired))
    assert (after["schedule_id"], after["schedule"]) == (schedule["id"], None)
    assert after["fire_time"] == status["fire_time"]
