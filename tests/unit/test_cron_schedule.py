"""jobctl.cron: cron fire times against crontab(5) and hand-computed DST times, intervals,
validation messages, and crontab parsing.

The crontab(5) reference is a brute-force matcher written here from the man page (Debian cron),
independent of croniter: it checks every minute of a year against each expression's fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from jobctl.cron import CronError, Timing, normalize, parse_crontab, wall_to_utc, zone

# --- an independent crontab(5) matcher ------------------------------------------------------------

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (low, high, names whose index + offset is their number)
RANGES = [(0, 59, None, 0), (0, 23, None, 0), (1, 31, None, 0), (1, 12, MONTHS, 1),
          (0, 7, DAYS, 0)]


def _number(text: str, names: list[str] | None, offset: int) -> int:
    if names and text.lower() in names:
        return names.index(text.lower()) + offset
    return int(text)


def _field_values(text: str, low: int, high: int, names: list[str] | None,
                  offset: int) -> set[int]:
    """crontab(5): lists of ranges (`a-b`), steps (`range/n`, `*/n`), `*`, numbers, names."""
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, b = base.split("-")
            first, last = _number(a, names, offset), _number(b, names, offset)
        else:
            first = _number(base, names, offset)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return values


def crontab5_matcher(expression: str) -> Callable[[datetime], bool]:
    """The expression's fields parsed once; the returned function says whether a minute matches."""
    fields = expression.split()
    sets = [_field_values(text, *spec) for text, spec in zip(fields, RANGES, strict=True)]
    minutes, hours, days, months, weekdays = sets
    if 7 in weekdays:
        weekdays.add(0)  # 0 and 7 are both Sunday
    # "If both fields are restricted (i.e., don't start with *), the command will be run when
    # either field matches the current time." Otherwise both must match.
    either_day = not (fields[2].startswith("*") or fields[4].startswith("*"))

    def matches(moment: datetime) -> bool:
        if moment.minute not in minutes or moment.hour not in hours or moment.month not in months:
            return False
        day_ok = moment.day in days
        weekday_ok = (moment.isoweekday() % 7) in weekdays
        return (day_ok or weekday_ok) if either_day else (day_ok and weekday_ok)

    return matches


def crontab5_matches(expression: str, moment: datetime) -> bool:
    return crontab5_matcher(expression)(moment)


EXPRESSIONS = [
    "0 0 */2 * 1",  # day of month starts with *: AND with Monday (croniter alone would OR)
    "30 4 1,15 * 5",  # both restricted: the 1st, the 15th and every Friday
    "*/15 9-17 * * MON-FRI",
    "0 12 * JAN,jul SUN",
    "5 0 * 8 *",
    "23 0-20/2 * * *",
    "0 0 13 * 5",  # every Friday and every 13th
    "0 6 1-7 * 7",  # 7 = Sunday, OR the first seven days
    "59 23 31 12 *",
    "10 3 * * 0",
    "0 0 1-31/10 * *",
    "7 7 */7 * *",
]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_five_fields_fire_as_crontab5_says_for_every_minute_of_a_year(expression: str) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    end = datetime(2026, 1, 1, tzinfo=UTC)
    matches = crontab5_matcher(expression)
    expected = [moment for moment in _minutes(start, end) if matches(moment)]
    timing = Timing(normalize(expression), None, "UTC", start)
    actual = [t for t in timing.upcoming(start - timedelta(seconds=1), len(expected) + 1)
              if t < end]
    assert expected, "the reference matched nothing: the expression list is wrong"
    assert actual == expected


def test_the_reference_matcher_itself_follows_the_day_rule() -> None:
    # 2025-01-13 is a Monday and the 13th; 2025-01-06 a Monday and the 6th.
    assert crontab5_matches("0 0 13 * 5", datetime(2025, 1, 13))  # the 13th, not a Friday
    assert crontab5_matches("0 0 13 * 5", datetime(2025, 1, 3))  # a Friday, not the 13th
    assert not crontab5_matches("0 0 */2 * 1", datetime(2025, 1, 6))  # Monday, even day
    assert crontab5_matches("0 0 */2 * 1", datetime(2025, 1, 13))  # Monday, odd day


