"""Pure decisions of job arrays and retrying by exit code: the `--array` spec
(jobctl.arrays.parse_array_spec), `--retry-on-exit` codes (policy.parse_exit_codes), whether a
failed attempt retries (policy.should_retry) and what the worker records for it (outcome_of)."""

from __future__ import annotations

import signal

import pytest

from jobctl.arrays import parse_array_spec
from jobctl.models import MAX_ARRAY_SIZE, Delivery, JobState
from jobctl.policy import parse_exit_codes, should_retry
from jobctl.store.queue import ClaimedJob
from jobctl.worker.loop import outcome_of
from jobctl.worker.process import ProcessResult

# --- the --array spec -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "indices", "throttle"), [
    ("0-999", list(range(1000)), None),
    ("1-100:4", list(range(1, 101, 4)), None),
    ("3,7,9", [3, 7, 9], None),
    ("0-999%5", list(range(1000)), 5),
    ("7", [7], None),
    ("1-3,10-20:5%2", [1, 2, 3, 10, 15, 20], 2),
    (" 0-1 ", [0, 1], None),
    (f"1-{MAX_ARRAY_SIZE}", list(range(1, MAX_ARRAY_SIZE + 1)), None),
])
def test_array_specs(text: str, indices: list[int], throttle: int | None) -> None:
    spec = parse_array_spec(text)
    assert spec.indices == indices
    assert spec.throttle == throttle


@pytest.mark.parametrize(("text", "says"), [
    ("5-1", "ends before it starts"),
    ("1-2000000", "at most 100,000"),
    (f"0-{MAX_ARRAY_SIZE}", "at most 100,000"),  # one too many
    ("0-9%0", "%N"),
    ("0-9%", "%N"),
    ("0-9%x", "%N"),
    ("", "no indices"),
    ("%3", "no indices"),
    ("a-b", "'a-b'"),
    ("-1", "'-1'"),
    ("1-10:0", "step"),
    ("1,,2", "''"),
    ("1-3,2", "index 2 is given twice"),
    ("0-2147483648", "at most 2147483647"),
])
def test_bad_array_specs(text: str, says: str) -> None:
    with pytest.raises(ValueError, match="") as raised:
        parse_array_spec(text)
    assert says in str(raised.value)


def test_a_huge_range_is_refused_before_it_is_built() -> None:
    # 2**31 indices would take minutes and gigabytes: the count is checked first.
    with pytest.raises(ValueError, match="at most 100,000"):
        parse_array_spec("0-2147483647")


# --- exit codes -----------------------------------------------------------------------------------


def test_exit_codes_parse() -> None:
    assert parse_exit_codes("75,111") == (75, 111)
    assert parse_exit_codes(" 0 , 255,75,75") == (0, 255, 75)


@pytest.mark.parametrize("text", ["x", "", "1,,2", "-1", "256", "1.5", "75;111"])
def test_bad_exit_codes(text: str) -> None:
    with pytest.raises(ValueError, match="0 to 255"):
        parse_exit_codes(text)


# --- should_retry ---------------------------------------------------------------------------------


def test_without_a_list_every_failure_retries_while_attempts_are_left() -> None:
    assert should_retry(1, 3, 1)
    assert should_retry(2, 3, None)  # a kill
    assert not should_retry(3, 3, 1)  # the last attempt


def test_retry_on_exit_retries_only_those_codes() -> None:
    assert should_retry(1, 3, 75, retry_on_exit=(75, 111))
    assert should_retry(1, 3, 111, retry_on_exit=(75, 111))
    assert not should_retry(1, 3, 1, retry_on_exit=(75, 111))
    # A kill (signal, timeout) is not an exit code: not retried when only codes are.
    assert not should_retry(1, 3, None, retry_on_exit=(75, 111))
    assert not should_retry(3, 3, 75, retry_on_exit=(75,))  # no attempt left


def test_no_retry_on_exit_never_retries_those_codes() -> None:
    assert not should_retry(1, 3, 2, no_retry_on_exit=(2, 64))
    assert should_retry(1, 3, 1, no_retry_on_exit=(2, 64))
    assert should_retry(1, 3, None, no_retry_on_exit=(2, 64))  # a kill retries
    assert not should_retry(3, 3, 1, no_retry_on_exit=(2,))


# --- what the worker records ----------------------------------------------------------------------


def job(retry_on_exit: tuple[int, ...] | None = None,
        no_retry_on_exit: tuple[int, ...] | None = None) -> ClaimedJob:
    return ClaimedJob(id=7, attempt=1, argv=["x"], env={}, cwd=None, timeout_s=None,
                      max_attempts=3, backoff_s=1.0, delivery=Delivery.AT_LEAST_ONCE,
                      queue="default", retry_on_exit=retry_on_exit,
                      no_retry_on_exit=no_retry_on_exit)


def exited(code: int) -> ProcessResult:
    return ProcessResult(exit_code=code, signal=None, error=f"exit code {code}",
                         kill_reason=None, started=True)


def timed_out() -> ProcessResult:
    return ProcessResult(exit_code=128 + signal.SIGTERM, signal=signal.SIGTERM,
                         error="killed: timeout", kill_reason="timeout after 1s", started=True)


def signalled() -> ProcessResult:
    return ProcessResult(exit_code=128 + signal.SIGKILL, signal=signal.SIGKILL,
                         error="killed by SIGKILL", kill_reason=None, started=True)


def test_outcome_retries_a_listed_exit_code_and_fails_another() -> None:
    listed = outcome_of(job(retry_on_exit=(75,)), exited(75), cancelled=False, shutdown=False)
    assert listed.state is JobState.QUEUED and listed.retry_delay_s > 0
    other = outcome_of(job(retry_on_exit=(75,)), exited(1), cancelled=False, shutdown=False)
    assert other.state is JobState.FAILED and other.exit_code == 1


def test_outcome_of_a_kill_with_retry_on_exit_fails() -> None:
    for result in (timed_out(), signalled()):
        out = outcome_of(job(retry_on_exit=(75, 143, 137)), result, cancelled=False,
                         shutdown=False)
        # 128+N is how a shell reports it, but the command never exited with it.
        assert out.state is JobState.FAILED, result


def test_outcome_with_no_retry_on_exit() -> None:
    never = outcome_of(job(no_retry_on_exit=(2,)), exited(2), cancelled=False, shutdown=False)
    assert never.state is JobState.FAILED
    other = outcome_of(job(no_retry_on_exit=(2,)), exited(1), cancelled=False, shutdown=False)
    assert other.state is JobState.QUEUED
    kill = outcome_of(job(no_retry_on_exit=(2,)), timed_out(), cancelled=False, shutdown=False)
    assert kill.state is JobState.QUEUED


def test_outcome_without_lists_retries_any_failure() -> None:
    assert outcome_of(job(), exited(1), cancelled=False, shutdown=False).state is JobState.QUEUED
    assert outcome_of(job(), timed_out(), cancelled=False,
                      shutdown=False).state is JobState.QUEUED
