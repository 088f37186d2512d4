"""Schedules, job dependencies and workflows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copies of the types in jobctl/store/schema.py (see 0001).
TIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("workflow_id", sa.BigInteger))
        batch.add_column(sa.Column("task", sa.Text))
    op.create_index(
        "ix_jobs_workflow_id",
        "jobs",
        ["workflow_id"],
        postgresql_where=sa.text("workflow_id IS NOT NULL"),
        sqlite_where=sa.text("workflow_id IS NOT NULL"),
    )

    op.create_table(
        "job_deps",
        sa.Column("job_id", sa.BigInteger, nullable=False),
        sa.Column("depends_on", sa.BigInteger, nullable=False),
        sa.Column("condition", sa.Text, nullable=False, server_default="ok"),
        sa.PrimaryKeyConstraint("job_id", "depends_on", name="pk_job_deps"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_deps_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_job_deps_depends_on", "job_deps", ["depends_on"])

    op.create_table(
        "workflows",
        sa.Column("id", BIGINT_PK, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("schedule_id", sa.BigInteger),
        sa.Column("fire_time", TIME),
        sa.Column("labels", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workflows"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "uq_workflows_schedule_fire_time",
        "workflows",
        ["schedule_id", "fire_time"],
        unique=True,
        postgresql_where=sa.text("schedule_id IS NOT NULL"),
        sqlite_where=sa.text("schedule_id IS NOT NULL"),
    )

    op.create_table(
        "schedules",
        sa.Column("id", BIGINT_PK, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("cron", sa.Text),
        sa.Column("every_s", sa.Float),
        sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
        sa.Column("job", JSON),
        sa.Column("workflow", JSON),
        sa.Column("overlap", sa.Text, nullable=False, server_default="forbid"),
        sa.Column("misfire", sa.Text, nullable=False, server_default="once"),
        sa.Column("jitter_s", sa.Float, nullable=False, server_default="0"),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("start_at", TIME),
        sa.Column("end_at", TIME),
        sa.Column("next_fire_at", TIME),
        sa.Column("last_fire_at", TIME),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
        sa.UniqueConstraint("name", name="uq_schedules_name"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_schedules_next_fire_at",
        "schedules",
        ["next_fire_at"],
        postgresql_where=sa.text("NOT paused"),
        sqlite_where=sa.text("NOT paused"),
    )


def downgrade() -> None:
    op.drop_index("ix_schedules_next_fire_at", "schedules")
    op.drop_table("schedules")
    op.drop_index("uq_workflows_schedule_fire_time", "workflows")
    op.drop_table("workflows")
    op.drop_index("ix_job_deps_depends_on", "job_deps")
    op.drop_table("job_deps")
    op.drop_index("ix_jobs_workflow_id", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("task")
        batch.drop_column("workflow_id")
