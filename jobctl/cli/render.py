"""How results look: tables for people on a terminal, tab-separated rows with a header when piped,
JSON for programs, bare ids for shell loops. Job output never passes through here: it is data,
written to the byte streams as it is.

Every value a user or a job supplied (names, commands, labels, errors, host names…) is text that
must never act on the terminal. Wherever such text is shown, control characters come out as
Python-style escapes: tab, newline and carriage return as `\\t`, `\\n`, `\\r`; every other C0
character, DEL and the C1 characters as `\\xNN` (ESC is `\\x1b`, the 8-bit CSI `\\x9b`); the
Unicode line and paragraph separators, the bidirectional controls and lone surrogates as
`\\uNNNN` (`visible`). Plain output escapes the backslash itself too (`\\\\`), so each row is one
line with one field per tab and every field reads back unambiguously (`plain_field`). JSON
escapes the same characters as `\\uNNNN`, which any JSON parser reads back as they were.

Tables (`table`, on a terminal) keep one line a row down to 80 columns: ids, states, numbers and
times keep their width; the widest free-text columns (`FREE_TEXT`) are cut with `…`. `wide` is
the same table with every value whole.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any

from jobctl.timeparse import format_age, format_duration, format_instant, isoformat_utc

if TYPE_CHECKING:
    from rich.table import Table

    from jobctl.cli.app import IOStreams


class OutputFormat(StrEnum):
    TABLE = "table"
    WIDE = "wide"
    PLAIN = "plain"
    JSON = "json"
    IDS = "ids"

    @property
    def for_people(self) -> bool:
        """A table (cut to the terminal) or a wide table: ages, durations, escapes for reading."""
        return self in (OutputFormat.TABLE, OutputFormat.WIDE)


# --- text that cannot act on a terminal ---------------------------------------------------------

# C0, DEL and C1; Arabic letter mark, LRM/RLM, the line and paragraph separators, the bidi
# embeddings/overrides/isolates; lone surrogates (undecodable bytes, which no UTF-8 stream takes).
_UNSAFE = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE_RE = re.compile(f"[{_UNSAFE}]")
_UNSAFE_OR_BACKSLASH_RE = re.compile(f"[{_UNSAFE}\\\\]")
_JSON_UNSAFE_RE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
                             "\ud800-\udfff]")  # json.dumps escapes C0 itself
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` for a person on a terminal: control characters as escapes (`\\x1b`, `\\n`,
    `\\u202e`…), everything else (backslashes too) as it is. Always one line."""
    return _UNSAFE_RE.sub(_escape, text)


def plain_field(text: str) -> str:
    """`text` as one tab-separated field: like `visible`, and `\\` doubled, so that a field
    never holds a tab or a line break and reads back unambiguously."""
    return _UNSAFE_OR_BACKSLASH_RE.sub(_escape, text)


def _json_safe(text: str) -> str:
    """JSON text with DEL, C1, separators, bidi controls and lone surrogates as `\\uNNNN`
    (outside strings JSON is ASCII, so only string contents change, and they parse the same)."""
    return _JSON_UNSAFE_RE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


# --- the terminal -------------------------------------------------------------------------------


