"""Checks (`jobctl check`): dead-man's switches for anything outside jobctl, pinged by scripts.

A check is overdue when no successful ping came for `every_s` + `grace_s` since the last one (or
since it was added), or when a ping said it failed. Its row keeps the facts (when it was added,
its last successful and failed pings), the deadline they give (`overdue_at`, the one the
schedulers' indexed overdue pass reads: jobctl.store.overdue) and the overdue spell
(`overdue_since`). Whether it is overdue is decided by policy.overdue_state, here and there alike.

A spell begins once, whoever notices it first: the conditional MOVE (`… WHERE overdue_since IS
NULL AND overdue_at = <what was read> RETURNING id`) lets exactly one transaction in, and that
transaction inserts the hook job (`--on-overdue`) too. A successful ping ends the spell.

Written against `store.direct.Conn`; the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from jobctl import policy
from jobctl.models import Check, JobState
from jobctl.record import record
from jobctl.store import notify
from jobctl.store import submit as submit_store
from jobctl.store.direct import Conn
from jobctl.store.reads import database_now

# The columns every statement that returns checks selects, after the database's now.
CHECK_COLUMNS = ("id", "name", "every_s", "grace_s", "on_overdue", "created_at", "updated_at",
                 "last_ping_at", "last_fail_at", "overdue_at", "overdue_since")


@record
class CheckRow:
    """A check as stored (`stored_overdue_at`, `stored_spell`) and as of `now` (`check`)."""

    check: Check
    now: datetime
    stored_overdue_at: datetime
    stored_spell: datetime | None

    @property
    def state(self) -> policy.OverdueState:
        return _state(self.check, self.now, self.stored_spell)


def _state(check: Check, now: datetime, spell: datetime | None) -> policy.OverdueState:
    return policy.overdue_state(now, check.every_s + check.grace_s, check.created_at,
                                check.last_ping_at, spell)


def row(conn: Conn, values: Sequence[Any]) -> CheckRow:
    """A CheckRow from a row of (now, CHECK_COLUMNS…)."""
    now = conn.time_not_null(values[0])
    fields = dict(zip(CHECK_COLUMNS, values[1:], strict=True))
    spell = conn.time(fields["overdue_since"])
    stored = Check(
        id=int(fields["id"]), name=fields["name"], every_s=float(fields["every_s"]),
        grace_s=float(fields["grace_s"]), on_overdue=fields["on_overdue"],
        created_at=conn.time_not_null(fields["created_at"]),
        updated_at=conn.time_not_null(fields["updated_at"]),
        last_ping_at=conn.time(fields["last_ping_at"]),
        last_fail_at=conn.time(fields["last_fail_at"]),
        overdue_since=spell, overdue_at=None)
    state = _state(stored, now, spell)
    check = dataclasses.replace(stored, overdue_since=state.since, overdue_at=state.due_at)
    return CheckRow(check, now, conn.time_not_null(fields["overdue_at"]), spell)


# --- reading ------------------------------------------------------------------------------------


def get(conn: Conn, name: str, *, lock: bool = False) -> CheckRow | None:
    """The check of that name; with `lock`, its row locked until the transaction ends (on
    SQLite the write transaction holds the whole database already)."""
    sql = conn.backend.sql_checks
    found = conn.execute(sql.GET_FOR_UPDATE if lock else sql.GET, {"name": name}).fetchone()
    return row(conn, found) if found is not None else None


def list_all(conn: Conn) -> list[Check]:
    return [row(conn, values).check
            for values in conn.execute(conn.backend.sql_checks.LIST_ALL).fetchall()]


# --- changing -----------------------------------------------------------------------------------


def put(conn: Conn, name: str, every_s: float, grace_s: float, on_overdue: str | None, *,
        replace: bool) -> bool:
    """Add the check, or with `replace` redefine the one of that name (it starts afresh: no
    pings, not overdue, its clock starting now). Returns False when it exists and `replace`
    was not given (nothing changed)."""
    sql = conn.backend.sql_checks
    existing = get(conn, name, lock=True)
    if existing is not None and not replace:
        return False
    now = database_now(conn)
    params = {"name": name, "every_s": every_s, "grace_s": grace_s, "on_overdue": on_overdue,
              "now": conn.time_param(now),
              "overdue_at": conn.time_param(policy.overdue_deadline(now, every_s + grace_s))}
    conn.execute(sql.CREATE if existing is None else sql.REPLACE, params)
    notify.schedules_changed(conn, name)  # a scheduler may have to wake sooner
    return True


def delete(conn: Conn, name: str) -> bool:
    return bool(conn.execute(conn.backend.sql_checks.DELETE, {"name": name}).rowcount)


def ping(conn: Conn, name: str, *, failed: bool = False) -> CheckRow | None:
    """A ping: success moves the deadline on and ends an overdue spell; failure makes the check
    overdue at once (its hook runs, unless a spell is going on already). None: no such check."""
    sql = conn.backend.sql_checks
    found = get(conn, name, lock=True)
    if found is None:
        return None
    now, check = found.now, found.check
    if not failed:
        conn.execute(sql.PING, {
            "id": check.id, "now": conn.time_param(now),
            "overdue_at": conn.time_param(policy.overdue_deadline(
                now, check.every_s + check.grace_s))})
        return found
    conn.execute(sql.FAIL, {"id": check.id, "now": conn.time_param(now)})
    if found.stored_spell is None:
        begin_spell(conn, found, now, found.stored_overdue_at)
    return found


def move(conn: Conn, found: CheckRow, spell: datetime | None, overdue_at: datetime) -> bool:
    """Set the check's spell and deadline, conditional on both being as `found` read them;
    whether it changed (False: someone else moved it first)."""
    moved = conn.execute(conn.backend.sql_checks.MOVE, {
        "id": found.check.id, "since": conn.time_param(spell),
        "overdue_at": conn.time_param(overdue_at),
        "expected_since": conn.time_param(found.stored_spell),
        "expected_overdue_at": conn.time_param(found.stored_overdue_at),
    }).fetchone()
    return moved is not None


def begin_spell(conn: Conn, found: CheckRow, since: datetime,
                overdue_at: datetime) -> tuple[bool, int | None]:
    """Begin an overdue spell at `since` unless another transaction did first; the winner
    inserts the hook job (when the check has one), in this transaction. Returns whether this
    transaction began it, and the hook job's id."""
    if not move(conn, found, since, overdue_at):
        return False, None
    check = found.check
    if not check.on_overdue:
        return True, None
    shown = dataclasses.replace(check, overdue_since=since, overdue_at=None)
    spec = policy.overdue_hook(check.name, check.on_overdue, "default", shown.to_json())
    [job_id] = submit_store.insert_many(conn, [spec], states=[JobState.QUEUED])
    return True, job_id


class ChecksSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.checks). Statements that
    return checks select (now, CHECK_COLUMNS…)."""

    GET: str  # name → a check
    GET_FOR_UPDATE: str  # the same, its row locked where the backend locks rows
    LIST_ALL: str  # every check, by name
    CREATE: str  # name, every_s, grace_s, on_overdue, now, overdue_at
    REPLACE: str  # the same: the check of that name starts afresh
    DELETE: str  # name
    PING: str  # id, now, overdue_at: a successful ping
    FAIL: str  # id, now: a failure ping
    # id, since, overdue_at, expected_since, expected_overdue_at → RETURNING id, or no row when
    # the check's spell or deadline is no longer what was read
    MOVE: str
    # now, limit → checks not overdue whose deadline has passed, by deadline
    DUE: str
