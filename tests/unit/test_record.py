"""`jobctl.record.record` behaves as `dataclass(frozen=True)` does: the same class written both
ways, compared operation by operation."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from jobctl.record import record


def _pair(**field_options: Any) -> tuple[type[Any], type[Any]]:
    """The same class as record makes it and as dataclass(frozen=True) makes it."""

    def body() -> dict[str, Any]:
        return {
            "__annotations__": {"a": "int", "b": "list[int]", "c": "str"},
            "b": dataclasses.field(default_factory=list, **field_options),
            "c": dataclasses.field(default="c", repr=False),
        }

    ours = record(type("Thing", (), body()))
    stdlib = dataclasses.dataclass(frozen=True)(type("Thing", (), body()))
    return ours, stdlib


@pytest.mark.parametrize("options", [{}, {"compare": False}, {"hash": False},
                                     {"compare": False, "hash": True}])
def test_equality_hash_and_repr_are_dataclass_own(options: dict[str, Any]) -> None:
    ours, stdlib = _pair(**options)
    cases = [((1,), (1,)), ((1, [2]), (1, [3])), ((1,), (2,)), ((1, [], "x"), (1, [], "y")),
             ((math.nan,), (math.nan,))]
    for left, right in cases:
        assert (ours(*left) == ours(*right)) is (stdlib(*left) == stdlib(*right)), (options, left)
        assert (ours(*left) != ours(*right)) is (stdlib(*left) != stdlib(*right)), (options, left)
        assert repr(ours(*left)) == repr(stdlib(*left))
    nan = math.nan
    assert (ours(nan) == ours(nan)) is (stdlib(nan) == stdlib(nan))  # one object: identical
    hashable = options.get("hash") is False or (options.get("compare") is False
                                                and options.get("hash") is not True)
    if hashable:  # the list field is left out of the hash
        assert (hash(ours(1, [2])) == hash(ours(1, [3]))) is (
            hash(stdlib(1, [2])) == hash(stdlib(1, [3])))
        assert hash(ours(1, [2])) == hash(ours(1, [2]))
    else:  # the list field is hashed: unhashable, as dataclass's
        with pytest.raises(TypeError):
            hash(ours(1, [2]))
        with pytest.raises(TypeError):
            hash(stdlib(1, [2]))
    assert ours(1) != (1, [], "c") and ours(1).__eq__(stdlib(1)) is NotImplemented


def test_frozen_replace_fields_and_subclasses() -> None:
    ours, _ = _pair()
    thing = ours(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        thing.a = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        del thing.a
    assert dataclasses.replace(thing, a=5) == ours(5)
    assert dataclasses.asdict(thing) == {"a": 1, "b": [], "c": "c"}
    assert [f.name for f in dataclasses.fields(ours)] == ["a", "b", "c"]

    @record
    class Base:
        x: int

    @record
    class Child(Base):
        y: int = 0

    assert Child(1, 2) == Child(1, 2) and Child(1, 2) != Child(1, 3)
    assert Base(1) != Child(1)  # another class: not equal, as dataclass says
    assert repr(Child(1, 2)) == "test_frozen_replace_fields_and_subclasses.<locals>.Child(x=1, y=2)"
    assert hash(Child(1, 2)) == hash((1, 2))
