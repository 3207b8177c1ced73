"""A room's title and rules: facilitators change them, others read them."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static

from ...client import Client
from ...views import RoomSummary
from ._base import Dialog
from ._fields import compose_rule_fields, read_retention, show_retention
from ._text import clean

__all__ = ["RoomSettingsDialog"]


class RoomSettingsDialog(Dialog[None]):
    """Show and (for facilitators) change ``room_id``'s title, approval and retention.

    Args:
        client: the started client.
        room_id: the room's id.
    """

    DEFAULT_CSS = """
    RoomSettingsDialog #fields {
        height: auto;
    }
    RoomSettingsDialog #days {
        margin-top: 1;
    }
    """

    def __init__(self, client: Client, room_id: str) -> None:
        super().__init__()
        self.client = client
        self.room_id = room_id
        #: The room as last read (None until loaded).
        self.room: RoomSummary | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static("Loading…", id="note", classes="hint", markup=False)
            yield Vertical(id="fields")
            yield from self.feedback()
            with Horizontal(classes="buttons"):
                yield Button("Save", id="save", variant="primary", disabled=True)
                yield Button("Close", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "Room settings"
        self.query_one("#cancel", Button).focus()
        self.load()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Select.Changed, "#retention")
    def _retention_changed(self, event: Select.Changed) -> None:
        show_retention(event.value, self.query_one("#days", Input))

    @on(Button.Pressed, "#save")
    @on(Input.Submitted)
    def _submit(self) -> None:
        room = self.room
        if self.busy or room is None or room.role != "facilitator":
            return
        title = self.query_one("#title", Input).value.strip()
        if not title:
            self.show_error("A room needs a title.")
            return
        approval = str(self.query_one("#approval", Select).value)
        try:
            retention = read_retention(
                self.query_one("#retention", Select).value, self.query_one("#days", Input).value
            )
        except ValueError as exc:
            self.show_error(str(exc))
            return
        new_title = title if title != clean(room.title) else None
        new_approval = approval if approval != room.approval else None
        new_retention = retention if retention != room.retention_seconds else None
        if new_title is None and new_approval is None and new_retention is None:
            self.dismiss(None)
            return
        self.save(title=new_title, approval=new_approval, retention_seconds=new_retention)

    @work(exclusive=True, group="settings", exit_on_error=False)
    async def load(self) -> None:
        """Read the room and fill the fields."""
        room = await self.client.room(self.room_id)
        self.room = room
        fields = self.query_one("#fields", Vertical)
        await fields.remove_children()
        await fields.mount(Label("Title", classes="field-label"))
        await fields.mount(Input(clean(room.title), max_length=100, id="title"))
        await fields.mount_all(list(compose_rule_fields(room.approval, room.retention_seconds)))
        editable = room.role == "facilitator"
        note = self.query_one("#note", Static)
        if editable:
            note.update("Every member's app checks a change against the room's rules.")
        else:
            note.update("Only a facilitator can change these; you can read them here.")
        for widget in fields.query("Input, Select"):
            widget.disabled = not editable
        self.query_one("#save", Button).disabled = not editable
        if editable:
            self.query_one("#title", Input).focus()

    @work(exclusive=True, group="settings", exit_on_error=False)
    async def save(
        self, *, title: str | None, approval: str | None, retention_seconds: int | None
    ) -> None:
        """Send the changes, then close."""
        await self.client.update_room(
            self.room_id, title=title, approval=approval, retention_seconds=retention_seconds
        )
        self.notify("Room settings saved.")
        self.dismiss(None)
