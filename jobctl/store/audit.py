"""The audit trail (`jobctl audit`, table `audit`): who changed another's job, and every queue,
schedule, worker and retention action, with the role, the database's time and what changed.

The rows are written by the database itself, by triggers that migration 0012 creates
(jobctl.store.<backend>.audit), never by the code that makes the change, so that every road to
the tables (the CLI, the Python API, a role's own SQL) leaves the same trace:

* a job changed by a session other than its submitter, in what only a user does: cancel
  (`cancel_requested` set), retry or re-run (a final job queued or waiting again), hold and
  release (`held`), edit (priority, queue, run_at, limits of a job not started). A worker's
  claim, renewal, completion or release, the rescuer and dependencies settling never match.
* a queue's row inserted, or its paused/max_running/rate changed (not `recent_starts`, which
  every claim of a rated queue moves on);
* a schedule added, removed, or its definition changed (not the schedulers' bookkeeping:
  next/last fire time, overdue spells);
* a worker asked to stop (running → draining; not heartbeats, not its own stop);
* retention (`db prune`, a scheduler's `--retention`): one row per run that deleted anything,
  with its counts, written by the pruning process at its end (`note_prune`) through a function
  of the database's that takes the role from the session, not from the caller.

On PostgreSQL the role is `session_user` (a SECURITY DEFINER function does not change it; the
client cannot write another: a trigger on `audit` overwrites it), the trigger functions are
SECURITY DEFINER (a role with no right on `audit` still leaves its rows), and nobody but the
table's owner may write the table; UPDATE, DELETE and TRUNCATE are refused by a trigger, the
owner's too. On SQLite (one machine, a file its owner controls) the role is the Unix user of
the process (jobctl.store.identity.unix_user, given to each connection as the SQL function
`jobctl_session_user()`), and the same triggers refuse UPDATE and DELETE; whoever can write the
file can of course drop them.

`changes` is a JSON object: for each user-facing column that changed, [old, new] (a schedule's
job template without its environment: `job.env` says only "changed").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from jobctl.models import (
    FINAL_STATES,
    NOT_STARTED_STATES,
    AuditEntry,
    WorkerState,
    sql_states,
)
from jobctl.store.direct import Conn
from jobctl.timeparse import isoformat_utc

# What each kind of row watches, in the order its `changes` are shown. Only these columns are
# compared and recorded.
JOB_COLUMNS = ("state", "cancel_requested", "held", "priority", "queue", "run_at", "limits",
               "max_attempts")
QUEUE_COLUMNS = ("paused", "max_running", "rate_count", "rate_window_s")
SCHEDULE_COLUMNS = ("name", "cron", "every_s", "timezone", "job", "workflow", "overlap",
                    "misfire", "jitter_s", "paused", "start_at", "end_at", "alert_after_s",
                    "on_overdue")
WORKER_COLUMNS = ("state",)
# The columns above that hold times (normalised to ISO 8601 UTC when read: each backend writes
# its own text for them) and those that hold booleans (SQLite's 0 and 1 become false and true).
TIME_COLUMNS = frozenset({"run_at", "start_at", "end_at"})
BOOLEAN_COLUMNS = frozenset({"cancel_requested", "held", "paused"})

# The action a retention run records (note_prune).
PRUNE_ACTION = "retention.prune"

_FINAL = sql_states(FINAL_STATES)
_NOT_STARTED = sql_states(NOT_STARTED_STATES)


def job_when(me: str, distinct: str) -> str:
    """When a change of a job is a user's action on another's job, as the WHEN of its trigger:
    `me` is the backend's SQL for the session's name, `distinct` its "IS DISTINCT FROM". The
    cheap tests come first; the hot path's updates (a claim: queued → running; a completion,
    a retry after a failure, the rescuer, a release: running → anything; dependencies settling:
    waiting → queued, cancelled or failed) fail each of them without touching `me`."""
    edited = " OR ".join(f"OLD.{column} {distinct} NEW.{column}"
                          for column in ("held", "priority", "queue", "run_at", "limits"))
    return f"""((NEW.cancel_requested AND NOT OLD.cancel_requested)
     OR (OLD.state IN ({_FINAL}) AND NEW.state IN ({_NOT_STARTED}))
     OR (OLD.state = NEW.state AND OLD.state IN ({_NOT_STARTED}) AND ({edited})))
    AND OLD.submitted_by {distinct} {me}"""


# Which job action a change is (the WHEN above holds).
JOB_ACTION = f"""CASE WHEN NEW.cancel_requested AND NOT OLD.cancel_requested THEN 'job.cancel'
         WHEN OLD.state IN ({_FINAL}) THEN 'job.retry'
         WHEN NEW.held AND NOT OLD.held THEN 'job.hold'
         WHEN OLD.held AND NOT NEW.held THEN 'job.release'
         ELSE 'job.edit' END"""

# The columns of jobs whose UPDATE may be an action (PostgreSQL's trigger's UPDATE OF: any other
# update never runs it): every column an action changes, so that a role's own SQL (a retry by
# hand: state alone) is recorded too. The hot path's updates name `state` (and a completion
# `run_at`), so the trigger's WHEN is evaluated for them: measured, no difference
# (bench/audit.py).
JOB_TRIGGER_COLUMNS = ("cancel_requested", "state", "held", "priority", "queue", "run_at",
                       "limits")
# SQLite's: the columns jobctl's own statements for the actions always name (cancel and retry
# set cancel_requested; an edit sets priority, queue, run_at and limits at once; hold and release
# held), none of which the hot path names, so a claim or a completion never meets the trigger.
# There the trigger is dearer (an UPDATE with a trigger loses SQLite's one-pass plan: +16% a
# turn with JOB_TRIGGER_COLUMNS), and a role's own SQL is not a threat (the file's owner can
# drop the triggers anyway).
JOB_ACTION_COLUMNS = ("cancel_requested", "held", "priority", "queue", "limits")


def any_changed(columns: tuple[str, ...], distinct: str) -> str:
    return " OR ".join(f"OLD.{column} {distinct} NEW.{column}" for column in columns)


# A worker asked to stop: the only change of a worker that is recorded.
WORKER_STOP_WHEN = (f"OLD.state = '{WorkerState.RUNNING.value}' "
                    f"AND NEW.state = '{WorkerState.DRAINING.value}'")

# --- SQL both backends share -------------------------------------------------------------------

# The columns `since` reads, in its order. Each backend's SINCE: the trail from a time on (NULL:
# all of it), oldest first: it reads like a log, the latest line last, where a terminal leaves
# it in view.
COLUMNS = "id, at, role, action, kind, target, owner, changes"


def since(conn: Conn, moment: datetime | None) -> list[AuditEntry]:
    """The trail from `moment` on (all of it for None), oldest first."""
    rows = conn.execute(conn.backend.sql_audit.SINCE,
                        {"since": conn.time_param(moment) if moment is not None else None})
    return [AuditEntry(id=int(row[0]), at=conn.time_not_null(row[1]), role=str(row[2]),
                       action=str(row[3]), kind=str(row[4]), target=row[5], owner=row[6],
                       changes=_normalised(conn.json(row[7]) or {}))
            for row in rows.fetchall()]


def note_prune(conn: Conn, detail: dict[str, Any]) -> None:
    """Record one retention run (its counts and settings) in the caller's transaction."""
    conn.execute(conn.backend.sql_audit.NOTE_PRUNE, {"detail": conn.json_param(detail)})


def _normalised(changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` as both backends show them: times as ISO 8601 UTC, booleans as booleans."""
    out: dict[str, Any] = {}
    for column, value in changes.items():
        if isinstance(value, list) and len(value) == 2:
            if column in TIME_COLUMNS:
                value = [_iso(v) for v in value]
            elif column in BOOLEAN_COLUMNS:
                value = [None if v is None else bool(v) for v in value]
        out[column] = value
    return out


def _iso(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return isoformat_utc(moment)  # a naive one (SQLite's text) is UTC


class AuditSQL(Protocol):
    """What a backend supplies for this module (jobctl.store.<backend>.audit)."""

    SINCE: str  # :since (a time or NULL) → the rows, oldest first
    NOTE_PRUNE: str  # :detail (JSON) → one retention row, the role the session's
