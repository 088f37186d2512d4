"""Hooks end to end, with real workers running real commands: what a hook gets (environment,
the job's `job status -o json` on stdin, its output in $JOBCTL_HOOK_OUTPUT), exactly once
through a worker's kill -9, never for its own failure, and MAILTO through a `sendmail` on PATH."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from e2e_support import Jobctl, wait_for
from pgbouncer import ALSO_THROUGH_PGBOUNCER

from jobctl.cron import mailto_hook


def _hooks_of(jobctl: Jobctl, job_id: int) -> list[dict[str, object]]:
    listed = json.loads(jobctl.look("job", "list", "--limit", "0", "-o", "json"))
    return [job for job in listed if job["hook_of"] == job_id]


def test_a_hook_gets_its_job_in_env_stdin_and_output_file(jobctl: Jobctl,
                                                          tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    hook = (f'env | grep ^JOBCTL_HOOK_ | grep -v OUTPUT | sort > {seen}.env; cat > {seen}.json; '
            f'cat "$JOBCTL_HOOK_OUTPUT" > {seen}.out')
    job = jobctl.submit("--name", "noisy", "--on-failure", hook, "--on-success", "touch never",
                        "--", "sh", "-c", "printf 'out\\n'; printf 'err\\n' >&2; exit 3")
    scratch = tmp_path / "tmp"  # the worker's TMPDIR, where the output file is made
    scratch.mkdir()
    jobctl.env["TMPDIR"] = str(scratch)
    jobctl.burst()
    [hook_job] = _hooks_of(jobctl, job)
    assert hook_job["state"] == "succeeded"
    assert (seen.with_suffix(".env").read_text().splitlines() == [
        "JOBCTL_HOOK_EXIT_CODE=3", f"JOBCTL_HOOK_JOB_ID={job}", "JOBCTL_HOOK_NAME=noisy",
        "JOBCTL_HOOK_STATE=failed"])
    assert json.loads(seen.with_suffix(".json").read_text()) == jobctl.status(job)
    assert seen.with_suffix(".out").read_bytes() == b"out\nerr\n"
    assert _hooks_of(jobctl, int(str(hook_job["id"]))) == []  # a hook has no hooks
    assert not (tmp_path / "never").exists()
    assert list(scratch.iterdir()) == []  # the output file went with the hook's end


@ALSO_THROUGH_PGBOUNCER
def test_a_hook_runs_exactly_once_through_a_kill9_of_its_worker(jobctl: Jobctl,
                                                                tmp_path: Path) -> None:
    """The first worker runs the job (it succeeds: its hook is in the database from that very
    turn), then starts the hook, which freezes it (SIGSTOP of its parent) before the hook's
    work; the test kill -9s the frozen worker. A second worker takes the hook once the lease
    ran out and runs it to its end: the hook's work is done once, and the job has one hook."""
    ran, froze = tmp_path / "ran", tmp_path / "froze"
    hook = (f'if [ ! -e {froze} ]; then touch {froze}; kill -STOP $PPID; sleep 30; fi; '
            f'echo "$JOBCTL_HOOK_JOB_ID $JOBCTL_HOOK_STATE" >> {ran}')
    job = jobctl.submit("--on-end", hook, "--", "true")
    first = jobctl.start_worker("--concurrency", "1")
    wait_for(froze.exists, 60, lambda: f"the hook did not start:\n{first.log()}")
    assert jobctl.status(job)["state"] == "succeeded"
    os.kill(first.pid, signal.SIGKILL)
    first.process.wait(10)
    second = jobctl.start_worker("--concurrency", "1")
    wait_for(ran.exists, 60, lambda: f"the hook did not run again:\n{second.log()}")
    [hook_job] = _hooks_of(jobctl, job)
    wait_for(lambda: jobctl.status(int(str(hook_job["id"])))["state"] == "succeeded", 30)
    assert ran.read_text() == f"{job} succeeded\n"
    assert len(_hooks_of(jobctl, job)) == 1
    attempts = jobctl.status(int(str(hook_job["id"])))["attempts"]
    assert [a["outcome"] for a in attempts] == ["lost", "succeeded"]


def test_mailto_mails_the_output_of_a_run_that_printed_something(jobctl: Jobctl,
                                                                 tmp_path: Path) -> None:
    """The hook `schedule import` makes of MAILTO, with a fake sendmail first on the worker's
    PATH: a run that printed is mailed (headers, then its output); a silent one is not."""
    bin_dir, mail = tmp_path / "bin", tmp_path / "mail"
    bin_dir.mkdir()
    sendmail = bin_dir / "sendmail"
    sendmail.write_text(f'#!/bin/sh\n{{ echo "ARGS: $*"; cat; echo "--"; }} >> {mail}\n')
    sendmail.chmod(0o755)
    jobctl.env["PATH"] = f"{bin_dir}:{jobctl.env['PATH']}"
    hook = mailto_hook(["ops@example.com", "dev@example.com"])
    loud = jobctl.submit("--name", "loud", "--on-end", hook, "--", "sh", "-c", "echo hello")
    jobctl.submit("--name", "quiet", "--on-end", hook, "--", "true")
    jobctl.burst()
    assert len(_hooks_of(jobctl, loud)) == 1
    assert mail.read_text() == (
        "ARGS: -i -- ops@example.com dev@example.com\n"
        "To: ops@example.com, dev@example.com\n"
        "Subject: jobctl <loud> succeeded\n"
        "Content-Type: text/plain; charset=UTF-8\n"
        "\n"
        "hello\n"
        "--\n")
