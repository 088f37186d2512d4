"""Workflow files: TOML in, a validated definition out (plain JSON-able data), and `--set`
substitution. Pure: no database, no terminal.

    [workflow]
    name = "nightly"
    queue = "batch"          # defaults for every task: queue, priority, retries, retry_backoff,
    retries = 1              # timeout, env, cwd, delivery, labels, input, user, max_lost, limits,
                             # retry_on_exit, no_retry_on_exit, secret_env
    [tasks.dump]
    command = "pg_dump app > /backup/app-{date}.sql"      # a string runs under /bin/sh -c
    secret_env = { PGPASSWORD = "file:/etc/backup/pw" }    # read by the worker, never stored
    [tasks.compress]
    command = ["gzip", "-9", "/backup/app-{date}.sql"]    # an argv array runs as it is
    needs = ["dump"]                                       # after dump succeeded
    limits = { disk-io = 1 }                               # one such task at a time
    [tasks.report]
    command = "notify-send done"
    needs_any = ["compress"]                               # after compress ended, however

Every error is one line, `FILE:LINE: …`, naming the key or table it is about. tomllib reports no
line numbers for keys, so they are looked up in the text (`_Locator`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any

from jobctl.errors import InvalidInput
from jobctl.models import DEFAULT_MAX_LOST, Delivery, JobSpec

WORKFLOW_KEYS = {"name", "queue", "priority", "retries", "retry_backoff", "timeout", "env",
                 "cwd", "delivery", "labels", "input", "user", "max_lost", "limits",
                 "on_failure", "retry_on_exit", "no_retry_on_exit", "secret_env"}
# [workflow]'s keys that are defaults for its tasks (its on_failure is the workflow's own hook,
# run once when a task fails or is lost).
DEFAULT_KEYS = WORKFLOW_KEYS - {"name", "on_failure"}
# A task's hooks (jobctl.models.HOOK_STATES), its own.
HOOK_KEYS = {"on_success", "on_failure", "on_end"}
TASK_KEYS = DEFAULT_KEYS | HOOK_KEYS | {"command", "needs", "needs_any", "name"}
TASK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


class _Locator:
    """Line numbers of tables and keys in a TOML text (enough for error messages)."""

    def __init__(self, text: str) -> None:
        self.headers: list[tuple[int, str]] = []  # (line, dotted table name), in order
        self.keys: dict[tuple[str, str], int] = {}
        table = ""
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header:
                table = ".".join(part.strip().strip("\"'") for part in header.group(1).split("."))
                self.headers.append((number, table))
                continue
            key = _KEY.match(line)
            if key:
                self.keys.setdefault((table, key.group(1).strip("\"'")), number)

    def table(self, name: str) -> int:
        return next((line for line, table in self.headers if table == name), 1)

    def key(self, table: str, key: str) -> int:
        return self.keys.get((table, key), self.table(table))


def load(text: str, filename: str) -> dict[str, Any]:
    """Parse and validate a workflow file; returns its definition (see `_task` for a task's)."""
    where = _Locator(text)

    def error(line: int, message: str) -> InvalidInput:
        return InvalidInput(f"{filename}:{line}: {message}")

    seen: dict[str, int] = {}
    for line, table in where.headers:
        if table in seen and table.startswith("tasks."):
            return _raise(error(line, f"duplicate task {table[6:]!r} (first at line "
                                      f"{seen[table]})"))
        seen.setdefault(table, line)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as decode_error:
        message = str(decode_error)
        found = re.search(r"\(at line (\d+), column \d+\)$", message)
        line = int(found.group(1)) if found else max(1, len(text.splitlines()))
        reason = re.sub(r" [(]at (line .*|end of document)[)]$", "", message)
        raise error(line, f"invalid TOML: {reason}") from decode_error
    for key in document:
        if key not in ("workflow", "tasks"):
            raise error(where.key("", key), f"unknown key {key!r} (expected [workflow] and "
                                            "[tasks.NAME] tables)")
    head = document.get("workflow", {})
    if not isinstance(head, dict):
        raise error(where.key("", "workflow"), "workflow must be a table")
    for key in head:
        if key not in WORKFLOW_KEYS:
            raise error(where.key("workflow", key), f"workflow: unknown key {key!r}")
    tasks = document.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise error(where.table("tasks") if "tasks" in document else 1,
                    "no tasks: add at least one [tasks.NAME] table")
    defaults = {key: value for key, value in head.items() if key in DEFAULT_KEYS}
    name = head.get("name", filename.rsplit("/", 1)[-1].removesuffix(".toml"))
    if not isinstance(name, str) or not name:
        raise error(where.key("workflow", "name"), "workflow: name must be a non-empty string")
    _check_options("workflow", defaults, where, error)
    _check_hooks("workflow", {key: head[key] for key in ("on_failure",) if key in head}, where,
                 error)
    definition_tasks: dict[str, dict[str, Any]] = {}
    for task_name, table in tasks.items():
        if not isinstance(table, dict):
            raise error(where.key("tasks", task_name), f"tasks.{task_name} must be a table")
        definition_tasks[task_name] = _task(task_name, table, defaults, where, error)
    _check_needs(definition_tasks, where, error)
    order = topological_order(definition_tasks)
    return {"name": name, "tasks": {task: definition_tasks[task] for task in order},
            **({"on_failure": head["on_failure"]} if "on_failure" in head else {})}


def _raise(error: InvalidInput) -> dict[str, Any]:
    raise error


def _task(name: str, table: dict[str, Any], defaults: dict[str, Any], where: _Locator,
          error: Any) -> dict[str, Any]:
    path = f"tasks.{name}"
    if not TASK_NAME.match(name):
        raise error(where.table(path), f"{path}: a task name may hold letters, digits, _ . -")
    for key in table:
        if key not in TASK_KEYS:
            raise error(where.key(path, key), f"{path}: unknown key {key!r}")
    if "command" not in table:
        raise error(where.table(path), f"{path}: no command")
    command = table["command"]
    if isinstance(command, str):
        if not command.strip():
            raise error(where.key(path, "command"), f"{path}.command is empty")
    elif not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)
              and command[0]):
        raise error(where.key(path, "command"),
                    f"{path}.command must be a string or a non-empty array of strings")
    for key in ("needs", "needs_any"):
        value = table.get(key, [])
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise error(where.key(path, key), f"{path}.{key} must be an array of task names")
    options = {**defaults, **{k: v for k, v in table.items() if k in DEFAULT_KEYS}}
    for own, other in (("retry_on_exit", "no_retry_on_exit"),
                       ("no_retry_on_exit", "retry_on_exit")):
        if own in table and other not in table:  # a task's own choice replaces the default's
            options.pop(other, None)
    _check_options(path, options, where, error)
    hooks = {key: value for key, value in table.items() if key in HOOK_KEYS}
    _check_hooks(path, hooks, where, error)
    return {"command": command, "name": table.get("name", name),
            "needs": list(table.get("needs", [])), "needs_any": list(table.get("needs_any", [])),
            **options, **hooks}


