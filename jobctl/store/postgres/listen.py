"""PostgreSQL: receiving notifications (jobctl.store.notify.Subscription): a connection of its
own, in autocommit, that LISTENs on some channels and waits for what they bring.

Imported only when something listens (PostgresBackend.listen), so that psycopg stays unimported
where nothing does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from jobctl.errors import DatabaseUnavailable
from jobctl.store.direct import first_line
from jobctl.store.postgres import CONNECTION_OPTIONS, SET_SERVER_SOCKET

if TYPE_CHECKING:
    import psycopg

    from jobctl.store.url import Location

# Start receiving a channel's notifications on this connection (until it closes). Differs by
# necessity: SQLite has no notifications (its waiters poll).
LISTEN = "LISTEN {channel}"


class PgSubscription:
    """A LISTENing connection. Any error of psycopg's, whether connecting or waiting, is
    DatabaseUnavailable: the owner reconnects (notify.Listener) or falls back to polling."""

    def __init__(self, location: Location, channels: Sequence[str]) -> None:
        import psycopg
        from psycopg import sql

        self._where = location.where
        try:
            self._raw: psycopg.Connection[tuple[object, ...]] = psycopg.connect(
                location.target, autocommit=True, **CONNECTION_OPTIONS)  # type: ignore[arg-type]
        except psycopg.Error as error:
            raise DatabaseUnavailable(f"cannot reach {self._where}: {first_line(error)}") from error
        try:
            self._raw.execute(SET_SERVER_SOCKET)
            for channel in channels:
                self._raw.execute(sql.SQL(LISTEN).format(channel=sql.Identifier(channel)))
        except psycopg.Error as error:
            self._raw.close()
            raise self._lost(error) from error

    def wait(self, timeout: float, stop_after: int | None = None) -> Iterator[tuple[str, str]]:
        """(channel, payload) of each notification that arrives within `timeout` seconds, until
        `stop_after` of them have (None: all that do)."""
        import psycopg

        try:
            for note in self._raw.notifies(timeout=timeout, stop_after=stop_after):
                yield note.channel, note.payload
        except psycopg.Error as error:
            raise self._lost(error) from error

    def close(self) -> None:
        self._raw.close()

    def _lost(self, error: psycopg.Error) -> DatabaseUnavailable:
        return DatabaseUnavailable(f"lost {self._where}: {first_line(error)}")
