"""Dead-man's switches: `schedule add --alert-after` (schedules' alert columns) and `jobctl check`
(the checks table), with the indexes the schedulers' overdue pass reads.

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Frozen copies of the types in jobctl/store/schema.py (see 0001).
TIME = sa.DateTime(timezone=True)
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

ALERT_CHECK = "overdue_since IS NULL AND alert_check_at IS NOT NULL"
SPELL = "overdue_since IS NOT NULL"
SCHEDULE_SUCCEEDED = "state = 'succeeded' AND schedule_id IS NOT NULL"
CHECK_WATCHED = "overdue_since IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("alert_after_s", sa.Float))
        batch.add_column(sa.Column("on_overdue", sa.Text))
        batch.add_column(sa.Column("alert_set_at", TIME))
        batch.add_column(sa.Column("overdue_since", TIME))
        batch.add_column(sa.Column("alert_check_at", TIME))
    op.create_index("ix_schedules_alert_check_at", "schedules", ["alert_check_at"],
                    postgresql_where=sa.text(ALERT_CHECK), sqlite_where=sa.text(ALERT_CHECK))
    op.create_index("ix_schedules_overdue_since", "schedules", ["overdue_since"],
                    postgresql_where=sa.text(SPELL), sqlite_where=sa.text(SPELL))
    op.create_index("ix_jobs_schedule_succeeded", "jobs", ["schedule_id", "finished_at"],
                    postgresql_where=sa.text(SCHEDULE_SUCCEEDED),
                    sqlite_where=sa.text(SCHEDULE_SUCCEEDED))
    op.create_table(
        "checks",
        sa.Column("id", BIGINT_PK, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("every_s", sa.Float, nullable=False),
        sa.Column("grace_s", sa.Float, nullable=False),
        sa.Column("on_overdue", sa.Text),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("last_ping_at", TIME),
        sa.Column("last_fail_at", TIME),
        sa.Column("overdue_at", TIME, nullable=False),
        sa.Column("overdue_since", TIME),
        sa.PrimaryKeyConstraint("id", name="pk_checks"),
        sa.UniqueConstraint("name", name="uq_checks_name"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_checks_overdue_at", "checks", ["overdue_at"],
                    postgresql_where=sa.text(CHECK_WATCHED), sqlite_where=sa.text(CHECK_WATCHED))


def downgrade() -> None:
    op.drop_index("ix_checks_overdue_at", table_name="checks")
    op.drop_table("checks")
    op.drop_index("ix_jobs_schedule_succeeded", table_name="jobs")
    op.drop_index("ix_schedules_overdue_since", table_name="schedules")
    op.drop_index("ix_schedules_alert_check_at", table_name="schedules")
    with op.batch_alter_table("schedules") as batch:
        for column in ("alert_check_at", "overdue_since", "alert_set_at", "on_overdue",
                       "alert_after_s"):
            batch.drop_column(column)
