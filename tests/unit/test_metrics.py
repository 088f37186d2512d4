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
