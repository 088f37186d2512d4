"""Plain data in jobctl.models, without a database."""

from __future__ import annotations

import dataclasses

import pytest

from jobctl.models import Delivery, JobSpec


def test_for_commands_gives_what_the_constructor_gives() -> None:
    settings = dict(name="n", queue="q", priority=3, timeout_s=2.5, retries=2,
                    delivery=Delivery.AT_MOST_ONCE, env={"K": "v"}, labels={"a": "b"},
                    after=(1, 2), limits={"k": 1}, cpus=0.5, requires={"t": "x"}, hold=True)
    template = JobSpec(argv=["unused"], **settings)  # type: ignore[arg-type]
    argvs = [["/bin/sh", "-c", "true"], ["echo", "a"], ["b"]]
    specs = template.for_commands(argvs)
    built = [JobSpec(argv=argv, **settings) for argv in argvs]  # type: ignore[arg-type]
    assert specs == built
    assert [spec.argv for spec in specs] == argvs
    assert template.argv == ["unused"]  # the template is left as it was
    assert all(type(spec) is JobSpec and spec.gated and spec.max_attempts == 3
               for spec in specs)
    with pytest.raises(dataclasses.FrozenInstanceError):
        specs[0].queue = "other"  # type: ignore[misc]


def test_for_commands_of_nothing_is_nothing() -> None:
    assert JobSpec(argv=["x"]).for_commands([]) == []
