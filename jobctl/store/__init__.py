"""Everything that talks SQL. `queue.py` is the hot path; the rest is plain CRUD."""

# The Alembic revision this code expects. A test checks it is the newest revision in migrations/,
# so the CLI can compare it with the database's without importing Alembic (or SQLAlchemy).
SCHEMA_REVISION = "0013"
