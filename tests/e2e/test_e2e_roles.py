"""PostgreSQL roles and permissions (`jobctl db roles|grant|revoke`, jobctl.store.postgres.roles)
with real roles on the test cluster: each role tries what it may not and gets exit 5 with
nothing changed, and does what it may. Login roles are this test's own (unique names, dropped
afterwards); the group roles are the cluster's, made idempotently by `db roles` (several test
processes may make them at once). Roles connect by their name in the URL (trust auth)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from e2e_support import Jobctl, wait_for
from inprocess import jobctl, run_cli
from pgroles import create_login, drop_logins, unique_name, url_as
from psycopg import sql

from jobctl.store.postgres import roles as role_sql
from jobctl.store.schema import metadata

PERMISSION_DENIED = 5


class Logins:
    """LOGIN roles of this test's own, each made a member of a jobctl group role."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.names: list[str] = []

    def make(self, group: str | None) -> str:
        """A new login role, granted `group` (through `jobctl db grant`); its URL."""
        name = unique_name("jobctl_t")
        url = create_login(self.url, name)
        self.names.append(name)
        if group is not None:
            jobctl(self.url, "db", "grant", group, name)
        return url

    def drop(self) -> None:
        drop_logins(self.url, self.names)


@pytest.fixture
def logins(pg_url: str) -> Iterator[Logins]:
    jobctl(pg_url, "db", "roles")
    found = Logins(pg_url)
    yield found
    found.drop()


def denied(url: str, *args: str) -> str:
    """Run in-process as the role of `url`; require exit 5 and one `permission denied` line."""
    result = jobctl(url, *args, expect=PERMISSION_DENIED)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jobctl: error: permission denied: "), \
        result.stderr
    return lines[0]


def submit(url: str, *args: str) -> int:
    return int(jobctl(url, "job", "submit", *args).stdout)


def status(url: str, job_id: int) -> dict[str, object]:
    document: dict[str, object] = json.loads(
        jobctl(url, "job", "status", str(job_id), "-o", "json").stdout)
    return document


def snapshot(url: str) -> list[tuple[object, ...]]:
    """Every job, queue and worker row, to compare before and after a refusal."""
    with psycopg.connect(url) as conn:
        return [*conn.execute("SELECT * FROM jobs ORDER BY id").fetchall(),
                *conn.execute("SELECT * FROM queues ORDER BY name").fetchall(),
                *conn.execute("SELECT * FROM workers ORDER BY id").fetchall(),
                *conn.execute("SELECT job_id, depends_on FROM job_deps").fetchall()]


def unchanged(url: str, action: Callable[[], object]) -> None:
    before = snapshot(url)
    action()
    assert snapshot(url) == before


def test_submitter_changes_its_own_jobs_only(pg_url: str, logins: Logins) -> None:
    alice, bob = logins.make("submitter"), logins.make("jobctl_submitter")
    mine = submit(alice, "--env", "TOKEN=alice-secret", "--", "echo", "hi")
    theirs = submit(bob, "--env", "TOKEN=bob-secret", "--", "echo", "hi")
    assert status(bob, theirs)["submitted_by"] == urlsplit(bob).username

    for args in (("job", "cancel", str(mine)), ("job", "hold", str(mine)),
                 ("job", "edit", str(mine), "--priority", "5")):
        unchanged(pg_url, lambda args=args: denied(bob, *args))  # type: ignore[misc]
    # Another's environment is hidden, not a crash; one's own is shown.
    seen = status(bob, mine)
    assert seen["env"] is None and seen["private_hidden"] is True
    assert "alice-secret" not in jobctl(bob, "job", "status", str(mine)).stdout
    assert status(bob, theirs)["env"] == {"TOKEN": "bob-secret"}
    assert status(pg_url, mine)["env"] == {"TOKEN": "alice-secret"}  # the owner sees all

    # Its own: hold, release, edit, cancel, retry.
    jobctl(bob, "job", "hold", str(theirs))
    jobctl(bob, "job", "release", str(theirs))
    jobctl(bob, "job", "edit", str(theirs), "--priority", "7")
    jobctl(bob, "job", "cancel", str(theirs))
    assert status(pg_url, theirs)["state"] == "cancelled"
    jobctl(bob, "job", "retry", str(theirs))
    assert status(pg_url, theirs)["state"] == "queued"
    unchanged(pg_url, lambda: denied(bob, "job", "retry", str(mine)))
    # An operator cancels anyone's.
    operator = logins.make("operator")
    jobctl(operator, "job", "cancel", str(mine))
    assert status(pg_url, mine)["state"] == "cancelled"


