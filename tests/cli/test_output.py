"""The output contract with stdout piped (and once on a terminal): bare ids, tab-separated tables
with a header, JSON with ISO 8601 UTC times, filters, and job names that look like Rich markup
printed as they are. Run in-process (`run_cli`); the terminal, `--version`, help and import
probes through the real `jobctl` executable."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import click
import pytest
from inprocess import JOBCTL, jobctl, process_env, run_cli

from jobctl import __version__
from jobctl.cli.app import COMMANDS, load_command, root_group, run
from jobctl.models import JobSpec, JobState
from jobctl.store import jobs, queue
from jobctl.store import workers as worker_rows
from jobctl.store.direct import open_or_create
from jobctl.store.queue import Outcome

WORKER_ID = os.environ.get("PYTEST_XDIST_WORKER", "main")
MARKUP = "[bold]x[/bold]"
HEADER = ["ID", "NAME", "QUEUE", "STATE", "ATTEMPT", "EXIT", "CREATED", "DURATION", "COMMAND"]



# --- a database with jobs in every interesting state ---------------------------------------------


@dataclass(frozen=True)
class Jobs:
    url: str
    ids: dict[str, int]  # by name

    def __getitem__(self, name: str) -> int:
        return self.ids[name]

    @property
    def all(self) -> set[int]:
        return set(self.ids.values())


# name, queue, labels, how it ends (None: stays queued)
SEEDS: list[tuple[str, str, dict[str, str], JobState | None]] = [
    ("build-linux", "default", {"team": "a"}, JobState.SUCCEEDED),
    ("build-mac", "mac", {"team": "b"}, None),
    ("test-linux", "default", {"team": "a", "env": "ci"}, JobState.CANCELLED),
    ("deploy", "default", {"team": "a"}, JobState.FAILED),
    (MARKUP, "default", {}, None),  # queued: after every job the seeding claims from `default`
    ("a_c", "other", {}, None),  # `_` and `%` in a name pattern are not wildcards
    ("abc", "other", {}, None),
    ("100%", "other", {}, None),
]


def seed(url: str) -> Jobs:
    database = open_or_create(url)
    ids: dict[str, int] = {}
    try:
        with database.write() as connection:
            worker = worker_rows.register(connection, name="w", hostname="h", pid=1,
                                          queues=["default"], concurrency=1, version="test")
        for name, queue_name, labels, end in SEEDS:
            spec = JobSpec(argv=["echo", f"[red]{name}[/red]"], name=name, queue=queue_name,
                           labels=labels)
            with database.write() as connection:
                job_id, _ = jobs.submit(connection, spec)
            ids[name] = job_id
            if end is JobState.CANCELLED:
                with database.write() as connection:
                    jobs.cancel(connection, job_id)
            elif end is not None:
                with database.write() as connection:
                    [claimed] = queue.claim(connection, worker,
                                            queue.Claim([queue_name], 1, 60.0))
                    assert claimed.id == job_id
                code = 0 if end is JobState.SUCCEEDED else 3
                with database.write() as connection:
                    assert queue.complete(connection, worker, [Outcome(
                        job_id=job_id, attempt=1, state=end, attempt_outcome=end.value,
                        exit_code=code, signal=None, error=None)]) == {job_id}
    finally:
        database.close()
    return Jobs(url, ids)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Jobs]:
    """Read-only for the tests that use it, so one per backend serves the whole module."""
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("output")
        yield seed(f"sqlite:///{folder / 'jobctl.db'}")
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = f"jobctl_output_{WORKER_ID}_{uuid.uuid4().hex[:10]}".lower()
    url = cluster.create_database(name, template=request.getfixturevalue("pg_template"))
    try:
        yield seed(url)
    finally:
        cluster.drop_database(name)


def listed_ids(url: str, *args: str) -> list[int]:
    out = jobctl(url, "job", "list", "-o", "ids", *args).stdout
    return [int(line) for line in out.splitlines()]


def assert_utc_iso(text: str | None, field: str) -> datetime:
    assert isinstance(text, str), f"{field}: {text!r}"
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() == timedelta(0), f"{field} carries no UTC offset: {text!r}"
    return parsed


# --- submit ---------------------------------------------------------------------------------------


def test_submit_prints_a_bare_id(db_url: str) -> None:
    result = jobctl(db_url, "job", "submit", "--", "echo", "hi")
    assert re.fullmatch(r"[0-9]+\n", result.stdout), result.stdout
    job_id = int(result.stdout)
    status = json.loads(jobctl(db_url, "job", "status", str(job_id), "-o", "json").stdout)
    assert status["id"] == job_id
    assert status["argv"] == ["echo", "hi"]
    assert status["state"] == "queued"


def test_submit_from_file_prints_one_bare_id_a_line(db_url: str, tmp_path: Path) -> None:
    commands = tmp_path / "commands.txt"
    commands.write_text("echo one\n# a comment\n\necho two\necho three\n")
    out = jobctl(db_url, "job", "submit", "--from-file", str(commands)).stdout
    ids = [int(line) for line in out.splitlines()]
    assert len(ids) == 3 and ids == sorted(ids)
    listed = json.loads(jobctl(db_url, "job", "list", "-o", "json").stdout)
    assert {job["id"]: job["argv"][-1] for job in listed} == dict(
        zip(ids, ["echo one", "echo two", "echo three"], strict=True))


def test_unique_key_twice_returns_the_same_id(db_url: str) -> None:
    first = jobctl(db_url, "job", "submit", "--unique-key", "nightly", "--", "true")
    second = jobctl(db_url, "job", "submit", "--unique-key", "nightly", "--", "echo", "other")
    assert re.fullmatch(r"[0-9]+\n", second.stdout)
    assert first.stdout == second.stdout
    assert listed_ids(db_url) == [int(first.stdout)]
    other = jobctl(db_url, "job", "submit", "--unique-key", "weekly", "--", "true")
    assert other.stdout != first.stdout


# --- list -----------------------------------------------------------------------------------------


def test_list_piped_is_tab_separated_with_a_header(seeded: Jobs) -> None:
    lines = jobctl(seeded.url, "job", "list").stdout.splitlines()
    assert lines[0].split("\t") == HEADER
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == len(seeded.ids)
    assert all(len(row) == len(HEADER) for row in rows), rows
    by_id = {int(row[0]): dict(zip(HEADER, row, strict=True)) for row in rows}
    assert set(by_id) == seeded.all
    done = by_id[seeded["build-linux"]]
    assert done["STATE"] == "succeeded" and done["EXIT"] == "0" and done["ATTEMPT"] == "1"
    assert_utc_iso(done["CREATED"], "CREATED")
    assert by_id[seeded[MARKUP]]["NAME"] == MARKUP
    assert by_id[seeded["build-mac"]]["QUEUE"] == "mac"


def test_list_plain_is_the_piped_default(seeded: Jobs) -> None:
    assert (jobctl(seeded.url, "job", "list", "-o", "plain").stdout
            == jobctl(seeded.url, "job", "list").stdout)


def test_list_json(seeded: Jobs) -> None:
    listed = json.loads(jobctl(seeded.url, "job", "list", "-o", "json").stdout)
    assert isinstance(listed, list)
    assert [job["id"] for job in listed] == sorted(seeded.all, reverse=True)
    for job in listed:
        assert_utc_iso(job["created_at"], "created_at")
        assert_utc_iso(job["run_at"], "run_at")
    done = next(job for job in listed if job["id"] == seeded["build-linux"])
    started = assert_utc_iso(done["started_at"], "started_at")
    finished = assert_utc_iso(done["finished_at"], "finished_at")
    assert started <= finished
    assert done["state"] == "succeeded"
    assert done["exit_code"] == 0
    assert done["labels"] == {"team": "a"}
    assert done["argv"] == ["echo", "[red]build-linux[/red]"]
    queued = next(job for job in listed if job["id"] == seeded["build-mac"])
    assert queued["started_at"] is None and queued["finished_at"] is None


def test_list_ids_one_a_line_newest_first(seeded: Jobs) -> None:
    out = jobctl(seeded.url, "job", "list", "-o", "ids").stdout
    assert re.fullmatch(r"([0-9]+\n)+", out), out
    assert [int(line) for line in out.splitlines()] == sorted(seeded.all, reverse=True)


def listed_in_process(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> list[int]:
    """`job list -o ids` run in this process: the filters are the point, not the executable."""
    capsys.readouterr()
    assert run(["--database-url", url, "job", "list", "-o", "ids", *args]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return [int(line) for line in captured.out.splitlines()]


def test_list_filters(seeded: Jobs, capsys: pytest.CaptureFixture[str]) -> None:
    j = seeded

    def ids(*args: str) -> set[int]:
        found = listed_in_process(capsys, seeded.url, *args)
        assert found == sorted(found, reverse=True), "not newest first"
        return set(found)

    queued = {j["build-mac"], j[MARKUP], j["a_c"], j["abc"], j["100%"]}
    assert ids("--state", "queued") == queued
    assert ids("--state", "queued", "--state", "succeeded") == queued | {j["build-linux"]}
    assert ids("--state", "failed") == {j["deploy"]}
    assert ids("--state", "cancelled") == {j["test-linux"]}
    assert ids("--state", "running") == set()
    assert ids("--queue", "mac") == {j["build-mac"]}
    assert ids("--queue", "mac", "--queue", "other") == {j["build-mac"], j["a_c"], j["abc"],
                                                         j["100%"]}
    assert ids("--queue", "nope") == set()
    assert ids("--name", "build-linux") == {j["build-linux"]}
    assert ids("--name", "build-*") == {j["build-linux"], j["build-mac"]}
    assert ids("--name", "*linux") == {j["build-linux"], j["test-linux"]}
    assert ids("--name", "build?linux") == {j["build-linux"]}
    assert ids("--name", "a_c") == {j["a_c"]}
    assert ids("--name", "a_*") == {j["a_c"]}
    assert ids("--name", "100%") == {j["100%"]}
    assert ids("--name", "1%") == set()
    assert ids("--name", MARKUP) == {j[MARKUP]}
    assert ids("--label", "team=a") == {j["build-linux"], j["test-linux"], j["deploy"]}
    assert ids("--label", "team=a", "--label", "env=ci") == {j["test-linux"]}
    assert ids("--label", "team=c") == set()
    assert ids("--state", "queued", "--queue", "default") == {j[MARKUP]}


def test_list_limit(seeded: Jobs, capsys: pytest.CaptureFixture[str]) -> None:
    newest = sorted(seeded.all, reverse=True)

    def ids(*args: str) -> list[int]:
        return listed_in_process(capsys, seeded.url, *args)

    assert listed_ids(seeded.url, "--limit", "2") == newest[:2]  # once through the executable
    assert ids("--limit", "1", "--queue", "default") == [seeded[MARKUP]]
    assert ids("--limit", "1", "--state", "failed") == [seeded["deploy"]]
    assert ids("--limit", "0") == newest  # 0: all
    assert ids("--limit", str(len(newest) + 5)) == newest


def test_empty_result_is_not_an_error(db_url: str) -> None:
    result = jobctl(db_url, "job", "list", "-o", "json")
    assert json.loads(result.stdout) == []
    assert jobctl(db_url, "job", "list", "-o", "ids").stdout == ""
    assert jobctl(db_url, "job", "list").stdout.splitlines() == ["\t".join(HEADER)]


# --- status ---------------------------------------------------------------------------------------


def test_status_json_includes_attempts(seeded: Jobs) -> None:
    done = json.loads(jobctl(seeded.url, "job", "status", str(seeded["deploy"]),
                             "-o", "json").stdout)
    assert done["id"] == seeded["deploy"]
    assert done["state"] == "failed"
    assert done["exit_code"] == 3
    [attempt] = done["attempts"]
    assert attempt["attempt"] == 1
    assert attempt["outcome"] == "failed"
    assert attempt["exit_code"] == 3
    assert attempt["worker_name"] == "w"
    assert (assert_utc_iso(attempt["started_at"], "started_at")
            <= assert_utc_iso(attempt["finished_at"], "finished_at"))
    queued = json.loads(jobctl(seeded.url, "job", "status", str(seeded["build-mac"]),
                               "-o", "json").stdout)
    assert queued["attempts"] == []


def test_status_piped_names_every_field(seeded: Jobs) -> None:
    out = jobctl(seeded.url, "job", "status", str(seeded["build-linux"])).stdout
    fields = dict(re.split(r":\s+", line, maxsplit=1) for line in out.splitlines()
                  if re.match(r"[a-z ]+:\s", line))
    assert fields["state"] == "succeeded"
    assert fields["name"] == "build-linux"
    assert fields["attempts"] == "1 of 1"
    assert "ATTEMPT\tWORKER" in out  # the attempts table, tab-separated when piped


# --- Rich markup in names and commands is text ----------------------------------------------------


def test_markup_in_a_name_is_printed_literally(seeded: Jobs) -> None:
    job_id = str(seeded[MARKUP])
    plain = jobctl(seeded.url, "job", "list", "-o", "plain", "--name", MARKUP).stdout
    assert f"{job_id}\t{MARKUP}\t" in plain
    assert "[red][bold]x[/bold][/red]" in plain
    table = jobctl(seeded.url, "job", "list", "-o", "table").stdout
    assert MARKUP in table
    assert "[red]build-linux[/red]" in table
    status = jobctl(seeded.url, "job", "status", job_id).stdout
    assert MARKUP in status


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a terminal")
def test_markup_in_a_name_is_printed_literally_on_a_terminal(seeded: Jobs) -> None:
    env = process_env()
    env.update(JOBCTL_DATABASE_URL=seeded.url, COLUMNS="250", LINES="50", TERM="xterm",
               NO_COLOR="1")
    command = shlex.join([JOBCTL, "job", "list", "--name", MARKUP])
    result = subprocess.run(["script", "-qec", command, "/dev/null"], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout)
    assert "\t" not in screen  # a table for people, not tab-separated rows
    assert MARKUP in screen, screen
    assert "[red][bold]x[/bold][/red]" in screen, screen


# --- the rest of the contract ---------------------------------------------------------------------


def _command_paths(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        context = click.Context(command)
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            assert sub is not None, name
            yield from _command_paths(sub, (*path, name))


COMMAND_PATHS = list(_command_paths(root_group()))


def test_every_command_is_covered() -> None:
    assert {("job", "submit"), ("job", "list"), ("job", "status"), ("job", "logs"),
            ("job", "cancel"), ("job", "retry"), ("job", "wait"), ("worker", "start"),
            ("worker", "list"), ("db", "upgrade"), ("db", "status")} <= set(COMMAND_PATHS)


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda path: " ".join(path) or "jobctl")
def test_help_of_every_command(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--help", "-h"):
        assert run([*path, flag]) == 0
        captured = capsys.readouterr()
        assert captured.out.startswith("Usage: jobctl"), captured.out
        assert captured.err == ""


def test_help_of_a_command_names_its_options() -> None:
    result = jobctl(None, "job", "submit", "--help")
    assert result.stdout.startswith("Usage: jobctl job submit")
    assert "--unique-key" in result.stdout


def test_root_help_lines_are_the_commands_own() -> None:
    """The root lists its sub-commands from the lazy registry; each line is that module's help."""
    for name, (_, line) in COMMANDS.items():
        command = load_command(name)
        first_paragraph = " ".join((command.help or "").split("\n\n")[0].split())
        assert first_paragraph == line, name


