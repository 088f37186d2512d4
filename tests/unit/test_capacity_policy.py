"""Capacity control as plain functions (jobctl.capacity): parsing, `pick`, the rate window and
`explain`, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobctl import capacity
from jobctl.capacity import (
    Candidate,
    Facts,
    HostUsage,
    QueueSettings,
    Resources,
    Room,
    RunningJob,
    Tail,
    WorkerView,
)
from jobctl.errors import InvalidInput

# --- parsing ------------------------------------------------------------------------------------


def test_limits_parse_and_bad_ones_are_refused() -> None:
    assert capacity.parse_limits(["db-main=1", "api=8", "db-main=2"]) == {"db-main": 2, "api": 8}
    for bad in ("x", "k=0", "k=-1", "k=1.5", "=3", "a b=1", "k=", "k=x"):
        with pytest.raises(InvalidInput, match="--limit"):
            capacity.parse_limit(bad)


@pytest.mark.parametrize(("text", "size"), [
    ("512M", 512 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29), ("1000000", 1_000_000),
    ("4k", 4096), ("1T", 1 << 40), ("100MB", 100 << 20)])
def test_sizes(text: str, size: int) -> None:
    assert capacity.parse_size(text) == size


@pytest.mark.parametrize("text", ["12Q", "", "G", "-1G", "0", "1.2.3M", "5 X"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(InvalidInput, match="--mem"):
        capacity.parse_size(text)


def test_format_size_round_trips_what_users_type() -> None:
    assert [capacity.format_size(size) for size in (2 << 30, 3 << 29, 512 << 20, 100)] == [
        "2G", "1.5G", "512M", "100"]


def test_rates() -> None:
    assert capacity.parse_rate("10/1m") == (10, 60.0)
    assert capacity.parse_rate("5/2s") == (5, 2.0)
    assert [capacity.format_rate(5, s) for s in (2.0, 60.0, 5400.0, 0.5)] == [
        "5/2s", "5/1m", "5/1h30m", "5/0.5s"]
    assert capacity.parse_rate("3/1h30m") == (3, 5400.0)
    for bad in ("5", "0/1s", "x/1s", "5/", "5/0s", "5/banana"):
        with pytest.raises(InvalidInput, match="--rate"):
            capacity.parse_rate(bad)


def test_resources_default_and_override() -> None:
    default = Resources(cpu=8.0, mem=16 << 30, gpu=0)
    assert capacity.parse_resources(None, default) == default
    assert capacity.parse_resources("gpu=2", default) == Resources(8.0, 16 << 30, 2)
    assert capacity.parse_resources("cpu=4,mem=2G,gpu=1", default) == Resources(4.0, 2 << 30, 1)
    for bad in ("gpu=x", "cpu=0", "mem=12Q", "disk=1", "gpu"):
        with pytest.raises(InvalidInput, match="--resources"):
            capacity.parse_resources(bad, default)


def test_machine_resources_are_this_machines() -> None:
    found = capacity.machine_resources()
    assert found.cpu >= 1 and found.mem > 0 and found.gpu == 0


def test_tags() -> None:
    assert capacity.parse_pairs(["zone=eu", "arch=arm64"], "--tag") == {"zone": "eu",
                                                                        "arch": "arm64"}
    for bad in ("zone", "zone=", "=eu", "zone=a b", "zone=a,b", "zone=\x1b[31m"):
        with pytest.raises(InvalidInput, match="--tag"):
            capacity.parse_pair(bad, "--tag")


# --- pick ---------------------------------------------------------------------------------------


def room(**changes: Any) -> Room:
    fields: dict[str, Any] = dict(slots=8, cpu=8.0, mem=16 << 30, free_gpus=[0, 1],
                                  queue_room={"q": None}, key_usage={})
    fields.update(changes)
    return Room(**fields)


def test_a_key_is_never_given_past_its_limit_within_one_batch() -> None:
    jobs = [Candidate(id=i, queue="q", limits={"db": 2}) for i in range(1, 6)]
    assert [job_id for job_id, _ in capacity.pick(jobs, room())] == [1, 2]
    assert [job_id for job_id, _ in capacity.pick(jobs, room(key_usage={"db": 1}))] == [1]
    assert capacity.pick(jobs, room(key_usage={"db": 2})) == []


def test_each_job_needs_every_key_it_holds_free() -> None:
    jobs = [Candidate(1, "q", {"a": 1, "b": 1}), Candidate(2, "q", {"b": 1}),
            Candidate(3, "q", {"a": 1}), Candidate(4, "q", {"c": 1})]
    assert [job_id for job_id, _ in capacity.pick(jobs, room())] == [1, 4]


def test_queue_room_and_slots_cap_the_batch() -> None:
    jobs = [Candidate(i, "q") for i in range(1, 10)]
    assert len(capacity.pick(jobs, room(queue_room={"q": 3}))) == 3
    assert len(capacity.pick(jobs, room(slots=2))) == 2
    assert capacity.pick(jobs, room(queue_room={"q": 0})) == []


def test_gpus_are_given_once_each_and_a_job_that_does_not_fit_is_passed_over() -> None:
    jobs = [Candidate(1, "q", gpus=1), Candidate(2, "q", gpus=2), Candidate(3, "q", gpus=1),
            Candidate(4, "q", gpus=1)]
    chosen = capacity.pick(jobs, room(free_gpus=[0, 1, 3]))
    assert chosen == [(1, (0,)), (2, (1, 3))]
    given = [index for _, gpus in chosen for index in gpus]
    assert len(given) == len(set(given))


def test_cpu_and_memory_are_counted() -> None:
    jobs = [Candidate(1, "q", cpus=3), Candidate(2, "q", cpus=3), Candidate(3, "q", cpus=3),
            Candidate(4, "q", mem=1 << 30), Candidate(5, "q", cpus=1, mem=1 << 40)]
    assert [job_id for job_id, _ in capacity.pick(jobs, room(cpu=7.0, mem=2 << 30))] == [1, 2, 4]


# --- the rate window ----------------------------------------------------------------------------


def test_rate_room_counts_starts_in_the_last_window_only() -> None:
    queue = QueueSettings("q", rate_count=5, rate_window_s=2.0,
                          recent_starts=(100.0, 100.5, 101.0, 101.5, 101.9))
    assert capacity.rate_room(queue, 101.95) == 0
    assert capacity.rate_room(queue, 102.01) == 1  # 100.0 left the window
    assert capacity.rate_room(queue, 104.0) == 5
    assert capacity.next_rate_start(queue) == 102.0
    assert capacity.rate_room(QueueSettings("q"), 1.0) is None


def test_recent_starts_keep_the_last_n() -> None:
    queue = QueueSettings("q", rate_count=3, rate_window_s=1.0, recent_starts=(1.0, 2.0))
    assert capacity.recent_starts_after(queue, 5.0, 2) == [2.0, 5.0, 5.0]


def test_no_window_of_the_rate_ever_holds_more_than_n_starts() -> None:
    """Simulate claims as workers make them (every 0.05 s, as many as the room allows) and check
    every window of the rate's length."""
    queue = QueueSettings("q", rate_count=5, rate_window_s=2.0)
    starts: list[float] = []
    now = 0.0
    while now < 10.0:
        allowed = capacity.rate_room(queue, now) or 0
        starts += [now] * allowed
        queue = QueueSettings("q", rate_count=5, rate_window_s=2.0,
                              recent_starts=tuple(capacity.recent_starts_after(queue, now,
                                                                               allowed)))
        now = round(now + 0.05, 2)
    assert len(starts) >= 20
    for start in starts:
        assert sum(1 for other in starts if start <= other < start + 2.0) <= 5


