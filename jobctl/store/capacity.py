"""Capacity control in the store: queues as objects (pause, caps, rates), holding and editing jobs
not started, the gated claim, and the facts `job explain` reads.

The hot path's claim (jobctl.store.queue) never takes a held or gated job, nor a job of a paused
or capped queue; its statement says whether such work waits (`gated_waiting`), and then the
worker's turn runs `claim_gated` too. The gated claim is serialised cluster-wide (PostgreSQL: one
transaction-scoped advisory lock; SQLite: the write lock the turn holds), and counts what is
running in the same transaction, so a cap, a limit or a GPU is never given twice; the choice
itself is jobctl.capacity.pick, a plain function. A dead worker's jobs stay `running`, and so keep
their place, until the rescuer takes them back after their lease ran out, by which time the
worker's watchdog has killed them (fencing): a place is freed only once its job is gone.

The statements are the backend's (`conn.backend.sql_capacity`, see CapacitySQL).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from jobctl import capacity
from jobctl.capacity import (
    COUNTED,
    Candidate,
    HostUsage,
    QueueSettings,
    Resources,
    Room,
    WorkerView,
)
from jobctl.errors import InvalidInput, NotFound
from jobctl.models import NOT_STARTED_STATES, Delivery
from jobctl.record import record
from jobctl.store import notify
from jobctl.store.direct import Conn
from jobctl.store.reads import database_now
from jobctl.store.workers import LIVE_WORKER

# How many candidates the gated claim reads per free slot, per follower it may claim, and at
# least: jobs that do not fit for a reason SQL cannot see (limits within the batch) are passed
# over within the window.
WINDOW_PER_SLOT = 4
WINDOW_PER_FOLLOWER = 2
MIN_WINDOW = 32


@record
class Gate:
    """What the claiming worker offers, for the gated claim."""

    host: str
    resources: Resources
    tags: Mapping[str, str]


# --- queues -----------------------------------------------------------------------------------


@record
class QueueInfo:
    """A row of `jobctl queue list`: the queue's settings, and its jobs counted (COUNTED)."""

    settings: QueueSettings
    counts: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        s = self.settings
        return {"name": s.name, "paused": s.paused, "max_running": s.max_running,
                "rate": s.rate, **{key: self.counts.get(key, 0) for key in COUNTED}}


def _settings(conn: Conn, row: Sequence[Any]) -> QueueSettings:
    name, paused, max_running, rate_count, rate_window_s, recent = row
    return QueueSettings(name=name, paused=bool(paused), max_running=max_running,
                         rate_count=rate_count, rate_window_s=rate_window_s,
                         recent_starts=tuple(conn.json(recent) or ()))


def queue_settings(conn: Conn, names: Sequence[str]) -> dict[str, QueueSettings]:
    """The settings of these queues (defaults for a queue with no row)."""
    rows = conn.execute(conn.backend.sql_capacity.QUEUE_SETTINGS,
                        {"queues": conn.ids_param(list(names))}).fetchall()
    found = {row[0]: _settings(conn, row) for row in rows}
    return {name: found.get(name, QueueSettings(name=name)) for name in names}


def list_queues(conn: Conn) -> list[QueueInfo]:
    """Every queue known: with a row, with jobs, or served by a live worker; by name."""
    sql = conn.backend.sql_capacity
    counts: dict[str, dict[str, int]] = {}
    for queue, state, held, count in conn.execute(sql.QUEUE_COUNTS).fetchall():
        key = "held" if held and state in ("queued", "waiting") else state
        bucket = counts.setdefault(queue, {})
        bucket[key] = bucket.get(key, 0) + int(count)
    names = set(counts) | set(_live_worker_queues(conn)) | {"default"}
    rows = {row[0]: _settings(conn, row) for row in conn.execute(sql.ALL_QUEUE_SETTINGS)}
    names |= set(rows)
    return [QueueInfo(settings=rows.get(name, QueueSettings(name=name)),
                      counts=counts.get(name, {})) for name in sorted(names)]


