"""A job's standard input (`--input`, a schedule's template, a workflow task's `input`) and its
Unix user (`--user`), through the real CLI and a real worker, on both backends."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import FAST_WORKER_OPTIONS, JOBCTL, Jobctl, describe

from jobctl.models import MAX_INPUT_BYTES

EVERY_BYTE = bytes(range(256))
# Exactly the most a job may carry, every byte value (NUL included) in it many times over.
LARGEST = EVERY_BYTE * (MAX_INPUT_BYTES // 256)


def logs(jobctl: Jobctl, job_id: int) -> bytes:
    """The job's output as `job logs` writes it, read in this process (Jobctl.in_process):
    the subject here is what reached the job; tests/e2e/test_e2e_logs.py reads real pipes."""
    result = jobctl.in_process("job", "logs", str(job_id))
    assert result.returncode == 0, result
    return result.stdout_bytes


def test_input_reaches_stdin_byte_for_byte(jobctl: Jobctl, tmp_path: Path) -> None:
    largest = tmp_path / "largest.bin"
    largest.write_bytes(LARGEST)
    from_file = jobctl.submit("--input", str(largest), "--", "cat")
    piped = jobctl.run_bytes("job", "submit", "--input", "-", "--", "cat", input=EVERY_BYTE)
    assert piped.returncode == 0, describe(piped)
    from_stdin = int(piped.stdout)
    # No --input: /dev/null, so a command that reads its stdin gets EOF at once.
    no_input = jobctl.submit("--timeout", "20s", "--shell",
                             "readlink /proc/self/fd/0; cat; echo eof")
    # A command that never reads its input (more than a pipe holds) ends normally.
    unread = jobctl.submit("--input", str(largest), "--timeout", "20s", "--", "true")
    # Bulk submit (COPY on PostgreSQL): every job gets the same input.
    (tmp_path / "commands.txt").write_text("cat\nwc -c\n")
    bulk = [int(line) for line in jobctl.ok("job", "submit", "--from-file",
                                            str(tmp_path / "commands.txt"), "--input",
                                            str(largest)).split()]
    # A schedule keeps the input in its template; trigger makes an occurrence now.
    (tmp_path / "small.bin").write_bytes(EVERY_BYTE * 3)
    jobctl.ok("schedule", "add", "feed", "--every", "1h", "--input", str(tmp_path / "small.bin"),
              "--max-lost", "2", "--", "cat")
    scheduled = int(jobctl.ok("schedule", "trigger", "feed"))
    # A workflow task's input is text, as UTF-8 (without NUL: it is kept in JSON).
    (tmp_path / "flow.toml").write_text(
        '[workflow]\nmax_lost = 4\n[tasks.echo]\ncommand = "cat"\n'
        'input = "h\\u00e9llo \\u0001\\t w\\u00f6rld\\n"\n')
    workflow_id = int(jobctl.ok("workflow", "run", str(tmp_path / "flow.toml")))
    [task] = json.loads(jobctl.look("workflow", "status", str(workflow_id), "-o", "json"))["tasks"]

    jobctl.burst("--concurrency", "4")

    assert logs(jobctl, from_file) == LARGEST
    assert logs(jobctl, from_stdin) == EVERY_BYTE
    assert logs(jobctl, no_input) == b"/dev/null\neof\n"
    assert logs(jobctl, bulk[0]) == LARGEST
    assert logs(jobctl, bulk[1]).strip() == str(MAX_INPUT_BYTES).encode()
    assert logs(jobctl, scheduled) == EVERY_BYTE * 3
    assert logs(jobctl, task["job_id"]) == "héllo \x01\t wörld\n".encode()
    jobs = {job["id"]: job for job in json.loads(jobctl.look("job", "list", "--limit", "0",
                                                          "-o", "json"))}
    assert len(jobs) == 8
    for job in jobs.values():
        assert (job["state"], job["exit_code"]) == ("succeeded", 0), job
    expected = {from_file: (MAX_INPUT_BYTES, 3), from_stdin: (256, 3), no_input: (None, 3),
                unread: (MAX_INPUT_BYTES, 3),
                scheduled: (768, 2), task["job_id"]: (len("héllo \x01\t wörld\n".encode()), 4)}
    for job_id, (size, max_lost) in expected.items():
        job = jobs[job_id]
        assert (job["input_bytes"], job["max_lost"], job["losses"]) == (size, max_lost, 0), job
    assert jobs[scheduled]["schedule"] == "feed"
    table = jobctl.look("job", "status", str(from_stdin))
    assert "input:" in table and "256 bytes" in table, table


def test_input_beyond_one_mib_submits_nothing(jobctl: Jobctl, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(LARGEST + b"x")
    for args, stdin in [(("job", "submit", "--input", str(big), "--", "cat"), None),
                        (("job", "submit", "--input", "-", "--", "cat"), LARGEST + b"x"),
                        (("job", "submit", "--from-file", "-", "--input", str(big)), b"cat\n"),
                        (("schedule", "add", "big", "--every", "1h", "--input", str(big), "--",
                          "cat"), None)]:
        result = jobctl(*args, input=stdin)
        assert result.returncode == 2, describe(result)
        assert result.stderr.count("\n") == 1 and "more than 1 MiB" in result.stderr, result.stderr
    assert json.loads(jobctl.look("job", "list", "-o", "json")) == []
    assert json.loads(jobctl.look("schedule", "list", "-o", "json")) == []


# --- --user ------------------------------------------------------------------------------------


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@pytest.fixture
def unix_user() -> Iterator[tuple[str, str]]:
    """A Unix user of this test's own, with a home and a supplementary group; removed after."""
    if os.geteuid() != 0:
        pytest.skip("running jobs as another user needs a root worker; this test is not root")
    if not (shutil.which("useradd") and shutil.which("groupadd")):
        pytest.skip("useradd/groupadd not installed")
    suffix = uuid.uuid4().hex[:8]
    name, group = f"jt{suffix}", f"jtg{suffix}"
    _run("groupadd", group)
    try:
        _run("useradd", "--create-home", "--groups", group, "--shell", "/bin/sh", name)
        try:
            yield name, group
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                _run("userdel", "-r", name)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _run("groupdel", group)


