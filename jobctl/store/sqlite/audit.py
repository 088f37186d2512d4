"""SQLite: the audit trail (jobctl.store.audit says what is recorded and why): its reads, and
the triggers migration 0012 creates (a change here needs a migration that creates them again,
and so does a later migration whose batch mode rebuilds a table they are on: they go with the
old table, as 0007 says of the hooks').

Differs by necessity from PostgreSQL's: SQLite has no session role, so the name is the Unix user
of the process, which each connection jobctl opens gives its triggers as the SQL function
`jobctl_session_user()` (jobctl.store.sqlite.setup_sqlite); a connection that does not define
it (the sqlite3 shell) cannot make a change the triggers would record ("no such function"). No
rights and no SECURITY DEFINER: whoever can write the file can write (or drop) anything in it;
the triggers refuse UPDATE and DELETE of the trail, and an INSERT naming another role, to
everyone who has not dropped them.
"""

from jobctl.store.audit import (
    COLUMNS,
    JOB_ACTION,
    JOB_ACTION_COLUMNS,
    JOB_COLUMNS,
    PRUNE_ACTION,
    QUEUE_COLUMNS,
    SCHEDULE_COLUMNS,
    WORKER_STOP_WHEN,
    any_changed,
    job_when,
)
from jobctl.store.sqlite import NOW

ME = "jobctl_session_user()"
_DISTINCT = "IS NOT"
# Columns holding JSON text (embedded as JSON, not as strings).
_JSON = frozenset({"limits", "job", "workflow"})

# --- reading ------------------------------------------------------------------------------------

# The trail from :since on (NULL: all of it), oldest first (jobctl.store.audit.since).
SINCE = f"SELECT {COLUMNS} FROM audit WHERE :since IS NULL OR at >= :since ORDER BY id"

# One retention run (jobctl.store.audit.note_prune).
NOTE_PRUNE = f"""
INSERT INTO audit (at, role, action, kind, target, owner, changes)
VALUES ({NOW}, {ME}, '{PRUNE_ACTION}', 'retention', NULL, NULL, :detail)"""

# --- the table's guard --------------------------------------------------------------------------

GUARD = [
    """CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'permission denied: the audit trail cannot be changed or erased'); END""",
    """CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'permission denied: the audit trail cannot be changed or erased'); END""",
    f"""CREATE TRIGGER audit_own_role BEFORE INSERT ON audit WHEN NEW.role {_DISTINCT} {ME}
BEGIN SELECT RAISE(ABORT, 'permission denied: an audit row names its own process''s user'); END""",
]

# --- what changed -------------------------------------------------------------------------------


def _value(record: str | None, column: str, instead: dict[str, str] | None = None) -> str:
    if record is None:
        return "NULL"
    expression = (instead or {}).get(column, f"{record}.{column}").format(r=record)
    return f"json({expression})" if column in _JSON else expression


def _diff(old: str | None, new: str | None, columns: tuple[str, ...],
          instead: dict[str, str] | None = None) -> str:
    """{column: [old, new]} of the named columns that differ, as JSON text (see PostgreSQL's
    jobctl_audit_diff); `old` or `new` None: the row an INSERT or DELETE does not have."""
    pairs = " UNION ALL ".join(
        f"SELECT '{column}' AS k, json_array({_value(old, column, instead)}, "
        f"{_value(new, column, instead)}) AS v "
        f"WHERE {_value(old, column, instead)} IS NOT {_value(new, column, instead)}"
        for column in columns)
    return f"(SELECT json_group_object(k, json(v)) FROM ({pairs}))"


def _insert(action: str, kind: str, target: str, owner: str, changes: str) -> str:
    return f"""INSERT INTO audit (at, role, action, kind, target, owner, changes)
    VALUES ({NOW}, {ME}, {action}, '{kind}', {target}, {owner}, {changes});"""


# --- jobs: another's job changed by a user ------------------------------------------------------

JOB_TRIGGER = f"""
CREATE TRIGGER jobs_audit AFTER UPDATE OF {', '.join(JOB_ACTION_COLUMNS)} ON jobs FOR EACH ROW
WHEN {job_when(ME, _DISTINCT)}
BEGIN
    {_insert(JOB_ACTION, "job", "CAST(NEW.id AS TEXT)", "OLD.submitted_by",
             _diff("OLD", "NEW", JOB_COLUMNS))}
END"""

# --- queues -------------------------------------------------------------------------------------

