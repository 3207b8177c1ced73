"""The lock screen: an opaque screen over everything until the passphrase is typed."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Center, Vertical
from textual.screen import Screen
from textual.widgets import Input, Static

__all__ = ["LockScreen"]


class LockScreen(Screen[None]):
    """Hides every room and message; ``client.check_passphrase`` lets the person back."""

    AUTO_FOCUS = "#lock-passphrase"
    BINDINGS: list = []

    def compose(self) -> ComposeResult:
        with Center(id="lock"), Vertical(id="lock-form", classes="card"):
            yield Static("Locked", classes="card-title")
            yield Input(id="lock-passphrase", password=True, placeholder="Passphrase")
            yield Static("", id="lock-error", classes="error")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value:
            self.check(event.value)

    @work(exclusive=True, group="lock", exit_on_error=False, name="Unlocking")
    async def check(self, passphrase: str) -> None:
        """Unlock if ``passphrase`` is the profile's."""
        client = self.app.client  # type: ignore[attr-defined]
        field = self.query_one("#lock-passphrase", Input)
        field.value = ""
        if client is not None and await client.check_passphrase(passphrase):
            self.app.unlocked()  # type: ignore[attr-defined]
            self.dismiss()
        else:
            self.query_one("#lock-error", Static).update("Wrong passphrase. Try again.")
