"""SQLite: the schema revision check (jobctl.store.direct.SchemaSQL)."""

# Whether the database has a jobctl schema at all.
HAS_SCHEMA = "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'alembic_version'"
# Its Alembic revision.
REVISION = "SELECT version_num FROM alembic_version"
