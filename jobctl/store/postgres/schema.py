"""PostgreSQL: the schema revision check (jobctl.store.direct.SchemaSQL)."""

# Whether the database has a jobctl schema at all (to_regclass: NULL for a missing table).
HAS_SCHEMA = "SELECT to_regclass('alembic_version') IS NOT NULL"
# Its Alembic revision.
REVISION = "SELECT version_num FROM alembic_version"
