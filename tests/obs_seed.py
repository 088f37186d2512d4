"""A database with jobs in every state, for the retention, stats and `top` tests: real rows written
through the store's own functions (submit, claim, complete, output), then aged where a test needs
old jobs by moving their finish time back on the database clock."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from jobctl.models import JobSpec, JobState
from jobctl.store import jobs, queue
from jobctl.store import workers as worker_rows
from jobctl.store.direct import Conn, DirectDatabase
from jobctl.store.engine import Database
from jobctl.store.queue import Outcome, OutputChunk
from jobctl.store.schema import db_now_plus, job_deps
from jobctl.store.schema import jobs as jobs_table


@dataclass
class Seeded:
    database: Database  # for seeding and looking: SQLAlchemy, as the schema's creator
    # What the code under test gets: the driver road, in production's transaction modes.
    direct: DirectDatabase
    workers: dict[str, int] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> int:
        return self.ids[name]

    def close(self) -> None:
        self.direct.close()
        self.database.dispose()


def register_worker(database: Database, name: str, queues: list[str], concurrency: int = 2
                    ) -> int:
    with database.write() as connection:
        return worker_rows.register(Conn.of(connection), name=name, hostname=f"host-{name}",
                                    pid=4242, queues=queues, concurrency=concurrency,
                                    version="test")


def submit(database: Database, name: str, queue_name: str = "default",
           state: JobState = JobState.QUEUED) -> int:
    with database.write() as connection:
        job_id, _ = jobs.submit(connection, JobSpec(argv=["echo", name], name=name,
                                                    queue=queue_name))
        if state is JobState.WAITING:
            connection.execute(sa.update(jobs_table).where(jobs_table.c.id == job_id)
                               .values(state=JobState.WAITING.value))
    return job_id


def run(database: Database, worker: int, queue_name: str, end: JobState | None,
        output: bytes = b"") -> int:
    """Claim the next job of `queue_name` with `worker`, write `output`, and end it in `end`
    (None: leave it running). Returns its id."""
    with database.write() as connection:
        [claimed] = queue.claim(Conn.of(connection), worker, queue.Claim([queue_name], 1, 300.0))
    if output:
        with database.write() as connection:
            queue.write_output(Conn.of(connection), [
                OutputChunk(claimed.id, 1, "stdout", seq, output[seq::4]) for seq in range(4)])
    if end is not None:
        code = 0 if end is JobState.SUCCEEDED else 3
        with database.write() as connection:
            assert queue.complete(Conn.of(connection), worker, [Outcome(
                job_id=claimed.id, attempt=claimed.attempt, state=end,
                attempt_outcome=end.value, exit_code=code, signal=None,
                error=None if code == 0 else "exit code 3")]) == {claimed.id}
    return claimed.id


def age(database: Database, job_id: int, days: float) -> None:
    """Make a finished job look as if it finished `days` ago."""
    with database.write() as connection:
        connection.execute(sa.update(jobs_table).where(jobs_table.c.id == job_id)
                           .values(finished_at=db_now_plus(-days * 86_400.0)))


def depend(database: Database, job_id: int, depends_on: int) -> None:
    with database.write() as connection:
        connection.execute(sa.insert(job_deps).values(job_id=job_id, depends_on=depends_on,
                                                      condition="ok"))


def seed(url: str) -> Seeded:
    """Two workers; in `default`: old jobs that succeeded, failed and were cancelled (with output),
    a recent success, a running job, a queued one; an old success that a waiting job depends on,
    and an old failure that only a finished job depends on; in `batch`: a running job."""
    database = Database(url)
    database.ensure_schema()
    direct = DirectDatabase.open(url)
    assert direct is not None
    seeded = Seeded(database, direct)
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
    with database.write() as connection:
        jobs.cancel(connection, seeded.ids["old-cancelled"])
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
