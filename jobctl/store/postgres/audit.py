"""PostgreSQL: the audit trail (jobctl.store.audit says what is recorded and why): its reads,
and the rights, functions and triggers migration 0012 creates (a change here needs a migration
that creates them again).

The trigger functions are SECURITY DEFINER, owned by whoever ran the migration (the owner of
`audit`): a role with no right on `audit` still leaves its rows, and `session_user` in them is
still the role that logged in. Their search_path is fixed when they are created (FROM CURRENT:
the migration's), so that a caller's search_path cannot put another `audit` in their way.
"""

from jobctl.store.audit import (
    COLUMNS,
    JOB_ACTION,
    JOB_COLUMNS,
    JOB_TRIGGER_COLUMNS,
    PRUNE_ACTION,
    QUEUE_COLUMNS,
    SCHEDULE_COLUMNS,
    WORKER_COLUMNS,
    WORKER_STOP_WHEN,
    any_changed,
    job_when,
)
from jobctl.store.postgres import NOW

_DISTINCT = "IS DISTINCT FROM"

# --- reading ------------------------------------------------------------------------------------

# The trail from :since on (NULL: all of it), oldest first (jobctl.store.audit.since).
SINCE = f"""
SELECT {COLUMNS} FROM audit
WHERE CAST(%(since)s AS timestamptz) IS NULL OR at >= CAST(%(since)s AS timestamptz)
ORDER BY id"""

# One retention run (jobctl.store.audit.note_prune): through the function, which any role may
# call and which writes the session's role, never the caller's word for it.
NOTE_PRUNE = "SELECT jobctl_audit_prune(CAST(%(detail)s AS jsonb))"

# --- the table's guard --------------------------------------------------------------------------

_DEFINER = "SECURITY DEFINER SET search_path FROM CURRENT"

# Nobody but the owner writes the table (SECURITY DEFINER functions write as the owner).
REVOKE = "REVOKE ALL ON audit FROM PUBLIC"

# Every new row's role and time are the database's, whatever the INSERT said (the owner's own
# INSERT included): the role cannot be forged.
STAMP_FUNCTION = f"""
CREATE OR REPLACE FUNCTION jobctl_audit_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.role := session_user;
    NEW.at := {NOW};
    RETURN NEW;
END
$$"""
STAMP_TRIGGER = ("CREATE TRIGGER audit_stamp BEFORE INSERT ON audit FOR EACH ROW "
                 "EXECUTE FUNCTION jobctl_audit_stamp()")

