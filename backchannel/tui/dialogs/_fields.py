"""Room rule fields shared by the create-room and room-settings dialogs."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Input, Label, Select

__all__ = [
    "APPROVAL_CHOICES",
    "CUSTOM",
    "DAY",
    "RETENTION_CHOICES",
    "compose_rule_fields",
    "read_retention",
    "show_retention",
]

DAY = 86400
#: The retention select's value for "a number of days typed in".
CUSTOM = -1

APPROVAL_CHOICES: list[tuple[str, str]] = [
    ("A facilitator approves each request", "manual"),
    ("Anyone with a valid link joins at once", "auto"),
]

RETENTION_CHOICES: list[tuple[str, int]] = [
    ("Keep messages", 0),
    ("Erase after 1 day", DAY),
    ("Erase after 7 days", 7 * DAY),
    ("Erase after 30 days", 30 * DAY),
    ("Erase after a number of days…", CUSTOM),
]

_MAX_DAYS = 3650


def compose_rule_fields(approval: str = "manual", retention_seconds: int = 0) -> ComposeResult:
    """Labels, the approval and retention selects (``#approval``, ``#retention``) and ``#days``."""
    yield Label("Who gets in", classes="field-label")
    yield Select(
        APPROVAL_CHOICES,
        value=approval if approval in {"manual", "auto"} else "manual",
        allow_blank=False,
        id="approval",
    )
    yield Label("Message retention", classes="field-label")
    presets = {value for _, value in RETENTION_CHOICES}
    custom = retention_seconds not in presets
    yield Select(
        RETENTION_CHOICES,
        value=CUSTOM if custom else retention_seconds,
        allow_blank=False,
        id="retention",
    )
    days = Input(
        str(max(1, -(-retention_seconds // DAY))) if custom else "",
        placeholder="Days (1 to 3650)",
        type="integer",
        id="days",
    )
    days.display = custom
    yield days


def show_retention(select_value: object, days: Input) -> None:
    """Show the days field only when the retention select says "a number of days"."""
    days.display = select_value == CUSTOM


def read_retention(select_value: object, days_text: str) -> int:
    """The retention in seconds the fields describe.

    Raises:
        ValueError: the typed number of days is missing or out of range (a sentence).
    """
    if select_value != CUSTOM:
        return int(select_value) if isinstance(select_value, int) else 0
    try:
        days = int(days_text.strip())
    except ValueError:
        raise ValueError("Type how many days messages are kept (1 to 3650).") from None
    if not 1 <= days <= _MAX_DAYS:
        raise ValueError("Messages can be kept for 1 to 3650 days.")
    return days * DAY
