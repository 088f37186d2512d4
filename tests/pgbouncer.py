"""A throwaway PgBouncer in transaction pooling mode, in front of the test PostgreSQL server.

`PgBouncer(server).start()` writes a configuration into a temporary folder and runs the
`pgbouncer` binary (the Debian package's, /usr/sbin/pgbouncer) in the foreground: listening on
127.0.0.1 on a free port, its unix socket inside that folder, no authentication of its clients
(`auth_type = any`: it logs in to PostgreSQL as the server's own user, which the test cluster
trusts), and a pool of only DEFAULT_POOL_SIZE server connections per database, so that a jobctl
process that kept any session state (LISTEN, a session advisory lock, a prepared statement, a
`SET`) would soon meet a server session that lacks it, or lend it to another client.
`url_for(database_url)` is the same database reached through it.

PgBouncer refuses to run as root: as the test cluster does (tests/pgcluster.py), it then runs
as the 'postgres' account (or 'nobody'). It must never outlive the test run: `stop()` in the
fixture's teardown, an atexit hook, and a watchdog process that kills it once our process has
gone, however it went.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from pgcluster import PgServer, _free_port, _unprivileged_owner

# Small, so that session state would break: three server connections per database, shared by
# every worker, scheduler and command of a test (each holds two or three client connections).
DEFAULT_POOL_SIZE = 3


def pgbouncer_binary() -> str | None:
    """The pgbouncer program: on PATH, or where Debian puts it (/usr/sbin, not on every PATH)."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


# A test decorated with this runs on both backends and through PgBouncer too (the `db_url`
# fixture, and so the end-to-end tests' `jobctl`), its PgBouncer run marked `pgbouncer`
# (`pytest -m pgbouncer` runs just those): for tests that show jobctl keeps no session state.
ALSO_THROUGH_PGBOUNCER = pytest.mark.parametrize(
    "db_url", ["sqlite", "postgresql", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)],
    indirect=True)

MISSING = "pgbouncer is not installed (apt-get install pgbouncer; CI does, in .ci/run)"

# Runs in a process of its own: blocks on its stdin, a pipe only the test process writes to, so
# end-of-file means that process has gone; then kills PgBouncer and deletes the folder. (`stop()`
# writes "stopped" first: PgBouncer is gone already, and the folder is its to delete.)
_WATCHDOG = """
import os, shutil, signal, sys
pid, folder = int(sys.argv[1]), sys.argv[2]
if sys.stdin.buffer.read() != b"stopped":
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    shutil.rmtree(folder, ignore_errors=True)
"""


class PgBouncer:
    """PgBouncer (pool_mode = transaction) in front of `server`."""

    def __init__(self, server: PgServer, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self._server = server
        self._pool_size = pool_size
        self._owner = _unprivileged_owner()
        self._folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def folder(self) -> Path:
        if self._folder is None:
            raise RuntimeError("PgBouncer has not been started")
        return self._folder

    @property
    def log_file(self) -> Path:
        return self.folder / "pgbouncer.log"

    def log(self) -> str:
        with contextlib.suppress(OSError, RuntimeError):
            return self.log_file.read_text(errors="replace")
        return ""

    def url_for(self, database_url: str) -> str:
        """`database_url` (a database of the server behind) as reached through PgBouncer."""
        parts = urlsplit(database_url)
        return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:"
                                                f"{self.port}"))

    def start(self) -> PgBouncer:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError(MISSING)
        folder = Path(tempfile.mkdtemp(prefix="jobctl-test-pgbouncer-"))
        self._folder = folder
        atexit.register(self.stop)
        if self._owner is not None:
            os.chown(folder, self._owner.pw_uid, self._owner.pw_gid)
        try:
            for attempt in range(5):  # a free port may be taken before PgBouncer binds it
                self.port = _free_port()
                self._write_config()
                self._launch(binary)
                if self._wait_ready():
                    return self
                self._kill()
                if attempt == 4 or "Address already in use" not in self.log():
                    raise RuntimeError(f"pgbouncer did not start:\n{self.log()[-3000:]}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop PgBouncer and delete its folder. Safe to call more than once."""
        if self._folder is None:
            return
        try:
            self._kill()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
            atexit.unregister(self.stop)

    # --- internals ----------------------------------------------------------------------------

    def _write_config(self) -> None:
        server = urlsplit(self._server.admin_url)
        user = server.username or "postgres"
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": str(self.folder),
            "auth_type": "any",
            "pool_mode": "transaction",
            "default_pool_size": str(self._pool_size),
            "reserve_pool_size": "0",
            "max_client_conn": "1000",
            "logfile": str(self.log_file),
            "pidfile": "",
            "log_connections": "0",
            "log_disconnections": "0",
            "server_login_retry": "1",
        }
        password = f" password={server.password}" if server.password else ""
        text = ("[databases]\n"
                f"* = host={server.hostname or '127.0.0.1'} port={server.port or 5432} "
                f"user={user}{password}\n\n[pgbouncer]\n"
                + "".join(f"{key} = {value}\n" for key, value in settings.items()))
        config = self.folder / "pgbouncer.ini"
        config.write_text(text)
        if self._owner is not None:
            os.chown(config, self._owner.pw_uid, self._owner.pw_gid)

    def _launch(self, binary: str) -> None:
        owner = self._owner
        self._process = subprocess.Popen(
            [binary, str(self.folder / "pgbouncer.ini")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches pytest, which stops it in order
            user=owner.pw_uid if owner is not None else None,
            group=owner.pw_gid if owner is not None else None,
            extra_groups=[] if owner is not None else None,
        )  # fmt: skip
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self._process.pid), str(self.folder)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def _wait_ready(self, timeout_s: float = 30.0) -> bool:
        """Until a query passes through it; False when it exited first."""
        assert self._process is not None
        url = self.url_for(self._server.admin_url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            with contextlib.suppress(psycopg.OperationalError):
                with psycopg.connect(url, connect_timeout=2, autocommit=True) as connection:
                    connection.execute("SELECT 1")
                return True
            time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not answer within {timeout_s:.0f}s:\n"
                           f"{self.log()[-3000:]}")

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # PgBouncer's immediate shutdown
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            if watchdog.stdin is not None:
                with contextlib.suppress(OSError):
                    watchdog.stdin.write(b"stopped")
                watchdog.stdin.close()
            try:
                watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait()
