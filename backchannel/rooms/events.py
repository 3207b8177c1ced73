"""What :meth:`Room.receive` and :meth:`Room.confirm_pending` return: frozen, typed room events.

Every event is a frozen value object (h11 style): one base class, no subclassing of
concrete events. Member ids are MLS credential identities. Message content is kept
out of every ``repr``.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field

from .content import Content
from .policy import ProposedChange, RoomPolicy

__all__ = [
    "CommitRejected",
    "ContentDropped",
    "MembersChanged",
    "MessageReceived",
    "PolicyChanged",
    "ProposalQueued",
    "RemovedFromRoom",
    "RoomEvent",
]


class RoomEvent(ABC):  # noqa: B024 - a marker base, like h11's Event
    """Base of every room event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class MessageReceived(RoomEvent):
    """Content from a member who may post, not seen before, that passed the same-sender rules.

    For :class:`~.content.Edit`, :class:`~.content.Delete` and :class:`~.content.FileChunk`
    the room has checked that the target (or file manifest) was sent by the same sender.
    """

    #: The sender's member id.
    sender: bytes
    #: The decoded content (left out of the repr).
    content: Content = field(repr=False)
    #: The sender's claimed time, Unix milliseconds (from the signed, encrypted content).
    sent_at_ms: int
    #: The local time the message was processed, Unix milliseconds.
    received_at_ms: int
    #: The epoch the message was sent in.
    epoch: int


@dataclass(frozen=True, slots=True)
class ContentDropped(RoomEvent):
    """An authenticated application message was dropped by a room rule (nothing to show)."""

    #: The sender's member id.
    sender: bytes
    #: Why: an observer posted, a duplicate, another sender's edit/delete/chunk, or bad content.
    reason: str


@dataclass(frozen=True, slots=True)
class MembersChanged(RoomEvent):
    """A commit that added or removed members became the new epoch."""

    #: The new epoch.
    epoch: int
    #: The committer's member id.
    committer: bytes
    #: Member ids added.
    added: tuple[bytes, ...]
    #: Member ids removed (a member who left appears here too).
    removed: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class PolicyChanged(RoomEvent):
    """A commit changed the room policy."""

    #: The new epoch.
    epoch: int
    #: The committer's member id.
    committer: bytes
    #: The policy before the commit.
    old: RoomPolicy
    #: The policy now in force.
    new: RoomPolicy


@dataclass(frozen=True, slots=True)
class CommitRejected(RoomEvent):
    """A commit broke the room policy and was not merged; the room state is unchanged.

    Every member reaches the same verdict, so the group stays in agreement.
    """

    #: The epoch the commit was sent in (still the current epoch).
    epoch: int
    #: The committer's member id.
    committer: bytes
    #: The rule it broke, as a sentence.
    reason: str


@dataclass(frozen=True, slots=True)
class ProposalQueued(RoomEvent):
    """A member proposed a change (e.g. to leave); a facilitator's next commit may include it."""

    #: The epoch of the proposal.
    epoch: int
    #: The proposer's member id.
    proposer: bytes
    #: What the proposal asks for, as the policy sees it.
    change: ProposedChange


@dataclass(frozen=True, slots=True)
class RemovedFromRoom(RoomEvent):
    """This member was removed (or its leave was committed): the room accepts nothing more."""

    #: The epoch that no longer includes this member.
    epoch: int
    #: The committer's member id.
    committer: bytes


@dataclass(frozen=True, slots=True)
class ForkDetected(RoomEvent):
    """A message of ``epoch`` carries another fork check than this member's (§13).

    The relay is showing members different histories of the room: warn loudly.
    """

    epoch: int


@dataclass(frozen=True, slots=True)
class MessagesMissing(RoomEvent):
    """``count`` messages of ``sender`` in ``epoch`` were never delivered (a gap in
    the sender's generations, §13)."""

    epoch: int
    sender: bytes
    count: int


@dataclass(frozen=True, slots=True)
class EpochAhead(RoomEvent):
    """A message for an epoch later than this member's arrived: changes to the room
    were not delivered to this member (or the message is forged; it is unauthenticated)."""

    epoch: int
    current: int
