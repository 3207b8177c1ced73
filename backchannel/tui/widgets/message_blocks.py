"""A message as a block of lines: the one description both drawing and measuring use.

A block is a day separator (when the day changes), a "new messages" line, the
header (time, sender, verified mark or warning, "sending…"), the reply quote, the
body (text, file or "deleted"), the reactions, and a blank line. :func:`pieces`
describes it as texts with indents; :func:`draw` makes the lines, :func:`count`
says how many there are without making them (page loads measure 200 blocks at
once; drawing waits until a block comes near the screen). Because both start from
the same pieces, they cannot disagree; ``tests/tui/test_conversation_layout.py``
holds them to it. All peer text passes through :mod:`backchannel.safe_text` and is never
parsed as markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich._wrap import divide_line  # what Text.wrap itself uses to find line breaks
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip

from ...safe_text import clean, clean_lines
from ...views import MemberView, MessageView, human_size

__all__ = ["INDENT", "Piece", "count", "draw", "pieces"]

#: Columns the body, quote and reactions are indented under the header.
INDENT = 2
#: Narrowest wrap width, so a very narrow view still makes progress.
MIN_WIDTH = 4

#: A text to wrap and the columns it is indented by.
Piece = tuple[Text, int]


def _day(t: float) -> tuple[int, int, int]:
    return time.localtime(t)[:3]


def pieces(
    m: MessageView,
    previous: MessageView | None,
    width: int,
    *,
    style: Callable[[str], Style],
    member: MemberView | None,
    quoted: MessageView | None,
    new_marker: str | None,
) -> list[Piece]:
    """Message ``m`` (shown after ``previous``) as texts to wrap at ``width``.

    Args:
        style: the style of a component by short name (``"time"``, ``"meta"``, …).
        member: the sender as a member, for the verified mark or key warning.
        quoted: the message ``m`` replies to, if loaded.
        new_marker: the id of the first unread message.
    """
    out: list[Piece] = []

    def centred(label: str, line_style: Style) -> None:
        text = f" {label} "
        side = max((width - len(text)) // 2, 1)
        # Styles go on spans: Text.render drops a Text's own base style.
        line = Text(end="", no_wrap=True)
        line.append("─" * side + text + "─" * side, line_style)
        out.append((line, 0))

    if previous is None or _day(previous.time) != _day(m.time):
        centred(time.strftime("%A %d %B %Y", time.localtime(m.time)), style("separator"))
    if m.id == new_marker:
        centred("new messages", style("new"))

    header = Text(end="")
    header.append(time.strftime("%H:%M", time.localtime(m.time)), style("time"))
    header.append("  ")
    header.append(clean(m.sender_name), style("me" if m.outgoing else "name"))
    if member is not None and member.key_changed:
        header.append(" ⚠ key changed: compare safety numbers", style("warning"))
    elif member is not None and member.verified and not member.me:
        header.append(" ✓", style("verified"))
    if m.outgoing and m.refused:
        header.append("  not delivered: the relay refused it", style("warning"))
    elif m.outgoing and not m.delivered:
        header.append("  sending…", style("meta"))
    out.append((header, 0))

    if m.reply_to is not None:
        if quoted is None:
            quote = "↳ in reply to an earlier message"
        elif quoted.deleted:
            quote = f"↳ {clean(quoted.sender_name)}: (deleted)"
        else:
            first = clean_lines(quoted.text or (quoted.file.name if quoted.file else ""))[0]
            quote = f"↳ {clean(quoted.sender_name)}: {first}"
        text = Text(end="", no_wrap=True, overflow="ellipsis")
        text.append(quote, style("quote"))
        text.truncate(width - INDENT, overflow="ellipsis")
        out.append((text, INDENT))

    body = Text(end="")
    if m.deleted:
        body.append("(message deleted)", style("meta"))
    elif m.file is not None:
        state = "complete" if m.file.complete else "still arriving"
        body.append(f"📎 {clean(m.file.name)}  ")
        body.append(f"({human_size(m.file.size)}, {state})", style("meta"))
    else:
        if m.kind != "text":
            body.append("* ", style("meta"))
        body.append("\n".join(clean_lines(m.text)))
        if m.edited:
            body.append(" (edited)", style("meta"))
    out.append((body, INDENT))

    if m.reactions and not m.deleted:
        line = Text(end="")
        for r in m.reactions:
            line.append(f"{clean(r.emoji)} {r.count}", style("me" if r.mine else "meta"))
            line.append("  ")
        out.append((line, INDENT))
    return out


def draw(block: list[Piece], width: int, console: Console) -> list[Strip]:
    """The lines of a block, wrapped at ``width``, with the blank line that ends it."""
    out: list[Strip] = []
    for text, indent in block:
        pad = [Segment(" " * indent)] if indent else []
        lines = text.wrap(console, max(width - indent, MIN_WIDTH))
        out.extend(Strip([*pad, *line.render(console, end="")]) for line in lines)
    out.append(Strip.blank(0))  # the gap between messages
    return out


def _line_count(text: Text, width: int) -> int:
    """How many lines ``text.wrap(console, width)`` makes (folding overlong words)."""
    plain = text.plain
    if text.no_wrap:
        return plain.count("\n") + 1
    return sum(len(divide_line(line, width, fold=True)) + 1 for line in plain.split("\n"))


def count(block: list[Piece], width: int) -> int:
    """How many lines :func:`draw` makes of ``block``, without making them."""
    return 1 + sum(_line_count(text, max(width - indent, MIN_WIDTH)) for text, indent in block)
