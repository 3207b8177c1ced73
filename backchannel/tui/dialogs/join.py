"""Paste an invite link and ask the room's facilitators to be let in."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Label, Static

from ...client import Client
from ._base import Dialog

__all__ = ["JoinDialog"]

_SENT = (
    "Your request is on its way. A facilitator of the room will answer it; the room "
    "appears in your list once they let you in. You can close this now."
)


class JoinDialog(Dialog[str | None]):
    """Send a join request for an invite link; dismisses with the request id, or None.

    Args:
        client: the started client.
        link: a link to start with (pasted or given on the command line).
    """

    DEFAULT_CSS = """
    JoinDialog #sent {
        color: $success;
        margin-top: 1;
        height: auto;
        display: none;
    }
    """

    def __init__(self, client: Client, link: str = "") -> None:
        super().__init__()
        self.client = client
        self.initial_link = link
        #: The id of the request sent (None until then).
        self.request_id: str | None = None

    def cancel_value(self) -> str | None:
        """Once a request is sent, closing the dialog still reports it."""
        return self.request_id

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(
                "Paste the invite link someone sent you. A facilitator of the room will "
                "see your name and safety number and decide whether to let you in.",
                classes="hint",
                markup=False,
            )
            yield Label("Invite link", classes="field-label")
            yield Input(self.initial_link, placeholder="backchannel://join#…", id="link")
            yield Static("", id="sent", markup=False)
            yield from self.feedback()
            with Horizontal(classes="buttons"):
                yield Button("Ask to join", id="join", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "Join a room"
        self.query_one("#link", Input).focus()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#join")
    @on(Input.Submitted, "#link")
    def _submit(self) -> None:
        if self.busy:
            return
        if self.request_id is not None:
            self.dismiss(self.request_id)
            return
        link = self.query_one("#link", Input).value.strip()
        if not link:
            self.show_error("Paste an invite link first.")
            return
        self.join(link)

    @work(exclusive=True, group="join", exit_on_error=False)
    async def join(self, link: str) -> None:
        """Send the request, then say what happens next."""
        self.request_id = await self.client.join(link)
        sent = self.query_one("#sent", Static)
        sent.update(_SENT)
        sent.display = True
        self.query_one("#link", Input).disabled = True
        button = self.query_one("#join", Button)
        button.label = "Done"
        self.query_one("#cancel", Button).display = False
        button.focus()
