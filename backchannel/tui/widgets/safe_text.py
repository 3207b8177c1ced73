"""Make peer-supplied text safe to draw: no control, escape or bidi-override characters.

Everything a peer chooses (message text, display names, room titles, file names) goes
through :func:`clean` (one line) or :func:`clean_lines` (message bodies) before it
reaches a :class:`rich.text.Text`, and is never parsed as markup. A terminal would act
on ESC (0x1b) sequences, other C0/C1 controls would move the cursor or ring the bell,
and bidi overrides would make text read differently from what it is; each is replaced
by a visible stand-in, so the person still sees that something odd was sent.
"""

from __future__ import annotations

from rich.text import Text

__all__ = ["clean", "clean_lines", "plain"]

#: Unicode bidi embedding, override and isolate controls, and the invisible marks.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Characters that break lines in some renderers besides "\n".
_LINE_BREAKS = frozenset("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_REPLACEMENT = "\ufffd"


def _char(ch: str, *, keep_newline: bool) -> str:
    code = ord(ch)
    if ch == "\n":
        return "\n" if keep_newline else " "
    if ch == "\t":
        return "    "
    if ch in _LINE_BREAKS:
        return "\n" if keep_newline and ch != "\r" else " " if ch != "\r" else ""
    if code < 0x20:
        return chr(0x2400 + code)  # the Unicode "control picture", e.g. ␛ for ESC
    if code == 0x7F:
        return "\u2421"  # ␡
    if 0x80 <= code <= 0x9F or ch in _BIDI:
        return _REPLACEMENT
    if 0xD800 <= code <= 0xDFFF:  # lone surrogates cannot be encoded for the terminal
        return _REPLACEMENT
    return ch


def _needs_work(text: str) -> bool:
    return any(
        ord(ch) < 0x20
        or 0x7F <= ord(ch) <= 0x9F
        or ch in _BIDI
        or ch in _LINE_BREAKS
        or 0xD800 <= ord(ch) <= 0xDFFF
        for ch in text
    )


def clean(text: str) -> str:
    """One line of peer text with every control character made harmless and visible.

    Args:
        text: anything a peer sent (a name, a title, a file name).

    Returns:
        The text on one line: newlines become spaces, tabs four spaces, ESC and
        other C0 controls their control pictures (``␛``), C1 controls and bidi
        overrides U+FFFD.
    """
    if not _needs_work(text):
        return text
    return "".join(_char(ch, keep_newline=False) for ch in text)


def clean_lines(text: str) -> list[str]:
    """A message body as safe lines (split at newlines, each cleaned like :func:`clean`)."""
    if _needs_work(text):
        text = "".join(_char(ch, keep_newline=True) for ch in text)
    return text.split("\n")


def plain(text: str, style: str = "") -> Text:
    """A :class:`~rich.text.Text` of one cleaned line; markup in ``text`` stays literal."""
    return Text(clean(text), style=style, end="")
