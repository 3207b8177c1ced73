"""The room list: titles, roles, unread counts and waiting join requests."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from ...safe_text import clean
from ...views import RoomSummary

__all__ = ["RoomList"]


def room_label(room: RoomSummary) -> Text:
    """One room as the list shows it (peer-chosen title as plain text)."""
    label = Text(clean(room.title), end="")
    if not room.joined:
        label.append(" (left)", "dim")
    label.append(f"\n{room.role}", "dim")
    if room.unread:
        label.append(f"  {room.unread} new", "bold")
    if room.role == "facilitator" and room.pending_requests:
        label.append(f"  {room.pending_requests} waiting", "bold reverse")
    return label


class RoomList(OptionList):
    """The rooms of this profile; choosing one shows it."""

    class Selected(Message):
        """A room was chosen."""

        def __init__(self, room_list: RoomList, room_id: str) -> None:
            super().__init__()
            self.room_list = room_list
            self.room_id = room_id

        @property
        def control(self) -> RoomList:
            return self.room_list

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rooms: list[RoomSummary] = []

    def set_rooms(self, rooms: list[RoomSummary], current: str | None) -> None:
        """Replace the list, keeping ``current`` highlighted."""
        self.rooms = list(rooms)
        self.clear_options()
        self.add_options(Option(room_label(r), id=r.id) for r in rooms)
        for i, r in enumerate(rooms):
            if r.id == current:
                self.highlighted = i

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Selected(self, event.option.id))
