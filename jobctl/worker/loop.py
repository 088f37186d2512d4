"""The worker: its main loop, and which of its threads may touch what.

States (jobctl/worker/shutdown.py, forward only): RUNNING (claiming and running jobs) →
DRAINING (no more claims; running jobs may finish until --grace is over) → STOPPING (the
deadline passed or a second signal came: the jobs are killed and released) → STOPPED (the
loop and its clean-up are done). The main loop claims only while RUNNING and ends once it is
not RUNNING and holds no job (or, a burst worker, when nothing is left to do).

Threads, and what each owns:

- main thread: the only one that writes job results and claims. Each turn it stores the output
  the jobs wrote, completes the attempts that ended and claims as many jobs as it has room for
  (`DirectDatabase.turn()`: on PostgreSQL autocommitted statements, each atomic alone; on
  SQLite one transaction), releases stale read-ahead, rescues expired leases of any worker,
  then sleeps on `_wake` until a job ends, a notification arrives or the poll is due. It alone
  uses `self.db` and the planning fields (`_claim_wanted`, `_next_poll`, `_next_rescue`,
  `_backlog`, the turn counts).
- slot threads (one per running job): run a job (`JobProcess`), hand its result and output over
  through `_outcomes`/`_chunks`, then start the next job from the read-ahead buffer without
  waiting for the main thread. They write `_average_run_s` (a float, written whole).
- heartbeat thread (jobctl/worker/heartbeat.py): renews leases, learns of cancels, pushes the
  fencing deadline to the watchdog process and fences, on a connection of its own.
- listener thread (PostgreSQL): turns NOTIFY into wake-ups (new jobs, cancels, `worker stop`).
- shutdown thread (jobctl/worker/shutdown.py): receives SIGTERM/SIGINT, owns the state and the
  drain deadline, kills the jobs when it passes, and ends a worker told to stop now within a
  bound even if the main loop is stuck.

The jobs held (running or in the read-ahead buffer) and the slots they occupy are shared by all
of them through `Held` (jobctl/worker/readahead.py), the one lock; every other cross-thread
hand-over is a queue, an Event or a single write of an immutable value. The database is
reached through its driver alone (jobctl.store.direct): no SQLAlchemy here.
"""

from __future__ import annotations

import logging
import os
import queue as queue_module
import random
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

from jobctl import __version__
from jobctl.accounting import NO_USAGE
from jobctl.capacity import Resources, machine_resources
from jobctl.errors import DatabaseUnavailable
from jobctl.metrics import NO_METRICS, NoMetrics
from jobctl.models import Delivery, JobState, WorkerState
from jobctl.policy import should_retry
from jobctl.runas import SubmitterUsers, login_environment
from jobctl.sdnotify import Notifier
from jobctl.store import notify, queue, reads
from jobctl.store import workers as worker_rows
from jobctl.store.capacity import Gate
from jobctl.store.direct import Conn, DirectDatabase, first_line, rolled_back
from jobctl.store.queue import ClaimedJob, Outcome, OutputChunk
from jobctl.worker.cgroup import WorkerCgroups
from jobctl.worker.heartbeat import Heartbeat
from jobctl.worker.process import DEFAULT_OUTPUT_CAP, JobProcess, ProcessResult, Watchdog
from jobctl.worker.readahead import Held, Running, claim_room
from jobctl.worker.shutdown import ABANDON_WRITE_S, Shutdown, State

log = logging.getLogger("jobctl.worker")

MAX_BACKOFF_S = 3600.0
T = TypeVar("T")


