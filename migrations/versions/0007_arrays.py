"""Job arrays (`job submit --array`) and retrying by exit code (`--retry-on-exit`,
`--no-retry-on-exit`).

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Frozen copies of the types in jobctl/store/schema.py (see 0001).
TIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
IN_ARRAY = "array_id IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "arrays",
        sa.Column("id", BIGINT_PK, sa.Identity(), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("throttle", sa.Integer),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_arrays"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("array_id", sa.BigInteger))
        batch.add_column(sa.Column("array_index", sa.Integer))
        batch.add_column(sa.Column("retry_on_exit", JSON))
        batch.add_column(sa.Column("no_retry_on_exit", JSON))
    op.create_index("ix_jobs_array_id", "jobs", ["array_id", "array_index"],
                    postgresql_where=sa.text(IN_ARRAY), sqlite_where=sa.text(IN_ARRAY))


def downgrade() -> None:
    op.drop_index("ix_jobs_array_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("no_retry_on_exit", "retry_on_exit", "array_index", "array_id"):
            batch.drop_column(column)
    if op.get_bind().dialect.name == "sqlite":
        # SQLite's batch mode rebuilt `jobs`, and its triggers went with the old table: 0006's
        # hook triggers, back as they were.
        from jobctl.store.sqlite import hooks

        for statement in hooks.CREATE:
            op.execute(statement)
    op.drop_table("arrays")
