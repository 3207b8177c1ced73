"""The one set of safe-text rules (backchannel/safe_text.py) and the CLI's message layout."""

from __future__ import annotations

import sys
import time
import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len

from backchannel.cli import INDENT, _block, _fold, _message_line
from backchannel.safe_text import (
    KEPT_FORMAT,
    REPLACEMENT,
    cell_width,
    char_width,
    clean,
    clean_lines,
)
from backchannel.views import FileInfo, MessageView
from tests.hostile_text import FAKE, LOCAL, WIRE, forged_headers, unsafe

FLAG = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"

#: Unicode's default-ignorable code points (DerivedCoreProperties.txt): drawn as nothing.
DEFAULT_IGNORABLE = [
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
]
#: Those that real text needs: ZWNJ, ZWJ, text and emoji presentation (VS15, VS16).
NEEDED = frozenset("\u200c\u200d\ufe0e\ufe0f")


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


def test_invisible_letters_and_other_ignorables_are_shown() -> None:
    """Hangul fillers, the grapheme joiner, stray selectors...: U+FFFD, not nothing."""
    shown_as_nothing = [
        f"U+{code:04X}"
        for first, last in DEFAULT_IGNORABLE
        for code in range(first, last + 1)
        if chr(code) not in NEEDED and clean(f"a{chr(code)}b") != f"a{REPLACEMENT}b"
    ]
    assert not shown_as_nothing
    for name in ("Farida\u3164", "Farida\u1160", "Farida\uffa0", "\u115fFarida", "Fa\u034frida"):
        assert REPLACEMENT in clean(name), name
        assert clean(name) != "Farida"


def test_selectors_that_text_needs_are_kept() -> None:
    kept = [
        "❤\ufe0f",  # emoji presentation
        "☺\ufe0e",  # text presentation
        "葛\U000e0100",  # an ideographic variation sequence (Japanese names)
        "神\ufe00",  # a CJK compatibility variant
        "\u1820\u180b",  # a Mongolian letter and a free variation selector
        "👨\u200d👩\u200d👧",
        FLAG,
    ]
    for text in kept:
        assert clean(text) == text, ascii(text)
    for stray in ("a\U000e0100", "a\ufe00", "a\u180b", "\U000e0100", "\u180b"):
        assert REPLACEMENT in clean(stray), ascii(stray)


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
    assert cell_width("\u2630") == 2  # ☰: wide since Unicode 16 (Python 3.11 knows 14)
    assert cell_width("\u2500") == 2  # ─: East Asian ambiguous, two cells in CJK terminals
    assert cell_width("é") == 2  # ambiguous too
    assert cell_width(REPLACEMENT) == 2  # the cleaner's own stand-in is ambiguous
    assert cell_width("\U0001fae9") == 2  # unassigned in Python 3.11, wide in Unicode 15
    assert cell_width("\U00050000") == 2  # unassigned: a later Unicode may make it wide


def _code_points() -> list[str]:
    """Every assigned character :func:`clean` lets through on its own.

    (Unassigned and private-use code points count two cells, the most there is.)
    """
    assert char_width("\U00050000") == char_width("\U000f0000") == 2
    return [
        ch
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(ch := chr(code)) not in ("Cn", "Co", "Cs") and clean(ch) == ch
    ]


def test_no_character_is_counted_narrower_than_a_terminal_may_draw_it() -> None:
    """Against Rich's Unicode 16+ table (kitty, ghostty, wezterm, foot, VTE) and a CJK
    terminal that draws East Asian ambiguous characters two cells wide."""
    cjk_wide = "AWF"
    narrow = [
        f"U+{ord(ch):04X}"
        for ch in _code_points()
        if char_width(ch) < cell_len(ch)
        or (unicodedata.east_asian_width(ch) in cjk_wide and 0 < char_width(ch) < 2)
    ]
    # VS16 counts one cell of its own: the emoji before it may be drawn two cells wide.
    assert narrow == ["U+FE0F"]


def _terminal(rows: list[str], columns: int, width_of: Callable[[str], int]) -> list[str]:
    """What a terminal shows: every row wrapped at ``columns`` cells, continuing at column 0."""
    shown = []
    for row in rows:
        line, used = "", 0
        for ch in row:
            w = width_of(ch)
            if used + w > columns:
                shown.append(line)
                line, used = "", 0
            line += ch
            used += w
        shown.append(line)
    return shown


def _cjk_width(ch: str) -> int:
    return 2 if unicodedata.east_asian_width(ch) in "AWF" else cell_len(ch)


@pytest.mark.parametrize("pad", ["\u2630", "\u2500", "é", "\U0001fae9", REPLACEMENT])
@pytest.mark.parametrize("width_of", [cell_len, _cjk_width], ids=["unicode16", "cjk"])
def test_wide_drawn_characters_cannot_push_a_header_to_column_0(
    pad: str, width_of: Callable[[str], int]
) -> None:
    """The red team's padding: characters a terminal draws wider than Python's table says."""
    head = len(_message_line(_view("", time=time.time()), 79))
    for extra in range(3):
        body = "x" * extra + pad * ((80 - head) // 2) + FAKE
        rows = _message_line(_view(body, time=time.time()), 79).split("\n")
        shown = _terminal(rows, 80, width_of)
        assert len(shown) == len(rows), shown  # the terminal wrapped no row itself
        assert not forged_headers(shown, 1), shown


def test_output_that_is_not_a_terminal_is_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    """``read | less``: folded at $COLUMNS, else 80, with rows indented all the same."""
    monkeypatch.delenv("COLUMNS", raising=False)
    body = "ok".ljust(80) + FAKE
    rows = _message_line(_view(body, time=time.time())).split("\n")
    assert len(rows) > 1 and all(cell_width(row) <= 79 for row in rows)
    assert not forged_headers(_terminal(rows, 80, cell_len), 1)
    monkeypatch.setenv("COLUMNS", "50")
    rows = _message_line(_view(body, time=time.time())).split("\n")
    assert all(cell_width(row) <= 49 for row in rows)
    assert not forged_headers(_terminal(rows, 50, cell_len), 1)


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
    st.lists(
        st.sampled_from([*WIRE, *LOCAL, "x" * 50, " ", " " * 90, "中文", "\u2630", "\n", FAKE]),
        max_size=8,
    ),
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
    # a long word after a short one, a long run of spaces: no row is ever too wide
    assert _fold("a " + "b" * 20, 10) == ["a bbbbbbbb", INDENT + "b" * 6, INDENT + "b" * 6]
    assert _fold("hd: " + " " * 30 + FAKE, 30) == [
        "hd:",
        INDENT + "[22:48] Farida: I accept",
        INDENT + "the proposal in full.",
    ]
    assert _block("head: ", ["one", "", "three"]) == f"head: one\n\n{INDENT}three"
