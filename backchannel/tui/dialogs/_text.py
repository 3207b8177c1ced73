"""Peer-supplied strings made safe to show: plain text, no control or bidi-override characters."""

from __future__ import annotations

import re
import time

from rich.text import Text

__all__ = ["clean", "excerpt", "plain", "safety_rows", "when"]

#: C0 controls, DEL, C1 controls, bidi embeddings/overrides (U+202A-202E) and isolates
#: (U+2066-2069), plus the line/paragraph separators that would break a one-line label.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
#: The same, but letting newlines through for text shown on several lines.
_UNSAFE_MULTILINE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)
_REPLACEMENT = "\ufffd"


def clean(value: str, *, multiline: bool = False) -> str:
    """``value`` with every control character replaced by U+FFFD.

    Args:
        value: a string a peer chose (a name, a title, message text, a file name).
        multiline: keep newlines (for message text shown on several lines).
    """
    pattern = _UNSAFE_MULTILINE if multiline else _UNSAFE
    return pattern.sub(_REPLACEMENT, value)


def plain(value: str, *, multiline: bool = False, style: str = "") -> Text:
    """A Rich ``Text`` of ``value`` that is never parsed as markup, with controls replaced.

    Args:
        value: a string a peer chose.
        multiline: keep newlines.
        style: a Rich style for the whole text.
    """
    return Text(clean(value, multiline=multiline), style=style, end="")


def excerpt(value: str, limit: int = 60) -> str:
    """One line of at most ``limit`` characters from ``value`` (whitespace collapsed)."""
    line = " ".join(value.split())
    line = clean(line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def when(timestamp: float) -> str:
    """A local date and time, to the minute."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def safety_rows(number: str) -> str:
    """A safety number (12 groups of 5 digits) as three rows of four groups."""
    groups = number.split()
    return "\n".join(" ".join(groups[i : i + 4]) for i in range(0, len(groups), 4))
