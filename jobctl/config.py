"""Settings and where each one came from: a flag beats a JOBCTL_* variable, which beats the
chosen profile, which beats the config file's top level, which beats the default.

The config file is TOML at `$XDG_CONFIG_HOME/jobctl/config.toml` (default `~/.config/jobctl/`):

    database_url = "sqlite:////srv/jobctl/jobctl.db"     # used when no profile is chosen

    [profiles.prod]                                      # --profile prod, or JOBCTL_PROFILE=prod
    database_url = "postgresql://jobctl@db.internal/jobctl"
    no_color = true

With nothing configured, jobctl uses an SQLite file at `$XDG_DATA_HOME/jobctl/jobctl.db`
(default `~/.local/share/jobctl/jobctl.db`), created and migrated on first use.

Standard library only, and nothing imported that the command line does not need at start-up:
`jobctl config show` and every command's start read this module. So its records are NamedTuples,
not frozen dataclasses (which cost about 1 ms each to create at import), and its patterns are
compiled on first use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from jobctl.errors import InvalidInput

DATABASE_URL_VARIABLE = "JOBCTL_DATABASE_URL"
PROFILE_VARIABLE = "JOBCTL_PROFILE"


class SettingSpec(NamedTuple):
    """A setting the file may hold, and the flag and variable that override it."""

    name: str
    flag: str
    variable: str
    kind: type
    help: str
    in_file: bool = True  # False: flag and variable only
    default: Any = False


# The settings a config file or profile may hold. (`profile` itself is chosen by flag or
# variable only: a profile that chose a profile would be a riddle.)
SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("database_url", "--database-url", DATABASE_URL_VARIABLE, str,
                "the database: postgresql://user@host/db or sqlite:///path"),
    SettingSpec("no_color", "--no-color", "JOBCTL_NO_COLOR", bool, "no colours in tables"),
    # Not from the file: tracebacks are for one run of a command, and `--debug` must work
    # before the file is read (an invalid file is itself an error worth a traceback).
    SettingSpec("debug", "--debug", "JOBCTL_DEBUG", bool, "show tracebacks for errors",
                in_file=False),
    # `scheduler run --retention`: how long finished jobs are kept (e.g. "30d"); unset: forever.
    SettingSpec("retention", "--retention", "JOBCTL_RETENTION", str,
                "schedulers delete finished jobs older than this (e.g. 30d); unset keeps all",
                default=None),
    # Default hooks of `job submit` and `schedule add` (a /bin/sh -c command; see
    # jobctl.models.HOOK_STATES); the flag beats them, and an empty flag means none.
    SettingSpec("on_success", "--on-success", "JOBCTL_ON_SUCCESS", str,
                "a command run (as a job) when a submitted job succeeds", default=None),
    SettingSpec("on_failure", "--on-failure", "JOBCTL_ON_FAILURE", str,
                "a command run (as a job) when a submitted job fails or is lost", default=None),
    SettingSpec("on_end", "--on-end", "JOBCTL_ON_END", str,
                "a command run (as a job) when a submitted job ends, however", default=None),
)
SETTING_NAMES = tuple(spec.name for spec in SETTINGS if spec.in_file)


class Source:
    """Where a setting's value came from, as `config show` prints it."""

    FLAG = "flag"
    ENV = "env"
    PROFILE = "profile"
    FILE = "file"
    DEFAULT = "default"


class Setting(NamedTuple):
    name: str
    value: Any
    source: str  # one of Source
    detail: str  # the flag, variable, profile or file it came from; "" for a default

    def shown_value(self) -> Any:
        """The value as it may be printed: passwords masked."""
        return mask_password(self.value) if isinstance(self.value, str) else self.value


class CommandLine(NamedTuple):
    """What the root command's options said, and whether each was given as a flag or taken
    from its JOBCTL_* variable (Click knows; `Source.DEFAULT` when neither)."""

    values: dict[str, Any]
    sources: dict[str, str]


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "jobctl"


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "jobctl"


def config_file() -> Path:
    return config_home() / "config.toml"


def default_database_url() -> str:
    return f"sqlite:///{data_home() / 'jobctl.db'}"


