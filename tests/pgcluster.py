"""Throwaway PostgreSQL servers for the test suite.

`PgCluster` is a private cluster made with initdb and run with pg_ctl in a temporary folder:
listening on 127.0.0.1 on a free port (its unix socket stays inside that folder, so it never
collides with a system server), trust authentication, and durability switched off because the
data is thrown away anyway. `PgServer` is the part that only needs a superuser URL, so that the
suite can also run against an existing server (JOBCTL_TEST_DATABASE_URL, see conftest.py).

The approach (run as the 'postgres' account when we are root, because initdb and postgres refuse
to run as root; pg_ctl in a session of its own) follows the benchmark harness in
/work/shared/peers/peerbench/postgres.py, copied here so that the tests do not depend on it.

A cluster must never outlive the test run. Three layers see to it:
  * `stop()` in fixture teardown, the normal path;
  * an atexit hook, for a run that ends with an exception or Ctrl-C before teardown;
  * a watchdog process that stops the server and deletes the folder once our process has gone,
    however it went (SIGKILL, SIGTERM, a timed-out xdist worker), where atexit never runs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

# Durability is pointless for data that is deleted after the run, and fsync dominates the cost of
# CREATE DATABASE and of every commit. max_connections is generous because worker/chaos tests
# open many connections (each engine has a pool), all the suite's test processes share one
# cluster (see SharedCluster), and a full server would fail them spuriously.
SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "1000",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}

# Where clusters live when it can hold them: a memory-backed file system (see memory_folder).
MEMORY_FOLDER = Path("/dev/shm")
MEMORY_FOLDER_MIN_FREE_BYTES = 4 << 30

# How long pg_ctl -w waits for the server to come up or go down before giving up.
PG_CTL_TIMEOUT_SECONDS = 60

# Bounds every admin connection so that a wedged server fails a test instead of hanging it.
CONNECT_TIMEOUT_SECONDS = 10

# Runs in a separate process. It blocks reading its stdin, a pipe whose only writer is the test
# process; end-of-file therefore means that process has exited (or closed the pipe in `stop()`).
# Then it stops the server if one is still there and deletes the folder. "immediate" because the
# data is going to be deleted anyway, so an orderly shutdown would only waste time.
_WATCHDOG = """
import os, shutil, subprocess, sys
pg_ctl, data, folder, user = sys.argv[1:5]
sys.stdin.buffer.read()
if os.path.isdir(folder):
    argv = [pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    shutil.rmtree(folder, ignore_errors=True)
"""


class PgServer:
    """A PostgreSQL server on which we may create and drop databases, given a superuser URL."""

    def __init__(self, admin_url: str) -> None:
        # SQLAlchemy-style URLs (postgresql+psycopg://) are accepted, but psycopg and the URLs we
        # hand out use the plain scheme.
        parts = urlsplit(admin_url)
        self._admin_url = urlunsplit(parts._replace(scheme=parts.scheme.split("+")[0]))

    @property
    def admin_url(self) -> str:
        """URL of the maintenance database, e.g. postgresql://postgres@127.0.0.1:PORT/postgres."""
        return self._admin_url

    def database_url(self, name: str) -> str:
        """URL of database `name`: the admin URL with its path replaced (query string kept)."""
        return urlunsplit(urlsplit(self.admin_url)._replace(path="/" + name))

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database `name` afresh (dropping a leftover of that name) and return its URL.

        With `template`, the new database is a copy of that one (`CREATE DATABASE … TEMPLATE`),
        which copies its files instead of running the migrations again.
        PostgreSQL refuses the copy while anyone is connected to the template; `seal_template`
        makes sure nobody can be.
        """
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        self._execute(*_drop_statements(name), statement)
        return self.database_url(name)

    def seal_template(self, name: str) -> None:
        """Make database `name` a template that accepts no connections, so that no stray session
        (a test's, an undisposed pool's) can ever make `CREATE DATABASE … TEMPLATE` fail on it.
        Sessions still connected are terminated; `drop_database` undoes the seal."""
        self._execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
            .format(sql.Identifier(name)),
            sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {}")
            .format(sql.Literal(name)),
        )

    def drop_database(self, name: str) -> None:
        """Drop database `name` if it exists (a sealed template too).

        FORCE terminates sessions still connected to it, e.g. an engine a test did not dispose
        of, or a worker subprocess that is still shutting down; without it the drop would fail.
        """
        self._execute(*_drop_statements(name))

    def _execute(self, *statements: sql.Composable) -> None:
        """Run `statements` in turn on one admin connection."""
        # CREATE/DROP DATABASE cannot run inside a transaction block, hence autocommit.
        with psycopg.connect(
            self.admin_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
        ) as conn:
            for statement in statements:
                conn.execute(statement)


class SharedCluster(PgServer):
    """The PgCluster that pytest-xdist's controller started for all its test processes (see
    tests/conftest.py), as a test process sees it: its admin URL and the name of the template
    migrated to head there. The controller stops it; a test process only creates and drops
    databases on it, and never restarts it (tests that do take a `private_pg_cluster`)."""

    def __init__(self, admin_url: str, template: str) -> None:
        super().__init__(admin_url)
        self.template = template


class PgCluster(PgServer):
    """A private PostgreSQL cluster in a temporary folder, for one test process.

    `start()` creates and starts it, `stop()` stops it and deletes everything. In between,
    `stop_server()` / `start_server()` take the server down and bring it back on the same port
    with the same data, for tests of how jobctl copes with losing its database.
    """

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        """`settings` replace the test defaults (the benchmarks want a durable server)."""
        super().__init__("postgresql://postgres@127.0.0.1:0/postgres")
        self._settings = SETTINGS if settings is None else settings
        self._owner = _unprivileged_owner()
        self._folder: Path | None = None
        self._port = 0
        self._server_running = False
        self._watchdog: subprocess.Popen[bytes] | None = None

    # --- properties -------------------------------------------------------------------------

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the cluster has not been started")
        return self._port

    @property
    def folder(self) -> Path:
        """The temporary folder holding data/, the unix socket and server.log."""
        if self._folder is None:
            raise RuntimeError("the cluster has not been started")
        return self._folder

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_file(self) -> Path:
        return self.folder / "server.log"

    @property
    def server_running(self) -> bool:
        """Whether the postgres server is up (False between stop_server() and start_server())."""
        return self._server_running

    # --- whole-cluster lifecycle --------------------------------------------------------------

    def start(self) -> PgCluster:
        """initdb a fresh cluster and start it on a free port. Returns self, for chaining."""
        if self._folder is not None:
            raise RuntimeError("the cluster has already been started")
        folder = Path(tempfile.mkdtemp(prefix="jobctl-test-pg-", dir=memory_folder()))
        self._folder = folder
        # Register the safety nets before anything can leave a server running.
        atexit.register(self.stop)
        if self._owner is not None:
            # The server runs as this account, so it must own the folder (for its data directory
            # and its unix socket). mkdtemp's 0700 mode then keeps everyone else out.
            os.chown(folder, self._owner.pw_uid, self._owner.pw_gid)
        self._start_watchdog()
        try:
            # --no-sync: initdb would otherwise fsync every file it writes, for nothing.
            self._run_tool(
                "initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--no-sync", "--no-instructions",
            )  # fmt: skip
            self._write_settings()
            self._start_on_free_port()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete the folder. Safe to call more than once."""
        folder = self._folder
        if folder is None:
            return
        with _signals_held():
            try:
                # postmaster.pid too: a start that timed out may have left a server behind.
                if self._server_running or (self.data_dir / "postmaster.pid").exists():
                    self._pg_ctl_stop("fast", check=False)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
                self._folder = None
                self._server_running = False
                self._stop_watchdog()
                atexit.unregister(self.stop)

    # --- taking the server down and up again --------------------------------------------------

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the postgres server but keep the data directory and the port.

        `mode` is pg_ctl's: "fast" (disconnect clients, clean shutdown) or "immediate" (no
        shutdown checkpoint, crash recovery on the next start: the nearest thing to a crash).
        """
        if not self._server_running:
            raise RuntimeError("the server is not running")
        self._pg_ctl_stop(mode, check=True)

    def start_server(self) -> None:
        """Start the server again, with the same data, on the same port as before.

        The port is not reserved while the server is down; on a test machine nothing else is
        expected to take it within seconds, and if something did, this raises.
        """
        if self._server_running:
            raise RuntimeError("the server is already running")
        self._pg_ctl_start()

    @contextlib.contextmanager
    def server_stopped(self, mode: str = "fast") -> Iterator[None]:
        """Context manager: the server is down inside the block and started again after it."""
        self.stop_server(mode)
        try:
            yield
        finally:
            self.start_server()

    def stopped_for(self, seconds: float, mode: str = "fast") -> None:
        """Stop the server, wait `seconds`, start it again (blocking; run it in a thread to act
        meanwhile)."""
        with self.server_stopped(mode):
            time.sleep(seconds)

    # --- internals ----------------------------------------------------------------------------

    def _write_settings(self) -> None:
        # Written to postgresql.conf rather than passed as pg_ctl -o options so that a plain
        # restart (start_server) gets exactly the same configuration. Appending to the existing
        # file keeps its owner. The port is the exception: it is passed at each start so that a
        # start that lost a race for its port can simply retry with another.
        settings = {**self._settings, "unix_socket_directories": _quote_setting(str(self.folder))}
        lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# Added by tests/pgcluster.py for a throwaway test cluster.\n" + lines)

    def _start_on_free_port(self) -> None:
        # Between finding a free port and postgres binding it, another process (e.g. the
        # cluster of a parallel xdist worker) may take it; then try another.
        attempts = 5
        for attempt in range(attempts):
            self._port = _free_port()
            try:
                self._pg_ctl_start()
                return
            except RuntimeError:
                if attempt == attempts - 1 or not self._log_mentions_port_in_use():
                    raise

    def _log_mentions_port_in_use(self) -> bool:
        with contextlib.suppress(OSError):
            return "Address already in use" in self.log_file.read_text(errors="replace")
        return False

    def _pg_ctl_start(self) -> None:
        self._run_tool(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file),
            "-o", f"-p {self.port}", "-t", str(PG_CTL_TIMEOUT_SECONDS), "-w", "start",
        )  # fmt: skip
        self._server_running = True

    def _pg_ctl_stop(self, mode: str, *, check: bool) -> None:
        self._run_tool(
            "pg_ctl", "-D", str(self.data_dir), "-m", mode,
            "-t", str(PG_CTL_TIMEOUT_SECONDS), "-w", "stop", check=check,
        )  # fmt: skip
        self._server_running = False

    def _run_tool(self, tool: str, *args: str, check: bool = True) -> None:
        """Run a PostgreSQL program (as the unprivileged owner when we are root).

        A session of its own keeps the server that pg_ctl forks out of the terminal's process
        group, so that Ctrl-C reaches only pytest, which then stops the server in order.
        """
        argv = [_pg_binary(tool), *args]
        if self._owner is not None:
            argv = ["runuser", "-u", self._owner.pw_name, "--", *argv]
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            start_new_session=True, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            message = f"{tool} failed (exit status {result.returncode}): {output}"
            log_tail = self._log_tail()
            if log_tail:
                message += f"\n--- last lines of {self.log_file} ---\n{log_tail}"
            raise RuntimeError(message)

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError, RuntimeError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _start_watchdog(self) -> None:
        owner = self._owner.pw_name if self._owner is not None else ""
        # Its own session, so that Ctrl-C in the terminal does not kill it along with pytest.
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, _pg_binary("pg_ctl"), str(self.data_dir),
             str(self.folder), owner],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def _stop_watchdog(self) -> None:
        # Closing the pipe wakes it; the folder is gone by now, so it just exits.
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        if watchdog.stdin is not None:
            watchdog.stdin.close()
        try:
            watchdog.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()


def _drop_statements(name: str) -> list[sql.Composable]:
    """DROP DATABASE IF EXISTS `name`, a sealed template too (see PgServer.drop_database)."""
    # PostgreSQL refuses to drop a template, and ALTER DATABASE has no IF EXISTS: hence the DO.
    unseal = sql.SQL(
        "DO $$ BEGIN IF EXISTS (SELECT FROM pg_database WHERE datname = {name} AND datistemplate)"
        " THEN EXECUTE format('ALTER DATABASE %I IS_TEMPLATE false', {name}); END IF; END $$"
    ).format(name=sql.Literal(name))
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    return [unseal, drop]


def server_from_url_or_new_cluster(url: str | None) -> PgServer:
    """The server at `url` if given, else a freshly started PgCluster (call stop() on it)."""
    if url:
        return PgServer(url)
    return PgCluster().start()


def _unprivileged_owner() -> pwd.struct_passwd | None:
    """None when we are not root; else the account the cluster must run as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError(
        "running as root, and there is neither a 'postgres' nor a 'nobody' account to run the"
        " test cluster as; set JOBCTL_TEST_DATABASE_URL instead"
    )


