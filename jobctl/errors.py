"""Errors a user can cause or meet, each with its documented exit code.

Only `jobctl.cli.app` turns these into exit codes; everything below it raises them. An error's
message is one line meant for the user; a hint, where one helps, goes after it on the same line.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # a job or command failed for a reason that has no code of its own
    INVALID_INPUT = 2  # bad usage or input; nothing was changed
    NOT_FOUND = 3  # an id or name that does not exist
    DATABASE = 4  # database unreachable, locked past the wait bound, or its schema out of date
    PERMISSION_DENIED = 5  # the database refused: this role may not do that; nothing was changed
    CANNOT_START = 125  # the job's command could not be started (e.g. its cwd is missing)
    WAIT_TIMEOUT = 124  # a wait timed out before the job ended
    INTERRUPTED = 130  # Ctrl-C


class JobctlError(Exception):
    """Something went wrong."""

    exit_code: int = ExitCode.FAILURE

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidInput(JobctlError):
    """Invalid input.

    When it is about a field of the input (`field`: a parameter of the Python API, e.g.
    `retries`), its message is a template that names the field, and any other the message
    mentions, as `{retries}`: `message` spells them as `words` says (by default as the fields'
    own names, the Python API's), and a front end words them its own way with `worded` (the
    command line: its flags, jobctl.cli.common.cli_message). Values in the template are escaped
    with `literal`, so that a brace in them is no placeholder.
    """

    exit_code = ExitCode.INVALID_INPUT

    def __init__(self, message: str | None = None, *, field: str | None = None,
                 words: Mapping[str, str] | None = None) -> None:
        self.field = field
        self.template = message if field is not None else None
        self.words = dict(words or {})
        super().__init__(self.worded({}) if self.template is not None else message)

    def worded(self, words: Mapping[str, str]) -> str:
        """The message with each placeholder spelled as `words` says, else as this error's own
        words say, else as the field's name."""
        if self.template is None:
            return self.message
        import string  # (only when an error is worded: not on every command's start-up)

        names = {name for _, name, _, _ in string.Formatter().parse(self.template) if name}
        return self.template.format_map({name: words.get(name, self.words.get(name, name))
                                         for name in names})

    @staticmethod
    def literal(value: object) -> str:
        """`value` as text that a template shows as it is."""
        return str(value).replace("{", "{{").replace("}", "}}")


class NotFound(JobctlError):
    """Not found."""

    exit_code = ExitCode.NOT_FOUND


class PermissionDenied(JobctlError):
    """Permission denied.

    The database refused the action (PostgreSQL: SQLSTATE 42501, a missing grant, a row-level
    security policy's WITH CHECK, or a jobctl function that found the row is not this role's);
    the transaction rolled back, so nothing was changed. Its message starts "permission denied:".
    """

    exit_code = ExitCode.PERMISSION_DENIED

    def __init__(self, message: str | None = None) -> None:
        text = message or "this role may not do that"
        if text.startswith("permission denied for "):  # PostgreSQL's own: "… for table jobs"
            text = (f"this role may not do that (it has no rights on {text[22:]}; `jobctl db "
                    "grant` makes a role a member of one of jobctl's)")
        elif text.startswith("permission denied to "):  # "… to create role"
            text = f"this role may not {text[21:]}"
        super().__init__(text if text.startswith("permission denied: ") else
                         f"permission denied: {text}")


class DatabaseUnavailable(JobctlError):
    """The database cannot be reached."""

    exit_code = ExitCode.DATABASE


# SQLite only: a lock held by another process is contention, and every command waits for its turn
# (jobctl.store.direct.LockWait); this is raised only once that wait's overall bound has
# passed, with a message naming the lock. The exit code stays the database's (4).
class DatabaseLocked(DatabaseUnavailable):
    """The database stayed locked by another process for too long."""


class SchemaOutOfDate(JobctlError):
    """The database schema is out of date: run `jobctl db upgrade`."""

    exit_code = ExitCode.DATABASE


class WaitTimeout(JobctlError):
    """Timed out waiting."""

    exit_code = ExitCode.WAIT_TIMEOUT
