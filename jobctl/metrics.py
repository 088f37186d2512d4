"""Prometheus metrics and a health endpoint for long-running processes (workers, schedulers).

A worker reports events to a `WorkerMetrics` object, one cheap call per event. Without
`--metrics-port` it gets `NO_METRICS`, whose methods do nothing, and prometheus_client is never
imported: the hot path pays one no-op method call per event.

`serve(port, registry, health)` starts a small HTTP server thread with two paths:

- `/metrics`: the registry in Prometheus' text format;
- `/healthz`: 200 `ok` while `health()` says healthy, 503 with the reason otherwise, for a load
  balancer or a Kubernetes probe. A scheduler can pass its own registry and health function.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobctl.errors import InvalidInput

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from jobctl.accounting import Usage
    from jobctl.store.overdue import Overdue
    from jobctl.store.queue import Outcome

# (healthy, reason): the reason is what /healthz says.
HealthCheck = Callable[[], tuple[bool, str]]

# Run times of shell jobs: from well under a second to hours.
RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
# CPU seconds of one attempt (user + system, its whole tree).
CPU_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# Peak memory of one attempt's tree: 1 MiB to 64 GiB, by powers of four.
MEMORY_BUCKETS = tuple(float(1 << shift) for shift in range(20, 37, 2))
# Claim to start: near zero, unless jobs wait in the read-ahead buffer.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class NoMetrics:
    """What a worker reports to when metrics are off: every method does nothing."""

    def watch_slots(self, in_use: Callable[[], int], total: int) -> None:
        pass

    def claimed(self, queue: str) -> None:
        pass

    def ran(self, job_id: int, queue: str, waited_s: float, ran_s: float) -> None:
        pass

    def finished(self, outcome: Outcome, applied: bool) -> None:
        pass

    def used(self, queue: str, usage: Usage) -> None:
        pass

    def renewed(self) -> None:
        pass

    def renewal_failed(self) -> None:
        pass


NO_METRICS = NoMetrics()


def outcome_label(outcome: Outcome, applied: bool) -> str:
    """What became of an attempt, as the `outcome` label says it."""
    if not applied:
        return "lost"  # the lease was lost: the result was discarded
    if outcome.attempt_outcome == "released":
        return "released"  # the worker shut down under it; it runs again elsewhere
    if outcome.state.value == "queued":
        return "retried"
    return outcome.state.value  # succeeded, failed, cancelled


class WorkerMetrics(NoMetrics):
    """A worker's counters, histograms and gauges in a registry of their own, and its health:
    healthy while its last lease renewal succeeded and is younger than the lease."""

    def __init__(self, lease_s: float) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.lease_s = lease_s
        self._lock = threading.Lock()
        self._last_renewal_ok = time.monotonic()  # registering counts as the first heartbeat
        self._renewal_failing = False
        self._queues: dict[int, str] = {}  # job id → queue, from run to reported outcome
        registry = self.registry
        self._claimed = Counter("jobctl_jobs_claimed", "Jobs this worker claimed.", ["queue"],
                                registry=registry)
        self._finished = Counter(
            "jobctl_jobs_finished",
            "Attempts this worker ended, by outcome: succeeded, failed, cancelled, retried "
            "(failed, queued again), released (at shutdown), lost (lease lost, result "
            "discarded).", ["queue", "outcome"], registry=registry)
        self._run_seconds = Histogram("jobctl_job_run_seconds",
                                      "How long each attempt's process ran.", ["queue"],
                                      buckets=RUN_BUCKETS, registry=registry)
        self._claim_to_start = Histogram(
            "jobctl_job_claim_to_start_seconds",
            "From claiming a job to starting its process.", ["queue"],
            buckets=LATENCY_BUCKETS, registry=registry)
        self._cpu_seconds = Histogram(
            "jobctl_job_cpu_seconds",
            "CPU seconds (user + system) of each attempt's process tree.", ["queue"],
            buckets=CPU_BUCKETS, registry=registry)
        self._peak_memory = Histogram(
            "jobctl_job_peak_memory_bytes",
            "Peak memory of each attempt's process tree (its cgroup's memory.peak, else the "
            "largest resident set of its processes).", ["queue"], buckets=MEMORY_BUCKETS,
            registry=registry)
        self._oom_kills = Counter(
            "jobctl_job_oom_kills", "Attempts the kernel killed for memory (--mem in a cgroup).",
            ["queue"], registry=registry)
        self._renewals = Counter("jobctl_lease_renewals",
                                 "Successful lease renewals (heartbeats).", registry=registry)
        self._renewal_failures = Counter("jobctl_lease_renewal_failures",
                                         "Lease renewals that failed (database unavailable).",
                                         registry=registry)
        self._slots = Gauge("jobctl_worker_slots", "Slots (--concurrency).", registry=registry)
        self._slots_in_use = Gauge("jobctl_worker_slots_in_use", "Slots running a job.",
                                   registry=registry)
        self._healthy = Gauge("jobctl_worker_healthy",
                              "1 while leases are renewed on time (as /healthz), else 0.",
                              registry=registry)
        self._healthy.set_function(lambda: 1.0 if self.health()[0] else 0.0)

    def watch_slots(self, in_use: Callable[[], int], total: int) -> None:
        self._slots.set(total)
        self._slots_in_use.set_function(lambda: float(in_use()))

    def claimed(self, queue: str) -> None:
        self._claimed.labels(queue).inc()

    def ran(self, job_id: int, queue: str, waited_s: float, ran_s: float) -> None:
        self._claim_to_start.labels(queue).observe(max(0.0, waited_s))
        self._run_seconds.labels(queue).observe(max(0.0, ran_s))
        with self._lock:
            self._queues[job_id] = queue

    def finished(self, outcome: Outcome, applied: bool) -> None:
        with self._lock:
            queue = self._queues.pop(outcome.job_id, "")
        self._finished.labels(queue, outcome_label(outcome, applied)).inc()

    def used(self, queue: str, usage: Usage) -> None:
        cpu_s = usage.cpu_s
        if cpu_s is not None:
            self._cpu_seconds.labels(queue).observe(max(0.0, cpu_s))
        if usage.max_rss_bytes is not None:
            self._peak_memory.labels(queue).observe(max(0, usage.max_rss_bytes))
        self._oom_kills.labels(queue)  # the series exists from the queue's first attempt on
        if usage.oom_killed:
            self._oom_kills.labels(queue).inc()

    def renewed(self) -> None:
        self._renewals.inc()
        with self._lock:
            self._last_renewal_ok = time.monotonic()
            self._renewal_failing = False

    def renewal_failed(self) -> None:
        self._renewal_failures.inc()
        with self._lock:
            self._renewal_failing = True

    def health(self) -> tuple[bool, str]:
        with self._lock:
            age = time.monotonic() - self._last_renewal_ok
            failing = self._renewal_failing
        if failing:
            return False, f"lease renewal failing (last success {age:.1f}s ago)"
        if age > self.lease_s:
            return False, f"no lease renewal for {age:.1f}s (lease {self.lease_s:g}s)"
        return True, "ok"


class SchedulerMetrics:
    """A scheduler's counters in a registry of their own, and its health: healthy while its
    last pass over the schedules succeeded and is recent (it passes at least every poll)."""

    def __init__(self, poll_s: float) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        # A pass is due at least every poll; allow for one slow pass before calling it stuck.
        self.stale_after_s = 2 * poll_s + 10.0
        self._lock = threading.Lock()
        self._last_pass_ok = time.monotonic()
        self._failing: str | None = None
        registry = self.registry
        self._occurrences = Counter(
            "jobctl_schedule_occurrences",
            "Schedule occurrences by what became of them: fired (a job or workflow started), "
            "skipped (overlap forbid), missed (misfire policy).", ["result"], registry=registry)
        self._lateness = Histogram("jobctl_schedule_lateness_seconds",
                                   "From an occurrence's fire time to its job's creation.",
                                   buckets=LATENCY_BUCKETS, registry=registry)
        self._rescued = Counter("jobctl_jobs_rescued",
                                "Jobs of expired leases taken back (requeued or ended).",
                                registry=registry)
        self._pruned = Counter("jobctl_jobs_pruned", "Finished jobs deleted by retention.",
                               registry=registry)
        self._failures = Counter("jobctl_scheduler_pass_failures",
                                 "Passes that failed (database unavailable or aborted).",
                                 registry=registry)
        self._healthy = Gauge("jobctl_scheduler_healthy",
                              "1 while passes succeed on time (as /healthz), else 0.",
                              registry=registry)
        self._healthy.set_function(lambda: 1.0 if self.health()[0] else 0.0)
        self._overdue: Overdue | None = None  # dead-man's switches, as the last pass left them
        registry.register(_OverdueCollector(self))

    def overdue(self, switches: Overdue) -> None:
        """Which schedules (with --alert-after) and checks are overdue now: a gauge per switch
        (`jobctl_schedule_overdue{schedule}`, `jobctl_check_overdue{check}`, 1 or 0), its
        labels exactly the switches that exist."""
        with self._lock:
            self._overdue = switches

    def fired(self, jobs: int, skipped: int, missed: int, lateness_s: list[float]) -> None:
        self._occurrences.labels("fired").inc(jobs)
        self._occurrences.labels("skipped").inc(skipped)
        self._occurrences.labels("missed").inc(missed)
        for seconds in lateness_s:
            self._lateness.observe(max(0.0, seconds))

    def rescued(self, count: int) -> None:
        self._rescued.inc(count)

    def pruned(self, count: int) -> None:
        self._pruned.inc(count)

    def pass_ok(self) -> None:
        with self._lock:
            self._last_pass_ok = time.monotonic()
            self._failing = None

    def pass_failed(self, why: str) -> None:
        self._failures.inc()
        with self._lock:
            self._failing = why

    def health(self) -> tuple[bool, str]:
        with self._lock:
            age = time.monotonic() - self._last_pass_ok
            failing = self._failing
        if failing:
            return False, f"scheduler pass failing: {failing} (last success {age:.1f}s ago)"
        if age > self.stale_after_s:
            return False, f"no scheduler pass for {age:.1f}s"
        return True, "ok"


class _OverdueCollector:
    """`jobctl_schedule_overdue` and `jobctl_check_overdue`, from what the scheduler's last
    overdue pass reported (SchedulerMetrics.overdue): a switch removed is gone from the next
    scrape, not left at its last value."""

    def __init__(self, metrics: SchedulerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        with self._metrics._lock:
            switches = self._metrics._overdue
        schedules = GaugeMetricFamily(
            "jobctl_schedule_overdue",
            "1 while the schedule (with --alert-after) is overdue: no succeeded run for longer "
            "than that; else 0.", labels=["schedule"])
        checks = GaugeMetricFamily(
            "jobctl_check_overdue",
            "1 while the check is overdue: no successful ping within its period and grace, or "
            "a failure ping; else 0.", labels=["check"])
        if switches is not None:
            for name, overdue in sorted(switches.schedules.items()):
                schedules.add_metric([name], 1.0 if overdue else 0.0)
            for name, overdue in sorted(switches.checks.items()):
                checks.add_metric([name], 1.0 if overdue else 0.0)
        yield schedules
        yield checks


class MetricsServer:
    """The HTTP server thread behind `serve`; `close()` stops it."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, name="jobctl-metrics",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(port: int, registry: Any, health: HealthCheck, address: str = "127.0.0.1"
          ) -> MetricsServer:
    """Serve `/metrics` (the registry) and `/healthz` (`health()`) on `address:port` from a
    daemon thread. A port that cannot be bound is invalid input."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                healthy, reason = health()
                self._reply(200 if healthy else 503, f"{reason}\n".encode(),
                            "text/plain; charset=utf-8")
            else:
                self._reply(404, b"not found: try /metrics or /healthz\n",
                            "text/plain; charset=utf-8")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is not news

    try:
        server = ThreadingHTTPServer((address, port), Handler)
    except (OSError, OverflowError) as error:  # OverflowError: a port out of range
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise InvalidInput(f"--metrics-port: cannot listen on {address}:{port}: "
                           f"{reason}") from error
    server.daemon_threads = True
    return MetricsServer(server)