def load_config_file(path: Path | None = None) -> dict[str, Any]:
    """The config file's settings, or {} when there is none. Invalid TOML or an unknown
    setting is invalid input naming the file (and the line, for TOML errors)."""
    path = path or config_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise InvalidInput(f"cannot read config file {path}: {reason}") from error
    import tomllib

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib's message ends with "(at line N, column M)".
        raise InvalidInput(f"invalid config file {path}: {error}") from error
    _check_settings(document, path, where="")
    profiles = document.get("profiles", {})
    if not isinstance(profiles, dict):
        raise InvalidInput(f"invalid config file {path}: 'profiles' must be a table of tables")
    for name, profile in profiles.items():
        if not isinstance(profile, dict):
            raise InvalidInput(f"invalid config file {path}: [profiles.{name}] must be a table")
        _check_settings(profile, path, where=f"[profiles.{name}] ")
    return document


def _check_settings(table: dict[str, Any], path: Path, where: str) -> None:
    by_name = {spec.name: spec for spec in SETTINGS if spec.in_file}
    for key, value in table.items():
        if key == "profiles" and not where:
            continue
        spec = by_name.get(key)
        if spec is None:
            known = ", ".join(SETTING_NAMES)
            raise InvalidInput(f"unknown setting {where}{key!r} in config file {path} "
                               f"(known: {known})")
        if not isinstance(value, spec.kind):
            raise InvalidInput(f"invalid config file {path}: {where}{key} must be a "
                               f"{'string' if spec.kind is str else 'boolean'}")


def resolve(command_line: CommandLine | None = None,
            warnings: list[str] | None = None) -> dict[str, Setting]:
    """Every effective setting, by name, with where it came from; `profile` first. Given
    `warnings`, password_warnings' lines are added to it (the config file read once)."""
    command_line = command_line or CommandLine({}, {})
    path = config_file()
    document = load_config_file(path)
    if warnings is not None:
        warnings += password_warnings(command_line, document, path)
    profile = _chosen_profile(command_line, document, path)
    settings = {"profile": profile}
    chosen = document.get("profiles", {}).get(profile.value, {}) if profile.value else {}
    for spec in SETTINGS:
        settings[spec.name] = _resolve_one(spec, command_line, chosen, profile.value, document,
                                           path)
    return settings


def _chosen_profile(command_line: CommandLine, document: dict[str, Any], path: Path) -> Setting:
    name = command_line.values.get("profile")
    source = command_line.sources.get("profile", Source.DEFAULT)
    if not name:
        return Setting("profile", None, Source.DEFAULT, "")
    profiles = document.get("profiles", {})
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise InvalidInput(f"no profile {name!r} in config file {path} (profiles: {known})")
    detail = "--profile" if source == Source.FLAG else PROFILE_VARIABLE
    return Setting("profile", name, source, detail)


def _resolve_one(spec: SettingSpec, command_line: CommandLine, profile: dict[str, Any],
                 profile_name: str | None, document: dict[str, Any], path: Path) -> Setting:
    source = command_line.sources.get(spec.name, Source.DEFAULT)
    value = command_line.values.get(spec.name)
    # A boolean flag left at its default is indistinguishable from `false`; only `true` counts.
    if source == Source.FLAG and value not in (None, "", False):
        return Setting(spec.name, value, Source.FLAG, spec.flag)
    if source == Source.ENV and value not in (None, ""):
        return Setting(spec.name, value, Source.ENV, spec.variable)
    if spec.in_file and spec.name in profile:
        return Setting(spec.name, profile[spec.name], Source.PROFILE,
                       f"[profiles.{profile_name}] in {path}")
    if spec.in_file and spec.name in document:
        return Setting(spec.name, document[spec.name], Source.FILE, str(path))
    default: Any = default_database_url() if spec.name == "database_url" else spec.default
    return Setting(spec.name, default, Source.DEFAULT, "")


