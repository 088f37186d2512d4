"""Jobs run as their submitter (`worker start --run-as-submitter`), and when a worker running as
root refuses to start: the policy, in plain functions (the worker applies it in
jobctl.worker.process; the command line in jobctl.cli.worker).

A worker started as root with --run-as-submitter runs each job as the Unix user named like the
job's `submitted_by` (jobctl.store.identity: the PostgreSQL role of the session that submitted
it; on SQLite the submitting Unix user), or as the user a --user-map file gives for that name
(`load_user_map`). What follows from it:

- a job whose submitter is unknown (NULL: from before jobctl recorded one), whose user does not
  exist on the worker, or whose user is root (uid 0: never, whatever a role is called or a map
  says) does not start: it fails with exit code 125 and says why, and the worker goes on;
- `job submit --user X` is allowed only where X is that same user (else any submitter could ask
  for root or for another's account);
- what the worker reads for the job, it reads with the job user's rights, not root's: a
  `file:` secret, the working directory (`RunAs`); `env:` secrets (the worker's own variables,
  its database password among them) are refused;
- the job does not inherit the worker's environment (which holds the worker's database URL and
  whatever else root was started with), only `login_environment`: what a login would set.

Standard library only and cheap to import: `worker start` loads the map at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from jobctl.record import record

ROOT_BACKENDS = ("postgresql",)  # where a root worker refuses to start without a flag
# Variables a job run as its submitter keeps from the worker's environment: where to find
# commands, language and time zone (LC_* too). Nothing else: no JOBCTL_*, no PG*, no secrets.
KEPT_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ")
_KEPT_PREFIXES = ("LC_",)


class NotRunnable(Exception):
    """Why a job cannot run as its submitter on this worker (its message names no value)."""


@record
class SubmitterUsers:
    """How a worker with --run-as-submitter finds a job's Unix user: the user named in `users`
    for its submitter, else the user named like the submitter."""

    users: dict[str, str]  # submitter (role) → Unix user, from --user-map (empty: none)
    source: str | None = None  # the --user-map file, for messages

    def user_for(self, submitted_by: str | None, requested: str | None) -> str:
        """The name of the Unix user a job runs as, given its submitter and its `--user`
        (None: none asked); raises NotRunnable when it may not run."""
        if submitted_by is None:
            raise NotRunnable("it has no submitter on record (submitted before jobctl recorded "
                              "one), and this worker runs jobs only as their submitter "
                              "(--run-as-submitter)")
        user = self.users.get(submitted_by, submitted_by)
        if requested is not None and requested != user:
            mapped = "" if user == submitted_by else f", user {user!r}"
            raise NotRunnable(f"it asks to run as user {requested!r}, but this worker runs jobs "
                              f"only as their submitter ({submitted_by!r}{mapped}): "
                              "--run-as-submitter")
        return user

    def describe(self) -> str:
        """For the worker's start-up line."""
        return ("each job runs as its submitter's Unix user"
                + (f" (or as {self.source} maps it)" if self.source else ""))


def load_user_map(path: str) -> SubmitterUsers:
    """A --user-map file: TOML, one `ROLE = "UNIXUSER"` a line (a role name that is no bare
    TOML key is quoted: `"ci-bot.prod" = "builder"`), `#` comments. Raises ValueError with one
    line saying what is wrong (the caller names the option)."""
    import tomllib

    from jobctl.models import user_name_problem

    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is no valid TOML: {_one_line(str(error))}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is no valid TOML: it is not UTF-8") from None
    users: dict[str, str] = {}
    for role, user in document.items():
        if not role:
            raise ValueError(f"{path}: a role name cannot be empty")
        if not isinstance(user, str):
            raise ValueError(f"{path}: {role!r} must map to a Unix user's name in quotes "
                             f"(ROLE = \"user\"), not a {_toml_type(user)}")
        problem = user_name_problem(user)
        if problem is not None:
            raise ValueError(f"{path}: {role!r} = {user!r}: {problem}")
        users[role] = user
    return SubmitterUsers(users, path)


def login_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What a job run as its submitter gets of the worker's environment (KEPT_VARIABLES); the
    user's HOME, USER, LOGNAME and SHELL are added by the worker (RunAs.env)."""
    return {name: value for name, value in environ.items()
            if name in KEPT_VARIABLES or name.startswith(_KEPT_PREFIXES)}


def worker_start_problem(euid: int, backend: str, run_as_submitter: bool, allow_root: bool,
                         user_map: bool) -> str | None:
    """Why `worker start` must not start with these flags, as this user, on this backend (one
    line, exit 2), or None when it may."""
    if user_map and not run_as_submitter:
        return "--user-map applies only with --run-as-submitter"
    if run_as_submitter and euid != 0:
        return (f"--run-as-submitter needs a worker running as root (only root can start a job "
                f"as another user); this one runs as uid {euid}")
    if euid == 0 and backend in ROOT_BACKENDS and not (run_as_submitter or allow_root):
        return ("refusing to run jobs as root on PostgreSQL: anyone who can submit to this "
                "database could run commands as root here; pass --run-as-submitter to run each "
                "job as its submitter's Unix user, or --allow-root (JOBCTL_ALLOW_ROOT=1) to run "
                "them as root all the same")
    return None


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _toml_type(value: object) -> str:
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "list"
    return type(value).__name__
