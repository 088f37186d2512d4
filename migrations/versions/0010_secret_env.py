"""Secrets never stored: `job submit --secret-env NAME=file:PATH|env:VAR` keeps only the
references (jobs.secret_env, {NAME: "file:PATH" | "env:VAR"}); the worker reads the values.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# A frozen copy of the type in jobctl/store/schema.py (see 0001).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("secret_env", JSON))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("secret_env")
