"""Throwaway PostgreSQL LOGIN roles for the tests that need more than the superuser.

Roles are cluster-wide, and xdist's processes share one cluster (tests/conftest.py): each test
makes its own, with a name of its own (`unique_name`), and drops them when it is done
(`drop_logins`: their sessions ended, what they own dropped with them). The tests' cluster
trusts every local connection, so a role's URL needs no password; tests that give one anyway
check that jobctl passes it on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql


def unique_name(prefix: str) -> str:
    """`prefix` and ten random hex digits: a role name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def url_as(url: str, name: str, password: str | None = None) -> str:
    """`url` (postgresql://user@host:port/db) with `name`, and `password`, as its user."""
    parts = urlsplit(url)
    user = name if password is None else f"{name}:{quote(password)}"
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc.rpartition('@')[2]}"))


def create_login(admin_url: str, name: str, *grants: str, password: str | None = None) -> str:
    """CREATE ROLE `name` LOGIN (with `password`), then each of `grants`: SQL with `{role}` where
    the role's name goes (`GRANT SELECT ON audit TO {role}`). Returns the URL that connects as
    it."""
    role = sql.Identifier(name)
    create = sql.SQL("CREATE ROLE {} LOGIN").format(role)
    if password is not None:
        create = sql.SQL("{} PASSWORD {}").format(create, sql.Literal(password))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(create)
        for grant in grants:
            conn.execute(sql.SQL(grant).format(role=role))
    return url_as(admin_url, name, password)


class LoginRole:
    """One LOGIN role of a test's own (`unique_name(prefix)`), with a password and `grants` (as
    `create_login` takes them): `name`, `url` that connects as it, and `drop()`."""

    def __init__(self, admin_url: str, prefix: str, *grants: str) -> None:
        self.admin_url = admin_url
        self.name = unique_name(prefix)
        self.url = create_login(admin_url, self.name, *grants, password=uuid.uuid4().hex)

    def drop(self) -> None:
        drop_logins(self.admin_url, [self.name])


def drop_logins(admin_url: str, names: Iterable[str]) -> None:
    """End each role's sessions, drop what it owns (its grants too), drop it."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE usename = %s", [name])
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
