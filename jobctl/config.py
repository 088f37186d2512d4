"""Settings: a flag beats a JOBCTL_* variable, which beats the config file, which beats the default.

The config file is TOML at `$XDG_CONFIG_HOME/jobctl/config.toml` (default `~/.config/jobctl/`):

    database_url = "postgresql://jobctl@db.internal/jobctl"

With nothing configured, jobctl uses an SQLite file at `$XDG_DATA_HOME/jobctl/jobctl.db`
(default `~/.local/share/jobctl/jobctl.db`), created and migrated on first use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jobctl.errors import InvalidInput

DATABASE_URL_VARIABLE = "JOBCTL_DATABASE_URL"


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "jobctl"


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "jobctl"


def config_file() -> Path:
    return config_home() / "config.toml"


def default_database_url() -> str:
    return f"sqlite:///{data_home() / 'jobctl.db'}"


def load_config_file(path: Path | None = None) -> dict[str, Any]:
    """The config file's settings, or {} when there is none."""
    path = path or config_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise InvalidInput(f"cannot read config file {path}: {error.strerror}") from error
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InvalidInput(f"invalid config file {path}: {error}") from error


def resolve_database_url(flag: str | None = None) -> str:
    """The database to use: `--database-url`, then JOBCTL_DATABASE_URL, then the config file."""
    if flag:
        return flag
    from_env = os.environ.get(DATABASE_URL_VARIABLE)
    if from_env:
        return from_env
    from_file = load_config_file().get("database_url")
    if isinstance(from_file, str) and from_file:
        return from_file
    return default_database_url()
