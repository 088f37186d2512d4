"""Who submitted it: `submitted_by` on jobs, schedules and workflows, and the triggers that set
it (jobctl.store.identity; jobctl.store.<backend>.identity). Rows from before keep NULL.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLES = ("jobs", "schedules", "workflows")


def _triggers() -> tuple[list[str], list[str]]:
    if op.get_bind().dialect.name == "postgresql":
        from jobctl.store.postgres import identity
    else:
        from jobctl.store.sqlite import identity  # type: ignore[no-redef]
    return identity.CREATE, identity.DROP


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("submitted_by", sa.Text))
    create, _ = _triggers()
    for statement in create:
        op.execute(statement)


def downgrade() -> None:
    _, drop = _triggers()
    for statement in drop:
        op.execute(statement)
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("submitted_by")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite's batch mode rebuilt `jobs`, and its triggers went with the old table: 0006's
        # hook triggers, back as they were (as 0007 does).
        from jobctl.store.sqlite import hooks

        for statement in hooks.CREATE:
            op.execute(statement)