def _live_worker_queues(conn: Conn) -> set[str]:
    names: set[str] = set()
    for (queues,) in conn.execute(conn.backend.sql_queue.LIVE_WORKER_QUEUES).fetchall():
        names.update(conn.json(queues) or ())
    return names


def known_queues(conn: Conn, names: Sequence[str]) -> set[str]:
    """Those of `names` that are known: `default`, a queue with a row, with any job, or served by
    a live worker."""
    sql = conn.backend.sql_capacity
    found = {row[0] for row in conn.execute(sql.KNOWN_QUEUES,
                                            {"queues": conn.ids_param(list(names))})}
    return found | ({"default"} & set(names)) | (_live_worker_queues(conn) & set(names))


def pause(conn: Conn, names: Sequence[str], paused: bool) -> None:
    """Pause or resume queues, all or none: an unknown name changes nothing (InvalidInput)."""
    unknown = sorted(set(names) - known_queues(conn, names))
    if unknown:
        raise InvalidInput(f"no such queue: {', '.join(unknown)} (no job, worker or setting "
                           "names it; `jobctl queue list` shows those known)")
    sql = conn.backend.sql_capacity
    for name in dict.fromkeys(names):
        conn.execute(sql.SET_PAUSED, {"name": name, "paused": paused})
        if not paused:
            notify.job_submitted(conn, name)  # wake its workers


_UNSET: Any = object()


def set_queue(conn: Conn, name: str, *, max_running: int | None = _UNSET,
              rate: tuple[int, float] | None = _UNSET) -> QueueSettings:
    """Set a queue's cap and rate (None: remove; left out: unchanged); creates its row."""
    current = queue_settings(conn, [name])[name]
    new_max = current.max_running if max_running is _UNSET else max_running
    count, window = ((current.rate_count, current.rate_window_s) if rate is _UNSET
                     else rate if rate is not None else (None, None))
    starts = list(current.recent_starts) if count == current.rate_count else []
    conn.execute(conn.backend.sql_capacity.UPSERT_QUEUE, {
        "name": name, "max_running": new_max, "rate_count": count, "rate_window_s": window,
        "recent_starts": conn.json_param(starts)})
    notify.job_submitted(conn, name)  # a raised or removed cap may let jobs start
    return QueueSettings(name=name, paused=current.paused, max_running=new_max,
                         rate_count=count, rate_window_s=window, recent_starts=tuple(starts))


# --- holding and editing ----------------------------------------------------------------------


def hold(conn: Conn, job_ids: Sequence[int], held: bool) -> dict[int, str]:
    """Hold or release jobs not started: each id's state. A running or finished job is not
    changed; an unknown id changes nothing at all (NotFound)."""
    from jobctl.store.jobs import existing_ids, lock_job

    missing = sorted(set(job_ids) - existing_ids(conn, job_ids))
    if missing:
        raise NotFound(f"no job with id {', '.join(map(str, missing))}")
    for job_id in dict.fromkeys(job_ids):
        lock_job(conn, job_id)  # PermissionDenied: one this role may not change (roles)
    sql = conn.backend.sql_capacity
    states: dict[int, str] = {}
    for job_id in dict.fromkeys(job_ids):
        row = conn.execute(sql.SET_HELD, {"id": job_id, "held": held}).fetchone()
        if row is not None:
            states[job_id] = row[0]
            if not held:
                notify.job_submitted(conn, row[1])
            continue
        state = conn.execute(sql.JOB_STATE, {"id": job_id}).fetchone()
        if state is not None:
            states[job_id] = state[0]
    return states


@record
class Edit:
    """`job edit`: what to change (None: unchanged)."""

    priority: int | None = None
    queue: str | None = None
    run_at: datetime | None = None
    run_in_s: float | None = None
    limits: Mapping[str, int] | None = None  # merged into the job's limits


