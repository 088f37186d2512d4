"""The audit trail (`jobctl audit`): the `audit` table, and the triggers and functions that write
it and guard it (jobctl.store.audit; jobctl.store.<backend>.audit).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Frozen copies of the types in jobctl/store/schema.py (see 0001).
TIME = sa.DateTime(timezone=True)
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _statements() -> tuple[list[str], list[str]]:
    if op.get_bind().dialect.name == "postgresql":
        from jobctl.store.postgres import audit
    else:
        from jobctl.store.sqlite import audit  # type: ignore[no-redef]
    return audit.CREATE, audit.DROP


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", BIGINT_PK, sa.Identity(), primary_key=True),
        sa.Column("at", TIME, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("target", sa.Text),
        sa.Column("owner", sa.Text),
        sa.Column("changes", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_at", "audit", ["at"])
    create, _ = _statements()
    for statement in create:
        op.execute(statement)


def downgrade() -> None:
    _, drop = _statements()
    for statement in drop:
        op.execute(statement)
    op.drop_index("ix_audit_at", table_name="audit")
    op.drop_table("audit")
