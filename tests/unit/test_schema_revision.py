"""The schema in code (`jobctl.store.schema`) and the schema the migrations build must agree:
the revision the CLI expects is Alembic's head, and a freshly migrated database has exactly the
tables, columns, keys and indexes that `metadata` declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from jobctl.store.engine import Database
from jobctl.store.migrate import alembic_config, head_revision
from jobctl.store.schema import SCHEMA_REVISION, metadata
from jobctl.store.url import parse


def test_schema_revision_is_alembic_head() -> None:
    assert head_revision() == SCHEMA_REVISION


def test_migrations_have_one_head() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())  # type: ignore[arg-type]
    assert len(script.get_heads()) == 1


@pytest.fixture
def migrated(db_url_empty: str) -> Iterator[sa.Engine]:
    database = Database(db_url_empty)
    before, after = database.upgrade()  # Alembic, from an empty database
    assert (before, after) == (None, SCHEMA_REVISION)
    assert database.current_revision() == SCHEMA_REVISION
    yield database.engine
    database.dispose()


def _indexes(inspector: Any, table: str) -> dict[str, tuple[tuple[str, ...], bool]]:
    found = {}
    for index in inspector.get_indexes(table):
        if index.get("duplicates_constraint"):  # PostgreSQL: the index behind a constraint
            continue
        found[index["name"]] = (tuple(index["column_names"]), bool(index["unique"]))
    return found


def _declared_indexes(table: sa.Table) -> dict[str, tuple[tuple[str, ...], bool]]:
    found = {}
    for index in table.indexes:
        columns = []
        for expression in index.expressions:
            # `priority DESC` wraps a column; the database reports the column.
            while isinstance(expression, sa.UnaryExpression):
                expression = expression.element
            columns.append(expression.name)
        found[str(index.name)] = (tuple(columns), bool(index.unique))
    return found


def test_migrated_database_matches_metadata(migrated: sa.Engine) -> None:
    inspector = sa.inspect(migrated)
    assert set(inspector.get_table_names()) == set(metadata.tables) | {"alembic_version"}
    for table in metadata.sorted_tables:
        name = table.name
        columns = {c["name"]: c for c in inspector.get_columns(name)}
        assert list(columns) == [c.name for c in table.columns], name
        for column in table.columns:
            assert columns[column.name]["nullable"] == column.nullable, (name, column.name)
        assert _indexes(inspector, name) == _declared_indexes(table), name
        primary = inspector.get_pk_constraint(name)["constrained_columns"]
        assert primary == [c.name for c in table.primary_key.columns], name
        uniques = {u["name"]: tuple(u["column_names"])
                   for u in inspector.get_unique_constraints(name)}
        declared_uniques = {str(u.name): tuple(c.name for c in u.columns)
                            for u in table.constraints if isinstance(u, sa.UniqueConstraint)}
        assert uniques == declared_uniques, name
        foreign = {(f["name"], tuple(f["constrained_columns"]), f["referred_table"],
                    tuple(f["referred_columns"]), (f.get("options") or {}).get("ondelete"))
                   for f in inspector.get_foreign_keys(name)}
        declared_foreign = {(str(f.name), tuple(f.column_keys), f.referred_table.name,
                             tuple(e.column.name for e in f.elements), f.ondelete)
                            for f in table.foreign_key_constraints}
        assert foreign == declared_foreign, name


def test_partial_indexes_are_partial(migrated: sa.Engine, db_url_empty: str) -> None:
    inspector = sa.inspect(migrated)
    dialect = parse(db_url_empty).backend  # "postgresql" or "sqlite", as the options are keyed
    for index in inspector.get_indexes("jobs"):
        declared = next(i for i in metadata.tables["jobs"].indexes if i.name == index["name"])
        where = declared.dialect_options[dialect]["where"]
        found = (index.get("dialect_options") or {}).get(f"{dialect}_where")
        assert (found is not None) == (where is not None), index["name"]


def test_alembic_sees_no_difference(migrated: sa.Engine) -> None:
    """Autogenerate, run against the fresh database, would write an empty migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with migrated.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_upgrade_keeps_jobs_from_the_first_revision(db_url_empty: str) -> None:
    """A database created at 0001 with a job in it upgrades to head with the job intact, and
    downgrades back."""
    from alembic import command

    database = Database(db_url_empty)
    try:
        with database.engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0001")  # type: ignore[arg-type]
            connection.execute(sa.text(
                "INSERT INTO jobs (state, argv, env, run_at, created_at, labels) "
                "VALUES ('queued', '[\"true\"]', '{}', '2026-01-01 00:00:00', "
                "'2026-01-01 00:00:00', '{}')"))
        assert database.current_revision() == "0001"
        database.upgrade()
        assert database.current_revision() == SCHEMA_REVISION
        with database.engine.connect() as connection:
            row = connection.execute(sa.text("SELECT state, workflow_id FROM jobs")).one()
        assert tuple(row) == ("queued", None)
        with database.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0001")  # type: ignore[arg-type]
            assert "schedules" not in sa.inspect(connection).get_table_names()
            assert connection.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 1
    finally:
        database.dispose()