def test_submitter_cannot_forge_submitted_by(pg_url: str, logins: Logins) -> None:
    alice, bob = logins.make("submitter"), logins.make("submitter")
    jobctl(alice, "schedule", "add", "nightly", "--every", "1h", "--", "true")
    with psycopg.connect(pg_url) as conn:
        schedule_id = conn.execute("SELECT id FROM schedules").fetchone()[0]  # type: ignore
    columns = "queue, state, argv, env, labels, delivery, run_at, created_at"
    values = "'default', 'queued', '[\"true\"]', '{}', '{}', 'at_least_once', now(), now()"
    before = snapshot(pg_url)
    with psycopg.connect(bob) as conn:
        # Naming another as submitted_by: the trigger writes bob's own name (allowed, bob's).
        conn.execute(f"INSERT INTO jobs ({columns}, submitted_by) VALUES ({values}, "
                     f"'{urlsplit(alice).username}')")
        job_id, name = conn.execute("SELECT id, submitted_by FROM jobs").fetchone()  # type: ignore
        assert name == urlsplit(bob).username
        conn.rollback()
        # Under alice's schedule: it would be hers, so it is refused.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"INSERT INTO jobs ({columns}, schedule_id, fire_time) "
                         f"VALUES ({values}, %s, now())", [schedule_id])
        conn.rollback()
        # Nor can bob change alice's schedule (to make it his).
        assert conn.execute("UPDATE schedules SET paused = true").rowcount == 0
    assert snapshot(pg_url) == before
    del job_id


def test_submitter_cannot_read_anothers_output(pg_url: str, logins: Logins,
                                               tmp_path: Path) -> None:
    alice, bob = logins.make("submitter"), logins.make("submitter")
    worker = logins.make("worker")
    mine = submit(alice, "--", "echo", "alice-output")
    with Jobctl(worker, tmp_path) as run:
        run.burst()
    assert jobctl(alice, "job", "logs", str(mine)).stdout == "alice-output\n"
    assert "alice-output" not in denied(bob, "job", "logs", str(mine))
    # And directly: row-level security hides the rows.
    with psycopg.connect(bob) as conn:
        assert conn.execute("SELECT count(*) FROM job_logs").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT env FROM jobs")


def test_worker_role_runs_jobs_but_cannot_insert_one(pg_url: str, logins: Logins,
                                                     tmp_path: Path) -> None:
    submitter, worker = logins.make("submitter"), logins.make("worker")
    ids = [submit(submitter, "--on-end", "echo hook", "--", "sh", "-c", f"echo out-{n}")
           for n in range(3)]
    with Jobctl(worker, tmp_path) as run:
        run.burst()
    for n, job_id in enumerate(ids):
        assert status(pg_url, job_id)["state"] == "succeeded"
        assert jobctl(submitter, "job", "logs", str(job_id)).stdout == f"out-{n}\n"
    # The hooks (inserted by the database as the jobs ended) ran too, as the submitter's jobs.
    hooks = json.loads(jobctl(pg_url, "job", "list", "-o", "json").stdout)
    hooks = [job for job in hooks if job["hook_of"] is not None]
    assert len(hooks) == 3 and {h["state"] for h in hooks} == {"succeeded"}
    assert {h["submitted_by"] for h in hooks} == {urlsplit(submitter).username}
    before = snapshot(pg_url)
    with psycopg.connect(worker) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("INSERT INTO jobs (queue, state, argv, env, labels, delivery, run_at, "
                     "created_at) VALUES ('default', 'queued', '[\"true\"]', '{}', '{}', "
                     "'at_least_once', now(), now())")
    assert snapshot(pg_url) == before
    # Nor may it submit through jobctl, or pause a queue.
    unchanged(pg_url, lambda: denied(worker, "job", "submit", "--", "true"))
    unchanged(pg_url, lambda: denied(worker, "queue", "pause", "default"))


