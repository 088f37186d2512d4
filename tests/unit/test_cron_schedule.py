"""jobctl.cron: cron fire times against crontab(5) and cron(8) and hand-computed DST times,
intervals, validation messages, and crontab parsing.

The reference is written here from the man pages (Debian cron), independent of croniter and of
jobctl.cron: a brute-force crontab(5) matcher for each expression's fields, driven by a simulation
of cron(8)'s main loop that wakes up every minute of a year and handles clock changes (DST) the
way the daemon does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import pytest

from jobctl.cron import (
    CronError,
    Timing,
    is_wildcard,
    normalize,
    parse_crontab,
    wall_to_utc,
    zone,
)

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


REFERENCE_ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *"}


def crontab_matcher(expression: str) -> Callable[[datetime], bool]:
    """crontab5_matcher with the aliases used here, and with six fields: seconds first."""
    fields = REFERENCE_ALIASES.get(expression, expression).split()
    if len(fields) == 5:
        return crontab5_matcher(" ".join(fields))  # read once a minute: seconds are 0
    seconds = _field_values(fields[0], 0, 59, None, 0)
    rest = crontab5_matcher(" ".join(fields[1:]))
    return lambda moment: moment.second in seconds and rest(moment)


# --- the reference: cron(8)'s main loop -----------------------------------------------------------

MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)


def cron8_wildcard(expression: str) -> bool:
    """cron(8), Debian: "Only jobs that run at a particular time (not specified as @hourly, nor
    with '*' in the hour or minute specifier) are affected. Jobs which are specified with
    wildcards are run based on the new time immediately." Debian's parser flags the minute or
    hour field as a wildcard when its first character is `*` (so `*/20` is one, `0-59/20` not).
    Six fields are jobctl's (seconds first, no cron(8) for them): a `*` second counts too."""
    if expression == "@hourly":
        return True
    fields = REFERENCE_ALIASES.get(expression, expression).split()
    time_of_day = fields[:3] if len(fields) == 6 else fields[:2]
    return any(field.startswith("*") for field in time_of_day)


def cron8_fire_times(expression: str, timezone: str, start: datetime,
                     end: datetime) -> list[datetime]:
    """The instants in [start, end) at which cron(8) starts the job: its main loop (cron.c in
    Debian's cron) wakes up every minute (every second for six fields), compares the local wall
    clock with its virtual clock (the time it has run the jobs for) and

    * one tick later: runs the jobs that match the new time;
    * later by up to 5 minutes (it woke up late): runs all jobs for each tick missed;
    * later by up to 3 hours (DST began): runs the wildcard jobs for the new time, then the
      fixed-time jobs for each tick missed, up to the new time;
    * earlier by up to 3 hours (DST ended): runs only the wildcard jobs for the new time, and
      keeps its virtual clock until the wall clock catches up;
    * else (the clock was set): jumps to the new time and runs all jobs for it.

    A job the loop starts several times at one instant counts once (jobctl has one occurrence per
    fire time; cron(8) would queue it again after each run)."""
    fields = REFERENCE_ALIASES.get(expression, expression).split()
    tick = SECOND if len(fields) == 6 else MINUTE
    matches = crontab_matcher(expression)
    # Whether any tick of a wall-clock hour can match: the expression with * for minute (second).
    in_hour = crontab_matcher(" ".join(["*"] * (len(fields) - 4) + fields[-4:]))
    wildcard = cron8_wildcard(expression)
    tz = ZoneInfo(timezone)
    # The ticks of an hour, as offsets from its start: for five fields only the minutes the
    # minute field lists (no other can match), for six every second.
    ticks_of_hour = ([m * MINUTE for m in sorted(_field_values(fields[0], *RANGES[0]))]
                     if tick == MINUTE else [s * SECOND for s in range(3600)])
    fired: list[datetime] = []

    def run(wall: datetime, now: datetime, *, wildcards: bool, fixed: bool) -> None:
        if (wildcards if wildcard else fixed) and matches(wall) and fired[-1:] != [now]:
            fired.append(now)

    virtual = (start - tick).astimezone(tz).replace(tzinfo=None)
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        last = hour + timedelta(hours=1) - tick
        offset = hour.astimezone(tz).utcoffset()
        assert offset is not None
        steady = offset == last.astimezone(tz).utcoffset()  # else ask the zone at every tick
        if (steady and start <= hour and last < end
                and hour.replace(tzinfo=None) + offset - virtual == tick):
            # An ordinary hour: every tick is one tick later, and runs what matches the time.
            if in_hour(hour.replace(tzinfo=None) + offset) or in_hour(last.replace(tzinfo=None)
                                                                      + offset):
                for into_hour in ticks_of_hour:  # (a minute not listed never matches)
                    now = hour + into_hour
                    if matches(now.replace(tzinfo=None) + offset):
                        fired.append(now)
            virtual = last.replace(tzinfo=None) + offset
            hour += timedelta(hours=1)
            continue
        now = max(hour, start)
        while now <= last and now < end:
            wall = (now.replace(tzinfo=None) + offset if steady
                    else now.astimezone(tz).replace(tzinfo=None))
            late = wall - virtual
            if late == tick:
                virtual = wall
                run(wall, now, wildcards=True, fixed=True)
            elif timedelta(0) < late <= 5 * MINUTE:
                while virtual < wall:
                    virtual += tick
                    run(virtual, now, wildcards=True, fixed=True)
            elif timedelta(0) < late <= timedelta(hours=3):
                run(wall, now, wildcards=True, fixed=False)
                while virtual < wall:
                    virtual += tick
                    run(virtual, now, wildcards=False, fixed=True)
            elif -timedelta(hours=3) < late <= timedelta(0):
                run(wall, now, wildcards=True, fixed=False)
            else:
                virtual = wall
                run(wall, now, wildcards=True, fixed=True)
            now += tick
        hour += timedelta(hours=1)
    return fired


