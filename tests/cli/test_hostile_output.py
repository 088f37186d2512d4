"""Names, commands, labels, errors and host names full of terminal escapes (kubectl's
CVE-2021-25743), and values too long for 80 columns, through every listing of the real `jobctl`
executable (SQLite): in a pseudo-terminal (tables), piped (plain rows, run in-process), `-o wide`
and JSON.

- Nothing a user or a job supplied reaches the terminal as a control character: ESC, BEL, CSI,
  OSC, the 8-bit CSI (U+009B), DEL, CR, tab, newline, bidi overrides and line separators come out
  as escapes (`\\x1b`, `\\n`, `\\u202e`…), and Rich markup in a value is text.
- On a terminal, every line of a table fits its width down to 80 columns, one line a row; ids,
  states and ages are whole; long free text ends in `…`. `-o wide` shows every value whole.
- A plain row is one line with one field per tab; JSON gives the values back exactly.
- `job logs` stays byte for byte.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from inprocess import JOBCTL, process_env, run_cli
from rich.cells import cell_len

from jobctl.cli.render import plain_field, visible
from jobctl.models import JobSpec, JobState
from jobctl.store import jobs, queue
from jobctl.store import workers as worker_rows
from jobctl.store.direct import open_or_create
from jobctl.store.queue import Outcome, OutputChunk

# Sets the window title, turns text red, clears the screen (7-bit and 8-bit CSI), rings the bell,
# deletes, returns the carriage, breaks the line, reverses the text, and looks like Rich markup.
EVIL = ("evil\x1b]0;PWNED\x07\x1b[31mred\x9b2J\x1b[2J\x7f\x08\ttab\nline\rcr\u202erlo"
        "\u2028sep[bold]x[/bold]")
ERROR = EVIL + "\x00nul"  # no argument can hold a NUL; a job's error (from the store) can
# Whatever is left of these in a table or a plain row is a leak.
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
LONG_NAME = "build-linux-x86_64-release-with-debug-symbols-and-lto-nightly"
LONG_COMMAND = ["./build.sh", "--target", "linux", "--jobs", "8", "--verbose", "--output",
                "/srv/artifacts/build-linux-x86_64/release/with/a/very/long/path"]
LONG_HOST = "ip-10-0-12-34.eu-west-1.compute.internal"
EVIL_QUEUE = "q\x1b[31mred"
LOG = b"\x1b]0;job title\x07\x1b[31mred\x1b[0m \x9b raw \xff bytes\r\n"


@dataclass
class Seeded:
    url: str
    ids: dict[str, int] = field(default_factory=dict)


def jobctl(url: str, *args: str, columns: int | None = None,
           tty: bool = False) -> tuple[str, str]:
    """(stdout, stderr) of a successful run: piped (in-process, `run_cli`), or through the real
    executable in a pseudo-terminal `columns` wide (TERM=dumb: Rich prints no escapes of its
    own, so any escape in the output is a leak)."""
    if not tty:
        result = run_cli(*args, env={"JOBCTL_DATABASE_URL": url})
        assert result.exit_code == 0, result
        return result.stdout, result.stderr
    env = process_env()
    env.update(JOBCTL_DATABASE_URL=url)
    env.update(TERM="dumb", LINES="50", COLUMNS=str(columns or 80))
    env.pop("NO_COLOR", None)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns or 80, 0, 0))
    process = subprocess.Popen([JOBCTL, *args], env=env, stdin=subprocess.DEVNULL,
                               stdout=terminal, stderr=subprocess.PIPE)
    os.close(terminal)
    data = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            data += chunk
        assert process.wait(timeout=30) == 0, data
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    stderr = process.stderr.read().decode()
    process.stderr.close()
    return data.decode().replace("\r\n", "\n"), stderr


def emitted(url: str, *args: str) -> Any:
    return json.loads(jobctl(url, *args, "-o", "json")[0])


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    folder = tmp_path_factory.mktemp("hostile")
    data = Seeded(f"sqlite:///{folder / 'jobctl.db'}")
    database = open_or_create(data.url)
    try:
        with database.write() as connection:
            plain_worker = worker_rows.register(
                connection, name="vm.6362", hostname="vm", pid=6362,
                queues=["default"], concurrency=1, version="test")
            evil_worker = worker_rows.register(
                connection, name=EVIL, hostname=LONG_HOST + "\x1b[2J", pid=1234567,
                queues=["default", EVIL_QUEUE], concurrency=16, version="test")
        specs = {
            "evil": JobSpec(argv=["sh", "-c", "echo hi\x1b[2J" + EVIL], name=EVIL,
                            queue=EVIL_QUEUE, labels={"k": EVIL}, env={"E": EVIL},
                            cwd="/tmp/\x1b[2J"),
            "long": JobSpec(argv=LONG_COMMAND, name=LONG_NAME, queue="batch"),
            "failed": JobSpec(argv=["false"], name="failed\x1b[31m"),
            "running": JobSpec(argv=["sleep", "1000"], name="runs\x9bhere"),
        }
        for key, spec in specs.items():
            with database.write() as connection:
                data.ids[key], _ = jobs.submit(connection, spec)
        for key, worker in (("failed", evil_worker), ("running", plain_worker)):
            with database.write() as connection:
                [claimed] = queue.claim(connection, worker,
                                        queue.Claim(["default"], 1, 600.0))
                assert claimed.id == data.ids[key]
        with database.write() as connection:
            queue.write_output(connection, [
                OutputChunk(data.ids["failed"], 1, "stdout", 0, LOG)])
            assert queue.complete(connection, evil_worker, [Outcome(
                job_id=data.ids["failed"], attempt=1, state=JobState.FAILED,
                attempt_outcome="failed", exit_code=3, signal=None, error=ERROR)]) == {
                data.ids["failed"]}
    finally:
        database.close()
    env_url = data.url
    jobctl(env_url, "schedule", "add", EVIL, "--every", "1h", "--queue", EVIL_QUEUE, "--shell",
           "pg_dump db | gzip > /backup/db.gz" + EVIL)
    jobctl(env_url, "schedule", "add", "long", "--cron", "0 0,6,12,18 * * MON-FRI", "--tz",
           "America/Argentina/Buenos_Aires", "--", *LONG_COMMAND)
    data.ids["triggered"] = int(jobctl(env_url, "schedule", "trigger", EVIL)[0])
    workflow = folder / "evil.toml"
    workflow.write_text('[workflow]\nname = "wf\\u001b]0;PWNED\\u0007\\u009b2J\\n\\t[b]x[/b]"\n'
                        '[tasks.build]\ncommand = "echo \\u001b[2J"\n'
                        '[tasks.test]\ncommand = "printf x"\nneeds = ["build"]\n')
    data.ids["workflow"] = int(jobctl(env_url, "workflow", "run", str(workflow))[0])
    yield data


@pytest.fixture(scope="module")
def listings(seeded: Seeded) -> dict[str, tuple[list[str], int]]:
    """Each listing with one table: its arguments, and how many rows its table has."""
    url = seeded.url
    failed = str(seeded.ids["failed"])
    workflow = str(seeded.ids["workflow"])
    return {
        "job list": (["job", "list"], len(emitted(url, "job", "list"))),
        "job status": (["job", "status", failed],
                       len(emitted(url, "job", "status", failed)["attempts"])),
        "worker list": (["worker", "list"], len(emitted(url, "worker", "list"))),
        "schedule list": (["schedule", "list"], len(emitted(url, "schedule", "list"))),
        "schedule show": (["schedule", "show", EVIL],
                          len(emitted(url, "schedule", "show", EVIL)["runs"])),
        "workflow list": (["workflow", "list"], len(emitted(url, "workflow", "list"))),
        "workflow status": (["workflow", "status", workflow],
                            len(emitted(url, "workflow", "status", workflow)["tasks"])),
        "stats": (["stats"], len(emitted(url, "stats")["queues"]) + 1),
    }


LISTINGS = ["job list", "job status", "worker list", "schedule list", "schedule show",
            "workflow list", "workflow status", "stats"]


def table_rows(screen: str) -> list[str]:
    """The rows of the (last) table on the screen: the lines after its header's rule."""
    lines = screen.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("──")]
    assert rules, screen
    rows = []
    for line in lines[rules[-1] + 1:]:
        if not line.strip():
            break
        rows.append(line)
    return rows


