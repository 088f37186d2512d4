"""`jobctl audit`, in-process on both backends: what the commands do shows in the trail, in
order, with the role and what changed; `--since` takes a duration or an instant; `-o json` is
stable; tables and plain rows make control characters in names visible; bad input exits 2 with
one line and no traceback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from inprocess import cli_ok, jobctl

from jobctl.cli.audit import parse_since
from jobctl.errors import InvalidInput
from jobctl.models import JobSpec
from jobctl.store import jobs
from jobctl.store import workers as worker_rows
from jobctl.store.direct import open_or_create


def audit_json(url: str, *args: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(cli_ok(url, "audit", "-o", "json", *args))
    return found


def test_the_commands_actions_show_oldest_first(db_url: str) -> None:
    database = open_or_create(db_url)
    try:
        with database.write() as conn:
            worker = worker_rows.register(conn, name="w1", hostname="h", pid=1,
                                          queues=["default"], concurrency=1, version="test")
            theirs, _ = jobs.submit(conn, JobSpec(argv=["true"]))
            postgres = conn.backend.title == "PostgreSQL"
            if postgres:
                conn.execute("ALTER TABLE jobs DISABLE TRIGGER jobs_keep_submitter")
            conn.execute(f"UPDATE jobs SET submitted_by = 'alice' WHERE id = {theirs}")
            if postgres:
                conn.execute("ALTER TABLE jobs ENABLE TRIGGER jobs_keep_submitter")
            me = str(conn.scalar("SELECT session_user")) if postgres else None
    finally:
        database.close()
    mine = cli_ok(db_url, "job", "submit", "--", "true").strip()
    cli_ok(db_url, "job", "cancel", mine)  # one's own job: not recorded
    cli_ok(db_url, "job", "cancel", str(theirs))
    cli_ok(db_url, "queue", "pause", "default")
    cli_ok(db_url, "queue", "resume", "default")
    cli_ok(db_url, "queue", "set", "default", "--max-running", "2")
    cli_ok(db_url, "schedule", "add", "tick", "--every", "1h", "--", "true")
    cli_ok(db_url, "schedule", "pause", "tick")
    cli_ok(db_url, "schedule", "remove", "tick")
    jobctl(db_url, "worker", "stop", str(worker))
    cli_ok(db_url, "db", "prune", "--older-than", "0s")
    entries = audit_json(db_url)
    assert [(e["action"], e["target"]) for e in entries] == [
        ("job.cancel", str(theirs)), ("queue.pause", "default"), ("queue.resume", "default"),
        ("queue.set", "default"), ("schedule.add", "tick"), ("schedule.pause", "tick"),
        ("schedule.remove", "tick"), ("worker.stop", str(worker)), ("retention.prune", None)]
    assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)
    assert len({e["role"] for e in entries}) == 1
    if me is not None:
        assert entries[0]["role"] == me
    assert entries[0]["owner"] == "alice"
    assert entries[0]["changes"] == {"state": ["queued", "cancelled"],
                                     "cancel_requested": [False, True]}
    assert entries[3]["changes"] == {"max_running": [None, 2]}
    assert entries[-1]["changes"]["jobs"] == 2  # both cancelled jobs, finished: pruned
    for entry in entries:
        at = datetime.fromisoformat(entry["at"])
        assert at.utcoffset() == timedelta(0)
        assert abs(at - datetime.now(UTC)) < timedelta(minutes=5)
    # plain rows: a header, then one line per row, the changes as JSON
    plain = cli_ok(db_url, "audit").splitlines()
    assert plain[0].split("\t")[:4] == ["ID", "AT", "ROLE", "ACTION"]
    assert len(plain) == len(entries) + 1
    assert json.loads(plain[1].split("\t")[-1]) == entries[0]["changes"]
    table = cli_ok(db_url, "audit", "-o", "wide")
    assert "cancel_requested false→true" in table and "job.cancel" in table


def test_since_takes_a_duration_or_an_instant(db_url: str) -> None:
    cli_ok(db_url, "queue", "pause", "default")
    assert [e["action"] for e in audit_json(db_url, "--since", "1h")] == ["queue.pause"]
    assert [e["action"] for e in audit_json(db_url, "--since", "PT10M")] == ["queue.pause"]
    assert audit_json(db_url, "--since", "+1h") == []  # an instant an hour ahead
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert audit_json(db_url, "--since", tomorrow) == []
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert len(audit_json(db_url, "--since", yesterday)) == 1


@pytest.mark.parametrize("since", ["yesterday-ish", "-5m", "", "2026-13-40", "\x1b[31m"])
def test_a_bad_since_exits_2_with_one_line(sqlite_url: str, since: str) -> None:
    result = jobctl(sqlite_url, "audit", "--since", since, expect=2)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jobctl: error: --since: "), result.stderr
    assert "\x1b" not in result.stderr


def test_ids_output_is_refused(sqlite_url: str) -> None:
    result = jobctl(sqlite_url, "audit", "-o", "ids", expect=2)
    assert result.stderr.startswith("jobctl: error: audit: -o ids is not supported")


@pytest.mark.parametrize("command", [("audit",), ("stats",)])
def test_ids_output_is_refused_before_the_database_is_asked(command: tuple[str, ...]) -> None:
    """Bad usage is exit 2 whatever the database: here one nothing listens for (else exit 4)."""
    url = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    result = jobctl(url, *command, "-o", "ids", expect=2)
    assert result.stderr == f"jobctl: error: {command[0]}: -o ids is not supported; use table, " \
                            "wide, plain or json\n"


def test_control_characters_are_made_visible(sqlite_url: str) -> None:
    hostile = "evil\x1b]0;pwned\x07\nq"
    cli_ok(sqlite_url, "queue", "set", hostile, "--max-running", "1")
    for output in ("table", "wide", "plain"):
        shown = cli_ok(sqlite_url, "audit", "-o", output)
        assert "\x1b" not in shown and "\x07" not in shown, output
        assert "\\x1b" in shown, output
    [entry] = audit_json(sqlite_url)
    assert entry["target"] == hostile  # JSON gives the value back exactly


def test_parse_since() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert parse_since(None, now) is None
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-12-01T00:00:00Z", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since("now", now) == now
    with pytest.raises(InvalidInput, match="--since"):
        parse_since("soon", now)
