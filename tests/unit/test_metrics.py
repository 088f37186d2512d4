"""jobctl/metrics.py without a worker: the outcome labels, the health rule (a failed renewal or
one older than the lease is unhealthy), and the HTTP server's two paths."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from jobctl.errors import InvalidInput
from jobctl.metrics import NO_METRICS, WorkerMetrics, outcome_label, serve
from jobctl.models import JobState
from jobctl.store.queue import Outcome


def outcome(state: JobState, attempt_outcome: str) -> Outcome:
    return Outcome(job_id=1, attempt=1, state=state, attempt_outcome=attempt_outcome,
                   exit_code=None, signal=None, error=None)


@pytest.mark.parametrize(("state", "attempt_outcome", "applied", "label"), [
    (JobState.SUCCEEDED, "succeeded", True, "succeeded"),
    (JobState.FAILED, "failed", True, "failed"),
    (JobState.CANCELLED, "cancelled", True, "cancelled"),
    (JobState.QUEUED, "failed", True, "retried"),
    (JobState.QUEUED, "released", True, "released"),
    (JobState.SUCCEEDED, "succeeded", False, "lost"),
])
def test_outcome_labels(state: JobState, attempt_outcome: str, applied: bool, label: str) -> None:
    assert outcome_label(outcome(state, attempt_outcome), applied) == label


def test_health_follows_renewals() -> None:
    metrics = WorkerMetrics(lease_s=0.3)
    assert metrics.health() == (True, "ok")
    metrics.renewal_failed()
    healthy, reason = metrics.health()
    assert not healthy and "failing" in reason
    metrics.renewed()
    assert metrics.health()[0]
    time.sleep(0.35)  # no renewal for longer than the lease
    healthy, reason = metrics.health()
    assert not healthy and "no lease renewal" in reason


def test_the_no_op_metrics_accept_every_event() -> None:
    NO_METRICS.watch_slots(lambda: 1, 2)
    NO_METRICS.claimed("q")
    NO_METRICS.ran(1, "q", 0.1, 0.2)
    NO_METRICS.finished(outcome(JobState.SUCCEEDED, "succeeded"), True)
    NO_METRICS.renewed()
    NO_METRICS.renewal_failed()
    assert not hasattr(NO_METRICS, "registry")


def test_server_serves_metrics_and_health_from_any_registry() -> None:
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    Counter("scheduler_ticks", "Ticks.", registry=registry).inc(3)
    state = {"healthy": True}
    server = serve(0, registry, lambda: (state["healthy"], "ok" if state["healthy"] else "stuck"),
                   "127.0.0.1")
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert "scheduler_ticks_total 3.0" in response.read().decode()
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            assert (response.status, response.read()) == (200, b"ok\n")
        state["healthy"] = False
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(f"{base}/healthz", timeout=5)
        assert unhealthy.value.code == 503 and unhealthy.value.read() == b"stuck\n"
    finally:
        server.close()
    with pytest.raises(InvalidInput, match="cannot listen"):
        serve(-1, registry, lambda: (True, "ok"), "127.0.0.1")


def test_overdue_gauges_follow_the_last_report() -> None:
    """`jobctl_schedule_overdue{schedule}` and `jobctl_check_overdue{check}`: one sample per
    switch the scheduler last reported, 1 or 0; one no longer reported is gone."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from jobctl.metrics import SchedulerMetrics
    from jobctl.store.overdue import Overdue

    def samples(metrics: SchedulerMetrics) -> dict[tuple[str, str], float]:
        text = generate_latest(metrics.registry).decode()
        return {(sample.name, next(iter(sample.labels.values()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name in ("jobctl_schedule_overdue", "jobctl_check_overdue")}

    metrics = SchedulerMetrics(poll_s=1.0)
    assert samples(metrics) == {}  # nothing reported yet
    metrics.overdue(Overdue(schedules={"backup": True, "report": False},
                            checks={"cron-host": False}))
    assert samples(metrics) == {("jobctl_schedule_overdue", "backup"): 1.0,
                                ("jobctl_schedule_overdue", "report"): 0.0,
                                ("jobctl_check_overdue", "cron-host"): 0.0}
    metrics.overdue(Overdue(schedules={"backup": False}, checks={"cron-host": True}))
    assert samples(metrics) == {("jobctl_schedule_overdue", "backup"): 0.0,
                                ("jobctl_check_overdue", "cron-host"): 1.0}