def _minutes(start: datetime, end: datetime) -> Iterator[datetime]:
    """Every minute in [start, end)."""
    day = start
    while day < end:
        for hour in range(24):
            for minute in range(60):
                yield day.replace(hour=hour, minute=minute)
        day += timedelta(days=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_seconds_come_first_in_six_fields() -> None:
    # Second 31 of minutes 10-15 of hour 1, Monday to Friday. 2025-01-03 is a Friday.
    timing = Timing(normalize("31 10-15 1 * * MON-FRI"), None, "UTC", utc(2025, 1, 1))
    times = timing.upcoming(utc(2025, 1, 3, 1, 14, 0), 4)
    assert times == [utc(2025, 1, 3, 1, 14, 31), utc(2025, 1, 3, 1, 15, 31),
                     utc(2025, 1, 6, 1, 10, 31), utc(2025, 1, 6, 1, 11, 31)]


def test_every_second_cron_lists_each_due_second_once() -> None:
    timing = Timing(normalize("* * * * * *"), None, "UTC", utc(2025, 1, 1))
    due = timing.due(utc(2025, 1, 1, 0, 0, 10), utc(2025, 1, 1, 0, 0, 14, 500), 100)
    assert due == [utc(2025, 1, 1, 0, 0, s) for s in range(10, 15)]
    assert timing.due(utc(2025, 1, 1, 0, 0, 10), utc(2025, 1, 1, 0, 0, 14), 2) == [
        utc(2025, 1, 1, 0, 0, 13), utc(2025, 1, 1, 0, 0, 14)]  # the latest, under a cap


# --- DST, Europe/Berlin: 2025-03-30 02:00 CET -> 03:00 CEST; 2025-10-26 03:00 CEST -> 02:00 CET ---


def test_spring_forward_a_nonexistent_time_fires_at_the_first_instant_after_the_gap() -> None:
    timing = Timing(normalize("30 2 * * *"), None, "Europe/Berlin", utc(2025, 1, 1))
    times = timing.upcoming(utc(2025, 3, 28, 12), 4)
    assert times == [
        utc(2025, 3, 29, 1, 30),  # 02:30 CET
        utc(2025, 3, 30, 1, 0),  # 02:30 does not exist: 03:00 CEST, the end of the gap
        utc(2025, 3, 31, 0, 30),  # 02:30 CEST
        utc(2025, 4, 1, 0, 30),
    ]


def test_spring_forward_several_missing_times_fire_once() -> None:
    timing = Timing(normalize("*/30 * * * *"), None, "Europe/Berlin", utc(2025, 1, 1))
    times = timing.upcoming(utc(2025, 3, 30, 0, 15), 4)
    # 01:30 CET; 02:00 and 02:30 do not exist and 03:00 CEST is the same instant: once.
    assert times == [utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1, 0), utc(2025, 3, 30, 1, 30),
                     utc(2025, 3, 30, 2, 0)]


def test_fall_back_a_repeated_time_fires_once() -> None:
    timing = Timing(normalize("30 2 * * *"), None, "Europe/Berlin", utc(2025, 1, 1))
    times = timing.upcoming(utc(2025, 10, 25, 12), 3)
    # 02:30 happens at 00:30 UTC (CEST) and 01:30 UTC (CET): only the first fires.
    assert times == [utc(2025, 10, 26, 0, 30), utc(2025, 10, 27, 1, 30), utc(2025, 10, 28, 1, 30)]


def test_fall_back_every_half_hour_fires_each_wall_time_once() -> None:
    timing = Timing(normalize("*/30 * * * *"), None, "Europe/Berlin", utc(2025, 1, 1))
    expected = [utc(2025, 10, 26, 0, 0), utc(2025, 10, 26, 0, 30),  # 02:00, 02:30 CEST
                utc(2025, 10, 26, 2, 0), utc(2025, 10, 26, 2, 30)]  # 03:00, 03:30 CET
    assert timing.upcoming(utc(2025, 10, 25, 23, 45), 4) == expected
    # The same times seen from the scheduler's side (due, counting back from a later moment),
    # and from a moment inside the repeated hour's second pass.
    assert timing.due(utc(2025, 10, 25, 23, 45), utc(2025, 10, 26, 2, 40), 10) == expected
    assert timing.due(utc(2025, 10, 25, 23, 45), utc(2025, 10, 26, 1, 40), 10) == expected[:2]
    assert timing.next_after(utc(2025, 10, 26, 1, 10)) == utc(2025, 10, 26, 2, 0)


def test_wall_to_utc_maps_gap_and_fold() -> None:
    berlin = zone("Europe/Berlin")
    assert wall_to_utc(datetime(2025, 3, 30, 2, 0), berlin) == utc(2025, 3, 30, 1, 0)
    assert wall_to_utc(datetime(2025, 3, 30, 2, 59, 59), berlin) == utc(2025, 3, 30, 1, 0)
    assert wall_to_utc(datetime(2025, 10, 26, 2, 15), berlin) == utc(2025, 10, 26, 0, 15)