def test_viewer_lists_but_changes_nothing(pg_url: str, logins: Logins, tmp_path: Path) -> None:
    submitter, viewer = logins.make("submitter"), logins.make("viewer")
    job_id = submit(submitter, "--env", "K=v", "--", "true")
    for args in (("job", "list"), ("job", "status", str(job_id)), ("worker", "list"),
                 ("queue", "list"), ("schedule", "list"), ("stats",)):
        jobctl(viewer, *args)
    assert status(viewer, job_id)["env"] is None
    unchanged(pg_url, lambda: denied(viewer, "queue", "pause", "default"))
    unchanged(pg_url, lambda: denied(viewer, "job", "cancel", str(job_id)))
    unchanged(pg_url, lambda: denied(viewer, "job", "submit", "--", "true"))
    unchanged(pg_url, lambda: denied(viewer, "db", "prune", "--older-than", "0s"))


def test_operator_stops_workers_and_pauses_queues(pg_url: str, logins: Logins,
                                                  tmp_path: Path) -> None:
    operator, submitter = logins.make("operator"), logins.make("submitter")
    worker = logins.make("worker")
    with Jobctl(worker, tmp_path) as run:
        started = run.start_worker("--name", "w1")
        unchanged(pg_url, lambda: denied(submitter, "worker", "stop", "w1"))
        jobctl(operator, "worker", "stop", "w1")
        started.exit_after(0, timeout_s=30)
    jobctl(operator, "queue", "pause", "default")
    jobctl(operator, "queue", "resume", "default")


def test_db_roles_twice_is_a_no_op_and_upgrade_keeps_them(pg_url: str, logins: Logins) -> None:
    def privileges() -> list[tuple[object, ...]]:
        with psycopg.connect(pg_url) as conn:
            return conn.execute(
                "SELECT c.relname, c.relacl::text, c.relowner::regrole::text, c.relrowsecurity "
                "FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace "
                "AND c.relkind = 'r' ORDER BY 1").fetchall() + conn.execute(
                "SELECT tablename, policyname, roles::text, qual, with_check FROM pg_policies "
                "ORDER BY 1, 2").fetchall()

    first = privileges()
    assert all(row[2] == "jobctl_admin" for row in first if len(row) == 4)
    jobctl(pg_url, "db", "roles")
    assert privileges() == first
    jobctl(pg_url, "db", "upgrade")
    assert privileges() == first


def test_every_table_has_its_grants() -> None:
    """A table a migration adds needs its entry in roles.TABLE_GRANTS (else no role may read
    it): every table of the schema has one."""
    assert set(metadata.tables) <= set(role_sql.TABLE_GRANTS)


def test_grant_and_revoke(pg_url: str, logins: Logins) -> None:
    login = logins.make(None)
    name = urlsplit(login).username or ""
    assert "is now a member of jobctl_viewer" in jobctl(pg_url, "db", "grant", "viewer",
                                                       name).stderr
    assert "was already" in jobctl(pg_url, "db", "grant", "jobctl_viewer", name).stderr
    jobctl(login, "job", "list")
    jobctl(pg_url, "db", "revoke", "viewer", name)
    denied(login, "job", "list")
    for bad in ("nobody", "jobctl_nobody", "postgres"):
        result = jobctl(pg_url, "db", "grant", bad, name, expect=2)
        assert result.stderr.count("\n") == 1 and "no jobctl role" in result.stderr
    result = jobctl(pg_url, "db", "grant", "viewer", f"missing_{uuid.uuid4().hex[:8]}",
                    expect=3)
    assert result.stderr.count("\n") == 1
    result = jobctl(pg_url, "db", "grant", "viewer", "bad\nname\x1b[31m", expect=3)
    assert result.stderr.count("\n") == 1 and "\x1b" not in result.stderr
    assert jobctl(pg_url, "db", "grant", "viewer", "", expect=2).stderr.count("\n") == 1
    # A group role is no login role.
    assert "cannot log in" in jobctl(pg_url, "db", "grant", "viewer", "jobctl_operator",
                                     expect=2).stderr


