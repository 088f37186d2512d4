"""When a schedule fires: cron expressions (5 fields, or 6 with seconds first), intervals and
time zones.

Cron expressions are evaluated on the schedule's local wall clock, then mapped to UTC, with the
daylight-saving rule of Debian's cron(8) ("Only jobs that run at a particular time (not specified
as @hourly, nor with '*' in the hour or minute specifier) are affected. Jobs which are specified
with wildcards are run based on the new time immediately."):

* a *wildcard* expression is one whose minute or hour field starts with `*` (also `*/2`, as
  Debian sets its MIN_STAR/HR_STAR flags on the first character; `@hourly` is `0 * * * *`); in
  six fields, one whose second, minute or hour field starts with `*`. It fires at every instant
  whose local wall-clock time matches: a local time that does not exist (the hour skipped when
  clocks spring forward) does not fire, and one that happens twice (the hour repeated when they
  fall back) fires twice, once per pass. An hourly job so fires every elapsed hour.
* a *fixed-time* expression (any other) fires once per matching local time: a time that does not
  exist fires at the first instant after the gap, i.e. at the transition itself (several such
  times fire once); a time that happens twice fires at its first occurrence only.

A five-field expression means what it means to Debian's cron (crontab(5)): when both day of
month and day of week are restricted, either may match; a field that starts with `*` (also `*/2`)
counts as unrestricted, so then both must match. croniter ORs the two whenever neither is exactly
`*`, so we tell it which rule applies (`day_or`).

Intervals (`--every`) are plain UTC arithmetic from an anchor (the start time, or the creation
time to the whole second): time zones do not move them.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jobctl.record import record

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

FIELDS_5 = ("minute", "hour", "day of month", "month", "day of week")
FIELDS_6 = ("second", *FIELDS_5)
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# How many wall-clock times a search looks at before it gives up (croniter stops sooner).
_MAX_STEPS = 10_000_000


class CronError(ValueError):
    """An invalid cron expression, interval or time zone; the message names what is wrong."""


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """An IANA time zone, or CronError."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        if not name or name != name.strip() or name.startswith("/") or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise CronError(f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin "
                        "or UTC") from error


@lru_cache(maxsize=4096)
def normalize(expression: str) -> str:
    """The expression with aliases expanded and blanks collapsed; CronError when it is invalid,
    naming the field and the value that are wrong."""
    text = " ".join(expression.split())
    expanded = ALIASES.get(text.lower(), text)
    if text.startswith("@") and expanded == text:
        raise CronError(f"invalid cron expression {expression!r}: unknown alias {text!r} "
                        f"(use {', '.join(sorted(ALIASES))})")
    fields = expanded.split(" ")
    if len(fields) not in (5, 6):
        raise CronError(f"invalid cron expression {expression!r}: it has {len(fields)} fields; "
                        "use 5 (minute hour day-of-month month day-of-week) or 6 (second first)")
    names = FIELDS_6 if len(fields) == 6 else FIELDS_5
    for index, value in enumerate(fields):
        alone = ["*"] * len(fields)
        alone[index] = value
        if not _croniter_accepts(" ".join(alone)):
            raise CronError(f"invalid cron expression {expression!r}: bad {names[index]} field "
                            f"{value!r}")
    if not _croniter_accepts(expanded):
        raise CronError(f"invalid cron expression {expression!r}: no time matches it")
    return expanded


def _croniter_accepts(expanded: str) -> bool:
    from croniter import CroniterError

    try:
        iterator = _iterator(expanded, datetime(2000, 1, 1))
        iterator.get_next(datetime)
    except (CroniterError, ValueError, KeyError, IndexError, TypeError):
        return False
    return True


def _day_or(expanded: str) -> bool:
    """Debian cron ORs day of month and day of week only when neither field starts with `*`."""
    fields = expanded.split(" ")
    day_of_month, day_of_week = fields[-3], fields[-1]
    return not (day_of_month.startswith("*") or day_of_week.startswith("*"))


def is_wildcard(expression: str) -> bool:
    """Whether the expression follows the new wall clock across a DST change (cron(8)): its
    minute or hour field starts with `*` (six fields: its second, minute or hour field)."""
    text = " ".join(expression.split())
    fields = ALIASES.get(text.lower(), text).split(" ")
    time_of_day = fields[:3] if len(fields) == 6 else fields[:2]
    return any(field.startswith("*") for field in time_of_day)


def _iterator(expanded: str, start: datetime, *, backwards: bool = False) -> Any:
    from croniter import croniter

    return croniter(expanded, start, day_or=_day_or(expanded),
                    second_at_beginning=len(expanded.split(" ")) == 6, is_prev=backwards,
                    max_years_between_matches=50)