# --- followers and places ----------------------------------------------------------------------


def tail(id_: int, **fields: Any) -> Tail:
    return Tail(**{"id": id_, "attempt": 1, "queue": "q", "limits": {"k": 2}, **fields})


def test_a_follower_takes_a_place_only_where_the_job_it_follows_holds_one() -> None:
    leader = tail(1, cpus=2.0, mem=100, gpus=(3,))
    fits = Candidate(10, "q", limits={"k": 2}, cpus=1.0, mem=100, gpus=1)
    other_key = Candidate(11, "q", limits={"other": 5})
    other_queue = Candidate(12, "p", limits={"k": 2})
    too_big = Candidate(13, "q", limits={"k": 2}, cpus=3.0)
    too_many_gpus = Candidate(14, "q", limits={"k": 2}, gpus=2)
    at_most_once = Candidate(15, "q", limits={"k": 2}, may_follow=False)
    for job in (other_key, other_queue, too_big, too_many_gpus, at_most_once):
        assert capacity.follow([job], [leader], {"k": 2}, {"q", "p"}, 8) == [], job
    [chosen] = capacity.follow([fits], [leader], {"k": 2}, {"q"}, 8)
    assert (chosen.id, chosen.after, chosen.after_attempt, chosen.gpus) == (10, 1, 1, (3,))


