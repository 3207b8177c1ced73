"""Open a new room: title, who gets in, and how long messages are kept."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static

from ...client import Client
from ...views import RoomSummary
from ._base import Dialog
from ._fields import compose_rule_fields, read_retention, show_retention

__all__ = ["CreateRoomDialog"]


class CreateRoomDialog(Dialog[RoomSummary | None]):
    """Create a room with this member as facilitator; dismisses with its summary, or None.

    Args:
        client: the started client.
    """

    DEFAULT_CSS = """
    CreateRoomDialog #days {
        margin-top: 1;
    }
    """

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(
                "The title is seen only by members, never by the relay.",
                classes="hint",
                markup=False,
            )
            yield Label("Title", classes="field-label")
            yield Input(placeholder="e.g. Water talks", max_length=100, id="title")
            yield from compose_rule_fields()
            yield from self.feedback()
            with Horizontal(classes="buttons"):
                yield Button("Create room", id="create", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "New room"
        self.query_one("#title", Input).focus()

    @on(Select.Changed, "#retention")
    def _retention_changed(self, event: Select.Changed) -> None:
        show_retention(event.value, self.query_one("#days", Input))

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#create")
    @on(Input.Submitted)
    def _submit(self) -> None:
        if self.busy:
            return
        title = self.query_one("#title", Input).value.strip()
        if not title:
            self.show_error("Give the room a title.")
            self.query_one("#title", Input).focus()
            return
        approval = self.query_one("#approval", Select).value
        try:
            retention = read_retention(
                self.query_one("#retention", Select).value, self.query_one("#days", Input).value
            )
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.create(title, str(approval), retention)

    @work(exclusive=True, group="create-room", exit_on_error=False)
    async def create(self, title: str, approval: str, retention: int) -> None:
        """Ask the client to create the room, then close with its summary."""
        room = await self.client.create_room(title, approval=approval, retention_seconds=retention)
        self.dismiss(room)
