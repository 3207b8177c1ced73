"""Shared pieces of the engine: a room in memory, the effects of one entry, ids, keys."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import msgpack

from ..errors import BackchannelError
from ..records import RoomMeta
from ..rooms.access import RoomAccess
from ..rooms.policy import Role
from ..rooms.room import Room
from ..store.records import Message, OutboxEntry
from ..store.records import Room as RoomRecord
from ..stored_views import READ_KEY
from ..views import (
    ClientEvent,
)

__all__ = [
    "BATCH_ENTRIES",
    "CATCH_UP_SECONDS",
    "COMMIT_ATTEMPTS",
    "DEFAULT_SELF_UPDATE_SECONDS",
    "HOUSEKEEPING_SECONDS",
    "INVITE_KEY",
    "JOINING_KEY",
    "MAX_HELD_BYTES",
    "MAX_HELD_CHANGES",
    "READ_KEY",
    "REQUEST_KEY",
    "REQUEST_SECONDS",
    "ROLE_NAMES",
    "WRITE_CAP_KEY",
    "Chunk",
    "ContentChange",
    "Deleted",
    "Edited",
    "Effects",
    "Live",
    "Reacted",
    "decode_held",
    "encode_held",
    "hex_id",
    "parse_id",
]


#: Members commit a fresh path this often (post-compromise security).
DEFAULT_SELF_UPDATE_SECONDS: Final = 7 * 86400
#: How often the housekeeping task runs (retention, scheduled updates).
HOUSEKEEPING_SECONDS: Final = 60.0
#: Tries of one change against concurrent commits before giving up.
COMMIT_ATTEMPTS: Final = 8
#: Seconds to wait for the winning commit after losing a race.
CATCH_UP_SECONDS: Final = 10.0
#: Most entries handled in one batch (one store transaction per room).
BATCH_ENTRIES: Final = 256
#: Seconds one relay request may take before the user is told.
REQUEST_SECONDS: Final = 30.0
#: Changes (edits, deletes, chunks) a room keeps while their message has not arrived.
MAX_HELD_CHANGES: Final = 256
#: ...and their size in all (chunks are up to 128 KiB each).
MAX_HELD_BYTES: Final = 8 << 20

INVITE_KEY = "invite/"
REQUEST_KEY = "request/"
JOINING_KEY = "joining/"
WRITE_CAP_KEY = "wcap/"
ROLE_NAMES: Final = {
    Role.FACILITATOR: "facilitator",
    Role.PARTICIPANT: "participant",
    Role.OBSERVER: "observer",
}


def hex_id(b: bytes) -> str:
    return b.hex()


def parse_id(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        raise BackchannelError(f"{text!r} is not a valid {what} id.") from None


@dataclass(slots=True, eq=False)
class Live:
    """A joined room in memory; ``lock`` serialises every change to it."""

    record: RoomRecord
    room: Room
    meta: RoomMeta
    names: dict[bytes, str] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    epoch_changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: A later epoch seen in messages this member could not read (changes withheld?).
    behind: int | None = None
    #: The relay's epoch from its last ``stale_epoch`` answer to this member's commit.
    relay_epoch: int | None = None
    #: Warnings already shown, so each is shown once: (kind, epoch).
    warned: set[tuple[str, int]] = field(default_factory=set)
    #: Own appends acknowledged but not yet seen in the stream, by position (mailbox,
    #: seq) -> SHA-256 of the blob. Cleared when the room moves.
    expected: dict[tuple[bytes, int], bytes] = field(default_factory=dict)
    #: SHA-256 of recently seen entries, by position (mailbox, seq) (bounded), to check
    #: late acknowledgements. Cleared when the room moves.
    recent: dict[tuple[bytes, int], bytes] = field(default_factory=dict)
    #: Content dropped since this room was loaded, by reason (never by sender or id).
    dropped: Counter[str] = field(default_factory=Counter)


# A received change names the author of the message it touches: an edit, a delete or
# a file chunk only ever its own sender's (``sender``), a reaction the author it names.


@dataclass(frozen=True, slots=True)
class Edited:
    sender: bytes
    target: bytes
    body: str = field(repr=False)
    at: float


@dataclass(frozen=True, slots=True)
class Deleted:
    sender: bytes
    target: bytes


@dataclass(frozen=True, slots=True)
class Reacted:
    author: bytes
    target: bytes
    sender: bytes
    emoji: str
    remove: bool


@dataclass(frozen=True, slots=True)
class Chunk:
    sender: bytes
    file_id: bytes
    index: int
    data: bytes = field(repr=False)


ContentChange = Message | Edited | Deleted | Reacted | Chunk
HeldChange = Edited | Deleted | Chunk


def encode_held(change: HeldChange) -> bytes:
    """A change waiting for its message, as the store keeps it (msgpack)."""
    if isinstance(change, Edited):
        fields: list[object] = ["edit", change.body, change.at]
    elif isinstance(change, Deleted):
        fields = ["delete"]
    else:
        fields = ["chunk", change.index, change.data]
    packed: bytes = msgpack.packb([change.sender, _target(change), *fields], use_bin_type=True)
    return packed


def decode_held(raw: bytes) -> HeldChange:
    """The inverse of :func:`encode_held` (the store's own bytes, written by this code)."""
    sender, target, kind, *rest = msgpack.unpackb(raw, raw=False)
    if kind == "edit":
        return Edited(sender, target, rest[0], rest[1])
    if kind == "delete":
        return Deleted(sender, target)
    return Chunk(sender, target, rest[0], rest[1])


def _target(change: HeldChange) -> bytes:
    return change.file_id if isinstance(change, Chunk) else change.target


@dataclass(slots=True)
class Effects:
    """What processing one entry (or one own commit) does, applied in one transaction."""

    #: New messages and changes to messages, in the order they were received.
    content: list[ContentChange] = field(default_factory=list)
    names: dict[bytes, str] = field(default_factory=dict)
    events: list[ClientEvent] = field(default_factory=list)
    outbox: list[OutboxEntry] = field(default_factory=list)
    settings: dict[str, bytes | None] = field(default_factory=dict)
    members_changed: bool = False
    moved_to: RoomAccess | None = None
    #: The mailbox the room moved away from (set when the move is applied).
    moved_from: RoomAccess | None = None
    #: The effects of this member's own accepted commit.
    own_commit: bool = False
    removed: bool = False
    announce: bool = False
    commit_leaves: bool = False
    #: Refused commits read (each took one relay epoch).
    skipped_epochs: int = 0

    @property
    def structural(self) -> bool:
        """Whether these effects change membership, mailbox or rules (save before going on)."""
        return bool(
            self.members_changed
            or self.moved_to is not None
            or self.removed
            or self.announce
            or self.commit_leaves
            or self.settings
            or self.outbox
        )
