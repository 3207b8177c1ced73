"""What to do with one message (reply, edit, delete, react, save), and editing its text."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Static, TextArea

from ...client import Client
from ...views import MessageView
from ._base import Dialog
from ._text import clean, excerpt, plain, when

__all__ = ["REACTIONS", "EditMessageDialog", "MessageActionsDialog"]

#: The emoji offered as one-press reactions.
REACTIONS: tuple[str, ...] = ("👍", "👎", "😀", "🎉", "❤️", "👀", "✅")


def _preview(message: MessageView) -> Text:
    if message.deleted:
        body = Text("(deleted)", style="italic")
    elif message.kind == "file" and message.file is not None:
        body = plain(f"File: {message.file.name}")
    else:
        body = plain(excerpt(message.text, 200))
    return Text.assemble(
        plain(message.sender_name, style="bold"), f"  {when(message.time)}\n", body
    )


class MessageActionsDialog(Dialog[str | None]):
    """The actions open on ``message``; dismisses with the chosen one, or None.

    Results: ``"reply"``, ``"edit"``, ``"delete"``, ``"react:<emoji>"`` or ``"save"``.

    Args:
        message: the message.
        mine: whether this member sent it.
    """

    DEFAULT_CSS = """
    MessageActionsDialog > #dialog {
        width: 72;
    }
    MessageActionsDialog #preview {
        border: round $primary 50%;
        padding: 0 1;
        margin-bottom: 1;
        max-height: 8;
    }
    MessageActionsDialog #reactions {
        height: auto;
        margin-bottom: 1;
    }
    MessageActionsDialog #reactions Button {
        min-width: 6;
        width: 8;
        margin-right: 1;
    }
    MessageActionsDialog #actions {
        height: auto;
    }
    MessageActionsDialog #actions Button {
        margin-right: 1;
    }
    """

    def __init__(self, message: MessageView, mine: bool) -> None:
        super().__init__()
        self.message = message
        self.mine = mine

    def actions(self) -> list[tuple[str, str]]:
        """The (result, label) pairs this message allows, besides reactions."""
        message = self.message
        found: list[tuple[str, str]] = []
        if not message.deleted:
            found.append(("reply", "Reply"))
        if self.mine and not message.deleted and message.kind == "text":
            found.append(("edit", "Edit"))
        if message.kind == "file" and message.file is not None and message.file.complete:
            found.append(("save", "Save file"))
        if self.mine and not message.deleted:
            found.append(("delete", "Delete"))
        return found

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(_preview(self.message), id="preview")
            if not self.message.deleted:
                with Horizontal(id="reactions"):
                    for index, emoji in enumerate(REACTIONS):
                        yield Button(
                            emoji, id=f"react-{index}", classes="reaction", tooltip="React"
                        )
            with Horizontal(id="actions"):
                for result, label in self.actions():
                    yield Button(
                        label,
                        id=result,
                        classes="action",
                        variant="error" if result == "delete" else "default",
                    )
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "Message"
        self.query_one("#actions Button", Button).focus()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, ".reaction")
    def _react(self, event: Button.Pressed) -> None:
        event.stop()
        index = int((event.button.id or "react-0").removeprefix("react-"))
        self.dismiss(f"react:{REACTIONS[index]}")

    @on(Button.Pressed, ".action")
    def _act(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id)


class EditMessageDialog(Dialog[None]):
    """Change the text of one of this member's messages.

    Args:
        client: the started client.
        room_id: the room's id.
        message: the message to edit.
    """

    DEFAULT_CSS = """
    EditMessageDialog #text {
        height: 8;
    }
    """

    def __init__(self, client: Client, room_id: str, message: MessageView) -> None:
        super().__init__()
        self.client = client
        self.room_id = room_id
        self.message = message

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static("Everyone sees that the message was edited.", classes="hint", markup=False)
            yield TextArea(
                clean(self.message.text, multiline=True),
                soft_wrap=True,
                tab_behavior="focus",
                id="text",
            )
            yield from self.feedback()
            with Horizontal(classes="buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "Edit message"
        self.query_one("#text", TextArea).focus()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#save")
    def _submit(self) -> None:
        if self.busy:
            return
        text = self.query_one("#text", TextArea).text.strip()
        if not text:
            self.show_error("A message needs some text; to remove it, delete it instead.")
            return
        if text == clean(self.message.text, multiline=True).strip():
            self.dismiss(None)
            return
        self.save(text)

    @work(exclusive=True, group="edit", exit_on_error=False)
    async def save(self, text: str) -> None:
        """Send the new text, then close."""
        await self.client.edit(self.room_id, self.message.id, text)
        self.dismiss(None)