@dataclass
class WorkerSettings:
    queues: list[str] = field(default_factory=lambda: ["default"])
    concurrency: int = 1
    name: str | None = None
    burst: bool = False
    lease_s: float = 20.0  # a crashed worker's jobs are rescued this long after its last renewal
    poll_s: float | None = None  # None: 2 s on PostgreSQL (NOTIFY wakes us), 0.2 s on SQLite
    rescue_every_s: float = 5.0
    grace_s: float = 30.0  # on SIGTERM, how long running jobs may take to finish
    kill_grace_s: float = 5.0  # between SIGTERM and SIGKILL for a job's process group
    output_cap: int = DEFAULT_OUTPUT_CAP
    # Read-ahead: while there is a backlog of short jobs, hold up to this many claimed jobs beyond
    # the free slots, so a slot that frees starts the next job at once instead of waiting for a
    # database round trip. Never started jobs go back to the queue (see READAHEAD_*).
    readahead: int | None = None  # None: four times the concurrency (eight with followers)
    # What it offers gated jobs of its machine's (None: the machine's CPUs and memory, no GPU),
    # and its tags (jobctl.capacity).
    resources: Resources | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # Where the worker can create cgroups (jobctl.worker.cgroup): None, a cgroup for each job
    # that asks for --mem or --cpus (they are enforced there); True, for every job (whole-tree
    # figures and kills for all, at a few ms of kernel time per job: moving a process into a
    # cgroup waits on a machine-wide lock, which cost short jobs three quarters of their
    # throughput); False: none.
    cgroups: bool | None = None
    # --run-as-submitter (a root worker): each job runs as its submitter's Unix user, found as
    # this says (jobctl.runas); None: as its --user, else as the worker's own.
    submitters: SubmitterUsers | None = None


# While the read-ahead buffer keeps every slot busy, results are gathered for up to this long
# (or until there are as many as slots) and written together: fewer, larger turns. Measured:
# a 5,000-job drain 16 % faster than gathering half as many with half the read-ahead.
COALESCE_S = 0.01
# A burst worker that exits with jobs it cannot start logs this many of them, then a count.
BURST_LEFT_LOGGED = 20


def retry_delay(backoff_s: float, attempt: int) -> float:
    """Exponential backoff with ±25 % jitter (so failed jobs don't retry in lockstep), capped."""
    cap = max(MAX_BACKOFF_S, backoff_s)
    # The exponent is bounded: past 2**32 every delay is the cap anyway, and 2.0**1100 overflows.
    delay = backoff_s * 2.0 ** min(max(0, attempt - 1), 32)
    return float(min(cap, delay) * random.uniform(0.75, 1.25))


def outcome_of(job: ClaimedJob, result: ProcessResult, cancelled: bool, shutdown: bool,
               lost: bool = False) -> Outcome:
    """What the database should record for one ended attempt. `lost`: this worker killed it
    because it could not keep the job's lease (fencing): the worker's failure, not the
    command's, so it costs no retry (see `lost_outcome`)."""
    usage = result.usage or NO_USAGE
    ended = Outcome(job_id=job.id, attempt=job.attempt, state=JobState.FAILED,
                    attempt_outcome="failed", exit_code=result.exit_code, signal=result.signal,
                    error=result.error, has_dependents=job.has_dependents,
                    cpu_user_s=usage.cpu_user_s, cpu_system_s=usage.cpu_system_s,
                    max_rss_bytes=usage.max_rss_bytes, oom_killed=usage.oom_killed)
    if result.exit_code == 0 and result.kill_reason is None:
        return replace(ended, state=JobState.SUCCEEDED, attempt_outcome="succeeded")
    if cancelled:
        return replace(ended, state=JobState.CANCELLED, attempt_outcome="cancelled")
    if result.kill_reason is not None and not result.started:
        # Killed while it waited in the read-ahead buffer (fenced, or the worker stopped): its
        # command never started, so whatever the delivery it may run elsewhere, retries intact.
        return replace(ended, state=JobState.QUEUED, attempt_outcome="released",
                       error=f"released before it started: {result.kill_reason}")
    if lost:
        return lost_outcome(job, ended)
    if shutdown:
        if job.delivery is Delivery.AT_LEAST_ONCE:
            # Released, not failed: the worker stopped under it; it runs again at once elsewhere.
            return replace(ended, state=JobState.QUEUED, attempt_outcome="released",
                           error="released: the worker shut down before it finished")
        # At most once: it has started, so it must not start again.
        return replace(ended, error="killed: the worker shut down before it finished")
    own_exit = result.exit_code if result.signal is None and result.kill_reason is None else None
    if should_retry(job.attempt, job.max_attempts, own_exit, job.retry_on_exit,
                    job.no_retry_on_exit):
        return replace(ended, state=JobState.QUEUED,
                       retry_delay_s=retry_delay(job.backoff_s, job.attempt))
    return ended