@lru_cache(maxsize=64)
def cron8_year(expression: str, timezone: str, year: int) -> tuple[datetime, ...]:
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    return tuple(cron8_fire_times(expression, timezone, start, end))


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
# Around the hours DST skips or repeats: 02:xx in Berlin, 02:xx and 01:xx in New York.
DST_EXPRESSIONS = [
    "0 * * * *",
    "*/30 * * * *",
    "30 * * * *",
    "* 2 * * *",  # a wildcard minute: every minute of 02:xx, of both passes when it repeats
    "*/20 1-2 * * *",
    "0-59/20 1-2 * * *",  # the same times, but fixed: the field does not start with *
    "30 2 * * *",
    "0 2 * * *",
    "15 1 * * *",
    "23 0-20/2 * * *",
    "10 3 * * 0",
]
YEAR_CASES = ([("UTC", e) for e in EXPRESSIONS]
              + [(z, e) for z in ("Europe/Berlin", "America/New_York") for e in DST_EXPRESSIONS])


@pytest.mark.parametrize(("timezone", "expression"), YEAR_CASES)
def test_five_fields_fire_as_cron8_says_for_every_minute_of_a_year(timezone: str,
                                                                   expression: str) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    end = datetime(2026, 1, 1, tzinfo=UTC)
    expected = list(cron8_year(expression, timezone, 2025))
    timing = Timing(normalize(expression), None, timezone, start)
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


# --- DST, cron(8): fixed-time expressions fire once per local time, wildcard ones every time the
# wall clock matches. Europe/Berlin 2025: 2025-03-30 02:00 CET -> 03:00 CEST; 2025-10-26 03:00 CEST
# -> 02:00 CET.


def test_spring_forward_a_nonexistent_time_fires_at_the_first_instant_after_the_gap() -> None:
    timing = Timing(normalize("30 2 * * *"), None, "Europe/Berlin", utc(2025, 1, 1))
    times = timing.upcoming(utc(2025, 3, 28, 12), 4)
    assert times == [
        utc(2025, 3, 29, 1, 30),  # 02:30 CET
        utc(2025, 3, 30, 1, 0),  # 02:30 does not exist: 03:00 CEST, the end of the gap
        utc(2025, 3, 31, 0, 30),  # 02:30 CEST
        utc(2025, 4, 1, 0, 30),
    ]