def _pg_binary(name: str) -> str:
    """`name` from PATH, else from the newest /usr/lib/postgresql/*/bin (Debian's layout)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError(
            f"{name} not found on PATH nor under /usr/lib/postgresql;"
            " install PostgreSQL or set JOBCTL_TEST_DATABASE_URL"
        )
    return str(candidates[-1])


def _free_port() -> int:
    """A port that is free right now (the kernel picks it); see _start_on_free_port's retry."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def memory_folder() -> str | None:
    """/dev/shm when it is a writable file system with room to spare (4 GiB), else None (the
    usual temporary folder). Every CREATE DATABASE opens each of the ~800 files of the template
    (and probes as many forks that are not there): on this machine's ext4 that took ~200 ms of
    kernel time a database, so about a test's worth of CPU for every test on PostgreSQL; on
    tmpfs ~10 ms. The data is thrown away anyway (fsync is off, SETTINGS)."""
    try:
        found = os.statvfs(MEMORY_FOLDER)
    except OSError:
        return None
    free = found.f_bavail * found.f_frsize
    if free < MEMORY_FOLDER_MIN_FREE_BYTES or not os.access(MEMORY_FOLDER, os.W_OK | os.X_OK):
        return None
    return str(MEMORY_FOLDER)


def _quote_setting(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while the cluster is being stopped, so that cleanup completes.

    Signal handlers can only be changed from the main thread; elsewhere, just run the block.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
