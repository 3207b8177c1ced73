"""Search a room's messages and jump to one."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from ...client import Client
from ...views import MessageView
from ._base import Dialog
from ._text import excerpt, plain, when

__all__ = ["SearchDialog"]

#: Seconds of quiet typing before a search runs.
_DEBOUNCE = 0.3


def _option(message: MessageView) -> Option:
    text = message.text
    if message.kind == "file" and message.file is not None:
        text = f"File: {message.file.name}"
    prompt = Text.assemble(
        plain(message.sender_name, style="bold"),
        (f"  {when(message.time)}", "dim"),
        "\n  ",
        plain(excerpt(text, 64)),
    )
    return Option(prompt, id=message.id)


class SearchDialog(Dialog[str | None]):
    """Find messages of ``room_id``; dismisses with the chosen message's id, or None.

    Args:
        client: the started client.
        room_id: the room's id.
    """

    DEFAULT_CSS = """
    SearchDialog > #dialog {
        height: 22;
    }
    SearchDialog #results {
        height: 1fr;
        margin-top: 1;
    }
    SearchDialog #count {
        color: $text-muted;
    }
    """

    def __init__(self, client: Client, room_id: str) -> None:
        super().__init__()
        self.client = client
        self.room_id = room_id
        #: The messages last found.
        self.results: list[MessageView] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Input(placeholder="Words to find (searched on this device only)", id="query")
            yield OptionList(id="results")
            yield Static("", id="count", markup=False)
            yield from self.feedback()
            with Horizontal(classes="buttons"):
                yield Button("Close", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "Search messages"
        self.query_one("#query", Input).focus()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Input.Changed, "#query")
    def _typed(self, event: Input.Changed) -> None:
        self.search(event.value, delay=_DEBOUNCE)

    @on(Input.Submitted, "#query")
    def _submitted(self, event: Input.Submitted) -> None:
        self.search(event.value, delay=0.0)

    @on(OptionList.OptionSelected, "#results")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    @work(exclusive=True, group="search", exit_on_error=False)
    async def search(self, query: str, *, delay: float) -> None:
        """Run the search (after ``delay`` seconds; a newer search cancels this one)."""
        if delay:
            await asyncio.sleep(delay)
        query = query.strip()
        results = await self.client.search(self.room_id, query) if query else []
        self.results = results
        options = self.query_one("#results", OptionList)
        options.clear_options()
        options.add_options([_option(m) for m in results])
        count = self.query_one("#count", Static)
        if not query:
            count.update("")
        elif results:
            count.update(f"{len(results)} found. Choose one to jump to it.")
            options.highlighted = 0
        else:
            count.update("No messages contain those words.")
