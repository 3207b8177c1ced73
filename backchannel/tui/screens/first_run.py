"""First run: choose a display name, a passphrase (typed twice) and a relay.

The relay is the built-in local one (the default), a relay URL, or the relay an
invite link names: with a link, the profile is created on that link's relay and
asks to join right away.
"""

from __future__ import annotations

import string

from textual import on
from textual.app import ComposeResult
from textual.containers import Center, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Static

from ...client import Client
from ...errors import BackchannelError

__all__ = ["FirstRunScreen", "strength_hint"]

MIN_LENGTH = 10


def strength_hint(passphrase: str) -> str:
    """A hint about a passphrase's strength from its length and character classes."""
    if not passphrase:
        return f"Use at least {MIN_LENGTH} characters; several words are easy to remember."
    classes = sum(
        any(c in group for c in passphrase)
        for group in (string.ascii_lowercase, string.ascii_uppercase, string.digits)
    ) + any(not c.isalnum() for c in passphrase)
    n = len(passphrase)
    if n < MIN_LENGTH:
        return f"Too short: {n} of at least {MIN_LENGTH} characters."
    if n >= 20 or (n >= 14 and classes >= 3):
        return f"Strong: {n} characters, {classes} kinds of character."
    if classes >= 3 or n >= 16:
        return f"Fair: {n} characters, {classes} kinds; longer is stronger."
    return f"Weak: {n} characters, {classes} kind(s); add words, digits or symbols."


class FirstRunScreen(Screen[None]):
    """Creates the profile; the app does the work and switches to the rooms."""

    AUTO_FOCUS = "#name"

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="first-run"), Center(), Vertical(id="first-run-form"):
            yield Static("Welcome to Backchannel", id="first-run-title")
            yield Static(
                "Everything is stored encrypted under your passphrase. "
                "Nobody can recover it for you.",
                classes="explain",
            )
            yield Label("Your display name (others see it)")
            yield Input(id="name", placeholder="e.g. Farida", max_length=64)
            yield Label("Passphrase")
            yield Input(id="passphrase", password=True)
            yield Static(strength_hint(""), id="strength", classes="hint")
            yield Label("The passphrase again")
            yield Input(id="passphrase2", password=True)
            yield Label("Relay")
            with RadioSet(id="relay-choice"):
                yield RadioButton("Built-in local relay", value=True, id="relay-embedded")
                yield RadioButton("A relay URL (ws:// or wss://)", id="relay-url-choice")
                yield RadioButton("Join with an invite link", id="relay-link-choice")
            yield Input(id="relay-url", placeholder="wss://relay.example.org/v1/ws")
            yield Input(id="invite-link", placeholder="backchannel://join#…")
            yield Static("", id="first-run-error", classes="error")
            yield Button("Create profile", id="create", variant="primary")

    def on_mount(self) -> None:
        self._show_fields()

    def _choice(self) -> str:
        pressed = self.query_one("#relay-choice", RadioSet).pressed_button
        return pressed.id if pressed is not None and pressed.id else "relay-embedded"

    def _show_fields(self) -> None:
        choice = self._choice()
        self.query_one("#relay-url", Input).display = choice == "relay-url-choice"
        self.query_one("#invite-link", Input).display = choice == "relay-link-choice"

    @on(RadioSet.Changed)
    def _relay_changed(self) -> None:
        self._show_fields()

    @on(Input.Changed, "#passphrase")
    def _passphrase_changed(self, event: Input.Changed) -> None:
        self.query_one("#strength", Static).update(strength_hint(event.value))

    def show_error(self, text: str) -> None:
        """Say what is wrong with the form."""
        self.query_one("#first-run-error", Static).update(text)

    @on(Input.Submitted)
    @on(Button.Pressed, "#create")
    def submit(self) -> None:
        """Check the form and ask the app to create the profile."""
        name = self.query_one("#name", Input).value.strip()
        passphrase = self.query_one("#passphrase", Input).value
        again = self.query_one("#passphrase2", Input).value
        choice = self._choice()
        relay = self.query_one("#relay-url", Input).value.strip() or None
        link = self.query_one("#invite-link", Input).value.strip() or None
        if not name:
            return self.show_error("Choose a display name.")
        if len(passphrase) < MIN_LENGTH:
            return self.show_error(f"The passphrase needs at least {MIN_LENGTH} characters.")
        if passphrase != again:
            return self.show_error("The two passphrases differ; type them again.")
        if choice == "relay-embedded":
            relay, link = None, None
        elif choice == "relay-link-choice":
            if not link:
                return self.show_error("Paste the invite link you were sent.")
            try:
                relay = Client.invite_relay(link)
            except BackchannelError as exc:
                return self.show_error(exc.user_message())
        else:
            link = None
            if relay is None or not relay.startswith(("ws://", "wss://")):
                return self.show_error("Give the relay URL: it starts with ws:// or wss://.")
        self.show_error("Creating the profile; deriving the key takes a moment…")
        self.app.create_profile(name, passphrase, relay, link)  # type: ignore[attr-defined]
        return None