INDENT = len("no retry on exit: ")  # where `job status` values start (its longest key)


def fields_of(screen: str) -> dict[str, str]:
    """`key: value` lines, with the lines a long value goes on in (indented under the values)
    joined back: wrapping cuts nothing and adds nothing."""
    fields: dict[str, str] = {}
    key = ""
    for line in screen.splitlines():
        if not line.strip():
            break
        if line.startswith(" " * INDENT):
            fields[key] += line[INDENT:]
        else:
            key, _, _ = line.partition(":")
            fields[key] = line[INDENT:]
    return fields


def assert_no_controls(text: str, where: str) -> None:
    leaked = RAW_CONTROLS.search(text)
    assert leaked is None, f"{where}: raw {leaked.group()!r} in {text!r}"


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("listing", LISTINGS)
def test_a_table_on_a_terminal_is_inert_and_one_line_a_row(
        seeded: Seeded, listings: dict[str, tuple[list[str], int]], listing: str,
        columns: int) -> None:
    args, records = listings[listing]
    screen, stderr = jobctl(seeded.url, *args, columns=columns, tty=True)
    assert "\x1b" not in screen, f"an escape reached the terminal: {screen!r}"
    assert_no_controls(screen.replace("\n", ""), listing)
    assert "\t" not in screen
    for line in screen.splitlines():
        assert cell_len(line) <= columns, f"{cell_len(line)} columns: {line!r}"
    assert len(table_rows(screen)) == records, screen
    assert "[bold]x[/bold]" not in stderr


