"""What the client façade hands to UIs: plain values for rooms, messages, members and events.

Ids are lowercase hex strings (room ids, member ids, message ids, request ids), so
a UI never handles raw bytes and the CLI's ``--json`` output is these fields. A
message's id is its *ref*, which binds the sender's chosen id to the sender
(``store.records.message_ref``): members can choose the same id, never the same ref.
Nothing here holds a key.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Alert",
    "ClientEvent",
    "ConnectionChanged",
    "FileInfo",
    "JoinAnswered",
    "JoinRequested",
    "MemberView",
    "MembersChanged",
    "MessageChanged",
    "MessageView",
    "NewMessage",
    "PostRefused",
    "QueuedPost",
    "ReactionCount",
    "RemovedFromRoom",
    "RequestView",
    "RoomChanged",
    "RoomSummary",
    "VerificationChanged",
    "human_size",
]


@dataclass(frozen=True, slots=True)
class RoomSummary:
    """One room, as a room list shows it."""

    id: str
    title: str
    role: str
    members: int
    approval: str
    retention_seconds: int
    joined: bool
    pending_requests: int
    #: Messages from others since this member last read the room.
    unread: int = 0


@dataclass(frozen=True, slots=True)
class FileInfo:
    """An attachment announced in a room."""

    name: str
    size: int
    complete: bool


def human_size(n: int) -> str:
    """A file size as every UI shows it: ``1.2 MB`` (decimal units)."""
    size = float(n)
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} bytes"  # pragma: no cover


@dataclass(frozen=True, slots=True)
class ReactionCount:
    """One emoji on a message: how many members chose it, and whether this member did."""

    emoji: str
    count: int
    mine: bool


@dataclass(frozen=True, slots=True)
class MessageView:
    """One message of a room's history."""

    id: str
    room: str
    sender: str
    sender_name: str
    text: str
    time: float
    kind: str = "text"
    reply_to: str | None = None
    edited: bool = False
    deleted: bool = False
    outgoing: bool = False
    delivered: bool = True
    file: FileInfo | None = None
    reactions: tuple[ReactionCount, ...] = ()
    #: An outgoing message the relay refused for good: it will not be sent.
    refused: bool = False


@dataclass(frozen=True, slots=True)
class MemberView:
    """A room member with its role and this device's verification of it."""

    id: str
    name: str
    role: str
    verified: bool
    key_changed: bool
    me: bool


@dataclass(frozen=True, slots=True)
class QueuedPost:
    """Something this device queued for the relay (an edit, a deletion, a reaction, a leave).

    ``post`` names it until the relay acknowledges it
    (:meth:`backchannel.client.Client.post_delivered`) or refuses it (a
    :class:`PostRefused` event with the same ``post``).
    """

    room: str
    post: str


@dataclass(frozen=True, slots=True)
class RequestView:
    """A join request waiting for a facilitator."""

    id: str
    room: str
    name: str
    safety_number: str
    received_at: float


class ClientEvent:
    """Base of everything :meth:`backchannel.client.Client.events` yields."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ConnectionChanged(ClientEvent):
    """The relay connection is ``connected``, ``reconnecting``, ``offline`` or ``closed``."""

    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class NewMessage(ClientEvent):
    """A message arrived (or this device sent one)."""

    message: MessageView


@dataclass(frozen=True, slots=True)
class MessageChanged(ClientEvent):
    """A message was edited, deleted, or its file completed: read it again."""

    room: str
    message_id: str


@dataclass(frozen=True, slots=True)
class MembersChanged(ClientEvent):
    """Members joined or left a room (ids)."""

    room: str
    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoomChanged(ClientEvent):
    """A room's title, rules, roles or a member's name changed, or a room was added."""

    room: str


@dataclass(frozen=True, slots=True)
class JoinRequested(ClientEvent):
    """Someone asked to join a room this device facilitates."""

    request: RequestView


@dataclass(frozen=True, slots=True)
class JoinAnswered(ClientEvent):
    """A join this device asked for was approved (``room`` is set) or denied."""

    request_id: str
    approved: bool
    room: str | None = None


@dataclass(frozen=True, slots=True)
class RemovedFromRoom(ClientEvent):
    """This member was removed from a room (or its leave was committed)."""

    room: str


@dataclass(frozen=True, slots=True)
class VerificationChanged(ClientEvent):
    """A member's verification changed; ``key_changed`` means warn loudly."""

    room: str
    member: str
    verified: bool
    key_changed: bool


@dataclass(frozen=True, slots=True)
class Alert(ClientEvent):
    """Something the user should know (a rejected commit, a refused post)."""

    room: str | None
    text: str


@dataclass(frozen=True, slots=True)
class PostRefused(ClientEvent):
    """The relay refused something this device posted.

    What the client does next depends on the refusal: a post refused for good is
    dropped (and its message marked refused); one the relay may take later is kept
    and holds back the posts queued after it for the same mailbox (the outbox keeps
    their order). :meth:`~.client.Client.post_queued` tells which.

    Attributes:
        room: the room it was posted to, or None (an invite drop, a join request).
        post: the post's id (:attr:`QueuedPost.post`; for a message, not its id).
        text: this client's sentence for the refusal (never the relay's words).
    """

    room: str | None
    post: str
    text: str
