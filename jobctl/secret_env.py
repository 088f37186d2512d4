"""Secrets a job gets in its environment without the database ever holding them.

`job submit --secret-env NAME=file:PATH` (or `NAME=env:VAR`) stores the reference, never the
value: the worker that starts the job reads it on its own machine (`resolve`: a file's contents,
less one trailing newline; a variable of the worker's environment) and sets NAME for the command
alone. What the command writes is masked before it is stored (`Masker`): every occurrence of a
secret's value becomes `***`, in stdout and stderr, wherever the pipe's reads cut it. A value
shorter than MIN_MASKED_BYTES is passed on but not masked: masking every "1" or "ab" of the output
would destroy it and hide next to nothing.

Standard library only and cheap to import: `job submit` validates with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

KINDS = ("file", "env")
MIN_MASKED_BYTES = 4
MASK = b"***"
# A name the command can read back: a shell's variable name.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def reference_problem(name: object, reference: object) -> str | None:
    """What is wrong with one secret reference (NAME → "file:PATH" | "env:VAR"), worded without
    flags; None when it is a good one. (That NAME is not also a plain variable of the job is
    the caller's to check: jobctl.client.)"""
    if not isinstance(name, str) or not re.fullmatch(_NAME, name):
        return (f"{name!r} is no environment variable name (letters, digits and _, not "
                "starting with a digit)")
    if not isinstance(reference, str):
        return f"{name}: the reference must be text (file:PATH or env:VAR)"
    kind, sep, target = reference.partition(":")
    if not sep or kind not in KINDS:
        return f"{name}={reference!r}: the value is file:PATH or env:VAR"
    if not target:
        return f"{name}={reference}: the {'path' if kind == 'file' else 'variable'} is empty"
    if "\0" in target:
        return f"{name}: the {'path' if kind == 'file' else 'variable'} holds a NUL byte"
    if kind == "env" and ("=" in target):
        return f"{name}={reference!r}: {target!r} is no environment variable name"
    return None


def parse(values: Iterable[str]) -> dict[str, str]:
    """NAME=file:PATH and NAME=env:VAR, as given (one string each), as references by name; the
    last one of a name wins. Only the form is checked here (`reference_problem` does the rest);
    raises ValueError naming what it cannot split."""
    references: dict[str, str] = {}
    for value in values:
        name, sep, reference = value.partition("=")
        if not sep or not name:
            raise ValueError(f"{value!r}: use NAME=file:PATH or NAME=env:VAR")
        references[name] = reference
    return references


class SecretError(Exception):
    """A reference this worker cannot resolve; the message names it, never a value."""


def resolve(references: Mapping[str, str], environ: Mapping[str, str] | None,
            read_file: Callable[[str], bytes]) -> dict[str, str]:
    """The secrets' values by name, as environment values (bytes that are no UTF-8 kept through
    surrogateescape, as os.environ does). A file's contents lose one trailing newline. Raises
    SecretError for one it cannot read. `environ` None: `env:` references are refused (a worker
    that runs jobs as their submitters keeps its own variables to itself: jobctl.runas)."""
    import os

    values: dict[str, str] = {}
    for name, reference in references.items():
        kind, _, target = reference.partition(":")
        if kind == "file":
            try:
                data = read_file(target)
            except OSError as error:
                raise SecretError(f"secret {name}: cannot read file {target}: "
                                  f"{error.strerror or error}") from None
            data = data[:-1] if data.endswith(b"\n") else data
            if b"\0" in data:
                raise SecretError(f"secret {name}: file {target} holds a NUL byte, which no "
                                  "environment variable can")
            values[name] = os.fsdecode(data)
        elif kind == "env":
            if environ is None:
                raise SecretError(f"secret {name}: env: references are not resolved on this "
                                  "worker (it runs jobs as their submitters, who may not read "
                                  "its variables): use file:PATH, read as the job's user")
            value = environ.get(target)
            if value is None:
                raise SecretError(f"secret {name}: variable {target} is not set on this worker")
            values[name] = value
        else:  # refused at submit; a row written by something else
            raise SecretError(f"secret {name}: unknown kind of reference {kind!r}")
    return values


def masked_values(values: Iterable[str]) -> list[bytes]:
    """The values the output is masked for: as bytes, at least MIN_MASKED_BYTES long."""
    import os

    return sorted({encoded for encoded in (os.fsencode(value) for value in values)
                   if len(encoded) >= MIN_MASKED_BYTES}, key=len, reverse=True)


class Masker:
    """One stream's output with every occurrence of the secrets replaced by MASK, fed in chunks
    as the pipe gives them. What could still be the start of a secret (at most the longest
    one's length less one byte) is held back until the next chunk or the end decides it.

    At each position the longest secret that matches wins; the search goes on after it, so
    occurrences that overlap (one ending where the next would begin, e.g. "abab" in "ababab")
    become one mask and the rest: none of the value is left for a reader to stitch together
    unless it was the value's own text."""

    def __init__(self, secrets: Iterable[bytes]) -> None:
        ordered = sorted(set(secrets), key=len, reverse=True)  # the longest first at a position
        if not ordered or not ordered[-1]:
            raise ValueError("a Masker needs secrets, none of them empty")
        self._pattern = re.compile(b"|".join(re.escape(secret) for secret in ordered))
        self._keep = len(ordered[0]) - 1 if ordered else 0
        self._tail = b""

    def feed(self, data: bytes) -> bytes:
        """What of the output up to `data` is decided, masked."""
        buffer = self._tail + data
        # A match starting before `safe` is whole (no longer secret at that start runs past the
        # buffer), and no match still incomplete starts before it.
        safe = len(buffer) - self._keep
        out = bytearray()
        position = 0
        for match in self._pattern.finditer(buffer):
            if match.start() >= safe:
                break
            out += buffer[position:match.start()]
            out += MASK
            position = match.end()
        held_from = max(position, safe)
        out += buffer[position:held_from]
        self._tail = buffer[held_from:]
        return bytes(out)

    def finish(self) -> bytes:
        """The rest, at the end of the stream: every occurrence in it masked."""
        rest, self._tail = self._tail, b""
        return self._pattern.sub(MASK, rest)
