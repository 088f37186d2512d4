"""Shell completion through each shell's own protocol, as the shells drive it: `_JOBCTL_COMPLETE`
and the words typed so far (COMP_WORDS/COMP_CWORD), answered in-process (`run_cli`) for what
completes, by the real `jobctl` executable where the process decides (the time limit, which counts
from the process's start, and what start-up imports), and once through bash itself with the
generated script. Values come from a real database; an unreachable one yields nothing, silently,
in time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from inprocess import JOBCTL, process_env, run_cli

from jobctl.cli.app import COMMANDS
from jobctl.cli.gendocs import ROOT
from jobctl.models import JobSpec
from jobctl.store import jobs
from jobctl.store import workers as worker_rows
from jobctl.store.direct import open_or_create

# Tests of what completes give the database time even on a loaded machine; the test of the
# time limit itself uses the default.
PATIENT = {"JOBCTL_COMPLETE_TIMEOUT": "30"}


def protocol(shell: str, words: list[str], url: str | None = None) -> dict[str, str]:
    """The environment in which `shell`'s script asks for completions of the last word of
    `words` ("" for a new word)."""
    return {
        "_JOBCTL_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": " ".join(words),
        # bash and zsh pass the index of the word being completed; fish passes the word itself.
        "COMP_CWORD": words[-1] if shell == "fish" else str(len(words) - 1),
        **({} if url is None else {"JOBCTL_DATABASE_URL": url}),
    }


def request(shell: str, words: list[str], url: str | None = None,
            python_flags: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess[str], float]:
    """Ask the real executable, with the default time limit; returns the process and how long
    it took."""
    env = process_env()
    env.update(protocol(shell, words, url))
    command = [sys.executable, *python_flags, JOBCTL] if python_flags else [JOBCTL]
    started = time.monotonic()
    result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=60, check=False)
    return result, time.monotonic() - started


@pytest.fixture(autouse=True)
def _a_fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, the time limit counts from each request, as in a process started for it."""
    monkeypatch.setattr("jobctl.cli.complete._seconds_since_start", lambda: 0.0)


def values(shell: str, words: list[str], url: str | None = None) -> list[tuple[str, str]]:
    """(value, description) pairs from Click's protocol for `shell`, in order (in-process)."""
    result = run_cli(env={**PATIENT, **protocol(shell, words, url)})
    assert result.returncode == 0, result
    assert result.stderr == "", result.stderr
    out = result.stdout.splitlines()
    if shell == "zsh":  # type, value, description: three lines each ("_" for none)
        return [(out[i + 1], "" if out[i + 2] == "_" else out[i + 2])
                for i in range(0, len(out), 3)]
    pairs = []
    for line in out:  # bash: type,value   fish: type,value<TAB>description
        _type, _, rest = line.partition(",")
        value, _, description = rest.partition("\t")
        pairs.append((value, description))
    return pairs


