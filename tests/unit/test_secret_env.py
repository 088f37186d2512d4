"""jobctl.secret_env without a database: references checked as `job submit` does, resolved as
a worker does, and the output masked wherever the pipe's reads cut a secret."""

from __future__ import annotations

import itertools
import random

import pytest

from jobctl.secret_env import (
    MIN_MASKED_BYTES,
    Masker,
    SecretError,
    masked_values,
    parse,
    reference_problem,
    resolve,
)


def masked(secrets: list[bytes], chunks: list[bytes]) -> bytes:
    masker = Masker(secrets)
    return b"".join([*(masker.feed(chunk) for chunk in chunks), masker.finish()])


def every_split(data: bytes) -> list[list[bytes]]:
    """`data` cut in two, and in three, at every place."""
    cuts = [[data[:i], data[i:]] for i in range(len(data) + 1)]
    cuts += [[data[:i], data[i:j], data[j:]]
             for i, j in itertools.combinations(range(len(data) + 1), 2)]
    return cuts


def test_one_secret_masked_however_the_reads_cut_it() -> None:
    data = b"token=hunter22; again hunter22\nend hunter2 (not it)"
    expected = b"token=***; again ***\nend hunter2 (not it)"
    for chunks in every_split(data):
        assert masked([b"hunter22"], chunks) == expected, chunks


def test_one_byte_at_a_time() -> None:
    data = b"xxS3CR3Tyy" * 3
    assert masked([b"S3CR3T"], [bytes([byte]) for byte in data]) == b"xx***yy" * 3


def test_overlapping_occurrences() -> None:
    # "abab" twice over "ababab": the first match wins, the rest ("ab") is not the secret.
    for chunks in every_split(b"ababab"):
        assert masked([b"abab"], chunks) == b"***ab", chunks
    for chunks in every_split(b"abababab"):
        assert masked([b"abab"], chunks) == b"******", chunks
    # Back to back, and one running into the next.
    for chunks in every_split(b"aaaaaaaaa"):
        assert masked([b"aaaa"], chunks) == b"******a", chunks


def test_several_secrets_the_longest_first() -> None:
    secrets = [b"pass", b"password1", b"token-xyz"]
    data = b"password1 pass token-xyz passpass tokenpassword1"
    expected = b"*** *** *** ****** token***"
    for chunks in every_split(data):
        assert masked(secrets, chunks) == expected, chunks


def test_a_longer_secret_that_starts_earlier_wins_over_a_shorter_one_inside_it() -> None:
    # "cdef" is whole in the first read; "abcdefgh", which holds it, only with the second.
    assert masked([b"abcdefgh", b"cdef"], [b"xxabcdef", b"ghyy"]) == b"xx***yy"
    assert masked([b"abcdefgh", b"cdef"], [b"xxabcdef", b"gZyy"]) == b"xxab***gZyy"


def test_everything_else_is_byte_exact() -> None:
    rng = random.Random(7)
    secret = b"\x00\xffSECRET\n"
    pieces = [bytes(rng.randrange(256) for _ in range(rng.randrange(50))) for _ in range(40)]
    data = secret.join(pieces)
    expected = b"***".join(pieces)
    cuts = sorted(rng.sample(range(len(data)), 30))
    chunks = [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    assert masked([secret], chunks) == expected


def test_held_back_only_what_could_be_a_secret() -> None:
    masker = Masker([b"secret"])
    # The last 5 bytes (len("secret") - 1) could be the start of it: held back.
    assert masker.feed(b"hello world") == b"hello "
    assert masker.feed(b"!") == b"w"
    assert masker.feed(b"") == b""
    assert masker.finish() == b"orld!"


def test_values_shorter_than_the_minimum_are_not_masked() -> None:
    assert MIN_MASKED_BYTES == 4
    assert masked_values(["abc", "", "abcd", "ééé"]) == [b"\xc3\xa9" * 3, b"abcd"]


def test_resolve_files_and_variables(tmp_path: object) -> None:
    files = {"/a": b"line\n", "/b": b"two\n\n", "/c": b"no newline", "/d": b"\xffraw\n"}

    def read(path: str) -> bytes:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory")
        return files[path]

    values = resolve({"A": "file:/a", "B": "file:/b", "C": "file:/c", "D": "file:/d",
                      "E": "env:HOME_TOKEN"}, {"HOME_TOKEN": "tok"}, read)
    assert values == {"A": "line", "B": "two\n", "C": "no newline", "D": "\udcffraw",
                      "E": "tok"}
    with pytest.raises(SecretError, match=r"^secret X: cannot read file /nope: No such file"):
        resolve({"X": "file:/nope"}, {}, read)
    with pytest.raises(SecretError, match=r"^secret Y: variable MISSING is not set on this "):
        resolve({"Y": "env:MISSING"}, {}, read)
    with pytest.raises(SecretError, match="NUL byte"):
        resolve({"Z": "file:/z"}, {}, lambda path: b"a\0b")


@pytest.mark.parametrize(("name", "reference", "problem"), [
    ("1X", "env:A", "'1X' is no environment variable name"),
    ("A-B", "env:A", "'A-B' is no environment variable name"),
    ("", "env:A", "'' is no environment variable name"),
    (7, "env:A", "7 is no environment variable name"),
    ("TOKEN", 7, "TOKEN: the reference must be text"),
    ("TOKEN", "vault:x", "TOKEN='vault:x': the value is file:PATH or env:VAR"),
    ("TOKEN", "/etc/token", "the value is file:PATH or env:VAR"),
    ("TOKEN", "file:", "TOKEN=file:: the path is empty"),
    ("TOKEN", "env:", "TOKEN=env:: the variable is empty"),
    ("TOKEN", "env:A=B", "'A=B' is no environment variable name"),
    ("TOKEN", "file:/a\0b", "the path holds a NUL byte"),
])
def test_bad_references(name: object, reference: object, problem: str) -> None:
    found = reference_problem(name, reference)
    assert found is not None and problem in found, found


def test_good_references() -> None:
    assert reference_problem("TOKEN", "file:/run/secrets/token") is None
    assert reference_problem("_t0", "env:CI_TOKEN") is None
    assert parse(["A=file:/x", "B=env:Y", "A=env:Z"]) == {"A": "env:Z", "B": "env:Y"}
    with pytest.raises(ValueError, match="use NAME=file:PATH or NAME=env:VAR"):
        parse(["TOKEN"])
