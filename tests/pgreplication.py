"""A throwaway PostgreSQL primary with a streaming standby, for the failover tests.

`PgReplicatedCluster` is a `PgCluster` (tests/pgcluster.py: initdb in a temporary folder, run as
the 'postgres' account when we are root, trust authentication on 127.0.0.1) whose primary has
`wal_level = replica` and a replication entry in pg_hba.conf, plus a standby made with
`pg_basebackup -R` (so it streams from the primary) on a port of its own, in the same folder.

With `synchronous=True` (the default) the primary's commits wait until the standby has the WAL
(`synchronous_standby_names = '*'`, `synchronous_commit = on`): what a client was told is
committed survives losing the primary. The suite's other clusters turn synchronous_commit off
for speed; this one must not. (`fsync` stays off: the test crashes the PostgreSQL primary, not
the machine, so the standby's WAL is safe in the page cache.) With `synchronous=False` the
replication is asynchronous (no synchronous standby): a commit is acknowledged once it is in
the primary's WAL, and the standby follows when it can.

`crash_primary()` stops the primary in immediate mode (no shutdown checkpoint, no goodbye to
anyone: a crash, as far as clients and the standby can tell), `promote_standby()` makes the
standby the new primary. `hold_replication()` freezes the primary's WAL sender, so the standby
falls behind as over a slow link: synchronous commits then wait, asynchronous ones do not.

Like every PgCluster it never outlives the test run: `stop()`, an atexit hook, and a watchdog
process that stops both servers and deletes the folder once our process has gone, however.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from pgcluster import PG_CTL_TIMEOUT_SECONDS, SETTINGS, PgCluster, _free_port, _pg_binary

# The watchdog of both servers: as pgcluster's, with every data directory stopped before the
# folder is deleted.
_WATCHDOG = """
import os, shutil, subprocess, sys
pg_ctl, folder, user, *data_dirs = sys.argv[1:]
sys.stdin.buffer.read()
if os.path.isdir(folder):
    for data in data_dirs:
        argv = [pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"]
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
    shutil.rmtree(folder, ignore_errors=True)
"""


def missing_tools() -> list[str]:
    """The PostgreSQL programs this module needs and cannot find (empty: all there)."""
    missing = []
    for tool in ("initdb", "pg_ctl", "pg_basebackup"):
        try:
            _pg_binary(tool)
        except RuntimeError:
            missing.append(tool)
    return missing


def _pg_basebackup() -> str:
    """pg_basebackup of the same installation as pg_ctl (not a wrapper's idea of the newest)."""
    beside = Path(os.path.realpath(_pg_binary("pg_ctl"))).parent / "pg_basebackup"
    return str(beside) if beside.exists() else _pg_binary("pg_basebackup")


class PgReplicatedCluster(PgCluster):
    """A primary (the PgCluster itself: `port`, `admin_url`, `data_dir`) and a streaming standby
    (`standby_port`, `standby_data_dir`)."""

    def __init__(self, *, synchronous: bool = True) -> None:
        self.synchronous = synchronous
        settings = {
            **SETTINGS,
            "synchronous_commit": "on",
            "synchronous_standby_names": "'*'" if synchronous else "''",
            "wal_level": "replica",
            "max_wal_senders": "4",
            "wal_sender_timeout": "'10s'",
            "full_page_writes": "on",  # what a base backup taken while others write needs
        }
        super().__init__(settings)
        self._standby_port = 0
        self._standby_running = False
        self._held_sender: int | None = None  # the WAL sender's pid while frozen

    # --- properties -------------------------------------------------------------------------

    @property
    def standby_port(self) -> int:
        if not self._standby_port:
            raise RuntimeError("the standby has not been started")
        return self._standby_port

    @property
    def standby_data_dir(self) -> Path:
        return self.folder / "standby"

    @property
    def standby_log_file(self) -> Path:
        return self.folder / "standby.log"

    @property
    def standby_admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.standby_port}/postgres"

    def failover_url(self, database: str) -> str:
        """A libpq multi-host URL of `database`: both servers, whichever accepts writes."""
        return (f"postgresql://postgres@127.0.0.1:{self.port},127.0.0.1:{self.standby_port}/"
                f"{database}?target_session_attrs=read-write")

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> PgReplicatedCluster:
        """initdb and start the primary, then take a base backup and start the standby; returns
        once the standby streams (and, synchronous, is the primary's synchronous standby)."""
        super().start()
        try:
            self._start_standby()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both servers (the standby at once: its data is thrown away) and delete the folder.
        Safe to call more than once."""
        if self._folder is not None and (self._standby_running or
                                         (self.standby_data_dir / "postmaster.pid").exists()):
            self._run_tool("pg_ctl", "-D", str(self.standby_data_dir), "-m", "immediate",
                           "-t", str(PG_CTL_TIMEOUT_SECONDS), "-w", "stop", check=False)
            self._standby_running = False
        super().stop()

    def crash_primary(self) -> None:
        """Stop the primary in immediate mode: clients lose their connections at once, nothing
        more reaches the standby. A frozen WAL sender (`replication_held`) is killed, not
        thawed, so what it held back never reaches the standby either (and the postmaster need
        not wait 5 s for it to take its SIGQUIT)."""
        if self._held_sender is None:
            self.stop_server("immediate")
            return
        self._run_tool("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-W", "stop")
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._held_sender, signal.SIGKILL)
        deadline = time.monotonic() + PG_CTL_TIMEOUT_SECONDS
        while (self.data_dir / "postmaster.pid").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the primary did not stop:\n{self._log_tail()}")
            time.sleep(0.02)
        self._server_running = False

    def promote_standby(self) -> None:
        """`pg_ctl promote`: the standby ends recovery and accepts writes (waits until it does)."""
        self._run_tool("pg_ctl", "-D", str(self.standby_data_dir), "-t",
                       str(PG_CTL_TIMEOUT_SECONDS), "-w", "promote")

    @contextlib.contextmanager
    def replication_held(self) -> Iterator[None]:
        """The primary's WAL sender frozen (SIGSTOP) inside the block, so the standby receives
        nothing more; continued after it (if the primary is still there to continue it)."""
        pid = self._held_sender = self._wal_sender_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            self._held_sender = None
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def wait_streaming(self, timeout_s: float = 30.0) -> None:
        """Until the primary sees the standby streaming (synchronous: as its `sync` standby)."""
        wanted = "sync" if self.synchronous else "async"
        deadline = time.monotonic() + timeout_s
        while True:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
                rows = conn.execute(
                    "SELECT state, sync_state FROM pg_stat_replication").fetchall()
            if ("streaming", wanted) in rows:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby is not streaming ({wanted}) after {timeout_s}s: "
                                   f"{rows}\n{self._standby_log_tail()}")
            time.sleep(0.05)

    # --- internals ----------------------------------------------------------------------------

    def _write_settings(self) -> None:
        super()._write_settings()
        with (self.data_dir / "pg_hba.conf").open("a", encoding="utf-8") as hba:
            hba.write("\n# Added by tests/pgreplication.py: the standby's WAL stream.\n"
                      "host replication all 127.0.0.1/32 trust\n")

    def _start_standby(self) -> None:
        # -R: standby.signal and primary_conninfo (this primary); -X stream: the WAL made during
        # the backup comes along; -c fast: no waiting for a spread checkpoint.
        self._run_tool(_pg_basebackup(), "-D", str(self.standby_data_dir), "-h", "127.0.0.1",
                       "-p", str(self.port), "-U", "postgres", "-R", "-X", "stream",
                       "-c", "fast", "--no-sync")
        # The copied postgresql.conf is the primary's. Once promoted, the standby is a primary
        # with no standby of its own: it must not wait for one (or no commit would return).
        with (self.standby_data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# Added by tests/pgreplication.py for the standby.\n"
                       "synchronous_standby_names = ''\n"
                       "hot_standby = on\n")
        attempts = 5
        for attempt in range(attempts):
            self._standby_port = _free_port()
            try:
                self._run_tool("pg_ctl", "-D", str(self.standby_data_dir), "-l",
                               str(self.standby_log_file), "-o", f"-p {self._standby_port}",
                               "-t", str(PG_CTL_TIMEOUT_SECONDS), "-w", "start")
                break
            except RuntimeError:
                if attempt == attempts - 1 or "Address already in use" not in \
                        self._standby_log_tail():
                    raise
        self._standby_running = True
        self.wait_streaming()

    def _wal_sender_pid(self) -> int:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SELECT pid FROM pg_stat_replication").fetchone()
        if row is None:
            raise RuntimeError("no WAL sender: the standby is not connected")
        return int(row[0])

    def _standby_log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            text = self.standby_log_file.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def _start_watchdog(self) -> None:
        owner = self._owner.pw_name if self._owner is not None else ""
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, _pg_binary("pg_ctl"), str(self.folder), owner,
             str(self.standby_data_dir), str(self.data_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
