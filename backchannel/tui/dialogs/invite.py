"""Make an invite link for a room, shown as text to copy and as a QR code to scan."""

from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from ...client import Client
from ._base import Dialog
from ._text import when
from .qr import qr_lines

__all__ = ["EXPIRY_CHOICES", "InviteDialog"]

EXPIRY_CHOICES: list[tuple[str, int]] = [
    ("1 hour", 3600),
    ("1 day", 86400),
    ("7 days", 7 * 86400),
]
#: Columns the QR code may take inside the dialog at 80 columns.
_QR_MAX_WIDTH = 70
_EXPIRY_NAMES = {seconds: name for name, seconds in EXPIRY_CHOICES}


class InviteDialog(Dialog[None]):
    """Create an invite link for ``room_id`` (facilitators only) and show it.

    Args:
        client: the started client.
        room_id: the room's id.
    """

    DEFAULT_CSS = """
    InviteDialog #settings {
        height: auto;
    }
    InviteDialog #settings > Vertical {
        width: 1fr;
        height: auto;
    }
    InviteDialog #settings > Vertical:first-of-type {
        margin-right: 2;
    }
    InviteDialog #result {
        height: auto;
        display: none;
    }
    InviteDialog #result.-shown {
        display: block;
    }
    InviteDialog #link {
        height: 5;
        margin-top: 1;
    }
    InviteDialog #qr {
        width: auto;
        height: auto;
        background: white;
        color: black;
        margin: 1 0;
    }
    InviteDialog #terms {
        color: $text-muted;
    }
    """

    def __init__(self, client: Client, room_id: str) -> None:
        super().__init__()
        self.client = client
        self.room_id = room_id
        #: The last link created (empty until then).
        self.link = ""

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(
                "Anyone holding the link can ask to join until it is used up or expires. "
                "Send it over a channel you trust.",
                classes="hint",
                markup=False,
            )
            with Horizontal(id="settings"):
                with Vertical():
                    yield Label("People it admits (1-1000)", classes="field-label")
                    yield Input("1", type="integer", max_length=4, id="uses")
                with Vertical():
                    yield Label("Expires after", classes="field-label")
                    yield Select(EXPIRY_CHOICES, value=86400, allow_blank=False, id="expiry")
            yield from self.feedback()
            with Horizontal(classes="buttons"):
                yield Button("Create link", id="create", variant="primary")
                yield Button("Close", id="cancel")
            with Vertical(id="result"):
                yield TextArea("", read_only=True, soft_wrap=True, id="link")
                yield Static("", id="terms", markup=False)
                with Horizontal(classes="buttons"):
                    yield Button("Copy", id="copy")
                yield Static("", id="qr", markup=False)

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "Invite people"
        self.query_one("#uses", Input).focus()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#copy")
    def _copy(self) -> None:
        if self.link:
            self.app.copy_to_clipboard(self.link)
            self.notify("The invite link is on the clipboard.", title="Copied")

    @on(Button.Pressed, "#create")
    @on(Input.Submitted, "#uses")
    def _submit(self) -> None:
        if self.busy:
            return
        text = self.query_one("#uses", Input).value.strip()
        try:
            uses = int(text)
        except ValueError:
            uses = 0
        if not 1 <= uses <= 1000:
            self.show_error("An invite admits 1 to 1000 people.")
            return
        expiry = self.query_one("#expiry", Select).value
        self.create(uses, int(expiry) if isinstance(expiry, int) else 86400)

    @work(exclusive=True, group="invite", exit_on_error=False)
    async def create(self, uses: int, expires_in: int) -> None:
        """Ask the client for a link, then show it."""
        created = time.time()
        link = await self.client.invite(self.room_id, uses=uses, expires_in=expires_in)
        self.show_link(link, uses, expires_in, created)

    def show_link(self, link: str, uses: int, expires_in: int, created: float) -> None:
        """Show ``link`` as text and as a QR code, with its terms."""
        self.link = link
        self.query_one("#link", TextArea).text = link
        people = "1 person" if uses == 1 else f"{uses} people"
        period = _EXPIRY_NAMES.get(expires_in, f"{expires_in} seconds")
        self.query_one("#terms", Static).update(
            f"Admits {people}; expires after {period} ({when(created + expires_in)})."
        )
        lines = qr_lines(link)
        if len(lines[0]) > _QR_MAX_WIDTH:  # a long link: a narrower quiet zone keeps it on screen
            lines = qr_lines(link, border=2)
        self.query_one("#qr", Static).update("\n".join(lines))
        self.query_one("#result").add_class("-shown")
        self.query_one("#copy", Button).focus()
