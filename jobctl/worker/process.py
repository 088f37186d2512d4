"""One attempt of one job as a process: its own session and process group, its env and cwd,
its output pumped in chunks, its timeout, and a kill that reaches grandchildren too.

The process group is the unit: a timeout, a cancel or a lost lease signals the whole group
(SIGTERM, then SIGKILL after a grace period), and when the command itself exits, whatever it left
running in its group is killed as well, so no job leaves orphans behind on a worker.

Where the worker has cgroups (jobctl.worker.cgroup), each attempt runs in a cgroup of its own,
entered before its command execs: its figures are the whole tree's, its limits are enforced, and
a hard kill (SIGKILL after the grace period, fencing) is cgroup.kill, which no process of the tree
escapes. The command is reaped with wait4, whose rusage gives the figures where there is no
cgroup (jobctl.accounting).

Standard input is /dev/null, or the job's `input` bytes through a pipe that the same loop that
pumps the output fills as the command reads (non-blocking writes: a command that writes much
before it reads, or never reads, cannot deadlock it), closed at the end of the bytes. A job with
a `user` runs as that user (see `RunAs`); on a worker with --run-as-submitter every job runs as
its submitter's user (jobctl.runas), which then also reads its secret files and enters its
working directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from jobctl.accounting import Usage, oom_error, usage_from_rusage
from jobctl.capacity import gpu_text
from jobctl.record import record
from jobctl.store.queue import ClaimedJob
from jobctl.worker.cgroup import JobCgroup, WorkerCgroups

if TYPE_CHECKING:
    from jobctl.runas import SubmitterUsers
    from jobctl.secret_env import Masker

CHUNK_BYTES = 64 * 1024  # flush a stream's buffer when it holds this much
FLUSH_INTERVAL_S = 0.1  # ...or when its oldest byte has waited this long (live `logs -f`)
POLL_S = 0.2  # upper bound on how long the pump sleeps, so kill deadlines are checked
# How often a command whose pipes are closed is checked for its exit: after REAP_FIRST_S, then
# twice as long each time up to REAP_POLL_S (as Popen.wait with a timeout does).
REAP_FIRST_S = 0.0005
REAP_POLL_S = 0.05
LEFTOVER_WAIT_S = 0.1  # after the command exits, how long its leftovers may keep the pipes open
PROBE_TIMEOUT_S = 10.0  # checking whether a job's user can enter a directory (see `RunAs`)
DEFAULT_OUTPUT_CAP = 64 * 1024 * 1024

# exit codes for commands that never ran, as shells use them
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
EXIT_CANNOT_START = 125

OutputSink = Callable[[str, int, bytes], None]  # (stream, seq, data)


@record
class ProcessResult:
    exit_code: int | None  # None: it never ran
    signal: int | None
    error: str | None
    kill_reason: str | None  # why jobctl killed it (timeout, cancel, lease lost, shutdown)
    started: bool  # False when the command could not be started at all
    usage: Usage | None = None  # what its processes used (None: it never ran)


class JobProcess:
    """Runs one attempt; `run()` blocks in the caller's thread, `kill()` may come from any."""

    def __init__(
        self,
        job: ClaimedJob,
        sink: OutputSink,
        *,
        kill_grace_s: float = 5.0,
        output_cap: int = DEFAULT_OUTPUT_CAP,
        base_env: dict[str, str] | None = None,
        watchdog: Watchdog | None = None,
        cgroups: WorkerCgroups | None = None,
        submitters: SubmitterUsers | None = None,
    ) -> None:
        self.job = job
        self._sink = sink
        self._kill_grace_s = kill_grace_s
        self._output_cap = output_cap
        # The worker's environment, copied once per worker rather than once per job.
        self._base_env = os.environ if base_env is None else base_env
        self._watchdog = watchdog
        self._cgroups = cgroups
        # Where the worker runs each job as its submitter (--run-as-submitter): how it finds
        # the user (jobctl.runas); None: as the job's --user, else as the worker's own.
        self._submitters = submitters
        self._cgroup: JobCgroup | None = None  # the attempt's, while it runs
        self._rusage: Any = None  # wait4's, once the command is reaped
        self._lock = threading.Lock()
        self._pgid: int | None = None
        self._kill_reason: str | None = None
        self._term_sent_at: float | None = None
        self._killed_hard = False
        self._seq = 0
        self._written = 0
        self._truncated = False
        self._hook_output_path: str | None = None
        # Its secrets' values to mask in its output (jobctl.secret_env), once they are read.
        self._secrets: list[bytes] = []

    # --- control from other threads ----------------------------------------------------------

    def kill(self, reason: str) -> None:
        """SIGTERM the job's group now; the pump sends SIGKILL if it outlives the grace period."""
        with self._lock:
            if self._kill_reason is None:
                self._kill_reason = reason
            if self._pgid is not None and self._term_sent_at is None:
                self._term_sent_at = time.monotonic()
                _signal_group(self._pgid, signal.SIGTERM)

    def kill_now(self, reason: str) -> None:
        """SIGKILL the group at once (a second Ctrl-C, fencing with no time left)."""
        with self._lock:
            if self._kill_reason is None:
                self._kill_reason = reason
            if self._pgid is not None:
                self._term_sent_at = self._term_sent_at or time.monotonic()
                self._killed_hard = True
                self._kill_hard(self._pgid)

    # --- the attempt --------------------------------------------------------------------------

    def run(self) -> ProcessResult:
        job = self.job
        with self._lock:
            if self._kill_reason is not None:  # cancelled or fenced before it started
                return ProcessResult(None, None, self._kill_reason, self._kill_reason, False)
        run_as = None
        if self._submitters is not None:
            run_as, refusal = self._submitter(job)
            if run_as is None:
                return self._not_started(EXIT_CANNOT_START, refusal)
        elif job.user is not None:
            run_as = RunAs.lookup(job.user)
            if run_as is None:
                return self._not_started(EXIT_CANNOT_START,
                                         f"no such user {job.user!r} on this worker")
        # As its submitter, whether the directory exists is the user's to find out (below):
        # root's answer would tell a submitter of directories it may not see.
        if (job.cwd is not None and self._submitters is None
                and not os.path.isdir(job.cwd)):
            return self._not_started(EXIT_CANNOT_START,
                                     f"working directory {job.cwd} does not exist")
        cwd = job.cwd
        identity: dict[str, Any] = {}
        if run_as is not None and run_as.switches:
            cwd = run_as.start_directory(job.cwd)
            if cwd is None:
                missing = " (it does not exist, or the user may not)" if self._submitters else ""
                return self._not_started(EXIT_CANNOT_START, f"user {run_as.name!r} cannot "
                                         f"enter working directory {job.cwd}{missing}")
            identity = run_as.popen_arguments()
        secrets: dict[str, str] = {}
        if job.secret_env:
            from jobctl.secret_env import SecretError, masked_values, resolve

            try:
                # As its submitter, never the worker's own variables (its database URL…).
                secrets = resolve(job.secret_env,
                                  None if self._submitters is not None else self._base_env,
                                  lambda path: _read_secret_file(path, run_as))
            except SecretError as unresolved:
                return self._not_started(EXIT_CANNOT_START, str(unresolved))
            self._secrets = masked_values(secrets.values())
        env = {**self._base_env, **(run_as.env() if run_as is not None else {}), **job.env,
               **secrets, "JOBCTL_JOB_ID": str(job.id), "JOBCTL_ATTEMPT": str(job.attempt)}
        if job.array_id is not None:  # a task of an array (`job submit --array`)
            env["JOBCTL_ARRAY_ID"] = str(job.array_id)
            env["JOBCTL_ARRAY_INDEX"] = str(job.array_index)
        if job.gpus:  # the GPUs it holds, and no other job of its machine meanwhile
            env["CUDA_VISIBLE_DEVICES"] = env["JOBCTL_GPUS"] = gpu_text(job.gpus) or ""
        if job.hook_output is not None:  # a hook: its job's output, in a file of its own
            env["JOBCTL_HOOK_OUTPUT"] = self._write_hook_output(job.hook_output, run_as)
        cgroup, enter = self._cgroup_for(job)

        # As its submitter, the job enters its directory itself, once it is the user (Popen
        # changes directory as root, before it changes user): a directory swapped for one the
        # user may not enter, after the check above and before the start, is not entered.
        as_user = (_EnterAsUser(cwd, run_as.name) if self._submitters is not None
                   and run_as is not None and run_as.switches and cwd is not None else None)

        def start(enter: _Enter | None) -> subprocess.Popen[bytes]:
            preexec: Callable[[], None] | None = enter
            if as_user is not None:
                preexec = as_user.after(enter)
            return subprocess.Popen(
                job.argv,
                stdin=_devnull() if job.input is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=env,
                cwd=cwd if as_user is None else None,
                preexec_fn=preexec,
                **identity,
            )

        try:
            try:
                proc = start(enter)
            except subprocess.SubprocessError:
                # Only the child's write to cgroup.procs can raise this (a kernel that checks
                # the writer's rights, not the opener's, for a job of another user): the job
                # runs as where there are no cgroups.
                if cgroup is None:
                    raise
                cgroup.remove()
                cgroup = None
                proc = start(None)
        except OSError as start_error:
            if cgroup is not None:
                cgroup.remove()
            return self._start_failed(start_error)
        finally:
            if enter is not None:
                enter.close()
        if self._watchdog is not None:
            self._watchdog.guard(proc.pid, job.id, None if cgroup is None else str(cgroup.path))
        with self._lock:
            self._cgroup = cgroup
            self._pgid = proc.pid  # a new session's leader: its pid is the group's id
            if self._kill_reason is not None:  # killed before it even started
                self._term_sent_at = time.monotonic()
                _signal_group(proc.pid, signal.SIGTERM)
        started = time.monotonic()
        deadline = started + job.timeout_s if job.timeout_s else None
        self._pump(proc, deadline, job.input)
        returncode = self._reap(proc, block=True)
        assert returncode is not None
        self._kill_leftovers(proc.pid)
        usage = self._usage(cgroup)
        if self._watchdog is not None:
            self._watchdog.release(proc.pid)
        with self._lock:
            reason = self._kill_reason
            self._cgroup = None
        if cgroup is not None:
            cgroup.remove()
        # Killed by the kernel for memory (its cgroup's oom_kill), and not by jobctl first.
        oom = bool(usage.oom_killed) and reason is None and returncode != 0
        if returncode < 0:
            signum = -returncode
            error = reason or (oom_error(cgroup.mem_bytes) if oom and cgroup is not None
                               else f"killed by {_signal_name(signum)}")
            return ProcessResult(128 + signum, signum, error, reason, True, usage)
        failure = reason if reason else (f"exit code {returncode}" if returncode else None)
        if oom and cgroup is not None:  # e.g. a shell whose child the kernel killed
            failure = f"{oom_error(cgroup.mem_bytes)}, exit code {returncode}"
        return ProcessResult(returncode, None, failure, reason, True, usage)

    def _submitter(self, job: ClaimedJob) -> tuple[RunAs | None, str]:
        """The user a job runs as under --run-as-submitter (jobctl.runas), or None and why
        it cannot run."""
        from jobctl.runas import NotRunnable

        assert self._submitters is not None
        try:
            name = self._submitters.user_for(job.submitted_by, job.user)
        except NotRunnable as refused:
            return None, f"cannot run as its submitter: {refused}"
        run_as = RunAs.lookup(name)
        whose = (f"submitter {job.submitted_by!r}" if name == job.submitted_by
                 else f"submitter {job.submitted_by!r}, by {self._submitters.source}")
        if run_as is None:
            return None, f"no such user {name!r} on this worker (the user of its {whose})"
        if run_as.uid == 0:
            return None, (f"user {name!r} (the user of its {whose}) is root, and a worker with "
                          "--run-as-submitter never runs a job as root")
        return run_as, ""

    def _cgroup_for(self, job: ClaimedJob) -> tuple[JobCgroup | None, _Enter | None]:
        """The attempt's cgroup, if the worker has them, and what puts the child in it."""
        if self._cgroups is None:
            return None, None
        cgroup = self._cgroups.for_job(job.id, job.attempt, job.mem_bytes, job.cpus)
        if cgroup is None:
            return None, None
        try:
            return cgroup, _Enter(cgroup.open_procs())
        except OSError:
            cgroup.remove()
            return None, None

    def _reap(self, proc: subprocess.Popen[bytes], block: bool) -> int | None:
        """Its exit status once it has exited (None: still running), reaped with wait4 for the
        rusage (Popen's wait would throw that away)."""
        if proc.returncode is not None:
            return proc.returncode
        try:
            pid, status, rusage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (never by jobctl): no status, no figures
            proc.returncode = 0
            return 0
        if pid == 0:
            return None
        self._rusage = rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        return proc.returncode

    def _usage(self, cgroup: JobCgroup | None) -> Usage:
        """The figures of the attempt: its cgroup's, else (or for what it lacks) the rusage."""
        rusage = self._rusage
        fallback = (Usage() if rusage is None
                    else usage_from_rusage(rusage.ru_utime, rusage.ru_stime, rusage.ru_maxrss))
        return fallback if cgroup is None else cgroup.usage(fallback)

    def _kill_hard(self, pgid: int) -> None:
        """SIGKILL the group and, with a cgroup, every process of the tree (cgroup.kill)."""
        _signal_group(pgid, signal.SIGKILL)
        if self._cgroup is not None:
            self._cgroup.kill()

    def _write_hook_output(self, output: bytes, run_as: RunAs | None) -> str:
        """A private file holding `output`, owned by the user the hook runs as; removed by
        cleanup() once the attempt ended."""
        import tempfile

        handle, path = tempfile.mkstemp(prefix=f"jobctl-hook-{self.job.id}-", suffix=".out")
        self._hook_output_path = path
        with os.fdopen(handle, "wb") as file:
            file.write(output)
        if run_as is not None and run_as.switches:
            os.chown(path, run_as.uid, run_as.gid)
        return path

    def cleanup(self) -> None:
        """Remove what the attempt needed only while it ran (a hook's output file)."""
        if self._hook_output_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._hook_output_path)
            self._hook_output_path = None

    def _pump(self, proc: subprocess.Popen[bytes], deadline: float | None,
              stdin_data: bytes | None = None) -> None:
        """Copy the pipes to the sink until both close, and `stdin_data` to the command's stdin
        as it reads it, enforcing the deadline and kill grace."""
        assert proc.stdout is not None and proc.stderr is not None
        streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
        pending: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        # Each stream's secrets masked as it is read (a secret cut by two reads included).
        maskers: dict[str, Masker] = {}
        if self._secrets:
            from jobctl.secret_env import Masker

            maskers = {stream: Masker(self._secrets) for stream in pending}
        pending_since: float | None = None
        exited_at: float | None = None
        poller = select.poll()
        for fd in streams:
            poller.register(fd, select.POLLIN)
        feeder = None
        if proc.stdin is not None:
            feeder = _Feeder(proc.stdin, stdin_data or b"")
            if feeder.feed():
                feeder = None  # all written at once (or nobody reads it): closed
            else:
                poller.register(feeder.fd, select.POLLOUT)
        try:
            while streams or feeder is not None:
                now = time.monotonic()
                timeout = POLL_S
                if pending_since is not None:
                    timeout = min(timeout, max(0.0, pending_since + FLUSH_INTERVAL_S - now))
                for fd, _event in poller.poll(timeout * 1000):
                    if feeder is not None and fd == feeder.fd:
                        if feeder.feed(before_closing=poller.unregister):
                            feeder = None
                        continue
                    data = os.read(fd, CHUNK_BYTES)
                    masker = maskers.get(streams[fd])
                    if not data:
                        if masker is not None:  # what it held back, decided at the end
                            pending[streams[fd]] += masker.finish()
                        poller.unregister(fd)
                        del streams[fd]
                        continue
                    if masker is not None:
                        data = masker.feed(data)
                    buffer = pending[streams[fd]]
                    buffer += data
                    pending_since = pending_since or time.monotonic()
                    if len(buffer) >= CHUNK_BYTES:
                        self._flush(pending)
                        pending_since = None
                now = time.monotonic()
                if pending_since is not None and now - pending_since >= FLUSH_INTERVAL_S:
                    self._flush(pending)
                    pending_since = None
                self._enforce_deadlines(now, deadline)
                if exited_at is None and self._reap(proc, block=False) is not None:
                    exited_at = now
                if exited_at is not None and now - exited_at >= LEFTOVER_WAIT_S:
                    if feeder is not None:  # the rest of its input goes with the command
                        feeder.close(before_closing=poller.unregister)
                        feeder = None
                    if streams:
                        # The command is gone but something it started still holds the pipes.
                        self._kill_leftovers(proc.pid)
                        exited_at = now + self._kill_grace_s
        finally:
            if feeder is not None:
                feeder.close(before_closing=poller.unregister)
            for stream, masker in maskers.items():  # (finished already when its pipe closed)
                pending[stream] += masker.finish()
            self._flush(pending)
            proc.stdout.close()
            proc.stderr.close()
        # Both pipes closed, yet the command may still run (it closed its stdout and stderr).
        delay = REAP_FIRST_S  # it is usually about to exit: look again soon, then less often
        while self._reap(proc, block=False) is None:
            self._enforce_deadlines(time.monotonic(), deadline)
            time.sleep(delay)
            delay = min(delay * 2, REAP_POLL_S)

    def _enforce_deadlines(self, now: float, deadline: float | None) -> None:
        if deadline is not None and now >= deadline:
            self.kill(f"timed out after {_seconds(self.job.timeout_s or 0)}")
        with self._lock:
            term_sent_at, pgid = self._term_sent_at, self._pgid
            if (term_sent_at is not None and not self._killed_hard and pgid is not None
                    and now - term_sent_at >= self._kill_grace_s):
                self._killed_hard = True
                self._kill_hard(pgid)

    def _kill_leftovers(self, pgid: int) -> None:
        """What the command left behind in its group dies with it: SIGTERM, then SIGKILL."""
        if not _group_alive(pgid):
            return
        _signal_group(pgid, signal.SIGTERM)
        give_up = time.monotonic() + self._kill_grace_s
        while _group_alive(pgid) and time.monotonic() < give_up:
            time.sleep(0.02)
        with self._lock:
            self._kill_hard(pgid)

    def _flush(self, pending: dict[str, bytearray]) -> None:
        for stream, buffer in pending.items():
            if buffer:
                self._emit(stream, bytes(buffer))
                buffer.clear()

    def _emit(self, stream: str, data: bytes) -> None:
        """Pass output on, up to the per-attempt cap; past it, one marker and then nothing."""
        if self._truncated:
            return
        room = self._output_cap - self._written
        if len(data) > room:
            data = data[:room]
            self._truncated = True
        if data:
            self._written += len(data)
            self._sink(stream, self._seq, data)
            self._seq += 1
        if self._truncated:
            marker = (f"\n[jobctl: output truncated: this attempt wrote more than "
                      f"{self._output_cap} bytes; the rest was discarded]\n").encode()
            self._sink(stream, self._seq, marker)
            self._seq += 1

    def _start_failed(self, error: OSError) -> ProcessResult:
        command = self.job.argv[0] if self.job.argv else ""
        if error.errno == errno.ENOENT:
            return self._not_started(EXIT_NOT_FOUND, f"command not found: {command}")
        if error.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR):
            return self._not_started(EXIT_NOT_EXECUTABLE, f"cannot execute {command}: "
                                     f"{error.strerror}")
        return self._not_started(EXIT_CANNOT_START, f"cannot start {command}: {error.strerror}")

    def _not_started(self, exit_code: int, message: str) -> ProcessResult:
        # Shown in `job logs` too: the user looks there first.
        self._emit("stderr", f"jobctl: {message}\n".encode())
        return ProcessResult(exit_code, None, message, None, False)


