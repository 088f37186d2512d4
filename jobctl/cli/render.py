"""How results look: Rich tables on a terminal, tab-separated rows with a header when piped,
JSON for programs, bare ids for shell loops. Job output never passes through here: it is data,
written to the byte streams as it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any

from jobctl.timeparse import format_age, format_duration, format_instant, isoformat_utc


class OutputFormat(StrEnum):
    TABLE = "table"
    PLAIN = "plain"
    JSON = "json"
    IDS = "ids"


class Terminal:
    """What we print to, and whether a person is reading it. Tests swap it."""

    def __init__(self, no_color: bool = False) -> None:
        self.stdout_is_tty = sys.stdout.isatty()
        self.stderr_is_tty = sys.stderr.isatty()
        self.no_color = no_color or "NO_COLOR" in os.environ

    def resolve(self, fmt: OutputFormat | None) -> OutputFormat:
        if fmt is not None:
            return fmt
        return OutputFormat.TABLE if self.stdout_is_tty else OutputFormat.PLAIN

    def out(self, text: str = "") -> None:
        sys.stdout.write(text + "\n")

    def err(self, text: str) -> None:
        sys.stderr.write(text + "\n")

    def note(self, text: str) -> None:
        """A remark for a person: on a terminal only, never mixed into piped output."""
        if self.stdout_is_tty:
            self.out(text)

    def write_bytes(self, stream: str, data: bytes) -> None:
        target = sys.stderr if stream == "stderr" else sys.stdout
        target.flush()
        target.buffer.write(data)
        target.buffer.flush()

    def json(self, document: Any) -> None:
        import json

        self.out(json.dumps(document, indent=2, ensure_ascii=False))

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]], fmt: OutputFormat,
              title: str | None = None) -> None:
        cells = [[_cell(value, fmt) for value in row] for row in rows]
        if fmt is OutputFormat.IDS:
            for row in cells:
                self.out(row[0])
        elif fmt is OutputFormat.PLAIN:
            self.out("\t".join(h.upper() for h in headers))
            for row in cells:
                self.out("\t".join(_one_line(cell) for cell in row))
        elif self.stdout_is_tty:
            self._rich_table(headers, cells, title)
        else:
            from tabulate import tabulate

            if title:
                self.out(title)
            self.out(tabulate(cells, headers=[h.upper() for h in headers], tablefmt="simple"))

    def _rich_table(self, headers: Sequence[str], rows: list[list[str]], title: str | None) -> None:
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False)
        for header in headers:
            table.add_column(header.upper(), overflow="fold")
        for row in rows:
            # Text(), not str: a job's name or command must never be read as Rich markup.
            table.add_row(*(Text(cell, style=_state_style(cell)) for cell in row))
        Console(no_color=self.no_color, highlight=False).print(table)

    def fields(self, pairs: Sequence[tuple[str, Any]],
               fmt: OutputFormat = OutputFormat.TABLE) -> None:
        """`key: value` lines, for one object: times as local time and age for people (table),
        ISO 8601 UTC for programs (plain)."""
        width = max(len(key) for key, _ in pairs)
        for key, value in pairs:
            if isinstance(value, datetime) and fmt is OutputFormat.TABLE:
                text = f"{format_instant(value)} ({format_age(value)})"
            else:
                text = _one_line(_cell(value, fmt)) if fmt is OutputFormat.PLAIN else _cell(
                    value, OutputFormat.TABLE)
            self.out(f"{key + ':':<{width + 1}} {text}")


_STATE_STYLES = {
    "succeeded": "green", "failed": "red", "lost": "red", "cancelled": "yellow", "skipped": "dim",
    "running": "cyan", "queued": "", "waiting": "dim", "stopped": "dim",
}


def _state_style(cell: str) -> str:
    return _STATE_STYLES.get(cell, "")


def _cell(value: Any, fmt: OutputFormat) -> str:
    """One value as text: for people (table), times are ages ("3m05s ago") and seconds are
    durations ("1m30s"); for programs (plain, ids), ISO 8601 UTC and seconds with decimals."""
    if value is None:
        return "-" if fmt is OutputFormat.TABLE else ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, datetime):
        return format_age(value) if fmt is OutputFormat.TABLE else (isoformat_utc(value) or "")
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return format_duration(value) if fmt is OutputFormat.TABLE else f"{value:.3f}"
    return str(value)


def _one_line(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ")


def shell_join(argv: Sequence[str]) -> str:
    """A command as a person would type it."""
    import shlex

    if len(argv) == 3 and argv[:2] == ["/bin/sh", "-c"]:
        return argv[2]
    return shlex.join(argv)