@pytest.fixture
def database(db_url: str) -> Iterator[tuple[str, dict[str, int]]]:
    """Three jobs (one named with a space) and a worker."""
    db = open_or_create(db_url)
    ids: dict[str, int] = {}
    try:
        with db.write() as connection:
            for name in ("build", "deploy prod", "test"):
                ids[name], _ = jobs.submit(connection, JobSpec(argv=["true"], name=name,
                                                               queue=f"q-{name.split()[0]}"))
            worker_rows.register(connection, name="builder-1", hostname="h", pid=1,
                                 queues=["default"], concurrency=1, version="test")
    finally:
        db.close()
    yield db_url, ids


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_a_subcommand(shell: str) -> None:
    found = values(shell, ["jobctl", "job", "st"])
    assert [value for value, _ in found] == ["status"]
    top_level = values(shell, ["jobctl", ""])
    assert [value for value, _ in top_level] == list(COMMANDS)
    assert {"job", "worker", "workflow", "db", "config", "completion"} <= set(COMMANDS)
    if shell != "bash":  # bash shows no descriptions; the others show the command's help
        assert found[0][1].startswith("Everything about one job")
        assert dict(top_level)["job"] == COMMANDS["job"][1]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_an_option(shell: str) -> None:
    assert [value for value, _ in values(shell, ["jobctl", "job", "submit", "--qu"])] == [
        "--queue"]
    formats = values(shell, ["jobctl", "job", "list", "-o", ""])
    assert [value for value, _ in formats] == ["table", "wide", "plain", "json", "ids"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_job_ids_newest_first_with_name_and_state(
        shell: str, database: tuple[str, dict[str, int]]) -> None:
    url, ids = database
    found = values(shell, ["jobctl", "job", "status", ""], url)
    newest_first = sorted(ids.values(), reverse=True)
    assert [value for value, _ in found] == [str(i) for i in newest_first]
    if shell != "bash":
        names = {str(job_id): name for name, job_id in ids.items()}
        assert [description for _, description in found] == [
            f"{names[value]} queued" for value, _ in found]
    # What was typed narrows the ids; several ids complete for `cancel`.
    first = str(ids["build"])
    assert first in [v for v, _ in values(shell, ["jobctl", "job", "cancel", "0", first], url)]


def test_queues_and_workers_from_the_database(database: tuple[str, dict[str, int]]) -> None:
    url, _ = database
    assert [v for v, _ in values("bash", ["jobctl", "job", "list", "--queue", "q-"], url)] == [
        "q-build", "q-deploy", "q-test"]
    assert [v for v, _ in values("fish", ["jobctl", "worker", "stop", "bu"], url)] == [
        "builder-1"]


def test_the_database_named_on_the_command_line_is_used(
        database: tuple[str, dict[str, int]], sqlite_url: str) -> None:
    url, ids = database
    words = ["jobctl", "--database-url", url, "job", "retry", ""]
    assert {v for v, _ in values("bash", words, url=None)} == {str(i) for i in ids.values()}


def on(url: str, *words: str) -> list[str]:
    """Completions of the real `jobctl` for WORDS (bash's protocol) on the database at URL."""
    return [value for value, _ in values("bash", ["jobctl", *words], url)]


def test_the_profile_named_on_the_command_line_is_used(
        database: tuple[str, dict[str, int]]) -> None:
    url, ids = database
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "jobctl" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[profiles.prod]\ndatabase_url = "{url}"\n[profiles.other]\n')
    assert [v for v, _ in values("bash", ["jobctl", "--profile", ""])] == ["other", "prod"]
    words = ["jobctl", "--profile", "prod", "job", "wait", ""]
    assert {v for v, _ in values("zsh", words)} == {str(i) for i in ids.values()}
    assert values("zsh", ["jobctl", "--profile", "nonesuch", "job", "wait", ""]) == []


def test_time_zones_schedules_workflows_and_states(db_url: str) -> None:
    import sqlalchemy as sa

    from jobctl.store.engine import Database
    from jobctl.store.schema import schedules, workflows

    db = Database(db_url)  # set-up rows through the schema's tables
    try:
        now = sa.func.current_timestamp()
        with db.write() as connection:
            for name in ("nightly-backup", "nightly-report", "hourly"):
                connection.execute(schedules.insert().values(
                    name=name, every_s=3600.0, job={"argv": ["true"]}, created_at=now,
                    updated_at=now))
            workflow_ids = [connection.execute(workflows.insert().values(
                name=name, definition={}, params={}, created_at=now, labels={}
            ).returning(workflows.c.id)).scalar_one() for name in ("etl", "release")]
    finally:
        db.dispose()
    assert on(db_url, "schedule", "add", "x", "--tz", "Europe/Pa") == ["Europe/Paris"]
    assert "America/New_York" in on(db_url, "schedule", "edit", "x", "--tz", "America/")
    assert on(db_url, "schedule", "show", "nightly") == ["nightly-backup", "nightly-report"]
    assert on(db_url, "workflow", "status", "") == [
        str(i) for i in sorted(workflow_ids, reverse=True)]
    assert on(db_url, "job", "list", "--state", "s") == ["succeeded", "skipped"]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word: a PostgreSQL client waits
    on it until its own timeout."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


LIBPQ_LEAST_CONNECT_TIMEOUT_S = 2.0


def test_an_unreachable_database_completes_nothing_silently_in_time(silent_server: int,
                                                                    tmp_path: Path) -> None:
    """Judged against the same request to a database that needs no waiting (an absent SQLite
    file) in the same run, so that a loaded machine's slow start-up counts on both sides:
    libpq's connect_timeout (2 s at least) would add its 2 s to one side only."""
    absent = f"sqlite:///{tmp_path / 'absent.db'}"
    url = f"postgresql://jobctl:secret@127.0.0.1:{silent_server}/jobctl"
    for words, expected in ((["jobctl", "job", "status", ""], ""),
                            # Commands still complete while the database does not answer.
                            (["jobctl", "job", "st"], "plain,status\n")):
        baseline = min(request("bash", words, absent)[1] for _ in range(2))
        result, elapsed = request("bash", words, url)
        assert (result.returncode, result.stdout, result.stderr) == (0, expected, "")
        assert elapsed < baseline + LIBPQ_LEAST_CONNECT_TIMEOUT_S - 0.5, (elapsed, baseline)


def test_a_missing_sqlite_file_completes_nothing_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    assert values("zsh", ["jobctl", "job", "logs", ""], f"sqlite:///{path}") == []
    assert not path.exists()


def test_nonsense_gets_no_error() -> None:
    for words in (["jobctl", "--no-such-option", ""], ["jobctl", "job", "status", "--limit", ""]):
        result = run_cli(env=protocol("bash", words))
        assert (result.returncode, result.stderr) == (0, ""), result
    result = run_cli(env={"_JOBCTL_COMPLETE": "tcsh_complete"})
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_commands_and_options_complete_without_sqlalchemy_psycopg_or_rich() -> None:
    result, _ = request("bash", ["jobctl", "job", "submit", "--"],
                        python_flags=("-X", "importtime"))
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "typer" in imported  # the measurement works
    assert not imported & {"sqlalchemy", "psycopg", "rich"}, sorted(imported)


IMPORTS_PROBE = """
import sys
from jobctl.cli.app import run
code = run([])
roots = {m.split(".")[0] for m in sys.modules}
loaded = sorted(m for m in sys.modules if m.startswith("jobctl.cli.") and m.count(".") == 2)
sys.stderr.write(f"code={code} typer={'typer' in roots} loaded={loaded}\\n")
"""


@pytest.mark.parametrize("words", [["jobctl", "j"], ["jobctl", ""], ["jobctl", "--"],
                                   ["jobctl", "--debug", "wor"], ["jobctl", "--profile", ""]],
                         ids=" ".join)
def test_command_names_and_root_options_complete_without_typer(words: list[str]) -> None:
    """The root is plain Click: completing a command name, a root option or a profile name
    imports neither Typer nor any sub-command's module (as `jobctl --help` does not)."""
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "jobctl" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[profiles.prod]\n")
    env = process_env()
    env.update({"_JOBCTL_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(words),
                "COMP_CWORD": str(len(words) - 1)})
    result = subprocess.run([sys.executable, "-c", IMPORTS_PROBE], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout, result  # it did complete something
    assert ("code=0 typer=False loaded=['jobctl.cli.app', 'jobctl.cli.complete']"
            in result.stderr), result.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_printed_script_is_the_checked_in_one(shell: str) -> None:
    env = process_env()
    result = subprocess.run([JOBCTL, "completion", shell], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    name = {"bash": "jobctl.bash", "zsh": "_jobctl", "fish": "jobctl.fish"}[shell]
    assert result.stdout == (ROOT / "completions" / name).read_text()
    assert "_JOBCTL_COMPLETE" in result.stdout


def test_bash_itself_completes_through_the_script(database: tuple[str, dict[str, int]]) -> None:
    """bash sources the checked-in script and calls its function as Tab would."""
    url, ids = database
    script = ROOT / "completions" / "jobctl.bash"
    program = (f"source {script}; COMP_WORDS=(jobctl job status ''); COMP_CWORD=3; "
               "_jobctl_completion jobctl; printf '%s\\n' \"${COMPREPLY[@]}\"")
    env = process_env()
    env["PATH"] = f"{Path(JOBCTL).parent}:{env['PATH']}"
    env["JOBCTL_DATABASE_URL"] = url
    env.update(PATIENT)
    result = subprocess.run(["bash", "--norc", "-c", program], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result
    assert result.stdout.split() == [str(i) for i in sorted(ids.values(), reverse=True)]


def test_check_names(db_url: str) -> None:
    from jobctl.client import Client

    client = Client(db_url)
    try:
        for name in ("nightly-sync", "nightly-dump", "hourly"):
            client.add_check(name, every_s=3600.0)
    finally:
        client.close()
    assert on(db_url, "check", "ping", "nightly") == ["nightly-dump", "nightly-sync"]
    assert on(db_url, "check", "show", "") == ["hourly", "nightly-dump", "nightly-sync"]
