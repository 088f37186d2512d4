"""The backend conformance suite (River's riverdrivertest): both backends supply the same named
SQL for every entity, every statement is valid SQL on its own backend, and every operation keeps
its contract on both, in the transaction mode production uses (`turn()` on the worker's hot path,
`write()` for commands and the scheduler, `read()` for reads).

The first part needs no database: each backend module holds exactly what its entity's Protocol
declares (mypy checks the types; this checks nothing is missing or left over, which mypy's
structural check does not: an unused statement would otherwise live on unnoticed).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from jobctl.store.backend import BACKENDS
from jobctl.store.direct import DirectDatabase
from jobctl.store.submit import ROW_COLUMNS
from jobctl.store.url import parse

# Each entity: the module that declares its Protocol, and that Protocol's name.
ENTITIES = {
    "schema": ("jobctl.store.direct", "SchemaSQL"),
    **{name: (f"jobctl.store.{name}", f"{name.capitalize()}SQL")
       for name in ("queue", "workers", "deps", "schedules", "workflows", "reads", "jobs", "submit",
                    "names", "retention", "stats", "capacity", "checks", "overdue",
                    "arrays")},
}


def protocol_members(protocol: type) -> set[str]:
    """What a Protocol declares: its annotated constants and its methods."""
    annotated = set(getattr(protocol, "__annotations__", {}))
    methods = {name for name, value in vars(protocol).items()
               if inspect.isfunction(value) and not name.startswith("_")}
    return annotated | methods


def defined(module: ModuleType) -> tuple[set[str], set[str]]:
    """What a backend's entity module defines itself, read from its source (what it imports,
    such as its package's NOW, is not its own): its public UPPER_CASE statements and functions,
    and every name its code uses."""
    tree = ast.parse(inspect.getsource(module))
    own: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            own |= {t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper()}
        elif isinstance(node, ast.FunctionDef):
            own.add(node.name)
    used = {node.id for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    return {name for name in own if not name.startswith("_")}, used


@pytest.mark.parametrize("entity", sorted(ENTITIES))
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_each_backend_module_supplies_exactly_its_protocol(backend: str, entity: str) -> None:
    """Everything the Protocol declares is there; everything else the module defines is used
    by its own code (a statement one backend needs for its own steps), so no statement lives
    on unused."""
    module_name, protocol_name = ENTITIES[entity]
    protocol = getattr(importlib.import_module(module_name), protocol_name)
    module = importlib.import_module(f"{BACKENDS[backend]}.{entity}")
    declared = protocol_members(protocol)
    own, used = defined(module)
    missing = sorted(name for name in declared if not hasattr(module, name))
    assert not missing, f"{module.__name__} lacks {missing}"
    unused = sorted(own - declared - used)
    assert not unused, f"{module.__name__} defines {unused}, which nothing uses"


@pytest.mark.parametrize("entity", sorted(ENTITIES))
def test_the_backend_property_returns_the_backend_module(entity: str) -> None:
    for backend_name, package in BACKENDS.items():
        backend = importlib.import_module(package).BACKEND
        module = importlib.import_module(f"{package}.{entity}")
        assert getattr(backend, f"sql_{entity}") is module, backend_name


# --- every statement is valid SQL on its own backend -----------------------------------------

# Parameter placeholders, per backend, as their drivers read them (for the test's own dummy
# values; jobctl itself never parses SQL).
PLACEHOLDER = {"postgresql": re.compile(r"%\((\w+)\)s"), "sqlite": re.compile(r"(?<!:):(\w+)")}


def statements(backend: str) -> Iterator[tuple[str, str]]:
    for entity in sorted(ENTITIES):
        module = importlib.import_module(f"{BACKENDS[backend]}.{entity}")
        for name, value in sorted(vars(module).items()):
            if name.isupper() and isinstance(value, str) and not name.startswith("_"):
                yield f"{entity}.{name}", value


@pytest.fixture
def direct(db_url: str) -> Iterator[DirectDatabase]:
    database = DirectDatabase(parse(db_url))
    try:
        yield database
    finally:
        database.close()


def _explainable(sql: str) -> bool:
    """Whether EXPLAIN can plan `sql` without running it (not DDL, transaction control, COPY,
    LISTEN/NOTIFY or a pragma) and `sql` is a whole statement (not a fragment)."""
    first = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    return first in {"SELECT", "WITH", "INSERT", "UPDATE", "DELETE"}


def test_every_statement_is_valid_sql_on_its_backend(direct: DirectDatabase) -> None:
    """EXPLAIN every whole statement of every entity, with NULL for each parameter: the backend
    parses and plans it (names of tables and columns, syntax, casts) without running it. A
    statement only one rarely-taken path uses would otherwise fail first in production."""
    backend = "postgresql" if direct.backend.title == "PostgreSQL" else "sqlite"
    checked, failures = 0, []
    with direct.write() as conn:
        for name, sql in statements(backend):
            if not _explainable(sql):
                continue
            params: dict[str, Any] | tuple[None, ...] | None
            if "{columns}" in sql:  # a batch's template (SQLite's INSERT_BATCH): every column
                sql = sql.format(columns=", ".join(ROW_COLUMNS),
                                 marks=", ".join("?" * len(ROW_COLUMNS)))
                params = (None,) * len(ROW_COLUMNS)
            else:
                params = {key: None for key in PLACEHOLDER[backend].findall(sql)} or None
            explain = "EXPLAIN " + sql
            try:
                if backend == "postgresql":
                    conn.execute("SAVEPOINT conformance")
                conn.execute(explain, params)
            except Exception as error:  # collected and reported below
                failures.append(f"{name}: {str(error).splitlines()[0]}")
            finally:
                if backend == "postgresql":
                    conn.execute("ROLLBACK TO SAVEPOINT conformance")
            checked += 1
    assert not failures, "\n".join(failures)
    assert checked > 0



# The text of jobctl_settle as migration 0013 created it (sha256 of deps._settle_function_body()).
SETTLE_AT_0013 = "d746ce60bb1fd5bebcf2c4bb839f1de7cdd465caf720dc72f4bc2a690f612e4f"


def test_settle_function_is_frozen() -> None:
    """jobctl_settle (roles.SETTLE_FUNCTION) is created by migration 0013 from the code of the
    day: a database migrated then keeps that text. A change to deps.SETTLE_CTES needs a new
    migration that creates the function again (then update the hash here to that migration's)."""
    import hashlib

    from jobctl.store.postgres import deps

    found = hashlib.sha256(deps._settle_function_body().encode()).hexdigest()
    assert found == SETTLE_AT_0013, ("deps.SETTLE_CTES changed: add a migration that runs "
                                     "roles.SETTLE_FUNCTION again")