QUEUE_TRIGGERS = [
    f"""CREATE TRIGGER queues_audit_insert AFTER INSERT ON queues FOR EACH ROW
BEGIN
    {_insert("CASE WHEN NEW.paused THEN 'queue.pause' ELSE 'queue.set' END", "queue",
             "NEW.name", "NULL", _diff(None, "NEW", QUEUE_COLUMNS))}
END""",
    f"""CREATE TRIGGER queues_audit_delete AFTER DELETE ON queues FOR EACH ROW
BEGIN
    {_insert("'queue.remove'", "queue", "OLD.name", "NULL", _diff("OLD", None, QUEUE_COLUMNS))}
END""",
    f"""CREATE TRIGGER queues_audit_update AFTER UPDATE OF {', '.join(QUEUE_COLUMNS)} ON queues
FOR EACH ROW WHEN {any_changed(QUEUE_COLUMNS, _DISTINCT)}
BEGIN
    {_insert('''CASE WHEN OLD.paused IS NOT NEW.paused AND NEW.paused THEN 'queue.pause'
                WHEN OLD.paused IS NOT NEW.paused THEN 'queue.resume'
                ELSE 'queue.set' END''', "queue", "NEW.name", "NULL",
             _diff("OLD", "NEW", QUEUE_COLUMNS))}
END""",
]

# --- schedules ----------------------------------------------------------------------------------

# A schedule's job template without its environment (see PostgreSQL's).
_SCHEDULE_ROW = {"job": "json_remove({r}.job, '$.env')"}
_ENV_CHANGED = ("json_extract(OLD.job, '$.env') IS NOT json_extract(NEW.job, '$.env')")
_ONLY_PAUSED = " AND ".join(f"OLD.{column} IS NEW.{column}"
                            for column in SCHEDULE_COLUMNS if column != "paused")

_SCHEDULE_DIFF = _diff("OLD", "NEW", SCHEDULE_COLUMNS, _SCHEDULE_ROW)
# What an update changed; that the template's environment did, without its values.
_SCHEDULE_CHANGES = f"""CASE WHEN {_ENV_CHANGED}
                 THEN json_set({_SCHEDULE_DIFF}, '$."job.env"', 'changed')
                 ELSE {_SCHEDULE_DIFF} END"""

SCHEDULE_TRIGGERS = [
    f"""CREATE TRIGGER schedules_audit_insert AFTER INSERT ON schedules FOR EACH ROW
BEGIN
    {_insert("'schedule.add'", "schedule", "NEW.name", "NEW.submitted_by",
             _diff(None, "NEW", SCHEDULE_COLUMNS, _SCHEDULE_ROW))}
END""",
    f"""CREATE TRIGGER schedules_audit_delete AFTER DELETE ON schedules FOR EACH ROW
BEGIN
    {_insert("'schedule.remove'", "schedule", "OLD.name", "OLD.submitted_by",
             _diff("OLD", None, SCHEDULE_COLUMNS, _SCHEDULE_ROW))}
END""",
    f"""CREATE TRIGGER schedules_audit_update AFTER UPDATE OF {', '.join(SCHEDULE_COLUMNS)}
ON schedules FOR EACH ROW WHEN {any_changed(SCHEDULE_COLUMNS, _DISTINCT)}
BEGIN
    {_insert(f'''CASE WHEN {_ONLY_PAUSED} AND NEW.paused THEN 'schedule.pause'
                WHEN {_ONLY_PAUSED} THEN 'schedule.resume'
                ELSE 'schedule.edit' END''', "schedule", "NEW.name", "OLD.submitted_by",
             _SCHEDULE_CHANGES)}
END""",
]

# --- workers: asked to stop ---------------------------------------------------------------------

WORKER_TRIGGER = f"""
CREATE TRIGGER workers_audit AFTER UPDATE OF state ON workers FOR EACH ROW
WHEN {WORKER_STOP_WHEN}
BEGIN
    {_insert("'worker.stop'", "worker", "CAST(NEW.id AS TEXT)", "NULL",
             "json_object('state', json_array(OLD.state, NEW.state), "
             "'worker', NEW.name || '@' || NEW.hostname)")}
END"""

CREATE = [*GUARD, JOB_TRIGGER, *QUEUE_TRIGGERS, *SCHEDULE_TRIGGERS, WORKER_TRIGGER]
DROP = [f"DROP TRIGGER IF EXISTS {name}" for name in (
    "jobs_audit", "queues_audit_insert", "queues_audit_delete", "queues_audit_update",
    "schedules_audit_insert", "schedules_audit_delete", "schedules_audit_update",
    "workers_audit", "audit_append_only_update", "audit_append_only_delete", "audit_own_role")]
