"""A real fleet: PostgreSQL, three worker hosts and two scheduler hosts, each in a network
namespace of its own with its own address (tests/fleet/netns.py), and the network failing under
them: a switch port that silently drops everything, then comes back.

  * a worker host cut off mid-job for four leases: its jobs are killed there before their leases
    end and run again elsewhere, never overlapping; when the link comes back its late results are
    discarded, it is back in the cluster (`worker list`: running) and takes new work, never
    restarted;
  * a scheduler host cut off: the other scheduler fires every occurrence, each exactly once, on
    time, and nothing fires twice when the cut heals;
  * the database host unreachable for 30 s (default lease): every worker keeps or fences its jobs
    as documented, nothing is lost, and the cluster resumes by itself.

What ran is judged from the jobs' own `start`/`end`/`killed` lines (time and host, in a file
every namespace shares: namespaces share the file system and the clock), and from the database
afterwards, read by the test through the server's unix socket, which the cuts do not reach.
"""

from __future__ import annotations

import collections
import itertools
import json
import time
from pathlib import Path
from typing import Any

from chaos_support import (
    CHAOS_WORKER_OPTIONS,
    LEASE_S,
    list_jobs,
    logging_script,
    overlapping_attempts,
    read_events,
    unfinished_ids,
    wait_event,
    wait_exit,
    wait_gone,
)
from e2e_support import Jobctl, Worker, parse_time, process_gone, wait_for
from fleet_support import NetnsCluster

WHO = "$JOBCTL_JOB_ID $JOBCTL_ATTEMPT $JOBCTL_WORKER"


def _job(log: Path, first: str, later: str = "sleep 0.5") -> str:
    """A job that logs `start` (with the shell's pid and its child's), `end`, and `killed` on
    SIGTERM; its first attempt runs FIRST, later ones LATER (`… & wait` so that a SIGTERM is
    handled at once)."""
    return (f"trap 'echo killed {WHO} $(date +%s.%N) >> {log}; exit 143' TERM; "
            f'if [ "$JOBCTL_ATTEMPT" = 1 ]; then ( {first} ) & else ( {later} ) & fi; '
            f"echo start {WHO} $(date +%s.%N) $$ $! >> {log}; wait $!; "
            f"echo end {WHO} $(date +%s.%N) >> {log}")


def _worker_state(jobctl: Jobctl, name: str) -> str | None:
    rows: list[dict[str, Any]] = json.loads(
        jobctl.look("worker", "list", "--all", "-o", "json"))
    states = [row["state"] for row in rows if row["name"] == name]
    return states[0] if states else None


def _attempts(jobctl: Jobctl, job_id: int) -> list[tuple[str, str]]:
    return [(a["worker_name"], a["outcome"]) for a in jobctl.status(job_id)["attempts"]]


def test_the_switch_cuts_a_host_off_silently_and_heals(netns_cluster: NetnsCluster) -> None:
    """The harness itself: a cut host can reach nobody and nobody can reach it (no answer, not a
    refusal); healed, both ways work again; the other hosts are not touched."""
    fleet, db = netns_cluster.fleet, netns_cluster.db
    w1, w2 = netns_cluster.host("w1"), netns_cluster.host("w2")
    assert fleet.reachable(w1, db, 5432) and fleet.reachable(w2, db, 5432)
    fleet.cut(w1)
    assert not fleet.reachable(w1, db, 5432)
    assert not fleet.reachable(db, w1, 5432)
    assert fleet.reachable(w2, db, 5432)
    fleet.heal(w1)
    wait_for(lambda: fleet.reachable(w1, db, 5432), 10, "w1 cannot reach db after the heal")
    assert fleet.reachable(db, w1, 5432)