def _check_hooks(path: str, hooks: Mapping[str, Any], where: _Locator, error: Any) -> None:
    """A task's (or the workflow's) hooks: /bin/sh -c strings."""
    from jobctl.models import hook_problem

    for key, value in hooks.items():
        problem = (hook_problem(value) if isinstance(value, str)
                   else "must be a string (a /bin/sh -c command)")
        if problem is not None:
            raise error(where.key(path, key), f"{path}.{key}: {problem}")


def _check_options(path: str, options: Mapping[str, Any], where: _Locator, error: Any) -> None:
    """Types and values of the job options (as a task or as [workflow] defaults)."""
    from jobctl.timeparse import parse_duration

    table = "workflow" if path == "workflow" else path
    checks: dict[str, tuple[type | tuple[type, ...], str]] = {
        "queue": (str, "a string"), "priority": (int, "an integer"),
        "retries": (int, "an integer"), "cwd": (str, "a string"),
        "retry_backoff": ((str, int, float), "a duration"), "timeout": ((str, int, float),
                                                                         "a duration"),
        "delivery": (str, "at-least-once or at-most-once"), "env": (dict, "a table"),
        "labels": (dict, "a table"), "name": (str, "a string"),
        "input": (str, "a string (the job's standard input, UTF-8)"), "user": (str, "a string"),
        "max_lost": (int, "an integer"), "limits": (dict, "a table of KEY = N"),
        "retry_on_exit": (list, "an array of exit codes"),
        "no_retry_on_exit": (list, "an array of exit codes"),
        "secret_env": (dict, 'a table of NAME = "file:PATH" or "env:VAR"'),
    }
    for key, raw in options.items():
        value: Any = raw
        expected, description = checks[key]
        line = where.key(table, key) if (table, key) in where.keys else where.key("workflow", key)
        if not isinstance(raw, expected) or isinstance(raw, bool):
            raise error(line, f"{path}.{key} must be {description}")
        try:
            if key in ("timeout", "retry_backoff"):
                seconds = value if not isinstance(value, str) else parse_duration(value)
                if seconds is None or seconds < 0 or (key == "timeout" and seconds == 0):
                    raise ValueError("must be longer than 0s")
            elif key == "delivery":
                Delivery.parse(value)
            elif key == "retries" and value < 0:
                raise ValueError("must be 0 or more")
            elif key in ("env", "labels") and not all(isinstance(v, str) for v in value.values()):
                raise ValueError("values must be strings")
            else:
                _check_run_option(key, value)
        except (ValueError, InvalidInput) as bad:
            raise error(line, f"{path}.{key}: {bad}") from bad
    if "retry_on_exit" in options and "no_retry_on_exit" in options:
        key = "no_retry_on_exit"
        line = where.key(table, key) if (table, key) in where.keys else where.key("workflow", key)
        raise error(line, f"{path}: give retry_on_exit or no_retry_on_exit, not both")


