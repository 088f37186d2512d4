"""PostgreSQL: receiving notifications (jobctl.store.notify.Subscription): a connection of its
own, in autocommit, that LISTENs on some channels and waits for what they bring.

Through a transaction pooler (PgBouncer's pool_mode = transaction) LISTEN cannot work: it takes
effect in whichever server session the pooler lent for that one statement, and an idle client
is nobody's to deliver to. So a LISTEN connection that turns out to reach PostgreSQL through a
pooler (postgres.set_up_session) first tries what it is for: a notification sent from another
connection must arrive within PROBE_TIMEOUT_S. When none does (a session pooler passes), the
subscription raises ListenUnsupported and the process remembers it (postgres.NO_LISTEN): its
waiters poll from then on. A direct connection needs no such try.

Imported only when something listens (PostgresBackend.listen), so that psycopg stays unimported
where nothing does.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from jobctl.errors import DatabaseUnavailable
from jobctl.store.direct import first_line
from jobctl.store.notify import ListenUnsupported
from jobctl.store.postgres import CONNECTION_OPTIONS, NO_LISTEN, set_up_session

if TYPE_CHECKING:
    import psycopg

    from jobctl.store.url import Location

# Start receiving a channel's notifications on this connection (until it closes). Differs by
# necessity: SQLite has no notifications (its waiters poll).
LISTEN = "LISTEN {channel}"

# The try through a pooler: its channel, and its payload a token of the subscription's own
# (other processes may be trying at the same time).
PROBE_CHANNEL = "jobctl_probe"
PROBE = "SELECT pg_notify(%(channel)s, %(token)s)"
UNLISTEN_PROBE = f"UNLISTEN {PROBE_CHANNEL}"
UNLISTEN_ALL = "UNLISTEN *"

# How long the try's notification may take. Directly or through a session pooler it takes a
# round trip; through a transaction pooler it never comes, and this is what learning so costs.
PROBE_TIMEOUT_S = 1.0


class PgSubscription:
    """A LISTENing connection. Any error of psycopg's, whether connecting or waiting, is
    DatabaseUnavailable: the owner reconnects (notify.Listener) or falls back to polling;
    ListenUnsupported (one) where LISTEN cannot work."""

    def __init__(self, location: Location, channels: Sequence[str]) -> None:
        import psycopg
        from psycopg import sql

        self._where = location.where
        self._early: list[tuple[str, str]] = []  # what came while trying (see _try)
        try:
            self._raw: psycopg.Connection[tuple[object, ...]] = psycopg.connect(
                location.target, autocommit=True, **CONNECTION_OPTIONS)  # type: ignore[arg-type]
        except psycopg.Error as error:
            raise DatabaseUnavailable(f"cannot reach {self._where}: {first_line(error)}") from error
        try:
            pooled = set_up_session(self._raw)
            for channel in [*channels, *([PROBE_CHANNEL] if pooled else [])]:
                self._raw.execute(sql.SQL(LISTEN).format(channel=sql.Identifier(channel)))
            if pooled:
                self._try(location)
        except psycopg.Error as error:
            self._raw.close()
            raise self._lost(error) from error

    def _try(self, location: Location) -> None:
        """Whether a notification sent from another connection reaches this one; else
        ListenUnsupported, with what this connection LISTENed undone as far as it can be (the
        pooler lent the LISTEN to a server session that is now anyone's)."""
        import psycopg

        token = secrets.token_hex(8)
        try:
            with psycopg.connect(location.target, autocommit=True,
                                 **CONNECTION_OPTIONS) as other:  # type: ignore[arg-type]
                other.execute(PROBE, {"channel": PROBE_CHANNEL, "token": token})
        except psycopg.Error as error:
            self._raw.close()
            raise DatabaseUnavailable(f"cannot reach {self._where}: {first_line(error)}") from error
        for note in self._raw.notifies(timeout=PROBE_TIMEOUT_S):
            if note.channel != PROBE_CHANNEL:
                self._early.append((note.channel, note.payload))
            elif note.payload == token:
                self._raw.execute(UNLISTEN_PROBE)
                return
        with contextlib.suppress(psycopg.Error):
            self._raw.execute(UNLISTEN_ALL)
        self._raw.close()
        NO_LISTEN.add(location.target)
        raise ListenUnsupported(
            f"LISTEN does not work through {self._where} (a transaction pooler?): a "
            f"notification from another connection did not arrive within {PROBE_TIMEOUT_S:g}s")

    def wait(self, timeout: float, stop_after: int | None = None) -> Iterator[tuple[str, str]]:
        """(channel, payload) of each notification that arrives within `timeout` seconds, until
        `stop_after` of them have (None: all that do)."""
        import psycopg

        while self._early and stop_after != 0:
            yield self._early.pop(0)
            stop_after = None if stop_after is None else stop_after - 1
        if stop_after == 0:
            return
        try:
            for note in self._raw.notifies(timeout=timeout, stop_after=stop_after):
                if note.channel != PROBE_CHANNEL:  # another process's try, made as ours was
                    yield note.channel, note.payload
        except psycopg.Error as error:
            raise self._lost(error) from error

    def close(self) -> None:
        self._raw.close()

    def _lost(self, error: psycopg.Error) -> DatabaseUnavailable:
        return DatabaseUnavailable(f"lost {self._where}: {first_line(error)}")
