"""Join requests waiting in a room: compare the safety number, then approve or turn away."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Static

from ...client import Client
from ...views import RequestView
from ._base import Dialog
from ._text import plain, safety_rows, when

__all__ = ["RequestsDialog"]


class RequestRow(Vertical):
    """One waiting request: name, safety number, time, and the two answers."""

    DEFAULT_CSS = """
    RequestRow {
        height: auto;
        border: round $primary 50%;
        padding: 0 1;
        margin-bottom: 1;
    }
    RequestRow .name {
        text-style: bold;
    }
    RequestRow .safety {
        color: $accent;
        margin: 0 0 0 2;
    }
    RequestRow .received {
        color: $text-muted;
    }
    RequestRow Horizontal {
        height: auto;
        align-horizontal: right;
    }
    RequestRow Button {
        margin-left: 1;
    }
    """

    def __init__(self, request: RequestView) -> None:
        super().__init__()
        self.request = request

    def compose(self) -> ComposeResult:
        request = self.request
        yield Static(plain(request.name), classes="name")
        yield Static("Safety number:", markup=False)
        yield Static(safety_rows(request.safety_number), classes="safety", markup=False)
        yield Static(f"Asked {when(request.received_at)}", classes="received", markup=False)
        with Horizontal():
            yield Button("Approve", id=f"approve-{request.id}", variant="success", classes="answer")
            yield Button("Deny", id=f"deny-{request.id}", variant="error", classes="answer")


class RequestsDialog(Dialog[None]):
    """The join requests of ``room_id``, each with Approve and Deny.

    Args:
        client: the started client.
        room_id: the room's id.
    """

    DEFAULT_CSS = """
    RequestsDialog #requests {
        height: auto;
    }
    RequestsDialog #empty {
        color: $text-muted;
        margin: 1 0;
    }
    """

    def __init__(self, client: Client, room_id: str) -> None:
        super().__init__()
        self.client = client
        self.room_id = room_id
        #: The requests last shown.
        self.requests: list[RequestView] = []

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(
                "Approve only people you invited: if a request is unexpected, check with "
                "the person by a channel you trust. Once they are in, they see this same "
                "safety number under your name; compare it with them and mark them verified.",
                classes="hint",
                markup=False,
            )
            yield Vertical(id="requests")
            yield Static("", id="empty", markup=False)
            yield from self.feedback()
            with Horizontal(classes="buttons"):
                yield Button("Refresh", id="refresh")
                yield Button("Close", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "People asking to join"
        self.load()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#refresh")
    def _refresh(self) -> None:
        # Not while an answer runs: the worker group is exclusive, so a refresh would
        # cancel it, and the answer's own refresh comes when it is done.
        if not self.busy:
            self.load()

    @on(Button.Pressed, ".answer")
    def _answer(self, event: Button.Pressed) -> None:
        event.stop()
        if self.busy or event.button.id is None:
            return
        verb, _, request_id = event.button.id.partition("-")
        self.answer(request_id, approve=verb == "approve")

    @work(exclusive=True, group="requests", exit_on_error=False)
    async def load(self) -> None:
        """Read the waiting requests and show them."""
        await self._show(await self.client.requests(self.room_id))

    @work(exclusive=True, group="requests", exit_on_error=False)
    async def answer(self, request_id: str, *, approve: bool) -> None:
        """Approve or deny one request, then show the list again."""
        if approve:
            await self.client.approve(self.room_id, request_id)
        else:
            await self.client.deny(self.room_id, request_id)
        self.notify("Approved." if approve else "Turned away.")
        await self._show(await self.client.requests(self.room_id))

    async def _show(self, requests: list[RequestView]) -> None:
        self.requests = requests
        box = self.query_one("#requests", Vertical)
        await box.remove_children()
        await box.mount_all(RequestRow(r) for r in requests)
        empty = self.query_one("#empty", Static)
        empty.update("" if requests else "No one is waiting to join this room.")
        empty.display = not requests
        buttons = box.query(Button)
        if buttons:
            buttons.first().focus()
        else:
            self.query_one("#refresh", Button).focus()