def _shape(command: click.Command) -> object:
    """What a user sees of a command: its name, help, options and, for a group, its commands."""
    params = [(p.name, tuple(getattr(p, "opts", ())), p.required) for p in command.params]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        children = {name: _shape(command.commands[name]) for name in command.list_commands(ctx)}
        return command.name, command.help, params, children
    return command.name, command.help, params


def test_a_lazy_group_builds_a_command_when_used_and_equals_typers_own() -> None:
    """`load_command` builds a group's sub-commands one at a time, on first use; built, the
    whole group is what Typer's get_group makes of the same app, command for command."""
    import importlib

    import typer

    for name, (where, _) in COMMANDS.items():
        module_path, _, function = where.partition(":")
        if function:
            continue
        lazy = load_command(name)
        commands = lazy.commands  # type: ignore[attr-defined]
        assert not commands._built, name  # nothing built yet
        eager = typer.main.get_group(importlib.import_module(module_path).app)
        eager.name = name
        first = next(iter(eager.commands))
        assert commands[first].name == first
        assert list(commands._built) == [first], name  # that one only
        assert _shape(lazy) == _shape(eager), name


def test_a_mistyped_sub_command_is_suggested_once() -> None:
    result = run_cli("job", "lst")
    assert result.exit_code == 2
    assert result.stderr == ("jobctl: error: no such command 'lst'. Did you mean 'list'?"
                             " (see 'jobctl job --help')\n")


