"""Job arrays and retrying by exit code, end to end, on both backends: real workers run real
shell tasks that write their own start/end instants (`date +%s%N`), index and environment to a
file, and the tests judge from those lines what ran at once and what each task was given.

- a 1,000-task array at `%5`, on two workers of 4 slots each (8 slots), never runs more than 5
  tasks at once, and does run 5 at once;
- each task gets `{index}` in its argv and JOBCTL_ARRAY_ID/JOBCTL_ARRAY_INDEX, and every index
  runs once;
- `job wait --array` exits with the lowest failed index's own exit code (one summary line on
  stderr), and its `--junit` file validates against Jenkins' schema;
- `job retry --array ID --failed` runs exactly the failed indices again; then the array waits to
  exit 0;
- `--after array:ID` starts after every task; `--retry-on-exit` retries a listed code only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from e2e_support import Jobctl, describe

sys.path.append(str(Path(__file__).resolve().parent.parent / "chaos"))
from chaos_support import peak_overlap

TASKS = 1000
THROTTLE = 5
FAILING = {13: 3, 400: 4}  # index: exit code, until the flag file exists
XSD = Path(__file__).resolve().parent.parent / "data" / "junit-10.xsd"


def task_script(log: Path, flag: Path) -> str:
    """Logs `start|end INDEX ENV_INDEX ENV_ARRAY ATTEMPT NANOSECONDS`; the FAILING indices exit
    with their code while `flag` does not exist."""
    who = '{index} $JOBCTL_ARRAY_INDEX $JOBCTL_ARRAY_ID $JOBCTL_ATTEMPT'
    cases = " ".join(f"{index}) [ -e {flag} ] || code={code};;"
                     for index, code in FAILING.items())
    return (f'echo start {who} $(date +%s%N) >> {log}; sleep 0.01; '
            f'case {{index}} in {cases} esac; '
            f'echo end {who} $(date +%s%N) >> {log}; exit ${{code:-0}}')


def read_log(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()]


def test_a_throttled_array_end_to_end(jobctl: Jobctl, tmp_path: Path) -> None:
    log, flag, junit = tmp_path / "tasks.log", tmp_path / "ok", tmp_path / "junit.xml"
    out = jobctl.ok("job", "submit", "--array", f"0-{TASKS - 1}%{THROTTLE}", "--name", "shard",
                    "--shell", task_script(log, flag))
    array_id = int(out)
    # The default lease (FAST_WORKER_OPTIONS' 5 s is for tests about leases): this one is about
    # the throttle, on a machine the rest of the suite keeps busy.
    workers = [jobctl.start_worker("--concurrency", "4", "--name", f"w{n}", "--lease", "20s",
                                   wait_started=False)
               for n in (1, 2)]
    for worker in workers:
        worker.wait_started()

    waited = jobctl("job", "wait", "--array", str(array_id), "--timeout", "400s",
                    "--junit", str(junit), timeout=460)
    failed_tasks = [(task["array_index"], task["exit_code"], task["error"]) for task in json.loads(
        jobctl.look("job", "list", "--array", str(array_id), "--state", "failed", "-o", "json"))]
    said = [line for worker in workers for line in worker.log().splitlines()
            if "succeeded" not in line]  # what the workers said besides successes
    assert waited.returncode == FAILING[min(FAILING)], (describe(waited), failed_tasks, said)
    [summary] = waited.stderr.splitlines()
    assert sorted(index for index, _, _ in failed_tasks) == sorted(FAILING), (failed_tasks, said)
    assert summary.startswith(f"array {array_id}: {TASKS} tasks:"), summary
    assert f"{TASKS - 2} succeeded, 2 failed" in summary, summary
    assert f"lowest failed index {min(FAILING)}" in summary, summary

    lines = read_log(log)
    starts = {}
    intervals = {}
    for kind, index, env_index, env_array, attempt, nanos in lines:
        # {index} in the argv and the environment agree, and name this array.
        assert (index, env_array) == (env_index, str(array_id)), (index, env_index, env_array)
        key = (int(index), int(attempt))
        if kind == "start":
            assert key not in starts, f"{key} started twice"
            starts[key] = int(nanos) / 1e9
        else:
            intervals[key] = (starts[key], int(nanos) / 1e9)
    assert sorted(index for index, _ in intervals) == list(range(TASKS))  # each once
    peak, at = peak_overlap(intervals.values())
    assert peak <= THROTTLE, f"{peak} tasks ran at once at {at}"
    assert peak == THROTTLE, f"at most {peak} ran at once: the throttle was never reached"

    # The JUnit report: one testcase per task, the failures with their exit codes.
    from lxml import etree

    schema = etree.XMLSchema(etree.parse(str(XSD)))
    root = etree.parse(str(junit)).getroot()
    assert schema.validate(root), schema.error_log
    assert (root.get("tests"), root.get("failures")) == (str(TASKS), "2")
    failed = {case.get("name"): case.find("failure").get("message")
              for case in root.iter("testcase") if case.find("failure") is not None}
    assert failed == {f"shard[{index}]": f"exit code {code}" for index, code in FAILING.items()}

    # Retry only the failed indices, which now succeed.
    flag.touch()
    before = len(lines)
    retried = jobctl("job", "retry", "--array", str(array_id), "--failed")
    assert retried.returncode == 0, describe(retried)
    assert len(retried.stdout.split()) == len(FAILING)
    waited = jobctl("job", "wait", "--array", str(array_id), "--timeout", "120s", timeout=180)
    assert waited.returncode == 0, describe(waited)
    assert waited.stderr.strip() == f"array {array_id}: {TASKS} tasks: {TASKS} succeeded"
    again = read_log(log)[before:]
    assert sorted(int(index) for kind, index, *_ in again if kind == "start") == sorted(FAILING)
    assert {line[4] for line in again} == {"2"}  # their second attempt
    tasks = json.loads(jobctl.look("job", "list", "--array", str(array_id), "--limit", "0",
                                   "-o", "json"))
    assert [task["array_index"] for task in tasks] == list(range(TASKS))
    assert {task["attempt"] for task in tasks if task["array_index"] not in FAILING} == {1}


def test_after_an_array_and_retry_on_exit(jobctl: Jobctl, tmp_path: Path) -> None:
    log = tmp_path / "order.log"
    array_id = int(jobctl.ok("job", "submit", "--array", "1-9:4", "--shell",
                             f"sleep 0.2; echo task {{index}} >> {log}"))
    after = jobctl.submit("--after", f"array:{array_id}", "--shell", f"echo after >> {log}")
    # Exit 75 retries (listed), exit 1 does not: attempts tell.
    listed = jobctl.submit("--retries", "2", "--retry-backoff", "0s", "--retry-on-exit", "75",
                           "--", "sh", "-c", "exit 75")
    other = jobctl.submit("--retries", "2", "--retry-backoff", "0s", "--retry-on-exit", "75",
                          "--", "sh", "-c", "exit 1")
    jobctl.burst("--concurrency", "4")
    assert log.read_text().splitlines()[-1] == "after"
    assert sorted(log.read_text().splitlines()[:-1]) == ["task 1", "task 5", "task 9"]
    assert jobctl.status(after)["state"] == "succeeded"
    assert (jobctl.status(listed)["attempt"], jobctl.status(listed)["state"]) == (3, "failed")
    assert (jobctl.status(other)["attempt"], jobctl.status(other)["state"]) == (1, "failed")
    assert jobctl.status(listed)["retry_on_exit"] == [75]


def test_workflow_wait_writes_junit(jobctl: Jobctl, tmp_path: Path) -> None:
    flow, junit = tmp_path / "ci.toml", tmp_path / "out" / "ci.xml"
    junit.parent.mkdir()
    flow.write_text(
        '[workflow]\nname = "ci"\n'
        "[tasks.lint]\ncommand = \"printf 'clean \\\\033[1m bold \\\\001\\\\n'\"\n"
        '[tasks.test]\ncommand = "echo 3 failures >&2; exit 3"\nneeds = ["lint"]\n'
        '[tasks.deploy]\ncommand = "true"\nneeds = ["test"]\n')
    workflow_id = jobctl.ok("workflow", "run", str(flow)).strip()
    jobctl.burst()
    waited = jobctl("workflow", "wait", workflow_id, "--junit", str(junit))
    assert waited.returncode == 3, describe(waited)

    from lxml import etree

    schema = etree.XMLSchema(etree.parse(str(XSD)))
    root = etree.parse(str(junit)).getroot()
    assert schema.validate(root), schema.error_log
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "2", "0")
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert set(cases) == {"lint", "test", "deploy"}
    assert cases["lint"].find("failure") is None
    # The escape and the C0 character are not XML 1.0: each is shown as U+FFFD.
    assert cases["lint"].findtext("system-out") == "clean \ufffd[1m bold \ufffd\n"
    assert cases["test"].find("failure").get("message") == "exit code 3"
    assert cases["test"].findtext("system-err") == "3 failures\n"
    assert "dependency" in cases["deploy"].find("failure").get("message")
    assert {case.get("classname") for case in cases.values()} == {"workflow.ci"}


def test_a_schedule_keeps_its_exit_codes_to_retry_on(jobctl: Jobctl) -> None:
    jobctl.look("schedule", "add", "tick", "--every", "1h", "--no-retry-on-exit", "2,64",
                "--", "true")
    shown = json.loads(jobctl.look("schedule", "show", "tick", "-o", "json"))
    assert shown["job"]["no_retry_on_exit"] == [2, 64]
    job_id = jobctl.look("schedule", "trigger", "tick").strip()
    assert jobctl.status(int(job_id))["no_retry_on_exit"] == [2, 64]
