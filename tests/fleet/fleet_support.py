"""The fleet as a test sees it (`NetnsCluster`, made by tests/fleet/conftest.py's fixture).
A module of its own, not conftest.py: the test modules import it by name, and `conftest` names
another module in every test folder."""

from __future__ import annotations

from dataclasses import dataclass, field

from e2e_support import Jobctl, Worker
from netns import Fleet, Host, NetnsPgCluster


@dataclass
class NetnsCluster:
    """The fleet, its database, and `jobctl`: the CLI run by the test itself, in the machine's
    namespace, through the server's unix socket (what no cut reaches: the observer)."""

    fleet: Fleet
    db: Host
    pg: NetnsPgCluster
    jobctl: Jobctl
    host_url: str  # what the hosts connect to: the database host's address
    started: list[Worker] = field(default_factory=list)

    def host(self, name: str) -> Host:
        return self.fleet.hosts[name]

    def worker(self, host: str, *args: str, name: str | None = None,
               wait_started: bool = True) -> Worker:
        """`jobctl worker start --name NAME ARGS…` on `host` (NAME: the host's name)."""
        label = name or host
        worker = self.fleet.start(self.host(host), self.host_url, f"worker-{label}",
                                  "worker", "start", "--name", label, *args)
        self.jobctl.workers.append(worker)  # stopped, and its log shown, by Jobctl.cleanup
        if wait_started:
            worker.wait_started()
        return worker

    def scheduler(self, host: str, *args: str) -> Worker:
        scheduler = self.fleet.start(self.host(host), self.host_url, f"scheduler-{host}",
                                     "scheduler", "run", *args)
        self.jobctl.workers.append(scheduler)
        return scheduler
