"""`record`: `dataclass(frozen=True)` at a fraction of its cost to define.

The CLI is started all day, and a worker defines some 60 dataclasses as it starts. On Python
3.11, `dataclass` writes each method it adds as source text and compiles it with `exec`, one
`exec` per method and class: `__init__`, `__repr__`, `__eq__`, `__hash__`, `__setattr__` and
`__delattr__` for a frozen one, about 1 ms a class (Python 3.13 compiles a class's methods in one
`exec`). `record` asks `dataclass` for the three that must be the class's own (`__init__`, and
the `__setattr__`/`__delattr__` that make it frozen) and gives every record the same
`__eq__`, `__hash__` and `__repr__`, written once here over the class's fields, which behave as
the generated ones do: equal when of the same class with equal compared fields, a hash of those
fields (hash=None fields follow compare), the fields with repr=True in the repr.
"""

from __future__ import annotations

import dataclasses
import reprlib
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def record(cls: type[T]) -> type[T]:
    """The class as `dataclass(frozen=True)` makes it (see the module's docstring)."""
    made: Any = dataclasses.dataclass(frozen=True, eq=False, repr=False)(cls)
    fields = dataclasses.fields(made)
    made.__record_compared__ = tuple(f.name for f in fields if f.compare)
    made.__record_hashed__ = tuple(
        f.name for f in fields if (f.compare if f.hash is None else f.hash))
    made.__record_shown__ = tuple(f.name for f in fields if f.repr)
    made.__eq__ = _eq
    made.__hash__ = _hash
    made.__repr__ = _repr
    return made  # type: ignore[no-any-return]


def _eq(self: Any, other: Any) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented  # type: ignore[no-any-return]
    names = self.__record_compared__  # as tuples: compared as dataclass's __eq__ compares
    return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, name) for name in self.__record_hashed__))


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__record_shown__)
    return f"{self.__class__.__qualname__}({shown})"
