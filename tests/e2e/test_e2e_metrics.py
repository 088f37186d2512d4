"""`worker start --metrics-port`: a real worker runs real jobs and its /metrics counters move —
claimed, finished by outcome (succeeded, retried, failed), run-time and claim-to-start
histograms, lease renewals, slots — and /healthz answers 200 while it renews its leases.
Without the option, prometheus_client is never imported."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from e2e_support import Jobctl, describe, wait_for
from metrics_support import free_port, health, sample, scrape


def test_the_scrape_shows_the_counters_moving(jobctl_sqlite: Jobctl) -> None:
    jobctl = jobctl_sqlite
    port = free_port()
    worker = jobctl.start_worker("--concurrency", "2", "--lease", "3s", "--metrics-port",
                                 str(port), "--metrics-address", "127.0.0.1")
    before = wait_for(lambda: _try_scrape(port), 15, "no /metrics")
    assert sample(before, "jobctl_jobs_claimed_total", queue="default") == 0
    assert sample(before, "jobctl_worker_slots") == 2
    assert health(port) == 200

    ok = [jobctl.submit("--", "true") for _ in range(2)]
    failing = jobctl.submit("--retries", "1", "--retry-backoff", "0.1s", "--", "sh", "-c",
                            "exit 7")
    wait_for(lambda: all(jobctl.status(i)["state"] in ("succeeded", "failed")
                         for i in [*ok, failing]), 60, "the jobs did not finish")

    def finished(outcome: str) -> float:
        return sample(scrape(port), "jobctl_jobs_finished_total", queue="default",
                      outcome=outcome)

    # Counted once the results are written, which is just before `job status` can see them.
    wait_for(lambda: finished("failed") == 1, 10, lambda: f"{scrape(port)}")
    after = scrape(port)
    assert sample(after, "jobctl_jobs_claimed_total", queue="default") == 4  # 2 + 2 attempts
    assert sample(after, "jobctl_jobs_finished_total", queue="default", outcome="succeeded") == 2
    assert sample(after, "jobctl_jobs_finished_total", queue="default", outcome="retried") == 1
    assert sample(after, "jobctl_jobs_finished_total", queue="default", outcome="failed") == 1
    assert sample(after, "jobctl_job_run_seconds_count", queue="default") == 4
    assert sample(after, "jobctl_job_claim_to_start_seconds_count", queue="default") == 4
    assert sample(after, "jobctl_worker_slots_in_use") == 0
    # A 3 s lease is renewed every second.
    wait_for(lambda: sample(scrape(port), "jobctl_lease_renewals_total") >= 2, 10,
             "no lease renewals counted")
    assert sample(scrape(port), "jobctl_lease_renewal_failures_total") == 0
    assert sample(scrape(port), "jobctl_worker_healthy") == 1
    assert health(port) == 200
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=5)
    assert missing.value.code == 404
    assert worker.process.poll() is None


def test_slots_in_use_while_a_job_runs(jobctl_sqlite: Jobctl) -> None:
    jobctl = jobctl_sqlite
    port = free_port()
    jobctl.start_worker("--concurrency", "3", "--metrics-port", str(port),
                        "--metrics-address", "127.0.0.1")
    job = jobctl.submit("--", "sleep", "30")
    wait_for(lambda: sample(scrape(port), "jobctl_worker_slots_in_use") == 1, 20,
             "the running job does not show as a slot in use")
    jobctl.ok("job", "cancel", str(job))
    wait_for(lambda: sample(scrape(port), "jobctl_jobs_finished_total", queue="default",
                            outcome="cancelled") == 1, 20, "the cancel was not counted")
    assert sample(scrape(port), "jobctl_worker_slots_in_use") == 0


def test_a_port_in_use_is_a_one_line_error(jobctl_sqlite: Jobctl) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = jobctl_sqlite("worker", "start", "--burst", "--metrics-port", str(port),
                               "--metrics-address", "127.0.0.1")
    assert result.returncode == 2, describe(result)
    assert result.stderr.startswith("jobctl: error: --metrics-port: cannot listen on")
    assert result.stderr.count("\n") == 1


def test_without_a_metrics_port_prometheus_client_is_never_imported(
        jobctl_sqlite: Jobctl) -> None:
    """The worker's hot path reports to a no-op object instead."""
    code = ("import sys\n"
            "from jobctl.cli.app import run\n"
            "status = run(['worker', 'start', '--burst', '--quiet'])\n"
            "assert status == 0, status\n"
            "assert 'prometheus_client' not in sys.modules, 'imported'\n")
    jobctl_sqlite.submit("--", "true")
    result = subprocess.run([sys.executable, "-c", code], env=jobctl_sqlite.env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, describe(result)
    assert jobctl_sqlite.status(1)["state"] == "succeeded"


def _try_scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
    try:
        return scrape(port)
    except OSError:
        return None


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on TCP `port` (IPv4 and IPv6), from
    /proc/net/tcp{,6}: "127.0.0.1", "0.0.0.0", "::", …"""
    import ipaddress

    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            # Each 32-bit word in the kernel's (little-endian) byte order.
            raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1]
                           for i in range(0, len(address), 8))
            found.add(str(ipaddress.ip_address(raw)) if len(raw) == width else address)
    return found


def test_metrics_listen_on_127_0_0_1_by_default(jobctl_sqlite: Jobctl) -> None:
    """Without --metrics-address, /metrics and /healthz are this machine's only: the socket is
    bound to 127.0.0.1, not to every interface."""
    port = free_port()
    jobctl_sqlite.start_worker("--metrics-port", str(port))
    wait_for(lambda: _try_scrape(port), 15, "no /metrics on 127.0.0.1")
    assert health(port) == 200
    assert _listening_addresses(port) == {"127.0.0.1"}


def test_metrics_address_still_chooses(jobctl_sqlite: Jobctl) -> None:
    port = free_port()
    jobctl_sqlite.start_worker("--metrics-port", str(port), "--metrics-address", "0.0.0.0")
    wait_for(lambda: _try_scrape(port), 15, "no /metrics")
    assert _listening_addresses(port) == {"0.0.0.0"}
