"""A fleet of hosts in Linux network namespaces, for tests of a real cluster's failures.

`Fleet` makes a "switch" namespace holding a bridge, and one namespace per host joined to it by
a veth pair (`eth0` in the host, a port of the bridge in the switch), each host with its own
address on 10.77.0.0/24. Nothing is added to the machine's own namespace: the fleets of tests
running in parallel use the same addresses, each in namespaces of its own.

`Fleet.cut(host)` disables the host's port of the bridge (`bridge link set … state disabled`):
the switch silently drops every frame to and from it while both ends of the link stay up, as a
failed switch port or a dropped route does, so neither side is told anything. `heal(host)` sets
the port forwarding again. Only iproute2 (`ip`, `bridge`) is needed: no netem, no firewall.

PostgreSQL runs in its host's namespace (`NetnsPgCluster`, tests/pgcluster.py run through
`ip netns exec`), listening on the host's address; the test process itself, in the machine's
namespace, reaches it through its unix socket (path-named sockets are not confined by network
namespaces), which no cut touches. jobctl runs in a host with `ip netns exec NS jobctl …`.

Nothing outlives the test: `Fleet.close()` (fixture teardown) kills whatever still runs in the
namespaces and deletes them; an atexit hook does the same if the teardown never ran; and a
watchdog process, which reads its stdin until the test process has gone however it went
(SIGKILL, a timed-out xdist worker), does it then. Namespaces are named `jfleet-PID-N-HOST`, so
`sweep_orphans()` also removes those of a test process that died with its watchdog.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from e2e_support import JOBCTL, Worker, wait_for
from pgcluster import SETTINGS, PgCluster, _pg_binary

SUBNET = "10.77.0"
PREFIX = "jfleet"
PG_PORT = 5432
_sequence = itertools.count(1)

# Kills every process left in the namespaces and deletes them: run by the watchdog once the
# test process has gone, and by Fleet.close().
_CLEANUP = """
import os, signal, subprocess, sys, time
names = sys.argv[1:]
def pids(name):
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]
for _ in range(50):
    left = [pid for name in names for pid in pids(name)]
    if not left:
        break
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.1)
for name in names:
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
"""

_WATCHDOG = "import sys; sys.stdin.buffer.read(); names = sys.argv[1:]\n" + _CLEANUP


def unavailable() -> str | None:
    """Why this machine cannot run the fleet tests (None: it can). Probed by making and deleting
    a namespace, as the fleet would."""
    if sys.platform != "linux":
        return f"network namespaces are Linux's ({sys.platform})"
    for tool in ("ip", "bridge"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    name = f"{PREFIX}-{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"the kernel refused a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def sweep_orphans() -> None:
    """Delete the namespaces of fleets whose test process is gone (and their processes)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    orphans = []
    for line in listed.splitlines():
        match = re.match(rf"({PREFIX}-(\d+)-\S+)", line)
        if match and not Path(f"/proc/{match.group(2)}").exists():
            orphans.append(match.group(1))
    if orphans:
        subprocess.run([sys.executable, "-c", _CLEANUP, *orphans], capture_output=True)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass(frozen=True)
class Host:
    name: str  # also its JOBCTL_HOSTNAME
    netns: str
    address: str
    port: str  # its port of the bridge, in the switch's namespace