def test_a_worker_host_cut_off_mid_job_is_fenced_rerun_elsewhere_and_rejoins(
    netns_cluster: NetnsCluster, tmp_path: Path
) -> None:
    """Short leases (3 s): this is about the mechanism. w1 runs two jobs when its link is cut for
    12 s: `long` would run 30 s, `quick` ends 0.3 s into the cut (a result w1 cannot write)."""
    cluster, jobctl = netns_cluster, netns_cluster.jobctl
    log, go = tmp_path / "side-effects.log", tmp_path / "go"
    w1 = cluster.worker("w1", *CHAOS_WORKER_OPTIONS, "--concurrency", "2")
    long_job = jobctl.submit("--name", "long", "--shell", _job(log, "sleep 30"))
    quick = jobctl.submit("--name", "quick", "--shell",
                          _job(log, f"while [ ! -e {go} ]; do sleep 0.05; done; sleep 0.3"))
    long_start = wait_event(log, "start", long_job, attempt=1)
    quick_start = wait_event(log, "start", quick, attempt=1)
    assert long_start.worker == quick_start.worker == "w1", read_events(log)
    others = [cluster.worker(host, *CHAOS_WORKER_OPTIONS, "--concurrency", "2",
                             wait_started=False) for host in ("w2", "w3")]
    for worker in others:
        worker.wait_started()

    time.sleep(0.5)  # between two renewals (every lease/3 = 1 s)
    cut_at = cluster.fleet.cut(cluster.host("w1"))
    go.touch()
    gone_at = wait_gone(list(long_start.pids), LEASE_S + 10)
    assert gone_at is not None, f"w1's job still runs {LEASE_S + 10:.0f}s into the cut"
    assert gone_at < cut_at + LEASE_S, (
        f"w1's job ran {gone_at - cut_at:.2f}s into the cut, past its {LEASE_S:.0f}s lease")
    quick_end = wait_event(log, "end", quick, attempt=1, timeout_s=5)
    assert quick_end.time < cut_at + LEASE_S, quick_end

    # Both run again elsewhere, each after its first run ended: never two at once.
    for job, first_end in ((long_job, gone_at), (quick, quick_end.time)):
        second = wait_event(log, "start", job, attempt=2, timeout_s=20)
        assert second.worker in ("w2", "w3"), second
        assert second.time > first_end, (job, first_end, second)
        wait_event(log, "end", job, attempt=2, timeout_s=10)
    assert not overlapping_attempts(read_events(log)), read_events(log)

    remaining = cut_at + 4 * LEASE_S - time.time()
    assert remaining > 0, "the cut was to last four leases; the reruns took longer"
    time.sleep(remaining)
    assert _worker_state(jobctl, "w1") == "lost", "w1 was cut off four leases: it is lost"
    cluster.fleet.heal(cluster.host("w1"))
    healed_at = time.time()

    # w1 is back by itself (the same process): running again in `worker list`…
    wait_for(lambda: _worker_state(jobctl, "w1") == "running", 30,
             lambda: f"w1 not running again 30s after the heal ({_worker_state(jobctl, 'w1')})"
                     f":\n{w1.log()[-3000:]}", interval_s=0.5)
    print(f"w1 running again {time.time() - healed_at:.1f}s after the heal")
    assert w1.process.poll() is None, w1.log()
    # …its late results (the fenced `long`, the `quick` that succeeded during the cut) were
    # discarded: each job's record is the rerun's…
    _wait_for_log(w1, "result discarded", 20)
    for job in (long_job, quick):
        status = jobctl.status(job)
        assert status["state"] == "succeeded", status
        attempts = _attempts(jobctl, job)
        assert attempts[0] == ("w1", "lost"), attempts
        assert [outcome for _, outcome in attempts[1:]] == ["succeeded"], attempts
        assert attempts[1][0] in ("w2", "w3"), attempts
    assert len([e for e in read_events(log) if e.kind == "start"]) == 4, read_events(log)

    # …and it takes new work: with w2 and w3 stopped, a new job runs on w1.
    for worker in others:
        worker.process.terminate()
    for worker in others:
        assert wait_exit(worker, 15) == 0, worker.log()
    after = jobctl.submit("--shell", _job(log, "true"))
    end = wait_event(log, "end", after, timeout_s=20)
    assert end.worker == "w1", end
    assert w1.process.poll() is None, w1.log()


SCHEDULES = ("tick-a", "tick-b", "tick-c")
SCHEDULER_CUT_S = 20.0
# How long PostgreSQL may keep a cut-off scheduler's transaction, and so the schedule rows it
# locked (which the other scheduler skips, not waits for), before it drops the connection:
# the sessions' tcp_user_timeout (10 s) for a reply never acknowledged, or their keepalives
# (5 s + 3 x 2 s) when nothing was in flight; and a second to spare.
SERVER_NOTICES_S = 13.0
LATE_S = 2.5  # the most an occurrence may be fired after its time, when nothing stands in the way


