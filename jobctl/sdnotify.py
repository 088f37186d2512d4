"""The sd_notify protocol (sd_notify(3)), spoken by `worker start` and `scheduler run` when
systemd (or anything else) started them with NOTIFY_SOCKET set: READY=1 once they are up
(a worker: registered), STOPPING=1 when they begin to stop (a worker: drain), WATCHDOG=1 from
their liveness beat (a worker's heartbeat, a scheduler's pass) when WATCHDOG_USEC asks for it.

Written here rather than taken from a package: the protocol is one datagram of `KEY=VALUE`
lines to a Unix socket (a path, or an abstract name written `@name`), which is less code than
a dependency's import, and this module is imported by every worker's start.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping


class Notifier:
    """Where to send notifications: NOTIFY_SOCKET's socket, or nowhere (every call does
    nothing). Safe to call from any thread; a failed send is dropped (systemd's own
    sd_notify does no better, and a service must not die of it)."""

    def __init__(self, address: str | None, watchdog_usec: int | None) -> None:
        self._address = address
        self.watchdog_s = watchdog_usec / 1e6 if watchdog_usec else None
        self._lock = threading.Lock()
        self._last_watchdog = 0.0

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """NOTIFY_SOCKET, and WATCHDOG_USEC when WATCHDOG_PID is unset or is this process."""
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        watchdog: int | None = None
        pid = env.get("WATCHDOG_PID")
        if env.get("WATCHDOG_USEC", "").isdigit() and (not pid or pid == str(os.getpid())):
            watchdog = int(env["WATCHDOG_USEC"]) or None
        return cls(address, watchdog)

    @property
    def active(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> bool:
        """One datagram of `lines`; whether it went out."""
        if self._address is None:
            return False
        address = ("\0" + self._address[1:]) if self._address.startswith("@") else self._address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), address)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", f"MAINPID={os.getpid()}",
                         *((f"STATUS={status}",) if status else ()))

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *((f"STATUS={status}",) if status else ()))

    def watchdog(self) -> bool:
        """WATCHDOG=1 when WATCHDOG_USEC asked for pings, at most four times per its interval
        (the beat may come more often than that)."""
        if self.watchdog_s is None:
            return False
        with self._lock:
            now = time.monotonic()
            if now - self._last_watchdog < self.watchdog_s / 4:
                return False
            self._last_watchdog = now
        return self.send("WATCHDOG=1")
