"""The one set of safe-text rules (backchannel/safe_text.py) and the CLI's message layout."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel.cli import INDENT, _block, _fold, _message_line
from backchannel.safe_text import KEPT_FORMAT, REPLACEMENT, cell_width, clean, clean_lines
from backchannel.views import FileInfo, MessageView
from tests.hostile_text import FAKE, LOCAL, WIRE, forged_headers, unsafe

FLAG = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"


def test_every_format_character_of_this_python_is_neutralised() -> None:
    """The module's table of format characters covers the running Unicode database."""
    missed = [
        f"U+{code:04X}"
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) == "Cf"
        and chr(code) not in KEPT_FORMAT
        and clean(chr(code)) != REPLACEMENT
    ]
    assert not missed


@pytest.mark.parametrize("text", WIRE + LOCAL)
def test_the_corpus_comes_out_harmless(text: str) -> None:
    assert not unsafe(clean(text))
    assert all(not unsafe(line) for line in clean_lines(text))


def test_what_text_needs_is_kept() -> None:
    persian = "می\u200cخواهم"  # noqa: RUF001 - ZWNJ inside a Persian word
    family = "👨\u200d👩\u200d👧"
    for text in (persian, family, FLAG, "Grüße 你好 مرحبا", "e\u0301", "❤\ufe0f"):
        assert clean(text) == text
    assert clean("tag\U000e0041 alone") == f"tag{REPLACEMENT} alone"
    assert clean("\U0001f3f4\U000e0067 unterminated") == f"\U0001f3f4{REPLACEMENT} unterminated"


def test_line_breaks() -> None:
    lines = clean_lines("a\r\nb\rc\x0bd\x0ce\x85f\u2028g\u2029h")
    assert lines == ["a", "bc", "d", "e", "f", "g", "h"]  # a lone CR is dropped
    assert clean("a\u2028b\nc") == "a b c"


def test_cell_width_errs_wide() -> None:
    assert cell_width("abc") == 3
    assert cell_width("中文") == 4
    assert cell_width("e\u0301") == 1
    assert cell_width("❤\ufe0f") == 2
    assert cell_width(FLAG) == 2


# -- the CLI's layout ------------------------------------------------------------------------


def _view(text: str, name: str = "Mallory", **changes: object) -> MessageView:
    fields: dict[str, object] = {
        "id": "ab" * 16,
        "room": "cd" * 16,
        "sender": "ef" * 16,
        "sender_name": name,
        "text": text,
        "time": 1_700_000_000.0,
    }
    fields.update(changes)
    return MessageView(**fields)  # type: ignore[arg-type]


def test_a_forged_line_is_indented_under_its_own_header() -> None:
    shown = _message_line(_view("ok\n" + FAKE)).split("\n")
    assert shown[0].endswith("] Mallory: ok")
    assert shown[1] == INDENT + FAKE
    assert not forged_headers(shown, 1)


def test_names_file_names_and_kinds_are_cleaned() -> None:
    for name in LOCAL + WIRE:
        for view in (
            _view("hi", name),
            _view("", name, deleted=True),
            _view("", name, file=FileInfo(name, 10, True)),
            _view(name, name, kind="notice"),
            _view("", name, kind=name),
        ):
            shown = _message_line(view)
            assert not unsafe(shown), (view, shown)
            assert not forged_headers(shown.split("\n"), 1), shown


@given(
    st.lists(st.sampled_from([*WIRE, *LOCAL, "x" * 50, " ", "中文", "\n", FAKE]), max_size=8),
    st.integers(min_value=24, max_value=120),
    st.sampled_from(["Mallory", "名字" * 10, "x" * 64, LOCAL[1]]),
)
def test_wrapped_rows_fit_and_only_the_first_is_a_header(
    parts: list[str], width: int, name: str
) -> None:
    rows = _message_line(_view("".join(parts), name), width).split("\n")
    for row in rows:
        assert cell_width(row) <= width, (row, width)
        assert not unsafe(row)
    assert not any(row.startswith("[") for row in rows[1:])
    assert all(row == "" or row.startswith(INDENT) for row in rows[1:])


def test_padding_cannot_push_a_header_to_the_start_of_a_row() -> None:
    """Without wrapping of our own, the terminal would start the fake at column 0."""
    for pad in range(0, 90):
        rows = _message_line(_view("ok" + " " * pad + FAKE), 80).split("\n")
        assert not forged_headers(rows, 1), rows
        assert all(cell_width(row) <= 80 for row in rows)


def test_fold_and_block() -> None:
    assert _fold("short", 30) == ["short"]
    assert _fold("aaaa bbbb cccc dddd", 10) == ["aaaa bbbb", INDENT + "cccc", INDENT + "dddd"]
    assert _fold("x" * 25, 10) == ["x" * 10, INDENT + "x" * 6, INDENT + "x" * 6, INDENT + "xxx"]
    assert _block("head: ", ["one", "", "three"]) == f"head: one\n\n{INDENT}three"