def wall_to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """A naive local wall-clock time as a UTC instant: its first occurrence when it happens
    twice; the end of the gap (the first instant after it) when it does not exist."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # In a gap: fold=1 reads it with the offset after the transition (an instant before it),
    # fold=0 with the offset before (an instant after it). Find the transition in between.
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first
    low, high = min(low, high), max(low, high)
    before = low.astimezone(tz).utcoffset()
    while high - low > timedelta(microseconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high


@record
class Timing:
    """When a schedule fires: a cron expression in a time zone, or an interval from an anchor;
    never before `start_at`, never after `end_at`."""

    cron: str | None
    every_s: float | None
    timezone: str
    anchor: datetime  # intervals only: fire times are anchor + k * every
    start_at: datetime | None = None
    end_at: datetime | None = None

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after `moment`, or None when there is none."""
        if self.start_at is not None and moment < self.start_at:
            moment = self.start_at - timedelta(microseconds=1)
        found = self._interval_next(moment) if self.every_s else self._cron_next(moment)
        if found is None or (self.end_at is not None and found > self.end_at):
            return None
        return found

    def upcoming(self, moment: datetime, count: int) -> list[datetime]:
        """The next `count` fire times after `moment` (fewer if the schedule ends)."""
        if self.start_at is not None and moment < self.start_at:
            moment = self.start_at - timedelta(microseconds=1)
        if self.every_s:
            times = [self._interval_next(moment)]
            step = timedelta(microseconds=self._interval_us())
            while len(times) < count:
                times.append(times[-1] + step)
        else:
            times = list(itertools.islice(self._cron_after(moment), count))
        return [t for t in times[:count] if self.end_at is None or t <= self.end_at]

    def due(self, since: datetime, until: datetime, limit: int) -> list[datetime]:
        """Fire times in [since, until], the latest `limit` of them, oldest first."""
        low = since if self.start_at is None else max(since, self.start_at)
        high = until if self.end_at is None else min(until, self.end_at)
        if high < low or limit <= 0:
            return []
        found = (self._interval_due(low, high, limit) if self.every_s
                 else self._cron_due(low, high, limit))
        return sorted(found)

    # --- intervals ----------------------------------------------------------------------------

    def _interval_us(self) -> int:
        return max(1, round((self.every_s or 0.0) * 1_000_000))

    def _interval_next(self, moment: datetime) -> datetime:
        step = self._interval_us()
        elapsed = _micros(moment - self.anchor)
        k = 0 if elapsed < 0 else elapsed // step + 1
        return self.anchor + timedelta(microseconds=k * step)

    def _interval_due(self, low: datetime, high: datetime, limit: int) -> list[datetime]:
        step = self._interval_us()
        last = _micros(high - self.anchor) // step
        first = max(0, -(-_micros(low - self.anchor) // step))
        first = max(first, last - limit + 1)
        return [self.anchor + timedelta(microseconds=k * step) for k in range(first, last + 1)]

    # --- cron ---------------------------------------------------------------------------------

    def _cron_next(self, moment: datetime) -> datetime | None:
        return next(self._cron_after(moment), None)

    def _cron_after(self, moment: datetime) -> Iterator[datetime]:
        """Fire times after `moment`, in order, each once."""
        tz = zone(self.timezone)
        expression = self.cron or ""
        wall = moment.astimezone(tz).replace(tzinfo=None)
        if not is_wildcard(expression):
            iterator = _iterator(expression, wall)
            last = moment
            for _ in range(_MAX_STEPS):
                candidate = wall_to_utc(iterator.get_next(datetime), tz)
                # In a repeated hour the wall clock goes back, and the times in a gap all map to
                # its end: skip what already fired.
                if candidate > last:
                    last = candidate
                    yield candidate
            return
        # Inside a repeated hour, earlier wall times have their second pass still ahead.
        iterator = _iterator(expression, wall - _repeat(wall, tz) - timedelta(seconds=1))
        pending: list[datetime] = []  # instants found, not yet known to be the earliest left
        for _ in range(_MAX_STEPS):
            instants = _instants(iterator.get_next(datetime), tz)
            for instant in instants:
                if instant > moment:
                    bisect.insort(pending, instant)
            # Later wall times first happen after this one first does: what is not later than
            # that is final. (A second pass comes up to a repeated hour later.)
            while pending and instants and pending[0] <= instants[0]:
                yield pending.pop(0)

    def _cron_due(self, low: datetime, high: datetime, limit: int) -> list[datetime]:
        """The latest `limit` fire times in [low, high], newest first."""
        tz = zone(self.timezone)
        expression = self.cron or ""
        wall = high.astimezone(tz).replace(tzinfo=None)
        # Wall times later than `high`'s may have happened before it (the hour's first pass).
        iterator = _iterator(expression, wall + _repeat(wall, tz) + timedelta(microseconds=1),
                             backwards=True)
        found: list[datetime] = []
        if not is_wildcard(expression):
            while len(found) < limit:
                candidate = wall_to_utc(iterator.get_prev(datetime), tz)
                if candidate < low:
                    break
                if candidate <= high and (not found or candidate != found[-1]):
                    found.append(candidate)
            return found
        pending: list[datetime] = []
        for _ in range(_MAX_STEPS):
            instants = _instants(iterator.get_prev(datetime), tz)
            for instant in instants:
                if low <= instant <= high:
                    bisect.insort(pending, instant)
            # Mirror image of _cron_after: earlier wall times last happen before this one last
            # does.
            while pending and instants and pending[-1] >= instants[-1]:
                found.append(pending.pop())
                if len(found) == limit:
                    return found
            if instants and instants[-1] < low:
                break
        return found


def _instants(wall: datetime, tz: ZoneInfo) -> list[datetime]:
    """Every instant at which the local wall clock reads `wall`, in order: none in a gap, two in
    a repeated hour, else one."""
    found: list[datetime] = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if instant not in found and instant.astimezone(tz).replace(tzinfo=None) == wall:
            found.append(instant)
    return sorted(found)


def _repeat(wall: datetime, tz: ZoneInfo) -> timedelta:
    """How long the clock goes back over `wall` when it happens twice (else 0)."""
    first = wall.replace(tzinfo=tz, fold=0).utcoffset()
    second = wall.replace(tzinfo=tz, fold=1).utcoffset()
    if first is None or second is None or first <= second:
        return timedelta(0)
    return first - second


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def interval_anchor(created_at: datetime) -> datetime:
    """Intervals without a start time count from their creation, to the whole second."""
    return created_at.replace(microsecond=0)


# --- crontab files ----------------------------------------------------------------------------
#
# What cron(8) makes of a line is Debian's cron 3.0pl1 (entry.c, do_command.c with its patch
# "handle-escapes-in-commands"); crontab(5) describes it.


@record
class CrontabEntry:
    line: int  # 1-based line number in the file
    cron: str  # normalized
    command: str  # what the shell runs: the command field up to its first unescaped %
    env: dict[str, str]  # the environment assignments above the line
    timezone: str | None  # CRON_TZ above the line, if any
    input: bytes | None = None  # the command's standard input (after the first %); None: none
    user: str | None = None  # a system crontab's user field


@record
class CrontabSkip:
    """A valid entry that no schedule can express (@reboot)."""

    line: int
    reason: str


@record
class Crontab:
    entries: list[CrontabEntry]
    skipped: list[CrontabSkip]


class CrontabError(CronError):
    """A line cron would not accept; `line` is its number, `reason` what is wrong with it."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


_ENV_LINE = r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$"
# A system crontab's user field: what a user name may look like (user@domain included). A first
# word that does not (a path, $HOME/…, VAR=value, a quote) means the line has no user field.
_USER_FIELD = r"[A-Za-z0-9_][A-Za-z0-9_.@+-]*\$?"


def parse_crontab(text: str, *, system: bool = False) -> Crontab:
    """A crontab (crontab(5)): `m h dom mon dow command` lines, `@daily command` and the like,
    comments, and `NAME=value` lines that set the environment of the lines below them
    (`CRON_TZ` sets their time zone). A system crontab (`system`: /etc/crontab, /etc/cron.d/*)
    has a user field before each command. `%` in a command starts its standard input, as in cron
    (`split_command`). @reboot entries are skipped, not refused: they are valid, but have no fire
    times. CrontabError names the line of the first entry cron would not accept."""
    import re

    env: dict[str, str] = {}
    timezone: str | None = None
    entries: list[CrontabEntry] = []
    skipped: list[CrontabSkip] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r").lstrip(" \t")
        if not line.strip() or line.startswith("#"):
            continue
        assignment = re.match(_ENV_LINE, line.strip())
        if assignment and not line.startswith("@"):
            name, value = assignment.group(1), _unquote(assignment.group(2).strip())
            if name == "CRON_TZ":
                try:
                    zone(value)
                except CronError as error:
                    raise CrontabError(number, str(error)) from error
                timezone = value
            else:
                env[name] = value
            continue
        timing, user, field = _split_entry(number, line, system)
        if timing.lower() == "@reboot":
            skipped.append(CrontabSkip(number, "@reboot has no fire times (cron runs it when "
                                               "cron starts); start it with the machine instead"))
            continue
        try:
            cron = normalize(timing)
        except CronError as error:
            raise CrontabError(number, str(error)) from error
        command, stdin = split_command(field)
        entries.append(CrontabEntry(number, cron, command, dict(env), timezone, stdin, user))
    return Crontab(entries, skipped)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _split_entry(number: int, line: str, system: bool) -> tuple[str, str | None, str]:
    """An entry's timing (5 fields or an @alias), user (system crontabs) and command field: the
    rest of the line, its leading blanks skipped."""
    import re

    timing_fields = 1 if line.startswith("@") else 5
    parts = re.split(r"[ \t]+", line, maxsplit=timing_fields)
    timing = " ".join(parts[:timing_fields])
    rest = parts[timing_fields] if len(parts) > timing_fields else ""
    if not rest:
        expected = "a user and a command" if system else "a command"
        if timing_fields == 1:
            raise CrontabError(number, f"expected {expected} after {timing}")
        raise CrontabError(number, f"expected 5 time fields and {expected}: {line.strip()!r}")
    if not system:
        return timing, None, rest
    user, *command = re.split(r"[ \t]+", rest, maxsplit=1)
    if not re.fullmatch(_USER_FIELD, user) or user.isdigit():
        raise CrontabError(number, f"no user field: {user!r} is not a user name (a system "
                                   "crontab reads `m h dom mon dow user command`; --no-system "
                                   "reads a user crontab)")
    if not command or not command[0]:
        raise CrontabError(number, f"no command after the user {user!r}")
    return timing, user, command[0]


def split_command(field: str) -> tuple[str, bytes | None]:
    """A crontab command field as cron runs it: (the command for the shell, its standard input).

    The first unescaped % ends the command; in it, `\\%` is a % and `\\\\` a backslash (a
    backslash before anything else stays). The rest is the standard input, as UTF-8: each
    unescaped % a newline, `\\%` a %, every other backslash kept; a newline is added unless the
    input ends with one. Nothing after the % (or no %) means no input (None)."""
    command: list[str] = []
    index = 0
    while index < len(field):
        char = field[index]
        if char == "\\" and index + 1 < len(field) and field[index + 1] in "%\\":
            command.append(field[index + 1])
            index += 2
        elif char == "%":
            return "".join(command), _stdin(field[index + 1:])
        else:
            command.append(char)
            index += 1
    return "".join(command), None


def _stdin(data: str) -> bytes | None:
    """do_command.c's translation of the text after the first %, character for character."""
    if not data:
        return None
    out: list[str] = []
    escaped = need_newline = False
    for char in data:
        if escaped:
            if char != "%":
                out.append("\\")
        elif char == "%":
            char = "\n"
        escaped = char == "\\"
        if not escaped:
            out.append(char)
            need_newline = char != "\n"
    if escaped:
        out.append("\\")
    if need_newline:
        out.append("\n")
    return "".join(out).encode()


def mailto_addresses(env: dict[str, str]) -> list[str] | None:
    """Where cron would mail an entry's output, by its MAILTO (crontab(5)): None when MAILTO is
    not set (cron mails the crontab's owner, whom jobctl does not know), [] when it is empty
    (no mail), else the addresses (comma-separated)."""
    if "MAILTO" not in env:
        return None
    return [address.strip() for address in env["MAILTO"].split(",") if address.strip()]


def mailto_hook(addresses: list[str]) -> str:
    """The on_end hook that does what cron's MAILTO does: when the run printed something
    ($JOBCTL_HOOK_OUTPUT is not empty), mail it to `addresses` through `sendmail` on the
    worker's PATH (or /usr/sbin, /usr/lib), subject `jobctl <NAME> STATE`."""
    import shlex

    recipients = " ".join(shlex.quote(address) for address in addresses)
    header_to = shlex.quote(", ".join(addresses))
    return ('[ -s "$JOBCTL_HOOK_OUTPUT" ] || exit 0; '
            'PATH="$PATH:/usr/sbin:/usr/lib"; '
            f"{{ printf 'To: %s\\nSubject: jobctl <%s> %s\\n"
            "Content-Type: text/plain; charset=UTF-8\\n\\n' "
            f'{header_to} "$(printf %s "$JOBCTL_HOOK_NAME" | tr -d "\\r\\n")" '
            '"$JOBCTL_HOOK_STATE"; cat "$JOBCTL_HOOK_OUTPUT"; } '
            f"| sendmail -i -- {recipients}")


def is_system_crontab(path: str) -> bool:
    """Whether cron reads the file at `path` as a system crontab (with user fields): a file in a
    directory named cron.d, or a file named crontab in a directory named etc (/etc/crontab, and
    a copy of another machine's /etc), as given or with its symbolic links resolved."""
    import os
    from pathlib import Path

    for candidate in (Path(os.path.abspath(path)), Path(path).resolve()):
        if candidate.parent.name == "cron.d" or (candidate.name == "crontab"
                                                 and candidate.parent.name == "etc"):
            return True
    return False