class Fleet:
    """A switch and the hosts joined to it; see the module docstring."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tag = f"{PREFIX}-{os.getpid()}-{next(_sequence)}"
        self.switch = f"{self.tag}-switch"
        self.hosts: dict[str, Host] = {}
        self._names: list[str] = []
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._cut_since: dict[str, float] = {}
        atexit.register(self.close)
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._names.append(name)
        # One watchdog for the fleet, told every namespace: restarted with the longer list.
        self._restart_watchdog()
        _ip("-n", name, "link", "set", "lo", "up")

    def _restart_watchdog(self) -> None:
        old, self._watchdog = self._watchdog, subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, *self._names], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if old is not None:
            old.kill()  # not its stdin: closing that would make it clean up
            old.wait()

    def add_host(self, name: str) -> Host:
        netns = f"{self.tag}-{name}"
        address = f"{SUBNET}.{len(self.hosts) + 10}"
        port = f"p-{name}"
        self._add_namespace(netns)
        _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", netns)
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        host = Host(name, netns, address, port)
        self.hosts[name] = host
        return host

    # --- the network ----------------------------------------------------------------------

    def cut(self, host: Host) -> float:
        """Every frame to and from `host` dropped from now on; returns when (time.time())."""
        subprocess.run(["bridge", "-n", self.switch, "link", "set", "dev", host.port,
                        "state", "0"], check=True, capture_output=True)
        at = time.time()
        self._cut_since[host.name] = at
        return at

    def heal(self, host: Host) -> float:
        subprocess.run(["bridge", "-n", self.switch, "link", "set", "dev", host.port,
                        "state", "3"], check=True, capture_output=True)
        self._cut_since.pop(host.name, None)
        return time.time()

    def reachable(self, source: Host, target: Host, port: int) -> bool:
        """Whether a TCP connection from `source` to `target:port` gets an answer (accepted or
        refused) within a second."""
        probe = ("import socket, sys\n"
                 "try:\n"
                 f"    socket.create_connection(('{target.address}', {port}), timeout=1)\n"
                 "except ConnectionRefusedError:\n    pass\n"
                 "except OSError:\n    sys.exit(1)\n")
        result = subprocess.run(["ip", "netns", "exec", source.netns, sys.executable, "-c",
                                 probe], capture_output=True, timeout=30)
        return result.returncode == 0

    # --- processes in a host ----------------------------------------------------------------

    def argv(self, host: Host, *args: str) -> list[str]:
        return ["ip", "netns", "exec", host.netns, str(JOBCTL), *args]

    def env(self, host: Host, database_url: str) -> dict[str, str]:
        return {**os.environ, "JOBCTL_DATABASE_URL": database_url,
                "JOBCTL_HOSTNAME": host.name}

    def start(self, host: Host, database_url: str, label: str, *args: str) -> Worker:
        """`jobctl ARGS…` in `host`, in the background (a session of its own), its output in
        FOLDER/LABEL.log; a `Worker` (e2e_support) whether a worker or a scheduler. `ip netns
        exec` execs jobctl in place, so the pid is jobctl's."""
        log_path = self.folder / f"{label}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(self.argv(host, *args), env=self.env(host, database_url),
                                       stdin=subprocess.DEVNULL, stdout=log_file,
                                       stderr=log_file, start_new_session=True)
        return Worker(process, log_path)

    def close(self) -> None:
        """Heal, kill what still runs in the namespaces, delete them. Safe to call twice."""
        if not self._names:
            return
        names, self._names = self._names, []
        subprocess.run([sys.executable, "-c", _CLEANUP, *names], capture_output=True,
                       timeout=60, check=False)
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        atexit.unregister(self.close)


class NetnsPgCluster(PgCluster):
    """tests/pgcluster.py's throwaway cluster, run in `host`'s namespace and listening on its
    address (port 5432); `admin_url` and `database_url` name its unix socket, which the test
    process reaches from any namespace, and `host_url` the TCP address the fleet uses."""

    def __init__(self, host: Host) -> None:
        super().__init__({**SETTINGS, "listen_addresses": f"'{host.address}'"})
        self.host = host

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.folder}&port={PG_PORT}"

    def host_url(self, database: str) -> str:
        return f"postgresql://postgres@{self.host.address}:{PG_PORT}/{database}"

    def _write_settings(self) -> None:
        super()._write_settings()
        with (self.data_dir / "pg_hba.conf").open("a", encoding="utf-8") as hba:
            hba.write(f"host all all {SUBNET}.0/24 trust\n")

    def _start_on_free_port(self) -> None:
        self._port = PG_PORT  # the namespace is the server's own: the port is free
        self._pg_ctl_start()

    def _run_tool(self, tool: str, *args: str, check: bool = True) -> None:
        """As PgCluster's, but `pg_ctl start` runs in the host's namespace, which the server
        inherits. The rest (initdb, stopping: a signal to the postmaster's pid) works from
        anywhere, also once the namespace is gone."""
        if "start" not in args:
            super()._run_tool(tool, *args, check=check)
            return
        argv = ["ip", "netns", "exec", self.host.netns, _pg_binary(tool), *args]
        if self._owner is not None:
            argv[4:4] = ["runuser", "-u", self._owner.pw_name, "--"]
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, start_new_session=True, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} failed (exit status {result.returncode}): "
                               f"{(result.stderr or result.stdout).strip()}\n{self._log_tail()}")


def wait_reachable(fleet: Fleet, source: Host, target: Host, port: int,
                   timeout_s: float = 10.0) -> None:
    wait_for(lambda: fleet.reachable(source, target, port), timeout_s,
             f"{target.name}:{port} not reachable from {source.name}", interval_s=0.2)


def sigkill_group(worker: Worker) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(worker.pid, signal.SIGKILL)
