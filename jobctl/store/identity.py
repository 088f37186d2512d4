"""Who submitted it (`submitted_by` on jobs, schedules and workflows): what both backends share.
Each backend's triggers are in jobctl.store.<backend>.identity, created by migration 0011 (a
change needs a migration that creates them again).

On PostgreSQL the database sets the name itself, whatever the client wrote: the role of the
session (`session_user`, not `current_user`: a SECURITY DEFINER function does not change it),
and an UPDATE keeps it. On SQLite (one machine, a file its owner controls) the process that
inserts gives it: its Unix user (`unix_user`). On both, a row that belongs to another takes
that one's name, by the same derivation (`derived_job_submitter`): a schedule's occurrence (job or
workflow) the schedule's, a workflow's task the workflow's, a hook the job whose end started it.
Rows from before migration 0011 hold NULL (shown as "-", JSON null).
"""

from __future__ import annotations

import functools
import os
import pwd


@functools.cache
def unix_user() -> str:
    """The name of this process's effective user (its uid when it has no passwd entry)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# The name a new job takes from the row it belongs to, as an SQL expression over NEW (NULL when
# it belongs to none, or that row holds NULL): the schedule's for an occurrence, else the
# workflow's for a task, else the job's for a hook. `workflow` and `hook`: the conditions under
# which a workflow (alias w) and hook_of are trusted (PostgreSQL: a workflow inserted in this
# transaction, a hook the hook trigger inserts); a job they do not hold for gets `otherwise`.
def derived_job_submitter(workflow: str = "TRUE", hook: str = "TRUE",
                          otherwise: str = "NULL") -> str:
    return f"""CASE
        WHEN NEW.schedule_id IS NOT NULL
            THEN (SELECT s.submitted_by FROM schedules s WHERE s.id = NEW.schedule_id)
        WHEN NEW.workflow_id IS NOT NULL
            THEN coalesce((SELECT w.submitted_by FROM workflows w
                           WHERE w.id = NEW.workflow_id AND {workflow}), {otherwise})
        WHEN NEW.hook_of IS NOT NULL AND {hook}
            THEN (SELECT p.submitted_by FROM jobs p WHERE p.id = NEW.hook_of)
        ELSE {otherwise}
        END"""


# Whether a new job belongs to another row (derived_job_submitter applies).
BELONGS = "NEW.schedule_id IS NOT NULL OR NEW.workflow_id IS NOT NULL OR NEW.hook_of IS NOT NULL"

# A workflow started by a schedule: the schedule's name.
DERIVED_WORKFLOW_SUBMITTER = (
    "(SELECT s.submitted_by FROM schedules s WHERE s.id = NEW.schedule_id)")
