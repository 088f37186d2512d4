"""Parse and format the durations and instants that users type and that tables show.

Standard library only: this module is imported when the CLI starts, so it must stay cheap.

Two conventions apply throughout:

* Text typed by a user without a UTC offset ("2026-11-24", "18:00", "tomorrow 09:00") means
  the machine's local time: the ``TZ`` environment variable, else the system zone. People
  schedule jobs by the wall clock in front of them, not in UTC.
* A naive ``datetime`` handed in by code (``now=``, ``format_*``) is taken to be UTC. Every
  datetime jobctl makes is aware UTC, so a naive one can only come from a storage layer that
  dropped the tzinfo (e.g. SQLite), and what it stored was UTC.

Parse errors are ``ValueError`` with a one-line message meant for the user; the CLI turns them
into its invalid-input error (exit code 2).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time, timedelta

__all__ = [
    "format_age",
    "format_duration",
    "format_instant",
    "isoformat_utc",
    "parse_duration",
    "parse_instant",
]

_DURATION_HINT = "use a number with a unit, like 90s, 10m, 1h30m, 2d or ISO 8601 PT1H30M"
_INSTANT_HINT = (
    "use ISO 8601 (2026-11-23T18:00:00Z, 2026-11-23 18:00, 2026-11-24), now, "
    "+DURATION (+10m), HH:MM[:SS] or tomorrow HH:MM"
)

# Seconds per unit, keyed by every spelling we accept (matched lower-cased).
_UNIT_SECONDS: dict[str, float] = {
    **dict.fromkeys(("ms", "msec", "msecs", "millisecond", "milliseconds"), 0.001),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 604800.0),
}

# [0-9] rather than \d: \d also matches other scripts' digits, which float() would accept.
# No sign and no exponent, so "-5s", "1e3", "nan" and "inf" can never get through.
# Patterns stay strings: re compiles (and caches) them on first use, keeping import cheap.
_NUMBER = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_COMPOUND_RE = rf"(?:{_NUMBER}\s*[a-z]+\s*)+"
_COMPOUND_PART_RE = rf"({_NUMBER})\s*([a-z]+)"

# ISO 8601 durations without years and months: their length depends on the calendar.
# ISO allows a comma as the decimal mark, hence [.,].
_ISO_NUMBER = r"[0-9]+(?:[.,][0-9]+)?"
_ISO_DURATION_RE = (
    rf"P(?:(?P<w>{_ISO_NUMBER})W)?(?:(?P<d>{_ISO_NUMBER})D)?"
    rf"(?:T(?:(?P<h>{_ISO_NUMBER})H)?(?:(?P<m>{_ISO_NUMBER})M)?(?:(?P<s>{_ISO_NUMBER})S)?)?"
)
_ISO_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}

_CLOCK_RE = r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?"
_TOMORROW_RE = r"tomorrow\s+(.+)"

_MAX_SHOWN = 60


def _show(text: str) -> str:
    """Quote user input for an error message, keeping the message on one line and short."""
    if len(text) > _MAX_SHOWN:
        text = text[:_MAX_SHOWN] + "..."
    return repr(text) if not text.isprintable() else f"'{text}'"


def _duration_error(text: str) -> ValueError:
    return ValueError(f"invalid duration {_show(text)}: {_DURATION_HINT}")


def _instant_error(text: str) -> ValueError:
    return ValueError(f"invalid time {_show(text)}: {_INSTANT_HINT}")


# --------------------------------------------------------------------------- durations


def parse_duration(text: str) -> float:
    """Return the number of seconds in ``text``.

    Accepts a plain number of seconds ("90", "1.5"), unit-suffixed parts ("500ms", "1h30m",
    "1h 30m", "1.5h", "2 days"; units ms, s, m, h, d, w and their long forms, any case) and
    ISO 8601 durations without years or months ("PT1H30M", "P1DT2H", "PT0.5S").
    Raises ``ValueError`` naming ``text`` for anything else, including negative values.
    """
    stripped = text.strip()
    seconds = _parse_duration_or_none(stripped) if stripped else None
    # A long enough digit string overflows to inf; no caller wants an infinite timeout.
    if seconds is None or not math.isfinite(seconds):
        raise _duration_error(text)
    return seconds


def _parse_duration_or_none(text: str) -> float | None:
    if re.fullmatch(_NUMBER, text):
        return float(text)
    if text[0] in "pP":
        return _parse_iso_duration(text.upper())
    return _parse_compound_duration(text.lower())


def _parse_iso_duration(text: str) -> float | None:
    match = re.fullmatch(_ISO_DURATION_RE, text)
    # "P" and "PT" match the pattern with every part absent; "P1DT" leaves a dangling T.
    if match is None or match.lastgroup is None or text.endswith("T"):
        return None
    return sum(
        float(value.replace(",", ".")) * _ISO_UNIT_SECONDS[unit]
        for unit, value in match.groupdict().items()
        if value is not None
    )


def _parse_compound_duration(text: str) -> float | None:
    if re.fullmatch(_COMPOUND_RE, text) is None:
        return None
    total = 0.0
    seen: set[float] = set()
    for number, unit in re.findall(_COMPOUND_PART_RE, text):
        scale = _UNIT_SECONDS.get(unit)
        # A repeated unit ("1m 2m") is more likely a typo than a sum the user meant.
        if scale is None or scale in seen:
            return None
        seen.add(scale)
        total += float(number) * scale
    return total


# ---------------------------------------------------------------------------- instants


def parse_instant(text: str, now: datetime | None = None) -> datetime:
    """Return the moment ``text`` names, as an aware UTC datetime.

    Accepts ISO 8601 date-times and dates (without an offset they are local time, and a bare
    date is local midnight), "now", "+DURATION" (``now`` plus a ``parse_duration`` text),
    "HH:MM" or "HH:MM:SS" (the next time the local clock shows it: today if still ahead,
    else tomorrow) and "tomorrow HH:MM[:SS]". Keywords are case-insensitive.
    ``now`` defaults to the current time; tests pin it. Raises ``ValueError`` naming ``text``.
    """
    now_utc = datetime.now(UTC) if now is None else _as_utc(now)
    stripped = text.strip()
    try:
        result = _parse_instant_or_none(stripped, now_utc) if stripped else None
    except (ValueError, OverflowError):
        # Out-of-range dates, clock values like 25:00, durations that overflow timedelta.
        result = None
    if result is None:
        raise _instant_error(text)
    return result


def _parse_instant_or_none(text: str, now: datetime) -> datetime | None:
    lowered = text.lower()
    if lowered == "now":
        return now
    if lowered.startswith("+"):
        return now + timedelta(seconds=parse_duration(lowered[1:]))
    if re.fullmatch(_CLOCK_RE, lowered):
        return _next_clock_time(_parse_clock(lowered), now)
    tomorrow = re.fullmatch(_TOMORROW_RE, lowered)
    if tomorrow is not None:
        clock = _parse_clock(tomorrow.group(1))
        return _local_to_utc(datetime.combine(_local_date(now) + timedelta(days=1), clock))
    return _parse_iso_instant(text)


def _parse_clock(text: str) -> time:
    match = re.fullmatch(_CLOCK_RE, text)
    if match is None:
        raise ValueError(text)
    hour, minute, second = match.groups(default="0")
    return time(int(hour), int(minute), int(second))  # range-checks, e.g. rejects 24:00


def _next_clock_time(clock: time, now: datetime) -> datetime:
    # Step by calendar date, not by 24 hours, so a DST change tonight does not shift the hour.
    today = _local_date(now)
    candidate = _local_to_utc(datetime.combine(today, clock))
    if candidate <= now:
        candidate = _local_to_utc(datetime.combine(today + timedelta(days=1), clock))
    return candidate


def _parse_iso_instant(text: str) -> datetime | None:
    # fromisoformat only knows upper-case "T" and "Z"; no other letters are valid here.
    try:
        parsed = datetime.fromisoformat(text.upper())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return _local_to_utc(parsed)
    return parsed.astimezone(UTC)


def _local_date(now: datetime) -> date:
    return now.astimezone().date()


def _local_to_utc(naive_local: datetime) -> datetime:
    # astimezone() on a naive datetime reads it as local time (honouring TZ and DST). For a
    # wall time skipped by a DST jump the C library picks a nearby instant; good enough here.
    return naive_local.astimezone().astimezone(UTC)


def _as_utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


# -------------------------------------------------------------------------- formatting


def format_duration(seconds: float | None) -> str:
    """Format seconds compactly for tables: "-", "0.3s", "9.9s", "42s", "3m05s", "1h02m", "2d03h".

    Each form rounds to its last shown unit, so 59.7 s reads "1m00s", not "60s". Negative
    values get a leading "-"; None and non-finite values read "-".
    """
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    tenths = _round_half_up(seconds * 10)
    if tenths < 100:
        return f"{tenths / 10:.1f}s"
    return _format_whole(seconds)


def _format_whole(seconds: float) -> str:
    """Format a non-negative duration with whole seconds as the finest unit."""
    secs = _round_half_up(seconds)
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return "{}m{:02d}s".format(*divmod(secs, 60))
    # Round again at each coarser unit rather than truncating what is no longer shown.
    mins = _round_half_up(seconds / 60)
    if mins < 24 * 60:
        return "{}h{:02d}m".format(*divmod(mins, 60))
    return "{}d{:02d}h".format(*divmod(_round_half_up(seconds / 3600), 24))


def _round_half_up(value: float) -> int:
    # round() rounds halves to even, which would show 2.5 s as "2s" but 3.5 s as "4s".
    return math.floor(value + 0.5)


def format_instant(dt: datetime | None) -> str:
    """Format ``dt`` in local time as "YYYY-MM-DD HH:MM:SS" for tables; "-" for None."""
    if dt is None:
        return "-"
    return _as_utc(dt).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_age(dt: datetime | None, now: datetime | None = None) -> str:
    """Say how long ago ``dt`` was: "3s ago", "5m12s ago", "2d03h ago"; "in 5m00s" if ahead.

    Whole seconds are the finest unit: tenths of a second are noise for an age.
    ``now`` defaults to the current time. "-" for None.
    """
    if dt is None:
        return "-"
    now_utc = datetime.now(UTC) if now is None else _as_utc(now)
    elapsed = (now_utc - _as_utc(dt)).total_seconds()
    if elapsed < 0:
        return f"in {_format_whole(-elapsed)}"
    return f"{_format_whole(elapsed)} ago"


def isoformat_utc(dt: datetime | None) -> str | None:
    """Return ``dt`` as ISO 8601 in UTC with a "+00:00" offset, or None for None.

    "+00:00" rather than "Z" keeps the output readable by ``datetime.fromisoformat`` on every
    Python version; microseconds are kept so the value round-trips exactly.
    """
    if dt is None:
        return None
    return _as_utc(dt).isoformat()
