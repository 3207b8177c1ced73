"""The sanitizer for peer text: nothing a peer sends can drive the terminal."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backchannel.safe_text import clean, clean_lines
from backchannel.tui.dialogs._text import plain


def _harmless(text: str) -> bool:
    return not any(
        ord(c) < 0x20
        or 0x7F <= ord(c) <= 0x9F
        or c
        in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u2028\u2029"
        for c in text
    )


def test_escape_sequences_become_visible_pictures() -> None:
    assert clean("\x1b[2J\x1b]0;pwned\x07") == "␛[2J␛]0;pwned␇"


def test_c1_controls_and_bidi_overrides_are_replaced() -> None:
    assert clean("a\x9b31mb\u202ec\u2066d") == "a\ufffd31mb\ufffdc\ufffdd"


def test_newlines_and_tabs() -> None:
    assert clean("one\ntwo\tthree\r") == "one two    three"
    assert clean_lines("one\r\ntwo\u2028three") == ["one", "two", "three"]


def test_ordinary_text_is_untouched() -> None:
    text = "Grüße, 你好, مرحبا, emoji 🙂 and [bold]markup[/bold]"
    assert clean(text) is text
    assert clean_lines(text) == [text]


def test_markup_stays_literal() -> None:
    assert plain("[bold]x[/bold]").plain == "[bold]x[/bold]"
    assert not plain("[bold]x[/bold]").spans


@given(st.text())
def test_clean_leaves_nothing_harmful(text: str) -> None:
    assert _harmless(clean(text))
    assert all(_harmless(line) for line in clean_lines(text))