def test_roles_on_sqlite_is_one_line_exit_2(sqlite_url: str) -> None:
    for args in (("db", "roles"), ("db", "grant", "viewer", "alice"),
                 ("db", "revoke", "viewer", "alice")):
        result = run_cli(*args, env={"JOBCTL_DATABASE_URL": sqlite_url})
        assert result.exit_code == 2, result
        assert result.stderr.startswith("jobctl: error: roles are PostgreSQL's")
        assert result.stderr.count("\n") == 1


WORKFLOW = """
[workflow]
name = "wf"
[tasks.a]
command = "true"
[tasks.b]
command = "true"
needs = ["a"]
"""


def test_submitter_submits_every_way_and_operator_runs_the_scheduler(
        pg_url: str, logins: Logins, tmp_path: Path) -> None:
    alice, bob = logins.make("submitter"), logins.make("submitter")
    operator, worker, viewer = logins.make("operator"), logins.make("worker"), logins.make("viewer")
    lines = tmp_path / "jobs.txt"
    lines.write_text("echo one\necho two\n")
    first = submit(alice, "--", "true")
    bulk = jobctl(alice, "job", "submit", "--from-file", str(lines)).stdout.split()
    after = submit(alice, "--after", str(first), "--", "true")
    on_anothers = submit(bob, "--after", str(first), "--", "true")  # waiting on another's: fine
    array = jobctl(alice, "job", "submit", "--array", "0-2", "--", "echo", "{index}").stdout
    workflow_file = tmp_path / "wf.toml"
    workflow_file.write_text(WORKFLOW)
    workflow = jobctl(alice, "workflow", "run", str(workflow_file)).stdout.strip()
    failing_file = tmp_path / "failing.toml"
    failing_file.write_text(WORKFLOW.replace('command = "true"', 'command = "false"', 1))
    failing = jobctl(alice, "workflow", "run", str(failing_file)).stdout.strip()
    jobctl(alice, "schedule", "add", "often", "--every", "1s", "--", "echo", "tick")
    assert len(bulk) == 2 and array.strip() and workflow
    # bob may not cancel alice's workflow, array or schedule
    array_id = array.split()[0]
    unchanged(pg_url, lambda: denied(bob, "job", "cancel", "--array", array_id))
    unchanged(pg_url, lambda: denied(bob, "workflow", "cancel", workflow))
    unchanged(pg_url, lambda: denied(bob, "schedule", "pause", "often"))
    unchanged(pg_url, lambda: denied(bob, "schedule", "remove", "often"))
    jobctl(alice, "schedule", "pause", "often")
    jobctl(alice, "schedule", "resume", "often")
    # The scheduler runs as an operator and files the occurrence as alice's.
    time.sleep(1.5)  # the first tick is due a second after it was added
    jobctl(operator, "scheduler", "run", "--once")
    everything = json.loads(jobctl(viewer, "job", "list", "-o", "json", "--limit", "0").stdout)
    ticks = [job for job in everything if job["schedule"] == "often"]
    assert ticks and {job["submitted_by"] for job in ticks} == {urlsplit(alice).username}
    with Jobctl(worker, tmp_path) as run:
        run.burst()
    for job_id in (first, after, on_anothers, *map(int, bulk)):
        assert status(viewer, job_id)["state"] == "succeeded"
    assert json.loads(jobctl(alice, "workflow", "status", workflow, "-o", "json").stdout)
    for args in (("top", "--once"), ("stats",), ("job", "list", "--mine"), ("worker", "list"),
                 ("schedule", "list"), ("queue", "list"), ("workflow", "list")):
        jobctl(viewer, *args)
        jobctl(alice, *args)
    unchanged(pg_url, lambda: denied(bob, "workflow", "retry", failing))
    jobctl(alice, "workflow", "retry", failing)


