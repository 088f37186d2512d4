"""PostgreSQL: the triggers that set `submitted_by` (jobctl.store.identity says what and why),
created by migration 0011 (a change here needs a migration that creates them again).

BEFORE INSERT, the name is the database's, whatever the client wrote: the row's it belongs to
(jobctl.store.identity.derived_job_submitter), else `session_user`. A hook's `hook_of` is
trusted only for a row the hook trigger inserts (pg_trigger_depth() > 1), a task's workflow only
when this transaction inserted it: a client's own INSERT naming another's job as hook_of, or
another's workflow, gets its own name. A job or workflow naming a schedule takes the schedule's
name: that one is trusted (the scheduler that fires it runs as any role), so a role that may
INSERT into jobs directly can file a job under another's schedule, and one that may also UPDATE
another's workflow row (which makes this transaction its row version's xmin) a task under that
workflow. The roles of `jobctl db roles` close both (jobctl.store.postgres.roles): a
submitter's row must carry its own name (row-level security's WITH CHECK, checked after this
trigger), and it may not UPDATE another's workflow. BEFORE UPDATE keeps the old name.
"""

from jobctl.store.identity import BELONGS, DERIVED_WORKFLOW_SUBMITTER, derived_job_submitter

# A workflow's row written by this very transaction (its xmin is this transaction's id, as 32
# bits): workflows.start inserts the workflow and its tasks together, a `workflow run` and a
# scheduler's occurrence alike, never in a savepoint of their own (a subtransaction's xmin is
# its own id: its tasks would take session_user).
_WORKFLOW_OF_THIS_TRANSACTION = "CAST(CAST(w.xmin AS text) AS bigint) = txid_current() % 4294967296"


def _setter(function: str, name: str) -> str:
    """A trigger function that sets the new row's submitted_by to the SQL expression `name`."""
    return f"""
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.submitted_by := {name};
    RETURN NEW;
END
$$"""


JOBS_FUNCTION = _setter("jobctl_job_submitter", derived_job_submitter(
    workflow=_WORKFLOW_OF_THIS_TRANSACTION, hook="pg_trigger_depth() > 1",
    otherwise="session_user"))

WORKFLOWS_FUNCTION = _setter(
    "jobctl_workflow_submitter",
    f"""CASE WHEN NEW.schedule_id IS NOT NULL
                             THEN {DERIVED_WORKFLOW_SUBMITTER} ELSE session_user END""")

SCHEDULES_FUNCTION = _setter("jobctl_schedule_submitter", "session_user")

# Any UPDATE of any of the three tables keeps the name it was inserted with.
KEEP_FUNCTION = _setter("jobctl_keep_submitter", "OLD.submitted_by")

_TABLES = {"jobs": "jobctl_job_submitter", "workflows": "jobctl_workflow_submitter",
           "schedules": "jobctl_schedule_submitter"}

# When a new row needs the function: always for schedules and workflows (few); for jobs, only
# when its name is not already the session's or it belongs to another row. A bulk submit's COPY
# leaves the column out, so its default, session_user (DEFAULT), makes the function unneeded.
# Run for every row, it about doubled the time a COPY of 50,000 jobs took (0.88 s to 1.70 s);
# with the WHEN, 1.59 s against 1.52 s before migration 0011 (medians of 5, 2026-12-06, a loaded
# 2-core machine: within its noise).
_WHEN = {"jobs": f"WHEN (NEW.submitted_by IS DISTINCT FROM session_user OR {BELONGS}) ",
         "workflows": "", "schedules": ""}
DEFAULT = "ALTER TABLE jobs ALTER COLUMN submitted_by SET DEFAULT session_user"

CREATE = [DEFAULT, JOBS_FUNCTION, WORKFLOWS_FUNCTION, SCHEDULES_FUNCTION, KEEP_FUNCTION] + [
    statement for table, function in _TABLES.items() for statement in (
        f"CREATE TRIGGER {table}_set_submitter BEFORE INSERT ON {table} FOR EACH ROW "
        f"{_WHEN[table]}EXECUTE FUNCTION {function}()",
        # Only when an UPDATE names the column: the hot path's updates of jobs never run it.
        f"CREATE TRIGGER {table}_keep_submitter BEFORE UPDATE OF submitted_by ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION jobctl_keep_submitter()")]
DROP = [statement for table in _TABLES for statement in (
    f"DROP TRIGGER IF EXISTS {table}_keep_submitter ON {table}",
    f"DROP TRIGGER IF EXISTS {table}_set_submitter ON {table}")] + [
    f"DROP FUNCTION IF EXISTS {function}()" for function in (*_TABLES.values(),
                                                             "jobctl_keep_submitter")] + [
    "ALTER TABLE jobs ALTER COLUMN submitted_by DROP DEFAULT"]