PROBE = """
import sys
from jobctl.cli.app import run
code = run(sys.argv[1:])
roots = {m.split(".")[0] for m in sys.modules}
heavy = sorted(roots & {"sqlalchemy", "psycopg", "rich", "alembic"})
loaded = sorted(m for m in sys.modules if m.startswith("jobctl.cli.") and m.count(".") == 2)
sys.stderr.write(f"code={code} heavy={heavy} typer={'typer' in roots} loaded={loaded}\\n")
"""


# The root alone: plain Click and the completion hand-off (stdlib + Click), no Typer.
ROOT_ONLY = ["jobctl.cli.app", "jobctl.cli.complete"]
# What every sub-command loads besides its own module: what they share, and how they print.
BASE = sorted([*ROOT_ONLY, "jobctl.cli.common", "jobctl.cli.render"])


@pytest.mark.parametrize(("args", "code", "typer", "loaded"), [
    pytest.param(*case, id=" ".join(case[0]) or "(no arguments)") for case in [
        (["--help"], 0, False, ROOT_ONLY),
        (["-h"], 0, False, ROOT_ONLY),
        ([], 0, False, ROOT_ONLY),  # the root's help
        (["--debug", "--version"], 0, False, ROOT_ONLY),  # not alone: through Click
        (["jbo"], 2, False, ROOT_ONLY),  # a usage error at the root, with its suggestion
        (["--no-such-option"], 2, False, ROOT_ONLY),
        (["job", "--help"], 0, True, sorted([*BASE, "jobctl.cli.job"])),
        (["worker", "list", "--help"], 0, True, sorted([*BASE, "jobctl.cli.worker"])),
    ]
])
def test_help_imports_only_what_it_shows(args: list[str], code: int, typer: bool,
                                         loaded: list[str]) -> None:
    """`--help` imports neither the database stack nor Rich, nor any other sub-command's module;
    what the root alone answers (its help, its usage errors) does not import Typer either."""
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                            check=True)
    assert f"code={code} heavy=[] typer={typer} loaded={loaded}" in result.stderr, result.stderr


def test_version_is_answered_without_click() -> None:
    probe = ("import sys; sys.argv = ['jobctl', '--version']; from jobctl.cli import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(sorted({'click', 'typer'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert result.stdout == f"jobctl {__version__}\n[]\n"
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+\S*", __version__), __version__