def test_retention_is_the_admins(pg_url: str, logins: Logins, tmp_path: Path) -> None:
    submitter, operator = logins.make("submitter"), logins.make("operator")
    admin, worker = logins.make("admin"), logins.make("worker")
    job_id = submit(submitter, "--", "echo", "x")
    with Jobctl(worker, tmp_path) as run:
        run.burst()
    unchanged(pg_url, lambda: denied(operator, "db", "prune", "--older-than", "0s"))
    jobctl(admin, "db", "prune", "--older-than", "0s")
    jobctl(admin, "job", "status", str(job_id), expect=3)
    jobctl(admin, "db", "upgrade")


def test_worker_role_through_every_path_it_takes(pg_url: str, logins: Logins,
                                                 tmp_path: Path) -> None:
    """Retries with backoff, a timeout, a gated (limited) job, dependents settled, a failure
    failing its dependent: a worker role writes only the columns it needs, and these work."""
    submitter, worker = logins.make("submitter"), logins.make("worker")
    failing = submit(submitter, "--retries", "1", "--retry-backoff", "0s", "--", "false")
    dependent = submit(submitter, "--after", str(failing), "--", "true")
    slow = submit(submitter, "--timeout", "1s", "--", "sleep", "30")
    gated = submit(submitter, "--limit", "k=1", "--", "true")
    chained = submit(submitter, "--after", str(gated), "--", "true")
    with Jobctl(worker, tmp_path) as run:
        run.burst()
    states = {job_id: status(pg_url, job_id)["state"]
              for job_id in (failing, dependent, slow, gated, chained)}
    assert states == {failing: "failed", dependent: "failed", slow: "failed",
                      gated: "succeeded", chained: "succeeded"}
    assert status(pg_url, failing)["attempt"] == 2
    # What it may not write: another job's command.
    victim = submit(submitter, "--", "true")
    with psycopg.connect(worker) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE jobs SET argv = '[\"rm\", \"-rf\", \"/\"]' WHERE id = %s", [victim])
    assert status(pg_url, victim)["argv"] == ["true"]


def test_submitter_cancels_its_running_job(pg_url: str, logins: Logins, tmp_path: Path) -> None:
    submitter, other, worker = (logins.make("submitter"), logins.make("submitter"),
                                logins.make("worker"))
    job_id = submit(submitter, "--", "sleep", "60")
    with Jobctl(worker, tmp_path) as run:
        run.start_worker()
        wait_for(lambda: status(pg_url, job_id)["state"] == "running", 30)
        denied(other, "job", "cancel", str(job_id))
        with psycopg.connect(pg_url) as conn:  # (its lease moves on: only what a cancel writes)
            assert conn.execute("SELECT state, cancel_requested FROM jobs WHERE id = %s",
                                [job_id]).fetchone() == ("running", False)
        jobctl(submitter, "job", "cancel", str(job_id))
        wait_for(lambda: status(pg_url, job_id)["state"] == "cancelled", 30)


