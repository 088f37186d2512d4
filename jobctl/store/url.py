"""A jobctl database URL, parsed once for every caller: which backend, what its driver connects
to, and how messages name it (never with its password).

The direct road (store.direct), the completion look-ups (store.names) and the migrations' road
(store.engine, which converts a `Location` to a SQLAlchemy URL) all take it from `parse`, so a
URL means the same database, named the same way, everywhere, and a bad one gets the same error.
Standard library only: every command parses its URL at start-up.

PostgreSQL is reached through libpq, which reads the conninfo itself: psycopg (every command,
worker, scheduler and LISTEN connection) gets `target`, the URL as given. What else jobctl needs
of it (the servers it names, for messages and for SQLAlchemy's engine) is read here the way
libpq reads it (fe-connect.c: conninfo_uri_parse_options, conninfo_parse), and a unit test holds
the two readings equal: several servers for failover
(`postgresql://h1:5433,h2:5434/db?target_session_attrs=read-write`, `?host=h1,h2&port=p1,p2`),
bracketed IPv6 addresses, percent-escapes, and libpq's key/value form (`host=h1,h2
port=p1,p2 dbname=db`) name the same servers to every part of jobctl.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from jobctl.config import redact
from jobctl.errors import InvalidInput
from jobctl.record import record

POSTGRES_BACKENDS = ("postgresql", "postgres")
SQLITE_BACKEND = "sqlite"
_SCHEME = r"[\w+]+"  # a driver name, with an optional +driver (as SQLAlchemy's URLs have)
_KEY_VALUE = r"\s*[A-Za-z_]\w*\s*="  # how libpq's key/value form (`host=h dbname=d`) begins
_SPACE = " \t\n\v\f\r"  # C's isspace(), which libpq's key/value form is split by


@record
class Location:
    """Where a database is: a PostgreSQL conninfo (a URL, or libpq's key/value form) or an
    SQLite file, and how to name it in messages (hosts and ports, or the file; never a
    password)."""

    backend: str  # "postgresql" or "sqlite": which package of jobctl.store serves it (backend.py)
    target: str  # the conninfo psycopg takes, or the SQLite file's path
    where: str
    # SQLite only: the URL's query (driver options such as ?timeout=5), which only SQLAlchemy's
    # dialect knows how to apply; "" when there is none.
    options: str = ""
    # PostgreSQL only: libpq's keywords as libpq reads `target` (host, port, dbname, user,
    # password, target_session_attrs …), in the order given.
    keywords: tuple[tuple[str, str], ...] = ()

    @property
    def servers(self) -> list[tuple[str, int | None]]:
        """PostgreSQL: the (host, port) pairs libpq tries, in order ("": the default host, the
        local socket; None: the default port)."""
        return servers(dict(self.keywords))


def parse(url: str) -> Location:
    """The database a jobctl URL names: `postgresql://…` (also postgres://, and with a +driver),
    libpq's key/value form (`host=h1,h2 port=5432 dbname=jobctl`) or `sqlite:///path`. Anything
    else is InvalidInput, its message free of the password."""
    scheme, sep, rest = url.partition("://")
    if not sep and re.match(_KEY_VALUE, url):
        return _postgres(url, url)
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
    return _postgres(url, f"postgresql://{rest}")


def _postgres(url: str, target: str) -> Location:
    """A PostgreSQL conninfo: its keywords, and its name in messages (every server, in order)."""
    try:
        keywords = libpq_keywords(target)
        pairs = servers(keywords)
    except ValueError as error:
        raise InvalidInput(f"invalid database URL {redact(url)!r} ({error}): use "
                           "postgresql://user@host/db or sqlite:///path") from error
    names = ",".join(_server_name(host, port) for host, port in pairs)
    return Location("postgresql", target, f"PostgreSQL at {names}/{keywords.get('dbname', '')}",
                    keywords=tuple(keywords.items()))


def _server_name(host: str, port: int | None) -> str:
    if not host:
        host = "localhost (socket)"
    elif host.startswith(("/", "@")):  # a socket directory (or Linux's abstract namespace)
        host = f"{host} (socket)"
    elif ":" in host:
        host = f"[{host}]"  # IPv6, written as in a URL
    return f"{host}:{port or 5432}"


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


# --- libpq's reading of a conninfo ---------------------------------------------------------------


def libpq_keywords(conninfo: str) -> dict[str, str]:
    """The keywords libpq reads from a conninfo, a URL (postgresql://, postgres://) or key/value,
    as psycopg.conninfo.conninfo_to_dict has them; ValueError, with the reason, for one libpq
    would refuse to parse. (Which keywords exist is libpq's to say, when connecting.)"""
    for prefix in ("postgresql://", "postgres://"):
        if conninfo.startswith(prefix):
            return _uri_keywords(conninfo[len(prefix):])
    return _key_value_keywords(conninfo)


def servers(keywords: dict[str, str]) -> list[tuple[str, int | None]]:
    """The (host, port) pairs libpq tries, in order, from its `host` (else `hostaddr`) and
    `port` keywords: one port serves every host, otherwise each host has its own ("" and None:
    the default). ValueError for a port that is no number, or as many ports as fit no host
    list."""
    hosts = (keywords.get("host") or keywords.get("hostaddr") or "").split(",")
    ports: list[int | None] = []
    for text in keywords.get("port", "").split(","):
        port = text.strip()
        if port and not (port.isascii() and port.isdigit()):
            raise ValueError(f"port {port!r} is not a number")
        ports.append(int(port) if port else None)
    if len(ports) == 1:
        ports *= len(hosts)
    if len(ports) != len(hosts):
        raise ValueError(f"{len(ports)} ports for {len(hosts)} hosts")
    return list(zip(hosts, ports, strict=True))


def _uri_keywords(rest: str) -> dict[str, str]:
    """libpq's conninfo_uri_parse_options, after the scheme:
    `[user[:password]@][host][:port][,…][/dbname][?keyword=value&…]`."""
    keywords: dict[str, str] = {}
    # Credentials: up to the first "@", if it comes before any "/" (libpq looks no further).
    credentials, at, after = rest.partition("@")
    if at and "/" not in credentials:
        user, colon, password = credentials.partition(":")
        if user:
            keywords["user"] = _decode(user)
        if colon and password:
            keywords["password"] = _decode(password)
        rest = after
    hosts: list[str] = []
    ports: list[str] = []
    while True:
        if rest.startswith("["):  # an IPv6 address
            host, bracket, rest = rest[1:].partition("]")
            if not bracket:
                raise ValueError('no "]" ends the IPv6 host address')
            if not host:
                raise ValueError("an empty IPv6 host address")
            if rest[:1] not in ("", ":", "/", "?", ","):
                raise ValueError(f"{rest[0]!r} after an IPv6 host address")
        else:
            host, rest = _until(rest, ":/?,")
        port = ""
        if rest.startswith(":"):
            port, rest = _until(rest[1:], "/?,")
        hosts.append(host)
        ports.append(port)
        end, rest = rest[:1], rest[1:]
        if end != ",":
            break
    # Kept when the list says anything, even only commas (as libpq keeps them).
    for keyword, values in (("host", hosts), ("port", ports)):
        if any(values) or len(values) > 1:
            keywords[keyword] = _decode(",".join(values))
    if end == "/":
        dbname, end, rest = rest.partition("?")
        if dbname:
            keywords["dbname"] = _decode(dbname)
    if end == "?":
        while rest:  # `k=v&k=v`; one "&" may end it
            parameter, _, rest = rest.partition("&")
            key, equals, value = parameter.partition("=")
            if not equals:
                raise ValueError(f'no "=" in the query parameter {key!r}')
            if "=" in value:
                raise ValueError(f'a second "=" in the query parameter {key!r}')
            key, value = _decode(key), _decode(value)
            if key == "ssl" and value == "true":
                key, value = "sslmode", "require"
            keywords[key] = value
    return keywords


def _until(text: str, stops: str) -> tuple[str, str]:
    """`text` split before the first of the characters `stops` (all of it, and "", if none)."""
    for index, char in enumerate(text):
        if char in stops:
            return text[:index], text[index:]
    return text, ""


def _decode(text: str) -> str:
    """libpq's percent-decoding of a part of a URL (a "+" stays a plus)."""
    bad = re.search(r"%(?![0-9A-Fa-f]{2})|%00", text)
    if bad:
        raise ValueError(f"invalid percent-encoded token {text[bad.start():bad.start() + 3]!r}")
    return unquote(text, errors="strict")


def _key_value_keywords(text: str) -> dict[str, str]:
    """libpq's conninfo_parse: `keyword = value` pairs, each value bare (up to white space) or
    'quoted', with backslash escapes in both."""
    keywords: dict[str, str] = {}
    position = _skip_space(text, 0)
    while position < len(text):
        start = position
        while position < len(text) and text[position] != "=" and text[position] not in _SPACE:
            position += 1
        key = text[start:position]
        position = _skip_space(text, position)
        if position == len(text) or text[position] != "=":
            raise ValueError(f'no "=" after {key!r}')
        position = _skip_space(text, position + 1)
        quoted = text.startswith("'", position)
        position += quoted
        value: list[str] = []
        while True:
            if position == len(text):
                if quoted:
                    raise ValueError("a quoted value that does not end")
                break
            char = text[position]
            position += 1
            if quoted and char == "'":
                break
            if not quoted and char in _SPACE:
                break
            if char == "\\":
                if position == len(text):
                    continue
                char = text[position]
                position += 1
            value.append(char)
        keywords[key] = "".join(value)
        position = _skip_space(text, position)
    return keywords


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in _SPACE:
        position += 1
    return position
