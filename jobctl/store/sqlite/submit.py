"""SQLite: the SQL of jobctl.store.submit (see its SubmitSQL protocol)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobctl.store import identity
from jobctl.store import submit as shared

if TYPE_CHECKING:
    from jobctl.store.direct import Conn

# One job's row (store.submit.row_params).
INSERT_JOB = (f"INSERT INTO jobs ({shared.ROW_COLUMN_LIST})\n"
              f"VALUES ({', '.join(':' + column for column in shared.ROW_COLUMNS)})")

# A batch's rows (insert_rows), positional. Differs by necessity: executemany of this, where
# PostgreSQL uses COPY. {columns}: those of ROW_COLUMNS the batch sets (a column that is NULL for
# every job of the batch is left out: it gets its default, NULL; a column with another default
# is never None), as PostgreSQL's COPY_JOBS; {marks}: a ? for each.
INSERT_BATCH = "INSERT INTO jobs ({columns}) VALUES ({marks})"

# A job with a unique key: nothing inserted when another job holds the key, the new id
# otherwise (jobctl.store.submit.UNLESS_KEY_TAKEN).
INSERT_UNIQUE = f"{INSERT_JOB}\n{shared.UNLESS_KEY_TAKEN}"

# A schedule's occurrence: nothing inserted when a job of that (schedule, fire time) exists
# (another scheduler fired it), the new id otherwise (jobctl.store.submit.UNLESS_FIRED).
INSERT_OCCURRENCE = f"{INSERT_JOB}\n{shared.UNLESS_FIRED}"

# The last id inserted on this connection, and how many jobs hold ids in a range (insert_rows).
LAST_ID = "SELECT last_insert_rowid()"
COUNT_IDS = "SELECT count(*) FROM jobs WHERE id BETWEEN :first AND :last"


def submitter() -> str:
    """The Unix user of this process (jobctl.store.identity): SQLite has no session role."""
    return identity.unix_user()


def insert_rows(conn: Conn, rows: Mapping[str, Sequence[Any]]) -> list[int]:
    """executemany of INSERT_BATCH of the rows (store.submit.job_columns), bound column by
    column (store.submit.batch_columns, as PostgreSQL's COPY). The transaction holds SQLite's
    write lock (BEGIN IMMEDIATE) and `jobs` is AUTOINCREMENT, so the rows got consecutive ids
    ending at the last one inserted; the count proves it."""
    encoders = [_encoder(conn, column) for column in shared.ROW_COLUMNS]
    columns, cells = shared.batch_columns(rows, encoders, None)
    statement = INSERT_BATCH.format(columns=", ".join(columns),
                                    marks=", ".join("?" * len(columns)))
    conn.raw.executemany(statement, zip(*cells, strict=True))
    count = len(rows["state"])
    last = int(conn.scalar(LAST_ID))
    first = last - count + 1
    found = conn.scalar(COUNT_IDS, {"first": first, "last": last})
    if found != count:
        raise RuntimeError(f"inserted {count} jobs but found {found} in ids {first}..{last}")
    return list(range(first, last + 1))


def insert_occurrences(conn: Conn, rows: Sequence[dict[str, Any]]) -> list[int | None]:
    """INSERT_OCCURRENCE row by row (sqlite3's executemany returns no rows; each statement is
    a call into the library, no round trip)."""
    found: list[int | None] = []
    for row in rows:
        inserted = conn.execute(INSERT_OCCURRENCE, shared.row_params(conn, row)).fetchone()
        found.append(int(inserted[0]) if inserted is not None else None)
    return found


def _encoder(conn: Conn, column: str) -> Callable[[Any], Any] | None:
    """How a column's value is bound (as store.submit.row_params does); None: as it is."""
    if column in shared.TIME_COLUMNS:
        return conn.time_param
    if column in shared.JSON_COLUMNS:
        return conn.json_param
    return None