def _check_run_option(key: str, value: Any) -> None:
    """input, user, max_lost (the rest is checked in `_check_options`); ValueError if bad."""
    from jobctl.models import MAX_INPUT_BYTES, user_name_problem

    if key == "input" and len(value.encode()) > MAX_INPUT_BYTES:
        raise ValueError(f"at most 1 MiB ({MAX_INPUT_BYTES} bytes) of UTF-8")
    if key == "input" and "\x00" in value:
        # The definition is stored as JSON, and PostgreSQL's jsonb cannot hold U+0000.
        raise ValueError("cannot hold a NUL character (\\u0000); binary input needs "
                         "`job submit --input FILE`")
    if key == "user" and (problem := user_name_problem(value)) is not None:
        raise ValueError(problem)
    if key == "max_lost" and not 1 <= value <= 2**31 - 1:
        raise ValueError("must be 1 or more (and a 32-bit integer)")
    if key in ("retry_on_exit", "no_retry_on_exit") and (not value or any(
            isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255
            for code in value)):
        raise ValueError("exit codes are whole numbers from 0 to 255 (an array of at least one)")
    if key == "secret_env":
        from jobctl.secret_env import reference_problem

        for name, reference in value.items():
            if (problem := reference_problem(name, reference)) is not None:
                raise ValueError(problem)
    if key == "limits":
        from jobctl import capacity

        for name, count in value.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{name}: N must be a whole number of at least 1")
            capacity.parse_key(name)


def _check_needs(tasks: dict[str, dict[str, Any]], where: _Locator, error: Any) -> None:
    for name, task in tasks.items():
        for key in ("needs", "needs_any"):
            for other in task[key]:
                if other not in tasks:
                    raise error(where.key(f"tasks.{name}", key),
                                f"tasks.{name}.{key}: unknown task {other!r}")
                if other == name:
                    raise error(where.key(f"tasks.{name}", key),
                                f"tasks.{name}.{key}: a task cannot need itself")
    cycle = find_cycle(tasks)
    if cycle:
        first = cycle[0]
        key = "needs" if cycle[1] in tasks[first]["needs"] else "needs_any"
        raise error(where.key(f"tasks.{first}", key),
                    f"tasks.{first}.{key}: a cycle: {' -> '.join(cycle)}")


def _edges(task: Mapping[str, Any]) -> list[str]:
    return list(task.get("needs", [])) + list(task.get("needs_any", []))


