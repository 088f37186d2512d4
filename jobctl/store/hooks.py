"""Hooks (jobctl.models.HOOK_STATES): what both backends' triggers share (they are in
jobctl.store.postgres.hooks and jobctl.store.sqlite.hooks, created by migration 0006: a change
needs a migration that creates them again).

A hook is a job of its own, inserted by a trigger on `jobs` in the very transaction that makes
its job final, whichever statement does (a worker's turn, the rescuer, a cancel, settling
dependents, a skipped occurrence): so a final state starts its hooks exactly once, however
workers crash, and no statement that ends a job can forget them. A hook (`hook_of` set) has no
hooks of its own: its end starts nothing. Held to one contract by tests/store/test_hooks.py.
"""

from jobctl.models import FAILURE_STATES, FINAL_STATES, HOOK_STATES, sql_states

FINAL = sql_states(FINAL_STATES)
FAILURE = sql_states(FAILURE_STATES)


def applies(kind: str) -> str:
    """Whether NEW's state starts its hook `kind` (on_success, on_failure, on_end), as SQL."""
    return f"NEW.state IN ({sql_states(HOOK_STATES[kind])})"


# The columns of a hook's job; the rest take their defaults (no timeout, no limits, …).
HOOK_COLUMNS = """name, queue, priority, state, argv, env, cwd, max_attempts, backoff_s,
    delivery, labels, run_at, created_at, run_as, hook_of"""

# Whether a row may start hooks: it is final, not a hook, and has a hook or is a workflow's
# task (whose failure may start the workflow's). A trigger's WHEN: the hot path's updates of
# jobs without hooks never run the trigger's body.
MAY_START = f"""NEW.state IN ({FINAL}) AND NEW.hook_of IS NULL
    AND (NEW.on_success IS NOT NULL OR NEW.on_failure IS NOT NULL OR NEW.on_end IS NOT NULL
         OR NEW.workflow_id IS NOT NULL)"""
