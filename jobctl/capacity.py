"""Capacity control as plain functions: parsing what users type (limits, sizes, rates, resources,
tags), choosing which gated jobs a worker may start now (`pick`), and why a job is not running
(`explain`). Nothing here touches the database: jobctl.store.capacity gathers the facts, in one
transaction, and calls these.

The guarantees (README, "Capacity control"):
- a queue's `--max-running N` and a key's `--limit KEY=N` count *running* jobs, a dead worker's
  included until its job is fenced and rescued, so neither is exceeded even for a moment;
- a queue's `--rate N/D` counts claims on the database clock: at most N in any interval of length D;
- resources are a machine's: jobs running on workers of one machine (`hostname`) share its CPUs,
  memory and GPU indices, and a GPU index is held by one running job at a time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from jobctl.errors import InvalidInput
from jobctl.record import record

# --- parsing what users type -------------------------------------------------------------------

_KEY = re.compile(r"[A-Za-z0-9_.:/@+-]{1,200}")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
# A tag's or requirement's value: printable, no blanks, no comma (--resources-style lists).
_VALUE = re.compile(r"[^\s,=\x00-\x1f\x7f]{1,200}")


def _visible(text: str) -> str:
    return repr(text)


def parse_key(text: str, what: str = "limit key") -> str:
    if not _KEY.fullmatch(text):
        raise InvalidInput(f"a {what} is 1 to 200 letters, digits or _ . : / @ + -, "
                           f"not {_visible(text)}")
    return text


def parse_limit(text: str) -> tuple[str, int]:
    """`KEY=N` (N a whole number, at least 1): start only while fewer than N running jobs hold
    KEY."""
    key, sep, count = text.partition("=")
    if not sep:
        raise InvalidInput(f"--limit takes KEY=N (e.g. db-main=1), not {_visible(text)}")
    parse_key(key, "--limit key")
    if not count.strip().isdigit() or int(count) < 1:
        raise InvalidInput(f"--limit {key}=N: N is a whole number of at least 1, "
                           f"not {_visible(count)}")
    return key, int(count)


def parse_limits(texts: Iterable[str]) -> dict[str, int]:
    limits: dict[str, int] = {}
    for text in texts:
        key, count = parse_limit(text)
        limits[key] = count
    return limits


def parse_size(text: str, what: str = "--mem") -> int:
    """A size in bytes: `512M`, `2G`, `1.5GiB`, `1000000` (K, M, G, T, P are powers of 1024, as in
    Slurm and Docker; B or iB may follow)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise InvalidInput(f"{what} takes a size such as 512M, 2G or 1.5GiB, not {_visible(text)}")
    number, unit, _ = match.groups()
    size = int(float(number) * _UNITS[unit.upper()])
    if size <= 0:
        raise InvalidInput(f"{what} must be more than 0, not {_visible(text)}")
    return size


def format_size(size: int | None) -> str:
    """`2G`, `1.5G`, `512M`, `100` (bytes)."""
    if size is None:
        return "-"
    for unit in ("P", "T", "G", "M", "K"):
        if size >= _UNITS[unit]:
            return f"{size / _UNITS[unit]:.1f}".rstrip("0").rstrip(".") + unit
    return str(size)


def parse_rate(text: str) -> tuple[int, float]:
    """`N/DURATION` (`10/1m`, `5/2s`): at most N starts in any interval of that length."""
    from jobctl.timeparse import parse_duration

    count, sep, duration = text.partition("/")
    if not sep or not count.strip().isdigit() or int(count) < 1:
        raise InvalidInput(f"--rate takes N/DURATION (e.g. 10/1m, 5/2s) with N at least 1, "
                           f"or none, not {_visible(text)}")
    try:
        window_s = parse_duration(duration)
    except ValueError as error:
        raise InvalidInput(f"--rate {text}: {error}") from None
    if window_s <= 0:
        raise InvalidInput(f"--rate {text}: the duration must be more than 0")
    return int(count), window_s


def format_rate(count: int | None, window_s: float | None) -> str | None:
    """`5/2s`, `10/1m`, `3/1h30m`: as a user types it (parse_rate reads it back)."""
    if count is None or window_s is None:
        return None
    if window_s != int(window_s):
        return f"{count}/{window_s:g}s"
    left, parts = int(window_s), []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return f"{count}/{''.join(parts)}"


