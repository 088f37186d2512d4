"""Parsing and formatting of durations and instants (jobctl/timeparse.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobctl.timeparse import (
    format_age,
    format_duration,
    format_instant,
    isoformat_utc,
    parse_duration,
    parse_instant,
)

# Monday 2026-11-23, 13:00 in Berlin (CET, UTC+1).
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# Berlin's local date is already the 24th (00:30) while UTC's is still the 23rd.
NOW_AFTER_LOCAL_MIDNIGHT = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)
# Saturday 2026-10-24, 22:00 CEST; clocks go back to CET at 03:00 tonight.
NOW_BEFORE_DST_END = datetime(2026, 10, 24, 20, 0, tzinfo=UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


@pytest.fixture(autouse=True)
def berlin_time() -> Iterator[None]:
    """Run every test in a zone with DST and a non-zero offset, so local-time bugs show."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "Europe/Berlin")
        time.tzset()
        yield
    # The context has restored TZ by now; tzset makes the C library re-read it.
    time.tzset()


def names_input(text: str) -> str:
    """A pattern for pytest.raises(match=) that the error names the offending text."""
    return re.escape(f"'{text}'")


# ------------------------------------------------------------------------- parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        # Plain numbers are seconds.
        ("90", 90),
        ("1.5", 1.5),
        (".5", 0.5),
        ("0", 0),
        (" 42 ", 42),
        # Unit-suffixed, single and compound.
        ("500ms", 0.5),
        ("90s", 90),
        ("10m", 600),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("1.5h", 5400),
        ("1d2h3m4s5ms", 93784.005),
        # Units are case-insensitive and may stand apart from the number.
        ("1H30M", 5400),
        ("10MS", 0.01),
        ("5 min", 300),
        # Long-ish unit spellings.
        ("2sec", 2),
        ("3secs", 3),
        ("1min", 60),
        ("2mins", 120),
        ("1hour", 3600),
        ("2hours", 7200),
        ("1day", 86400),
        ("3days", 259200),
        # ISO 8601.
        ("PT1H30M", 5400),
        ("P1D", 86400),
        ("P1DT2H", 93600),
        ("PT0.5S", 0.5),
        ("PT0,5S", 0.5),
        ("PT36H", 129600),
        ("P1W", 604800),
        ("pt1h30m", 5400),
    ],
)
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "5x",
        "-5s",
        "-5",
        "nan",
        "inf",
        "1e3",
        "h",
        "1h30",  # a trailing number without a unit is ambiguous
        "1.5.5h",
        "1,5h",
        "+5m",
        "1m 2min",  # the same unit twice is probably a typo
        "5 s s",
        "\u0665s",  # ARABIC-INDIC DIGIT FIVE: float() would take it, we do not
        "P",
        "PT",
        "P1DT",
        "P1M",  # months and years have no fixed length
        "P1Y",
        "PT1H1D",
        "P-1D",
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=rf"^invalid duration {names_input(text)}: use "):
        parse_duration(text)


def test_parse_duration_rejects_overflow_to_infinity() -> None:
    with pytest.raises(ValueError, match="invalid duration '999"):
        parse_duration("9" * 400)


def test_parse_duration_error_is_one_line_and_short() -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration("5\nx" + "y" * 500)
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < 200


# -------------------------------------------------------------------------- parse_instant


@pytest.mark.parametrize(
    ("text", "now", "expected"),
    [
        # ISO 8601 with an offset or "Z".
        ("2026-11-23T18:00:00Z", NOW, utc(2026, 11, 23, 18)),
        ("2026-11-23t18:00z", NOW, utc(2026, 11, 23, 18)),
        ("2026-11-23T18:00:00.123456Z", NOW, utc(2026, 11, 23, 18, 0, 0, 123456)),
        ("2026-11-23 18:00+01:00", NOW, utc(2026, 11, 23, 17)),
        ("2026-11-23T18:00:00-05:00", NOW, utc(2026, 11, 23, 23)),
        # Naive ISO 8601 is local time, with the offset in force on that date.
        ("2026-11-23 18:00", NOW, utc(2026, 11, 23, 17)),
        ("2026-07-01T12:00", NOW, utc(2026, 7, 1, 10)),
        ("2026-11-24", NOW, utc(2026, 11, 23, 23)),
        # now and now + duration.
        ("now", NOW, NOW),
        (" NOW ", NOW, NOW),
        ("+10m", NOW, utc(2026, 11, 23, 12, 10)),
        ("+1h30m", NOW, utc(2026, 11, 23, 13, 30)),
        ("+90", NOW, utc(2026, 11, 23, 12, 1, 30)),
        ("+PT1H", NOW, utc(2026, 11, 23, 13)),
        # HH:MM[:SS]: today while still ahead of the local clock (13:00), else tomorrow.
        ("14:00", NOW, utc(2026, 11, 23, 13)),
        ("13:00:01", NOW, utc(2026, 11, 23, 12, 0, 1)),
        ("13:00", NOW, utc(2026, 11, 24, 12)),
        ("09:30", NOW, utc(2026, 11, 24, 8, 30)),
        ("9:30", NOW, utc(2026, 11, 24, 8, 30)),
        ("01:00", NOW_AFTER_LOCAL_MIDNIGHT, utc(2026, 11, 24, 0)),
        # tomorrow is the local calendar's tomorrow.
        ("tomorrow 09:30", NOW, utc(2026, 11, 24, 8, 30)),
        ("Tomorrow 23:59:59", NOW, utc(2026, 11, 24, 22, 59, 59)),
        ("tomorrow 09:00", NOW_AFTER_LOCAL_MIDNIGHT, utc(2026, 11, 25, 8)),
        # Across the end of DST, wall-clock times keep their hour (now 24 h 1 h apart).
        ("tomorrow 12:00", NOW_BEFORE_DST_END, utc(2026, 10, 25, 11)),
        ("09:00", NOW_BEFORE_DST_END, utc(2026, 10, 25, 8)),
    ],
)
def test_parse_instant_accepts(text: str, now: datetime, expected: datetime) -> None:
    result = parse_instant(text, now=now)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "soon",
        "yesterday",
        "next week",
        "12",
        "24:00",
        "25:00",
        "12:60",
        "12:00:60",
        "tomorrow",
        "tomorrow noon",
        "tomorrow 25:00",
        "+",
        "+5x",
        "+-5m",
        "-10m",
        "now+5m",
        "2026-13-01",
        "2026-02-30",
        "2026-11-23T18:00:00+25:00",
        "9999-12-31T23:59:59-05:00",  # past datetime.max once in UTC
        "+99999999w",  # past datetime.max
    ],
)
def test_parse_instant_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=rf"^invalid time {names_input(text)}: use ISO 8601"):
        parse_instant(text, now=NOW)