def test_a_follower_never_takes_a_key_more_holders_than_its_own_limit_lets_start() -> None:
    """Two hold k, the leader among them: a follower with k=2 replaces the leader (2 holders,
    fine); one with k=1 would start beside another holder: 2 > 1."""
    assert capacity.follow([Candidate(10, "q", limits={"k": 1})], [tail(1)], {"k": 2}, {"q"},
                           8) == []
    assert len(capacity.follow([Candidate(10, "q", limits={"k": 2})], [tail(1)], {"k": 2},
                               {"q"}, 8)) == 1


def test_no_follower_in_a_queue_with_a_rate_or_paused() -> None:
    """`followable` leaves out queues with a rate (it counts claims, and a follower starts
    later than it is claimed) and paused ones."""
    assert capacity.follow([Candidate(10, "q", limits={"k": 2})], [tail(1)], {"k": 1}, set(),
                           8) == []


def test_followers_form_chains_round_robin_within_the_room() -> None:
    """Each job is followed at most once; a follower is followed in turn (at the attempt its
    claim starts), tails taking followers in turn; never more than `room`."""
    candidates = [Candidate(10 + n, "q", limits={"k": 2}, attempt=0) for n in range(7)]
    chosen = capacity.follow(candidates, [tail(1), tail(2)], {"k": 2}, {"q"}, 5)
    assert [(f.id, f.after, f.after_attempt) for f in chosen] == [
        (10, 1, 1), (11, 2, 1), (12, 10, 1), (13, 11, 1), (14, 12, 1)]
    assert len({f.after for f in chosen}) == len(chosen)


def test_followers_go_to_the_shallowest_chains() -> None:
    """A slot whose chain runs dry idles until a turn, however deep the others are: each
    follower goes to the chain with the fewest followers waiting (the first of equals)."""
    candidates = [Candidate(10 + n, "q", limits={"k": 3}, attempt=0) for n in range(4)]
    tails = [tail(1, depth=3, limits={"k": 3}), tail(2, depth=0, limits={"k": 3}),
             tail(3, depth=1, limits={"k": 3})]
    chosen = capacity.follow(candidates, tails, {"k": 3}, {"q"}, 4)
    assert [(f.id, f.after) for f in chosen] == [(10, 2), (11, 10), (12, 3), (13, 11)]


def running(id_: int, **fields: Any) -> RunningJob:
    return RunningJob(**{"id": id_, "queue": "q", "gated": True, "worker_id": 1, "attempt": 1,
                         "host": "h", "limits": {"k": 1}, **fields})


def test_a_follower_holds_no_place_while_the_job_it_follows_runs_there() -> None:
    chain = [running(1, cpus=1.0, gpus=(0,)), running(2, after=1, after_attempt=1, gpus=(0,)),
             running(3, after=2, after_attempt=1, gpus=(0,))]
    held = capacity.places(chain)
    assert held.queue_running == {"q": [1]} and held.key_holders == {"k": [1]}
    assert held.hosts["h"].cpu == 1.0 and held.hosts["h"].gpu_holders == {0: 1}
    assert [t.id for t in held.tails[1]] == [3]  # only the chain's end can be followed
    assert held.tails[1][0].depth == 2  # two followers wait in its chain, itself the last
    alone = capacity.places([running(1), running(2, after=9, after_attempt=1)]).tails[1]
    assert [(t.id, t.depth) for t in alone] == [(1, 0), (2, 0)]  # both hold places