def _read_secret_file(path: str, run_as: RunAs | None) -> bytes:
    """A secret file's bytes, read with the rights of the user the job runs as: a worker
    running as root reads for a job of another user only what that user may read (by a `cat`
    running as the user, as `RunAs.can_enter` asks a shell), never a file of root's."""
    if run_as is None or not run_as.switches:
        with open(path, "rb") as file:
            data: bytes = file.read()
        return data
    try:
        read = subprocess.run(["cat", "--", path], stdin=_devnull(), capture_output=True,
                              cwd="/", env={"PATH": os.defpath}, timeout=PROBE_TIMEOUT_S,
                              check=False, **run_as.popen_arguments())
    except (OSError, subprocess.SubprocessError) as error:
        raise OSError(errno.EIO, f"cannot read it as user {run_as.name}: {error}") from None
    if read.returncode != 0:
        reason = read.stderr.decode(errors="replace").strip().rpartition(": ")[2]
        raise OSError(errno.EACCES, f"{reason or 'cannot read it'} (as user {run_as.name})")
    return bytes(read.stdout)


class _Enter:
    """The child's way into its cgroup: between fork and exec it writes "0" (itself) to the
    cgroup's cgroup.procs, which the worker opened (Python 3.11's subprocess has no cgroup
    argument). Only a write(2) on a descriptor runs in the child."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self) -> None:
        os.write(self.fd, b"0")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class _EnterAsUser:
    """The child's way into its working directory after it became the job's user (preexec
    runs after setuid): chdir, else its reason on its stderr and exit code 125, never exec.
    Only system calls run in the child, on bytes prepared here."""

    def __init__(self, directory: str, user: str) -> None:
        self._directory = os.fsencode(directory)
        self._message = (f"jobctl: user {user!r} cannot enter working directory {directory}\n"
                         .encode(errors="replace"))

    def after(self, enter: _Enter | None) -> Callable[[], None]:
        def preexec() -> None:
            if enter is not None:
                enter()  # into its cgroup first (its failure: as without this)
            try:
                os.chdir(self._directory)
            except OSError:
                with contextlib.suppress(OSError):
                    os.write(2, self._message)
                os._exit(EXIT_CANNOT_START)

        return preexec


class _Feeder:
    """A job's input on its way into the command's stdin pipe: written without blocking, as
    much as the pipe takes each time, then the pipe is closed (the command reads EOF)."""

    def __init__(self, pipe: IO[bytes], data: bytes) -> None:
        self._pipe = pipe
        self.fd = pipe.fileno()
        self._rest = memoryview(data)
        os.set_blocking(self.fd, False)

    def feed(self, before_closing: Callable[[int], None] | None = None) -> bool:
        """Write what the pipe takes now; True once done (and the pipe closed): every byte
        written, or the command closed its end (it does not read its input: not an error)."""
        try:
            while self._rest:
                written = os.write(self.fd, self._rest[:CHUNK_BYTES])
                self._rest = self._rest[written:]
        except BlockingIOError:
            return False  # the pipe is full: more when the command has read some
        except OSError:  # EPIPE: nobody reads it any more
            pass
        self.close(before_closing)
        return True

    def close(self, before_closing: Callable[[int], None] | None = None) -> None:
        # Unregistered from the poller first: a closed descriptor's number is soon reused.
        if before_closing is not None:
            with contextlib.suppress(KeyError):
                before_closing(self.fd)
        with contextlib.suppress(OSError):
            self._pipe.close()


@record
class RunAs:
    """The Unix user a job runs as (`job submit --user`), as found on this worker.

    A worker running as root starts the job with the user's uid, primary group and
    supplementary groups (those of /etc/group and NSS, as login does), and the job's
    environment has the user's HOME, USER, LOGNAME and SHELL (its own --env still wins). It
    starts in its --cwd, which the user must be able to enter (else it does not start, exit
    125); without one, in the worker's directory if the user can enter it, else in the user's
    home directory, else in /. A job whose user is the worker's own runs without switching
    (its environment variables are set all the same).
    """

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str

    @classmethod
    def lookup(cls, name: str) -> RunAs | None:
        """The user of that name on this machine, or None when there is none."""
        import pwd

        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        try:
            groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        except OSError:
            groups = (entry.pw_gid,)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir,
                   entry.pw_shell)

    @property
    def switches(self) -> bool:
        """Whether the job's process must change user (this worker runs as someone else)."""
        return self.uid != os.geteuid()

    def env(self) -> dict[str, str]:
        env = {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}
        if self.shell:
            env["SHELL"] = self.shell
        return env

    def popen_arguments(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}

    def start_directory(self, cwd: str | None) -> str | None:
        """Where the job starts (see the class); None when the user cannot enter `cwd`."""
        if cwd is not None:
            return cwd if self.can_enter(cwd) else None
        with contextlib.suppress(OSError):
            here = os.getcwd()
            if self.can_enter(here):
                return here
        if self.home and self.can_enter(self.home):
            return self.home
        return "/"

    def can_enter(self, directory: str) -> bool:
        """Whether this user may `cd` into `directory`. Asked of a shell running as the user:
        Popen changes directory before it changes user, so it cannot tell, and permission bits
        alone would miss ACLs, root-squashing NFS and the like."""
        try:
            probe = subprocess.run(
                ["/bin/sh", "-c", 'cd -- "$1"', "sh", directory], stdin=_devnull(),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                env={"PATH": os.defpath}, timeout=PROBE_TIMEOUT_S, check=False,
                **self.popen_arguments())
        except (OSError, subprocess.SubprocessError):
            return False
        return probe.returncode == 0