def test_a_job_runs_as_its_user(jobctl: Jobctl, tmp_path: Path,
                                unix_user: tuple[str, str]) -> None:
    import grp
    import pwd

    name, group = unix_user
    entry = pwd.getpwnam(name)
    report = 'id -u; id -G; echo "$HOME|$USER|$LOGNAME|$SHELL"; pwd; cat'
    piped = jobctl.run_bytes("job", "submit", "--user", name, "--input", "-", "--shell", report,
                             input=b"fed\x00\n")
    assert piped.returncode == 0, describe(piped)
    runs_as = int(piped.stdout)
    in_root = jobctl.submit("--user", name, "--cwd", "/", "--", "pwd")
    locked_out = jobctl.submit("--user", name, "--cwd", str(tmp_path), "--", "pwd")
    unknown = jobctl.submit("--user", f"nobody{uuid.uuid4().hex[:8]}", "--", "true")
    overridden = jobctl.submit("--user", name, "--env", "HOME=/elsewhere", "--shell",
                               'echo "$HOME"')
    # The worker runs in this test's directory (mode 700, root's): the user cannot enter it,
    # so jobs without --cwd start in the user's home.
    assert os.stat(tmp_path).st_mode & 0o077 == 0
    worker = subprocess.run([str(JOBCTL), "worker", "start", "--burst", *FAST_WORKER_OPTIONS],
                            cwd=tmp_path, env=jobctl.env, capture_output=True, timeout=120,
                            check=False)
    assert worker.returncode == 0, describe(worker)

    lines = logs(jobctl, runs_as).split(b"\n")
    assert lines[0] == str(entry.pw_uid).encode()
    groups = {int(g) for g in lines[1].split()}
    assert groups == {entry.pw_gid, grp.getgrnam(group).gr_gid}
    assert lines[2] == f"{entry.pw_dir}|{name}|{name}|/bin/sh".encode()
    assert lines[3] == entry.pw_dir.encode()
    assert b"\n".join(lines[4:]) == b"fed\x00\n"
    assert jobctl.status(runs_as)["user"] == name
    assert logs(jobctl, in_root) == b"/\n"
    assert logs(jobctl, overridden) == b"/elsewhere\n"

    failed = jobctl.status(locked_out)
    assert (failed["state"], failed["exit_code"]) == ("failed", 125)
    assert failed["error"] == f"user {name!r} cannot enter working directory {tmp_path}"
    status = jobctl.status(unknown)
    assert (status["state"], status["exit_code"]) == ("failed", 125)
    assert status["error"] == f"no such user {status['user']!r} on this worker"
    stderr = jobctl.run_bytes("job", "logs", str(unknown)).stderr
    assert stderr == f"jobctl: no such user {status['user']!r} on this worker\n".encode()
    waited = jobctl("job", "wait", str(unknown))
    assert waited.returncode == 125, describe(waited)