def test_spring_forward_several_missing_fixed_times_fire_once() -> None:
    timing = Timing(normalize("0,30 2 * * *"), None, "Europe/Berlin", utc(2025, 1, 1))
    # 02:00 and 02:30 do not exist: both fire at 03:00 CEST, once.
    assert timing.upcoming(utc(2025, 3, 29, 12), 3) == [
        utc(2025, 3, 30, 1, 0), utc(2025, 3, 31, 0, 0), utc(2025, 3, 31, 0, 30)]


def test_spring_forward_a_wildcard_job_follows_the_new_time() -> None:
    timing = Timing(normalize("30 * * * *"), None, "Europe/Berlin", utc(2025, 1, 1))
    # 01:30 CET, then 03:30 CEST: the 02:30 that does not exist does not fire (it used to, at
    # 03:00 CEST), so the job fires once an hour, every elapsed hour.
    assert timing.upcoming(utc(2025, 3, 30, 0, 15), 3) == [
        utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1, 30), utc(2025, 3, 30, 2, 30)]


def test_fall_back_a_repeated_time_fires_once() -> None:
    timing = Timing(normalize("30 2 * * *"), None, "Europe/Berlin", utc(2025, 1, 1))
    times = timing.upcoming(utc(2025, 10, 25, 12), 3)
    # 02:30 happens at 00:30 UTC (CEST) and 01:30 UTC (CET): only the first fires.
    assert times == [utc(2025, 10, 26, 0, 30), utc(2025, 10, 27, 1, 30), utc(2025, 10, 28, 1, 30)]


def test_fall_back_every_half_hour_fires_in_both_passes_of_the_repeated_hour() -> None:
    timing = Timing(normalize("*/30 * * * *"), None, "Europe/Berlin", utc(2025, 1, 1))
    expected = [utc(2025, 10, 26, 0, 0), utc(2025, 10, 26, 0, 30),  # 02:00, 02:30 CEST
                utc(2025, 10, 26, 1, 0), utc(2025, 10, 26, 1, 30),  # 02:00, 02:30 CET
                utc(2025, 10, 26, 2, 0), utc(2025, 10, 26, 2, 30)]  # 03:00, 03:30 CET
    assert timing.upcoming(utc(2025, 10, 25, 23, 45), 6) == expected
    # The same times seen from the scheduler's side (due, counting back from a later moment),
    # from moments inside the repeated hour's first and second pass, and capped.
    assert timing.due(utc(2025, 10, 25, 23, 45), utc(2025, 10, 26, 2, 40), 10) == expected
    assert timing.due(utc(2025, 10, 25, 23, 45), utc(2025, 10, 26, 1, 40), 10) == expected[:4]
    assert timing.due(utc(2025, 10, 25, 23, 45), utc(2025, 10, 26, 0, 40), 10) == expected[:2]
    assert timing.due(utc(2025, 10, 25, 23, 45), utc(2025, 10, 26, 1, 40), 3) == expected[1:4]
    assert timing.next_after(utc(2025, 10, 26, 0, 40)) == utc(2025, 10, 26, 1, 0)
    assert timing.next_after(utc(2025, 10, 26, 1, 10)) == utc(2025, 10, 26, 1, 30)


def test_issue_13_an_hourly_job_fires_both_two_oclocks_in_berlin() -> None:
    # 2027-10-31: it fired at 00:00Z (02:00 CEST) and then 02:00Z (03:00 CET), not at 01:00Z.
    timing = Timing(normalize("0 * * * *"), None, "Europe/Berlin", utc(2027, 1, 1))
    assert timing.upcoming(utc(2027, 10, 30, 23, 30), 3) == [
        utc(2027, 10, 31, 0), utc(2027, 10, 31, 1), utc(2027, 10, 31, 2)]
    assert timing.due(utc(2027, 10, 31, 0, 0), utc(2027, 10, 31, 1, 0), 10) == [
        utc(2027, 10, 31, 0), utc(2027, 10, 31, 1)]
    assert timing.next_after(utc(2027, 10, 31, 0, 0)) == utc(2027, 10, 31, 1)


