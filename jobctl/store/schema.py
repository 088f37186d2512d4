"""The tables, as SQLAlchemy Core: the single source of truth that migrations follow.

PostgreSQL gets its own types (timestamptz, jsonb, bytea, bigint identity); SQLite the nearest
equivalents. Times are always UTC and always come from the database clock (see `db_now`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from jobctl.store import SCHEMA_REVISION as SCHEMA_REVISION
from jobctl.store.postgres import NOW as PG_NOW
from jobctl.store.postgres import now_plus as pg_now_plus
from jobctl.store.sqlite import NOW as SQLITE_NOW
from jobctl.store.sqlite import now_plus as sqlite_now_plus


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """An aware UTC datetime: timestamptz on PostgreSQL, a fixed-width UTC string on SQLite.

    SQLite stores `YYYY-MM-DD HH:MM:SS.ffffff`, the same width as `db_now()` produces there, so
    comparing two times as strings compares them as times.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        # In UTC: SQLite's DateTime stores the wall time without its offset.
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class db_now(FunctionElement[datetime]):
    """The database's current time: leases, run_at and created_at never use a machine's clock."""

    type = UTCDateTime()
    inherit_cache = True


class db_now_plus(FunctionElement[datetime]):
    """The database's current time plus a number of seconds (a bound value or a column)."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(db_now, "postgresql")
def _pg_now(element: db_now, compiler: Any, **kw: Any) -> str:
    return PG_NOW


@compiles(db_now, "sqlite")
def _sqlite_now(element: db_now, compiler: Any, **kw: Any) -> str:
    return SQLITE_NOW


@compiles(db_now_plus, "postgresql")
def _pg_now_plus(element: db_now_plus, compiler: Any, **kw: Any) -> str:
    (seconds,) = list(element.clauses)
    return pg_now_plus(compiler.process(seconds, **kw))


@compiles(db_now_plus, "sqlite")
def _sqlite_now_plus(element: db_now_plus, compiler: Any, **kw: Any) -> str:
    (seconds,) = list(element.clauses)
    return sqlite_now_plus(compiler.process(seconds, **kw))


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _partial_index(name: str, *columns: Any, where: Any, unique: bool = False) -> sa.Index:
    """An index of only the rows `where` holds, on both backends (a partial index)."""
    return sa.Index(name, *columns, unique=unique, postgresql_where=where, sqlite_where=where)


def _bigint_pk() -> sa.types.TypeEngine[int]:
    # SQLite only auto-increments an INTEGER PRIMARY KEY.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", _bigint_pk(), sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("hostname", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("queues", _json(), nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
    sa.Column("state", sa.Text, nullable=False, server_default="running"),
    # What the worker offers (capacity control): {"cpu": 8, "mem": bytes, "gpu": 2}, and its
    # tags {"zone": "eu"}. Resources are its machine's (`hostname`): jobs on one machine share them.
    sa.Column("resources", _json()),
    sa.Column("tags", _json()),
    sqlite_autoincrement=True,
)
sa.Index("ix_workers_state", workers.c.state)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", _bigint_pk(), sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("queue", sa.Text, nullable=False, server_default="default"),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("argv", _json(), nullable=False),
    sa.Column("env", _json(), nullable=False),
    sa.Column("cwd", sa.Text),
    sa.Column("timeout_s", sa.Float),
    sa.Column("max_attempts", sa.Integer, nullable=False, server_default="1"),
    sa.Column("backoff_s", sa.Float, nullable=False, server_default="10"),
    sa.Column("delivery", sa.Text, nullable=False, server_default="at_least_once"),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("run_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime()),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("worker_id", sa.BigInteger),
    sa.Column("lease_until", UTCDateTime()),
    sa.Column("exit_code", sa.Integer),
    sa.Column("signal", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("unique_key", sa.Text),
    sa.Column("schedule_id", sa.BigInteger),
    sa.Column("fire_time", UTCDateTime()),
    sa.Column("labels", _json(), nullable=False),
    # A workflow's task: the workflow and the task's name in it.
    sa.Column("workflow_id", sa.BigInteger),
    sa.Column("task", sa.Text),
    # Losing a worker is not the command's failure: it costs no retry but counts here, and the
    # job fails once `losses` reaches `max_lost` (a job that keeps taking its workers down).
    sa.Column("max_lost", sa.Integer, nullable=False, server_default="3"),
    sa.Column("losses", sa.Integer, nullable=False, server_default="0"),
    # Claimed into a worker's read-ahead buffer, its command not started: if that worker dies,
    # the rescuer puts it back as if never claimed (see store/queue.py).
    sa.Column("in_buffer", sa.Boolean, nullable=False, server_default=sa.false()),
    # The job's standard input (bytes; NULL: /dev/null) and the Unix user it runs as (NULL: the
    # worker's own).
    sa.Column("input", sa.LargeBinary),
    sa.Column("run_as", sa.Text),
    # Capacity control (jobctl.capacity). `held`: never starts until released. `gated`: claimed
    # only by the gated claim (jobctl.store.capacity), never by the hot path's, because it holds
    # limits, asks for resources or tags, or was claimed from a capped queue.
    sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("gated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("limits", _json()),  # {"db-main": 1}: starts only while fewer hold the key
    sa.Column("cpus", sa.Float),
    sa.Column("mem_bytes", sa.BigInteger),
    sa.Column("gpus", sa.Integer, nullable=False, server_default="0"),
    sa.Column("requires", _json()),  # {"zone": "eu"}: only on workers with these tags
    sa.Column("gpu_indices", sa.Text),  # "0,1": the GPUs of its machine the running attempt holds
    # A follower: claimed into its worker's read-ahead buffer to take the place of the job it
    # follows there (this id, at this attempt), and started only once that one's command ended;
    # while that one runs, the follower holds no place of its own (jobctl.store.capacity).
    sa.Column("after_id", sa.BigInteger),
    sa.Column("after_attempt", sa.Integer),
    # Hooks: shell commands, each started as a job of its own when this job ends in a state of
    # jobctl.models.HOOK_STATES, by a trigger (jobctl.store.<backend>.hooks, migration 0006). A
    # hook's job has `hook_of`: the job whose end started it.
    sa.Column("on_success", sa.Text),
    sa.Column("on_failure", sa.Text),
    sa.Column("on_end", sa.Text),
    sa.Column("hook_of", sa.BigInteger),
    # --- job arrays and retrying by exit code (migration 0007) ---
    # A task of an array (`job submit --array`): the array and the task's index in it.
    sa.Column("array_id", sa.BigInteger),
    sa.Column("array_index", sa.Integer),
    # Which exit codes a failed attempt retries on ([75, 111]: only these), or never retries on
    # (`no_retry_on_exit`: all others do); NULL: any failure retries (jobctl.policy.should_retry).
    sa.Column("retry_on_exit", _json()),
    sa.Column("no_retry_on_exit", _json()),
    # --- secrets (migration 0010) ---
    # {NAME: "file:PATH" | "env:VAR"}: references the worker resolves when it starts the job,
    # never the values (jobctl.secret_env); NULL: none.
    sa.Column("secret_env", _json()),
    # Who submitted it (jobctl.store.identity, migration 0011): on PostgreSQL set by a trigger
    # (the session's role, or the name of the row it belongs to), on SQLite the Unix user.
    # NULL: created before 0011. PostgreSQL's default is session_user (set by the migration: not
    # SQLite's).
    sa.Column("submitted_by", sa.Text),
    sqlite_autoincrement=True,
)
# Every claim and completion rewrites a job's row, and each index on `jobs` costs an entry per
# rewrite; so the indexes are few and partial: each holds only the rows it is for.
# The claim query's index: only queued rows the hot path may claim, in the order they are
# claimed (held and gated jobs are not in it: a backlog of them costs the hot path nothing);
# and the gated claim's index: queued gated jobs, in the same order.
CLAIMABLE = "state = 'queued' AND NOT held AND NOT gated"
GATED_CLAIMABLE = "state = 'queued' AND NOT held AND gated"
for _name, _where in (("ix_jobs_claim", CLAIMABLE), ("ix_jobs_gated", GATED_CLAIMABLE)):
    _partial_index(_name, jobs.c.queue, jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id,
                   where=sa.text(_where))
# The rescuer's index: running jobs by lease expiry.
_partial_index(
    "ix_jobs_lease",
    jobs.c.lease_until,
    where=jobs.c.state == "running",
)
# Idempotent submits and schedule occurrences: unique where given, absent from the index where not.
_partial_index(
    "uq_jobs_unique_key",
    jobs.c.unique_key,
    unique=True,
    where=jobs.c.unique_key.isnot(None),
)
_partial_index(
    "uq_jobs_schedule_fire_time",
    jobs.c.schedule_id,
    jobs.c.fire_time,
    unique=True,
    where=jobs.c.schedule_id.isnot(None),
)
# A schedule's latest succeeded run (its dead-man's switch, jobctl.store.overdue): only a
# schedule's succeeded jobs are in it, each entering once, when it succeeds.
SCHEDULE_SUCCEEDED = "state = 'succeeded' AND schedule_id IS NOT NULL"
_partial_index("ix_jobs_schedule_succeeded", jobs.c.schedule_id, jobs.c.finished_at,
               where=sa.text(SCHEDULE_SUCCEEDED))

# A job's hooks, for `job status`: only the jobs that are hooks.
_partial_index(
    "ix_jobs_hook_of",
    jobs.c.hook_of,
    where=jobs.c.hook_of.isnot(None),
)

# A workflow's tasks, for `workflow status`: only the jobs that belong to one.
_partial_index(
    "ix_jobs_workflow_id",
    jobs.c.workflow_id,
    where=jobs.c.workflow_id.isnot(None),
)

# An array's tasks, by index: only the jobs that belong to one.
_partial_index(
    "ix_jobs_array_id",
    jobs.c.array_id,
    jobs.c.array_index,
    where=jobs.c.array_id.isnot(None),
)

# Job arrays (`job submit --array`): `size` tasks (jobs with this array_id); `throttle`: at most
# this many of them running at once (each task then holds the limit key `array:ID` = throttle).
arrays = sa.Table(
    "arrays",
    metadata,
    sa.Column("id", _bigint_pk(), sa.Identity(), primary_key=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("throttle", sa.Integer),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sqlite_autoincrement=True,
)

# Dependencies: `job_id` waits for `depends_on`. `condition` is `ok` (`--after`: it must succeed)
# or `any` (`--after-any`: it must end, whatever its outcome). No foreign key on `depends_on`:
# retention decides what may go, and a pruned dependency must not silently release its dependents.
job_deps = sa.Table(
    "job_deps",
    metadata,
    sa.Column("job_id", sa.BigInteger, sa.ForeignKey("jobs.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("depends_on", sa.BigInteger, nullable=False),
    sa.Column("condition", sa.Text, nullable=False, server_default="ok"),
    sa.PrimaryKeyConstraint("job_id", "depends_on"),
)
# Completing a job looks up what waits on it.
sa.Index("ix_job_deps_depends_on", job_deps.c.depends_on)

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("id", _bigint_pk(), sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    # The validated definition and the `--set` values it was run with.
    sa.Column("definition", _json(), nullable=False),
    sa.Column("params", _json(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("schedule_id", sa.BigInteger),
    sa.Column("fire_time", UTCDateTime()),
    sa.Column("labels", _json(), nullable=False),
    # The workflow's hook, started once when a task fails or is lost (jobctl.models.HOOK_STATES).
    sa.Column("on_failure", sa.Text),
    sa.Column("on_failure_fired", sa.Boolean, nullable=False, server_default=sa.false()),
    # Who submitted it (jobctl.store.identity, migration 0011): on PostgreSQL set by a trigger
    # (the session's role, or the name of the row it belongs to), on SQLite the Unix user.
    # NULL: created before 0011.
    sa.Column("submitted_by", sa.Text),
    sqlite_autoincrement=True,
)
# A schedule that starts a workflow fires each occurrence once, like one that submits a job.
_partial_index(
    "uq_workflows_schedule_fire_time",
    workflows.c.schedule_id,
    workflows.c.fire_time,
    unique=True,
    where=workflows.c.schedule_id.isnot(None),
)

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", _bigint_pk(), sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    # Exactly one of `cron` (5 or 6 fields, or @daily…) and `every_s` (an interval) is set.
    sa.Column("cron", sa.Text),
    sa.Column("every_s", sa.Float),
    sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
    # What each occurrence submits: a job template (JobSpec fields) or a workflow definition.
    sa.Column("job", _json()),
    sa.Column("workflow", _json()),
    sa.Column("overlap", sa.Text, nullable=False, server_default="forbid"),
    sa.Column("misfire", sa.Text, nullable=False, server_default="once"),
    sa.Column("jitter_s", sa.Float, nullable=False, server_default="0"),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("start_at", UTCDateTime()),
    sa.Column("end_at", UTCDateTime()),
    # NULL once the schedule has no future occurrence (past its end).
    sa.Column("next_fire_at", UTCDateTime()),
    sa.Column("last_fire_at", UTCDateTime()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # The dead-man's switch (`--alert-after`, jobctl.store.overdue): overdue after no succeeded
    # run for `alert_after_s`, measured from its latest succeeded job, or from `alert_set_at`
    # when it has none; `on_overdue` is the hook's /bin/sh -c command. `overdue_since`: the
    # overdue spell a scheduler noticed (NULL: none). `alert_check_at`: when a scheduler looks
    # next while it is not overdue (never later than it can become overdue).
    sa.Column("alert_after_s", sa.Float),
    sa.Column("on_overdue", sa.Text),
    sa.Column("alert_set_at", UTCDateTime()),
    sa.Column("overdue_since", UTCDateTime()),
    sa.Column("alert_check_at", UTCDateTime()),
    # Who submitted it (jobctl.store.identity, migration 0011): on PostgreSQL set by a trigger
    # (the session's role, or the name of the row it belongs to), on SQLite the Unix user.
    # NULL: created before 0011.
    sa.Column("submitted_by", sa.Text),
    sa.UniqueConstraint("name"),
    sqlite_autoincrement=True,
)
# The schedulers' overdue pass (jobctl.store.overdue): schedules that may have become overdue,
# by when to look; and those in an overdue spell (few), looked at until a run succeeds.
_partial_index(
    "ix_schedules_alert_check_at",
    schedules.c.alert_check_at,
    where=sa.text("overdue_since IS NULL AND alert_check_at IS NOT NULL"),
)
_partial_index(
    "ix_schedules_overdue_since",
    schedules.c.overdue_since,
    where=sa.text("overdue_since IS NOT NULL"),
)
# The scheduler's index: active schedules by their next occurrence.
_partial_index(
    "ix_schedules_next_fire_at",
    schedules.c.next_fire_at,
    where=sa.not_(schedules.c.paused),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("job_id", sa.BigInteger, sa.ForeignKey("jobs.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("worker_id", sa.BigInteger),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("outcome", sa.Text),
    sa.Column("exit_code", sa.Integer),
    sa.Column("signal", sa.Integer),
    sa.Column("error", sa.Text),
    # Accounting (jobctl.accounting): what the attempt's processes used, as its worker measured
    # it (its cgroup's figures, else wait4's rusage); NULL where unknown (a lost attempt).
    sa.Column("cpu_user_s", sa.Float),
    sa.Column("cpu_system_s", sa.Float),
    sa.Column("max_rss_bytes", sa.BigInteger),  # peak memory of the attempt's process tree
    sa.Column("oom_killed", sa.Boolean),  # the kernel killed it for memory (its cgroup's limit)
    sa.PrimaryKeyConstraint("job_id", "attempt"),
    # `jobctl stats`: the attempts that ended within its window.
    sa.Index("ix_attempts_finished_at", "finished_at"),
)

# Queues as objects (`jobctl queue …`): a queue needs no row to be used; a row holds what an
# operator set. `recent_starts`: the database-clock times (epoch seconds) of the latest starts,
# at most rate_count of them, for the rate (see jobctl.capacity.rate_room).
queues = sa.Table(
    "queues",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("max_running", sa.Integer),
    sa.Column("rate_count", sa.Integer),
    sa.Column("rate_window_s", sa.Float),
    sa.Column("recent_starts", _json()),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

job_logs = sa.Table(
    "job_logs",
    metadata,
    sa.Column("id", _bigint_pk(), sa.Identity(), primary_key=True),
    sa.Column("job_id", sa.BigInteger, sa.ForeignKey("jobs.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("stream", sa.Text, nullable=False),
    # One sequence per attempt across both streams, so stdout and stderr interleave as written.
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("ts", UTCDateTime(), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.UniqueConstraint("job_id", "attempt", "seq"),
    sqlite_autoincrement=True,
)

# Checks (`jobctl check`): dead-man's switches for anything outside jobctl, pinged by scripts
# (jobctl.store.checks). Overdue after no successful ping for `every_s` + `grace_s` since the
# last one (or since `created_at`); `overdue_at` is that deadline, moved on by each ping.
# `overdue_since`: the overdue spell (NULL: none), begun by a scheduler or a failure ping, ended
# by a successful ping.
checks = sa.Table(
    "checks",
    metadata,
    sa.Column("id", _bigint_pk(), sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("every_s", sa.Float, nullable=False),
    sa.Column("grace_s", sa.Float, nullable=False),
    sa.Column("on_overdue", sa.Text),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("last_ping_at", UTCDateTime()),
    sa.Column("last_fail_at", UTCDateTime()),
    sa.Column("overdue_at", UTCDateTime(), nullable=False),
    sa.Column("overdue_since", UTCDateTime()),
    sa.UniqueConstraint("name"),
    sqlite_autoincrement=True,
)
# The schedulers' overdue pass: checks not overdue, by deadline.
_partial_index(
    "ix_checks_overdue_at",
    checks.c.overdue_at,
    where=sa.text("overdue_since IS NULL"),
)

# The audit trail (jobctl.store.audit, migration 0012): one row per recorded action, written by
# triggers (and, for retention, a function): `role` and `at` are the database's (the session's
# role on PostgreSQL, the Unix user on SQLite); `kind` job, queue, schedule, worker or retention;
# `target` the job's or worker's id, the queue's or schedule's name; `owner` the job's or
# schedule's submitted_by; `changes` {column: [old, new]}, or a retention run's counts. Nobody
# may change or delete a row (triggers refuse it; PostgreSQL: only its owner may write it).
audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", _bigint_pk(), sa.Identity(), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("owner", sa.Text),
    sa.Column("changes", _json(), nullable=False),
    sqlite_autoincrement=True,
)
# `jobctl audit --since`.
sa.Index("ix_audit_at", audit.c.at)
