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
* The other *default-ignorable* code points, which a terminal draws as nothing or as
  blank cells and which let one name pass for another, become U+FFFD too: the Hangul
  fillers (U+115F, U+1160, U+3164, U+FFA0), the combining grapheme joiner (U+034F),
  the Khmer inherent vowels (U+17B4, U+17B5), variation selectors and the unassigned
  ignorables (U+2065, U+FFF0-U+FFF8, U+E0000-U+E0FFF). Kept where text needs them:
  the emoji and text presentation selectors (U+FE0E, U+FE0F), the other variation
  selectors right after a CJK ideograph (ideographic variants, e.g. in Japanese names),
  and the Mongolian free variation selectors right after a Mongolian letter.
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

from wcwidth import wcwidth as _wcwidth

__all__ = ["KEPT_FORMAT", "REPLACEMENT", "cell_width", "char_width", "clean", "clean_lines"]

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
#: Default-ignorable code points that are not format characters (Unicode's
#: DerivedCoreProperties.txt), but VS15 and VS16 (U+FE0E, U+FE0F): drawn as nothing
#: or as blank cells. Variation selectors stay in the sequences :data:`_VARIANTS` allows.
_IGNORABLE = (
    r"\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u2065\u3164\ufe00-\ufe0d\uffa0"
    r"\ufff0-\ufff8\U000e0000\U000e0002-\U000e001f\U000e0080-\U000e0fff"
)
#: C0 controls (the line breaks among them), DEL, C1 controls, lone surrogates, the
#: Unicode line and paragraph separators, the format and the default-ignorable characters.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029" + _FORMAT + _IGNORABLE + "]")
#: A flag emoji written with tag characters: black flag, tag letters, cancel tag.
_TAG_SEQUENCE = r"\U0001f3f4[\U000e0020-\U000e007e]{1,32}\U000e007f"
#: Variation sequences real text uses: a CJK ideograph (unified or compatibility) and
#: a variation selector (VS1-VS14, VS17-VS256), a Mongolian letter and a free variation
#: selector.
_VARIANTS = (
    r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]"
    r"[\ufe00-\ufe0d\U000e0100-\U000e01ef]"
    r"|[\u1820-\u1878\u1880-\u18aa][\u180b-\u180d\u180f]"
)
_WORK = re.compile("(" + _TAG_SEQUENCE + "|" + _VARIANTS + ")|" + _UNSAFE.pattern)
#: What a terminal draws in no cell of its own: the format characters :func:`clean`
#: leaves (ZWNJ, ZWJ, the tags of a flag) and the variation selectors it leaves.
_NO_CELL = re.compile(
    r"[\u200c\u200d\U000e0020-\U000e007f\ufe00-\ufe0e\U000e0100-\U000e01ef\u180b-\u180f]"
)
#: Emoji presentation: a terminal may draw the character before it two cells wide.
_VS16 = "\ufe0f"


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
            return match.group(1)  # a flag, a variant: the selectors are harmless there
        return _stand_in(match.group(), multiline=multiline)

    return _WORK.sub(replace, text)


def clean_lines(text: str) -> list[str]:
    """A message body as safe lines: split at every line break, each cleaned like :func:`clean`."""
    return clean(text, multiline=True).split("\n")


def char_width(ch: str) -> int:
    """The most terminal cells any current terminal may draw ``ch`` in (0, 1 or 2).

    * printable ASCII: one;
    * combining marks (Mn, Me), the joiners, a flag's tags and the variation selectors
      :func:`clean` keeps: none (they join the character before them), but VS16
      (emoji presentation) one, since a terminal may draw the emoji before it two
      cells wide;
    * two for anything a terminal may draw two cells wide: wide and fullwidth by
      the ``wcwidth`` library's tables (a newer Unicode than Python's, e.g. the symbols
      made wide in Unicode 16), East Asian *ambiguous* characters (two cells in CJK
      terminals: Greek, Cyrillic, box drawing, U+FFFD…), code points unassigned in
      Python's tables (a newer Unicode may make them wide) and anything ``wcwidth``
      does not know;
    * else one, even for what ``wcwidth`` counts as none (conjoining jamo, spacing
      marks: a terminal may not join them).
    """
    if " " <= ch <= "~":
        return 1
    if ch == _VS16:
        return 1
    if _NO_CELL.match(ch) is not None:
        return 0
    category = unicodedata.category(ch)
    if category in ("Mn", "Me"):
        return 0
    if category == "Cn" or unicodedata.east_asian_width(ch) in ("A", "W", "F"):
        return 2
    width = _wcwidth(ch)
    if width < 0 or width > 1:
        return 2
    return 1


def cell_width(text: str) -> int:
    """How many terminal cells ``text`` (already cleaned) may take, erring on the wide side.

    The sum of :func:`char_width`: over-counting only folds a line early; under-counting
    would let the terminal wrap it instead, at column 0, where a forged line could start.
    """
    if text.isascii() and text.isprintable():
        return len(text)
    return sum(char_width(ch) for ch in text)
