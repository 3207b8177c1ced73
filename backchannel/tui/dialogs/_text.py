"""Peer-supplied strings as the dialogs show them: plain text, by the rules of ``safe_text``."""

from __future__ import annotations

import time

from rich.text import Text

from ...safe_text import clean

__all__ = ["clean", "excerpt", "plain", "safety_rows", "when"]


def plain(value: str, *, multiline: bool = False, style: str = "") -> Text:
    """A Rich ``Text`` of ``value`` cleaned by :func:`~backchannel.safe_text.clean`, never markup.

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