# The README's permission matrix, command by command: each role's exit status (0 allowed, 5
# refused). `{job}` is a job of the submitter "alice", `{mine}` one of the role itself where it
# may submit, `{wf}` alice's workflow, `often` alice's schedule, `chk` a check.
MATRIX: list[tuple[tuple[str, ...], dict[str, int]]] = [
    (("job", "list"), {"viewer": 0, "submitter": 0, "operator": 0, "admin": 0}),
    (("job", "status", "{job}"), {"viewer": 0, "submitter": 0, "operator": 0, "admin": 0}),
    (("job", "explain", "{job}"), {"viewer": 0, "submitter": 0, "operator": 0}),
    (("schedule", "show", "often"), {"viewer": 0, "submitter": 0, "operator": 0}),
    (("schedule", "next", "often"), {"viewer": 0}),
    (("workflow", "status", "{wf}"), {"viewer": 0, "submitter": 0}),
    (("check", "list"), {"viewer": 0}),
    (("db", "status"), {"viewer": 0, "submitter": 0, "operator": 0, "admin": 0}),
    (("job", "logs", "{job}"), {"viewer": 5, "submitter": 5, "operator": 0, "admin": 0}),
    (("job", "submit", "--", "true"), {"viewer": 5, "submitter": 0, "operator": 0,
                                       "worker": 5, "admin": 0}),
    (("job", "hold", "{job}"), {"viewer": 5, "submitter": 5, "operator": 0, "worker": 5}),
    (("job", "release", "{job}"), {"submitter": 5, "operator": 0}),
    (("job", "hold", "{mine}"), {"submitter": 0}),
    (("schedule", "trigger", "often"), {"viewer": 5, "submitter": 5, "operator": 0}),
    (("schedule", "edit", "often", "--every", "2h"), {"submitter": 5, "operator": 0}),
    (("schedule", "add", "mine-{role}", "--every", "1h", "--", "true"),
     {"viewer": 5, "submitter": 0, "operator": 0, "worker": 5}),
    (("schedule", "trigger", "mine-{role}"), {"submitter": 0}),
    (("schedule", "edit", "mine-{role}", "--every", "2h"), {"submitter": 0}),
    (("schedule", "remove", "mine-{role}"), {"submitter": 0, "operator": 0}),
    (("queue", "set", "default", "--max-running", "3"), {"viewer": 5, "submitter": 5,
                                                         "operator": 0, "worker": 5}),
    (("check", "add", "chk-{role}", "--every", "1h"), {"submitter": 5, "operator": 0}),
    (("check", "ping", "chk"), {"viewer": 5, "submitter": 5, "operator": 0}),
    (("db", "prune", "--older-than", "1d"), {"submitter": 5, "operator": 5, "worker": 5,
                                             "admin": 0}),
    (("db", "prune", "--older-than", "1d", "--dry-run"), {"viewer": 0, "operator": 0}),
    (("db", "upgrade"), {"admin": 0}),
    (("db", "roles"), {"viewer": 5, "operator": 5, "admin": 0}),
    (("db", "grant", "operator", "{login}"), {"submitter": 5, "operator": 5, "admin": 5}),
    (("scheduler", "run", "--once"), {"viewer": 5, "submitter": 5, "operator": 0, "admin": 0}),
    (("scheduler", "run", "--once", "--retention", "30d"), {"operator": 5, "admin": 0}),
]


def test_the_permission_matrix(pg_url: str, logins: Logins, tmp_path: Path) -> None:
    alice = logins.make("submitter")
    job = submit(alice, "--", "true")
    workflow_file = tmp_path / "wf.toml"
    workflow_file.write_text(WORKFLOW)
    wf = jobctl(alice, "workflow", "run", str(workflow_file)).stdout.strip()
    jobctl(alice, "schedule", "add", "often", "--every", "1h", "--", "true")
    jobctl(pg_url, "check", "add", "chk", "--every", "1h")
    urls = {role: logins.make(role) for role in ("viewer", "submitter", "operator", "worker",
                                                 "admin")}
    mine = {role: submit(url, "--", "true") for role, url in urls.items()
            if role in ("submitter", "operator", "admin")}
    wrong = []
    for args, expected in MATRIX:
        for role, code in expected.items():
            filled = [a.format(job=job, wf=wf, role=role, mine=mine.get(role, 0),
                               login=urlsplit(urls["viewer"]).username) for a in args]
            result = jobctl(urls[role], *filled, expect=None)
            if result.exit_code != code or "Traceback" in result.stderr:
                wrong.append(f"{role} {' '.join(filled)}: {result.exit_code} "
                             f"{result.stderr.strip()}")
            elif code == PERMISSION_DENIED:
                assert result.stderr.startswith("jobctl: error: permission denied: ")
                assert result.stderr.count("\n") == 1
    assert not wrong, "\n".join(wrong)


