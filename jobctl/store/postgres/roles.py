"""PostgreSQL roles and permissions (`jobctl db roles`, `db grant`, `db revoke`): every GRANT,
row-level security POLICY and SECURITY DEFINER function in one place, named and commented.

Five NOLOGIN group roles; a login role gets a group's rights by membership (`db grant`):

- jobctl_viewer: reads jobs, workers, queues, schedules, workflows; not another's output
  (job_logs: row-level security) or environment, secret references and standard input (column
  privileges: those three columns of `jobs` are not granted, and jobctl reads them through
  the view jobctl_job_private, which runs with its owner's rights and has no row for
  another's job: `job status` shows them as hidden, `job logs` is refused).
- jobctl_submitter (includes viewer): submits (INSERT, COPY) jobs, dependencies, arrays,
  workflows and schedules whose `submitted_by` is its own (a policy's WITH CHECK, checked after
  the identity trigger set the name: a job filed under another's schedule, workflow or job
  takes that one's name and is refused); cancels, retries, holds and edits its own jobs, and
  changes its own schedules and workflows (a policy's USING: another's rows are invisible to
  its UPDATE, which jobctl reports as permission denied, jobctl.store.jobs.deny_unless_missing).
- jobctl_operator (includes submitter): all of that for every row; queues (pause, limits),
  `worker stop`, checks; and runs `scheduler run` (the scheduler fires everyone's schedules,
  inserting jobs under their submitters' names, and rescues jobs: it needs an operator's rights).
- jobctl_worker: claims, renews, completes (UPDATE jobs), writes output (INSERT job_logs) and
  attempts, registers and heartbeats (workers), counts a queue's starts (queues.recent_starts),
  reads what it runs. Nothing else: no INSERT on jobs. Hooks, which are jobs inserted when a
  job ends, are inserted by the trigger function jobctl_start_hooks, which is SECURITY DEFINER
  (owned by the schema's owner, which row-level security does not bind) since migration 0013.
- jobctl_admin (includes operator): owns the schema's tables, sequences and functions, so its
  members upgrade it (`db upgrade`) and prune it (`db prune`: DELETE is granted to no one else).

Single-user set-ups are untouched: a table's owner (and a superuser) bypasses row-level security
(ENABLE, never FORCE) and needs no grant; without `db roles` nothing here but the functions
exists. The worker's hot path (claim and complete) runs no function of this module and, for an
owner, no policy; for a jobctl_worker role, the policies on jobs are `USING (true)`.

`statements(tables, schema)` is the whole set as a pure function of the schema (its tables and
their columns), applied in one transaction by `apply` (`db roles`, and `db upgrade` when the
roles exist, so a later migration's tables get their grants). It revokes what the group roles
had on jobctl's tables and grants it anew: running it twice leaves everything as it was.
Creating the roles is cluster-wide (two databases of one cluster may run it at once): each
CREATE ROLE and membership is made only when missing, and a concurrent duplicate is caught.
A table this module does not know gets no grant at all (tests/store/test_roles.py checks that
every table of jobctl.store.schema is known here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobctl.models import GROUP_ROLES as GROUPS
from jobctl.store.postgres.deps import _settle_function_body

VIEWER, SUBMITTER, OPERATOR, WORKER, ADMIN = GROUPS

# Each group role and the one it includes (is a member of, inheriting its rights).
INCLUDES = {SUBMITTER: VIEWER, OPERATOR: SUBMITTER, ADMIN: OPERATOR}

# The columns of `jobs` that only its submitter, operators and workers read (column privileges
# withhold them from viewers and submitters; jobctl reads them through PRIVATE_JOB_READS).
PRIVATE_JOB_COLUMNS = ("env", "secret_env", "input")

# How jobctl reads a job's private fields on PostgreSQL (reads.select_job_columns): from the
# view PRIVATE_VIEW, which has no row for another's job where this session may not see them
# (NULL, then: Job.private_hidden).
PRIVATE_JOB_READS = {field: f"(SELECT p.{field} FROM jobctl_job_private p WHERE p.id = jobs.id)"
                     for field in ("env", "secret_env", "input_bytes")}

# --- functions and views (created by migration 0013; they exist with or without the roles) ---

# Whether this session may see the private fields and output of any job: a member of the
# table owner's role (the single-user owner, jobctl_admin), a superuser (pg_has_role says yes
# to one), an operator or a worker. session_user, as the identity trigger records it
# (jobctl.store.postgres.identity). A group role that does not exist (no `db roles` yet) is
# simply not found in pg_roles. Uncorrelated: PostgreSQL evaluates it once a statement.
SEES_EVERY_JOB = """(SELECT pg_has_role(session_user, c.relowner, 'USAGE')
        OR EXISTS (SELECT 1 FROM pg_roles r
                   WHERE r.rolname IN ('jobctl_operator', 'jobctl_worker')
                     AND pg_has_role(session_user, r.oid, 'USAGE'))
    FROM pg_class c WHERE c.oid = CAST('jobs' AS regclass))"""

# The private fields of the jobs this session may see: its own, or all (SEES_EVERY_JOB). A
# view runs with its owner's rights (the schema's owner, then jobctl_admin): it reads the
# columns a viewer's column privileges withhold, and shows them only where it may.
# security_barrier: a function of the reader's own in its WHERE cannot see the rows filtered
# out. (SECURITY DEFINER functions, one call a row, made `job list` of 1,000 jobs take 360 ms
# instead of 15; this view, read by a correlated subquery a field, 26 ms: measured 2026-12-06.)
PRIVATE_VIEW = f"""
CREATE OR REPLACE VIEW jobctl_job_private WITH (security_barrier) AS
SELECT j.id, j.env, j.secret_env, length(j.input) AS input_bytes FROM jobs j
WHERE j.submitted_by = session_user OR {SEES_EVERY_JOB}"""

# The states of jobs, their rows locked FOR SHARE (deps.STATES_OF: `--after` reads the states
# of the jobs a new one waits on, and they must not end before its edges are in), as the
# table's owner: row-level security would hide another's job from a submitter's own row lock
# (it applies UPDATE's policies to one), and a job may wait on anyone's. Only ids and states:
# what every role may read.
LOCK_JOB_STATES_FUNCTION = """
CREATE OR REPLACE FUNCTION jobctl_lock_job_states(ids bigint[])
RETURNS TABLE (id bigint, state text)
LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT j.id, j.state FROM jobs j WHERE j.id = ANY(ids) FOR SHARE
$$"""

# Settling the waiting dependents of jobs that ended (deps.SETTLE), as the owner: see
# deps._settle_function_body.
SETTLE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION jobctl_settle(ids bigint[])
RETURNS TABLE (id bigint, state text, queue text)
LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT AS $$
{_settle_function_body()}
$$"""

