"""Accounting: what each attempt used (CPU seconds, peak memory, killed for memory), and an
index for `jobctl stats` over the attempts of a window.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("cpu_user_s", sa.Float))
        batch.add_column(sa.Column("cpu_system_s", sa.Float))
        batch.add_column(sa.Column("max_rss_bytes", sa.BigInteger))
        batch.add_column(sa.Column("oom_killed", sa.Boolean))
    op.create_index("ix_attempts_finished_at", "attempts", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_attempts_finished_at", table_name="attempts")
    with op.batch_alter_table("attempts") as batch:
        for column in ("oom_killed", "max_rss_bytes", "cpu_system_s", "cpu_user_s"):
            batch.drop_column(column)
