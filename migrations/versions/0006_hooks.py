"""Hooks: `--on-success/--on-failure/--on-end` on jobs, `on_failure` on workflows, and the
triggers that start them as jobs of their own (jobctl.store.<backend>.hooks).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _triggers() -> tuple[list[str], list[str]]:
    if op.get_bind().dialect.name == "postgresql":
        from jobctl.store.postgres import hooks
    else:
        from jobctl.store.sqlite import hooks  # type: ignore[no-redef]
    return hooks.CREATE, hooks.DROP


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in ("on_success", "on_failure", "on_end"):
            batch.add_column(sa.Column(column, sa.Text))
        batch.add_column(sa.Column("hook_of", sa.BigInteger))
    op.create_index("ix_jobs_hook_of", "jobs", ["hook_of"],
                    postgresql_where=sa.text("hook_of IS NOT NULL"),
                    sqlite_where=sa.text("hook_of IS NOT NULL"))
    with op.batch_alter_table("workflows") as batch:
        batch.add_column(sa.Column("on_failure", sa.Text))
        batch.add_column(sa.Column("on_failure_fired", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
    create, _ = _triggers()
    for statement in create:
        op.execute(statement)


def downgrade() -> None:
    _, drop = _triggers()
    for statement in drop:
        op.execute(statement)
    with op.batch_alter_table("workflows") as batch:
        for column in ("on_failure_fired", "on_failure"):
            batch.drop_column(column)
    op.drop_index("ix_jobs_hook_of", "jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("hook_of", "on_end", "on_failure", "on_success"):
            batch.drop_column(column)
