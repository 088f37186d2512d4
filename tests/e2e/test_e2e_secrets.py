"""`job submit --secret-env`: a real worker reads the secrets when it starts the job (a file on
its machine, a variable of its environment), the job gets them, and its stored output has `***`
where it printed them, also when the command wrote a secret in two pieces with a pause between
(two reads of the pipe). Then the secrets are searched for everywhere they must not be: every
column of every row of every table of the database, `job status -o json` and the worker's log.
Both backends."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from e2e_support import Jobctl, describe, wait_for
from test_e2e_input_user import unix_user as _unix_user

unix_user = _unix_user  # the fixture (a Unix user of the test's own), here too

FILE_SECRET = "Fi1e-S3cret-VALUE-4242"
ENV_SECRET = "Env-T0ken-VALUE-9876"

# The file secret in two writes with a pause between, the env secret likewise on stderr, and
# both whole; the rest of the output must come through byte for byte.
SCRIPT = r"""
printf 'whole <%s> <%s>\n' "$FILE_TOKEN" "$ENV_TOKEN"
printf 'split <%s' "$(printf %s "$FILE_TOKEN" | cut -c1-9)"
sleep 0.5
printf '%s> done\n' "$(printf %s "$FILE_TOKEN" | cut -c10-)"
printf 'err <%s' "$(printf %s "$ENV_TOKEN" | cut -c1-5)" >&2
sleep 0.5
printf '%s>\n' "$(printf %s "$ENV_TOKEN" | cut -c6-)" >&2
printf 'raw \001\377\n'
"""


def _everything_stored(url: str) -> list[tuple[str, str, Any]]:
    """(table, column, value) of every non-NULL cell of every row of every table."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        cells = []
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(sa.select(table)).mappings():
                    cells += [(table.name, column, value) for column, value in row.items()
                              if value is not None]
        assert {"jobs", "job_logs", "attempts"} <= set(metadata.tables), metadata.tables
        return cells
    finally:
        engine.dispose()


def _holds(value: Any, secret: str) -> bool:
    if isinstance(value, bytes | bytearray | memoryview):
        return secret.encode() in bytes(value)
    if isinstance(value, dict | list):
        return secret in json.dumps(value)
    return secret in str(value)