def edit(conn: Conn, job_id: int, change: Edit) -> None:
    """Change a job not started yet (waiting or queued). NotFound, or InvalidInput when it has
    started or ended."""
    sql = conn.backend.sql_capacity
    row = conn.execute(sql.JOB_FOR_EDIT, {"id": job_id}).fetchone()
    if row is None:
        from jobctl.store.jobs import deny_unless_missing

        deny_unless_missing(conn, job_id)  # there, but not this role's to change (roles)
        raise NotFound(f"no job {job_id}")
    state, limits, queue = row[0], dict(conn.json(row[1]) or {}), row[2]
    if state not in {s.value for s in NOT_STARTED_STATES}:
        raise InvalidInput(f"job {job_id} is {state}: only a job not started yet (waiting or "
                           "queued) can be edited")
    if change.limits:
        limits.update(change.limits)
    run_at = change.run_at
    params = {"id": job_id, "priority": change.priority, "queue": change.queue,
              "run_at": conn.time_param(run_at) if run_at is not None else None,
              "run_in_s": change.run_in_s, "limits": conn.json_param(limits),
              "set_limits": change.limits is not None}
    if conn.execute(sql.EDIT_JOB, params).fetchone() is None:
        raise InvalidInput(f"job {job_id} started meanwhile: it can no longer be edited")
    notify.job_submitted(conn, change.queue or queue)


# --- the gated claim --------------------------------------------------------------------------


def _places(conn: Conn, rows: Sequence[Sequence[Any]]) -> capacity.Places:
    """jobctl.capacity.places of RUNNING's rows."""
    return capacity.places([
        capacity.RunningJob(
            id=row[0], queue=row[1], gated=bool(row[2]), worker_id=row[3], attempt=row[4],
            host=row[5], limits=conn.json(row[6]) or {}, cpus=row[7] or 0.0, mem=row[8] or 0,
            gpus=tuple(capacity.gpu_list(row[9])), after=row[10], after_attempt=row[11])
        for row in rows])


