"""SQLite: the triggers that start hooks (jobctl.store.hooks says why a trigger, and what
both backends share), created by migration 0006 (a change here needs a migration that creates
them again).

Differs by necessity from PostgreSQL's: SQLite's triggers are lists of statements, not
functions, so each trigger repeats the insert (one text, _START_HOOKS); the workflow's
`on_failure` is once because SQLite has one writer at a time (the insert reads
`on_failure_fired`, the update after it sets it, in the same transaction); no wake-up (SQLite's
workers poll).
"""

from jobctl.models import HOOK_BACKOFF_S, HOOK_MAX_ATTEMPTS, JobState
from jobctl.store.hooks import FAILURE, FINAL, HOOK_COLUMNS, MAY_START, applies
from jobctl.store.sqlite import NOW

# A job for each of NEW's hooks that its state starts, the finished job in its environment; and
# for a workflow's task that failed or was lost, the workflow's `on_failure`, once.
_START_HOOKS = f"""
    INSERT INTO jobs ({HOOK_COLUMNS})
    SELECT h.kind || ' of ' || coalesce(NEW.name, '#' || NEW.id), NEW.queue, NEW.priority,
           '{JobState.QUEUED.value}', json_array('/bin/sh', '-c', h.command),
           json_object('JOBCTL_HOOK_JOB_ID', CAST(NEW.id AS TEXT),
                       'JOBCTL_HOOK_STATE', NEW.state,
                       'JOBCTL_HOOK_EXIT_CODE', coalesce(CAST(NEW.exit_code AS TEXT), ''),
                       'JOBCTL_HOOK_NAME', coalesce(NEW.name, '')),
           NEW.cwd, {HOOK_MAX_ATTEMPTS}, {HOOK_BACKOFF_S}, 'at_least_once', '{{}}', {NOW}, {NOW},
           NEW.run_as, NEW.id
    FROM (SELECT 'on_success' AS kind, NEW.on_success AS command,
                 {applies("on_success")} AS applies
          UNION ALL SELECT 'on_failure', NEW.on_failure, {applies("on_failure")}
          UNION ALL SELECT 'on_end', NEW.on_end, {applies("on_end")}) AS h
    WHERE h.command IS NOT NULL AND h.applies;
    INSERT INTO jobs ({HOOK_COLUMNS})
    SELECT 'on_failure of workflow ' || w.name, NEW.queue, NEW.priority,
           '{JobState.QUEUED.value}', json_array('/bin/sh', '-c', w.on_failure),
           json_object('JOBCTL_HOOK_JOB_ID', CAST(NEW.id AS TEXT),
                       'JOBCTL_HOOK_STATE', NEW.state,
                       'JOBCTL_HOOK_EXIT_CODE', coalesce(CAST(NEW.exit_code AS TEXT), ''),
                       'JOBCTL_HOOK_NAME', w.name,
                       'JOBCTL_HOOK_WORKFLOW_ID', CAST(NEW.workflow_id AS TEXT)),
           NEW.cwd, {HOOK_MAX_ATTEMPTS}, {HOOK_BACKOFF_S}, 'at_least_once', '{{}}', {NOW}, {NOW},
           NEW.run_as, NEW.id
    FROM workflows w
    WHERE w.id = NEW.workflow_id AND NEW.state IN ({FAILURE}) AND w.on_failure IS NOT NULL
      AND NOT w.on_failure_fired;
    UPDATE workflows SET on_failure_fired = 1
    WHERE id = NEW.workflow_id AND NEW.state IN ({FAILURE}) AND on_failure IS NOT NULL
      AND NOT on_failure_fired;"""

# A job inserted final, and a job that becomes final (from any state that is not).
INSERT_TRIGGER = f"""
CREATE TRIGGER jobs_start_hooks_on_insert AFTER INSERT ON jobs FOR EACH ROW
WHEN {MAY_START}
BEGIN{_START_HOOKS}
END"""
UPDATE_TRIGGER = f"""
CREATE TRIGGER jobs_start_hooks_on_update AFTER UPDATE OF state ON jobs FOR EACH ROW
WHEN OLD.state NOT IN ({FINAL}) AND {MAY_START}
BEGIN{_START_HOOKS}
END"""

CREATE = [INSERT_TRIGGER, UPDATE_TRIGGER]
DROP = ["DROP TRIGGER IF EXISTS jobs_start_hooks_on_update",
        "DROP TRIGGER IF EXISTS jobs_start_hooks_on_insert"]