class Terminal:
    """What we print to, and whether a person is reading it: the run's `IOStreams` (the
    process's by default; tests pass their own)."""

    def __init__(self, io: IOStreams | None = None, no_color: bool = False) -> None:
        if io is None:
            from jobctl.cli.app import IOStreams

            io = IOStreams.from_process()
        self.io = io
        self.stdout_is_tty = io.stdout_is_tty
        self.stderr_is_tty = io.stderr_is_tty
        self.no_color = no_color or io.no_color

    def resolve(self, fmt: OutputFormat | None) -> OutputFormat:
        if fmt is not None:
            return fmt
        return OutputFormat.TABLE if self.stdout_is_tty else OutputFormat.PLAIN

    def width(self, fmt: OutputFormat) -> int | None:
        """The columns a table must fit in: the terminal's for `table` on a terminal (COLUMNS
        when set); None (as wide as its values) for `wide` and when stdout is not a terminal."""
        if fmt is not OutputFormat.TABLE or not self.stdout_is_tty:
            return None
        return self.io.terminal_width()

    def out(self, text: str = "") -> None:
        self.io.stdout.write(text + "\n")

    def err(self, text: str) -> None:
        """A one-line message on stderr; names in it cannot act on the terminal."""
        self.io.stderr.write(visible(text) + "\n")

    def note(self, text: str) -> None:
        """A remark for a person: on a terminal only, never mixed into piped output."""
        if self.stdout_is_tty:
            self.out(visible(text))

    def write_bytes(self, stream: str, data: bytes) -> None:
        self.io.write_bytes(stream, data)

    def json(self, document: Any) -> None:
        import json

        self.out(_json_safe(json.dumps(document, indent=2, ensure_ascii=False)))

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]], fmt: OutputFormat,
              title: str | None = None, free: Collection[str] | None = None) -> None:
        """Rows as `fmt` says. For `table` and `wide`, `free` names the columns (by header) that
        may be cut to fit the terminal; by default those in `FREE_TEXT`."""
        if fmt is OutputFormat.IDS:
            for row in rows:
                self.out(plain_field(_cell(row[0], fmt)))
        elif fmt is OutputFormat.PLAIN:
            self.out("\t".join(h.upper() for h in headers))
            for row in rows:
                self.out("\t".join(plain_field(_cell(value, fmt)) for value in row))
        else:
            grid = fitted_table([h.upper() for h in headers], rows, self.width(fmt), title=title,
                                free=free)
            self.print_rich(grid)

    def print_rich(self, renderable: Any) -> None:
        """Print a Rich renderable (a `fitted_table`, a Group of them) at its own width: colour
        only on a terminal, and never folded by Rich (the tables fit already)."""
        from rich.console import Console
        from rich.measure import Measurement

        probe = Console(width=10**6, color_system=None)
        needed = Measurement.get(probe, probe.options, renderable).maximum
        if self.stdout_is_tty:
            console = Console(file=self.io.stdout, force_terminal=True, no_color=self.no_color,
                              highlight=False, width=max(needed, self.io.terminal_width()))
            console.print(renderable)
            return
        console = Console(no_color=True, highlight=False, color_system=None, width=max(needed, 1))
        with console.capture() as captured:
            console.print(renderable)
        for line in captured.get().splitlines():
            self.out(line.rstrip(" "))  # Rich pads every cell; a file needs no trailing blanks

    def fields(self, pairs: Sequence[tuple[str, Any]],
               fmt: OutputFormat = OutputFormat.TABLE) -> None:
        """`key: value` lines, for one object: times as local time and age for people (table),
        ISO 8601 UTC for programs (plain). On a terminal (`table`), a value longer than the line
        goes on below, indented under the values: nothing is cut, no line overflows."""
        width = max(len(key) for key, _ in pairs)
        columns = self.width(fmt)
        for key, value in pairs:
            if isinstance(value, datetime) and fmt.for_people:
                text = f"{format_instant(value)} ({format_age(value)})"
            elif fmt.for_people:
                text = visible(_cell(value, OutputFormat.TABLE))
            else:
                text = plain_field(_cell(value, fmt))
            lead = f"{key + ':':<{width + 1}} "
            if columns is None:
                self.out(lead + text)
            else:
                lines = _wrap(text, columns - len(lead))
                self.out(lead + lines[0])
                for line in lines[1:]:
                    self.out(" " * len(lead) + line)


# --- tables -------------------------------------------------------------------------------------

# Columns (by header, any case) of free text, cut with … when a table is too wide for the
# terminal; every other column (ids, states, numbers, times) always shows its values whole.
FREE_TEXT = frozenset({
    "name", "command", "queue", "queues", "host", "worker", "error", "labels", "needs", "task",
    "progress", "schedule", "cron", "tz", "value", "from",
})
GAP = 2  # spaces between two columns
MIN_CUT = 5  # a free column is cut below this (or its header's width) only as a last resort

_STATE_STYLES = {
    "succeeded": "green", "failed": "red", "lost": "red", "cancelled": "yellow", "skipped": "dim",
    "running": "cyan", "queued": "", "waiting": "dim", "stopped": "dim", "draining": "yellow",
}


def _state_style(cell: str) -> str:
    return _STATE_STYLES.get(cell, "")