def find_cycle(tasks: Mapping[str, Mapping[str, Any]]) -> list[str] | None:
    """A cycle among `needs` as [a, b, …, a] (a needs b …), or None."""
    colour: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in tasks:
        if start in colour:
            continue
        path: list[str] = [start]
        stack = [iter(sorted(_edges(tasks[start])))]
        colour[start] = 1
        while stack:
            node = next(stack[-1], None)
            if node is None:
                colour[path.pop()] = 2
                stack.pop()
            elif colour.get(node) == 1:
                return [*path[path.index(node):], node]
            elif node not in colour:
                colour[node] = 1
                path.append(node)
                stack.append(iter(sorted(_edges(tasks[node]))))
    return None


def topological_order(tasks: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every task after the ones it needs; otherwise in file order (Kahn's algorithm)."""
    position = {name: index for index, name in enumerate(tasks)}
    remaining = {name: len(set(_edges(task))) for name, task in tasks.items()}
    dependents: dict[str, list[str]] = {name: [] for name in tasks}
    for name, task in tasks.items():
        for other in set(_edges(task)):
            dependents[other].append(name)
    ready = sorted((name for name, count in remaining.items() if count == 0),
                   key=position.__getitem__)
    order: list[str] = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for dependent in dependents[name]:
            remaining[dependent] -= 1
            if remaining[dependent] == 0:
                ready.append(dependent)
                ready.sort(key=position.__getitem__)
    return order


def parse_params(pairs: list[str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise InvalidInput(f"--set takes KEY=VALUE (KEY: letters, digits, _), not {pair!r}")
        params[key] = value
    return params


def substitute(text: str, params: Mapping[str, str]) -> str:
    """`{KEY}` → its value for each KEY given; any other braces are left alone (shell code)."""
    return PLACEHOLDER.sub(lambda m: params.get(m.group(1), m.group(0)), text)


def job_specs(definition: Mapping[str, Any], params: Mapping[str, str]) -> list[JobSpec]:
    """One JobSpec per task, in the definition's (dependency) order; dependencies are the
    store's to add, by task name."""
    from jobctl.timeparse import parse_duration

    specs = []
    for task in definition["tasks"].values():
        command = task["command"]
        argv = (["/bin/sh", "-c", substitute(command, params)] if isinstance(command, str)
                else [substitute(arg, params) for arg in command])
        timeout = task.get("timeout")
        backoff = task.get("retry_backoff", 10.0)
        specs.append(JobSpec(
            argv=argv,
            name=task.get("name"),
            queue=task.get("queue", "default"),
            priority=task.get("priority", 0),
            timeout_s=parse_duration(timeout) if isinstance(timeout, str) else timeout,
            retries=task.get("retries", 0),
            backoff_s=(parse_duration(backoff) or 0.0) if isinstance(backoff, str)
            else float(backoff),
            delivery=Delivery.parse(task.get("delivery", "at-least-once")),
            env=dict(task.get("env", {})),
            cwd=task.get("cwd"),
            labels=dict(task.get("labels", {})),
            max_lost=task.get("max_lost", DEFAULT_MAX_LOST),
            input=task["input"].encode() if "input" in task else None,
            user=task.get("user"),
            limits=dict(task.get("limits", {})),
            on_success=_substituted(task.get("on_success"), params),
            on_failure=_substituted(task.get("on_failure"), params),
            on_end=_substituted(task.get("on_end"), params),
            retry_on_exit=(tuple(task["retry_on_exit"]) if "retry_on_exit" in task else None),
            no_retry_on_exit=(tuple(task["no_retry_on_exit"]) if "no_retry_on_exit" in task
                              else None),
            secret_env=dict(task.get("secret_env", {})),
        ))
    return specs


def _substituted(hook: str | None, params: Mapping[str, str]) -> str | None:
    """A hook's command with `{KEY}` replaced, as a task's command."""
    return None if hook is None else substitute(hook, params)


def workflow_hook(definition: Mapping[str, Any], params: Mapping[str, str]) -> str | None:
    """The workflow's own on_failure, `{KEY}` replaced, or None."""
    return _substituted(definition.get("on_failure"), params)