def test_wall_to_utc_maps_gap_and_fold() -> None:
    berlin = zone("Europe/Berlin")
    assert wall_to_utc(datetime(2025, 3, 30, 2, 0), berlin) == utc(2025, 3, 30, 1, 0)
    assert wall_to_utc(datetime(2025, 3, 30, 2, 59, 59), berlin) == utc(2025, 3, 30, 1, 0)
    assert wall_to_utc(datetime(2025, 10, 26, 2, 15), berlin) == utc(2025, 10, 26, 0, 15)


def test_new_york_daily_job_keeps_local_time_across_dst() -> None:
    timing = Timing(normalize("@daily"), None, "America/New_York", utc(2025, 1, 1))
    assert timing.upcoming(utc(2025, 3, 8, 12), 2) == [utc(2025, 3, 9, 5), utc(2025, 3, 10, 4)]


@pytest.mark.parametrize(("expression", "wildcard"), [
    ("0 * * * *", True),
    ("@hourly", True),
    ("*/30 * * * *", True),
    ("* 2 * * *", True),  # a wildcard minute with a fixed hour
    ("*/20 2 * * *", True),  # starts with *
    ("0-59/20 2 * * *", False),  # the same minutes, but the field does not start with *
    ("0,30 2 * * *", False),
    ("30 2 * * *", False),
    ("0 */2 * * *", True),
    ("@daily", False),
    ("0 0 * * 0", False),  # wildcards in the day fields do not count
    ("0 30 2 * * *", False),  # six fields: second, minute, hour
    ("* 30 2 * * *", True),
    ("*/20 30 2 * * *", True),
    ("0 * 2 * * *", True),
    ("0 0 * * * *", True),
])
def test_wildcard_expressions_are_those_cron8_names(expression: str, wildcard: bool) -> None:
    assert cron8_wildcard(expression) is wildcard
    assert is_wildcard(expression) is wildcard
    assert is_wildcard(normalize(expression)) is wildcard


# --- DST around each transition, listed in UTC: Europe/Berlin and America/New_York, 2027 --------

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