def fitted_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], width: int | None,
                 title: str | None = None, free: Collection[str] | None = None) -> Table:
    """The one table for people, as a Rich renderable: `headers` as they are shown, one line
    a row, values made `visible` and never read as Rich markup, states coloured. With a `width`,
    the widest `free` columns (by header, any case) are cut to fit it (see `column_widths`);
    with None, every value is whole."""
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    cells = [[visible(_cell(value, OutputFormat.TABLE)) for value in row] for row in rows]
    labels = [visible(header) for header in headers]
    cuttable = FREE_TEXT if free is None else frozenset(name.lower() for name in free)
    natural = [max([cell_len(label)] + [cell_len(row[i]) for row in cells])
               for i, label in enumerate(labels)]
    values = [max([0] + [cell_len(row[i]) for row in cells]) for i in range(len(labels))]
    widths = natural if width is None else column_widths(
        natural, values, [cell_len(label) for label in labels],
        [header.lower() in cuttable for header in headers], width)
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, GAP - 1, 0, 0),
                 title=Text(visible(title)) if title else None, title_justify="left",
                 expand=False)
    for label, column_width in zip(labels, widths, strict=True):
        grid.add_column(label, width=column_width, no_wrap=True, overflow="ellipsis")
    for row in cells:
        # Text(), not str: a job's name or command must never be read as Rich markup.
        grid.add_row(*(Text(cell, style=_state_style(cell)) for cell in row))
    return grid


def column_widths(natural: Sequence[int], values: Sequence[int], headers: Sequence[int],
                  free: Sequence[bool], width: int) -> list[int]:
    """Column widths whose sum, with a gap between columns, fits `width` where it can.

    `natural` is each column's widest cell (header included), `values` its widest value,
    `headers` its header's width. Free-text columns shrink first, the widest first (all those
    cut end up equally wide), each down to its header or MIN_CUT columns; then the headers of
    the other columns shrink to their values (a header cut with …, never a value); then free
    columns down to a single column (just "…"). What still does not fit overflows."""
    budget = width - GAP * (len(natural) - 1)
    floors: list[int | None] = [min(n, max(h, MIN_CUT)) if f else None
                                for n, h, f in zip(natural, headers, free, strict=True)]
    widths = _shrink(list(natural), floors, budget)
    if sum(widths) > budget:
        floors = [max(v, 1) if not f else None for v, f in zip(values, free, strict=True)]
        widths = _shrink(widths, floors, budget)
    if sum(widths) > budget:
        floors = [min(w, 1) if f else None for w, f in zip(widths, free, strict=True)]
        widths = _shrink(widths, floors, budget)
    return widths


def _shrink(widths: list[int], floors: Sequence[int | None], budget: int) -> list[int]:
    """Cut the columns with a floor (None: never cut) to a common cap, none below its floor, to
    the largest cap that fits `budget`; what is left over widens the cut ones by one each."""

    def at(cap: int) -> list[int]:
        return [w if f is None else max(f, min(w, cap)) for w, f in zip(widths, floors,
                                                                          strict=True)]

    if sum(widths) <= budget or not widths:
        return widths
    low, high = 0, max(widths)  # the largest cap whose widths fit, found by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if sum(at(middle)) <= budget:
            low = middle
        else:
            high = middle - 1
    fitted = at(low)
    spare = budget - sum(fitted)
    for i, (w, f) in enumerate(zip(widths, floors, strict=True)):
        if spare <= 0:
            break
        if f is not None and fitted[i] < w:
            fitted[i] += 1
            spare -= 1
    return fitted


def _wrap(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width` columns (at least 20), broken after a space where one
    is near the end of a line, else anywhere. Every character is kept."""
    from rich.cells import cell_len

    width = max(width, 20)
    if cell_len(text) <= width:
        return [text]
    lines: list[str] = []
    line = ""
    for char in text:
        if cell_len(line + char) > width:
            space = line.rfind(" ")
            if space >= width // 2:
                lines.append(line[: space + 1])
                line = line[space + 1:]
            else:
                lines.append(line)
                line = ""
        line += char
    lines.append(line)
    return lines


def _cell(value: Any, fmt: OutputFormat) -> str:
    """One value as text: for people (table, wide), times are ages ("3m05s ago") and seconds
    are durations ("1m30s"); for programs (plain, ids), ISO 8601 UTC and seconds with
    decimals. Not escaped: see `visible` and `plain_field`."""
    people = fmt.for_people
    if value is None:
        return "-" if people else ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, datetime):
        return format_age(value) if people else (isoformat_utc(value) or "")
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return format_duration(value) if people else f"{value:.3f}"
    return str(value)


def shell_join(argv: Sequence[str]) -> str:
    """A command as a person would type it."""
    import shlex

    if len(argv) == 3 and argv[:2] == ["/bin/sh", "-c"]:
        return argv[2]
    return shlex.join(argv)