@pytest.mark.parametrize("listing", LISTINGS)
def test_a_plain_row_is_one_line_one_field_a_tab(
        seeded: Seeded, listings: dict[str, tuple[list[str], int]], listing: str) -> None:
    args, records = listings[listing]
    out, _ = jobctl(seeded.url, *args)
    assert_no_controls(out.replace("\n", "").replace("\t", ""), listing)
    lines = out.splitlines()
    if "" in lines:  # key: value fields, a blank line, then the table
        fields = lines[:lines.index("")]
        assert all(re.match(r"[a-z][a-z ]*: ", line) for line in fields), fields
        lines = lines[lines.index("") + 1:]
    header = lines[0].split("\t")
    assert header[0].isupper()
    assert len(lines) == records + 1, out
    for line in lines[1:]:
        assert len(line.split("\t")) == len(header), line


def test_job_list_shows_escapes_in_every_form(seeded: Seeded) -> None:
    url = seeded.url
    evil_id = seeded.ids["evil"]
    out, _ = jobctl(url, "job", "list")
    header, *rows = [line.split("\t") for line in out.splitlines()]
    by_id = {int(row[0]): dict(zip(header, row, strict=True)) for row in rows}
    assert by_id[evil_id]["NAME"] == plain_field(EVIL)
    assert by_id[evil_id]["QUEUE"] == plain_field(EVIL_QUEUE)
    assert by_id[evil_id]["COMMAND"].startswith("sh -c 'echo hi\\x1b[2Jevil\\x1b]0;PWNED\\x07")
    assert plain_field("a\\b\tc\nd") == "a\\\\b\\tc\\nd"  # a backslash is doubled in plain
    wide, _ = jobctl(url, "job", "list", "-o", "wide", columns=80, tty=True)
    assert visible(EVIL) in wide
    assert "evil\\x1b]0;PWNED\\x07\\x1b[31mred\\x9b2J\\x1b[2J\\x7f\\x08\\ttab\\nline\\rcr" \
           "\\u202erlo\\u2028sep[bold]x[/bold]" in wide
    # JSON: the values exactly, and the raw text holds no control character either.
    raw, _ = jobctl(url, "job", "list", "-o", "json")
    assert_no_controls(raw.replace("\n", ""), "json")
    listed = {job["id"]: job for job in json.loads(raw)}
    assert listed[evil_id]["name"] == EVIL
    assert listed[evil_id]["labels"] == {"k": EVIL}
    assert listed[evil_id]["argv"][2].endswith(EVIL)


def test_job_status_escapes_every_field(seeded: Seeded) -> None:
    url = seeded.url
    evil = str(seeded.ids["evil"])
    screen, _ = jobctl(url, "job", "status", evil, columns=80, tty=True)
    assert "\x1b" not in screen
    fields = fields_of(screen)
    assert fields["name"] == visible(EVIL)
    assert fields["queue"] == visible(EVIL_QUEUE)
    assert fields["cwd"] == "/tmp/\\x1b[2J"
    assert fields["env"] == "E=" + visible(EVIL)
    assert fields["labels"] == "k=" + visible(EVIL)
    assert fields["command"] == visible("sh -c 'echo hi\x1b[2J" + EVIL + "'")
    for line in screen.splitlines():
        assert cell_len(line) <= 80, line
    assert any(line.startswith(" " * INDENT) for line in screen.splitlines())  # wrapped
    plain, _ = jobctl(url, "job", "status", evil)
    piped = fields_of(plain)
    assert piped["name"] == plain_field(EVIL)
    assert piped["labels"] == "k=" + plain_field(EVIL)
    failed, _ = jobctl(url, "job", "status", str(seeded.ids["failed"]), "-o", "wide",
                       columns=80, tty=True)
    assert re.search(r"^error: +" + re.escape(visible(ERROR)) + "$", failed, re.MULTILINE)
    assert visible(EVIL) in table_rows(failed)[0]  # the worker, and the error, whole
    assert visible(ERROR) in table_rows(failed)[0]


