"""`job submit --array` and the commands that take `--array ID`, in-process on both backends
(what workers do with arrays: tests/e2e/test_e2e_arrays.py)."""

from __future__ import annotations

import json

from inprocess import jobctl, run_cli


def test_submit_list_status_cancel_and_wait_an_array(db_url: str) -> None:
    array_id = jobctl(db_url, "job", "submit", "--array", "3,7,9%2", "--name", "part",
                      "--retry-on-exit", "75", "--", "echo", "part-{index}").stdout.strip()
    assert array_id.isdigit()  # piped: the bare id
    tty = run_cli("job", "submit", "--array", "0-1", "--", "true",
                  env={"JOBCTL_DATABASE_URL": db_url}, tty=True)
    assert tty.stdout.startswith("submitted array ") and "(2 tasks)" in tty.stdout

    plain = jobctl(db_url, "job", "list", "--array", array_id, "-o", "plain").stdout
    header, *rows = plain.splitlines()
    assert header.split("\t")[:2] == ["ID", "INDEX"]
    assert [row.split("\t")[1] for row in rows] == ["3", "7", "9"]
    assert [row.split("\t")[-1] for row in rows] == [f"echo part-{i}" for i in (3, 7, 9)]
    tasks = json.loads(jobctl(db_url, "job", "list", "--array", array_id, "--limit", "2",
                              "-o", "json").stdout)
    assert [task["array_index"] for task in tasks] == [3, 7]
    assert tasks[0]["limits"] == {f"array:{array_id}": 2}

    status = jobctl(db_url, "job", "status", str(tasks[1]["id"]), "-o", "table").stdout
    assert f"array: {array_id} (index 7)" in " ".join(status.split())
    assert "retry on exit: 75" in " ".join(status.split())

    # Nothing failed yet: nothing to retry.
    nothing = jobctl(db_url, "job", "retry", "--array", array_id, "--failed", expect=2)
    assert "has no task that is cancelled or failed or lost" in nothing.stderr

    cancelled = jobctl(db_url, "job", "cancel", "--array", array_id)
    assert cancelled.stderr.strip() == (f"array {array_id}: 3 tasks cancelled, 0 running "
                                        "(their workers will kill them)")
    waited = jobctl(db_url, "job", "wait", "--array", array_id, expect=125)
    assert waited.stderr.strip() == (f"array {array_id}: 3 tasks: 3 cancelled; lowest failed "
                                     f"index 3 (job {tasks[0]['id']}, exit code 125)")

    # Retry brings back the cancelled ones, ids on stdout when piped.
    retried = jobctl(db_url, "job", "retry", "--array", array_id, "--failed")
    assert len(retried.stdout.split()) == 3
    queued = jobctl(db_url, "job", "list", "--array", array_id, "--state", "queued", "-o",
                    "ids").stdout.split()
    assert queued == retried.stdout.split()


def test_wait_times_out_on_an_unfinished_array(db_url: str) -> None:
    array_id = jobctl(db_url, "job", "submit", "--array", "0-2", "--", "true").stdout.strip()
    result = jobctl(db_url, "job", "wait", "--array", array_id, "--timeout", "0.3s",
                    expect=124)
    assert f"array {array_id} (3 of 3 tasks not ended)" in result.stderr