def test_secrets_reach_the_job_and_are_stored_nowhere(jobctl: Jobctl, tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text(FILE_SECRET + "\n")  # one trailing newline: not part of it
    secret_file.chmod(0o600)
    jobctl.env["WORKER_ONLY_TOKEN"] = ENV_SECRET  # in the worker's environment only
    worker = jobctl.start_worker()
    job = jobctl.submit("--secret-env", f"FILE_TOKEN=file:{secret_file}",
                        "--secret-env", "ENV_TOKEN=env:WORKER_ONLY_TOKEN",
                        "--shell", SCRIPT)
    wait_for(lambda: jobctl.status(job)["state"] in ("succeeded", "failed"), 60,
             "the job did not end")
    status = jobctl.status(job)
    assert status["state"] == "succeeded", status
    logs = jobctl.run_bytes("job", "logs", str(job))
    assert logs.returncode == 0, logs
    assert logs.stdout == (b"whole <***> <***>\n"
                           b"split <***> done\n"
                           b"raw \x01\xff\n")
    assert logs.stderr == b"err <***>\n"

    # The references, and only they, in status and JSON.
    assert status["secret_env"] == {"FILE_TOKEN": f"file:{secret_file}",
                                    "ENV_TOKEN": "env:WORKER_ONLY_TOKEN"}
    shown = jobctl.look("job", "status", str(job))
    assert f"file:{secret_file}" in shown
    listed = jobctl.look("job", "list", "-o", "json")
    worker.process.terminate()
    worker.process.wait(timeout=30)
    assert f"job {job} succeeded" in worker.log(), worker.log()
    for secret in (FILE_SECRET, ENV_SECRET):
        assert secret not in json.dumps(status)
        assert secret not in shown
        assert secret not in listed
        assert secret not in worker.log(), worker.log()
    cells = _everything_stored(jobctl.database_url)
    assert any(table == "job_logs" for table, _, _ in cells)
    for secret in (FILE_SECRET, ENV_SECRET):
        found = [(table, column) for table, column, value in cells if _holds(value, secret)]
        assert found == [], f"{secret} stored in {found}"
    # and what the search looks at is there: the reference and the masked output
    assert any(_holds(value, "WORKER_ONLY_TOKEN") for _, _, value in cells)
    # (in pieces: what could be the start of a secret waits for the next read to decide it)
    assert any(_holds(value, "whole <***> <***") for _, _, value in cells)


def test_a_secret_the_worker_cannot_read_fails_the_attempt(jobctl: Jobctl,
                                                           tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    job = jobctl.submit("--retries", "1", "--retry-backoff", "0.1s",
                        "--secret-env", f"TOKEN=file:{missing}", "--", "true")
    unset = jobctl.submit("--secret-env", "TOKEN=env:JOBCTL_TEST_UNSET_VARIABLE", "--", "true")
    jobctl.start_worker()
    wait_for(lambda: jobctl.status(job)["state"] == "failed", 30,
             lambda: f"{jobctl.status(job)}")
    status = jobctl.status(job)
    # Within its --retries, as any failure: two attempts, then failed; no more.
    assert (status["attempt"], status["exit_code"]) == (2, 125), status
    assert status["error"] == (f"secret TOKEN: cannot read file {missing}: No such file or "
                               "directory")
    logs = jobctl("job", "logs", str(job))
    assert logs.stderr == f"jobctl: {status['error']}\n", describe(logs)
    wait_for(lambda: jobctl.status(unset)["state"] == "failed", 30,
             lambda: f"{jobctl.status(unset)}")
    other = jobctl.status(unset)
    assert (other["state"], other["attempt"], other["exit_code"]) == ("failed", 1, 125), other
    assert other["error"] == ("secret TOKEN: variable JOBCTL_TEST_UNSET_VARIABLE is not set on "
                              "this worker")


def test_a_root_worker_reads_a_secret_file_as_the_jobs_user(
        jobctl: Jobctl, unix_user: tuple[str, str]) -> None:
    """A job of another user gets no file that user could not read: the root worker reads it
    with the user's rights, so --secret-env is no way around a file's permissions."""
    import pwd
    import shutil
    import tempfile

    name, _ = unix_user
    entry = pwd.getpwnam(name)
    folder = Path(tempfile.mkdtemp(prefix="jobctl-secrets-"))
    try:
        folder.chmod(0o755)
        roots = folder / "roots"
        roots.write_text("root-only-S3CRET\n")
        roots.chmod(0o600)
        theirs = folder / "theirs"
        theirs.write_text("users-own-S3CRET\n")
        theirs.chmod(0o600)
        os.chown(theirs, entry.pw_uid, entry.pw_gid)
        refused = jobctl.submit("--user", name, "--secret-env", f"TOKEN=file:{roots}",
                                "--shell", 'echo "<$TOKEN>"')
        allowed = jobctl.submit("--user", name, "--secret-env", f"TOKEN=file:{theirs}",
                                "--shell", 'echo "<$TOKEN>"; id -u')
        jobctl.start_worker()
        wait_for(lambda: all(jobctl.status(job)["state"] in ("succeeded", "failed")
                             for job in (refused, allowed)), 60, "the jobs did not end")
        status = jobctl.status(refused)
        assert (status["state"], status["exit_code"]) == ("failed", 125), status
        assert status["error"] == (f"secret TOKEN: cannot read file {roots}: Permission "
                                   f"denied (as user {name})")
        assert jobctl.run_bytes("job", "logs", str(refused)).stdout == b""
        assert jobctl.status(allowed)["state"] == "succeeded"
        logs = jobctl.run_bytes("job", "logs", str(allowed))
        assert logs.stdout == f"<***>\n{entry.pw_uid}\n".encode(), logs
    finally:
        shutil.rmtree(folder)
