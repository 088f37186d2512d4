"""Job arrays' specs (`job submit --array SPEC`), parsed without a database.

    0-999        indices 0 to 999
    1-100:4      1, 5, 9, … 97 (a step)
    3,7,9        a list; items of a list may be ranges too: 1-3,10-20:5
    …%N          at most N of the array's tasks running at once (`0-999%5`)

At most MAX_ARRAY_SIZE (100,000) indices, each from 0 to 2**31 - 1, none twice; a range's end
is not below its start. Anything else is a ValueError whose message says what is wrong.
"""

from __future__ import annotations

import re

from jobctl.models import MAX_ARRAY_INDEX, MAX_ARRAY_SIZE
from jobctl.record import record

_ITEM = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")


@record
class ArraySpec:
    indices: list[int]  # in the order the spec gives them
    throttle: int | None = None  # %N: at most N running at once


def parse_array_spec(text: str) -> ArraySpec:
    """`0-999%5` → indices 0…999, throttle 5 (see the module's doc)."""
    spec, percent, throttle_text = text.strip().partition("%")
    throttle = None
    if percent:
        if not throttle_text.isdigit() or not 1 <= int(throttle_text) <= 2**31 - 1:
            raise ValueError(f"%N takes a whole number of at least 1, not {throttle_text!r}")
        throttle = int(throttle_text)
    if not spec:
        raise ValueError("no indices: give a range (0-999), a range with a step (1-100:4) or "
                         "a list (3,7,9)")
    indices: list[int] = []
    for item in spec.split(","):
        item = item.strip()
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"{item!r} is not an index (7), a range (0-999) or a range with a "
                             "step (1-100:4)")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        step = int(match.group(3)) if match.group(3) is not None else 1
        if last < first:
            raise ValueError(f"range {item!r} ends before it starts")
        if step < 1:
            raise ValueError(f"range {item!r}: the step must be 1 or more")
        if last > MAX_ARRAY_INDEX:
            raise ValueError(f"an index is at most {MAX_ARRAY_INDEX}, not {last}")
        count = (last - first) // step + 1
        if len(indices) + count > MAX_ARRAY_SIZE:
            raise ValueError(f"an array has at most {MAX_ARRAY_SIZE:,} tasks; {text.strip()!r} "
                             f"gives {len(indices) + count:,} or more")
        indices.extend(range(first, last + 1, step))
    if len(set(indices)) != len(indices):
        seen: set[int] = set()
        for index in indices:
            if index in seen:
                raise ValueError(f"index {index} is given twice")
            seen.add(index)
    return ArraySpec(indices, throttle)