def claim_gated(conn: Conn, worker_id: int, queues: Sequence[str], slots: int, lease_s: float,
                gate: Gate, user: str | None, any_user: bool,
                follow: int = 0) -> list[dict[str, Any]]:
    """Start up to `slots` gated jobs (and jobs of capped queues) of `queues` that fit now, and
    claim up to `follow` more as followers of this worker's running gated jobs, into its
    read-ahead buffer (jobctl.capacity.follow): rows of the backend's CLAIMED_JOB. In a
    transaction of its own (a savepoint inside the caller's), under the cluster-wide gated-claim
    lock."""
    if slots <= 0 and follow <= 0:
        return []
    sql = conn.backend.sql_capacity
    with sql.gated_transaction(conn):
        # Every read first, every fetch after: on PostgreSQL one round trip with the lock (the
        # transaction is pipelined: see gated_transaction).
        names = {"queues": conn.ids_param(list(queues))}
        reads = [conn.execute(sql.QUEUE_SETTINGS, names), conn.execute(sql.NOW_EPOCH),
                 conn.execute(sql.RUNNING, names)]
        settings_rows, now_rows, running_rows = (cursor.fetchall() for cursor in reads)
        found = {row[0]: _settings(conn, row) for row in settings_rows}
        settings = {name: found.get(name, QueueSettings(name=name)) for name in queues}
        now_s = float(now_rows[0][0])
        held = _places(conn, running_rows)
        tails = list(held.tails.get(worker_id, ())) if follow > 0 else []
        # Queues whose jobs may be followed (see _followable).
        followable = ({name for name, queue in settings.items() if _followable(queue)}
                      if follow > 0 else set())
        queue_room: dict[str, int | None] = {}
        for name, queue in settings.items():
            if queue.paused:
                continue
            left = (None if queue.max_running is None
                    else queue.max_running - len(held.queue_running.get(name, ())))
            rate = capacity.rate_room(queue, now_s)
            if rate is not None:
                left = rate if left is None else min(left, rate)
            if left is None or left > 0 or name in followable:  # a follower needs no room
                queue_room[name] = left
        if not queue_room:
            return []
        open_queues = sorted(queue_room)
        capped = [name for name in open_queues if settings[name].capped]
        usage = held.key_usage()
        host = held.hosts.get(gate.host, HostUsage())
        free_gpus = [index for index in range(gate.resources.gpu)
                     if index not in host.gpu_holders]
        room = Room(slots=max(0, slots), cpu=gate.resources.cpu - host.cpu,
                    mem=gate.resources.mem - host.mem, free_gpus=free_gpus,
                    queue_room=queue_room, key_usage=dict(usage))
        window = max(MIN_WINDOW, WINDOW_PER_SLOT * max(0, slots)
                     + WINDOW_PER_FOLLOWER * max(0, follow))
        # A follower may need what the job it follows holds, more than what is free.
        cpu, mem, gpus = room.cpu, room.mem, len(free_gpus)
        for tail in tails:
            cpu, mem, gpus = max(cpu, tail.cpus), max(mem, tail.mem), max(gpus, len(tail.gpus))
        rows = sql.candidates(
            conn, open_queues=open_queues, capped=capped, usage=usage, tags=gate.tags,
            cpu=cpu, mem=mem, gpus=gpus, window=window, user=user, any_user=any_user,
            full_keys_too=follow > 0)
        candidates = [Candidate(id=row[0], queue=row[1], limits=conn.json(row[2]) or {},
                                cpus=row[3] or 0.0, mem=row[4] or 0, gpus=row[5] or 0,
                                may_follow=row[6] != Delivery.AT_MOST_ONCE.value,
                                attempt=row[7])
                      for row in rows]
        chosen = capacity.pick(candidates, room)
        followers: list[capacity.Follow] = []
        if follow > 0:
            # The jobs started now can be followed too (at the attempt this claim starts).
            by_id = {job.id: job for job in candidates}
            tails += [capacity.Tail(id=job_id, attempt=by_id[job_id].attempt + 1,
                                    queue=by_id[job_id].queue, limits=by_id[job_id].limits,
                                    cpus=by_id[job_id].cpus, mem=by_id[job_id].mem, gpus=gpus)
                      for job_id, gpus in chosen]
            picked = {job_id for job_id, _ in chosen}
            followers = capacity.follow([job for job in candidates if job.id not in picked],
                                        tails, room.key_usage, followable, follow)
        if not chosen and not followers:
            return []
        claimed = sql.claim(conn, worker_id, [
            *(Start(job_id, gpus) for job_id, gpus in chosen),
            *(Start(f.id, f.gpus, f.after, f.after_attempt) for f in followers)], lease_s)
        claimed = _without_orphans(conn, worker_id, claimed,
                                   {job_id for job_id, _ in chosen} | {f.id for f in followers},
                                   followers)
        started: dict[str, int] = {}
        for row in claimed:
            started[row["queue"]] = started.get(row["queue"], 0) + 1
        for name, count in started.items():
            queue = settings[name]
            if queue.rate_count is not None:
                conn.execute(sql.SET_RECENT_STARTS, {
                    "name": name, "recent_starts": conn.json_param(
                        capacity.recent_starts_after(queue, now_s, count))})
        return claimed


