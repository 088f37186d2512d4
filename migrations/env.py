"""Alembic environment: jobctl passes an open connection (see jobctl/store/migrate.py).

Run by hand too: `alembic -c migrations/alembic.ini -x url=sqlite:///path upgrade head`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from jobctl.store.schema import metadata

config = context.config


def run_with(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table there (recreate="auto")
        # and is plain ALTER TABLE on PostgreSQL.
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_with(connection)
else:
    from jobctl.store.engine import Database

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("give the database with -x url=postgresql://… or sqlite:///…")
    # jobctl's own engine for the URL: the same servers (all of a multi-host URL), options and
    # SQLite set-up as `jobctl db upgrade`.
    engine = Database(url).engine
    with engine.begin() as own_connection:
        run_with(own_connection)