def test_a_table_at_80_columns_cuts_free_text_never_ids_states_or_ages(seeded: Seeded) -> None:
    url = seeded.url
    listed = {job["id"]: job for job in emitted(url, "job", "list")}
    screen, _ = jobctl(url, "job", "list", columns=80, tty=True)
    rows = table_rows(screen)
    assert len(rows) == len(listed)
    for row in rows:
        job = listed[int(row.split()[0])]
        assert re.search(rf"  {job['state']}  ", row), row
        assert re.search(r"  [0-9][0-9a-z]* ago  ", row), row
    long_row = next(row for row in rows if int(row.split()[0]) == seeded.ids["long"])
    assert "…" in long_row and LONG_NAME not in long_row and LONG_NAME[:5] in long_row
    wide, _ = jobctl(url, "job", "list", "-o", "wide", columns=80, tty=True)
    assert LONG_NAME in wide and " ".join(LONG_COMMAND) in wide and "…" not in wide
    # The worker list of the issue: values cut with …, never split over two lines.
    workers, _ = jobctl(url, "worker", "list", columns=80, tty=True)
    rows = table_rows(workers)
    assert len(rows) == 2
    plain_row = next(row for row in rows if "vm.6362" in row)
    assert plain_row.split()[1:4] == ["vm.6362", "vm", "6362"]
    assert "default" in plain_row and "1/1" in plain_row  # it runs the "running" job
    evil_row = next(row for row in rows if row is not plain_row)
    assert "1234567" in evil_row and "0/16" in evil_row and "…" in evil_row
    wide, _ = jobctl(url, "worker", "list", "-o", "wide", columns=80, tty=True)
    assert LONG_HOST + "\\x1b[2J" in wide and visible(EVIL) in wide


@pytest.mark.parametrize("columns", [80, 100])
def test_top_once_on_a_terminal(seeded: Seeded, columns: int) -> None:
    screen, _ = jobctl(seeded.url, "top", "--once", columns=columns, tty=True)
    assert "\x1b" not in screen
    assert_no_controls(screen.replace("\n", ""), "top")
    for line in screen.splitlines():
        assert cell_len(line) <= columns, line
    sections = ["Queues", "Workers", "Running jobs (1)", "Recent failures"]
    assert all(any(line.startswith(title) for line in screen.splitlines())
               for title in sections), screen
    piped, _ = jobctl(seeded.url, "top", "--once")
    assert visible(EVIL) in piped and visible(ERROR) in piped  # worker's name, failure's error


def test_schedule_and_workflow_names_in_messages_are_escaped(seeded: Seeded,
                                                              tmp_path: Path) -> None:
    _, stderr = jobctl(seeded.url, "schedule", "pause", EVIL)
    assert stderr == f"schedule {visible(EVIL)} paused\n"
    _, stderr = jobctl(seeded.url, "schedule", "resume", EVIL)
    assert_no_controls(stderr.rstrip("\n"), "schedule resume")
    screen, _ = jobctl(seeded.url, "workflow", "status", str(seeded.ids["workflow"]),
                       columns=80, tty=True)
    assert screen.startswith(f"workflow {seeded.ids['workflow']} (wf\\x1b]0;PWNED\\x07\\x9b2J"
                             "\\n\\t[b]x[/b]): ")


def test_an_error_naming_hostile_text_is_one_inert_line(seeded: Seeded, tmp_path: Path) -> None:
    workflow = tmp_path / "bad.toml"
    workflow.write_text('[tasks."b\\u001b[2Jx"]\ncommand = "true"\n')
    result = run_cli("workflow", "run", str(workflow), env={"JOBCTL_DATABASE_URL": seeded.url})
    assert result.returncode == 2
    assert "\x1b" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "b\\x1b[2Jx" in result.stderr


def test_job_logs_stay_byte_for_byte(seeded: Seeded) -> None:
    result = run_cli("job", "logs", str(seeded.ids["failed"]),
                     env={"JOBCTL_DATABASE_URL": seeded.url})
    assert result.returncode == 0, result
    assert result.stdout_bytes == LOG
