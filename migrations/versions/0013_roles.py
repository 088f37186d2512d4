"""Roles and permissions: the functions that read a job's private fields (environment, secret
references, standard input) for whoever may see them, and hooks inserted as the schema's owner
(SECURITY DEFINER), so that a worker role needs no INSERT on jobs (jobctl.store.postgres.roles;
the roles, grants and policies themselves are `jobctl db roles`'). SQLite: nothing.

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0011"
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
