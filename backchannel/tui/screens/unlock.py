"""The unlock screen: the passphrase opens the profile; a wrong one says so."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Center, Vertical
from textual.screen import Screen
from textual.widgets import Button, Input, Static

__all__ = ["UnlockScreen"]


class UnlockScreen(Screen[None]):
    """Asks for the passphrase; the app opens the profile in a worker."""

    AUTO_FOCUS = "#unlock-passphrase"

    def compose(self) -> ComposeResult:
        with Center(id="unlock"), Vertical(id="unlock-form", classes="card"):
            yield Static("Backchannel is locked", classes="card-title")
            yield Input(id="unlock-passphrase", password=True, placeholder="Passphrase")
            yield Static("", id="unlock-error", classes="error")
            yield Button("Unlock", id="unlock-button", variant="primary")

    def show_error(self, text: str) -> None:
        """Show why unlocking failed and let the person try again."""
        self.query_one("#unlock-error", Static).update(text)
        field = self.query_one("#unlock-passphrase", Input)
        field.value = ""
        field.disabled = False
        field.focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#unlock-button")
    def submit(self) -> None:
        field = self.query_one("#unlock-passphrase", Input)
        if not field.value:
            return
        self.query_one("#unlock-error", Static).update("Unlocking…")
        self.app.unlock(field.value)  # type: ignore[attr-defined]
