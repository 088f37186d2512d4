"""SQLite: the triggers that start hooks (jobctl.models.HOOK_STATES), created by migration 0006
(a change here needs a migration that creates them again).

The same rules as PostgreSQL's (jobctl.store.postgres.hooks, which says why a trigger), held to
one contract by tests/store/test_hooks.py. Differs by necessity: SQLite's triggers are lists of
statements, not functions, so each trigger repeats the insert (one text, _START_HOOKS); the
workflow's `on_failure` is once because SQLite has one writer at a time (the insert reads
`on_failure_fired`, the update after it sets it, in the same transaction); no wake-up (SQLite's
workers poll).
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
from jobctl.store.sqlite import NOW

_FINAL = sql_states(FINAL_STATES)
_FAILURE = sql_states(FAILURE_STATES)


def _applies(kind: str) -> str:
    return f"NEW.state IN ({sql_states(HOOK_STATES[kind])})"


_HOOK_COLUMNS = """name, queue, priority, state, argv, env, cwd, max_attempts, backoff_s,
    delivery, labels, run_at, created_at, run_as, hook_of"""

# A job for each of NEW's hooks that its state starts, the finished job in its environment; and
# for a workflow's task that failed or was lost, the workflow's `on_failure`, once.
_START_HOOKS = f"""
    INSERT INTO jobs ({_HOOK_COLUMNS})
    SELECT h.kind || ' of ' || coalesce(NEW.name, '#' || NEW.id), NEW.queue, NEW.priority,
           '{JobState.QUEUED.value}', json_array('/bin/sh', '-c', h.command),
           json_object('JOBCTL_HOOK_JOB_ID', CAST(NEW.id AS TEXT),
                       'JOBCTL_HOOK_STATE', NEW.state,
                       'JOBCTL_HOOK_EXIT_CODE', coalesce(CAST(NEW.exit_code AS TEXT), ''),
                       'JOBCTL_HOOK_NAME', coalesce(NEW.name, '')),
           NEW.cwd, {HOOK_MAX_ATTEMPTS}, {HOOK_BACKOFF_S}, 'at_least_once', '{{}}', {NOW}, {NOW},
           NEW.run_as, NEW.id
    FROM (SELECT 'on_success' AS kind, NEW.on_success AS command,
                 {_applies("on_success")} AS applies
          UNION ALL SELECT 'on_failure', NEW.on_failure, {_applies("on_failure")}
          UNION ALL SELECT 'on_end', NEW.on_end, {_applies("on_end")}) AS h
    WHERE h.command IS NOT NULL AND h.applies;
    INSERT INTO jobs ({_HOOK_COLUMNS})
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
    WHERE w.id = NEW.workflow_id AND NEW.state IN ({_FAILURE}) AND w.on_failure IS NOT NULL
      AND NOT w.on_failure_fired;
    UPDATE workflows SET on_failure_fired = 1
    WHERE id = NEW.workflow_id AND NEW.state IN ({_FAILURE}) AND on_failure IS NOT NULL
      AND NOT on_failure_fired;"""

# Whether a row may start hooks (as PostgreSQL's _MAY_START).
_MAY_START = f"""NEW.state IN ({_FINAL}) AND NEW.hook_of IS NULL
    AND (NEW.on_success IS NOT NULL OR NEW.on_failure IS NOT NULL OR NEW.on_end IS NOT NULL
         OR NEW.workflow_id IS NOT NULL)"""

# A job inserted final, and a job that becomes final (from any state that is not).
INSERT_TRIGGER = f"""
CREATE TRIGGER jobs_start_hooks_on_insert AFTER INSERT ON jobs FOR EACH ROW
WHEN {_MAY_START}
BEGIN{_START_HOOKS}
END"""
UPDATE_TRIGGER = f"""
CREATE TRIGGER jobs_start_hooks_on_update AFTER UPDATE OF state ON jobs FOR EACH ROW
WHEN OLD.state NOT IN ({_FINAL}) AND {_MAY_START}
BEGIN{_START_HOOKS}
END"""

CREATE = [INSERT_TRIGGER, UPDATE_TRIGGER]
DROP = ["DROP TRIGGER IF EXISTS jobs_start_hooks_on_update",
        "DROP TRIGGER IF EXISTS jobs_start_hooks_on_insert"]
