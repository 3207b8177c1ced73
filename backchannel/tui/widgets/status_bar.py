"""The connection line: connected, reconnecting, or offline with messages queued."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

__all__ = ["ConnectionStatus", "describe"]

_TEXT = {
    "connected": "● connected",
    "reconnecting": "◌ reconnecting…",
    "offline": "○ offline: messages are queued",
    "closed": "○ disconnected",
}


def describe(state: str) -> str:
    """What the status line says for a connection state."""
    return _TEXT.get(state, state)


class ConnectionStatus(Static):
    """Shows the relay connection state; its CSS class is the state name."""

    state: reactive[str] = reactive("reconnecting")
    """``connected``, ``reconnecting``, ``offline`` or ``closed``."""

    def watch_state(self, old: str, new: str) -> None:
        self.remove_class(old)
        self.add_class(new)
        self.update(describe(new))

    def on_mount(self) -> None:
        self.watch_state(self.state, self.state)
