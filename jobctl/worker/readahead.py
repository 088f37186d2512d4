"""The jobs a worker holds, and among them the read-ahead buffer: jobs claimed but not started.

While there is a backlog of short jobs, the worker claims more than it has free slots, so that a
slot that frees starts the next job at once instead of waiting for a database round trip. A job
that waits too long in the buffer, or is there when the worker drains, goes back to the queue
uncharged (the main loop releases it); one that a slot starts from the buffer is reported to the
database by the next turn (`jobs.in_buffer`), so that a rescuer knows its command may have run.

`Held` is the one place these facts live, behind one lock, and which thread does what to them:

    main thread    hold() what it claimed, take_started() for the next turn (give_back() if the
                   turn failed), buffered()/stale()/remove_unstarted() to release, written()
                   once results are stored, count()/idle()/free_slots() to plan the next claim
    slot threads   next_for_slot() after each job (the buffer's head, or the slot is free),
                   ended() when a job has ended
    heartbeat      lease_ids() to renew, ids() and kill() (cancel, lease lost, fencing)
    listener       kill() (cancel)
    shutdown       kill_all() at the deadline
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterable

from jobctl.store.queue import ClaimedJob
from jobctl.worker.process import JobProcess

log = logging.getLogger("jobctl.worker")

# Read ahead only while jobs are this short on average: a long job's successor would sit in the
# buffer while another worker could run it.
READAHEAD_MAX_AVERAGE_S = 0.5
# A job that waited this long in the buffer goes back to the queue for another worker.
READAHEAD_MAX_WAIT_S = 1.0
SHUTDOWN_KILL = "the worker shut down before it finished"


class Running:
    """One job this worker holds: claimed, maybe waiting in the read-ahead buffer, maybe running."""

    def __init__(self, job: ClaimedJob, process: JobProcess) -> None:
        self.job = job
        self.process = process
        self.claimed_at = time.monotonic()
        self.cancelled = False
        self.released = False
        self.lost = False  # killed because its lease could not be kept (fencing)


def claim_room(held: int, concurrency: int, readahead: int | None, backlog: bool,
               average_run_s: float, following: bool = False) -> int:
    """How many jobs to claim now: the free slots, plus read-ahead room (`readahead`; None for
    four times the concurrency; eight while it runs gated jobs, `following`, if eight of them
    take less than half of READAHEAD_MAX_WAIT_S) while there is a backlog of short jobs.
    Followers wait in one chain per slot (jobctl.capacity.follow), not in one line for all
    slots: a slot whose chain runs dry idles until a turn, however many followers wait behind
    the others, so chains need more depth than a shared line; but the last of a chain must
    not wait so long that it is given back as stale. (At 8 slots, PostgreSQL, a cap and a key,
    `true` jobs: 4 per slot drained ~1,500 jobs/s, 8 per slot ~1,630.)"""
    capacity = concurrency
    if backlog and average_run_s < READAHEAD_MAX_AVERAGE_S:
        if readahead is None:
            deep = following and 8 * average_run_s < READAHEAD_MAX_WAIT_S / 2
            capacity += (8 if deep else 4) * concurrency
        else:
            capacity += readahead
    return max(0, capacity - held)


class Held:
    """The jobs claimed and not yet ended (running or buffered), the slots they occupy, and
    the ended ones whose results are not written yet (see the module docstring)."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._running: dict[int, Running] = {}  # claimed and not yet ended
        self._ready: collections.deque[Running] = collections.deque()  # claimed, not started
        # Started from the buffer since the last turn: the next turn tells the database.
        self._started: list[int] = []
        # Ended, result not written yet: their leases are renewed too, or a slow database turn
        # could let the rescuer take back (and run again) a job that has finished.
        self._unwritten: set[int] = set()
        self.busy_slots = 0  # read without the lock by the metrics: an int is read whole

    # --- main thread --------------------------------------------------------------------------

    def hold(self, run: Running) -> bool:
        """A job just claimed: True when a slot is free for it (now counted busy: start it),
        False when it waits in the buffer (a follower also while the job it follows is held)."""
        with self._lock:
            self._running[run.job.id] = run
            if self.busy_slots >= self.concurrency or self._follows_held(run):
                self._ready.append(run)
                return False
            self.busy_slots += 1
            if run.job.in_buffer:  # claimed for the buffer, but a slot freed meanwhile
                self._started.append(run.job.id)
            return True

    def take_started(self) -> list[int]:
        """The jobs started from the buffer since the last call, for the next turn to mark."""
        with self._lock:
            started, self._started = self._started, []
            return started

    def give_back(self, started: list[int]) -> None:
        """The turn that should have marked these failed: the next one will."""
        with self._lock:
            self._started[:0] = started

    def buffered(self) -> list[Running]:
        with self._lock:
            return list(self._ready)

    def stale(self, now: float) -> list[Running]:
        """Buffered jobs that have waited longer than READAHEAD_MAX_WAIT_S."""
        with self._lock:
            return [r for r in self._ready if now - r.claimed_at > READAHEAD_MAX_WAIT_S]

    def remove_unstarted(self, runs: Iterable[Running]) -> list[Running]:
        """Stop holding those of `runs` still in the buffer (to give them back), and with each
        the followers in the buffer behind it (a follower of a job given back would hold a
        place of its own beside the job that job followed); returns them."""
        with self._lock:
            removed = [r for r in runs if r in self._ready]
            gone = {run.job.id for run in removed}
            for run in self._ready:  # in claim order: a follower after the job it follows
                if run.job.after in gone and run not in removed:
                    removed.append(run)
                    gone.add(run.job.id)
            for run in removed:
                self._ready.remove(run)
                del self._running[run.job.id]
            return removed

    def written(self, job_ids: Iterable[int]) -> None:
        with self._lock:
            self._unwritten.difference_update(job_ids)

    def count(self) -> int:
        with self._lock:
            return len(self._running)

    def idle(self) -> bool:
        return self.count() == 0

    def has_buffered(self) -> bool:
        with self._lock:
            return len(self._ready) > 0

    def has_gated(self) -> bool:
        """Whether it holds a gated job (claimed for a free slot, or following one)."""
        with self._lock:
            return any(run.job.gated for run in self._running.values())

    def free_slots(self) -> int:
        with self._lock:
            return max(0, self.concurrency - self.busy_slots)

    # --- slot threads -------------------------------------------------------------------------

    def next_for_slot(self, feed: bool) -> Running | None:
        """A slot has ended its job: the next one from the buffer that may start (when `feed`,
        i.e. the worker is not draining), marked started; or None, and the slot is free."""
        with self._lock:
            run = self._next_ready() if feed else None
            if run is None:
                self.busy_slots -= 1
            return run

    def _next_ready(self) -> Running | None:
        """The buffer's first job that may start (under the lock), taken out and marked started:
        a follower may not while the job it follows is held (claimed and not ended here), for
        until then that one holds the place the follower takes (jobctl.capacity.follow)."""
        for run in self._ready:
            if not self._follows_held(run):
                self._ready.remove(run)
                self._started.append(run.job.id)
                return run
        return None

    def _follows_held(self, run: Running) -> bool:
        return run.job.after is not None and run.job.after in self._running

    def ended(self, run: Running) -> None:
        """Its attempt is over; its result is on its way to the database."""
        with self._lock:
            del self._running[run.job.id]
            self._unwritten.add(run.job.id)

    # --- any thread ---------------------------------------------------------------------------

    def lease_ids(self) -> list[int]:
        """The jobs whose leases we keep: held, and ended but not written."""
        with self._lock:
            return sorted(self._running.keys() | self._unwritten)

    def ids(self) -> list[int]:
        with self._lock:
            return sorted(self._running)

    def runs(self, job_ids: Iterable[int] | None = None) -> list[Running]:
        """The held jobs among `job_ids` (all of them for None)."""
        with self._lock:
            if job_ids is None:
                return list(self._running.values())
            return [self._running[i] for i in job_ids if i in self._running]

    def kill(self, job_ids: Iterable[int], reason: str, *, cancelled: bool = False,
             at_once: bool = False) -> None:
        """Kill those of `job_ids` we hold: SIGTERM, SIGKILL after the kill grace; `at_once`
        (the job may already run elsewhere): SIGKILL now, and the job counts as lost."""
        for run in self.runs(job_ids):
            run.cancelled = run.cancelled or cancelled
            log.info("job %d: killing it: %s", run.job.id, reason)
            if at_once:
                run.lost = True
                run.process.kill_now(reason)
            else:
                run.process.kill(reason)

    def kill_all(self, hard: bool) -> None:
        """The worker is stopping: SIGTERM every job we hold (SIGKILL when `hard`), each to be
        released (at least once) or recorded as killed (at most once) by its slot."""
        runs = self.runs()
        if runs and not hard:
            log.info("killing %d running job(s): the worker is stopping", len(runs))
        for run in runs:
            run.released = True
            if hard:
                run.process.kill_now(SHUTDOWN_KILL)
            else:
                run.process.kill(SHUTDOWN_KILL)