def parse_pair(text: str, flag: str) -> tuple[str, str]:
    """`KEY=VALUE` of --tag and --require."""
    key, sep, value = text.partition("=")
    if not sep or not value:
        raise InvalidInput(f"{flag} takes KEY=VALUE (e.g. zone=eu), not {_visible(text)}")
    parse_key(key, f"{flag} key")
    if not _VALUE.fullmatch(value):
        raise InvalidInput(f"{flag} {key}=VALUE: a value is 1 to 200 printable characters "
                           f"without blanks, commas or =, not {_visible(value)}")
    return key, value


def parse_pairs(texts: Iterable[str], flag: str) -> dict[str, str]:
    return dict(parse_pair(text, flag) for text in texts)


def parse_cpus(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise InvalidInput(f"--cpus must be more than 0, not {value:g}")
    return value


def parse_gpus(value: int) -> int:
    if value < 0:
        raise InvalidInput(f"--gpus must be 0 or more, not {value}")
    return value


@record
class Resources:
    """What a worker offers of its machine (or a job asks for): CPUs, bytes of memory, GPUs."""

    cpu: float
    mem: int
    gpu: int = 0

    def to_json(self) -> dict[str, float | int]:
        return {"cpu": self.cpu, "mem": self.mem, "gpu": self.gpu}

    @classmethod
    def from_json(cls, value: Mapping[str, float | int] | None) -> Resources | None:
        if not value:
            return None
        return cls(cpu=float(value.get("cpu", 0)), mem=int(value.get("mem", 0)),
                   gpu=int(value.get("gpu", 0)))


def machine_resources() -> Resources:
    """This machine's CPUs (those this process may run on) and physical memory, no GPUs."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = 0
    return Resources(cpu=float(cpus), mem=int(mem), gpu=0)


def parse_resources(text: str | None, default: Resources) -> Resources:
    """`cpu=N,mem=SIZE,gpu=N` (each part optional, the rest from `default`)."""
    if text is None:
        return default
    cpu, mem, gpu = default.cpu, default.mem, default.gpu
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise InvalidInput(f"--resources takes cpu=N,mem=SIZE,gpu=N, not {_visible(text)}")
        try:
            if name == "cpu":
                cpu = float(value)
                if not cpu > 0:
                    raise ValueError
            elif name == "mem":
                mem = parse_size(value, "--resources mem")
            elif name == "gpu":
                if not value.isdigit():
                    raise ValueError
                gpu = int(value)
            else:
                raise InvalidInput(f"--resources knows cpu, mem and gpu, not {_visible(name)}")
        except ValueError:
            raise InvalidInput(f"--resources {name}: not a valid amount: "
                               f"{_visible(value)}") from None
    return Resources(cpu=cpu, mem=mem, gpu=gpu)


def gpu_list(indices: str | None) -> list[int]:
    """GPU indices as stored (`jobs.gpu_indices`, "0,1") and given to a job (JOBCTL_GPUS)."""
    return [int(index) for index in indices.split(",")] if indices else []


def gpu_text(indices: Sequence[int]) -> str | None:
    """gpu_list's inverse: "0,1", or None for no GPU."""
    return ",".join(map(str, indices)) or None


# --- choosing what to start -------------------------------------------------------------------


# What `queue list` counts of each queue: unfinished jobs by state, held ones (not started)
# apart.
COUNTED = ("waiting", "queued", "running", "held")


@record
class QueueSettings:
    """What an operator set for a queue (a row of `queues`; none: all defaults)."""

    name: str
    paused: bool = False
    max_running: int | None = None
    rate_count: int | None = None
    rate_window_s: float | None = None
    recent_starts: tuple[float, ...] = ()  # database-clock epoch seconds, the latest last

    @property
    def capped(self) -> bool:
        """Its jobs go through the gated claim."""
        return self.max_running is not None or self.rate_count is not None

    @property
    def rate(self) -> str | None:
        return format_rate(self.rate_count, self.rate_window_s)


def rate_room(queue: QueueSettings, now_s: float) -> int | None:
    """How many more jobs of `queue` may start at `now_s` under its rate (None: no rate): N less
    the starts within the last window."""
    if queue.rate_count is None or queue.rate_window_s is None:
        return None
    since = now_s - queue.rate_window_s
    return max(0, queue.rate_count - sum(1 for start in queue.recent_starts if start > since))


def next_rate_start(queue: QueueSettings) -> float | None:
    """When the rate lets the next job of a full window start (epoch seconds), or None."""
    if queue.rate_count is None or queue.rate_window_s is None:
        return None
    starts = sorted(queue.recent_starts)
    if len(starts) < queue.rate_count:
        return None
    return starts[-queue.rate_count] + queue.rate_window_s


def recent_starts_after(queue: QueueSettings, now_s: float, started: int) -> list[float]:
    """`recent_starts` once `started` more jobs started at `now_s` (the last rate_count kept)."""
    count = queue.rate_count or 0
    starts = [*queue.recent_starts, *([now_s] * started)]
    return starts[-count:] if count else []


@record
class Candidate:
    """A queued gated job, as the gated claim sees it."""

    id: int
    queue: str
    limits: Mapping[str, int] = field(default_factory=dict)
    cpus: float = 0.0
    mem: int = 0
    gpus: int = 0
    may_follow: bool = True  # it may wait in a read-ahead buffer (not an at-most-once job)
    attempt: int = 0  # its last attempt: a claim starts attempt + 1


@dataclass
class Room:
    """What is free for the claiming worker right now."""

    slots: int
    cpu: float
    mem: int
    free_gpus: list[int]  # indices of its machine's GPUs that no running job holds
    queue_room: dict[str, int | None]  # per queue: how many more may run or start; None: no cap
    key_usage: dict[str, int]  # per key: how many running jobs hold it


def pick(candidates: Sequence[Candidate], room: Room) -> list[tuple[int, tuple[int, ...]]]:
    """The candidates (in claim order) this worker starts now, each with the GPU indices it gets:
    greedy in order, every cap, limit and resource counted as it goes (so a batch never exceeds
    one). A job that does not fit is passed over, not waited for: no reservations (a big job can
    wait long behind small ones that keep fitting)."""
    chosen: list[tuple[int, tuple[int, ...]]] = []
    for job in candidates:
        if room.slots <= 0:
            break
        queue_room = room.queue_room.get(job.queue)
        if queue_room is not None and queue_room <= 0:
            continue
        if any(room.key_usage.get(key, 0) >= count for key, count in job.limits.items()):
            continue
        if job.cpus > room.cpu + 1e-9 or job.mem > room.mem or job.gpus > len(room.free_gpus):
            continue
        gpus = tuple(room.free_gpus[:job.gpus])
        del room.free_gpus[:job.gpus]
        room.slots -= 1
        room.cpu -= job.cpus
        room.mem -= job.mem
        if queue_room is not None:
            room.queue_room[job.queue] = queue_room - 1
        for key in job.limits:
            room.key_usage[key] = room.key_usage.get(key, 0) + 1
        chosen.append((job.id, gpus))
    return chosen


@record
class Tail:
    """A running gated job of the claiming worker that nothing follows yet."""

    id: int
    attempt: int
    queue: str
    limits: Mapping[str, int] = field(default_factory=dict)
    cpus: float = 0.0
    mem: int = 0
    gpus: tuple[int, ...] = ()
    # Followers waiting in its chain, itself included when it is one: 0 for a job that holds a
    # place of its own (see `places`).
    depth: int = 0


@record
class Follow:
    """A follower chosen by `follow`: it waits in the worker's read-ahead buffer and starts once
    `after` (at `after_attempt`) has ended there, in its place, with these GPU indices."""

    id: int
    after: int
    after_attempt: int
    gpus: tuple[int, ...]


def follow(candidates: Sequence[Candidate], tails: Sequence[Tail], key_usage: Mapping[str, int],
           followable: Iterable[str], room: int) -> list[Follow]:
    """Read-ahead for gated jobs: the candidates (in claim order) that follow a job of this
    worker, at most `room`, and which each follows.

    A follower starts only once the job it follows ended on this worker, and until that one is
    recorded as ended it holds no place of its own (see `places`): it takes that one's
    place. So it must need nothing that place does not cover: the same queue, one that has no
    rate (`followable`: a rate counts claims, and a follower starts later than it is claimed);
    no key the followed job does not hold, and of each key no more running holders
    (`key_usage`, this claim's starts included) than its own limit lets start; no more CPUs,
    memory or GPUs (it gets the first of the followed job's GPU indices). Each job has at most
    one follower, and a follower may be followed in turn (a chain, run one after the other),
    so that one claim can fill a worker's read-ahead room; each follower goes to the
    shallowest chain it fits (the tail with the fewest followers waiting ahead of it, the first
    of equals), so that no slot ends its chain while others queue behind theirs: a slot whose
    job has no follower waits for a turn to start anything.
    (A job this claim starts or lets follow that turns out not to be claimed, as a cancel came
    first, takes its followers with it: the caller gives those back, see
    store.capacity.claim_gated.) At-most-once jobs never follow: they never wait in a buffer."""
    open_tails = [tail for tail in tails if tail.queue in set(followable)]
    chosen: list[Follow] = []
    for job in candidates:
        if len(chosen) >= room or not open_tails:
            break
        if not job.may_follow:
            continue
        fits = [index for index, tail in enumerate(open_tails)
                if (tail.queue == job.queue
                    and all(key in tail.limits and key_usage.get(key, 0) <= count
                            for key, count in job.limits.items())
                    and job.cpus <= tail.cpus + 1e-9 and job.mem <= tail.mem
                    and job.gpus <= len(tail.gpus))]
        if not fits:
            continue
        index = min(fits, key=lambda i: open_tails[i].depth)
        tail = open_tails[index]
        gpus = tail.gpus[:job.gpus]
        chosen.append(Follow(id=job.id, after=tail.id, after_attempt=tail.attempt, gpus=gpus))
        # The follower is the chain's tail now, at the attempt the claim starts.
        open_tails[index] = Tail(id=job.id, attempt=job.attempt + 1, queue=job.queue,
                                 limits=job.limits, cpus=job.cpus, mem=job.mem, gpus=gpus,
                                 depth=tail.depth + 1)
    return chosen


@record
class HostUsage:
    """What running jobs hold on one machine."""

    cpu: float = 0.0
    mem: int = 0
    gpu_holders: Mapping[int, int] = field(default_factory=dict)  # GPU index -> job id


@record
class RunningJob:
    """A running job, as the gated claim and `explain` count it."""

    id: int
    queue: str
    gated: bool
    worker_id: int | None
    attempt: int
    host: str | None  # its worker's machine
    limits: Mapping[str, int] = field(default_factory=dict)
    cpus: float = 0.0
    mem: int = 0
    gpus: tuple[int, ...] = ()
    after: int | None = None  # a follower: the job it follows, at after_attempt
    after_attempt: int | None = None


@record
class Places:
    """What running jobs hold: per queue, per key and per machine, counting only the jobs that
    hold a place of their own (see `places`); and what a worker's next followers may follow."""

    queue_running: Mapping[str, list[int]]  # queue -> ids
    key_holders: Mapping[str, list[int]]  # key -> ids (only gated jobs hold keys)
    hosts: Mapping[str, HostUsage]  # machine -> what gated jobs hold on it
    tails: Mapping[int, list[Tail]]  # worker id -> its running gated jobs nothing follows

    def key_usage(self) -> dict[str, int]:
        return {key: len(ids) for key, ids in self.key_holders.items()}


def places(running: Sequence[RunningJob]) -> Places:
    """Count what `running` (every running job of the queues concerned, and every running gated
    job) hold. Each holds a place of its own, except a follower while the job it follows still
    runs on the same worker at the attempt it followed: it starts only once that one's command
    ended, and takes that one's place (see `follow`). A dead worker's jobs still count: they run
    until fenced, and the rescuer takes them back only after that."""
    by_id = {job.id: job for job in running}
    followed = {(job.after, job.after_attempt) for job in running if job.after is not None}
    queue_running: dict[str, list[int]] = {}
    key_holders: dict[str, list[int]] = {}
    hosts: dict[str, tuple[float, int, dict[int, int]]] = {}
    tails: dict[int, list[Tail]] = {}

    def leader_of(job: RunningJob) -> RunningJob | None:
        """The job it follows while that one holds its place (on its worker, at the attempt)."""
        leader = by_id.get(job.after) if job.after is not None else None
        if (leader is not None and leader.attempt == job.after_attempt
                and leader.worker_id == job.worker_id):
            return leader
        return None

    for job in running:
        leader = leader_of(job)
        placed = leader is None
        if job.gated and job.worker_id is not None and (job.id, job.attempt) not in followed:
            depth, link = 0, leader
            while link is not None and depth < len(running):  # (a cycle cannot be, but bound it)
                depth, link = depth + 1, leader_of(link)
            tails.setdefault(job.worker_id, []).append(Tail(
                id=job.id, attempt=job.attempt, queue=job.queue, limits=job.limits,
                cpus=job.cpus, mem=job.mem, gpus=job.gpus, depth=depth))
        if not placed:
            continue
        queue_running.setdefault(job.queue, []).append(job.id)
        if not job.gated:
            continue
        for key in job.limits:
            key_holders.setdefault(key, []).append(job.id)
        if job.host is not None:
            cpu, mem, gpu_holders = hosts.get(job.host, (0.0, 0, {}))
            gpu_holders.update(dict.fromkeys(job.gpus, job.id))
            hosts[job.host] = (cpu + job.cpus, mem + job.mem, gpu_holders)
    return Places(queue_running=queue_running, key_holders=key_holders,
                  hosts={host: HostUsage(cpu=cpu, mem=mem, gpu_holders=holders)
                         for host, (cpu, mem, holders) in hosts.items()},
                  tails=tails)


# --- why a job is not running -----------------------------------------------------------------


@record
class WorkerView:
    """A live worker, as `explain` sees it."""

    id: int
    name: str
    host: str
    queues: tuple[str, ...]
    tags: Mapping[str, str]
    resources: Resources | None  # None: a worker of an older jobctl (no resources recorded)


@record
class Reason:
    kind: str
    text: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "text": self.text}


