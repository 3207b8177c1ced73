"""App-wide Textual messages: each client event becomes one of these for the screens."""

from __future__ import annotations

from textual.message import Message

from ..views import MessageView, RequestView

__all__ = [
    "AlertRaised",
    "ConnectionStateChanged",
    "JoinAnswerArrived",
    "JoinRequestArrived",
    "MembersUpdated",
    "MessageArrived",
    "MessageUpdated",
    "RemovedFromRoomNotice",
    "RoomUpdated",
]


class ConnectionStateChanged(Message):
    """The relay connection changed: ``connected``, ``reconnecting``, ``offline`` or ``closed``."""

    def __init__(self, state: str, detail: str = "") -> None:
        super().__init__()
        self.state = state
        self.detail = detail

    def can_replace(self, message: Message) -> bool:
        # Only the newest state matters when several arrive at once.
        return isinstance(message, ConnectionStateChanged)


class MessageArrived(Message):
    """A message arrived in some room (or this device sent one)."""

    def __init__(self, message: MessageView) -> None:
        super().__init__()
        self.message = message


class MessageUpdated(Message):
    """A message was edited, deleted, reacted to, or its file completed."""

    def __init__(self, room: str, message_id: str) -> None:
        super().__init__()
        self.room = room
        self.message_id = message_id


class RoomUpdated(Message):
    """A room's title, rules or roles changed, or a room was added."""

    def __init__(self, room: str) -> None:
        super().__init__()
        self.room = room


class MembersUpdated(Message):
    """Members joined or left, or a member's verification changed."""

    def __init__(self, room: str) -> None:
        super().__init__()
        self.room = room


class JoinRequestArrived(Message):
    """Someone asked to join a room this device facilitates."""

    def __init__(self, request: RequestView) -> None:
        super().__init__()
        self.request = request


class JoinAnswerArrived(Message):
    """A join request this device sent was approved (``room`` set) or turned away."""

    def __init__(self, request_id: str, approved: bool, room: str | None) -> None:
        super().__init__()
        self.request_id = request_id
        self.approved = approved
        self.room = room


class RemovedFromRoomNotice(Message):
    """This member was removed from a room, or its leaving was committed."""

    def __init__(self, room: str) -> None:
        super().__init__()
        self.room = room


class AlertRaised(Message):
    """Something the person should know (a refused post, a rejected change)."""

    def __init__(self, room: str | None, text: str) -> None:
        super().__init__()
        self.room = room
        self.text = text