def _hold_and_cut_scheduler(cluster: NetnsCluster, host: str) -> float:
    """Cut `host` off while its scheduler is inside its firing transaction, holding the due
    schedules' rows: the test locks the jobs table (reads still pass), waits until that
    scheduler's occurrence INSERT waits on the lock, cuts its link, and lets the lock go. The
    server then runs the INSERT, and the transaction stays open on a connection whose client is
    gone. Returns when it cut (time.time())."""
    import psycopg

    address = cluster.host(host).address
    with psycopg.connect(cluster.jobctl.database_url, autocommit=True) as conn:
        for _ in range(10):
            conn.execute("BEGIN")
            conn.execute("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE")
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                # Inside a transaction the activity is a snapshot, taken at the first look.
                conn.execute("SELECT pg_stat_clear_snapshot()")
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE client_addr = %s"
                    " AND wait_event_type = 'Lock'"
                    " AND query LIKE '%%ON CONFLICT (schedule_id, fire_time)%%'",
                    (address,)).fetchone()
                if row is not None and row[0]:
                    cut_at = cluster.fleet.cut(cluster.host(host))
                    conn.execute("COMMIT")
                    return cut_at
                time.sleep(0.01)
            conn.execute("ROLLBACK")  # the other one got the due rows this time: again
            time.sleep(0.2)
    raise AssertionError(f"the scheduler on {host} never waited on the jobs table")


def test_a_scheduler_host_cut_off_mid_transaction_leaves_the_other_firing_each_occurrence_once(
    netns_cluster: NetnsCluster, tmp_path: Path
) -> None:
    """Two schedulers on s1 and s2, three schedules every second (`--misfire all`, so an
    occurrence fired late is still fired, once). s1 is cut off for 20 s in the middle of firing,
    its transaction open and the three schedules' rows locked; s2 must fire every occurrence,
    and each must run exactly once, during the cut and after it heals."""
    cluster, jobctl = netns_cluster, netns_cluster.jobctl
    log = tmp_path / "side-effects.log"
    for name in SCHEDULES:
        jobctl.ok("schedule", "add", name, "--every", "1s", "--misfire", "all",
                  "--overlap", "allow", "--shell", logging_script(log, "true"))
    # The default lease: this is about the schedulers, and a worker that lost a 3 s lease to
    # a loaded machine would run an occurrence again, as at-least-once allows.
    workers = [cluster.worker(host, "--concurrency", "4", "--grace", "2s",
                              wait_started=False) for host in ("w1", "w2")]
    schedulers = {host: cluster.scheduler(host) for host in ("s1", "s2")}
    for process in (*workers, *schedulers.values()):
        wait_for(lambda p=process: " started" in p.log(), 30,  # type: ignore[misc]
                 lambda p=process: f"not started:\n{p.log()}")  # type: ignore[misc]
    # Every schedule has fired before the cut (the first fires of three can be seconds apart
    # on a loaded machine, and one that began only at the cut would prove nothing about it).
    def fired_per_schedule() -> collections.Counter[int]:
        return collections.Counter(row["schedule_id"] for row in list_jobs(jobctl)
                                   if row.get("schedule_id") is not None)

    def each_fired_thrice() -> bool:
        fired = fired_per_schedule()
        return len(fired) == len(SCHEDULES) and min(fired.values()) >= 3

    wait_for(each_fired_thrice, 30,
             lambda: f"the schedules do not all fire: {fired_per_schedule()}", interval_s=0.25)

    cut_at = _hold_and_cut_scheduler(cluster, "s1")
    time.sleep(max(0.0, cut_at + SCHEDULER_CUT_S - time.time()))
    healed_at = cluster.fleet.heal(cluster.host("s1"))
    time.sleep(4.0)
    for host, scheduler in schedulers.items():
        assert scheduler.process.poll() is None, f"the scheduler on {host} died:\n" \
                                                   f"{scheduler.log()}"
        scheduler.process.terminate()
    for scheduler in schedulers.values():
        assert wait_exit(scheduler, 15) == 0, scheduler.log()
    stopped_at = time.time()

    jobs = [row for row in list_jobs(jobctl) if row.get("schedule_id") is not None]
    wait_for(lambda: all(jobctl.status(row["id"])["state"] == "succeeded" for row in jobs), 20,
             "occurrences not all succeeded")
    starts = collections.Counter(e.job for e in read_events(log) if e.kind == "start")
    ran_twice = {job: n for job, n in starts.items() if n > 1}
    assert not ran_twice, f"occurrences that ran more than once: {ran_twice}"
    assert {row["id"] for row in jobs} == set(starts), "an occurrence ran without a job"

    by_schedule: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
    for row in jobs:
        fire = parse_time(row["fire_time"]).timestamp()
        by_schedule[row["schedule_id"]].append((fire, parse_time(row["created_at"]).timestamp()))
    assert len(by_schedule) == len(SCHEDULES)
    for schedule, fired in by_schedule.items():
        times = sorted(fire for fire, _ in fired)
        assert len(times) == len(set(times)), f"schedule {schedule}: a fire time twice"
        gaps = [(a, b) for a, b in itertools.pairwise(times) if round(b - a, 3) != 1.0]
        assert not gaps, f"schedule {schedule}: occurrences missing between {gaps}"
        assert times[0] < cut_at - 1, f"schedule {schedule} began firing only at the cut"
        assert times[-1] > stopped_at - 6, (
            f"schedule {schedule} fired nothing after {times[-1] - cut_at:.1f}s into the cut "
            f"({len(times)} occurrences): its row still locked by the cut-off scheduler?")
        # During the cut, s2 fired every occurrence before the cut healed, and on time once the
        # server had given up s1's transaction.
        in_cut = [(fire, created) for fire, created in fired if cut_at < fire < healed_at - 1]
        assert len(in_cut) >= SCHEDULER_CUT_S - 2
        late = {round(fire - cut_at, 1): round(created - fire, 1) for fire, created in in_cut
                if created > healed_at or (fire > cut_at + SERVER_NOTICES_S
                                           and created - fire > LATE_S)}
        assert not late, (f"schedule {schedule}: occurrences of the cut (s into it: s late) "
                          f"fired after the heal or late: {late}")
        print(f"schedule {schedule}: {len(times)} occurrences, the latest "
              f"{max(created - fire for fire, created in fired):.1f}s late")