_DEVNULL: int | None = None


def _devnull() -> int:
    """/dev/null opened once for every job's stdin (subprocess.DEVNULL opens it per process)."""
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _DEVNULL


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # the group is already gone
    except PermissionError:
        pass  # a member changed its user; nothing more we may do


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _seconds(value: float) -> str:
    return f"{value:g}s"


class Watchdog:
    """The worker's handle on its watchdog process (see jobctl/worker/watchdog.py)."""

    def __init__(self, first_deadline: float) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "jobctl.worker.watchdog", repr(first_deadline)],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._process.stdin is not None
        self._fd: int | None = self._process.stdin.fileno()
        # guard/release come from slot threads, which have all ended before close(); only the
        # heartbeat's extend() can race close(), so only those two share a lock (a write after
        # close could land in whatever file reuses the descriptor).
        self._closing = threading.Lock()

    def guard(self, pgid: int, job_id: int, cgroup: str | None = None) -> None:
        self._send(f"guard {pgid} {job_id}" + (f" {cgroup}\n" if cgroup else "\n"))

    def release(self, pgid: int) -> None:
        self._send(f"release {pgid}\n")

    def extend(self, deadline: float) -> None:
        with self._closing:
            self._send(f"deadline {deadline!r}\n")

    def close(self) -> None:
        """End of input: the watchdog kills what it still guards (nothing, normally) and exits."""
        with self._closing:
            self._fd = None
            if self._process.stdin is not None:
                with contextlib.suppress(OSError):
                    self._process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=5)

    def _send(self, line: str) -> None:
        # One unbuffered write per line and no lock: a pipe write of at most PIPE_BUF bytes is
        # atomic, so the slot threads' lines never interleave (a locked, buffered writer made the
        # slots queue behind each other, two lines per job).
        fd = self._fd
        if fd is None:
            return
        try:
            os.write(fd, line.encode())
        except OSError:
            # It died: the worker's own heartbeat thread still fences, just less surely.
            self._fd = None