def at(month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return utc(2027, month, day, hour, minute, second)


# The transitions (UTC) and what the wall clock does there.
TRANSITIONS = {
    (BERLIN, "spring"): (at(3, 28, 1), timedelta(hours=1)),  # 02:00 CET -> 03:00 CEST
    (BERLIN, "autumn"): (at(10, 31, 1), timedelta(hours=2)),  # 03:00 CEST -> 02:00 CET
    (NEW_YORK, "spring"): (at(3, 14, 7), timedelta(hours=-5)),  # 02:00 EST -> 03:00 EDT
    (NEW_YORK, "autumn"): (at(11, 7, 6), timedelta(hours=-4)),  # 02:00 EDT -> 01:00 EST
}


def test_the_transitions_are_where_the_tables_say() -> None:
    for (name, season), (moment, offset_before) in TRANSITIONS.items():
        tz = ZoneInfo(name)
        before = (moment - SECOND).astimezone(tz).utcoffset()
        after = moment.astimezone(tz).utcoffset()
        assert before == offset_before, (name, season)
        assert after == offset_before + (timedelta(hours=1) if season == "spring"
                                         else timedelta(hours=-1)), (name, season)


HOURLY_BERLIN_SPRING = [at(3, 27, 23), at(3, 28, 0),  # 00:00, 01:00 CET
                        at(3, 28, 1), at(3, 28, 2), at(3, 28, 3)]  # 03:00, 04:00, 05:00 CEST
HOURLY_BERLIN_AUTUMN = [at(10, 30, 22), at(10, 30, 23), at(10, 31, 0),  # 00:00-02:00 CEST
                        at(10, 31, 1), at(10, 31, 2), at(10, 31, 3)]  # 02:00-04:00 CET
HOURLY_NEW_YORK_SPRING = [at(3, 14, 5), at(3, 14, 6),  # 00:00, 01:00 EST
                          at(3, 14, 7), at(3, 14, 8), at(3, 14, 9)]  # 03:00-05:00 EDT
HOURLY_NEW_YORK_AUTUMN = [at(11, 7, 4), at(11, 7, 5),  # 00:00, 01:00 EDT
                          at(11, 7, 6), at(11, 7, 7), at(11, 7, 8)]  # 01:00-03:00 EST


def _every(first: datetime, last: datetime, step: timedelta) -> list[datetime]:
    return [first + k * step for k in range((last - first) // step + 1)]


# (zone, expression, first and last moment of the window, every fire time in it)
DST_CASES: list[tuple[str, str, datetime, datetime, list[datetime]]] = [
    # Berlin, spring: 02:00-02:59 does not exist on 2027-03-28.
    (BERLIN, "0 * * * *", at(3, 27, 23), at(3, 28, 3), HOURLY_BERLIN_SPRING),
    (BERLIN, "@hourly", at(3, 27, 23), at(3, 28, 3), HOURLY_BERLIN_SPRING),
    (BERLIN, "0 0 * * * *", at(3, 27, 23), at(3, 28, 3), HOURLY_BERLIN_SPRING),
    (BERLIN, "*/30 * * * *", at(3, 27, 23), at(3, 28, 3),
     _every(at(3, 27, 23), at(3, 28, 3), timedelta(minutes=30))),
    (BERLIN, "0 */30 * * * *", at(3, 27, 23), at(3, 28, 3),
     _every(at(3, 27, 23), at(3, 28, 3), timedelta(minutes=30))),
    (BERLIN, "30 * * * *", at(3, 27, 23), at(3, 28, 3),
     [at(3, 27, 23, 30), at(3, 28, 0, 30), at(3, 28, 1, 30), at(3, 28, 2, 30)]),
    (BERLIN, "*/20 2 * * *", at(3, 27, 0), at(3, 29, 22),
     [at(3, 27, 1), at(3, 27, 1, 20), at(3, 27, 1, 40),  # 02:xx CET; none on the 28th
      at(3, 29, 0), at(3, 29, 0, 20), at(3, 29, 0, 40)]),  # 02:xx CEST
    (BERLIN, "0-40/20 2 * * *", at(3, 27, 0), at(3, 29, 22),
     [at(3, 27, 1), at(3, 27, 1, 20), at(3, 27, 1, 40),
      at(3, 28, 1),  # all three at 03:00 CEST, once
      at(3, 29, 0), at(3, 29, 0, 20), at(3, 29, 0, 40)]),
    (BERLIN, "30 2 * * *", at(3, 27, 0), at(3, 29, 22),
     [at(3, 27, 1, 30), at(3, 28, 1), at(3, 29, 0, 30)]),
    (BERLIN, "0 30 2 * * *", at(3, 27, 0), at(3, 29, 22),
     [at(3, 27, 1, 30), at(3, 28, 1), at(3, 29, 0, 30)]),
    (BERLIN, "*/20 30 2 * * *", at(3, 27, 0), at(3, 29, 22),
     [at(3, 27, 1, 30), at(3, 27, 1, 30, 20), at(3, 27, 1, 30, 40),
      at(3, 29, 0, 30), at(3, 29, 0, 30, 20), at(3, 29, 0, 30, 40)]),
    (BERLIN, "0 2 * * *", at(3, 27, 0), at(3, 29, 22),
     [at(3, 27, 1), at(3, 28, 1), at(3, 29, 0)]),
    (BERLIN, "15 1 * * *", at(3, 27, 0), at(3, 29, 22),
     [at(3, 27, 0, 15), at(3, 28, 0, 15), at(3, 28, 23, 15)]),  # 01:15 CET, CET, CEST
    # Berlin, autumn: 02:00-02:59 happens twice on 2027-10-31, at 00:xx and 01:xx UTC.
    (BERLIN, "0 * * * *", at(10, 30, 22), at(10, 31, 3), HOURLY_BERLIN_AUTUMN),
    (BERLIN, "@hourly", at(10, 30, 22), at(10, 31, 3), HOURLY_BERLIN_AUTUMN),
    (BERLIN, "0 0 * * * *", at(10, 30, 22), at(10, 31, 3), HOURLY_BERLIN_AUTUMN),
    (BERLIN, "*/30 * * * *", at(10, 30, 22), at(10, 31, 3),
     _every(at(10, 30, 22), at(10, 31, 3), timedelta(minutes=30))),
    (BERLIN, "0 */30 * * * *", at(10, 30, 22), at(10, 31, 3),
     _every(at(10, 30, 22), at(10, 31, 3), timedelta(minutes=30))),
    (BERLIN, "30 * * * *", at(10, 30, 22), at(10, 31, 3),
     [at(10, 30, 22, 30), at(10, 30, 23, 30), at(10, 31, 0, 30), at(10, 31, 1, 30),
      at(10, 31, 2, 30)]),
    (BERLIN, "*/20 2 * * *", at(10, 30, 0), at(11, 1, 22),
     [at(10, 30, 0), at(10, 30, 0, 20), at(10, 30, 0, 40),  # 02:xx CEST
      at(10, 31, 0), at(10, 31, 0, 20), at(10, 31, 0, 40),  # 02:xx CEST
      at(10, 31, 1), at(10, 31, 1, 20), at(10, 31, 1, 40),  # 02:xx CET, again
      at(11, 1, 1), at(11, 1, 1, 20), at(11, 1, 1, 40)]),  # 02:xx CET
    (BERLIN, "0-40/20 2 * * *", at(10, 30, 0), at(11, 1, 22),
     [at(10, 30, 0), at(10, 30, 0, 20), at(10, 30, 0, 40),
      at(10, 31, 0), at(10, 31, 0, 20), at(10, 31, 0, 40),  # the first pass only
      at(11, 1, 1), at(11, 1, 1, 20), at(11, 1, 1, 40)]),
    (BERLIN, "30 2 * * *", at(10, 30, 0), at(11, 1, 22),
     [at(10, 30, 0, 30), at(10, 31, 0, 30), at(11, 1, 1, 30)]),
    (BERLIN, "0 30 2 * * *", at(10, 30, 0), at(11, 1, 22),
     [at(10, 30, 0, 30), at(10, 31, 0, 30), at(11, 1, 1, 30)]),
    (BERLIN, "*/20 30 2 * * *", at(10, 30, 0), at(11, 1, 22),
     [at(10, 30, 0, 30), at(10, 30, 0, 30, 20), at(10, 30, 0, 30, 40),
      at(10, 31, 0, 30), at(10, 31, 0, 30, 20), at(10, 31, 0, 30, 40),
      at(10, 31, 1, 30), at(10, 31, 1, 30, 20), at(10, 31, 1, 30, 40),
      at(11, 1, 1, 30), at(11, 1, 1, 30, 20), at(11, 1, 1, 30, 40)]),
    (BERLIN, "0 2 * * *", at(10, 30, 0), at(11, 1, 22),
     [at(10, 30, 0), at(10, 31, 0), at(11, 1, 1)]),
    (BERLIN, "15 1 * * *", at(10, 29, 22), at(11, 1, 22),
     [at(10, 29, 23, 15), at(10, 30, 23, 15), at(11, 1, 0, 15)]),  # CEST, CEST, CET
    # New York, spring: 02:00-02:59 does not exist on 2027-03-14.
    (NEW_YORK, "0 * * * *", at(3, 14, 5), at(3, 14, 9), HOURLY_NEW_YORK_SPRING),
    (NEW_YORK, "@hourly", at(3, 14, 5), at(3, 14, 9), HOURLY_NEW_YORK_SPRING),
    (NEW_YORK, "0 0 * * * *", at(3, 14, 5), at(3, 14, 9), HOURLY_NEW_YORK_SPRING),
    (NEW_YORK, "*/30 * * * *", at(3, 14, 5), at(3, 14, 9),
     _every(at(3, 14, 5), at(3, 14, 9), timedelta(minutes=30))),
    (NEW_YORK, "30 * * * *", at(3, 14, 5), at(3, 14, 9),
     [at(3, 14, 5, 30), at(3, 14, 6, 30), at(3, 14, 7, 30), at(3, 14, 8, 30)]),
    (NEW_YORK, "*/20 2 * * *", at(3, 13, 0), at(3, 15, 23),
     [at(3, 13, 7), at(3, 13, 7, 20), at(3, 13, 7, 40),  # 02:xx EST; none on the 14th
      at(3, 15, 6), at(3, 15, 6, 20), at(3, 15, 6, 40)]),  # 02:xx EDT
    (NEW_YORK, "0-40/20 2 * * *", at(3, 13, 0), at(3, 15, 23),
     [at(3, 13, 7), at(3, 13, 7, 20), at(3, 13, 7, 40),
      at(3, 14, 7),  # all three at 03:00 EDT, once
      at(3, 15, 6), at(3, 15, 6, 20), at(3, 15, 6, 40)]),
    (NEW_YORK, "30 2 * * *", at(3, 13, 0), at(3, 15, 23),
     [at(3, 13, 7, 30), at(3, 14, 7), at(3, 15, 6, 30)]),
    (NEW_YORK, "0 30 2 * * *", at(3, 13, 0), at(3, 15, 23),
     [at(3, 13, 7, 30), at(3, 14, 7), at(3, 15, 6, 30)]),
    (NEW_YORK, "*/20 30 2 * * *", at(3, 13, 0), at(3, 15, 23),
     [at(3, 13, 7, 30), at(3, 13, 7, 30, 20), at(3, 13, 7, 30, 40),
      at(3, 15, 6, 30), at(3, 15, 6, 30, 20), at(3, 15, 6, 30, 40)]),
    (NEW_YORK, "0 2 * * *", at(3, 13, 0), at(3, 15, 23),
     [at(3, 13, 7), at(3, 14, 7), at(3, 15, 6)]),
    (NEW_YORK, "15 1 * * *", at(3, 13, 0), at(3, 15, 23),
     [at(3, 13, 6, 15), at(3, 14, 6, 15), at(3, 15, 5, 15)]),  # EST, EST, EDT
    (NEW_YORK, "15 15 1 * * *", at(3, 13, 0), at(3, 15, 23),
     [at(3, 13, 6, 15, 15), at(3, 14, 6, 15, 15), at(3, 15, 5, 15, 15)]),
    # New York, autumn: 01:00-01:59 happens twice on 2027-11-07, at 05:xx and 06:xx UTC.
    (NEW_YORK, "0 * * * *", at(11, 7, 4), at(11, 7, 8), HOURLY_NEW_YORK_AUTUMN),
    (NEW_YORK, "@hourly", at(11, 7, 4), at(11, 7, 8), HOURLY_NEW_YORK_AUTUMN),
    (NEW_YORK, "0 0 * * * *", at(11, 7, 4), at(11, 7, 8), HOURLY_NEW_YORK_AUTUMN),
    (NEW_YORK, "*/30 * * * *", at(11, 7, 4), at(11, 7, 8),
     _every(at(11, 7, 4), at(11, 7, 8), timedelta(minutes=30))),
    (NEW_YORK, "30 * * * *", at(11, 7, 4), at(11, 7, 8),
     [at(11, 7, 4, 30), at(11, 7, 5, 30), at(11, 7, 6, 30), at(11, 7, 7, 30)]),
    (NEW_YORK, "*/20 1 * * *", at(11, 6, 0), at(11, 8, 23),
     [at(11, 6, 5), at(11, 6, 5, 20), at(11, 6, 5, 40),  # 01:xx EDT
      at(11, 7, 5), at(11, 7, 5, 20), at(11, 7, 5, 40),  # 01:xx EDT
      at(11, 7, 6), at(11, 7, 6, 20), at(11, 7, 6, 40),  # 01:xx EST, again
      at(11, 8, 6), at(11, 8, 6, 20), at(11, 8, 6, 40)]),  # 01:xx EST
    (NEW_YORK, "0-40/20 1 * * *", at(11, 6, 0), at(11, 8, 23),
     [at(11, 6, 5), at(11, 6, 5, 20), at(11, 6, 5, 40),
      at(11, 7, 5), at(11, 7, 5, 20), at(11, 7, 5, 40),  # the first pass only
      at(11, 8, 6), at(11, 8, 6, 20), at(11, 8, 6, 40)]),
    (NEW_YORK, "15 1 * * *", at(11, 6, 0), at(11, 8, 23),
     [at(11, 6, 5, 15), at(11, 7, 5, 15), at(11, 8, 6, 15)]),  # EDT, EDT (first pass), EST
    (NEW_YORK, "15 15 1 * * *", at(11, 6, 0), at(11, 8, 23),
     [at(11, 6, 5, 15, 15), at(11, 7, 5, 15, 15), at(11, 8, 6, 15, 15)]),
    (NEW_YORK, "*/20 15 1 * * *", at(11, 6, 0), at(11, 8, 23),
     [at(11, 6, 5, 15), at(11, 6, 5, 15, 20), at(11, 6, 5, 15, 40),
      at(11, 7, 5, 15), at(11, 7, 5, 15, 20), at(11, 7, 5, 15, 40),
      at(11, 7, 6, 15), at(11, 7, 6, 15, 20), at(11, 7, 6, 15, 40),
      at(11, 8, 6, 15), at(11, 8, 6, 15, 20), at(11, 8, 6, 15, 40)]),
    (NEW_YORK, "30 2 * * *", at(11, 6, 0), at(11, 8, 23),
     [at(11, 6, 6, 30), at(11, 7, 7, 30), at(11, 8, 7, 30)]),  # EDT, EST, EST
    (NEW_YORK, "0 2 * * *", at(11, 6, 0), at(11, 8, 23),
     [at(11, 6, 6), at(11, 7, 7), at(11, 8, 7)]),
]


def _case_id(case: tuple[str, str, datetime, datetime, list[datetime]]) -> str:
    name, expression, first, _, _ = case
    return f"{name.split('/')[1]}-{first:%m-%d}-{expression}"


@pytest.mark.parametrize(("timezone", "expression", "first", "last", "expected"), DST_CASES,
                         ids=[_case_id(case) for case in DST_CASES])
def test_dst_fire_times_around_each_transition(timezone: str, expression: str, first: datetime,
                                               last: datetime, expected: list[datetime]) -> None:
    timing = Timing(normalize(expression), None, timezone, utc(2027, 1, 1))
    upcoming = timing.upcoming(first - timedelta(microseconds=1), len(expected) + 1)
    assert [t for t in upcoming if t <= last] == expected
    assert timing.due(first, last, 1000) == expected  # the scheduler's side, counting back
    # The hand-written list and the cron(8) simulation agree.
    assert cron8_fire_times(expression, timezone, first, last + SECOND) == expected


SCHEDULER_EXPRESSIONS = ["0 * * * *", "*/30 * * * *", "30 * * * *", "*/20 1-2 * * *",
                         "0-59/20 1-2 * * *", "30 2 * * *", "15 1 * * *", "*/20 30 1-2 * * *",
                         "0 30 1-2 * * *"]


@pytest.mark.parametrize("expression", SCHEDULER_EXPRESSIONS)
@pytest.mark.parametrize("transition", list(TRANSITIONS), ids="-".join)
def test_next_after_and_due_agree_with_cron8_from_any_moment_around_a_transition(
        transition: tuple[str, str], expression: str) -> None:
    name = transition[0]
    moment, _ = TRANSITIONS[transition]
    first, last = moment - timedelta(hours=4), moment + timedelta(hours=28)
    reference = cron8_fire_times(expression, name, first, last)
    timing = Timing(normalize(expression), None, name, utc(2027, 1, 1))
    # Every 5 minutes, and between, from 3 hours before to 3 hours after: both passes of a
    # repeated hour, exactly at fire times and not.
    moments = [moment + k * timedelta(minutes=5) + extra for k in range(-36, 37)
               for extra in (timedelta(0), timedelta(minutes=2, seconds=30, microseconds=7))]
    for now in moments:
        later = [t for t in reference if t > now]
        assert timing.next_after(now) == later[0], now
        assert timing.due(first, now, 3) == [t for t in reference if t <= now][-3:], now


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