def _without_orphans(conn: Conn, worker_id: int, claimed: list[dict[str, Any]],
                     asked: set[int], followers: Sequence[capacity.Follow]) -> list[dict[str, Any]]:
    """`claimed` less the followers whose chain passes through a job not claimed after all (a
    cancel came between the candidates and the claim): a follower of a job that does not run
    would hold a place of its own that the claim did not count, so it goes back to the queue
    at once, in this transaction, as if never claimed."""
    missing = asked - {row["id"] for row in claimed}
    if not missing:
        return claimed
    orphans: set[int] = set()
    for follower in followers:  # in claim order: a chain's links after the job they follow
        if follower.after in missing or follower.after in orphans:
            orphans.add(follower.id)
    kept = []
    for row in claimed:
        if row["id"] in orphans:
            conn.execute(conn.backend.sql_queue.RELEASE, {
                "id": row["id"], "attempt": row["attempt"], "worker_id": worker_id})
        else:
            kept.append(row)
    return kept


def _followable(queue: QueueSettings) -> bool:
    """Whether a job of this queue may be followed: not paused, no rate (see
    jobctl.capacity.follow)."""
    return not queue.paused and queue.rate_count is None


@record
class Start:
    """A job the gated claim starts: with its GPU indices; a follower also with the job (id,
    attempt) it follows, and it waits in the worker's read-ahead buffer."""

    id: int
    gpus: tuple[int, ...]
    after: int | None = None
    after_attempt: int | None = None


def gated_due(conn: Conn, queues: Sequence[str], gate: Gate, user: str | None,
              any_user: bool) -> int:
    """How many due gated jobs of `queues` (not paused) fit this worker when nothing runs: a
    burst worker waits for those, and leaves the others (they wait for a worker that fits)."""
    sql = conn.backend.sql_capacity
    open_queues = [name for name, queue in queue_settings(conn, queues).items()
                   if not queue.paused]
    if not open_queues:
        return 0
    rows = sql.candidates(
        conn, open_queues=open_queues, capped=[], usage={}, tags=gate.tags,
        cpu=gate.resources.cpu, mem=gate.resources.mem, gpus=gate.resources.gpu, window=1,
        user=user, any_user=any_user, full_keys_too=False)
    return len(rows)


# --- job explain ------------------------------------------------------------------------------


def live_workers(conn: Conn) -> list[WorkerView]:
    views = []
    for worker_id, name, host, queues, tags, resources in conn.execute(
            conn.backend.sql_capacity.LIVE_WORKERS).fetchall():
        views.append(WorkerView(id=worker_id, name=name, host=host,
                                queues=tuple(conn.json(queues) or ()),
                                tags=dict(conn.json(tags) or {}),
                                resources=Resources.from_json(conn.json(resources))))
    return views


