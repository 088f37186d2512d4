"""A job's standard input, Unix user and max_lost, without a database: the checks every road in
(CLI flags, workflow keys, JobSpec through the Client) makes, and JobProcess feeding the bytes
to a real command's stdin."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import pytest

from jobctl.cli.common import read_input, run_fields
from jobctl.client import _validate
from jobctl.errors import InvalidInput
from jobctl.models import DEFAULT_MAX_LOST, MAX_INPUT_BYTES, JobSpec, user_name_problem
from jobctl.store.queue import ClaimedJob
from jobctl.worker.process import JobProcess, ProcessResult, RunAs
from jobctl.workflow import job_specs, load

EVERY_BYTE = bytes(range(256))


# --- user names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "www-data", "svc.backup", "_apt", "Bob", "a1", "x$"])
def test_user_names_that_may_be_given(name: str) -> None:
    assert user_name_problem(name) is None


@pytest.mark.parametrize(("name", "says"), [
    ("", "empty"), ("1000", "uid"), ("-x", "start with -"), ("a b", "blanks"),
    ("a:b", ":"), ("a/b", "/"), ("a\nb", "control"), ("a\x00b", "control"), ("x" * 257, "256"),
])
def test_user_names_that_may_not(name: str, says: str) -> None:
    problem = user_name_problem(name)
    assert problem is not None and says in problem


# --- the Client's check of a JobSpec --------------------------------------------------------------


@pytest.mark.parametrize(("changes", "says"), [
    ({"max_lost": 0}, "max_lost must be between 1 and"),
    ({"max_lost": -1}, "max_lost must be between 1 and"),
    ({"max_lost": 2**31}, "max_lost must be between 1 and"),
    ({"input": b"x" * (MAX_INPUT_BYTES + 1)}, f"at most {MAX_INPUT_BYTES} bytes"),
    ({"input": "text"}, "must be bytes"),
    ({"user": ""}, "invalid user ''"),
    ({"user": "a b"}, "invalid user 'a b'"),
])
def test_the_client_refuses(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        _validate(JobSpec(argv=["cat"], **changes))
    assert says in caught.value.message
    assert "--" not in caught.value.message  # worded after JobSpec's fields, not the CLI's flags


def test_the_client_takes_the_limits() -> None:
    _validate(JobSpec(argv=["cat"], input=b"\x00" * MAX_INPUT_BYTES, user="alice", max_lost=1))
    _validate(JobSpec(argv=["cat"], input=b"", max_lost=2**31 - 1))


# --- the CLI's --input, --user, --max-lost -------------------------------------------------------


def test_read_input_is_binary_safe_up_to_one_mib(tmp_path: Path) -> None:
    data = EVERY_BYTE * (MAX_INPUT_BYTES // 256)
    assert len(data) == MAX_INPUT_BYTES
    (tmp_path / "in").write_bytes(data)
    assert read_input(str(tmp_path / "in")) == data
    (tmp_path / "empty").write_bytes(b"")
    assert read_input(str(tmp_path / "empty")) == b""
    assert read_input(None) is None


def test_read_input_refuses_more_than_one_mib(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"\x00" * (MAX_INPUT_BYTES + 1))
    with pytest.raises(InvalidInput) as caught:
        read_input(str(tmp_path / "big"))
    assert caught.value.message.startswith(f"--input: {tmp_path / 'big'} holds more than 1 MiB")
    with pytest.raises(InvalidInput, match=r"--input: cannot read .*missing"):
        read_input(str(tmp_path / "missing"))


def test_read_input_from_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stdin:
        buffer = io.BytesIO(EVERY_BYTE)

    monkeypatch.setattr("sys.stdin", Stdin)
    assert read_input("-") == EVERY_BYTE
    Stdin.buffer = io.BytesIO(b"y" * (MAX_INPUT_BYTES + 10))
    with pytest.raises(InvalidInput, match="--input: standard input holds more than 1 MiB"):
        read_input("-")


@pytest.mark.parametrize(("fields", "says"), [
    ({"max_lost": 0}, "--max-lost must be between 1 and 2147483647, not 0"),
    ({"max_lost": 2**31}, "--max-lost must be between"),
    ({"user": ""}, "--user '': a user name cannot be empty"),
    ({"user": "0"}, "--user '0': give the user's name, not a uid"),
])
def test_run_fields_refuse(fields: dict[str, Any], says: str) -> None:
    arguments: dict[str, Any] = {"input_path": None, "user": None, "max_lost": 3, **fields}
    with pytest.raises(InvalidInput) as caught:
        run_fields(**arguments)
    assert caught.value.message == says or caught.value.message.startswith(says)


def test_the_max_lost_option_defaults_to_the_models_default() -> None:
    from jobctl.cli.common import MAX_LOST_OPTION

    assert MAX_LOST_OPTION.default == DEFAULT_MAX_LOST
    assert run_fields(input_path=None, user="alice", max_lost=1) == {
        "input": None, "user": "alice", "max_lost": 1}


# --- workflow files ---------------------------------------------------------------------------


def test_workflow_input_user_and_max_lost_reach_the_job_specs() -> None:
    text = ('[workflow]\nuser = "alice"\nmax_lost = 5\n'
            '[tasks.a]\ncommand = "cat"\ninput = "h\\u00e9llo\\u0001\\n"\n'
            '[tasks.b]\ncommand = "cat"\nuser = "bob"\nmax_lost = 1\nneeds = ["a"]\n')
    a, b = job_specs(load(text, "f.toml"), {})
    assert (a.input, a.user, a.max_lost) == ("héllo\x01\n".encode(), "alice", 5)
    assert (b.input, b.user, b.max_lost) == (None, "bob", 1)
    [plain] = job_specs(load('[tasks.a]\ncommand = "cat"\n', "f.toml"), {})
    assert (plain.input, plain.user, plain.max_lost) == (None, None, DEFAULT_MAX_LOST)


def test_workflow_input_is_not_substituted() -> None:
    text = '[tasks.a]\ncommand = "cat {x}"\ninput = "{x}"\n'
    [spec] = job_specs(load(text, "f.toml"), {"x": "1"})
    assert spec.argv[-1] == "cat 1" and spec.input == b"{x}"


@pytest.mark.parametrize(("text", "message"), [
    ('[tasks.a]\ncommand = "x"\ninput = 3\n', "f.toml:3: tasks.a.input must be a string"),
    ('[tasks.a]\ncommand = "x"\n\ninput = "' + "x" * (MAX_INPUT_BYTES + 1) + '"\n',
     "f.toml:4: tasks.a.input: at most 1 MiB"),
    ('[tasks.a]\ncommand = "x"\ninput = "a\\u0000b"\n',
     "f.toml:3: tasks.a.input: cannot hold a NUL character (\\u0000)"),
    ('[tasks.a]\ncommand = "x"\nuser = ""\n', "f.toml:3: tasks.a.user: a user name cannot be"),
    ('[tasks.a]\ncommand = "x"\nuser = 1000\n', "f.toml:3: tasks.a.user must be a string"),
    ('[tasks.a]\ncommand = "x"\nmax_lost = 0\n', "f.toml:3: tasks.a.max_lost: must be 1 or"),
    ('[tasks.a]\ncommand = "x"\nmax_lost = true\n', "f.toml:3: tasks.a.max_lost must be an"),
    ('[workflow]\nmax_lost = "3"\n[tasks.a]\ncommand = "x"\n',
     "f.toml:2: workflow.max_lost must be an integer"),
    ('[workflow]\nstdin = "x"\n[tasks.a]\ncommand = "x"\n', "f.toml:2: workflow: unknown key"),
])
def test_invalid_workflow_options(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load(text, "f.toml")
    assert caught.value.message.startswith(message), caught.value.message


# --- JobProcess: the bytes into the command's stdin ---------------------------------------------


def run(argv: list[str], input: bytes | None = None, user: str | None = None,
        timeout_s: float | None = 30.0) -> tuple[ProcessResult, bytes, bytes]:
    out: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    def sink(stream: str, _seq: int, data: bytes) -> None:
        out[stream] += data

    job = ClaimedJob(id=1, attempt=1, argv=argv, env={}, cwd=None, timeout_s=timeout_s,
                     max_attempts=1, backoff_s=0.0, delivery=None,  # type: ignore[arg-type]
                     queue="default", input=input, user=user)
    result = JobProcess(job, sink, kill_grace_s=1.0).run()
    return result, bytes(out["stdout"]), bytes(out["stderr"])


def test_every_byte_value_reaches_stdin_through_a_full_pipe() -> None:
    data = EVERY_BYTE * (MAX_INPUT_BYTES // 256)  # 1 MiB: many times the pipe's buffer
    result, stdout, stderr = run(["cat"], data)
    assert (result.exit_code, stderr) == (0, b"")
    assert stdout == data


def test_output_before_input_does_not_deadlock() -> None:
    """The command writes a pipe-full and more before it reads a byte, then echoes its input."""
    data = EVERY_BYTE * 2048
    result, stdout, _ = run(["sh", "-c", "head -c 300000 /dev/zero; cat; echo done >&2"], data)
    assert result.exit_code == 0
    assert stdout == b"\x00" * 300000 + data


@pytest.mark.parametrize("argv", [["true"], ["sh", "-c", "sleep 0.3"], ["sh", "-c", "exec 0<&-"]])
def test_a_command_that_does_not_read_its_input_ends_normally(argv: list[str]) -> None:
    started = time.monotonic()
    result, _, stderr = run(argv, b"x" * MAX_INPUT_BYTES, timeout_s=20.0)
    assert (result.exit_code, result.error, stderr) == (0, None, b"")
    assert time.monotonic() - started < 10


def test_input_after_the_output_is_closed_still_arrives(tmp_path: Path) -> None:
    """Closing stdout and stderr does not end the feeding while the command still reads."""
    data = EVERY_BYTE * 1024
    target = tmp_path / "got"
    result, _, _ = run(["sh", "-c", f"exec >&- 2>&-; cat > {target}"], data)
    assert result.exit_code == 0
    assert target.read_bytes() == data


def test_without_input_stdin_is_dev_null() -> None:
    result, stdout, _ = run(["sh", "-c", "readlink /proc/self/fd/0; cat; echo eof"])
    assert result.exit_code == 0
    assert stdout == b"/dev/null\neof\n"


def test_empty_input_is_an_empty_pipe() -> None:
    result, stdout, _ = run(["sh", "-c", "wc -c; echo eof"], b"")
    assert (result.exit_code, stdout.split()) == (0, [b"0", b"eof"])


def test_an_unknown_user_fails_the_job_not_the_worker() -> None:
    result, _, stderr = run(["true"], user="no-such-user-jobctl-test")
    assert (result.exit_code, result.started) == (125, False)
    assert result.error == "no such user 'no-such-user-jobctl-test' on this worker"
    assert stderr == b"jobctl: no such user 'no-such-user-jobctl-test' on this worker\n"


def test_the_workers_own_user_runs_without_switching() -> None:
    import pwd

    me = pwd.getpwuid(os.geteuid())
    run_as = RunAs.lookup(me.pw_name)
    assert run_as is not None and not run_as.switches
    result, stdout, _ = run(["sh", "-c", 'id -u; echo "$USER $LOGNAME $HOME"'], user=me.pw_name)
    assert result.exit_code == 0
    assert stdout == f"{os.geteuid()}\n{me.pw_name} {me.pw_name} {me.pw_dir}\n".encode()
