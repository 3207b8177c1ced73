"""The store's typed records (rooms, messages, members, outbox) and their row conversions.

Records are frozen value objects; secret-bearing fields are left out of ``repr``.
The repository over them (``Store``, ``StoreTransaction``) lives in ``repository.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "REF_BYTES",
    "Member",
    "Message",
    "OutboxEntry",
    "Room",
    "from_row",
    "fts_query",
    "message_ref",
]

R = TypeVar("R", "Room", "Message", "Member", "OutboxEntry")
# The relay accepts idempotency keys of 8 to 32 bytes (relay/protocol.py).
_KEY_LENGTHS = range(8, 33)
#: Length of a message's local reference (:func:`message_ref`).
REF_BYTES = 16
_REF_LABEL = b"backchannel/store message ref\x00"


def message_ref(sender_id: bytes, message_id: bytes) -> bytes:
    """The local reference of the message ``message_id`` sent by ``sender_id``.

    A message id is chosen by its sender, so two members can send the same one; a
    message is only ever the pair. The ref binds both (SHA-256 over the
    length-prefixed author and the id, cut to 16 bytes) and is what the store's
    lookups, the client's views and the UIs call a message's id.
    """
    author = len(sender_id).to_bytes(2, "big") + sender_id
    return hashlib.sha256(_REF_LABEL + author + message_id).digest()[:REF_BYTES]


@dataclass(frozen=True, slots=True)
class Room:
    """A dialogue room as this device keeps it.

    Attributes:
        room_id: the room's id (the MLS group id), opaque bytes.
        title: the room's title.
        created_at: when this device joined or created it (our clock).
        state: the serialized group and room state; opaque and secret.
        mailbox: relay mailbox ids and capabilities; opaque and secret.
        retention_seconds: messages older than this are erased; None keeps them.
        joined: False once we left or were removed.
        left_at: when we left.
    """

    room_id: bytes
    title: str
    created_at: float
    state: bytes | None = field(default=None, repr=False)
    mailbox: bytes | None = field(default=None, repr=False)
    retention_seconds: int | None = None
    joined: bool = True
    left_at: float | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a room's history.

    Attributes:
        room_id: the room it belongs to.
        message_id: sender-chosen id; unique per sender, not per room.
        sender_id: the sender's member id.
        sender_name: the sender's display name when it was sent.
        sent_at: the sender's timestamp (untrusted clock).
        received_at: when this device stored it.
        kind: content type, e.g. ``text``.
        body: the text; empty once deleted.
        reply_to: the id of the message it answers, if any.
        reply_author: that message's sender (set exactly when ``reply_to`` is).
        attachments: opaque attachment metadata.
        outgoing: written on this device.
        edited_at: time of the last edit, if any.
        deleted: deleted by its sender.
        delivered_seq: the relay sequence number once acknowledged (outgoing).
        local_id: this store's row id (set on messages read back; paging anchor).
    """

    room_id: bytes
    message_id: bytes
    sender_id: bytes
    sender_name: str
    sent_at: float
    received_at: float
    kind: str
    body: str = field(repr=False)
    reply_to: bytes | None = None
    attachments: bytes | None = field(default=None, repr=False)
    outgoing: bool = False
    edited_at: float | None = None
    deleted: bool = False
    delivered_seq: int | None = None
    local_id: int | None = None
    reply_author: bytes | None = None
    #: When the relay refused this outgoing message for good (it is no longer queued).
    refused_at: float | None = None

    def __post_init__(self) -> None:
        if (self.reply_to is None) != (self.reply_author is None):
            raise ValueError("reply_to and reply_author go together")

    @property
    def ref(self) -> bytes:
        """This message's local reference: :func:`message_ref` of its sender and id."""
        return message_ref(self.sender_id, self.message_id)

    @property
    def reply_ref(self) -> bytes | None:
        """The local reference of the message it answers, if any."""
        if self.reply_to is None or self.reply_author is None:
            return None
        return message_ref(self.reply_author, self.reply_to)


@dataclass(frozen=True, slots=True)
class Member:
    """A room member and what this device verified about them.

    Attributes:
        room_id: the room.
        member_id: the member's id.
        display_name: the name they go by.
        fingerprint: their current identity key fingerprint.
        role: facilitator, participant or observer.
        verified_fingerprint: the fingerprint the user compared, if ever.
        verified_at: when.
    """

    room_id: bytes
    member_id: bytes
    display_name: str
    fingerprint: bytes
    role: str
    verified_fingerprint: bytes | None = None
    verified_at: float | None = None

    @property
    def verified(self) -> bool:
        """Verified, and the key is still the one that was verified."""
        return self.verified_fingerprint is not None and hmac.compare_digest(
            self.verified_fingerprint, self.fingerprint
        )

    @property
    def key_changed(self) -> bool:
        """Verified once, but the key is now a different one: warn loudly."""
        return self.verified_fingerprint is not None and not self.verified


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A post waiting for the relay's acknowledgement.

    Attributes:
        idempotency_key: 8 to 32 bytes, sent with the post; the relay stores a retry once.
        mailbox_id: the mailbox to append to.
        payload: the ciphertext to post; secret-bearing.
        created_at: when it was queued.
        room_id: the room it belongs to, if any (erased with it).
        ref: the local message it carries, by :attr:`Message.ref` (marked delivered on ack).
        attempts: how many sends were tried.
        last_attempt_at: when the last one was.
    """

    idempotency_key: bytes
    mailbox_id: bytes
    payload: bytes = field(repr=False)
    created_at: float
    room_id: bytes | None = None
    ref: bytes | None = None
    attempts: int = 0
    last_attempt_at: float | None = None

    def __post_init__(self) -> None:
        if len(self.idempotency_key) not in _KEY_LENGTHS:
            raise ValueError("idempotency_key must be 8 to 32 bytes")


_RENAMED = {"id": "local_id"}
_FLAGS = frozenset({"joined", "outgoing", "deleted"})


def from_row(cls: type[R], row: Any) -> R:
    """Build a record from a ``SELECT *`` row by column name (unknown columns are ignored)."""
    names = cls.__dataclass_fields__
    values = {_RENAMED.get(k, k): row[k] for k in row.keys()}  # noqa: SIM118 (a Row, not a dict)
    kwargs = {k: v for k, v in values.items() if k in names}
    for flag in _FLAGS.intersection(kwargs):
        kwargs[flag] = bool(kwargs[flag])
    return cls(**kwargs)


def fts_query(text: str) -> str | None:
    """Turn what a person typed into a safe FTS5 query: all words, the last one as a prefix."""
    words = re.findall(r"\w+", text)
    if not words:
        return None
    # Each word is quoted (it holds no quote), so FTS5 operators in the input are inert.
    return " ".join(f'"{w}"' for w in words[:-1]) + f' "{words[-1]}"*'
