"""SQLite: the triggers that give a row the name of the row it belongs to (jobctl.store.identity
says what and why), created by migration 0011 (a change here needs a migration that creates
them again, and so does a later migration whose batch mode rebuilds `jobs` or `workflows`: the
triggers go with the old table, as 0007 says of the hooks').

Differs by necessity from PostgreSQL's: SQLite has no session role, so the process that inserts
gives its Unix user (jobctl.store.identity.unix_user) and these triggers only overwrite it, after
the insert, for an occurrence, a workflow's task or a hook (the hook trigger's insert included);
and nothing guards an UPDATE (whoever can write the file can write anything in it).
"""

from jobctl.store.identity import BELONGS, DERIVED_WORKFLOW_SUBMITTER, derived_job_submitter

JOBS_TRIGGER = f"""
CREATE TRIGGER jobs_derive_submitter AFTER INSERT ON jobs FOR EACH ROW
WHEN {BELONGS}
BEGIN
    UPDATE jobs SET submitted_by = {derived_job_submitter()} WHERE id = NEW.id;
END"""
WORKFLOWS_TRIGGER = f"""
CREATE TRIGGER workflows_derive_submitter AFTER INSERT ON workflows FOR EACH ROW
WHEN NEW.schedule_id IS NOT NULL
BEGIN
    UPDATE workflows SET submitted_by = {DERIVED_WORKFLOW_SUBMITTER} WHERE id = NEW.id;
END"""

CREATE = [JOBS_TRIGGER, WORKFLOWS_TRIGGER]
DROP = ["DROP TRIGGER IF EXISTS workflows_derive_submitter",
        "DROP TRIGGER IF EXISTS jobs_derive_submitter"]