# UPDATE, DELETE and TRUNCATE are refused for everyone, the owner too (a statement trigger: even
# one that would touch no row). The trail is kept for ever; trimming it takes the owner disabling
# this trigger by hand (README: Security, the audit trail), outside jobctl.
REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION jobctl_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail cannot be changed or erased (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$"""
REFUSE_TRIGGERS = [
    "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit FOR EACH STATEMENT "
    "EXECUTE FUNCTION jobctl_audit_refuse()",
    "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT "
    "EXECUTE FUNCTION jobctl_audit_refuse()",
]

# --- what changed -------------------------------------------------------------------------------

# {column: [old, new]} of the named columns that differ between two rows as JSON (NULL for the
# row an INSERT or DELETE does not have).
DIFF_FUNCTION = """
CREATE OR REPLACE FUNCTION jobctl_audit_diff(old jsonb, new jsonb, columns text[])
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
SELECT coalesce(jsonb_object_agg(c, jsonb_build_array(coalesce(old -> c, 'null'),
                                                      coalesce(new -> c, 'null'))), '{}')
FROM unnest(columns) AS c
WHERE coalesce(old -> c, 'null') IS DISTINCT FROM coalesce(new -> c, 'null')
$$"""


def _row(record: str, columns: tuple[str, ...], **instead: str) -> str:
    """The named columns of OLD or NEW as one jsonb object (`instead`: another expression)."""
    pairs = ", ".join(f"'{column}', {instead.get(column, f'{record}.{column}')}"
                      for column in columns)
    return f"jsonb_build_object({pairs})"


def _array(columns: tuple[str, ...]) -> str:
    return "ARRAY[" + ", ".join(f"'{column}'" for column in columns) + "]"


def _insert(action: str, kind: str, target: str, owner: str, changes: str) -> str:
    """The audit row (role and time: the stamp trigger's)."""
    return f"""INSERT INTO audit (action, kind, target, owner, changes)
    VALUES ({action}, '{kind}', {target}, {owner}, {changes});"""


# --- jobs: another's job changed by a user ------------------------------------------------------

JOB_FUNCTION = f"""
CREATE OR REPLACE FUNCTION jobctl_audit_job() RETURNS trigger LANGUAGE plpgsql {_DEFINER} AS $$
BEGIN
    {_insert(JOB_ACTION, "job", "CAST(NEW.id AS text)", "OLD.submitted_by",
             f"jobctl_audit_diff({_row('OLD', JOB_COLUMNS)}, {_row('NEW', JOB_COLUMNS)}, "
             f"{_array(JOB_COLUMNS)})")}
    RETURN NULL;
END
$$"""
# Only an UPDATE naming one of these columns runs the WHEN, and only one that holds (see
# jobctl.store.audit.job_when) runs the function.
JOB_TRIGGER = (f"CREATE TRIGGER jobs_audit AFTER UPDATE OF {', '.join(JOB_TRIGGER_COLUMNS)} "
               f"ON jobs FOR EACH ROW WHEN ({job_when('session_user', _DISTINCT)}) "
               "EXECUTE FUNCTION jobctl_audit_job()")

# --- queues -------------------------------------------------------------------------------------

QUEUE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION jobctl_audit_queue() RETURNS trigger LANGUAGE plpgsql {_DEFINER} AS $$
DECLARE
    old_row jsonb;
    new_row jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN old_row := {_row('OLD', QUEUE_COLUMNS)}; END IF;
    IF TG_OP <> 'DELETE' THEN new_row := {_row('NEW', QUEUE_COLUMNS)}; END IF;
    {_insert('''CASE WHEN TG_OP = 'DELETE' THEN 'queue.remove'
                WHEN (old_row -> 'paused') IS DISTINCT FROM (new_row -> 'paused')
                     AND (new_row ->> 'paused')::boolean THEN 'queue.pause'
                WHEN TG_OP = 'UPDATE' AND (old_row -> 'paused') IS DISTINCT FROM
                     (new_row -> 'paused') THEN 'queue.resume'
                ELSE 'queue.set' END''', "queue",
             "CASE WHEN TG_OP = 'DELETE' THEN OLD.name ELSE NEW.name END", "NULL",
             f"jobctl_audit_diff(old_row, new_row, {_array(QUEUE_COLUMNS)})")}
    RETURN NULL;
END
$$"""
QUEUE_TRIGGERS = [
    "CREATE TRIGGER queues_audit_insert AFTER INSERT OR DELETE ON queues FOR EACH ROW "
    "EXECUTE FUNCTION jobctl_audit_queue()",
    # Not recent_starts (every claim of a rated queue) nor updated_at.
    f"CREATE TRIGGER queues_audit_update AFTER UPDATE OF {', '.join(QUEUE_COLUMNS)} ON queues "
    f"FOR EACH ROW WHEN ({any_changed(QUEUE_COLUMNS, _DISTINCT)}) "
    "EXECUTE FUNCTION jobctl_audit_queue()",
]

# --- schedules ----------------------------------------------------------------------------------

# A schedule's job template without its environment (values that may be private): that it
# changed is said by `job.env`.
_SCHEDULE_ROW = {"job": "{r}.job - 'env'"}


def _schedule_row(record: str) -> str:
    return _row(record, SCHEDULE_COLUMNS,
                **{key: value.format(r=record) for key, value in _SCHEDULE_ROW.items()})


SCHEDULE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION jobctl_audit_schedule() RETURNS trigger LANGUAGE plpgsql {_DEFINER}
AS $$
DECLARE
    old_row jsonb;
    new_row jsonb;
    changes jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN old_row := {_schedule_row('OLD')}; END IF;
    IF TG_OP <> 'DELETE' THEN new_row := {_schedule_row('NEW')}; END IF;
    changes := jobctl_audit_diff(old_row, new_row, {_array(SCHEDULE_COLUMNS)});
    IF TG_OP = 'UPDATE' AND (OLD.job -> 'env') IS DISTINCT FROM (NEW.job -> 'env') THEN
        changes := changes || '{{"job.env": "changed"}}';
    END IF;
    {_insert('''CASE WHEN TG_OP = 'INSERT' THEN 'schedule.add'
                WHEN TG_OP = 'DELETE' THEN 'schedule.remove'
                WHEN changes ? 'paused' AND changes - 'paused' = '{}'
                     THEN CASE WHEN NEW.paused THEN 'schedule.pause'
                               ELSE 'schedule.resume' END
                ELSE 'schedule.edit' END''', "schedule",
             "CASE WHEN TG_OP = 'DELETE' THEN OLD.name ELSE NEW.name END",
             "CASE WHEN TG_OP = 'INSERT' THEN NEW.submitted_by ELSE OLD.submitted_by END",
             "changes")}
    RETURN NULL;
END
$$"""
SCHEDULE_TRIGGERS = [
    "CREATE TRIGGER schedules_audit_insert AFTER INSERT OR DELETE ON schedules FOR EACH ROW "
    "EXECUTE FUNCTION jobctl_audit_schedule()",
    # Not the schedulers' bookkeeping (next/last fire time, overdue spells).
    f"CREATE TRIGGER schedules_audit_update AFTER UPDATE OF {', '.join(SCHEDULE_COLUMNS)} "
    f"ON schedules FOR EACH ROW WHEN ({any_changed(SCHEDULE_COLUMNS, _DISTINCT)}) "
    "EXECUTE FUNCTION jobctl_audit_schedule()",
]

# --- workers: asked to stop ---------------------------------------------------------------------

WORKER_FUNCTION = f"""
CREATE OR REPLACE FUNCTION jobctl_audit_worker() RETURNS trigger LANGUAGE plpgsql {_DEFINER}
AS $$
BEGIN
    {_insert("'worker.stop'", "worker", "CAST(NEW.id AS text)", "NULL",
             f"jobctl_audit_diff({_row('OLD', WORKER_COLUMNS)}, {_row('NEW', WORKER_COLUMNS)}, "
             f"{_array(WORKER_COLUMNS)}) || jsonb_build_object('worker', "
             "NEW.name || '@' || NEW.hostname)")}
    RETURN NULL;
END
$$"""
# Not heartbeats, nor a worker's own stop (running → stopped).
WORKER_TRIGGER = ("CREATE TRIGGER workers_audit AFTER UPDATE OF state ON workers FOR EACH ROW "
                  f"WHEN ({WORKER_STOP_WHEN}) EXECUTE FUNCTION jobctl_audit_worker()")

# --- retention ----------------------------------------------------------------------------------

PRUNE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION jobctl_audit_prune(detail jsonb) RETURNS void LANGUAGE sql
{_DEFINER} AS $$
{_insert(f"'{PRUNE_ACTION}'", "retention", "NULL", "NULL", "detail")}
$$"""

CREATE = [REVOKE, STAMP_FUNCTION, STAMP_TRIGGER, REFUSE_FUNCTION, *REFUSE_TRIGGERS,
          DIFF_FUNCTION, JOB_FUNCTION, JOB_TRIGGER, QUEUE_FUNCTION, *QUEUE_TRIGGERS,
          SCHEDULE_FUNCTION, *SCHEDULE_TRIGGERS, WORKER_FUNCTION, WORKER_TRIGGER, PRUNE_FUNCTION]
# Before the table itself is dropped (its own triggers go with it).
DROP = [
    "DROP TRIGGER IF EXISTS jobs_audit ON jobs",
    "DROP TRIGGER IF EXISTS queues_audit_insert ON queues",
    "DROP TRIGGER IF EXISTS queues_audit_update ON queues",
    "DROP TRIGGER IF EXISTS schedules_audit_insert ON schedules",
    "DROP TRIGGER IF EXISTS schedules_audit_update ON schedules",
    "DROP TRIGGER IF EXISTS workers_audit ON workers",
    "DROP TRIGGER IF EXISTS audit_stamp ON audit",
    "DROP TRIGGER IF EXISTS audit_append_only ON audit",
    "DROP TRIGGER IF EXISTS audit_no_truncate ON audit",
] + [f"DROP FUNCTION IF EXISTS {function}" for function in (
    "jobctl_audit_job()", "jobctl_audit_queue()", "jobctl_audit_schedule()",
    "jobctl_audit_worker()", "jobctl_audit_prune(jsonb)", "jobctl_audit_stamp()",
    "jobctl_audit_refuse()", "jobctl_audit_diff(jsonb, jsonb, text[])")]
