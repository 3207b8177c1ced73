"""Text from others made safe to show in a terminal: one set of rules for every UI.

Everything a peer or the relay chooses (message text, display names, room titles,
file names, reactions, error texts) goes through :func:`clean` (one line) or
:func:`clean_lines` (message bodies) before the terminal app or the command line
shows it. The rules:

* ESC and the other C0 controls become their Unicode *control pictures* (``␛``,
  ``␇``…), DEL becomes ``␡``: a terminal would act on them (move the cursor, change
  colours, set the window title, ring the bell); shown this way, the reader still
  sees that something odd was sent.
* C1 controls (U+0080-U+009F), lone surrogates, bidi embeddings, overrides, isolates
  and marks (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C) and every other
  *format* character (Unicode category Cf: zero-width space, word joiner, BOM,
  invisible operators, tag characters…) become U+FFFD. The exceptions are the zero-width
  non-joiner and joiner (U+200C, U+200D), which Persian, Indic scripts and emoji
  sequences need, and complete emoji tag sequences (the flags of England, Scotland
  and Wales).
* Carriage returns are dropped (``\\r\\n`` is a newline); a tab becomes four spaces;
  vertical tab, form feed, the information separators, NEL and the Unicode line and
  paragraph separators count as line breaks.
* :func:`clean` puts everything on one line (a line break becomes a space);
  :func:`clean_lines` splits a body into lines, each as safe as :func:`clean`'s.

The module imports nothing from the UIs (no Textual, no Rich), so the command line
uses it without loading the terminal app. Laying the lines out so that none of them
can pass for another message's header is the UI's job (see ``cli.py``).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["KEPT_FORMAT", "REPLACEMENT", "cell_width", "clean", "clean_lines"]

#: What stands in for a character that must not reach the terminal.
REPLACEMENT = "\ufffd"
#: Format characters that text needs and that cannot move or hide other text: ZWNJ, ZWJ.
KEPT_FORMAT = frozenset("\u200c\u200d")

#: Characters some terminal or renderer treats as the end of a line, besides "\n".
_LINE_BREAKS = frozenset("\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
#: Every format character (Unicode category Cf, up to Unicode 15.1) but ZWNJ and ZWJ;
#: ``tests/test_safe_text.py`` checks it against the running Python's Unicode database.
_FORMAT = (
    r"\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f"
    r"\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    r"\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    r"\U000e0020-\U000e007f"
)
#: C0 controls (the line breaks among them), DEL, C1 controls, lone surrogates, the
#: Unicode line and paragraph separators, and the format characters.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029" + _FORMAT + "]")
#: A flag emoji written with tag characters: black flag, tag letters, cancel tag.
_TAG_SEQUENCE = r"\U0001f3f4[\U000e0020-\U000e007e]{1,32}\U000e007f"
_WORK = re.compile("(" + _TAG_SEQUENCE + ")|" + _UNSAFE.pattern)
#: Categories a terminal draws in no cell of their own: combining marks, and the format
#: characters :func:`clean` leaves (ZWNJ, ZWJ, the tags of a flag).
_ZERO_WIDTH = frozenset({"Mn", "Me", "Cf"})


def _stand_in(ch: str, *, multiline: bool) -> str:
    if ch == "\n" or ch in _LINE_BREAKS:
        return "\n" if multiline else " "
    if ch == "\t":
        return "    "
    if ch == "\r":
        return ""
    code = ord(ch)
    if code < 0x20:
        return chr(0x2400 + code)  # the control picture, e.g. ␛ for ESC
    if code == 0x7F:
        return "\u2421"  # ␡
    return REPLACEMENT


def clean(text: str, *, multiline: bool = False) -> str:
    """``text`` with every character that could act on the terminal made harmless.

    Args:
        text: anything a peer or the relay sent (a name, a title, a file name, a body).
        multiline: keep line breaks, as ``"\\n"`` (for a body shown on several lines).

    Returns:
        The text by the rules of this module: ``text`` itself when nothing needed
        changing; on one line unless ``multiline``.
    """
    if _UNSAFE.search(text) is None:
        return text

    def replace(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return match.group(1)  # a flag emoji: its tag characters are harmless there
        return _stand_in(match.group(), multiline=multiline)

    return _WORK.sub(replace, text)


def clean_lines(text: str) -> list[str]:
    """A message body as safe lines: split at every line break, each cleaned like :func:`clean`."""
    return clean(text, multiline=True).split("\n")


def cell_width(text: str) -> int:
    """How many terminal cells ``text`` (already cleaned) takes, erring on the wide side.

    East Asian wide and fullwidth characters take two cells; combining marks and the
    joiners none; a variation selector 16 (emoji presentation) one, since a terminal
    may draw the emoji before it two cells wide. Over-counting only wraps a line early;
    under-counting would let the terminal wrap it instead, at column 0.
    """
    width = 0
    for ch in text:
        if ch < "\u0300" or ch == "\ufe0f":  # Latin (the common case), or VS16
            width += 1
        elif unicodedata.category(ch) in _ZERO_WIDTH:
            continue
        else:
            width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width
