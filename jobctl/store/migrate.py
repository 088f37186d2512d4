"""Alembic, driven from code: `jobctl db upgrade` and first use of an empty database."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa


def migrations_folder() -> Path:
    """migrations/ ships inside the wheel as jobctl/migrations; a source checkout has it beside."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("jobctl's migrations folder is missing from this installation")


def alembic_config(connection: sa.Connection | None = None) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_folder()))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())  # type: ignore[arg-type]
    head = script.get_current_head()
    assert head is not None
    return head


def upgrade_to_head(connection: sa.Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), "head")  # type: ignore[arg-type]