def resolve_with_flag(command_line: CommandLine, name: str, flag: str | None) -> Setting:
    """Setting `name` of a command's own option (not the root command's): `flag` when given,
    else its JOBCTL_* variable, else the chosen profile's, else the file's, else the default."""
    [spec] = [spec for spec in SETTINGS if spec.name == name]
    values, sources = dict(command_line.values), dict(command_line.sources)
    if flag is not None:
        values[name], sources[name] = flag, Source.FLAG
    elif os.environ.get(spec.variable):
        values[name], sources[name] = os.environ[spec.variable], Source.ENV
    return resolve(CommandLine(values, sources))[name]


def resolve_database_url(flag: str | None = None) -> str:
    """The database to use: `--database-url`, then JOBCTL_DATABASE_URL, then the config file
    (JOBCTL_PROFILE's profile, then its top level), then the SQLite default."""
    if flag:
        return flag
    values: dict[str, Any] = {"database_url": os.environ.get(DATABASE_URL_VARIABLE),
                              "profile": os.environ.get(PROFILE_VARIABLE)}
    sources = {name: Source.ENV for name, value in values.items() if value}
    return str(resolve(CommandLine(values, sources))["database_url"].value)


# The password runs to the last @ of the authority part: one with an unescaped @ in it is hidden
# whole, not cut at its first @. Patterns stay strings: re compiles (and caches) them on first
# use, keeping the import cheap (as in `jobctl.timeparse`).
_URL_PASSWORD = r"(://[^/@:]*:)[^/]*@"
# As a parameter: a URL's `?password=…`, or libpq's key/value form, where the value may be
# 'quoted' and hold escaped quotes and spaces (`password = 'it\'s secret'`).
_PARAMETER_PASSWORD = r"(?i)(\bpassword\s*=\s*)(?:'(?:\\.|[^'\\])*'?|(?:\\.|[^&\s\\])*)"


def mask_password(text: str) -> str:
    """A URL (or any text holding one) with its password replaced by ***: in the user-info part
    (`postgresql://user:secret@host`) and as a `password=` parameter."""
    return re.sub(_PARAMETER_PASSWORD, r"\1***", re.sub(_URL_PASSWORD, r"\1***@", text))


# A password that is there (not empty): in the user-info part or as a `password=` parameter.
_HAS_URL_PASSWORD = r"://[^/@:]*:[^/]+@"
_HAS_PARAMETER_PASSWORD = r"(?i)\bpassword=[^&\s]"


def has_password(text: str) -> bool:
    """Whether a URL (or any text holding one) holds a password, as `mask_password` hides it."""
    return bool(re.search(_HAS_URL_PASSWORD, text) or re.search(_HAS_PARAMETER_PASSWORD, text))


def password_warnings(command_line: CommandLine, document: dict[str, Any],
                      path: Path) -> list[str]:
    """What a run's settings expose of a database password, one line each (without it):
    `--database-url` with a password (any user sees a process's arguments in `ps`), and a config
    file holding one (in any profile) that its group or others may read (as ssh warns of a key
    file). JOBCTL_DATABASE_URL, PGPASSWORD and ~/.pgpass show in no `ps`: nothing to warn of.
    `document` is the file's content at `path`, as `resolve` read it."""
    warnings = []
    url = command_line.values.get("database_url")
    if (command_line.sources.get("database_url") == Source.FLAG and isinstance(url, str)
            and has_password(url)):
        warnings.append("--database-url holds a password, which other users can see in ps; "
                        f"set {DATABASE_URL_VARIABLE} instead, or put it in the config file "
                        "(chmod 600), or the password in ~/.pgpass")
    try:
        mode = path.stat().st_mode
    except OSError:  # no file (or none to be read: its reading says so)
        return warnings
    if mode & 0o044:
        tables = [document, *document.get("profiles", {}).values()]
        if any(isinstance(table.get("database_url"), str) and has_password(
                table["database_url"]) for table in tables):
            warnings.append(f"config file {path} holds a database password and other users "
                            f"can read it; run chmod 600 {path}")
    return warnings


def redact(text: str) -> str:
    """A URL as text with its password hidden, whether or not the rest of it parses; shortened
    to fit a one-line message."""
    hidden = mask_password(text)
    return hidden if len(hidden) < 80 else hidden[:77] + "..."