OUTAGE_S = 30.0
DEFAULT_LEASE_S = 20.0
# With the default lease a worker fences a sixth of it before the end: at the latest 16.7 s
# after its last renewal, and so at the earliest 10 s after the outage began (renewals are a
# third of a lease apart). A job still alive past the lease could run twice.
FENCED_NOT_BEFORE_S = DEFAULT_LEASE_S / 2 - 0.5


def test_the_database_host_unreachable_for_30s_workers_keep_or_fence_and_the_cluster_resumes(
    netns_cluster: NetnsCluster, tmp_path: Path
) -> None:
    """The default lease (20 s): the promise as shipped. Three workers (3 slots each) run nine
    jobs when the database host's link is cut for 30 s: five end 1 s into the outage (kept: they
    run to their end; their results wait in the worker), four would run a minute (fenced before
    their leases end). Six more wait in the queue, and two schedulers fire a schedule every 2 s."""
    cluster, jobctl = netns_cluster, netns_cluster.jobctl
    log, go = tmp_path / "side-effects.log", tmp_path / "go"
    options = ("--concurrency", "3", "--grace", "2s", "--kill-grace", "1s")
    workers = {host: cluster.worker(host, *options, wait_started=False)
               for host in ("w1", "w2", "w3")}
    jobctl.ok("schedule", "add", "tick", "--every", "2s", "--shell", logging_script(log, "true"))
    schedulers = [cluster.scheduler(host) for host in ("s1", "s2")]
    for worker in workers.values():
        worker.wait_started()

    short = f"while [ ! -e {go} ]; do sleep 0.05; done; sleep 1"
    kinds: dict[int, tuple[str, str]] = {}  # job: (short | long | queued, delivery)
    for kind, delivery, count in (("short", "at-least-once", 3), ("short", "at-most-once", 2),
                                  ("long", "at-least-once", 2), ("long", "at-most-once", 2)):
        for _ in range(count):
            body = short if kind == "short" else "sleep 60"
            # The real executable, as the workers are: one Python start apart, the jobs reach
            # the queue as the workers claim them, three to a worker. Submitted in this process
            # (Jobctl.submit), all nine were there at once, and the first worker's claim took
            # more than its slots into its read-ahead buffer: two workers ran them all.
            job = int(jobctl.ok("job", "submit", "--delivery", delivery, "--shell",
                                _job(log, body)))
            kinds[job] = (kind, delivery)
    firsts = {job: wait_event(log, "start", job, attempt=1, timeout_s=30) for job in kinds}
    assert len({event.worker for event in firsts.values()}) == 3, firsts
    for _ in range(6):
        kinds[jobctl.submit("--shell", _job(log, "sleep 0.2"))] = ("queued", "at-least-once")

    cut_at = cluster.fleet.cut(cluster.db)
    go.touch()
    long_pids = {job: list(event.pids) for job, event in firsts.items()
                 if kinds[job][0] == "long"}
    gone: dict[int, float] = {}
    while time.time() < cut_at + OUTAGE_S:
        for job, pids in long_pids.items():
            if job not in gone and all(process_gone(pid) for pid in pids):
                gone[job] = time.time()
        time.sleep(0.05)
    back_at = cluster.fleet.heal(cluster.db)
    print({job: round(at - cut_at, 2) for job, at in gone.items()})

    # Kept: the short jobs ran to their end during the outage, none killed.
    events = read_events(log)
    for job, (kind, _) in kinds.items():
        if kind == "short":
            ends = [e for e in events if e.job == job and e.attempt == 1 and e.kind == "end"]
            assert ends and ends[0].time < cut_at + 5, (job, events)
    assert not [e for e in events if e.kind == "killed" and kinds[e.job][0] == "short"]
    # Fenced: every long job killed on its host, after the lease surely held, before it ended.
    assert set(gone) == set(long_pids), f"long jobs still running after the outage: {gone}"
    for job, at in gone.items():
        assert cut_at + FENCED_NOT_BEFORE_S < at < cut_at + DEFAULT_LEASE_S, (
            f"job {job} killed {at - cut_at:.1f}s into the outage")

    # Nothing is lost: the cluster finishes everything by itself.
    wait_for(lambda: not unfinished_ids(jobctl), 45,
             lambda: f"jobs unfinished 45s after the outage: {unfinished_ids(jobctl)}",
             interval_s=0.5)
    print(f"all final {time.time() - back_at:.1f}s after the outage")
    events = read_events(log)
    assert not overlapping_attempts(events), events
    for job, (kind, delivery) in kinds.items():
        status = jobctl.status(job)
        starts = [e for e in events if e.job == job and e.kind == "start"]
        if delivery == "at-most-once":
            assert len(starts) == 1, (job, starts)
            # Its result written once the database was back, or its lease taken back first.
            expected = {"succeeded", "lost"} if kind == "short" else {"lost"}
            assert status["state"] in expected, (kind, status)
        else:
            assert status["state"] == "succeeded", (kind, status)
            ends = [e for e in events if e.job == job and e.kind == "end"]
            assert ends, (job, events)
        if kind == "long":
            later = [e for e in starts if e.attempt > 1]
            assert all(e.time > gone[job] for e in later), (job, gone[job], later)

    # The cluster resumed: the same workers, running again, and they take new work; the
    # schedule fires again, each fire time once.
    for name, worker in workers.items():
        assert worker.process.poll() is None, f"{name} died:\n{worker.log()}"
    wait_for(lambda: all(_worker_state(jobctl, name) == "running" for name in workers), 20,
             lambda: f"workers: {[_worker_state(jobctl, name) for name in workers]}")
    after = [jobctl.submit("--shell", _job(log, "true")) for _ in range(3)]
    for job in after:
        wait_event(log, "end", job, timeout_s=20)
    for scheduler in schedulers:
        assert scheduler.process.poll() is None, scheduler.log()

    def fire_times() -> list[float]:
        return [parse_time(row["fire_time"]).timestamp() for row in list_jobs(jobctl)
                if row.get("schedule_id") is not None]

    # Within a few of its 2 s periods of the heal (the schedulers reconnect with a back-off).
    wait_for(lambda: [t for t in fire_times() if t > back_at], 20,
             "the schedule did not fire after the outage", interval_s=0.5)
    fired = fire_times()
    assert len(fired) == len(set(fired)), sorted(fired)


def _wait_for_log(worker: Worker, text: str, timeout_s: float) -> None:
    wait_for(lambda: text in worker.log(), timeout_s,
             lambda: f"{text!r} not in the log of {worker.log_path.name}:\n{worker.log()[-3000:]}")