@record
class Facts:
    """Everything `explain` looks at, read in one transaction (jobctl.store.capacity.facts)."""

    id: int
    state: str
    queue: str
    held: bool
    attempt: int
    run_at: datetime
    now: datetime
    limits: Mapping[str, int]
    cpus: float
    mem: int
    gpus: int
    requires: Mapping[str, str]
    queue_settings: QueueSettings
    queue_running: Sequence[int]  # ids of the queue's running jobs
    key_holders: Mapping[str, Sequence[int]]  # per key of the job: running jobs holding it
    waits_for: Sequence[tuple[int, str]]  # dependencies not met: (job id, its state)
    workers: Sequence[WorkerView]
    usage: Mapping[str, HostUsage]  # per machine
    worker_name: str | None = None  # where it runs (running)
    error: str | None = None  # how it ended (final)


def _jobs(ids: Sequence[int], most: int = 5) -> str:
    """`job 41`, `jobs 41 and 42`, `jobs 41, 42, 43, 44, 45 and 3 more`."""
    if len(ids) > most:
        return f"jobs {', '.join(str(i) for i in ids[:most])} and {len(ids) - most} more"
    return f"job{'s' if len(ids) > 1 else ''} {_and(ids)}"


def _needs(facts: Facts) -> str:
    parts = []
    if facts.cpus:
        parts.append(f"cpu={facts.cpus:g}")
    if facts.mem:
        parts.append(f"mem={format_size(facts.mem)}")
    if facts.gpus:
        parts.append(f"gpu={facts.gpus}")
    return ",".join(parts)