def facts(conn: Conn, job_id: int) -> capacity.Facts:
    """What `job explain` looks at, in one transaction. NotFound when there is no such job."""
    from jobctl.store import reads

    job = reads.get(conn, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    sql = conn.backend.sql_capacity
    settings = queue_settings(conn, [job.queue])[job.queue]
    held = _places(conn, conn.execute(sql.RUNNING, {"queues": conn.ids_param([job.queue])})
                   .fetchall())
    holders = {key: ids for key, ids in held.key_holders.items() if key in job.limits}
    waits = [(dep.job_id, dep.state.value) for dep in reads.waits_for(conn, job_id)
             if job.state.value == "waiting" and not (
                 dep.state.value == "succeeded"
                 or (dep.condition.value == "any" and dep.state.is_final))]
    workers = live_workers(conn)
    usage = {host: held.hosts.get(host, HostUsage()) for host in {w.host for w in workers}}
    worker_name = None
    if job.worker_id is not None:
        worker_name = next((w.name for w in workers if w.id == job.worker_id),
                           f"id {job.worker_id}")
    return capacity.Facts(
        id=job.id, state=job.state.value, queue=job.queue, held=job.held, attempt=job.attempt,
        run_at=job.run_at, now=database_now(conn), limits=job.limits, cpus=job.cpus or 0.0,
        mem=job.mem_bytes or 0, gpus=job.gpus, requires=job.requires,
        queue_settings=settings, queue_running=sorted(held.queue_running.get(job.queue, ())),
        key_holders={key: sorted(ids) for key, ids in holders.items()}, waits_for=waits,
        workers=workers, usage=usage, worker_name=worker_name, error=job.error)


class CapacitySQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.capacity)."""

    # Settings of the queues :queues (name, paused, max_running, rate_count, rate_window_s,
    # recent_starts); of every queue with a row.
    QUEUE_SETTINGS: str
    ALL_QUEUE_SETTINGS: str
    # (queue, state, held, count) of unfinished jobs.
    QUEUE_COUNTS: str
    # Those of :queues with a row or any job.
    KNOWN_QUEUES: str
    SET_PAUSED: str
    UPSERT_QUEUE: str
    SET_RECENT_STARTS: str
    # A job not started: hold/release it (RETURNING state, queue); its state; edit it.
    SET_HELD: str
    JOB_STATE: str
    JOB_FOR_EDIT: str
    EDIT_JOB: str
    # The database clock as epoch seconds.
    NOW_EPOCH: str
    # The running jobs of :queues and the running gated jobs (see `running`).
    RUNNING: str
    # (id, name, hostname, queues, tags, resources) of live workers.
    LIVE_WORKERS: str

    def gated_transaction(self, conn: Conn) -> contextlib.AbstractContextManager[None]:
        """A transaction (or savepoint) holding the cluster-wide gated-claim lock."""
        ...

    def candidates(self, conn: Conn, *, open_queues: Sequence[str], capped: Sequence[str],
                   usage: Mapping[str, int], tags: Mapping[str, str], cpu: float, mem: int,
                   gpus: int, window: int, user: str | None, any_user: bool,
                   full_keys_too: bool) -> list[Sequence[Any]]:
        """The queued jobs the gated claim may start or have follow, in claim order, at most
        `window`: gated jobs of `open_queues` whose tags the worker has (`tags`), whose
        resources are at most `cpu`, `mem` and `gpus`, and whose keys are not full (`usage`:
        running jobs per key; `full_keys_too`: a key with as many as its limit is not full
        for a follower, which takes a holder's place), and every job of the `capped` queues.
        Rows: (id, queue, limits, cpus, mem_bytes, gpus, delivery, attempt)."""
        ...

    def claim(self, conn: Conn, worker_id: int, starts: Sequence[Start],
              lease_s: float) -> list[dict[str, Any]]:
        """Claim these jobs if still queued: a follower into the read-ahead buffer
        (`in_buffer`), the others to start at once; CLAIMED_JOB rows."""
        ...



# --- SQL both backends share ------------------------------------------------------------------
# Parameterless SQL both run as it is; each backend's module (jobctl.store.<backend>.capacity)
# takes these and adds its own.

_QUEUE_COLUMNS = "name, paused, max_running, rate_count, rate_window_s, recent_starts"
# Every queue with a row.
ALL_QUEUE_SETTINGS = f"SELECT {_QUEUE_COLUMNS} FROM queues ORDER BY name"
# Unfinished jobs by queue, state and held.
QUEUE_COUNTS = """SELECT queue, state, held, count(*) FROM jobs
WHERE state IN ('waiting', 'queued', 'running') GROUP BY queue, state, held"""


def running(in_queues: str) -> str:
    """RUNNING, from the backend's test that `j.queue` is one of :queues: every running job of
    those queues and every running gated job, with what jobctl.capacity.places counts (one scan
    of the running jobs: ix_jobs_lease)."""
    return f"""SELECT j.id, j.queue, j.gated, j.worker_id, j.attempt, w.hostname, j.limits, j.cpus,
       j.mem_bytes, j.gpu_indices, j.after_id, j.after_attempt
FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id
WHERE j.state = 'running' AND (j.gated OR {in_queues})"""


# Where each GPU-, CPU- or memory-holding job runs is its worker's machine.
LIVE_WORKERS = f"""SELECT id, name, hostname, queues, tags, resources FROM workers
WHERE {LIVE_WORKER} ORDER BY name"""
