"""Promises kept under a crash: losses counted apart from retries, the read-ahead marker, a job's
standard input and the Unix user it runs as.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("max_lost", sa.Integer, nullable=False, server_default="3"))
        batch.add_column(sa.Column("losses", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("in_buffer", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("input", sa.LargeBinary))
        batch.add_column(sa.Column("run_as", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in ("run_as", "input", "in_buffer", "losses", "max_lost"):
            batch.drop_column(column)
