"""A database with jobs in every state, for the retention, stats and `top` tests: real rows written
through the store's own functions (submit, claim, complete, output), then aged where a test needs
old jobs by moving their finish time back on the database clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobctl.models import DepCondition, JobSpec, JobState
from jobctl.store import deps, jobs, postgres, queue, sqlite
from jobctl.store import workers as worker_rows
from jobctl.store.direct import DirectDatabase
from jobctl.store.queue import Outcome, OutputChunk
from jobctl.store.url import parse


@dataclass
class Seeded:
    url: str
    # Seeding, looking and the code under test: the driver road, in production's transaction
    # modes (the worker's statements in `turn()`s, submits in `write()`s).
    database: DirectDatabase
    workers: dict[str, int] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> int:
        return self.ids[name]

    def close(self) -> None:
        self.database.close()


def now_plus_sql(database: DirectDatabase, seconds: float) -> str:
    """The database clock plus `seconds`, as SQL text of the database's backend (no
    parameter: a statement built with it is the same on both)."""
    now_plus = postgres.now_plus if database.backend.title == "PostgreSQL" else sqlite.now_plus
    return now_plus(repr(float(seconds)))


def register_worker(database: DirectDatabase, name: str, queues: list[str],
                    concurrency: int = 2) -> int:
    with database.write() as conn:
        return worker_rows.register(conn, name=name, hostname=f"host-{name}",
                                    pid=4242, queues=queues, concurrency=concurrency,
                                    version="test")


def submit(database: DirectDatabase, name: str, queue_name: str = "default",
           state: JobState = JobState.QUEUED) -> int:
    with database.write() as conn:
        job_id, _ = jobs.submit(conn, JobSpec(argv=["echo", name], name=name, queue=queue_name))
        if state is JobState.WAITING:
            conn.execute(f"UPDATE jobs SET state = 'waiting' WHERE id = {int(job_id)}")
    return job_id


def run(database: DirectDatabase, worker: int, queue_name: str, end: JobState | None,
        output: bytes = b"") -> int:
    """Claim the next job of `queue_name` with `worker`, write `output`, and end it in `end`
    (None: leave it running), in the worker's turns. Returns its id."""
    with database.turn() as conn:
        [claimed] = queue.claim(conn, worker, queue.Claim([queue_name], 1, 300.0))
    with database.turn() as conn:
        if output:
            queue.write_output(conn, [
                OutputChunk(claimed.id, 1, "stdout", seq, output[seq::4]) for seq in range(4)])
        if end is not None:
            code = 0 if end is JobState.SUCCEEDED else 3
            assert queue.complete(conn, worker, [Outcome(
                job_id=claimed.id, attempt=claimed.attempt, state=end,
                attempt_outcome=end.value, exit_code=code, signal=None,
                error=None if code == 0 else "exit code 3")]) == {claimed.id}
    return claimed.id


def age(database: DirectDatabase, job_id: int, days: float) -> None:
    """Make a finished job look as if it finished `days` ago."""
    with database.write() as conn:
        conn.execute(f"UPDATE jobs SET finished_at = {now_plus_sql(database, -days * 86_400.0)} "
                     f"WHERE id = {int(job_id)}")


def depend(database: DirectDatabase, job_id: int, depends_on: int) -> None:
    with database.write() as conn:
        deps.add(conn, [(job_id, depends_on, DepCondition.OK)])


def seed(url: str) -> Seeded:
    """Two workers; in `default`: old jobs that succeeded, failed and were cancelled (with output),
    a recent success, a running job, a queued one; an old success that a waiting job depends on,
    and an old failure that only a finished job depends on; in `batch`: a running job."""
    database = DirectDatabase(parse(url))
    seeded = Seeded(url, database)
    seeded.workers["alpha"] = register_worker(database, "alpha", ["default"])
    seeded.workers["beta"] = register_worker(database, "beta", ["batch"])
    alpha, beta = seeded.workers["alpha"], seeded.workers["beta"]
    for name, end in (("old-ok", JobState.SUCCEEDED), ("old-failed", JobState.FAILED),
                      ("needed", JobState.SUCCEEDED), ("needed-by-done", JobState.FAILED),
                      ("dependent-done", JobState.SUCCEEDED), ("recent-ok", JobState.SUCCEEDED)):
        seeded.ids[name] = submit(database, name)
        assert run(database, alpha, "default", end, output=f"out {name}\n".encode()) \
            == seeded.ids[name]
    seeded.ids["old-cancelled"] = submit(database, "old-cancelled")
    with database.write() as conn:
        jobs.cancel(conn, seeded.ids["old-cancelled"])
    seeded.ids["running"] = submit(database, "running")
    assert run(database, alpha, "default", None) == seeded.ids["running"]
    seeded.ids["batch-running"] = submit(database, "batch-running", "batch")
    assert run(database, beta, "batch", None) == seeded.ids["batch-running"]
    seeded.ids["queued"] = submit(database, "queued")
    seeded.ids["waiting"] = submit(database, "waiting", state=JobState.WAITING)
    depend(database, seeded["waiting"], seeded["needed"])
    depend(database, seeded["dependent-done"], seeded["needed-by-done"])
    for name in ("old-ok", "old-failed", "old-cancelled", "needed", "needed-by-done",
                 "dependent-done"):
        age(database, seeded[name], 40)
    return seeded
