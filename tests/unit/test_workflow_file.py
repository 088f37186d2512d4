"""Workflow files: every invalid one is a one-line error naming file, line and key."""

from __future__ import annotations

import pytest

from jobctl.errors import InvalidInput
from jobctl.workflow import find_cycle, load, substitute, topological_order

GOOD = """\
[workflow]
name = "nightly"
queue = "batch"
[tasks.dump]
command = "pg_dump > x"
[tasks.compress]
command = ["gzip", "x"]
needs = ["dump"]
"""


@pytest.mark.parametrize(("text", "message"), [
    ("[tasks.a]\ncommand = 'x'\nneeds = ['b', 'c']\n[tasks.b]\ncommand = 'y'\nneeds = ['a']\n"
     "[tasks.c]\ncommand = 'z'\n",
     "f.toml:3: tasks.a.needs: a cycle: a -> b -> a"),
    ("[tasks.a]\ncommand = 'x'\n\n[tasks.b]\ncommand = 'y'\nneeds = ['nope']\n",
     "f.toml:6: tasks.b.needs: unknown task 'nope'"),
    ("[tasks.a]\ncommand = 'x'\n[tasks.a]\ncommand = 'y'\n",
     "f.toml:3: duplicate task 'a' (first at line 1)"),
    ("[tasks.a]\ncommand = 'x'\ncolour = 'red'\n", "f.toml:3: tasks.a: unknown key 'colour'"),
    ("[workflow]\nqueue = 'q'\nretry = 2\n[tasks.a]\ncommand = 'x'\n",
     "f.toml:3: workflow: unknown key 'retry'"),
    ("[tasks.a]\ncommand = 'x\n", "f.toml:2: invalid TOML: "),
    ("[tasks.a]\nneeds = []\n", "f.toml:1: tasks.a: no command"),
    ("[tasks.a]\ncommand = 'x'\ntimeout = 'soon'\n", "f.toml:3: tasks.a.timeout: "),
    ("[tasks.a]\ncommand = 'x'\nretries = 'two'\n", "f.toml:3: tasks.a.retries must be an"),
    ("[workflow]\nname = 'x'\n", "f.toml:1: no tasks"),
])
def test_invalid_files(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load(text, "f.toml")
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_valid_file_takes_defaults_and_orders_tasks() -> None:
    definition = load("[tasks.z]\ncommand='b'\nneeds=['y']\n" + GOOD.replace("[tasks.dump]",
                      "[tasks.y]\ncommand='a'\n[tasks.dump]"), "n.toml")
    assert definition["name"] == "nightly"
    assert list(definition["tasks"]) == ["y", "z", "dump", "compress"]
    assert definition["tasks"]["compress"]["queue"] == "batch"
    assert definition["tasks"]["compress"]["needs"] == ["dump"]


def test_cycle_and_order_helpers() -> None:
    tasks: dict[str, dict[str, list[str]]] = {
        "a": {"needs": ["b"]}, "b": {"needs_any": ["c"]}, "c": {"needs": []}}
    assert find_cycle(tasks) is None
    assert topological_order(tasks) == ["c", "b", "a"]
    tasks["c"]["needs"] = ["a"]
    assert find_cycle(tasks) == ["a", "b", "c", "a"]


def test_substitute_leaves_unknown_braces_alone() -> None:
    assert substitute("cp {src} ${HOME}/{date}-{x}", {"src": "a", "date": "d"}) == \
        "cp a ${HOME}/d-{x}"


# --- retry_on_exit / no_retry_on_exit (issue 16) ------------------------------------------------


def test_exit_codes_to_retry_on_become_job_specs() -> None:
    from jobctl.workflow import job_specs

    definition = load("[workflow]\nretry_on_exit = [75, 111]\n"
                      "[tasks.a]\ncommand = 'x'\n"
                      "[tasks.b]\ncommand = 'y'\nno_retry_on_exit = [2]\n", "f.toml")
    a, b = job_specs(definition, {})
    assert (a.retry_on_exit, a.no_retry_on_exit) == ((75, 111), None)
    # A task's own choice replaces the [workflow] default of the other kind.
    assert (b.retry_on_exit, b.no_retry_on_exit) == (None, (2,))


@pytest.mark.parametrize(("text", "message"), [
    ("[tasks.a]\ncommand = 'x'\nretry_on_exit = [256]\n", "f.toml:3: tasks.a.retry_on_exit: "),
    ("[tasks.a]\ncommand = 'x'\nretry_on_exit = []\n", "f.toml:3: tasks.a.retry_on_exit: "),
    ("[tasks.a]\ncommand = 'x'\nno_retry_on_exit = ['1']\n",
     "f.toml:3: tasks.a.no_retry_on_exit: "),
    ("[tasks.a]\ncommand = 'x'\nretry_on_exit = 75\n",
     "f.toml:3: tasks.a.retry_on_exit must be an array of exit codes"),
    ("[tasks.a]\ncommand = 'x'\nretry_on_exit = [1]\nno_retry_on_exit = [2]\n",
     "f.toml:4: tasks.a: give retry_on_exit or no_retry_on_exit, not both"),
])
def test_invalid_exit_codes(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load(text, "f.toml")
    assert str(caught.value).startswith(message), str(caught.value)
