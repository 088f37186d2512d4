"""Capacity control: queues as objects, held and gated jobs, concurrency limits, resources and
tags, GPU assignments.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen copies of the types in jobctl/store/schema.py (see 0001).
TIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
CLAIMABLE = "state = 'queued' AND NOT held AND NOT gated"
GATED_CLAIMABLE = "state = 'queued' AND NOT held AND gated"
OLD_CLAIMABLE = "state = 'queued'"
CLAIM_COLUMNS = ["queue", sa.text("priority DESC"), "run_at", "id"]


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("gated", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("limits", JSON))
        batch.add_column(sa.Column("cpus", sa.Float))
        batch.add_column(sa.Column("mem_bytes", sa.BigInteger))
        batch.add_column(sa.Column("gpus", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("requires", JSON))
        batch.add_column(sa.Column("gpu_indices", sa.Text))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("resources", JSON))
        batch.add_column(sa.Column("tags", JSON))
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.create_index("ix_jobs_claim", "jobs", CLAIM_COLUMNS,
                    postgresql_where=sa.text(CLAIMABLE), sqlite_where=sa.text(CLAIMABLE))
    op.create_index("ix_jobs_gated", "jobs", CLAIM_COLUMNS,
                    postgresql_where=sa.text(GATED_CLAIMABLE),
                    sqlite_where=sa.text(GATED_CLAIMABLE))
    op.create_table(
        "queues",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("max_running", sa.Integer),
        sa.Column("rate_count", sa.Integer),
        sa.Column("rate_window_s", sa.Float),
        sa.Column("recent_starts", JSON),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_queues"),
    )


def downgrade() -> None:
    op.drop_table("queues")
    op.drop_index("ix_jobs_gated", table_name="jobs")
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.create_index("ix_jobs_claim", "jobs", CLAIM_COLUMNS,
                    postgresql_where=sa.text(OLD_CLAIMABLE), sqlite_where=sa.text(OLD_CLAIMABLE))
    with op.batch_alter_table("workers") as batch:
        for column in ("tags", "resources"):
            batch.drop_column(column)
    with op.batch_alter_table("jobs") as batch:
        for column in ("gpu_indices", "requires", "gpus", "mem_bytes", "cpus", "limits", "gated",
                       "held"):
            batch.drop_column(column)