def test_new_york_daily_job_keeps_local_time_across_dst() -> None:
    timing = Timing(normalize("@daily"), None, "America/New_York", utc(2025, 1, 1))
    assert timing.upcoming(utc(2025, 3, 8, 12), 2) == [utc(2025, 3, 9, 5), utc(2025, 3, 10, 4)]


# --- intervals, start and end -------------------------------------------------------------------


def test_interval_fires_from_its_anchor_whatever_the_zone() -> None:
    timing = Timing(None, 90.0, "Europe/Berlin", utc(2025, 3, 30, 0, 59))
    assert timing.upcoming(utc(2025, 3, 30, 1, 0), 3) == [
        utc(2025, 3, 30, 1, 0, 30), utc(2025, 3, 30, 1, 2), utc(2025, 3, 30, 1, 3, 30)]
    assert timing.due(utc(2025, 3, 30, 0, 59), utc(2025, 3, 30, 1, 2), 10) == [
        utc(2025, 3, 30, 0, 59), utc(2025, 3, 30, 1, 0, 30), utc(2025, 3, 30, 1, 2)]


def test_start_and_end_bound_the_fire_times() -> None:
    timing = Timing(normalize("0 * * * *"), None, "UTC", utc(2025, 1, 1),
                    start_at=utc(2025, 1, 1, 5), end_at=utc(2025, 1, 1, 7))
    assert timing.upcoming(utc(2025, 1, 1), 5) == [utc(2025, 1, 1, 5), utc(2025, 1, 1, 6),
                                                   utc(2025, 1, 1, 7)]
    assert timing.due(utc(2025, 1, 1), utc(2025, 1, 1, 23), 10) == [
        utc(2025, 1, 1, 5), utc(2025, 1, 1, 6), utc(2025, 1, 1, 7)]


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("expression", "message"), [
    ("61 * * * *", "bad minute field '61'"),
    ("* 24 * * *", "bad hour field '24'"),
    ("* * 0 * *", "bad day of month field '0'"),
    ("* * * FOO *", "bad month field 'FOO'"),
    ("* * * * MONDAY", "bad day of week field 'MONDAY'"),
    ("61 * * * * *", "bad second field '61'"),
    ("* * *", "it has 3 fields"),
    ("@fortnightly", "unknown alias '@fortnightly'"),
    ("0 0 30 2 *", "no time matches it"),
])
def test_invalid_expressions_name_the_field_and_value(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=re.escape(message)):
        normalize(expression)


def test_names_aliases_and_specials_are_accepted() -> None:
    assert normalize("@hourly") == "0 * * * *"
    assert normalize("  0  12 L  * * ") == "0 12 L * *"
    for expression in ("0 0 * * 5#2", "0 0 15W * *", "0 9 * JAN-MAR MON-FRI"):
        assert normalize(expression) == expression


def test_unknown_time_zone_is_an_error() -> None:
    with pytest.raises(CronError, match="unknown time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")


# --- crontab files ------------------------------------------------------------------------------


def test_parse_crontab_lines_comments_env_and_aliases() -> None:
    text = "\n".join([
        "# nightly things",
        "SHELL=/bin/bash",
        "MAILTO=ops@example.com",
        "*/5 * * * * /usr/bin/check  --quick",
        "",
        "CRON_TZ=Europe/Berlin",
        "@daily /usr/bin/rotate-logs",
        "30 2 * * 1-5 echo 50\\% done",
    ])
    entries = parse_crontab(text).entries
    assert [(e.line, e.cron, e.command, e.timezone) for e in entries] == [
        (4, "*/5 * * * *", "/usr/bin/check  --quick", None),
        (7, "0 0 * * *", "/usr/bin/rotate-logs", "Europe/Berlin"),
        (8, "30 2 * * 1-5", "echo 50% done", "Europe/Berlin"),
    ]
    assert entries[0].env == {"SHELL": "/bin/bash", "MAILTO": "ops@example.com"}


@pytest.mark.parametrize(("text", "message"), [
    ("61 * * * * true", "line 1: invalid cron expression '61 * * * *': bad minute field '61'"),
    ("* * * * echo", "line 1: expected 5 time fields and a command"),
    ("\n\nCRON_TZ=Mars/Olympus", "line 3: unknown time zone 'Mars/Olympus'"),
])
def test_parse_crontab_names_the_bad_line(text: str, message: str) -> None:
    with pytest.raises(CronError, match=re.escape(message)):
        parse_crontab(text)
