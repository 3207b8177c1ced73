"""Pick a file and send it to a room."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DirectoryTree, Input, Label, Static

from ...client import Client
from ...views import MessageView
from ._base import Dialog

__all__ = ["SendFileDialog"]


class SendFileDialog(Dialog[MessageView | None]):
    """Choose a file (tree or typed path) and send it; dismisses with the message, or None.

    Args:
        client: the started client.
        room_id: the room's id.
        start_dir: where the tree starts (the home directory by default).
    """

    DEFAULT_CSS = """
    SendFileDialog > #dialog {
        height: 22;
    }
    SendFileDialog #tree {
        height: 1fr;
        min-height: 4;
        border: round $primary 50%;
    }
    """

    def __init__(self, client: Client, room_id: str, *, start_dir: Path | None = None) -> None:
        super().__init__()
        self.client = client
        self.room_id = room_id
        self.start_dir = start_dir or Path.home()

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(
                "The file is encrypted for the room's members only.",
                classes="hint",
                markup=False,
            )
            yield DirectoryTree(self.start_dir, id="tree")
            yield Label("File", classes="field-label")
            yield Input(placeholder="Choose above, or type a path", id="path")
            yield from self.feedback()
            with Horizontal(classes="buttons"):
                yield Button("Send", id="send", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "Send a file"
        self.query_one("#tree", DirectoryTree).focus()

    @on(DirectoryTree.FileSelected)
    def _picked(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.query_one("#path", Input).value = str(event.path)
        self.query_one("#send", Button).focus()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#send")
    @on(Input.Submitted, "#path")
    def _submit(self) -> None:
        if self.busy:
            return
        text = self.query_one("#path", Input).value.strip()
        if not text:
            self.show_error("Choose a file to send.")
            return
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = self.start_dir / path
        self.send(path)

    @work(exclusive=True, group="send-file", exit_on_error=False)
    async def send(self, path: Path) -> None:
        """Send the file, then close with its message."""
        message = await self.client.send_file(self.room_id, path)
        self.dismiss(message)