@pytest.mark.parametrize("leader", [
    None,  # ended (recorded): the follower holds its own place
    {"attempt": 2},  # runs again, a later attempt: not the run it followed
    {"worker_id": 2},  # runs on another worker (rescued and claimed again)
])
def test_a_follower_holds_its_own_place_once_what_it_followed_is_gone(
        leader: dict[str, Any] | None) -> None:
    jobs = [running(2, after=1, after_attempt=1)]
    if leader is not None:
        jobs.append(running(1, **leader))
    held = capacity.places(jobs)
    assert 2 in held.key_holders["k"] and 2 in held.queue_running["q"]
    assert held.key_usage()["k"] == len(jobs)


def test_places_count_queues_of_plain_jobs_and_keys_and_machines_of_gated_ones() -> None:
    held = capacity.places([running(1, gated=False, limits={}), running(2, host="h2", cpus=2.0),
                            running(3, host=None)])
    assert held.queue_running == {"q": [1, 2, 3]}
    assert held.key_holders == {"k": [2, 3]}
    assert set(held.hosts) == {"h2"} and held.hosts["h2"].cpu == 2.0
    assert 1 not in {t.id for tails in held.tails.values() for t in tails}


# --- explain ------------------------------------------------------------------------------------

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
EU = WorkerView(id=1, name="w1", host="h1", queues=("q",), tags={"zone": "eu"},
                resources=Resources(cpu=8.0, mem=16 << 30, gpu=2))


def facts(**changes: Any) -> Facts:
    fields: dict[str, Any] = dict(
        id=50, state="queued", queue="q", held=False, attempt=0, run_at=NOW, now=NOW,
        limits={}, cpus=0.0, mem=0, gpus=0, requires={}, queue_settings=QueueSettings("q"),
        queue_running=[], key_holders={}, waits_for=[], workers=[EU], usage={})
    fields.update(changes)
    return Facts(**fields)


def kinds(found: Facts) -> list[str]:
    return [reason.kind for reason in capacity.explain(found)]


def texts(found: Facts) -> str:
    return "\n".join(reason.text for reason in capacity.explain(found))


def test_explain_names_each_blocker() -> None:
    assert kinds(facts(held=True)) == ["held"]
    assert texts(facts(queue_settings=QueueSettings("q", paused=True))) == "queue q is paused"
    capped = facts(queue_settings=QueueSettings("q", max_running=2), queue_running=[41, 42])
    assert texts(capped) == "queue q: 2/2 running (jobs 41 and 42)"
    assert texts(facts(limits={"db-main": 1}, key_holders={"db-main": [41]})) == (
        "limit db-main 1/1 held by job 41")
    assert texts(facts(state="waiting", waits_for=[(40, "running")])) == (
        "waits for job 40 (running)")
    assert texts(facts(run_at=NOW + timedelta(minutes=3, seconds=5))).startswith("due in 3m05s")
    assert texts(facts(attempt=1, run_at=NOW + timedelta(seconds=30))).startswith(
        "retry backoff until")
    assert texts(facts(workers=[])) == "no live worker serves queue q"
    assert texts(facts(requires={"zone": "us"})) == "no live worker of queue q has tag zone=us"
    assert kinds(facts(gpus=4)) == ["no_worker_fits"]


def test_explain_names_the_jobs_holding_the_gpus() -> None:
    busy = HostUsage(gpu_holders={0: 43, 1: 44})
    text = texts(facts(gpus=1, usage={"h1": busy}))
    assert text.startswith("needs gpu=1, and no live worker has that free (w1: 2 GPUs, held by "
                           "43 and 44"), text


def test_explain_a_rate_says_when_the_next_start_is() -> None:
    start = NOW.timestamp() - 1.0
    queue = QueueSettings("q", rate_count=2, rate_window_s=2.0, recent_starts=(start, start))
    assert kinds(facts(queue_settings=queue)) == ["rate"]
    assert "rate 2/2s reached, next start at" in texts(facts(queue_settings=queue))


def test_explain_a_job_free_to_start_or_not_waiting() -> None:
    assert kinds(facts()) == ["starting"]
    assert kinds(facts(state="running", worker_name="w1", attempt=1)) == ["running"]
    assert texts(facts(state="failed", error="exit 3")) == "finished: failed: exit 3"