FUNCTIONS = [
    PRIVATE_VIEW,
    LOCK_JOB_STATES_FUNCTION,
    SETTLE_FUNCTION,
    # Hooks are inserted by the database when a job ends, whoever ended it (a worker, which may
    # not INSERT jobs; a submitter cancelling its own job): as the function's owner.
    "ALTER FUNCTION jobctl_start_hooks() SECURITY DEFINER SET search_path FROM CURRENT",
]
DROP_FUNCTIONS = [
    "ALTER FUNCTION jobctl_start_hooks() SECURITY INVOKER RESET search_path",
    "DROP VIEW IF EXISTS jobctl_job_private",
    "DROP FUNCTION IF EXISTS jobctl_lock_job_states(bigint[])",
    "DROP FUNCTION IF EXISTS jobctl_settle(bigint[])",
]

# The columns of `jobs` a worker writes (claim, gated claim, release, renew, complete, rescue,
# settling dependents: jobctl.store.postgres.queue, capacity, deps): not argv, env, queue,
# run_as, hooks or submitted_by, so that a worker's role cannot rewrite the command another
# job will run, or where, or as whom.
WORKER_WRITES = ("state", "attempt", "worker_id", "started_at", "finished_at", "lease_until",
                 "exit_code", "signal", "error", "in_buffer", "gated", "gpu_indices", "after_id",
                 "after_attempt", "losses", "run_at", "max_attempts")