def lost_outcome(job: ClaimedJob, ended: Outcome) -> Outcome:
    """A started job its worker lost: at-most-once, it is lost (never to run again); at least
    once, it runs again, retries intact, unless it has now taken `max_lost` workers down."""
    if job.delivery is Delivery.AT_MOST_ONCE:
        return replace(ended, state=JobState.LOST, attempt_outcome="lost")
    if job.losses + 1 < job.max_lost:
        return replace(ended, state=JobState.QUEUED, attempt_outcome="lost")
    return replace(ended, attempt_outcome="lost",
                   error=f"{ended.error} ({job.losses + 1} workers lost under it, the most "
                         "allowed)")


class Worker:
    def __init__(self, database: DirectDatabase, settings: WorkerSettings,
                 metrics: NoMetrics = NO_METRICS) -> None:
        self.db = database  # the main thread's
        self._metrics = metrics
        self.settings = settings
        # The machine's name: resources are accounted per machine (JOBCTL_HOSTNAME names it).
        self.hostname = os.environ.get("JOBCTL_HOSTNAME") or socket.gethostname()
        self._gate = Gate(host=self.hostname,
                          resources=settings.resources or machine_resources(),
                          tags=dict(settings.tags))
        self.name = settings.name or f"{self.hostname}.{os.getpid()}"
        self.worker_id = 0
        self._wake = threading.Event()
        self._held = Held(settings.concurrency)
        self._user, self._any_user = _unix_identity()
        self._average_run_s = 1.0  # moving average of recent jobs' run time
        self._backlog = False  # the last claim was full: there is more to claim
        self._outcomes: queue_module.SimpleQueue[Outcome] = queue_module.SimpleQueue()
        self._chunks: queue_module.SimpleQueue[OutputChunk] = queue_module.SimpleQueue()
        self._claim_wanted = True
        # The last claim may have passed over due at-most-once jobs, which are never read ahead:
        # claim again as soon as a slot is free, without waiting for the next poll.
        self._due_when_a_slot_frees = False
        self._next_poll = 0.0
        self._next_rescue = 0.0  # at once: a worker that starts rescues what crashed before it
        self._shutdown = Shutdown(grace_s=settings.grace_s, kill_grace_s=settings.kill_grace_s,
                                  kill_jobs=self._held.kill_all, wake_main=self._wake.set,
                                  abandon=self._abandon)
        self._slots = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="jobctl-slot")
        self._listener: notify.Listener | None = None
        # systemd's notifications (NOTIFY_SOCKET), when it started us: ready, stopping, and
        # watchdog pings from the heartbeat thread, which lives as long as our leases do.
        self._notifier = Notifier.from_environment()
        self._said_stopping = False
        self._heartbeat = Heartbeat(database.clone(), self._held, settings.lease_s, metrics,
                                    self.request_drain, beat=self._notifier.watchdog,
                                    draining=lambda: self._draining)
        self._watchdog: Watchdog | None = None
        self._cgroups: WorkerCgroups | None = None  # a cgroup per job, where it can (cgroup.py)
        # A job run as its submitter gets only what a login would, not the worker's own
        # variables (its database URL among them): jobctl.runas.
        environ = (os.environ if settings.submitters is None
                   else login_environment(os.environ))
        self._job_env = {**environ, "JOBCTL_WORKER": self.name}
        self._turns = 0
        self._turn_jobs = 0
        metrics.watch_slots(lambda: self._held.busy_slots, settings.concurrency)

    @property
    def poll_s(self) -> float:
        """A fallback where notifications wake the worker; the only way to learn of work
        elsewhere (SQLite, or where LISTEN turned out not to work: a transaction pooler)."""
        return self.settings.poll_s or (2.0 if self.db.listen_target else 0.2)

    # --- life cycle ---------------------------------------------------------------------------

    def run(self) -> int:
        with self.db.write() as conn:
            self.worker_id = worker_rows.register(
                conn, name=self.name, hostname=self.hostname, pid=os.getpid(),
                queues=self.settings.queues, concurrency=self.settings.concurrency,
                version=__version__, resources=self._gate.resources.to_json(),
                tags=dict(self._gate.tags),
            )
        self._setup_cgroups()  # its line before "started", which tells that the worker is up
        self._heartbeat.restart_clock()
        self._watchdog = Watchdog(self._heartbeat.fence_deadline())
        self._shutdown.start()
        self._heartbeat.start(self.worker_id, self._watchdog)
        if self.db.listen_target is not None:
            self._listener = notify.Listener(
                self.db.listen_target,
                [notify.JOBS_CHANNEL, notify.CANCEL_CHANNEL, notify.WORKER_CHANNEL],
                self._on_notify, lambda: self.poll_s,
            )
            self._listener.start()
        if self.settings.submitters is not None:
            log.info("--run-as-submitter: %s", self.settings.submitters.describe())
        # Up, and only now said so (the log line, systemd's READY): a SIGTERM from whoever
        # waited for it finds the worker's handler, not Python's default, which kills.
        log.info("worker %s (id %d) started: queues %s, concurrency %d", self.name,
                 self.worker_id, ",".join(self.settings.queues), self.settings.concurrency)
        self._notifier.ready(f"worker {self.name} (id {self.worker_id})")
        try:
            self._main_loop()
        finally:
            self._say_stopping()  # if the loop ended before it noticed the drain
            try:
                self._heartbeat.stop()
                if self._listener is not None:
                    self._listener.stop()
                self._slots.shutdown(wait=True)
                if self._watchdog is not None:
                    self._watchdog.close()
                self._flush_until_done()
                self._deregister(self.db)
            finally:
                if self._cgroups is not None:
                    self._cgroups.close()
                self._shutdown.finished()
        return 0

    def _setup_cgroups(self) -> None:
        """A cgroup per job where this worker may create them, and one line that says what
        `--mem` and `--cpus` mean on this worker: enforced there, or only placing jobs."""
        cgroups, missing = (WorkerCgroups.create(self.worker_id)
                            if self.settings.cgroups is not False else (None, "--no-cgroups"))
        self._cgroups = cgroups
        if cgroups is None:
            log.info("cgroups: none for jobs (%s): --mem and --cpus only place jobs here, they "
                     "are not enforced; CPU and memory figures are each command's rusage",
                     missing)
        elif missing:
            loose = [flag for controller, flag in (("memory", "--mem"), ("cpu", "--cpus"))
                     if controller not in cgroups.enforced]
            log.info("cgroups: %s runs in a cgroup of its own under %s (CPU figures of its "
                     "whole tree, kills that reach all of it); %s only place%s jobs here, not "
                     "enforced: %s", self._cgroup_jobs, cgroups.base, " and ".join(loose),
                     "" if len(loose) > 1 else "s", missing)
        else:
            log.info("cgroups: %s runs in a cgroup of its own under %s; --mem and --cpus are "
                     "enforced there (memory.max, cpu.max)", self._cgroup_jobs, cgroups.base)

    def _say_stopping(self) -> None:
        """STOPPING=1 to systemd (jobctl.sdnotify), once, when the drain begins."""
        if not self._said_stopping:
            self._said_stopping = True
            self._notifier.stopping("finishing running jobs")

    @property
    def _cgroup_jobs(self) -> str:
        return ("each job" if self.settings.cgroups
                else "each job with --mem or --cpus (--cgroups: every job)")

    @property
    def _draining(self) -> bool:
        """Not claiming any more: DRAINING or STOPPING (see the module docstring)."""
        return self._shutdown.state is not State.RUNNING

    def _deregister(self, database: DirectDatabase) -> None:
        try:
            with database.write() as conn:
                worker_rows.set_state(conn, self.worker_id, WorkerState.STOPPED)
        except DatabaseUnavailable as error:
            log.warning("could not mark worker stopped: %s", error)
        log.info("worker %s stopped: %d job(s) finished in %d database turn(s)", self.name,
                 self._turn_jobs, self._turns)

    def request_drain(self) -> None:
        """Asked to stop (`jobctl worker stop`): drain as on a first SIGTERM."""
        if self._shutdown.drain(self.settings.grace_s):
            log.info("asked to stop: finishing running jobs (up to %.0fs)",
                     self.settings.grace_s)

    def _abandon(self) -> None:
        """Told to stop now, the worker has not ended in time: its main loop is stuck, most
        likely waiting on the database (a lock, a server that stopped answering). Write the
        results of the killed jobs and deregister on a connection of our own, for at most
        ABANDON_WRITE_S, and exit 0 without the main loop. What cannot be written is not lost:
        nobody renews these jobs' leases once we are gone, and when they run out the rescuer
        (of any worker or scheduler) puts at-least-once jobs back in the queue, as after a
        crash. The watchdog reads end of input when we exit and kills anything left."""
        outcomes, chunks = _drain(self._outcomes), _drain(self._chunks)
        log.warning("the main loop did not stop in time (waiting on the database?): exiting "
                    "without it, %d result(s) to write", len(outcomes))
        database = self.db.clone()
        written = threading.Event()

        def write() -> None:
            try:
                self._transaction(chunks, outcomes, 0, database=database)
                self._deregister(database)
                written.set()
            except Exception as error:
                log.warning("could not write at exit: %s", error)

        threading.Thread(target=write, name="jobctl-abandon", daemon=True).start()
        if not written.wait(ABANDON_WRITE_S):
            log.warning("stopping with %d result(s) unwritten; their leases will run out and "
                        "the rescuer will put them back", len(outcomes))
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(0)

    # --- the main loop ------------------------------------------------------------------------

    def _main_loop(self) -> None:
        pending_outcomes: list[Outcome] = []
        pending_chunks: list[OutputChunk] = []
        db_backoff = 0.0
        next_db_try = 0.0  # while the database is away: not before this
        first_pending_at = 0.0
        while True:
            self._wake.clear()
            if self._draining:
                self._say_stopping()
            if not pending_outcomes:
                first_pending_at = time.monotonic()
            pending_outcomes += _drain(self._outcomes)
            pending_chunks += _drain(self._chunks)
            now = time.monotonic()
            if self._worth_gathering(len(pending_outcomes), now - first_pending_at):
                self._wake.wait(COALESCE_S)
                continue
            if now >= self._next_rescue and now >= next_db_try:
                self._rescue()  # first: what it re-queues can be claimed in this turn
            free = self._claim_room()
            # Past the fencing deadline (the database was away longer than our leases allow),
            # the watchdog kills every job we hold, and would kill one we started now at once:
            # claim nothing until the heartbeat has renewed (it retries every second).
            fenced = now >= self._heartbeat.fence_deadline()
            want_claim = (not self._draining and free > 0 and not fenced
                          and (self._claim_wanted or now >= self._next_poll
                               or (self._due_when_a_slot_frees and self._held.free_slots() > 0)))
            start_now = min(self._held.free_slots(), free) if want_claim else 0  # as _claim
            claimed: list[ClaimedJob] = []
            marks = self._held.take_started()
            if (pending_outcomes or pending_chunks or want_claim or marks) and now >= next_db_try:
                try:
                    claimed = self._transaction(pending_chunks, pending_outcomes,
                                                free if want_claim else 0, marks)
                except DatabaseUnavailable as error:
                    # Keep what we have and retry; running jobs go on meanwhile (the watchdog
                    # fences them if the outage outlasts the lease).
                    db_backoff = min(max(db_backoff * 2, 0.5), 10.0)
                    next_db_try = now + db_backoff
                    self._held.give_back(marks)
                    log.warning("database unavailable: %s; retrying in %.1fs", error, db_backoff)
                except Exception as error:
                    if not rolled_back(error):
                        raise
                    # A deadlock (e.g. with our heartbeat's renewal, rows taken in another
                    # order) or a serialization conflict: the database undid the whole turn, so
                    # doing it again, after a moment, is safe (results apply once: see
                    # complete_and_claim) and is the remedy.
                    next_db_try = now + random.uniform(0.01, 0.1)
                    self._held.give_back(marks)
                    log.warning("turn rolled back by the database (%s); doing it again",
                                first_line(error))
                else:
                    self._turns += 1
                    self._turn_jobs += len(pending_outcomes)
                    pending_outcomes, pending_chunks = [], []
                    db_backoff = next_db_try = 0.0
                    if want_claim:
                        # A full batch: there may be more. So too after a gated claim: a cap
                        # or a limit cuts its batch short, and more may wait to follow.
                        self._backlog = (len(claimed) == free
                                         or any(job.gated for job in claimed))
                        self._claim_wanted = self._backlog
                        # Short, but every free slot got a job: what was left may be at-most-once
                        # jobs, which wait in the queue, not in the buffer (fewer than the free
                        # slots: nothing more is due).
                        self._due_when_a_slot_frees = (not self._backlog
                                                       and len(claimed) >= start_now)
                        if not self._claim_wanted:
                            self._next_poll = now + self.poll_s
                    for job in claimed:
                        self._start(job)
            self._release_stale_readahead()
            if self._draining:
                self._release_readahead(self._held.buffered())
            if self._held.idle() and (self._draining or (self.settings.burst and not claimed
                                             and not self._claim_wanted
                                             and not pending_outcomes
                                             and not self._burst_has_more())):
                # What could not be written yet is left for _flush_until_done.
                for outcome in pending_outcomes:
                    self._outcomes.put(outcome)
                for chunk in pending_chunks:
                    self._chunks.put(chunk)
                return
            if next_db_try > time.monotonic():
                self._wake.wait(min(next_db_try - time.monotonic(), 1.0))
                continue
            if fenced and not self._draining:
                self._wake.wait(0.1)  # until the heartbeat has renewed
                continue
            if self._claim_wanted and not self._draining and self._claim_room() > 0:
                continue
            timeout = max(0.0, self._next_poll - time.monotonic()) if free > 0 else 1.0
            self._wake.wait(min(timeout, 1.0, max(0.0, self._next_rescue - time.monotonic())))

    def _worth_gathering(self, results: int, waited_s: float) -> bool:
        """Wait for more results before writing these? While no slot waits for work (the
        read-ahead buffer feeds them), or while gated jobs run: those are claimed only for
        free slots, each claim a transaction of its own, so one turn for several that end
        close together starts the next ones sooner than a turn for each."""
        return ((self._held.has_buffered() or self._held.has_gated())
                and 0 < results < self.settings.concurrency
                and waited_s < COALESCE_S and not self._draining)

    def _claim_room(self) -> int:
        """How many jobs to claim now: the free slots, plus read-ahead room while there is a
        backlog of short jobs."""
        return claim_room(self._held.count(), self.settings.concurrency,
                          self.settings.readahead, self._backlog, self._average_run_s,
                          self._held.has_gated())

    def _release_stale_readahead(self) -> None:
        stale = self._held.stale(time.monotonic())
        if stale:
            self._backlog = False  # don't claim them straight back
            self._release_readahead(stale)

    def _release_readahead(self, runs: list[Running]) -> None:
        """Give claimed jobs that never started back to the queue, as if never claimed."""
        runs = self._held.remove_unstarted(runs)
        if not runs:
            return
        try:
            with self.db.write() as conn:
                queue.release(conn, self.worker_id, [(r.job.id, r.job.attempt) for r in runs])
        except DatabaseUnavailable as error:
            # Their leases run out and the rescuer re-queues them, uncharged (`in_buffer`).
            log.warning("could not release %d unstarted job(s): %s", len(runs), error)

    def _transaction(self, chunks: list[OutputChunk], outcomes: list[Outcome],
                     claim_limit: int, started: list[int] | None = None,
                     database: DirectDatabase | None = None) -> list[ClaimedJob]:
        """Mark the jobs started from the read-ahead buffer, store output, complete what ended,
        claim up to `claim_limit`: one turn's database work, on the main thread's connection
        (dropped and reopened if the database goes away) unless `database` is another."""
        claim = self._claim(claim_limit)
        with (database or self.db).turn() as conn:
            # Output can land before the start marks (two statements on PostgreSQL): a rescuer
            # that finds output of the attempt counts it as started either way.
            queue.write_output(conn, chunks)
            applied, claimed = queue.complete_and_claim(
                conn, self.worker_id, outcomes, claim, started or ())
        self._held.written(outcome.job_id for outcome in outcomes)
        for outcome in outcomes:
            self._log_outcome(outcome, outcome.job_id in applied)
        if any(job.hook_of is not None for job in claimed):
            # Outside the turn: on SQLite it holds the write lock, and a hook's input may be
            # megabytes of its job's output. (Should this read fail, the turn stands; the jobs
            # it claimed are not held here, so their leases run out and the rescuer puts them
            # back.)
            with (database or self.db).read() as conn:
                claimed = [_with_hook_input(conn, job) if job.hook_of is not None else job
                           for job in claimed]
        return claimed

    def _claim(self, limit: int) -> queue.Claim:
        """A claim of up to `limit` jobs: as many start at once as slots are free now."""
        start_now = self._held.free_slots()
        return queue.Claim(queues=self.settings.queues, limit=limit,
                           start_now=min(start_now, limit), lease_s=self.settings.lease_s,
                           user=self._user, any_user=self._any_user, gate=self._gate,
                           slots=self.settings.concurrency)

    def _burst_has_more(self) -> bool:
        """A burst worker goes on while its queues hold anything that can still run: due,
        running anywhere, waiting out a retry, or waiting on jobs that can still end."""
        from jobctl import policy

        try:
            with self.db.read() as conn:
                backlog = queue.burst_backlog(conn, self._claim(0))
        except DatabaseUnavailable:
            return True
        decision = policy.burst_decision(backlog)
        if decision.keep_going:
            wait_s = self.poll_s if decision.wait_s is None else min(decision.wait_s, self.poll_s)
            # Never later than already planned: this runs on every idle turn of the loop.
            self._next_poll = min(self._next_poll, time.monotonic() + wait_s)
            return True
        for job_id, why in sorted(decision.left.items())[:BURST_LEFT_LOGGED]:
            log.warning("burst: leaving job %d: %s", job_id, why)
        if len(decision.left) > BURST_LEFT_LOGGED:
            log.warning("burst: and %d more job(s) that cannot start",
                        len(decision.left) - BURST_LEFT_LOGGED)
        return False

    def _flush_until_done(self) -> None:
        """Write what is left after the loop ended (output and results of the last jobs): a few
        tries while the database is away, none more after a second signal. What is still not
        written is left to the rescuer, as after a crash."""
        outcomes, chunks = _drain(self._outcomes), _drain(self._chunks)
        for delay in (0.5, 1.0, 2.0, 4.0):
            if not outcomes and not chunks:
                return
            try:
                self._transaction(chunks, outcomes, 0)
                return
            except DatabaseUnavailable as error:
                log.warning("database unavailable at shutdown: %s", error)
            if self._shutdown.stopping_now:
                break
            self._wake.clear()
            self._wake.wait(delay)  # a signal cuts it short
        log.warning("stopping with %d result(s) unwritten; their leases will run out",
                    len(outcomes))

    # --- running jobs -------------------------------------------------------------------------

    def _start(self, job: ClaimedJob) -> None:
        self._metrics.claimed(job.queue)
        def sink(stream: str, seq: int, data: bytes) -> None:
            self._chunks.put(OutputChunk(job.id, job.attempt, stream, seq, data))
            self._wake.set()

        process = JobProcess(job, sink, kill_grace_s=self.settings.kill_grace_s,
                             output_cap=self.settings.output_cap,
                             base_env=self._job_env, watchdog=self._watchdog,
                             cgroups=self._cgroups if (self.settings.cgroups or job.mem_bytes
                                                       or job.cpus) else None,
                             submitters=self.settings.submitters)
        run = Running(job, process)
        if self._held.hold(run):
            self._slots.submit(self._run_slot, run)

    def _run_slot(self, first: Running) -> None:
        """A slot runs a job, then the next one from the read-ahead buffer, until it is empty."""
        run: Running | None = first
        while run is not None:
            self._run_one(run)
            run = self._held.next_for_slot(feed=not self._draining)

    def _run_one(self, run: Running) -> None:
        started = time.monotonic()
        try:
            result = run.process.run()
        except Exception as error:  # a bug or a resource limit: the job fails, the worker lives
            log.exception("job %d: the worker failed to run it", run.job.id)
            result = ProcessResult(125, None, f"worker error: {error}", None, False)
        finally:
            run.process.cleanup()
        self._average_run_s = 0.9 * self._average_run_s + 0.1 * (time.monotonic() - started)
        if (result.signal == signal.SIGKILL and result.kill_reason is None
                and time.monotonic() >= self._heartbeat.fence_deadline()):
            # Nobody here asked for that SIGKILL: the watchdog fenced the job while we were stalled.
            reason = "fenced: the worker could not renew its lease in time"
            result = replace(result, error=reason, kill_reason=reason)
            run.lost = True
        outcome = outcome_of(run.job, result, run.cancelled, run.released,
                             lost=run.lost and result.started)
        self._metrics.ran(run.job.id, run.job.queue, started - run.claimed_at,
                          time.monotonic() - started)
        if result.usage is not None:
            self._metrics.used(run.job.queue, result.usage)
        self._held.ended(run)
        self._outcomes.put(outcome)
        self._wake.set()

    def _log_outcome(self, outcome: Outcome, applied: bool) -> None:
        self._metrics.finished(outcome, applied)
        if not applied:
            log.warning("job %d attempt %d: result discarded, the lease was lost (%s)",
                        outcome.job_id, outcome.attempt, outcome.attempt_outcome)
        elif outcome.state is JobState.QUEUED:
            log.info("job %d attempt %d %s (%s); queued again in %.1fs", outcome.job_id,
                     outcome.attempt, outcome.attempt_outcome, outcome.error,
                     outcome.retry_delay_s)
        elif outcome.error:
            log.info("job %d %s: %s", outcome.job_id, outcome.state.value, outcome.error)
        else:
            log.info("job %d %s", outcome.job_id, outcome.state.value)

    # --- notifications ------------------------------------------------------------------------

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == notify.CANCEL_CHANNEL:
            try:
                job_id = int(payload)
            except ValueError:
                return
            self._held.kill({job_id}, "cancelled", cancelled=True)
            return
        if channel == notify.WORKER_CHANNEL:
            if payload == str(self.worker_id):
                self.request_drain()
            return
        if channel == "" or payload in self.settings.queues:
            self._claim_wanted = True
            self._wake.set()

    def _rescue(self) -> None:
        """Take back the jobs of expired leases, any worker's (on the main thread's connection;
        it may wait on locks, e.g. behind a long `db prune`, without delaying our renewals)."""
        self._next_rescue = time.monotonic() + self.settings.rescue_every_s
        try:
            with self.db.write() as conn:
                rescued = queue.rescue(conn)
                queue.mark_lost_workers(conn, self.settings.lease_s)
        except DatabaseUnavailable as error:
            log.warning("rescue: %s; trying again in %.0fs", error, self.settings.rescue_every_s)
            return
        except Exception:  # e.g. a deadlock with another rescuer: a chore, never worth dying for
            log.exception("rescue failed; trying again in %.0fs", self.settings.rescue_every_s)
            return
        for job_id in rescued.requeued:
            log.info("job %d: its worker lost the lease; queued again", job_id)
        for job_id, state in rescued.ended.items():
            log.info("job %d: its worker lost the lease; now %s", job_id, state.value)


def _with_hook_input(conn: Conn, job: ClaimedJob) -> ClaimedJob:
    """A hook as it starts: its job's status document on its standard input, that job's
    output for $JOBCTL_HOOK_OUTPUT (jobctl.store.reads.hook_input)."""
    assert job.hook_of is not None
    document, output = reads.hook_input(conn, job.hook_of)
    return replace(job, input=document, hook_output=output)


def _unix_identity() -> tuple[str | None, bool]:
    """The Unix user this worker runs as, and whether it may run jobs as anyone (root)."""
    import pwd

    uid = os.geteuid()
    try:
        name: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    return name, uid == 0


def _drain(source: queue_module.SimpleQueue[T]) -> list[T]:
    items: list[T] = []
    while True:
        try:
            items.append(source.get_nowait())
        except queue_module.Empty:
            return items
