"""docs/json.md documents every JSON field jobctl emits, and only those: each `## name` table there
is compared with the keys jobctl prints (run in-process: `run_cli`). To cover a new kind of
object, add a section to docs/json.md and an entry to EMITTERS. Also: the same times read as
ages in tables and as ISO 8601 UTC in plain output and JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from inprocess import cli_ok as jobctl

from jobctl.cli.gendocs import ROOT
from jobctl.models import JobSpec, JobState
from jobctl.store import jobs, queue
from jobctl.store import workers as worker_rows
from jobctl.store.direct import open_or_create
from jobctl.store.queue import Outcome

DOC = ROOT / "docs" / "json.md"


def documented() -> dict[str, list[str]]:
    """Each `## section` of docs/json.md and the fields (first column) of its table, in order."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        elif current is not None and (match := re.match(r"\|\s*`([a-z0-9_]+)`\s*\|", line)):
            current.append(match.group(1))
    return sections


def emitted(url: str, *args: str) -> Any:
    return json.loads(jobctl(url, *args, "-o", "json"))


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A job that ran once and failed (so every field has a value somewhere), and a worker."""
    url = f"sqlite:///{tmp_path_factory.mktemp('json') / 'jobctl.db'}"
    database = open_or_create(url)
    try:
        with database.write() as connection:
            worker = worker_rows.register(connection, name="w", hostname="h", pid=1,
                                          queues=["default"], concurrency=1, version="test")
            job_id, _ = jobs.submit(connection, JobSpec(argv=["false"], name="fails"))
        with database.write() as connection:
            queue.claim(connection, worker, queue.Claim(["default"], 1, 60.0))
        with database.write() as connection:
            queue.complete(connection, worker, [Outcome(
                job_id=job_id, attempt=1, state=JobState.FAILED, attempt_outcome="failed",
                exit_code=1, signal=None, error=None)])
    finally:
        database.close()
    return url


def _job_id(url: str) -> str:
    """The job that ran (the submit test adds queued ones)."""
    return str(emitted(url, "job", "list", "--state", "failed")[0]["id"])


# How to make jobctl print each documented object: a function of the database URL that returns
# one emitted object. Schedules, workflows and statistics join here with their sections.
def _dependency(url: str) -> dict[str, Any]:
    """One `waits_for` edge: a job submitted --after another."""
    first = jobctl(url, "job", "submit", "--", "true").strip()
    second = jobctl(url, "job", "submit", "--after", first, "--", "true").strip()
    edge: dict[str, Any] = emitted(url, "job", "status", second)["waits_for"][0]
    return edge


def _added(whole: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The fields of `whole` that `base` does not have, in order."""
    return {key: value for key, value in whole.items() if key not in base}


def _schedule(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A schedule that ran once: (its `schedule list` object, its `schedule show` object)."""
    if not emitted(url, "schedule", "list"):
        jobctl(url, "schedule", "add", "tick", "--every", "1h", "--", "true")
        jobctl(url, "schedule", "trigger", "tick")
    listed: dict[str, Any] = emitted(url, "schedule", "list")[0]
    shown: dict[str, Any] = emitted(url, "schedule", "show", "tick")
    return listed, shown


def _workflow(url: str) -> dict[str, Any]:
    if not emitted(url, "workflow", "list"):
        path = Path(url.removeprefix("sqlite:///")).parent / "wf.toml"
        path.write_text('[workflow]\nname = "w"\n[tasks.a]\ncommand = "true"\n')
        jobctl(url, "workflow", "run", str(path))
    listed: dict[str, Any] = emitted(url, "workflow", "list")[0]
    return listed


def _check(url: str) -> dict[str, Any]:
    if not emitted(url, "check", "list"):
        jobctl(url, "check", "add", "c", "--every", "1h")
    listed: dict[str, Any] = emitted(url, "check", "list")[0]
    assert listed == emitted(url, "check", "show", "c")
    return listed


def _audit(url: str) -> dict[str, Any]:
    jobctl(url, "queue", "pause", "default")
    entry: dict[str, Any] = emitted(url, "audit")[-1]
    return entry


EMITTERS: dict[str, Callable[[str], dict[str, Any]]] = {
    "job": lambda url: emitted(url, "job", "list")[0],
    "job status": lambda url: _added(emitted(url, "job", "status", _job_id(url)),
                                     emitted(url, "job", "list")[0]),
    "attempt": lambda url: emitted(url, "job", "status", _job_id(url))["attempts"][0],
    "worker": lambda url: emitted(url, "worker", "list")[0],
    "submit": lambda url: json.loads(jobctl(url, "job", "submit", "-o", "json", "--", "true")),
    "array submit": lambda url: json.loads(jobctl(url, "job", "submit", "--array", "0-1%1",
                                                  "-o", "json", "--", "true")),
    "dependency": lambda url: _dependency(url),
    "db status": lambda url: emitted(url, "db", "status"),
    "table size": lambda url: emitted(url, "db", "status")["tables"][0],
    "setting": lambda url: emitted(url, "config", "show")[0],
    "schedule": lambda url: _schedule(url)[0],
    "schedule show": lambda url: _added(_schedule(url)[1], _schedule(url)[0]),
    "schedule run": lambda url: _schedule(url)[1]["runs"][0],
    "job template": lambda url: _schedule(url)[0]["job"],
    "workflow": lambda url: _workflow(url),
    "workflow task": lambda url: _workflow(url)["tasks"][0],
    "stats": lambda url: emitted(url, "stats"),
    "queue stats": lambda url: emitted(url, "stats")["queues"][0],
    "queue": lambda url: emitted(url, "queue", "list")[0],
    "job explain": lambda url: emitted(url, "job", "explain", _job_id(url)),
    "check": lambda url: _check(url),
    "audit": lambda url: _audit(url),
}


def test_every_documented_section_has_an_emitter() -> None:
    assert set(documented()) == set(EMITTERS)


@pytest.mark.parametrize("section", sorted(EMITTERS))
def test_documented_fields_equal_the_emitted_keys(section: str, url: str) -> None:
    fields = documented()[section]
    assert len(fields) == len(set(fields)), f"a field twice in {section}"
    assert fields == list(EMITTERS[section](url)), (
        f"docs/json.md section {section!r} and the JSON differ (in order)")


def test_times_are_ages_in_tables_and_iso_utc_elsewhere(url: str) -> None:
    job_id = _job_id(url)
    table = jobctl(url, "job", "list", "-o", "table")
    assert re.search(r"\b[0-9]+(\.[0-9])?s ago\b|\b[0-9]+m[0-9]{2}s ago\b", table), table
    assert not re.search(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", table), table
    plain = jobctl(url, "job", "list", "-o", "plain", "--state", "failed").splitlines()
    header = plain[0].split("\t")
    row = dict(zip(header, plain[1].split("\t"), strict=True))
    assert datetime.fromisoformat(row["CREATED"]).utcoffset() == timedelta(0)
    assert re.fullmatch(r"[0-9]+\.[0-9]{3}", row["DURATION"]), row
    workers = jobctl(url, "worker", "list", "-o", "table")
    assert " ago" in workers
    status = jobctl(url, "job", "status", job_id, "-o", "table")
    assert re.search(r"^created: +[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8} \(.* ago\)$", status,
                     re.MULTILINE), status
    piped = jobctl(url, "job", "status", job_id)
    created = re.search(r"^created: +(\S+)$", piped, re.MULTILINE)
    assert created and datetime.fromisoformat(created.group(1)).utcoffset() == timedelta(0)
