"""Leave a room, after saying what leaving means."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from ...client import Client
from ._base import Dialog
from ._text import plain

__all__ = ["LeaveDialog"]


class LeaveDialog(Dialog[bool]):
    """Confirm, then leave ``room_id``; dismisses with True once left, False if not.

    Args:
        client: the started client.
        room_id: the room's id.
    """

    DEFAULT_CSS = """
    LeaveDialog > #dialog {
        width: 64;
    }
    LeaveDialog #question {
        text-style: bold;
        margin-top: 1;
    }
    """

    cancel_result = False

    def __init__(self, client: Client, room_id: str) -> None:
        super().__init__()
        self.client = client
        self.room_id = room_id

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("Leave this room?", id="question", markup=False)
            yield Static(
                "You will stop receiving its messages. To come back you need a new invite "
                "and a facilitator's approval.",
                classes="hint",
                markup=False,
            )
            yield from self.feedback()
            with Horizontal(classes="buttons"):
                yield Button("Leave", id="leave", variant="error")
                yield Button("Stay", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "Leave room"
        self.query_one("#cancel", Button).focus()
        self.load_title()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#leave")
    def _leave(self) -> None:
        if not self.busy:
            self.leave()

    @work(exclusive=True, group="leave-title", exit_on_error=False)
    async def load_title(self) -> None:
        """Name the room in the question."""
        room = await self.client.room(self.room_id)
        self.query_one("#question", Static).update(
            Text.assemble("Leave “", plain(room.title), "”?")
        )

    @work(exclusive=True, group="leave", exit_on_error=False)
    async def leave(self) -> None:
        """Leave the room, then close with True."""
        await self.client.leave(self.room_id)
        self.dismiss(True)
