"""The rendering layer's rules, without a database: how control characters are shown (tables,
plain rows, JSON), how wide each column of a table gets, and how a long `key: value` wraps."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest
from rich.cells import cell_len
from rich.console import Console

from jobctl.cli.render import (
    GAP,
    OutputFormat,
    Terminal,
    _wrap,
    column_widths,
    fitted_table,
    plain_field,
    visible,
)


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b]0;PWNED\x07", "\\x1b]0;PWNED\\x07"),  # OSC: sets the window title
    ("\x1b[2J", "\\x1b[2J"),  # CSI: clears the screen
    ("\x9b2J", "\\x9b2J"),  # the 8-bit CSI (C1)
    ("a\x7fb\x08c\x00", "a\\x7fb\\x08c\\x00"),  # DEL, backspace, NUL
    ("a\tb\nc\rd", "a\\tb\\nc\\rd"),
    ("abc\u202egnp.exe", "abc\\u202egnp.exe"),  # right-to-left override
    ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),  # line and paragraph separators
    ("\u2066x\u2069\u200e\u200f\u061c", "\\u2066x\\u2069\\u200e\\u200f\\u061c"),
    ("bad \udcff byte", "bad \\udcff byte"),  # an undecodable byte (surrogateescape)
    ("C:\\temp [bold]x[/bold] é 中文 🎉 a\u200db", "C:\\temp [bold]x[/bold] é 中文 🎉 a\u200db"),
])
def test_visible(raw: str, shown: str) -> None:
    assert visible(raw) == shown
    assert visible(shown) == shown  # escapes are plain text: nothing to escape twice


def test_plain_field_doubles_backslashes_so_fields_read_back() -> None:
    assert plain_field("a\\tb\tc\\") == "a\\\\tb\\tc\\\\"
    assert plain_field("C:\\x1b") != plain_field("C:\x1b")
    assert plain_field("x\x1b[31m\ny") == "x\\x1b[31m\\ny"
    for text in ("a\tb", "a\nb", "a\\b", "\x1b\x9b\u202e"):
        field = plain_field(text)
        assert "\t" not in field and "\n" not in field
        assert field.encode().decode("unicode_escape") == text


def test_json_escapes_what_json_dumps_leaves_raw(capsys: pytest.CaptureFixture[str]) -> None:
    value = "a\x1b[2J\x7f\x9b2J\u2028\u202e\udcff é 中"
    Terminal().json({"name": value})
    out = capsys.readouterr().out
    assert all(char not in out for char in "\x1b\x7f\x9b\u2028\u202e\udcff")
    assert "é 中" in out  # other text stays readable
    assert json.loads(out) == {"name": value}


def test_err_and_note_escape(capsys: pytest.CaptureFixture[str]) -> None:
    Terminal().err("schedule evil\x1b]0;x\x07\n added")
    assert capsys.readouterr().err == "schedule evil\\x1b]0;x\\x07\\n added\n"


def test_wide_is_a_table_for_people() -> None:
    assert OutputFormat.TABLE.for_people and OutputFormat.WIDE.for_people
    assert not OutputFormat.PLAIN.for_people and not OutputFormat.JSON.for_people


# --- widths -----------------------------------------------------------------------------------


def widths_for(natural: list[int], free: list[bool], width: int,
               headers: list[int] | None = None, values: list[int] | None = None) -> list[int]:
    return column_widths(natural, values or natural, headers or [2] * len(natural), free, width)


def test_a_table_that_fits_is_left_alone() -> None:
    assert widths_for([2, 10, 30], [False, True, True], 80) == [2, 10, 30]


def test_the_widest_free_column_is_cut_first_and_fixed_ones_never() -> None:
    widths = widths_for([6, 20, 7, 9, 60], [False, True, True, False, True], 80)
    assert sum(widths) + GAP * 4 == 80
    assert widths[0] == 6 and widths[3] == 9  # id and state: whole
    assert widths[2] == 7  # narrow enough already
    assert widths[1] == 20 and widths[4] == 80 - 8 - 6 - 7 - 9 - 20


def test_cut_columns_end_equally_wide() -> None:
    widths = widths_for([3, 40, 50, 60], [False, True, True, True], 50)
    assert widths[0] == 3
    assert max(widths[1:]) - min(widths[1:]) <= 1
    assert sum(widths) + GAP * 3 == 50


def test_free_columns_keep_their_header_then_fixed_headers_give_way() -> None:
    # A fixed column whose header (11) is wider than its values (4): cut to its values only
    # when the free ones are at their floors (their header, or MIN_CUT).
    widths = column_widths([5, 11, 20], [3, 4, 20], [5, 11, 7], [True, False, True], 30)
    assert widths == [5, 11, 10]
    widths = column_widths([5, 11, 20], [3, 4, 20], [5, 11, 7], [True, False, True], 20)
    assert widths[2] >= 7 and widths[1] >= 4 and sum(widths) + GAP * 2 == 20


def test_what_cannot_fit_overflows_rather_than_cutting_an_id() -> None:
    widths = widths_for([12, 12, 30], [False, False, True], 20)
    assert widths[:2] == [12, 12] and widths[2] == 1


def test_a_fitted_table_is_one_line_a_row() -> None:
    rows = [[1234, "evil\x1b]0;PWNED\x07" * 5, "succeeded", "echo " + "x" * 200]]
    grid = fitted_table(["ID", "NAME", "STATE", "COMMAND"], rows, 80)
    console = Console(width=80, color_system=None)
    with console.capture() as captured:
        console.print(grid)
    lines = captured.get().splitlines()
    assert len(lines) == 3  # header, rule, one row
    assert all(cell_len(line) <= 80 for line in lines)
    assert lines[2].startswith("1234  evil\\x1b]0;PWNED\\x07") and "  succeeded  " in lines[2]
    assert lines[2].rstrip().endswith("…")


def test_markup_in_a_cell_is_text() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        Terminal().table(["name"], [["[bold]x[/bold]"]], OutputFormat.TABLE)
    assert "[bold]x[/bold]" in out.getvalue()


# --- key: value fields --------------------------------------------------------------------------


def test_wrap_keeps_every_character_and_breaks_after_spaces() -> None:
    text = "pg_dump --host db.internal --username backup app | gzip -9 > /backup/app.sql.gz"
    lines = _wrap(text, 30)
    assert "".join(lines) == text
    assert all(cell_len(line) <= 30 for line in lines)
    assert all(line.endswith(" ") for line in lines[:-1])
    unbroken = "x" * 95
    assert _wrap(unbroken, 30) == ["x" * 30] * 3 + ["x" * 5]
    assert _wrap("中" * 20, 21) == ["中" * 10, "中" * 10]
