"""What a worker records when an attempt ends (`outcome_of`), and how long it waits before a
retry (`retry_delay`): exponential backoff with ±25 % jitter, capped."""

from __future__ import annotations

import signal

import pytest

from jobctl.models import Delivery, JobState
from jobctl.store.queue import ClaimedJob
from jobctl.worker.loop import MAX_BACKOFF_S, outcome_of, retry_delay
from jobctl.worker.process import ProcessResult

SAMPLES = 400


def job(attempt: int = 1, max_attempts: int = 1, backoff_s: float = 10.0,
        delivery: Delivery = Delivery.AT_LEAST_ONCE) -> ClaimedJob:
    return ClaimedJob(id=42, attempt=attempt, argv=["true"], env={}, cwd=None, timeout_s=None,
                      max_attempts=max_attempts, backoff_s=backoff_s, delivery=delivery,
                      queue="default")


def exited(code: int) -> ProcessResult:
    return ProcessResult(exit_code=code, signal=None, error=None if code == 0 else f"exit {code}",
                         kill_reason=None, started=True)


def killed(reason: str, sig: int = signal.SIGTERM) -> ProcessResult:
    return ProcessResult(exit_code=128 + sig, signal=sig, error=f"killed: {reason}",
                         kill_reason=reason, started=True)


def samples(backoff_s: float, attempt: int) -> list[float]:
    return [retry_delay(backoff_s, attempt) for _ in range(SAMPLES)]


def assert_jittered_around(values: list[float], nominal: float) -> None:
    assert all(0.75 * nominal <= v <= 1.25 * nominal for v in values), (
        nominal, min(values), max(values))
    if nominal > 0:
        # Jitter is there: 400 uniform draws spread over most of the ±25 % band.
        assert max(values) - min(values) > 0.3 * nominal


# --- outcome_of -----------------------------------------------------------------------------------


def test_success() -> None:
    out = outcome_of(job(), exited(0), cancelled=False, shutdown=False)
    assert (out.job_id, out.attempt) == (42, 1)
    assert out.state is JobState.SUCCEEDED
    assert out.attempt_outcome == "succeeded"
    assert out.exit_code == 0 and out.signal is None and out.error is None
    assert out.retry_delay_s == 0


def test_success_beats_a_late_cancel_or_shutdown() -> None:
    # The command finished on its own before the kill landed: its result stands.
    for cancelled, shutdown in ((True, False), (False, True)):
        out = outcome_of(job(), exited(0), cancelled=cancelled, shutdown=shutdown)
        assert out.state is JobState.SUCCEEDED


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
def test_failure_with_retries_left(attempt: int) -> None:
    claimed = job(attempt=attempt, max_attempts=5, backoff_s=10.0)
    delays = []
    for _ in range(SAMPLES):
        out = outcome_of(claimed, exited(3), cancelled=False, shutdown=False)
        assert out.state is JobState.QUEUED
        assert out.attempt_outcome == "failed"
        assert (out.attempt, out.exit_code, out.error) == (attempt, 3, "exit 3")
        delays.append(out.retry_delay_s)
    assert_jittered_around(delays, 10.0 * 2 ** (attempt - 1))


def test_failure_with_no_retries_left() -> None:
    for claimed in (job(attempt=1, max_attempts=1), job(attempt=3, max_attempts=3)):
        out = outcome_of(claimed, exited(1), cancelled=False, shutdown=False)
        assert out.state is JobState.FAILED
        assert out.attempt_outcome == "failed"
        assert out.exit_code == 1
        assert out.retry_delay_s == 0


def test_timeout_is_a_failure_and_is_retried() -> None:
    out = outcome_of(job(attempt=1, max_attempts=2), killed("timeout"), cancelled=False,
                     shutdown=False)
    assert out.state is JobState.QUEUED and out.attempt_outcome == "failed"
    assert out.signal == signal.SIGTERM
    out = outcome_of(job(attempt=2, max_attempts=2), killed("timeout"), cancelled=False,
                     shutdown=False)
    assert out.state is JobState.FAILED


def test_cancelled() -> None:
    # Cancelled is final even with retries left, and whatever the delivery.
    for delivery in Delivery:
        claimed = job(attempt=1, max_attempts=5, delivery=delivery)
        out = outcome_of(claimed, killed("cancel"), cancelled=True, shutdown=False)
        assert out.state is JobState.CANCELLED
        assert out.attempt_outcome == "cancelled"
        assert out.signal == signal.SIGTERM
        assert out.retry_delay_s == 0


def test_cancel_wins_over_shutdown() -> None:
    out = outcome_of(job(max_attempts=3), killed("cancel"), cancelled=True, shutdown=True)
    assert out.state is JobState.CANCELLED


def test_shutdown_releases_an_at_least_once_job() -> None:
    # Even on its last attempt: the worker stopped under it, the job itself did not fail.
    for attempt, max_attempts in ((1, 1), (1, 3), (3, 3)):
        claimed = job(attempt=attempt, max_attempts=max_attempts)
        out = outcome_of(claimed, killed("shutdown"), cancelled=False, shutdown=True)
        assert out.state is JobState.QUEUED
        assert out.attempt_outcome == "released"
        assert out.retry_delay_s == 0
        assert out.error is not None and "shut down" in out.error


