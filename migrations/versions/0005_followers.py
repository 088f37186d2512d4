"""Followers: a gated job read ahead by a worker to take the place of the job it follows there.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("after_id", sa.BigInteger))
        batch.add_column(sa.Column("after_attempt", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in ("after_attempt", "after_id"):
            batch.drop_column(column)