# --- grants: table → role → privileges ("SELECT*" is SELECT on the columns not private) -------

_READ = {VIEWER: "SELECT", WORKER: "SELECT"}
TABLE_GRANTS: dict[str, dict[str, str]] = {
    "jobs": {VIEWER: "SELECT*", SUBMITTER: "INSERT, UPDATE",
             OPERATOR: "SELECT, INSERT, UPDATE",
             WORKER: f"SELECT, UPDATE ({', '.join(WORKER_WRITES)})"},
    "job_logs": {VIEWER: "SELECT", WORKER: "SELECT, INSERT"},
    "attempts": {VIEWER: "SELECT", OPERATOR: "INSERT", WORKER: "SELECT, INSERT"},
    "job_deps": {**_READ, SUBMITTER: "INSERT", OPERATOR: "INSERT, UPDATE, DELETE"},
    "arrays": {**_READ, SUBMITTER: "INSERT"},
    "workflows": {**_READ, SUBMITTER: "INSERT, UPDATE", OPERATOR: "INSERT, UPDATE, DELETE"},
    "schedules": {**_READ, SUBMITTER: "INSERT, UPDATE, DELETE"},
    "workers": {**_READ, OPERATOR: "UPDATE", WORKER: "SELECT, INSERT, UPDATE"},
    "queues": {**_READ, OPERATOR: "INSERT, UPDATE, DELETE",
               WORKER: "SELECT, UPDATE (recent_starts)"},
    "checks": {**_READ, OPERATOR: "INSERT, UPDATE, DELETE"},
    "alembic_version": dict(_READ),
    "jobctl_job_private": dict(_READ),  # the view of private fields (PRIVATE_VIEW)
    # The audit trail (migration 0012, `jobctl audit`): read by every role that reads what it
    # is about (and `db status` counts its rows); written only by its SECURITY DEFINER
    # triggers, as its owner. (Where the table does not exist yet, nothing is granted on it.)
    "audit": {VIEWER: "SELECT"},
}

# --- row-level security: table → policies (name, command, roles, USING, WITH CHECK) ------------

_OWN = "submitted_by = session_user"
_OWN_JOB = ("EXISTS (SELECT 1 FROM jobs j WHERE j.id = {table}.job_id "
            "AND j.submitted_by = session_user)")
