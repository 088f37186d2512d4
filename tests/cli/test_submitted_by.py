"""`submitted_by` in the CLI: `job status` (a "submitted by" row, and its JSON), `job list -o
json`, `job list --mine` and `--submitted-by NAME`, and the two together refused (exit 2, one
line). Run in-process (jobctl.cli.app.run) on both backends."""

from __future__ import annotations

import json
import re

import pytest

from jobctl.cli.app import run
from jobctl.store.direct import open_or_create
from jobctl.store.identity import unix_user


def cli(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(["--database-url", url, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def me(url: str) -> str:
    """Whom the database names for this process: its session's role, or the Unix user."""
    if not url.startswith("postgresql"):
        return unix_user()
    database = open_or_create(url)
    try:
        with database.read() as conn:
            return str(conn.scalar("SELECT session_user"))
    finally:
        database.close()


def test_status_and_list_show_who_submitted(db_url: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    name = me(db_url)
    code, out, _ = cli(capsys, db_url, "job", "submit", "--", "true")
    assert code == 0
    job_id = int(out)
    _, out, _ = cli(capsys, db_url, "job", "status", str(job_id))
    fields = dict(re.split(r":\s*", line, maxsplit=1) for line in out.splitlines()
                  if re.match(r"[a-z ]+:", line))
    assert fields["submitted by"] == name
    _, out, _ = cli(capsys, db_url, "job", "status", str(job_id), "-o", "json")
    assert json.loads(out)["submitted_by"] == name
    _, out, _ = cli(capsys, db_url, "job", "list", "-o", "json")
    assert [job["submitted_by"] for job in json.loads(out)] == [name]


def test_list_mine_and_submitted_by(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    name = me(db_url)
    _, out, _ = cli(capsys, db_url, "job", "submit", "--", "true")
    job_id = int(out)

    def ids(*args: str) -> list[int]:
        code, out, err = cli(capsys, db_url, "job", "list", "-o", "ids", *args)
        assert code == 0 and err == ""
        return [int(line) for line in out.splitlines()]

    assert ids("--mine") == [job_id]
    assert ids("--submitted-by", name) == [job_id]
    assert ids("--submitted-by", name.upper() + "-someone-else") == []


@pytest.mark.parametrize("args", [["--mine", "--submitted-by", "x"],
                                  ["--array", "1", "--mine"],
                                  ["--array", "1", "--submitted-by", "x"]])
def test_mine_with_submitted_by_is_refused(sqlite_url: str, args: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, sqlite_url, "job", "list", *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
