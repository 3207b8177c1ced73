"""The conversation: a line-based view that renders only the visible lines of a room.

Theory of operation
-------------------
The widget holds a *window* of a room's history (at most ``page_size * max_pages``
:class:`~backchannel.views.MessageView` values), loaded in pages through a loader
(``client.history`` with ``before=``). Scrolling near the top loads the page before
the window and drops the newest messages once the window is full; scrolling back
down reloads them. Each dropped run of newer messages is remembered only as the id
it was loaded before and its size, so memory stays flat however far one scrolls.

Each message is a *block* of lines (:mod:`.message_blocks` describes, draws and
counts them). Block heights are known for the window; the lines themselves
(:class:`~textual.strip.Strip`) are kept in a small LRU cache, drawn ahead while
idle and rebuilt when needed, so only what is on or near the screen is rendered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from ...views import MemberView, MessageView
from . import message_blocks as blocks
from .message_blocks import Piece

__all__ = ["PAGE_SIZE", "Conversation", "HistoryLoader", "first_page_size"]

#: ``loader(before, limit)``: a page of messages older than ``before`` (None: the newest).
HistoryLoader = Callable[[str | None, int], Awaitable[list[MessageView]]]

#: Messages per history page, unless the widget is given another size.
PAGE_SIZE = 200
#: Longest stretch of layout work between two turns of the event loop.
SLICE_SECONDS = 0.003
#: Screens above and below the view whose lines are drawn ahead while idle.
WARM_SCREENS = 2
_log = logging.getLogger(__name__)


def first_page_size(rows: int, unread: int = 0, page_size: int = PAGE_SIZE) -> int:
    """How many of a room's newest messages to load when it opens in ``rows`` lines.

    Two screens at least (every message is at least a line), and the unread ones with a
    screen above them for context; never more than a page. Older pages load as the view
    nears the top, so this only decides how soon the room shows.
    """
    rows = max(rows, 12)
    return min(page_size, max(2 * rows, unread + rows))


@dataclass(frozen=True, slots=True)
class _Dropped:
    """A run of newer messages dropped from the window: enough to load it again."""

    before: str | None
    count: int
    first_id: str


class Conversation(ScrollView, can_focus=True):
    """A room's messages, newest at the bottom; up/down select, enter opens actions."""

    BINDINGS = [
        Binding("up", "cursor_up", "Previous message", show=False, id="conversation.up"),
        Binding("down", "cursor_down", "Next message", show=False, id="conversation.down"),
        Binding(
            "enter",
            "activate",
            "Message actions",
            tooltip="Reply, react, edit, delete or save the selected message",
            id="conversation.actions",
        ),
        Binding("end", "scroll_to_latest", "Latest", show=False, id="conversation.latest"),
    ]

    COMPONENT_CLASSES = {
        "conversation--time",
        "conversation--name",
        "conversation--me",
        "conversation--verified",
        "conversation--warning",
        "conversation--separator",
        "conversation--new",
        "conversation--quote",
        "conversation--meta",
        "conversation--selected",
    }

    DEFAULT_CSS = """
    Conversation { height: 1fr; }
    Conversation > .conversation--time { color: $text-muted; }
    Conversation > .conversation--name { color: $accent; text-style: bold; }
    Conversation > .conversation--me { color: $primary; text-style: bold; }
    Conversation > .conversation--verified { color: $success; }
    Conversation > .conversation--warning { color: $warning; text-style: bold; }
    Conversation > .conversation--separator { color: $text-muted; }
    Conversation > .conversation--new { color: $error; }
    Conversation > .conversation--quote { color: $text-muted; text-style: italic; }
    Conversation > .conversation--meta { color: $text-muted; text-style: italic; }
    Conversation > .conversation--selected { background: $boost; }
    Conversation:focus > .conversation--selected { background: $primary 30%; }
    """

    class _About(Message):
        """A message of this conversation is concerned (``message``)."""

        def __init__(self, conversation: Conversation, message: MessageView) -> None:
            super().__init__()
            self.conversation = conversation
            self.message = message

        @property
        def control(self) -> Conversation:
            return self.conversation

    class Selected(_About):
        """A message was selected (keyboard cursor or click)."""

    class ActionsRequested(_About):
        """The person asked for the actions of a message (enter, or a click on the selected)."""

    def __init__(
        self,
        *,
        page_size: int = PAGE_SIZE,
        max_pages: int = 4,
        max_cached_lines: int = 600,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.page_size = page_size
        """Messages per history page."""
        self.max_loaded = page_size * max_pages
        """The most messages the window holds."""
        self.max_cached_lines = max_cached_lines
        """The most rendered lines kept (an LRU of message blocks)."""
        self.loader: HistoryLoader | None = None
        self._messages: list[MessageView] = []
        self._index: dict[str, int] = {}
        self._heights: list[int] = []
        self._offsets: list[int] = []
        self._total = 0
        self._width = 0
        self._cache: OrderedDict[str, list[Strip]] = OrderedDict()
        self._cached_lines = 0
        self._has_older = False
        self._dropped: list[_Dropped] = []
        self._loading = False
        self._members: dict[str, MemberView] = {}
        self._new_marker: str | None = None
        self._selected: str | None = None
        self._empty: tuple[str, ...] = ()
        self._pass: tuple[int, int, Style, Style] | None = None
        self._warm_scheduled = False
        self._rewrapping = False
        self._end_after_layout = False
        #: Bumped whenever every height is measured again (a page measured across
        #: event-loop turns is stale if this moved).
        self._generation = 0

    # -- what tests and the screen read ------------------------------------------------------

    @property
    def messages(self) -> list[MessageView]:
        """The loaded window, oldest first."""
        return list(self._messages)

    @property
    def cached_line_count(self) -> int:
        """How many rendered lines are held right now."""
        return self._cached_lines

    @property
    def total_lines(self) -> int:
        """Lines of the loaded window at the current width."""
        return self._total

    @property
    def at_live_end(self) -> bool:
        """Whether the window reaches the newest message."""
        return not self._dropped

    @property
    def selected(self) -> MessageView | None:
        """The message under the cursor."""
        if self._selected is None or self._selected not in self._index:
            return None
        return self._messages[self._index[self._selected]]

    def find(self, message_id: str) -> MessageView | None:
        """A loaded message by id."""
        i = self._index.get(message_id)
        return None if i is None else self._messages[i]

    def line_text(self, line: int) -> str:
        """The plain text of one line of the window (for tests and accessibility)."""
        if not 0 <= line < self._total:
            return ""
        i = bisect_right(self._offsets, line) - 1
        return self._block(i)[line - self._offsets[i]].text

    def visible_text(self) -> list[str]:
        """The plain text of the lines on screen."""
        top = self.scroll_offset.y
        return [self.line_text(top + y) for y in range(self.scrollable_content_region.height)]

    # -- changing the content ------------------------------------------------------------------

    def reset(
        self,
        messages: list[MessageView],
        *,
        has_older: bool,
        new_marker: str | None = None,
        members: dict[str, MemberView] | None = None,
        empty: tuple[str, ...] = (),
    ) -> None:
        """Show a new room: ``messages`` are its newest page, oldest first.

        ``empty`` are lines to show while the room has no messages at all.
        """
        self._empty = empty
        self._messages = list(messages)
        self._has_older = has_older
        self._dropped = []
        self._new_marker = new_marker
        self._selected = None
        if members is not None:
            self._members = dict(members)
        self._relayout()
        self.scroll_end(animate=False)

    def set_members(self, members: dict[str, MemberView]) -> None:
        """Names' verified marks and warnings come from these."""
        self._members = dict(members)
        self._relayout()

    def add(self, message: MessageView) -> None:
        """A new message: appended when the window reaches the newest, else left for later."""
        if message.id in self._index:
            self.replace(message)
            return
        if self._dropped:
            return  # it will be loaded with the newer messages
        follow = self._is_at_bottom()
        self._messages.append(message)
        self._index[message.id] = len(self._messages) - 1
        self._append_heights(len(self._messages) - 1)
        if len(self._messages) > self.max_loaded:
            self._drop_oldest(len(self._messages) - self.max_loaded)
        self._update_virtual_size()
        if follow:
            self.scroll_end(animate=False)

    def replace(self, message: MessageView) -> None:
        """A loaded message changed (edited, deleted, reacted to, file completed)."""
        i = self._index.get(message.id)
        if i is None:
            return
        self._messages[i] = message
        # Only this block and the replies quoting it can change: re-measure those (not
        # all loaded messages), then move the offsets after them.
        changed = [i] + [
            j for j, m in enumerate(self._messages) if m.reply_to == message.id and j != i
        ]
        for j in changed:
            self._evict(self._messages[j].id)
            self._heights[j] = self._measure(j)
        self._rebuild_offsets()
        self._update_virtual_size()

    # -- layout ----------------------------------------------------------------------------------

    def _content_width(self) -> int:
        return max(self.scrollable_content_region.width, 10)

    def _relayout(self) -> None:
        self._generation += 1
        self._index = {m.id: i for i, m in enumerate(self._messages)}
        self._cache.clear()
        self._cached_lines = 0
        if not self.size.width:
            # Not laid out yet (a room shown as the screen mounts): its first resize
            # measures at the real width, and goes to the newest as reset() would have.
            self._width = 0
            self._heights = [0] * len(self._messages)
            self._rebuild_offsets()
            self.set_reactive(Widget.virtual_size, Size(0, 0))
            self._end_after_layout = True
            return
        self._width = self._content_width()
        if (
            not self.show_vertical_scrollbar
            and self.styles.overflow_y == "auto"
            and len(self._messages) > self.scrollable_content_region.height
        ):
            # Every block is at least a line, so these overflow: wrap at the width left
            # beside the scrollbar that is about to appear, not once without it and
            # again with it.
            self._width = max(self._width - self.styles.scrollbar_size_vertical, 10)
        self._heights = [self._measure(i) for i in range(len(self._messages))]
        self._rebuild_offsets()
        self._update_virtual_size()
        self.refresh()

    def _append_heights(self, i: int) -> None:
        self._heights.append(self._measure(i))
        self._offsets.append(self._total)
        self._total += self._heights[-1]

    def _rebuild_offsets(self) -> None:
        self._offsets = []
        total = 0
        for h in self._heights:
            self._offsets.append(total)
            total += h
        self._total = total

    def _update_virtual_size(self) -> None:
        size = Size(self._width, self._total)
        if size != self.virtual_size:
            # Not the reactive's setter: that lays out the whole screen (about 20 ms
            # with the main screen's widgets) when only this view's scrollable height
            # changed. Its scrollbars are updated as Textual does for a resize without
            # layout; a scrollbar that appears or goes still asks for a layout itself.
            self.set_reactive(Widget.virtual_size, size)
            self._scroll_update(size)
            if self._content_width() != self._width and not self._rewrapping:
                # A scrollbar came or went: wrap again at the new width (once; should
                # that flip the scrollbar back, the lines are cropped, not re-wrapped
                # forever).
                self._rewrapping = True
                try:
                    self._relayout()
                finally:
                    self._rewrapping = False
                return
        self.refresh()

    def _evict(self, message_id: str) -> None:
        strips = self._cache.pop(message_id, None)
        if strips is not None:
            self._cached_lines -= len(strips)

    def _size_updated(
        self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True
    ) -> bool:
        resized = super()._size_updated(size, virtual_size, container_size, layout)
        if self._end_after_layout and size.width:
            # A room given before the first layout is measured here, inside that layout,
            # so the frame drawn right after it shows the messages; the Resize event
            # would come a frame later (about 50 ms of a first paint).
            self._end_after_layout = False
            self._relayout()
            self.scroll_end(animate=False, immediate=True)
        return resized

    def on_resize(self, event: events.Resize) -> None:
        if self._content_width() != self._width:
            self._relayout()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        if self._messages:
            self._relayout()  # a new theme: colours are baked into the cached lines

    # -- rendering -------------------------------------------------------------------------------

    def _begin_pass(self) -> tuple[int, int, Style, Style]:
        return (
            self.scrollable_content_region.width,
            self.scroll_offset.y,
            self.rich_style,
            self.get_component_rich_style("conversation--selected"),
        )

    def render_lines(self, crop: Region) -> list[Strip]:
        # Styles and geometry are the same for every line of one pass; looking them up
        # per line (``rich_style`` walks all ancestors) cost more than the lines did.
        self._pass = self._begin_pass()
        try:
            return super().render_lines(crop)
        finally:
            self._pass = None
            self._warm_later()

    def render_line(self, y: int) -> Strip:
        width, top, base, selected = self._pass or self._begin_pass()
        line = top + y
        if not 0 <= line < self._total:
            if not self._total and not self._has_older and 0 < line <= len(self._empty):
                hint = Strip([Segment(self._empty[line - 1], base + self._style("meta"))])
                return hint.crop_extend(0, width, base)
            return Strip.blank(width, base)
        i = bisect_right(self._offsets, line) - 1
        strip = self._block(i)[line - self._offsets[i]]
        if self._messages[i].id == self._selected:
            strip = strip.apply_style(selected)
        line = strip.crop_extend(0, width, base)
        # A fresh Strip per frame: Textual hangs what it derives from a line (filters,
        # cuts) on the Strip it is given. On a cached Strip that chain lives as long as
        # the cache entry and reaches the oldest generation, which full collections
        # walk; on a fresh one it dies young. Measured: about 40% less time in full
        # collections while scrolling.
        return Strip(list(line), line.cell_length)

    def _block(self, i: int) -> list[Strip]:
        message = self._messages[i]
        strips = self._cache.get(message.id)
        if strips is not None:
            self._cache.move_to_end(message.id)
            return strips
        strips = self._render_block(i)
        if i < len(self._heights) and len(strips) != self._heights[i]:
            # Never expected (a test holds _measure to the rendering); keep the layout
            # the offsets describe rather than shift every line after this block.
            _log.debug(
                "a message block measured %d lines, rendered %d", self._heights[i], len(strips)
            )
            strips = (strips + [Strip.blank(0)] * self._heights[i])[: self._heights[i]]
        self._cache[message.id] = strips
        self._cached_lines += len(strips)
        while self._cached_lines > self.max_cached_lines and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_lines -= len(old)
        return strips

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"conversation--{name}", partial=True)

    def _pieces(self, m: MessageView, previous: MessageView | None, width: int) -> list[Piece]:
        return blocks.pieces(
            m,
            previous,
            width,
            style=self._style,
            member=self._members.get(m.sender),
            quoted=self.find(m.reply_to) if m.reply_to is not None else None,
            new_marker=self._new_marker,
        )

    def _render_block(self, i: int) -> list[Strip]:
        width = self._width or self._content_width()
        previous = self._messages[i - 1] if i else None
        return blocks.draw(
            self._pieces(self._messages[i], previous, width), width, self.app.console
        )

    def _measure(self, i: int) -> int:
        """How many lines :meth:`_render_block` draws for message ``i``, without drawing.

        Page loads measure a whole page at once; counting wrap points is several times
        cheaper than making the lines, which are drawn only when they come near the
        screen (:meth:`_warm`).
        """
        return self._measure_message(self._messages[i], self._messages[i - 1] if i else None)

    def _measure_message(self, m: MessageView, previous: MessageView | None) -> int:
        width = self._width or self._content_width()
        return blocks.count(self._pieces(m, previous, width), width)

    async def _measure_page(self, page: list[MessageView]) -> list[int] | None:
        """Heights of a page about to go before the window, yielding to the event loop
        every few milliseconds so a page load never holds up a frame.

        Returns:
            None if the layout changed meanwhile (new width, members, room): measure again.
        """
        generation = self._generation
        heights: list[int] = []
        deadline = time.perf_counter() + SLICE_SECONDS
        for k, m in enumerate(page):
            heights.append(self._measure_message(m, page[k - 1] if k else None))
            if time.perf_counter() > deadline:
                await asyncio.sleep(0)
                if self._generation != generation:
                    return None
                deadline = time.perf_counter() + SLICE_SECONDS
        return heights

    def _warm_later(self) -> None:
        if not self._warm_scheduled and self._messages:
            self._warm_scheduled = True
            self.call_after_refresh(self._warm)

    def _warm(self) -> None:
        """Draw the blocks just off screen while the app is idle, a few at a time.

        A page up then finds its lines drawn already, so a frame only composes them.
        """
        self._warm_scheduled = False
        if not self._messages or not self._total:
            return
        height = max(self.scrollable_content_region.height, 1)
        top = self.scroll_offset.y
        first = bisect_right(self._offsets, max(top - WARM_SCREENS * height, 0)) - 1
        last = bisect_right(self._offsets, min(top + (WARM_SCREENS + 1) * height, self._total - 1))
        visible = bisect_right(self._offsets, top) - 1
        # Nearest the screen first: the direction of scrolling is not known.
        order = sorted(range(max(first, 0), last), key=lambda i: abs(i - visible))
        deadline = time.perf_counter() + SLICE_SECONDS
        for i in order:
            if self._messages[i].id not in self._cache:
                self._block(i)
                if time.perf_counter() > deadline:
                    self._warm_later()
                    return

    # -- selection -------------------------------------------------------------------------------

    def select(self, message_id: str) -> None:
        """Put the cursor on a loaded message and bring it into view."""
        i = self._index.get(message_id)
        if i is None:
            return
        self._selected = message_id
        region = Region(0, self._offsets[i], self._width, self._heights[i])
        self.scroll_to_region(region, animate=False, immediate=True)
        self.refresh()
        self.post_message(self.Selected(self, self._messages[i]))

    def clear_selection(self) -> None:
        self._selected = None
        self.refresh()

    def action_cursor_up(self) -> None:
        if not self._messages:
            return
        i = self._index.get(self._selected or "", len(self._messages))
        self.select(self._messages[max(i - 1, 0)].id)

    def action_cursor_down(self) -> None:
        if not self._messages or self._selected is None:
            return
        i = self._index.get(self._selected, len(self._messages) - 1)
        if i >= len(self._messages) - 1:
            self.clear_selection()
            self.scroll_end(animate=False)
            return
        self.select(self._messages[i + 1].id)

    def action_activate(self) -> None:
        message = self.selected
        if message is not None:
            self.post_message(self.ActionsRequested(self, message))

    def action_scroll_to_latest(self) -> None:
        self.clear_selection()
        self.scroll_end(animate=False)

    def on_click(self, event: events.Click) -> None:
        line = self.scroll_offset.y + event.y
        if not 0 <= line < self._total:
            return
        message = self._messages[bisect_right(self._offsets, line) - 1]
        if message.id == self._selected:
            self.post_message(self.ActionsRequested(self, message))
        else:
            self.select(message.id)

    # -- paging ------------------------------------------------------------------------------------

    def _is_at_bottom(self) -> bool:
        return self.scroll_offset.y >= self.max_scroll_y - 1

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self.maybe_load()

    def maybe_load(self) -> None:
        """Load the page before or after the window when the view nears its edge."""
        if self.loader is None or self._loading or not self._messages:
            return
        height = max(self.scrollable_content_region.height, 1)
        if self._has_older and self.scroll_offset.y < height:
            self._loading = True
            self.run_worker(
                self._load_older(), group="conversation-page", exclusive=True, exit_on_error=False
            )
        elif self._dropped and self.max_scroll_y - self.scroll_offset.y < height:
            self._loading = True
            self.run_worker(
                self._load_newer(), group="conversation-page", exclusive=True, exit_on_error=False
            )

    async def _load_older(self) -> None:
        try:
            assert self.loader is not None
            page = await self.loader(self._messages[0].id, self.page_size)
            if len(page) < self.page_size:
                self._has_older = False
            page = [m for m in page if m.id not in self._index]
            if page:
                first = self._messages[0].id if self._messages else None
                heights = await self._measure_page(page)
                if self._messages and self._messages[0].id == first:  # still that window
                    self._prepend(page, heights)
        finally:
            self._loading = False
        self.call_after_refresh(self.maybe_load)

    def _prepend(self, page: list[MessageView], heights: list[int] | None = None) -> None:
        old_total = self._total
        old_first = self._messages[0].id
        self._messages[:0] = page
        self._index = {m.id: i for i, m in enumerate(self._messages)}
        self._evict(old_first)  # its day separator may go
        self._width = self._width or self._content_width()
        self._heights[:0] = heights if heights is not None else [0] * len(page)
        # Measured here: the whole page if it was not measured yet, else only the old
        # first message, whose day separator may go.
        for i in range(0 if heights is None else len(page), len(page) + 1):
            self._heights[i] = self._measure(i)
        self._rebuild_offsets()
        added = self._total - old_total
        excess = len(self._messages) - self.max_loaded
        if excess > 0:
            before = self._dropped[-1].first_id if self._dropped else None
            cut = len(self._messages) - excess
            dropped = self._messages[cut:]
            self._dropped.append(_Dropped(before, len(dropped), dropped[0].id))
            for m in dropped:
                self._evict(m.id)
            del self._messages[cut:]
            del self._heights[cut:]
            self._index = {m.id: i for i, m in enumerate(self._messages)}
            self._rebuild_offsets()
        self._update_virtual_size()
        self.scroll_to(y=self.scroll_offset.y + added, animate=False, immediate=True)

    async def _load_newer(self) -> None:
        try:
            assert self.loader is not None
            chunk = self._dropped[-1]
            last = self._messages[-1].id
            limit = chunk.count + 1
            while True:
                page = await self.loader(chunk.before, limit)
                ids = [m.id for m in page]
                if last in ids or len(page) < limit:
                    break
                limit *= 2  # newer messages arrived meanwhile: reach back to the window
            if last in ids:
                page = page[ids.index(last) + 1 :]
            self._dropped.pop()
            page = [m for m in page if m.id not in self._index]
            for m in page:
                self._messages.append(m)
                self._index[m.id] = len(self._messages) - 1
                self._append_heights(len(self._messages) - 1)
            excess = len(self._messages) - self.max_loaded
            if excess > 0:
                self._drop_oldest(excess)
            self._update_virtual_size()
        finally:
            self._loading = False
        self.call_after_refresh(self.maybe_load)

    def _drop_oldest(self, count: int) -> None:
        removed = sum(self._heights[:count])
        for m in self._messages[:count]:
            self._evict(m.id)
        del self._messages[:count]
        del self._heights[:count]
        self._has_older = True
        self._index = {m.id: i for i, m in enumerate(self._messages)}
        grown = 0
        if self._messages:  # the new first message now opens with a day separator
            self._evict(self._messages[0].id)
            height = self._measure(0)
            grown = height - self._heights[0]
            self._heights[0] = height
        self._rebuild_offsets()
        self._update_virtual_size()
        y = max(self.scroll_offset.y - removed + grown, 0)
        self.scroll_to(y=y, animate=False, immediate=True)

    async def reveal(self, message_id: str, *, max_pages: int = 200) -> bool:
        """Load older pages until ``message_id`` is in the window, then select it.

        Returns:
            Whether the message was found.
        """
        if self.loader is None:
            return False
        if message_id not in self._index and self._dropped:
            page = await self.loader(None, self.page_size)
            self.reset(page, has_older=len(page) >= self.page_size, members=self._members)
        for _ in range(max_pages):
            if message_id in self._index or not self._has_older or not self._messages:
                break
            self._loading = True
            await self._load_older()
        if message_id in self._index:
            self.select(message_id)
            return True
        return False
