"""/healthz follows the database: a worker with `--metrics-port` answers 200 while it renews its
leases, 503 once the test's own PostgreSQL server is stopped, and 200 again when it is back; the
scrape counts the failed renewals and the jobs run before and after."""

from __future__ import annotations

from chaos_support import CHAOS_WORKER_OPTIONS
from e2e_support import Jobctl, wait_for
from metrics_support import free_port, health, sample, scrape  # tests/e2e, via conftest.py


def test_healthz_turns_503_without_the_database_and_200_when_it_returns(
        restartable_jobctl: Jobctl) -> None:
    jobctl = restartable_jobctl
    cluster = jobctl.cluster  # type: ignore[attr-defined]
    port = free_port()
    jobctl.ok("db", "upgrade")
    worker = jobctl.start_worker(*CHAOS_WORKER_OPTIONS, "--metrics-port", str(port),
                                 "--metrics-address", "127.0.0.1")
    first = jobctl.submit("--", "true")
    wait_for(lambda: jobctl.status(first)["state"] == "succeeded", 30, "the first job did not run")
    wait_for(lambda: health(port) == 200, 10, "not healthy with the database up")
    wait_for(lambda: sample(scrape(port), "jobctl_jobs_finished_total", queue="default",
                            outcome="succeeded") == 1, 10, "the first job was not counted")

    cluster.stop_server()
    try:
        # Leases of 3 s are renewed every second: the first failed renewal turns it 503.
        wait_for(lambda: health(port) == 503, 10, lambda: f"still {health(port)} without the "
                 f"database:\n{worker.log()[-3000:]}", interval_s=0.2)
        assert sample(scrape(port), "jobctl_worker_healthy") == 0
        assert sample(scrape(port), "jobctl_lease_renewal_failures_total") >= 1
    finally:
        cluster.start_server()

    wait_for(lambda: health(port) == 200, 30, lambda: f"still {health(port)} with the database "
             f"back:\n{worker.log()[-3000:]}", interval_s=0.2)
    second = jobctl.submit("--", "true")
    wait_for(lambda: jobctl.status(second)["state"] == "succeeded", 30,
             "no job ran after the database came back")
    wait_for(lambda: sample(scrape(port), "jobctl_jobs_finished_total", queue="default",
                            outcome="succeeded") == 2, 10, "the second job was not counted")
    assert worker.process.poll() is None
