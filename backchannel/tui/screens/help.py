"""The help screen: every key of the app and the rooms screen, with what it does."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from ..commands import catalogue

__all__ = ["HelpScreen"]


class HelpScreen(ModalScreen[None]):
    """Keys, titles and explanations; escape closes it."""

    BINDINGS = [Binding("escape,q,f1", "dismiss", "Close", id="help.close")]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 90%; max-width: 110; height: 80%;
        background: $panel; border: round $primary; padding: 0 1;
    }
    HelpScreen DataTable { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Keys (ctrl+p lists every action by name)", classes="card-title")
            yield DataTable(id="help-keys", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Key", "Action", "What it does")
        below = self.app.screen_stack[-2] if len(self.app.screen_stack) > 1 else None
        for entry in catalogue(self.app, below):
            table.add_row(Text(entry.key, style="bold"), entry.title, entry.help)
        extra = [
            (
                "ctrl+j",
                "New line",
                "In the composer: start a new line (shift+enter where the terminal reports it)",
            ),
            ("enter", "Send", "In the composer: send the message"),
            ("up/down", "Select message", "In the conversation: move the message cursor"),
            ("ctrl+p", "Command palette", "Find any action by name"),
            ("tab", "Next area", "Move between rooms, conversation, composer and members"),
        ]
        for key, title, text in extra:
            table.add_row(Text(key, style="bold"), title, text)
