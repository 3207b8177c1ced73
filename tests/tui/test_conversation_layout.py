"""The conversation measures message blocks without drawing them; the two must agree.

Page loads count each block's lines from its wrap points (``Conversation._measure``)
and draw the lines only when they come on screen (``_render_block``). If the count
were ever wrong, every line after that block would sit at the wrong offset, so the
count is held to the drawing for awkward text at several widths.
"""

from __future__ import annotations

import random

from textual.app import App, ComposeResult

from backchannel.tui.widgets.conversation import Conversation
from backchannel.views import FileInfo, MemberView, MessageView, ReactionCount

AWKWARD = [
    "",
    " ",
    "short",
    "trailing spaces     ",
    "   leading spaces",
    "a" * 300,  # one word longer than any line: folded
    "word " * 80,
    "line one\nline two\n\n\nafter blank lines\n",
    "中文字符宽度为二" * 20,  # double-width characters
    "emoji 👍🏽 family 👨‍👩‍👧 flags 🇺🇳🇺🇳 " * 8,
    "combining e\u0301\u0301\u0301 marks " * 12,
    "tabs\tand\tcontrols\x1b[2J\x07 \u202eevil\u202c " * 6,
    "zero\u200bwidth\u200bspaces\u200b" * 30,
    "mixed العربية and English and עברית text " * 5,
    "https://example.org/" + "very-long-path-segment/" * 12,
]


def _messages(seed: int, count: int) -> list[MessageView]:
    rng = random.Random(seed)
    out: list[MessageView] = []
    t = 1_700_000_000.0
    for i in range(count):
        t += rng.choice([5, 60, 3600, 86_400])  # some cross a day: separators
        text = (
            rng.choice(AWKWARD)
            if rng.random() < 0.6
            else " ".join(
                rng.choice(["a", "bb", "water", "allocation", "中文", "👍", "x" * 30])
                for _ in range(rng.randint(0, 60))
            )
        )
        roll = rng.random()
        out.append(
            MessageView(
                id=f"m{i}",
                room="r",
                sender=rng.choice(["s1", "s2", "s3"]),
                sender_name=rng.choice(["Ada", "Ben Haddad-" + "x" * 90, "名字", "\x1b]0;t\x07"]),
                text=text,
                time=t,
                kind="text" if roll < 0.9 else "profile",
                reply_to=f"m{rng.randrange(i)}" if i and rng.random() < 0.2 else None,
                edited=rng.random() < 0.1,
                deleted=rng.random() < 0.05,
                outgoing=rng.random() < 0.3,
                delivered=rng.random() < 0.8,
                file=FileInfo(rng.choice(AWKWARD) or "f", rng.randint(0, 10**9), True)
                if rng.random() < 0.05
                else None,
                reactions=tuple(
                    ReactionCount(e, rng.randint(1, 99), rng.random() < 0.5)
                    for e in rng.sample(["👍", "🎉", "❤️", "x" * 40, "中"], rng.randint(0, 3))
                ),
            )
        )
    return out


class _Harness(App[None]):
    def compose(self) -> ComposeResult:
        yield Conversation(id="c")


async def test_measured_heights_match_the_drawn_lines() -> None:
    members = {
        "s1": MemberView("s1", "Ada", "facilitator", True, False, False),
        "s2": MemberView("s2", "Ben", "participant", False, True, False),
    }
    for size in ((24, 10), (47, 20), (80, 24), (131, 40)):
        app = _Harness()
        async with app.run_test(size=size) as pilot:
            conv = app.query_one(Conversation)
            messages = _messages(seed=size[0], count=160)
            conv.reset(messages, has_older=False, new_marker="m40", members=members)
            await pilot.pause()
            checked = 0
            for i in range(len(messages)):
                drawn = len(conv._render_block(i))
                previous = messages[i - 1] if i else None
                assert conv._measure_message(messages[i], previous) == drawn
                assert conv._measure(i) == drawn, (size, messages[i])
                checked += drawn
            assert conv.total_lines == checked
            # The lines were wrapped for the width left beside the scrollbar, which
            # appeared once the messages were in (nothing is hidden under it).
            assert conv.show_vertical_scrollbar
            assert conv._width == conv.scrollable_content_region.width