def test_shutdown_does_not_release_or_retry_an_at_most_once_job() -> None:
    # It has started, so it must never start again: not even with retries left.
    for attempt, max_attempts in ((1, 1), (1, 3)):
        claimed = job(attempt=attempt, max_attempts=max_attempts, delivery=Delivery.AT_MOST_ONCE)
        out = outcome_of(claimed, killed("shutdown"), cancelled=False, shutdown=True)
        assert out.state is JobState.FAILED
        assert out.attempt_outcome == "failed"
        assert out.retry_delay_s == 0


def test_a_job_killed_before_it_started_is_released_whatever_the_delivery() -> None:
    # Fenced or shut down while it waited in the read-ahead buffer: it never ran, so even an
    # at-most-once job on its last attempt may run elsewhere, and no retry is used up.
    never_started = ProcessResult(exit_code=None, signal=None, error="fenced", kill_reason="fenced",
                                  started=False)
    for delivery in Delivery:
        for shutdown in (False, True):
            claimed = job(attempt=1, max_attempts=1, delivery=delivery)
            out = outcome_of(claimed, never_started, cancelled=False, shutdown=shutdown)
            assert out.state is JobState.QUEUED
            assert out.attempt_outcome == "released"
            assert out.retry_delay_s == 0
            assert out.error is not None and "fenced" in out.error


def test_a_job_cancelled_before_it_started_is_cancelled() -> None:
    never_started = ProcessResult(exit_code=None, signal=None, error="cancelled",
                                  kill_reason="cancelled", started=False)
    out = outcome_of(job(max_attempts=3), never_started, cancelled=True, shutdown=False)
    assert out.state is JobState.CANCELLED


def test_a_command_that_cannot_start_fails() -> None:
    # Not started, but not killed either: its own fault, so it counts (exit 127 as in a shell).
    not_found = ProcessResult(exit_code=127, signal=None, error="command not found: nope",
                              kill_reason=None, started=False)
    out = outcome_of(job(), not_found, cancelled=False, shutdown=False)
    assert (out.state, out.exit_code) == (JobState.FAILED, 127)


# --- retry_delay ----------------------------------------------------------------------------------


def test_retry_delay_doubles_with_each_attempt() -> None:
    for attempt in range(1, 9):
        assert_jittered_around(samples(10.0, attempt), 10.0 * 2 ** (attempt - 1))


def test_retry_delay_of_attempt_zero_is_the_backoff() -> None:
    assert_jittered_around(samples(10.0, 0), 10.0)


def test_retry_delay_is_capped() -> None:
    assert MAX_BACKOFF_S >= 60
    # 10 s * 2^19 is days; the cap holds (jitter applies around it).
    for attempt in (12, 20, 60):
        assert_jittered_around(samples(10.0, attempt), MAX_BACKOFF_S)


def test_retry_delay_cap_never_cuts_the_first_backoff() -> None:
    # A backoff longer than the cap is what the user asked for; it is not shortened.
    assert_jittered_around(samples(2 * MAX_BACKOFF_S, 1), 2 * MAX_BACKOFF_S)
    assert_jittered_around(samples(2 * MAX_BACKOFF_S, 5), 2 * MAX_BACKOFF_S)


def test_retry_delay_without_backoff_is_zero() -> None:
    assert samples(0.0, 1) == [0.0] * SAMPLES
    assert samples(0.0, 30) == [0.0] * SAMPLES


def test_retry_delay_of_a_very_late_attempt_is_the_cap() -> None:
    # `--retries 5000` is accepted; attempt 1100 must not overflow (2**1099 exceeds a float).
    assert_jittered_around(samples(10.0, 1100), MAX_BACKOFF_S)
    out = outcome_of(job(attempt=1100, max_attempts=5001), exited(1), cancelled=False,
                     shutdown=False)
    assert out.state is JobState.QUEUED
    assert 0.75 * MAX_BACKOFF_S <= out.retry_delay_s <= 1.25 * MAX_BACKOFF_S


# --- losing the worker (fencing) ------------------------------------------------------------------


def test_a_job_fenced_by_its_own_worker_is_lost_not_failed() -> None:
    """The worker could not keep the lease and killed the job: that is the worker's failure.
    With default options (no retries, max_lost 3) an at-least-once job runs again, retries
    intact; an at-most-once job is lost."""
    fenced = killed("fenced: the worker could not renew its lease", signal.SIGKILL)
    out = outcome_of(job(), fenced, cancelled=False, shutdown=False, lost=True)
    assert (out.state, out.attempt_outcome, out.retry_delay_s) == (JobState.QUEUED, "lost", 0)
    most = outcome_of(job(delivery=Delivery.AT_MOST_ONCE), fenced, cancelled=False,
                      shutdown=False, lost=True)
    assert (most.state, most.attempt_outcome) == (JobState.LOST, "lost")


def test_the_last_allowed_loss_fails_the_job_and_says_why() -> None:
    fenced = killed("fenced", signal.SIGKILL)
    claimed = ClaimedJob(id=42, attempt=3, argv=["true"], env={}, cwd=None, timeout_s=None,
                         max_attempts=3, backoff_s=10.0, delivery=Delivery.AT_LEAST_ONCE,
                         queue="default", losses=2, max_lost=3)
    out = outcome_of(claimed, fenced, cancelled=False, shutdown=False, lost=True)
    assert (out.state, out.attempt_outcome) == (JobState.FAILED, "lost")
    assert out.error is not None and "3 workers lost under it" in out.error
    # A cancel wins over the loss: the user asked for it.
    cancelled = outcome_of(claimed, fenced, cancelled=True, shutdown=False, lost=True)
    assert cancelled.state is JobState.CANCELLED
