"""Dead-man's switches end to end: two real `jobctl scheduler run` processes and a real worker.
An overdue schedule (its runs fail) and an overdue check (nobody pings it) each run their hook
exactly once per overdue spell, whichever scheduler notices first; a succeeded run and a ping end
the spell, and a later spell runs the hook again. `schedule show`, `check show` and both
schedulers' metrics say who is overdue."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from e2e_support import Jobctl, wait_for
from metrics_support import free_port, sample, scrape


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def overdue_gauge(port: int, kind: str, name: str) -> float | None:
    """`jobctl_<kind>_overdue{<kind>=NAME}` on a scheduler's /metrics (None: no answer yet)."""
    try:
        samples = scrape(port)
    except OSError:
        return None
    if (f"jobctl_{kind}_overdue", frozenset({(kind, name)})) not in samples:
        return None
    return sample(samples, f"jobctl_{kind}_overdue", **{kind: name})


def shown(jobctl: Jobctl, kind: str, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(jobctl.look(kind, "show", name, "-o", "json"))
    return document


def test_overdue_hooks_run_once_per_spell_with_two_schedulers(jobctl: Jobctl,
                                                              tmp_path: Path) -> None:
    ok_flag = tmp_path / "ok"
    schedule_hooks, check_hooks = tmp_path / "schedule-hooks.log", tmp_path / "check-hooks.log"
    stdin_dir = tmp_path / "stdin"
    stdin_dir.mkdir()
    # Every second a run that fails until the flag exists; overdue after 3 s without a success.
    jobctl.ok("schedule", "add", "probe", "--every", "1s", "--overlap", "allow",
              "--alert-after", "3s", "--on-overdue",
              f'cat > {stdin_dir}/"$JOBCTL_JOB_ID".json; echo "$JOBCTL_HOOK_NAME '
              f'$JOBCTL_HOOK_STATE $JOBCTL_HOOK_JOB_ID $JOBCTL_HOOK_EXIT_CODE" >> {schedule_hooks}',
              "--", "test", "-e", str(ok_flag))
    # A check nobody pings: overdue 2 s after it was added.
    jobctl.ok("check", "add", "external", "--every", "2s", "--grace", "0s", "--on-overdue",
              f'echo "$JOBCTL_HOOK_NAME $JOBCTL_HOOK_STATE" >> {check_hooks}')
    ports = [free_port(), free_port()]
    for port in ports:
        jobctl.popen("scheduler", "run", "--poll-interval", "0.2s", "--quiet",
                     "--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    jobctl.start_worker("--concurrency", "4")

    # First spells: each hook runs once.
    wait_for(lambda: lines(schedule_hooks) and lines(check_hooks), 60,
             lambda: f"no hooks ran: {lines(schedule_hooks)} {lines(check_hooks)}")
    for port in ports:
        wait_for(lambda port=port: overdue_gauge(port, "schedule", "probe") == 1
                 and overdue_gauge(port, "check", "external") == 1, 30,
                 f"scheduler on {port} never reported both overdue")
    time.sleep(3)  # both schedulers keep looking: neither runs a hook again
    [schedule_hook] = lines(schedule_hooks)
    assert lines(check_hooks) == ["external overdue"]
    name, state, job_id, exit_code = schedule_hook.split(" ")
    assert (name, state) == ("probe", "overdue")
    # The latest run: `test -e` failed (exit 1), or (a loaded machine) it had not ended yet.
    assert exit_code in ("1", "")
    assert jobctl.status(int(job_id))["schedule"] == "probe"
    [document] = [json.loads(path.read_text()) for path in stdin_dir.iterdir()]
    assert document["name"] == "probe" and document["overdue"] is True
    assert document["alert_after_s"] == 3.0 and document["runs"]
    assert shown(jobctl, "schedule", "probe")["overdue"] is True
    assert shown(jobctl, "check", "external")["overdue"] is True

    # A run succeeds, a ping comes: both spells end.
    ok_flag.touch()
    jobctl.ok("check", "ping", "external")
    wait_for(lambda: all(overdue_gauge(port, "schedule", "probe") == 0 for port in ports), 30,
             "the schedulers never saw the schedule recover")
    assert shown(jobctl, "schedule", "probe")["overdue"] is False
    assert shown(jobctl, "schedule", "probe")["last_success_at"] is not None

    # Failing again (and no more pings): second spells, each hook once more.
    ok_flag.unlink()
    wait_for(lambda: len(lines(schedule_hooks)) == 2 and len(lines(check_hooks)) == 2, 60,
             lambda: f"no second spells: {lines(schedule_hooks)} {lines(check_hooks)}")
    time.sleep(2)
    assert len(lines(schedule_hooks)) == 2 and len(lines(check_hooks)) == 2

    def hook_states() -> list[str]:
        return [job["state"] for job in json.loads(jobctl.look("job", "list", "-o", "json",
                                                               "--limit", "1000"))
                if job["name"] in ("on_overdue of probe", "on_overdue of external")]

    wait_for(lambda: hook_states() == ["succeeded"] * 4, 30,
             lambda: f"the hook jobs: {hook_states()}")