def _free(worker: WorkerView, usage: HostUsage) -> tuple[float, int, list[int]]:
    assert worker.resources is not None
    free_gpus = [index for index in range(worker.resources.gpu)
                 if index not in usage.gpu_holders]
    return worker.resources.cpu - usage.cpu, worker.resources.mem - usage.mem, free_gpus


def _fits(facts: Facts, cpu: float, mem: int, gpus: int) -> bool:
    return facts.cpus <= cpu + 1e-9 and facts.mem <= mem and facts.gpus <= gpus


def _and(ids: Sequence[int]) -> str:
    words = [str(job_id) for job_id in ids]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _describe_worker(worker: WorkerView, usage: HostUsage) -> str:
    """`w1: 2 GPUs, held by 43 and 44; 6/8 CPUs free; 12G of 16G free`."""
    assert worker.resources is not None
    cpu, mem, _ = _free(worker, usage)
    parts = []
    if worker.resources.gpu:
        gpus = f"{worker.resources.gpu} GPU{'s' if worker.resources.gpu != 1 else ''}"
        holders = sorted(set(usage.gpu_holders.values()))
        parts.append(f"{gpus}, held by {_and(holders)}" if holders else gpus)
    parts.append(f"{max(cpu, 0):g}/{worker.resources.cpu:g} CPUs free")
    parts.append(f"{format_size(max(mem, 0))} of {format_size(worker.resources.mem)} "
                 "memory free")
    return f"{worker.name}: " + ", ".join(parts)


