"""A yes/no question."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from ._base import Dialog
from ._text import plain

__all__ = ["ConfirmDialog"]


class ConfirmDialog(Dialog[bool]):
    """Ask ``question``; dismisses with True for the confirm button, False otherwise.

    Args:
        question: the question, shown as plain text (it may hold a peer's name).
        confirm_label: the label of the confirming button.
    """

    DEFAULT_CSS = """
    ConfirmDialog > #dialog {
        width: 60;
    }
    ConfirmDialog #question {
        width: 100%;
        margin: 1 0 0 0;
    }
    """

    cancel_result = False

    def __init__(self, question: str, confirm_label: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(plain(self.question, multiline=True), id="question")
            with Horizontal(classes="buttons"):
                yield Button(self.confirm_label, id="confirm", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "Please confirm"
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")