def test_parse_instant_defaults_now_to_the_current_time() -> None:
    before = datetime.now(UTC)
    result = parse_instant("+1h")
    after = datetime.now(UTC)
    assert before + timedelta(hours=1) <= result <= after + timedelta(hours=1)


def test_parse_instant_takes_a_naive_now_as_utc() -> None:
    assert parse_instant("+1m", now=datetime(2026, 11, 23, 12)) == utc(2026, 11, 23, 12, 1)


# ------------------------------------------------------------------------ format_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (float("nan"), "-"),
        (float("inf"), "-"),
        (0, "0.0s"),
        (0.3, "0.3s"),
        (2.5, "2.5s"),
        (9.9, "9.9s"),
        (9.94, "9.9s"),
        (9.96, "10s"),  # rounds up into the whole-second form, not "10.0s"
        (10, "10s"),
        (12.5, "13s"),  # halves round up, not to even
        (14.5, "15s"),
        (42, "42s"),
        (59.4, "59s"),
        (59.6, "1m00s"),
        (185, "3m05s"),
        (3599.6, "1h00m"),
        (3720, "1h02m"),
        (3749, "1h02m"),
        (3750, "1h03m"),
        (86399, "1d00h"),
        (183600, "2d03h"),
        (400 * 86400, "400d00h"),
        (-5, "-5.0s"),
        (-185, "-3m05s"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


# -------------------------------------------------------------------- format_instant & co


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (None, "-"),
        (utc(2026, 11, 23, 17), "2026-11-23 18:00:00"),
        (utc(2026, 7, 1, 10, 0, 5, 999999), "2026-07-01 12:00:05"),
        (datetime(2026, 11, 23, 18, tzinfo=timezone(timedelta(hours=-5))), "2026-11-24 00:00:00"),
        (datetime(2026, 11, 23, 17), "2026-11-23 18:00:00"),  # naive from code: UTC
    ],
)
def test_format_instant(dt: datetime | None, text: str) -> None:
    assert format_instant(dt) == text


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (None, "-"),
        (NOW, "0s ago"),
        (NOW - timedelta(seconds=0.4), "0s ago"),
        (NOW - timedelta(seconds=3), "3s ago"),
        (NOW - timedelta(minutes=5), "5m00s ago"),
        (NOW - timedelta(minutes=5, seconds=12), "5m12s ago"),
        (NOW - timedelta(hours=1, minutes=2), "1h02m ago"),
        (NOW - timedelta(days=2, hours=3), "2d03h ago"),
        (NOW + timedelta(minutes=5), "in 5m00s"),
    ],
)
def test_format_age(dt: datetime | None, text: str) -> None:
    assert format_age(dt, NOW) == text


def test_format_age_defaults_now_to_the_current_time() -> None:
    assert format_age(datetime.now(UTC) - timedelta(minutes=5)) == "5m00s ago"


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (None, None),
        (utc(2026, 11, 23, 17), "2026-11-23T17:00:00+00:00"),
        (utc(2026, 11, 23, 17, 0, 0, 123), "2026-11-23T17:00:00.000123+00:00"),
        (
            datetime(2026, 11, 23, 18, 0, 0, 5, tzinfo=timezone(timedelta(hours=1))),
            "2026-11-23T17:00:00.000005+00:00",
        ),
        (datetime(2026, 11, 23, 17), "2026-11-23T17:00:00+00:00"),  # naive from code: UTC
    ],
)
def test_isoformat_utc(dt: datetime | None, text: str | None) -> None:
    assert isoformat_utc(dt) == text


def test_isoformat_utc_round_trips_through_fromisoformat() -> None:
    dt = utc(2026, 11, 23, 17, 4, 5, 123456)
    text = isoformat_utc(dt)
    assert text is not None
    assert datetime.fromisoformat(text) == dt
