"""The PostgreSQL backend (psycopg 3): connections, transactions, errors, values and, per entity
(`jobctl.store.postgres.<entity>`), its SQL in psycopg's own parameter style (`%(name)s`; a
literal `%` is written `%%`). See jobctl.store.backend for the protocol it implements.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobctl.errors import DatabaseUnavailable, PermissionDenied
from jobctl.store.backend import SqlModules, TransactionKind

if TYPE_CHECKING:
    import sqlalchemy as sa

    from jobctl.store.engine import Database
    from jobctl.store.notify import Subscription
    from jobctl.store.url import Location

# Every connection: give up connecting after 5 s, and notice a server that went away within
# seconds (TCP keepalives, and tcp_user_timeout for unacknowledged writes), so a worker cut off
# from the database fences its jobs in time rather than hanging in a read.
CONNECTION_OPTIONS: dict[str, int | str] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "application_name": "jobctl",
}

# The same from the server's side, set on every session (PostgreSQL's settings for its socket to
# us): so that the server, too, notices within seconds a client that went away without a word (a
# cut network) and ends its session, whose open transaction then rolls back and frees the rows
# it locked. Left to its kernel, the server waits two hours (keepalives) or a quarter of an hour
# (retransmitting a reply); a scheduler cut off while it fired kept the schedules it had locked
# (FOR UPDATE) from every other scheduler, which skips locked rows, all that time (tests/fleet).
# Set where the connection is made, in SET_UP_SESSION: startup `options` would clobber a URL's
# own, and PgBouncer refuses them.
SERVER_SOCKET_SETTINGS = {"tcp_keepalives_idle": 5, "tcp_keepalives_interval": 2,
                          "tcp_keepalives_count": 3, "tcp_user_timeout": 10_000}

# Every new connection's first statement, one round trip (set_up_session): whether it reaches
# PostgreSQL through a connection pooler (PgBouncer, Odyssey, PgCat, RDS Proxy …): a server tells
# its client its own process id at start-up (BackendKeyData, psycopg's `info.backend_pid`), a
# pooler answers the start-up itself with an id of its own making, as no one server session is
# the client's. Only directly does it set SERVER_SOCKET_SETTINGS: behind a pooler the server's
# socket is the pooler's, and the settings would stay with a pooled session that is anyone's.
SET_UP_SESSION = (
    "SELECT pg_backend_pid() <> %(announced)s,"
    " CASE WHEN pg_backend_pid() = %(announced)s THEN concat("
    + ", ".join(f"set_config('{name}', '{value}', false)"
                for name, value in SERVER_SOCKET_SETTINGS.items())
    + ") END")

# The targets (Location.target) where this process found that LISTEN does not work (a
# transaction pooler: jobctl.store.postgres.listen). Their listen_target is None: waiters poll.
NO_LISTEN: set[str] = set()

# The advisory lock that serialises creating and migrating the schema ("jobctl").
MIGRATION_LOCK_ID = 0x6A6F6263746C

# SQLSTATE insufficient_privilege: the database refused this role (PermissionDenied, exit 5).
INSUFFICIENT_PRIVILEGE = "42501"

# The database clock. clock_timestamp(), not now(): now() stands still for a whole transaction.
NOW = "clock_timestamp()"


def now_plus(seconds_sql: str) -> str:
    """The current time plus `seconds_sql` (a parameter or a column) seconds, as SQL."""
    return f"{NOW} + make_interval(secs => {seconds_sql})"


class PostgresBackend(SqlModules):
    title = "PostgreSQL"

    # --- connections and transactions ---------------------------------------------------------

    def connect(self, location: Location) -> Any:
        import psycopg

        raw = psycopg.connect(location.target, **CONNECTION_OPTIONS)  # type: ignore[arg-type]
        self.prepare(raw, location.where)
        return raw

    def prepare(self, raw: Any, where: str) -> None:
        raw.autocommit = True  # transactions are begun explicitly (read, write), or not (turn)
        if set_up_session(raw):
            # psycopg prepares a statement on the server once a connection has run it 5
            # times. Through a transaction pooler (PgBouncer before 1.21) the next statement
            # may reach a server session that never saw the PREPARE: never, there. (Directly,
            # it saves a third of a bulk submit's time and a sixth of a worker's: README.)
            raw.prepare_threshold = None

    def exists(self, location: Location) -> bool:
        return True  # a server: whether it is there is for connecting to find out

    def begin(self, raw: Any, kind: TransactionKind, where: str) -> None:
        if kind != "turn":  # a turn's statements each commit alone: one round trip each
            raw.execute("BEGIN")

    def commit(self, raw: Any, kind: TransactionKind, where: str) -> None:
        if kind != "turn":
            raw.commit()

    def error(self, error: BaseException, where: str, *,
              connecting: bool) -> DatabaseUnavailable | PermissionDenied | None:
        """Any psycopg error while connecting: the server cannot be reached; a cut connection
        later: lost. SQLSTATE 42501 (insufficient_privilege: a missing grant, a row-level
        security policy's WITH CHECK, a jobctl function refusing; jobctl.store.postgres.roles)
        is PermissionDenied. Anything else is neither."""
        from jobctl.store.direct import first_line

        driver = getattr(error, "orig", None) or error  # under a SQLAlchemy error: psycopg's
        if getattr(driver, "sqlstate", None) == INSUFFICIENT_PRIVILEGE:
            return PermissionDenied(first_line(error))
        if connecting and type(driver).__module__.split(".")[0] == "psycopg":
            return DatabaseUnavailable(f"cannot reach {where}: {first_line(error)}")
        if getattr(error, "connection_invalidated", False) or is_disconnect(driver):
            return DatabaseUnavailable(f"lost {where}: {first_line(error)}")
        return None

    def listen_target(self, location: Location) -> str | None:
        return None if location.target in NO_LISTEN else location.target

    def listen(self, location: Location, channels: Sequence[str]) -> Subscription:
        from jobctl.store.postgres.listen import PgSubscription

        return PgSubscription(location, channels)

    def notify(self, raw: Any, channel: str, payload: str) -> None:
        raw.execute("SELECT pg_notify(%(channel)s, %(payload)s)",
                    {"channel": channel, "payload": payload})

    # --- values --------------------------------------------------------------------------------

    def time(self, value: Any) -> datetime | None:
        if value is None:
            return None
        result: datetime = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return result

    def time_param(self, value: datetime | None) -> Any:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def json(self, value: Any) -> Any:
        return value  # psycopg decodes jsonb itself

    def json_param(self, value: Any) -> Any:
        import json

        return json.dumps(value)  # text; the statement casts it: CAST(%(x)s AS jsonb)

    def ids_param(self, ids: Sequence[int | str]) -> Any:
        return list(ids)  # a bigint[]

    # --- creating and migrating the schema (SQLAlchemy and Alembic; imported for that alone) --

    def sqlalchemy_engine(self, location: Location, pool_size: int) -> sa.Engine:
        """An engine for the migrations: psycopg 3, the same servers (all of them, in order:
        SQLAlchemy's `?host=h1,h2&port=p1,p2`, which its dialect hands psycopg as libpq's
        lists) and the same connection options."""
        import sqlalchemy as sa

        keywords = dict(location.keywords)
        user, password = keywords.pop("user", None), keywords.pop("password", None)
        database = keywords.pop("dbname", None)
        if "host" in keywords or "hostaddr" in keywords or "port" in keywords:
            # One port for every host is libpq's shorthand, which SQLAlchemy refuses: spelled
            # out, one per host.
            servers = location.servers
            if "host" in keywords:
                keywords["host"] = ",".join(host for host, _ in servers)
            if "port" in keywords:
                keywords["port"] = ",".join(str(port or "") for _, port in servers)
        url = sa.URL.create("postgresql+psycopg", username=user, password=password,
                            database=database, query=keywords)
        return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size,
                                pool_pre_ping=True,
                                # No prepared statements (see prepare): the migrations' few
                                # statements need none, and they may pass a pooler.
                                connect_args={**CONNECTION_OPTIONS, "prepare_threshold": None})

    @contextlib.contextmanager
    def migration_lock(self, location: Location, database: Database) -> Iterator[None]:
        """Nothing outside the migration's transaction: `lock_schema` takes the lock inside it,
        where it holds through a transaction pooler too."""
        yield

    def lock_schema(self, connection: sa.Connection) -> None:
        """A transaction-scoped advisory lock, taken first in the transaction that creates or
        upgrades the schema and released by its commit or rollback: a session lock would stay
        with whichever server session a transaction pooler lent it, and its unlock could reach
        another."""
        import sqlalchemy as sa

        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"),
                           {"id": MIGRATION_LOCK_ID})

    # --- roles and permissions (jobctl.store.postgres.roles) ---------------------------------

    def apply_roles(self, raw: Any, *, create: bool) -> bool:
        from jobctl.store.postgres import roles

        if not create and not roles.roles_exist(raw):
            return False
        roles.apply(raw, create_roles=create)
        return True

    def set_membership(self, raw: Any, group: str, login: str, *, grant: bool) -> bool:
        from jobctl.errors import InvalidInput, NotFound
        from jobctl.store.postgres import roles

        row = raw.execute(roles.IS_ROLE, {"name": login}).fetchone()
        if row is None:
            raise NotFound(f"no role {login!r} in this cluster (create it first: "
                           f"CREATE ROLE … LOGIN)")
        if not row[0]:
            raise InvalidInput(f"{login!r} cannot log in: grant the jobctl roles to login "
                               "roles, not to group roles")
        if not roles.roles_exist(raw):
            raise NotFound("the jobctl roles do not exist yet: run `jobctl db roles` first")
        was = bool(raw.execute(roles.IS_MEMBER, {"group": group, "login": login}).fetchone())
        if was == grant:
            return False
        raw.execute(roles.membership(group, login, grant=grant))
        return True


def set_up_session(raw: Any) -> bool:
    """A new psycopg connection's SET_UP_SESSION: whether it is behind a pooler (and, when
    not, the server's socket settings set)."""
    row = raw.execute(SET_UP_SESSION, {"announced": raw.info.backend_pid}).fetchone()
    return row is None or bool(row[0])


def is_disconnect(error: BaseException | None) -> bool:
    """psycopg's error for a refused, failed or cut connection (sqlstate None, 08xxx, 57Pxx)."""
    if type(error).__module__.split(".")[0] != "psycopg":
        return False
    import psycopg

    if not isinstance(error, psycopg.OperationalError):
        return False
    sqlstate = getattr(error, "sqlstate", None)
    return sqlstate is None or str(sqlstate).startswith(("08", "57P"))


BACKEND = PostgresBackend()
