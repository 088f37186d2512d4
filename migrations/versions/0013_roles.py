"""Roles and permissions (jobctl.store.postgres.roles.FUNCTIONS): the view that shows a job's
private fields (environment, secret references, standard input) to whoever may see them; the
functions that lock the states of a new job's dependencies and settle the jobs waiting on jobs
that ended, as the tables' owner; and hooks inserted as the owner (SECURITY DEFINER), so that a
worker role needs no INSERT on jobs. The roles, grants and policies themselves are `jobctl db
roles`'. SQLite: nothing.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    from jobctl.store.postgres import roles

    for statement in roles.FUNCTIONS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    from jobctl.store.postgres import roles

    for statement in roles.DROP_FUNCTIONS:
        op.execute(statement)