Policy = tuple[str, str, tuple[str, ...], str | None, str | None]
POLICIES: dict[str, list[Policy]] = {
    "jobs": [
        ("jobctl_read", "SELECT", (VIEWER, WORKER), "true", None),
        # A submitter's row is its own: the identity trigger (BEFORE INSERT) has set
        # submitted_by from the session or from the row it belongs to (a schedule, workflow,
        # job); one filed under another's is refused here.
        ("jobctl_submit_own", "INSERT", (SUBMITTER,), None, _OWN),
        ("jobctl_change_own", "UPDATE", (SUBMITTER,), _OWN, _OWN),
        ("jobctl_submit_any", "INSERT", (OPERATOR,), None, "true"),
        ("jobctl_change_any", "UPDATE", (OPERATOR, WORKER), "true", "true"),
    ],
    "job_logs": [
        ("jobctl_read_own", "SELECT", (VIEWER,), _OWN_JOB.format(table="job_logs"), None),
        ("jobctl_read_any", "SELECT", (OPERATOR, WORKER), "true", None),
        ("jobctl_write", "INSERT", (WORKER,), None, "true"),
    ],
    "job_deps": [
        ("jobctl_read", "SELECT", (VIEWER, WORKER), "true", None),
        ("jobctl_own", "INSERT", (SUBMITTER,), None, _OWN_JOB.format(table="job_deps")),
        ("jobctl_any", "ALL", (OPERATOR,), "true", "true"),
    ],
    **{table: [
        ("jobctl_read", "SELECT", (VIEWER, WORKER), "true", None),
        ("jobctl_own", "ALL", (SUBMITTER,), _OWN, _OWN),
        ("jobctl_any", "ALL", (OPERATOR,), "true", "true"),
    ] for table in ("workflows", "schedules")},
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _grant(table: str, role: str, privileges: str, columns: Sequence[str]) -> str:
    if privileges == "SELECT*":
        shown = ", ".join(_quote(c) for c in columns if c not in PRIVATE_JOB_COLUMNS)
        privileges = f"SELECT ({shown})"
    return f"GRANT {privileges} ON {_quote(table)} TO {role}"


def _sequence_usage(table: str, roles: Sequence[str]) -> str:
    """USAGE on a table's id sequence for the roles that insert its rows (jobctl takes ids
    ahead of a bulk COPY: nextval)."""
    return f"""DO $$ DECLARE s text := pg_get_serial_sequence('{_quote(table)}', 'id'); BEGIN
    IF s IS NOT NULL THEN
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO {', '.join(roles)}', s);
    END IF;
END $$"""


def _policy(table: str, policy: Policy) -> list[str]:
    name, command, roles, using, check = policy
    text = f"CREATE POLICY {name} ON {_quote(table)} FOR {command} TO {', '.join(roles)}"
    if using is not None:
        text += f" USING ({using})"
    if check is not None:
        text += f" WITH CHECK ({check})"
    return [f"DROP POLICY IF EXISTS {name} ON {_quote(table)}", text]


# Creating a role, or a membership, that may be created meanwhile by another database of the
# same cluster (roles are cluster-wide): made only when missing, a concurrent one caught.
def _create_role(role: str) -> str:
    return f"""DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
        CREATE ROLE {role} NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$"""


def _include(member: str, group: str) -> str:
    return f"""DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_auth_members m
                   WHERE m.roleid = CAST('{group}' AS regrole)
                     AND m.member = CAST('{member}' AS regrole)) THEN
        GRANT {group} TO {member};
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$"""


# The schema's owner role: jobctl_admin, granted to the session first when it is not a
# superuser (ALTER … OWNER TO needs membership of the new owner), so that whoever ran `db roles`
# keeps owning what it owned.
ADMIN_TO_SESSION = f"""DO $$ BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)
       AND NOT pg_has_role(session_user, '{ADMIN}', 'USAGE') THEN
        EXECUTE format('GRANT {ADMIN} TO %I', session_user);
    END IF;
END $$"""

# jobctl's functions in the schema, to be owned by jobctl_admin too.
OWN_FUNCTIONS = f"""DO $$ DECLARE f regprocedure; BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p
             WHERE p.pronamespace = CAST(current_schema() AS regnamespace)
               AND p.proname LIKE 'jobctl\\_%' LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO {ADMIN}', f);
    END LOOP;
END $$"""


def cluster_statements() -> list[str]:
    """The group roles and their memberships: cluster-wide, each safe to run concurrently."""
    return ([_create_role(role) for role in GROUPS]
            + [_include(member, group) for member, group in INCLUDES.items()])


def statements(tables: Mapping[str, Sequence[str]], schema: str) -> list[str]:
    """Everything `db roles` makes of a schema, in order, given its tables (name → columns)
    and its name: ownership, schema privileges, table grants, row-level security. Only the
    tables TABLE_GRANTS knows get grants; an unknown one stays its owner's alone."""
    known = [table for table in tables if table in TABLE_GRANTS]
    everyone = ", ".join(GROUPS)
    # Not from jobctl_admin: it owns them, and an owner's rights can be revoked too.
    granted = ", ".join(role for role in GROUPS if role != ADMIN)
    result = [ADMIN_TO_SESSION, f"GRANT USAGE ON SCHEMA {_quote(schema)} TO {everyone}",
              f"GRANT CREATE ON SCHEMA {_quote(schema)} TO {ADMIN}"]
    for table in known:
        result += [f"ALTER TABLE {_quote(table)} OWNER TO {ADMIN}",
                   f"REVOKE ALL ON {_quote(table)} FROM {granted}"]
        result += [_grant(table, role, privileges, tables[table])
                   for role, privileges in TABLE_GRANTS[table].items()]
        writers = [role for role, privileges in TABLE_GRANTS[table].items()
                   if "INSERT" in privileges]
        if writers and "id" in tables[table]:
            result.append(_sequence_usage(table, writers))
        if table in POLICIES:
            result.append(f"ALTER TABLE {_quote(table)} ENABLE ROW LEVEL SECURITY")
            for policy in POLICIES[table]:
                result += _policy(table, policy)
    result += [OWN_FUNCTIONS,
               # Locking rows is for those who submit jobs (and their dependencies).
               "REVOKE EXECUTE ON FUNCTION jobctl_lock_job_states(bigint[]) FROM PUBLIC",
               f"GRANT EXECUTE ON FUNCTION jobctl_lock_job_states(bigint[]) TO {SUBMITTER}"]
    return result


# The schema's tables and their columns (the tables of the current schema).
TABLES = """
SELECT CAST(c.relname AS text), array_agg(CAST(a.attname AS text) ORDER BY a.attnum)
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = CAST(current_schema() AS regnamespace) AND c.relkind IN ('r', 'p', 'v')
GROUP BY c.relname"""

# Whether the group roles exist (all of them): `db upgrade` applies `statements` then.
ROLES_EXIST = "SELECT count(*) = %(n)s FROM pg_roles WHERE rolname = ANY(%(groups)s)"

# The advisory lock that serialises applying this within one database (GRANT and CREATE POLICY
# on the same objects concurrently fail with "tuple concurrently updated").
ROLES_LOCK_ID = 0x6A6F62726F6C


def roles_exist(raw: Any) -> bool:
    row = raw.execute(ROLES_EXIST, {"n": len(GROUPS), "groups": list(GROUPS)}).fetchone()
    return bool(row[0])


def apply(raw: Any, *, create_roles: bool = True) -> None:
    """Create the roles (when `create_roles`) and apply `statements` to the schema, on a psycopg
    connection inside a transaction the caller commits."""
    if create_roles:
        for statement in cluster_statements():
            raw.execute(statement)
    raw.execute("SELECT pg_advisory_xact_lock(%(id)s)", {"id": ROLES_LOCK_ID})
    tables = {str(name): [str(c) for c in columns]
              for name, columns in raw.execute(TABLES).fetchall()}
    schema = str(raw.execute("SELECT current_schema()").fetchone()[0])
    for statement in statements(tables, schema):
        raw.execute(statement)


# `db grant` / `db revoke`: a login role's membership of a group role.
IS_ROLE = "SELECT rolcanlogin FROM pg_roles WHERE rolname = %(name)s"
# Whether a login role is a direct member of a group role.
IS_MEMBER = """
SELECT 1 FROM pg_auth_members m
WHERE m.roleid = (SELECT oid FROM pg_roles WHERE rolname = %(group)s)
  AND m.member = (SELECT oid FROM pg_roles WHERE rolname = %(login)s)"""


def membership(group: str, login: str, *, grant: bool) -> str:
    """GRANT or REVOKE one membership (both names checked by the caller, quoted here)."""
    if grant:
        return f"GRANT {_quote(group)} TO {_quote(login)}"
    return f"REVOKE {_quote(group)} FROM {_quote(login)}"
