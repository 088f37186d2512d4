"""`jobctl audit`: the audit trail (jobctl.store.audit): who changed another's job, and every
queue, schedule, worker and retention action, with the role, the time and what changed.

Oldest first, the latest line last (as a log reads, and where a terminal leaves it in view).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer

from jobctl.cli.common import output_option, refuse_ids, state
from jobctl.cli.render import OutputFormat
from jobctl.errors import InvalidInput

if TYPE_CHECKING:
    from jobctl.models import AuditEntry

HEADERS = ["id", "at", "role", "action", "target", "owner", "changes"]


def audit(
    ctx: typer.Context,
    since: str | None = typer.Option(
        None, "--since", metavar="WHEN",
        help="Only what happened from then on: a duration back from now (1h, 2d, PT30M) or "
             "an instant as --at takes it (2026-11-23T18:00:00Z, 2026-11-24, 18:00, now) "
             "[default: all of it].", show_default=False),
    output: OutputFormat | None = output_option(),
) -> None:
    """The audit trail: who changed others' jobs, queues, schedules, workers, retention.

    Oldest first: each change of a job by a role other than its submitter (cancel, retry,
    hold, release, edit), each queue, schedule and worker action (pause, resume, limits, add,
    edit, remove, stop) and each retention run, with the role that did it (on PostgreSQL the
    session's role, which the database records itself; on SQLite the Unix user), the
    database's time and what changed (old → new).

    The JSON form (`-o json`) is a list of {id, at, role, action, kind, target, owner,
    changes}, times ISO 8601 UTC. Nobody can change or erase the trail (see README: Security).
    """
    refuse_ids(output, "audit")
    moment = parse_since(since)
    st = state(ctx)
    entries = st.client().audit(moment)
    terminal = st.terminal
    fmt = terminal.resolve(output)
    if fmt is OutputFormat.JSON:
        terminal.json([entry.to_json() for entry in entries])
        return
    terminal.table(HEADERS, [_row(entry, fmt) for entry in entries], fmt,
                   free={"target", "changes"})


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """--since: a duration back from now, else an instant (jobctl.timeparse); InvalidInput
    (exit 2) naming the option when it is neither."""
    if text is None:
        return None
    from jobctl.timeparse import parse_duration, parse_instant

    current = now or datetime.now(UTC)
    try:
        return current - timedelta(seconds=parse_duration(text))
    except (ValueError, OverflowError):
        pass
    try:
        return parse_instant(text, current)
    except ValueError as error:
        raise InvalidInput(f"--since: {error}; or a duration back from now, like 1h or 2d") \
            from error


def _row(entry: AuditEntry, fmt: OutputFormat) -> list[Any]:
    target = entry.kind if entry.target is None else f"{entry.kind} {entry.target}"
    return [entry.id, entry.at, entry.role, entry.action, target, entry.owner,
            _changes(entry.changes, fmt)]


def _changes(changes: Any, fmt: OutputFormat) -> str:
    """`column old→new, …` for people; the JSON itself when piped (one field, machine-read)."""
    if not fmt.for_people:
        return json.dumps(changes, sort_keys=False, separators=(",", ":"))
    parts = []
    for column, value in changes.items():
        if isinstance(value, list) and len(value) == 2:
            parts.append(f"{column} {_show(value[0])}→{_show(value[1])}")
        else:
            parts.append(f"{column}={_show(value)}")
    return ", ".join(parts)


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))