def test_db_upgrade_gives_new_columns_their_grants(pg_url: str, logins: Logins) -> None:
    """What a later migration adds gets its rights from `db upgrade` where the roles exist: a
    new column of jobs is readable by a viewer afterwards, not before."""
    viewer = logins.make("viewer")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE jobs ADD COLUMN later_column text")
    with psycopg.connect(viewer) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT later_column FROM jobs")
    assert "rights are applied" in jobctl(pg_url, "db", "upgrade").stderr
    with psycopg.connect(viewer) as conn:
        conn.execute("SELECT later_column FROM jobs")


def test_creating_roles_races_harmlessly_across_databases(pg_url: str, pg_url_empty: str) -> None:
    """Roles are cluster-wide: two databases' `db roles` may create the same role and the same
    membership at once. The very statements `db roles` runs (roles._create_role, _include), on
    role names of this test's own, from two databases at the same instant, many times."""
    import threading

    names: list[str] = []
    try:
        for _ in range(15):
            group, member = (f"jobctl_t_{uuid.uuid4().hex[:10]}" for _ in range(2))
            names += [member, group]
            for statements in ([role_sql._create_role(group)],
                               [role_sql._create_role(member)],
                               [role_sql._include(member, group)]):
                barrier = threading.Barrier(2)
                errors: list[BaseException] = []

                def run(url: str, statements: list[str] = statements,
                        barrier: threading.Barrier = barrier,
                        errors: list[BaseException] = errors) -> None:
                    try:
                        with psycopg.connect(url, autocommit=True) as conn:
                            barrier.wait()
                            for statement in statements:
                                conn.execute(statement)
                    except BaseException as error:  # reported below
                        errors.append(error)

                threads = [threading.Thread(target=run, args=(url,))
                           for url in (pg_url, pg_url_empty)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                assert not errors, errors
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)",
                                [names]).fetchone() == (len(names),)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for name in names:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_cancelling_ones_job_settles_anothers_dependent(pg_url: str, logins: Logins) -> None:
    """A submitter's cancel ends the jobs of others that wait on its job, in the same
    transaction, though its own UPDATE may not touch them (jobctl_settle, as the owner)."""
    alice, bob = logins.make("submitter"), logins.make("submitter")
    mine = submit(alice, "--in", "1h", "--", "true")
    theirs = submit(bob, "--after", str(mine), "--", "true")
    any_theirs = submit(bob, "--after-any", str(mine), "--", "true")
    jobctl(alice, "job", "cancel", str(mine))
    assert status(pg_url, theirs)["state"] == "cancelled"
    assert status(pg_url, any_theirs)["state"] == "queued"


def test_db_roles_by_an_owner_that_is_no_superuser(pg_url_empty: str, logins: Logins) -> None:
    """The usual set-up: the database's owner, a role with CREATEROLE but no superuser, creates
    the schema and the roles; it keeps doing everything (it becomes jobctl_admin), and the roles
    work on its database."""
    owner = f"jobctl_t_{uuid.uuid4().hex[:10]}"
    database = urlsplit(pg_url_empty).path.lstrip("/")
    with psycopg.connect(logins.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(owner)))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(database), sql.Identifier(owner)))
    owner_url = url_as(pg_url_empty, owner)
    try:
        jobctl(owner_url, "db", "upgrade")
        job_id = submit(owner_url, "--env", "K=v", "--", "true")
        jobctl(owner_url, "db", "roles")
        jobctl(owner_url, "db", "roles")
        name = urlsplit(logins.make(None)).username or ""
        jobctl(owner_url, "db", "grant", "submitter", name)
        submitter = url_as(pg_url_empty, name)
        theirs = submit(submitter, "--env", "T=s", "--", "true")
        assert status(submitter, job_id)["env"] is None
        assert status(owner_url, theirs)["env"] == {"T": "s"}  # the owner sees every job
        jobctl(owner_url, "job", "cancel", str(theirs))
        unchanged(owner_url, lambda: denied(submitter, "job", "cancel", str(job_id)))
        jobctl(owner_url, "db", "prune", "--older-than", "0s")
        jobctl(owner_url, "db", "upgrade")
    finally:
        with psycopg.connect(pg_url_empty, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(
                sql.Identifier(database)))
            conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(
                sql.Identifier(owner)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(owner)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(owner)))
