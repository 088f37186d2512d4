"""PostgreSQL: the triggers that start hooks (jobctl.store.hooks says why a trigger, and what
both backends share), created by migration 0006 (a change here needs a migration that creates
them again)."""

from jobctl.models import HOOK_BACKOFF_S, HOOK_MAX_ATTEMPTS, JobState
from jobctl.store.hooks import FAILURE, FINAL, HOOK_COLUMNS, MAY_START, applies
from jobctl.store.notify import JOBS_CHANNEL
from jobctl.store.postgres import NOW

# The function both triggers call: a job for each of NEW's hooks that its state starts, with
# the finished job in the hook's environment (its standard input, the job's `job status -o json`
# document, is the worker's to add when it starts the hook); and, for a workflow's task that
# failed or was lost, the workflow's `on_failure` once (the UPDATE … WHERE NOT on_failure_fired
# is the once: a concurrent task's transaction waits on the row, then finds it fired).
# Then a wake-up for the workers of the hooks' queue.
HOOK_FUNCTION = f"""
CREATE OR REPLACE FUNCTION jobctl_start_hooks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    started integer := 0;
    workflow_hook text;
    workflow_name text;
BEGIN
    INSERT INTO jobs ({HOOK_COLUMNS})
    SELECT h.kind || ' of ' || coalesce(NEW.name, '#' || NEW.id), NEW.queue, NEW.priority,
           '{JobState.QUEUED.value}', jsonb_build_array('/bin/sh', '-c', h.command),
           jsonb_build_object('JOBCTL_HOOK_JOB_ID', CAST(NEW.id AS text),
                              'JOBCTL_HOOK_STATE', NEW.state,
                              'JOBCTL_HOOK_EXIT_CODE', coalesce(CAST(NEW.exit_code AS text), ''),
                              'JOBCTL_HOOK_NAME', coalesce(NEW.name, '')),
           NEW.cwd, {HOOK_MAX_ATTEMPTS}, {HOOK_BACKOFF_S}, 'at_least_once', '{{}}', {NOW}, {NOW},
           NEW.run_as, NEW.id
    FROM (VALUES ('on_success', NEW.on_success, {applies("on_success")}),
                 ('on_failure', NEW.on_failure, {applies("on_failure")}),
                 ('on_end', NEW.on_end, {applies("on_end")})) AS h(kind, command, applies)
    WHERE h.command IS NOT NULL AND h.applies;
    GET DIAGNOSTICS started = ROW_COUNT;
    IF NEW.workflow_id IS NOT NULL AND NEW.state IN ({FAILURE}) THEN
        UPDATE workflows SET on_failure_fired = true
        WHERE id = NEW.workflow_id AND on_failure IS NOT NULL AND NOT on_failure_fired
        RETURNING on_failure, name INTO workflow_hook, workflow_name;
        IF FOUND THEN
            INSERT INTO jobs ({HOOK_COLUMNS})
            VALUES ('on_failure of workflow ' || workflow_name, NEW.queue, NEW.priority,
                    '{JobState.QUEUED.value}', jsonb_build_array('/bin/sh', '-c', workflow_hook),
                    jsonb_build_object('JOBCTL_HOOK_JOB_ID', CAST(NEW.id AS text),
                                       'JOBCTL_HOOK_STATE', NEW.state,
                                       'JOBCTL_HOOK_EXIT_CODE',
                                       coalesce(CAST(NEW.exit_code AS text), ''),
                                       'JOBCTL_HOOK_NAME', workflow_name,
                                       'JOBCTL_HOOK_WORKFLOW_ID', CAST(NEW.workflow_id AS text)),
                    NEW.cwd, {HOOK_MAX_ATTEMPTS}, {HOOK_BACKOFF_S}, 'at_least_once', '{{}}',
                    {NOW}, {NOW}, NEW.run_as, NEW.id);
            started := started + 1;
        END IF;
    END IF;
    IF started > 0 THEN
        PERFORM pg_notify('{JOBS_CHANNEL}', NEW.queue);
    END IF;
    RETURN NULL;
END
$$"""

# A job inserted final (a skipped occurrence, a job whose dependency had failed already), and
# a job that becomes final (from any state that is not).
INSERT_TRIGGER = f"""
CREATE TRIGGER jobs_start_hooks_on_insert AFTER INSERT ON jobs FOR EACH ROW
WHEN ({MAY_START})
EXECUTE FUNCTION jobctl_start_hooks()"""
UPDATE_TRIGGER = f"""
CREATE TRIGGER jobs_start_hooks_on_update AFTER UPDATE OF state ON jobs FOR EACH ROW
WHEN (OLD.state NOT IN ({FINAL}) AND {MAY_START})
EXECUTE FUNCTION jobctl_start_hooks()"""

CREATE = [HOOK_FUNCTION, INSERT_TRIGGER, UPDATE_TRIGGER]
DROP = ["DROP TRIGGER IF EXISTS jobs_start_hooks_on_update ON jobs",
        "DROP TRIGGER IF EXISTS jobs_start_hooks_on_insert ON jobs",
        "DROP FUNCTION IF EXISTS jobctl_start_hooks()"]
