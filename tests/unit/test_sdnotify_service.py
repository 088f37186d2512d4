"""sd_notify (jobctl.sdnotify) against a real datagram socket, and the systemd units of
`jobctl service print` (jobctl.service), checked by `systemd-analyze verify`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from inprocess import run_cli

from jobctl.sdnotify import Notifier
from jobctl.service import ServiceKind, unit_text


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_stopping_and_watchdog_reach_the_socket(
        listening: tuple[str, socket.socket]) -> None:
    path, sock = listening
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    assert notifier.active and notifier.watchdog_s == 0.4
    assert notifier.ready("worker w (id 7)")
    assert received(sock) == ["READY=1", f"MAINPID={os.getpid()}", "STATUS=worker w (id 7)"]
    assert notifier.watchdog()
    assert received(sock) == ["WATCHDOG=1"]
    assert not notifier.watchdog()  # again at once: a beat faster than a quarter interval
    assert notifier.stopping()
    assert received(sock) == ["STOPPING=1"]


def test_an_abstract_socket_and_the_cases_that_send_nothing() -> None:
    name = f"@jobctl-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name[1:])
        sock.settimeout(5)
        assert Notifier.from_environment({"NOTIFY_SOCKET": name}).ready()
        assert received(sock)[0] == "READY=1"
    nowhere = Notifier.from_environment({})
    assert not nowhere.active and not nowhere.ready() and not nowhere.watchdog()
    # WATCHDOG_USEC meant for another process (WATCHDOG_PID), or none: no pings
    other = Notifier.from_environment({"NOTIFY_SOCKET": "/nonexistent/sock",
                                       "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None and not other.watchdog()
    # a socket nobody listens on: dropped, not raised
    assert not Notifier.from_environment({"NOTIFY_SOCKET": "/nonexistent/sock"}).ready()


def test_a_worker_unit_stops_after_the_grace_and_keeps_the_url_off_the_command_line() -> None:
    text = unit_text(ServiceKind.WORKER, executable="/usr/bin/jobctl", user="jobctl",
                     environment_file="/etc/jobctl/env", grace_s=120, kill_grace_s=5,
                     arguments=["--queue", "gpu", "--label", "100%"])
    lines = text.splitlines()
    assert ("ExecStart=/usr/bin/jobctl worker start --grace 120s --kill-grace 5s --queue gpu "
            "--label 100%%") in lines
    for expected in ("Type=notify", "KillMode=mixed", "TimeoutStopSec=155s",
                     "Restart=on-failure", "User=jobctl", "EnvironmentFile=-/etc/jobctl/env",
                     "WatchdogSec=60s", "Delegate=yes"):
        assert expected in lines
    scheduler = unit_text(ServiceKind.SCHEDULER, executable="/usr/bin/jobctl", user="jobctl",
                          environment_file="/etc/jobctl/env", grace_s=30, kill_grace_s=5,
                          arguments=[])
    assert "ExecStart=/usr/bin/jobctl scheduler run" in scheduler.splitlines()
    assert "Delegate=yes" not in scheduler


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("kind", ["worker", "scheduler"])
def test_systemd_accepts_the_printed_units(kind: str, tmp_path: Path) -> None:
    printed = run_cli("service", "print", kind, "--executable", "/bin/true", "--grace", "1m",
                      "--", "--queue", "a b$c")
    assert printed.returncode == 0, printed
    unit = tmp_path / f"jobctl-{kind}.service"
    unit.write_text(printed.stdout)
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                              text=True, timeout=60, check=False)
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr == ""
    assert "--queue 'a b$$c'" in printed.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("worker", "--", "--database-url", "postgresql://u:pw@h/db"),
     "jobctl: error: --database-url would show in ps: put JOBCTL_DATABASE_URL in /etc/jobctl/env "
     "instead\n"),
    (("worker", "--environment-file", "env"),
     "jobctl: error: --environment-file must be an absolute path, not 'env'\n"),
    (("scheduler", "--user", "a b"),
     "jobctl: error: --user 'a b': a user name cannot start with - or hold blanks, control "
     "characters, : or /\n"),
    # A root worker would refuse to start on PostgreSQL (jobctl.runas), and only root can run
    # jobs as their submitters: refused when printed, not when systemd restarts it forever.
    (("worker", "--user", "root", "--", "--queue", "q"),
     "jobctl: error: a worker unit running as root needs -- --run-as-submitter (each job as "
     "its submitter's Unix user) or -- --allow-root (every job as root): on PostgreSQL it "
     "refuses to start without one\n"),
    (("worker", "--", "--run-as-submitter"),
     "jobctl: error: --run-as-submitter needs a worker running as root: --user root\n"),
])
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run_cli("service", "print", *args)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message)
    assert "pw" not in result.stderr or "pw@" not in result.stderr


@pytest.mark.parametrize("flags", [("--run-as-submitter", "--user-map", "/etc/jobctl/users.toml"),
                                   ("--allow-root",)])
def test_a_root_worker_unit_says_what_root_is_for(flags: tuple[str, ...]) -> None:
    printed = run_cli("service", "print", "worker", "--user", "root", "--executable",
                      "/usr/bin/jobctl", "--", *flags)
    assert printed.returncode == 0, printed
    lines = printed.stdout.splitlines()
    assert ("ExecStart=/usr/bin/jobctl worker start --grace 30s --kill-grace 5s "
            + " ".join(flags)) in lines
    assert "User=root" in lines
    # a scheduler runs no job: root or not, nothing to say
    assert run_cli("service", "print", "scheduler", "--user", "root").returncode == 0
