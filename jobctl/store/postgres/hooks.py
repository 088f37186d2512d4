"""PostgreSQL: the triggers that start hooks (jobctl.models.HOOK_STATES), created by migration
0006 (a change here needs a migration that creates them again).

A hook is a job of its own, inserted by a trigger on `jobs` in the very transaction that makes
its job final, whichever statement does (a worker's turn, the rescuer, a cancel, settling
dependents, a skipped occurrence): so a final state starts its hooks exactly once, however
workers crash, and a statement that forgets them cannot exist. A hook (`hook_of` set) has no
hooks of its own: its end starts nothing. The same rules as SQLite's (jobctl.store.sqlite.hooks),
held to one contract by tests/store/test_hooks.py.
"""

from jobctl.models import (
    FAILURE_STATES,
    FINAL_STATES,
    HOOK_BACKOFF_S,
    HOOK_MAX_ATTEMPTS,
    HOOK_STATES,
    JobState,
    sql_states,
)
from jobctl.store.notify import JOBS_CHANNEL
from jobctl.store.postgres import NOW

_FINAL = sql_states(FINAL_STATES)
_FAILURE = sql_states(FAILURE_STATES)


def _applies(kind: str) -> str:
    return f"NEW.state IN ({sql_states(HOOK_STATES[kind])})"


# The columns of a hook's job; the rest take their defaults (no timeout, no limits, …).
_HOOK_COLUMNS = """name, queue, priority, state, argv, env, cwd, max_attempts, backoff_s,
    delivery, labels, run_at, created_at, run_as, hook_of"""

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
    INSERT INTO jobs ({_HOOK_COLUMNS})
    SELECT h.kind || ' of ' || coalesce(NEW.name, '#' || NEW.id), NEW.queue, NEW.priority,
           '{JobState.QUEUED.value}', jsonb_build_array('/bin/sh', '-c', h.command),
           jsonb_build_object('JOBCTL_HOOK_JOB_ID', CAST(NEW.id AS text),
                              'JOBCTL_HOOK_STATE', NEW.state,
                              'JOBCTL_HOOK_EXIT_CODE', coalesce(CAST(NEW.exit_code AS text), ''),
                              'JOBCTL_HOOK_NAME', coalesce(NEW.name, '')),
           NEW.cwd, {HOOK_MAX_ATTEMPTS}, {HOOK_BACKOFF_S}, 'at_least_once', '{{}}', {NOW}, {NOW},
           NEW.run_as, NEW.id
    FROM (VALUES ('on_success', NEW.on_success, {_applies("on_success")}),
                 ('on_failure', NEW.on_failure, {_applies("on_failure")}),
                 ('on_end', NEW.on_end, {_applies("on_end")})) AS h(kind, command, applies)
    WHERE h.command IS NOT NULL AND h.applies;
    GET DIAGNOSTICS started = ROW_COUNT;
    IF NEW.workflow_id IS NOT NULL AND NEW.state IN ({_FAILURE}) THEN
        UPDATE workflows SET on_failure_fired = true
        WHERE id = NEW.workflow_id AND on_failure IS NOT NULL AND NOT on_failure_fired
        RETURNING on_failure, name INTO workflow_hook, workflow_name;
        IF FOUND THEN
            INSERT INTO jobs ({_HOOK_COLUMNS})
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

# Whether a row may start hooks: it is final and has a hook, or is a workflow's task (whose
# failure may start the workflow's). Checked by the trigger's WHEN, in C: the hot path's updates
# of jobs without hooks never call the function.
_MAY_START = f"""NEW.state IN ({_FINAL}) AND NEW.hook_of IS NULL
    AND (NEW.on_success IS NOT NULL OR NEW.on_failure IS NOT NULL OR NEW.on_end IS NOT NULL
         OR NEW.workflow_id IS NOT NULL)"""

# A job inserted final (a skipped occurrence, a job whose dependency had failed already), and
# a job that becomes final (from any state that is not).
INSERT_TRIGGER = f"""
CREATE TRIGGER jobs_start_hooks_on_insert AFTER INSERT ON jobs FOR EACH ROW
WHEN ({_MAY_START})
EXECUTE FUNCTION jobctl_start_hooks()"""
UPDATE_TRIGGER = f"""
CREATE TRIGGER jobs_start_hooks_on_update AFTER UPDATE OF state ON jobs FOR EACH ROW
WHEN (OLD.state NOT IN ({_FINAL}) AND {_MAY_START})
EXECUTE FUNCTION jobctl_start_hooks()"""

CREATE = [HOOK_FUNCTION, INSERT_TRIGGER, UPDATE_TRIGGER]
DROP = ["DROP TRIGGER IF EXISTS jobs_start_hooks_on_update ON jobs",
        "DROP TRIGGER IF EXISTS jobs_start_hooks_on_insert ON jobs",
        "DROP FUNCTION IF EXISTS jobctl_start_hooks()"]
