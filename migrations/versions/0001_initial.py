"""The first schema: jobs, attempts, job_logs, workers.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the types in jobctl/store/schema.py: a migration must not change when the
# application's code does.
TIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", BIGINT_PK, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", JSON, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("heartbeat_at", TIME, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="running"),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_workers_state", "workers", ["state"])

    op.create_table(
        "jobs",
        sa.Column("id", BIGINT_PK, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("queue", sa.Text, nullable=False, server_default="default"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("argv", JSON, nullable=False),
        sa.Column("env", JSON, nullable=False),
        sa.Column("cwd", sa.Text),
        sa.Column("timeout_s", sa.Float),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="1"),
        sa.Column("backoff_s", sa.Float, nullable=False, server_default="10"),
        sa.Column("delivery", sa.Text, nullable=False, server_default="at_least_once"),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("run_at", TIME, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("started_at", TIME),
        sa.Column("finished_at", TIME),
        sa.Column("worker_id", sa.BigInteger),
        sa.Column("lease_until", TIME),
        sa.Column("exit_code", sa.Integer),
        sa.Column("signal", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("unique_key", sa.Text),
        sa.Column("schedule_id", sa.BigInteger),
        sa.Column("fire_time", TIME),
        sa.Column("labels", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sqlite_autoincrement=True,
    )
    # Few, partial indexes: every claim and completion rewrites a job's row, and each index
    # costs an entry per rewrite.
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=sa.text("state = 'queued'"),
        sqlite_where=sa.text("state = 'queued'"),
    )
    op.create_index(
        "ix_jobs_lease",
        "jobs",
        ["lease_until"],
        postgresql_where=sa.text("state = 'running'"),
        sqlite_where=sa.text("state = 'running'"),
    )
    op.create_index(
        "uq_jobs_unique_key",
        "jobs",
        ["unique_key"],
        unique=True,
        postgresql_where=sa.text("unique_key IS NOT NULL"),
        sqlite_where=sa.text("unique_key IS NOT NULL"),
    )
    op.create_index(
        "uq_jobs_schedule_fire_time",
        "jobs",
        ["schedule_id", "fire_time"],
        unique=True,
        postgresql_where=sa.text("schedule_id IS NOT NULL"),
        sqlite_where=sa.text("schedule_id IS NOT NULL"),
    )

    op.create_table(
        "attempts",
        sa.Column("job_id", sa.BigInteger, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.BigInteger),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("finished_at", TIME),
        sa.Column("outcome", sa.Text),
        sa.Column("exit_code", sa.Integer),
        sa.Column("signal", sa.Integer),
        sa.Column("error", sa.Text),
        sa.PrimaryKeyConstraint("job_id", "attempt", name="pk_attempts"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_attempts_job_id_jobs", ondelete="CASCADE"
        ),
    )

    op.create_table(
        "job_logs",
        sa.Column("id", BIGINT_PK, sa.Identity(), primary_key=True),
        sa.Column("job_id", sa.BigInteger, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("ts", TIME, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_job_logs"),
        sa.UniqueConstraint("job_id", "attempt", "seq", name="uq_job_logs_job_id_attempt_seq"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_logs_job_id_jobs", ondelete="CASCADE"
        ),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("job_logs")
    op.drop_table("attempts")
    op.drop_index("uq_jobs_schedule_fire_time", "jobs")
    op.drop_index("uq_jobs_unique_key", "jobs")
    op.drop_index("ix_jobs_lease", "jobs")
    op.drop_index("ix_jobs_claim", "jobs")
    op.drop_table("jobs")
    op.drop_index("ix_workers_state", "workers")
    op.drop_table("workers")
