"""`job logs`: live with --follow, byte for byte, stdout and stderr kept apart."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

from e2e_support import Jobctl, describe, parse_time, read_until, wait_for
from pgbouncer import ALSO_THROUGH_PGBOUNCER


@ALSO_THROUGH_PGBOUNCER
def test_logs_follow_shows_output_while_the_job_runs(jobctl: Jobctl) -> None:
    jobctl.start_worker()
    job_id = jobctl.submit("--", "sh", "-c", "echo first; sleep 3; echo second")
    follow = jobctl.popen("job", "logs", "--follow", str(job_id))
    assert follow.stdout is not None

    seen = read_until(follow.stdout, b"first\n", timeout_s=30)
    arrived = datetime.now(UTC)
    assert seen == b"first\n"
    assert follow.poll() is None, "logs --follow ended while the job was still running"
    # The job sleeps 3 s after `first`, so it should still be running; judged by when it ended
    # rather than by its state now, since a CLI call on a loaded machine can take seconds.
    status = jobctl.status(job_id)
    assert status["state"] in ("running", "succeeded"), status
    if status["state"] != "running":
        ended = parse_time(status["finished_at"])
        assert ended > arrived, f"`first` arrived at {arrived}, after the job ended at {ended}"

    rest, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    assert seen + rest == b"first\nsecond\n"


def test_binary_output_comes_back_byte_for_byte(jobctl: Jobctl, tmp_path: Path) -> None:
    # NULs, bytes that are never UTF-8, a truncated sequence, CR/LF; then 1 MiB of noise.
    awkward = b"\x00\x00\xff\xfe\xc3\x28\xe2\x82\r\n\x1b[31m[red]\x00"
    data = awkward + os.urandom(1024 * 1024) + awkward
    source = tmp_path / "noise.bin"
    source.write_bytes(data)
    job_id = jobctl.submit("--", "cat", str(source))

    jobctl.burst()

    logs = jobctl.run_bytes("job", "logs", str(job_id))
    assert logs.returncode == 0, logs.stderr
    assert len(logs.stdout) == len(data)
    assert logs.stdout == data, "the output came back altered"
    assert logs.stderr == b""


def test_stderr_goes_to_stderr(jobctl: Jobctl) -> None:
    job_id = jobctl.submit("--", "sh", "-c", "echo out; echo err >&2")
    jobctl.burst()

    both = jobctl("job", "logs", str(job_id))
    assert both.returncode == 0, describe(both)
    assert (both.stdout, both.stderr) == ("out\n", "err\n")

    only_err = jobctl("job", "logs", "--stream", "stderr", str(job_id))
    assert only_err.returncode == 0, describe(only_err)
    assert (only_err.stdout, only_err.stderr) == ("", "err\n")


def test_logs_follow_of_a_queued_job_waits_for_its_output(jobctl_sqlite: Jobctl) -> None:
    """Following before any worker took the job: the output still arrives, then it ends.
    (Client-side logic alone: one backend is enough.)"""
    jobctl = jobctl_sqlite
    job_id = jobctl.submit("--", "sh", "-c", "echo late")
    follow = jobctl.popen("job", "logs", "-f", str(job_id))
    time.sleep(1.5)  # `logs -f` is up and polling a job that has not started
    assert follow.poll() is None, "logs --follow of a queued job ended at once"
    jobctl.start_worker()
    wait_for(lambda: follow.poll() is not None, 30, "logs --follow did not end with the job")
    out, err = follow.communicate()
    assert follow.returncode == 0, err
    assert out == b"late\n"
