"""A jobctl database URL, parsed once for every caller: which backend, what its driver connects
to, and how messages name it (never with its password).

The direct road (store.direct), the completion look-ups (store.names) and the migrations' road
(store.engine, which converts a `Location` to a SQLAlchemy URL) all take it from `parse`, so a
URL means the same database, named the same way, everywhere, and a bad one gets the same error.
Standard library only: every command parses its URL at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from jobctl.config import redact
from jobctl.errors import InvalidInput

POSTGRES_BACKENDS = ("postgresql", "postgres")
SQLITE_BACKEND = "sqlite"
_SCHEME = r"[\w+]+"  # a driver name, with an optional +driver (as SQLAlchemy's URLs have)


@dataclass(frozen=True)
class Location:
    """Where a database is: a PostgreSQL conninfo URL or an SQLite file, and how to name it in
    messages (host and port, or the file; never a password)."""

    backend: str  # "postgresql" or "sqlite": which package of jobctl.store serves it (backend.py)
    target: str  # the URL psycopg takes, or the SQLite file's path
    where: str
    # SQLite only: the URL's query (driver options such as ?timeout=5), which only SQLAlchemy's
    # dialect knows how to apply; "" when there is none.
    options: str = ""


def parse(url: str) -> Location:
    """The database a jobctl URL names: `postgresql://…` (also postgres://, and with a +driver)
    or `sqlite:///path`. Anything else is InvalidInput, its message free of the password."""
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(_SCHEME, scheme):
        raise _invalid(url)
    backend = scheme.split("+")[0]
    if backend == SQLITE_BACKEND:
        # sqlite:///relative and sqlite:////absolute: the path follows the (empty) host.
        path, _, options = rest.partition("/")[2].partition("?")
        path = unquote(path)
        if not path or path == ":memory:":
            raise InvalidInput(
                "an SQLite database URL needs a file path: sqlite:///path/to/jobctl.db")
        return Location(SQLITE_BACKEND, path, f"SQLite file {path}", options)
    if backend not in POSTGRES_BACKENDS:
        raise InvalidInput(f"unsupported database {backend!r} in {redact(url)!r}: use "
                           "postgresql:// or sqlite:///")
    target = f"postgresql://{rest}"
    try:
        parts = urlsplit(target)
        port = port_of(parts.netloc)
    except ValueError as error:
        raise _invalid(url) from error
    host = parts.hostname or "localhost (socket)"
    database = unquote(parts.path.removeprefix("/"))
    return Location("postgresql", target, f"PostgreSQL at {host}:{port or 5432}/{database}")


def port_of(netloc: str) -> int | None:
    """The port in a URL's authority part, None when it has none; ValueError when it is not a
    number (one out of range is the server's to refuse: it cannot be reached)."""
    port = netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if not port:
        return None
    if not port.isascii() or not port.isdigit():
        raise ValueError(f"port {port!r} is not a number")
    return int(port)


def _invalid(url: str) -> InvalidInput:
    return InvalidInput(f"invalid database URL {redact(url)!r}: use postgresql://user@host/db "
                        "or sqlite:///path")


def query_for_sqlalchemy(text: str) -> dict[str, str | tuple[str, ...]]:
    """A URL's query as SQLAlchemy's URLs hold it (for the migrations' engine): a key given more
    than once, a tuple."""
    from urllib.parse import parse_qsl

    query: dict[str, str | tuple[str, ...]] = {}
    for key, value in parse_qsl(text):
        held = query.get(key)
        query[key] = value if held is None else (*((held,) if isinstance(held, str) else held),
                                                 value)
    return query