def explain(facts: Facts) -> list[Reason]:
    """Why the job is not running, one specific reason each (or where it runs, how it ended)."""
    from jobctl.timeparse import format_duration, format_instant

    if facts.state == "running":
        where = f" on worker {facts.worker_name}" if facts.worker_name else ""
        return [Reason("running", f"running{where} (attempt {facts.attempt})")]
    if facts.state not in ("queued", "waiting"):
        ended = f": {facts.error}" if facts.error else ""
        return [Reason("finished", f"finished: {facts.state}{ended}")]
    reasons: list[Reason] = []
    if facts.held:
        reasons.append(Reason("held", "held: `jobctl job release` lets it start"))
    for dep_id, dep_state in facts.waits_for:
        reasons.append(Reason("waits_for", f"waits for job {dep_id} ({dep_state})"))
    if facts.run_at > facts.now:
        left = format_duration((facts.run_at - facts.now).total_seconds())
        if facts.attempt > 0:
            reasons.append(Reason("backoff", f"retry backoff until {format_instant(facts.run_at)} "
                                             f"(in {left})"))
        else:
            reasons.append(Reason("due", f"due in {left} ({format_instant(facts.run_at)})"))
    queue = facts.queue_settings
    if queue.paused:
        reasons.append(Reason("paused", f"queue {facts.queue} is paused"))
    if queue.max_running is not None and len(facts.queue_running) >= queue.max_running:
        reasons.append(Reason("queue_cap", f"queue {facts.queue}: {len(facts.queue_running)}/"
                                           f"{queue.max_running} running "
                                           f"({_jobs(list(facts.queue_running))})"))
    now_s = facts.now.timestamp()
    if rate_room(queue, now_s) == 0:
        next_s = next_rate_start(queue)
        when = (format_instant(datetime.fromtimestamp(next_s, facts.now.tzinfo))
                if next_s is not None else "later")
        reasons.append(Reason("rate", f"queue {facts.queue}: rate {queue.rate} reached, next "
                                      f"start at {when}"))
    for key, count in sorted(facts.limits.items()):
        holders = list(facts.key_holders.get(key, ()))
        if len(holders) >= count:
            reasons.append(Reason("limit", f"limit {key} {len(holders)}/{count} held by "
                                           f"{_jobs(holders)}"))
    serving = [w for w in facts.workers if facts.queue in w.queues]
    if not serving:
        reasons.append(Reason("no_worker_queue", f"no live worker serves queue {facts.queue}"))
        return reasons
    tagged = serving
    for key, value in sorted(facts.requires.items()):
        tagged = [w for w in tagged if w.tags.get(key) == value]
        if not tagged:
            reasons.append(Reason("no_worker_tag", f"no live worker of queue {facts.queue} has "
                                                   f"tag {key}={value}"))
            return reasons
    if facts.cpus or facts.mem or facts.gpus:
        known = [w for w in tagged if w.resources is not None]
        able = [w for w in known if w.resources is not None
                and _fits(facts, w.resources.cpu, w.resources.mem, w.resources.gpu)]
        needs = _needs(facts)
        if not able:
            reasons.append(Reason("no_worker_fits", f"needs {needs}, and no live worker has that "
                                                    "much at all"))
            return reasons
        free_now = [w for w in able
                    if _fits(facts, *_free_amounts(w, facts.usage.get(w.host, HostUsage())))]
        if not free_now:
            shown = "; ".join(_describe_worker(w, facts.usage.get(w.host, HostUsage()))
                              for w in able[:3])
            reasons.append(Reason("resources", f"needs {needs}, and no live worker has that "
                                               f"free ({shown})"))
    if not reasons and facts.state == "queued":
        reasons.append(Reason("starting", "nothing holds it back: a worker should start it at "
                                          "its next claim"))
    return reasons


def _free_amounts(worker: WorkerView, usage: HostUsage) -> tuple[float, int, int]:
    cpu, mem, free_gpus = _free(worker, usage)
    return cpu, mem, len(free_gpus)
