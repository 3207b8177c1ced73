"""The client's own local records, kept inside the encrypted store as versioned msgpack.

These hold what the façade needs besides the MLS state: where each room lives on
the relay and its commit in flight (:class:`RoomMeta`), the invites a facilitator
made (:class:`InviteEntry`), the join requests waiting for a decision
(:class:`RequestEntry`), the answers to them still in the outbox
(:class:`ReplyEntry`) and the joins this device is waiting on
(:class:`JoiningEntry`). They never leave the device; ``repr`` shows no secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from .errors import BackchannelError
from .rooms.access import RoomAccess
from .rooms.errors import RoomDecodeError

__all__ = [
    "REPLY_KINDS",
    "InviteEntry",
    "JoiningEntry",
    "RecordError",
    "ReplyEntry",
    "RequestEntry",
    "RoomMeta",
]

_VERSION: Final = 1


class RecordError(BackchannelError):
    """A local record is damaged."""


def _pack(obj: dict[str, Any]) -> bytes:
    data = msgpack.packb({"v": _VERSION, **obj}, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def _unpack(data: bytes, what: str) -> dict[str, Any]:
    try:
        m = msgpack.unpackb(data, raw=False)
    except Exception:  # msgpack raises several unrelated types
        raise RecordError(f"The stored {what} is damaged.") from None
    if not isinstance(m, dict) or m.get("v") != _VERSION:
        raise RecordError(f"The stored {what} has an unknown format.")
    return m


def _b(value: object) -> bytes:
    """A bytes field; anything else is a damaged record (never converted: an int
    would become a huge zero-filled buffer)."""
    if not isinstance(value, bytes):
        raise TypeError("not bytes")
    return value


def _s(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not str")
    return value


def _action(value: object) -> dict[str, Any] | None:
    """A pending commit's follow-up: None, or ``{"approve": request id}``."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"approve"}:
        raise TypeError("not an action")
    if "approve" in value:
        _b(value["approve"])
    return value


def _access(raw: bytes) -> RoomAccess:
    try:
        return RoomAccess.from_bytes(raw)
    except RoomDecodeError:
        raise RecordError("The stored room mailbox is damaged.") from None


@dataclass(frozen=True, slots=True)
class RoomMeta:
    """Where a room lives on the relay, and the own commit offered there, if any."""

    #: The current mailbox.
    access: RoomAccess = field(repr=False)
    #: Idempotency key of the pending commit (the commit itself is in the MLS state).
    pending_key: bytes | None = field(default=None, repr=False)
    #: What to do once the pending commit is accepted, e.g. ``{"approve": request id}``.
    pending_action: dict[str, Any] | None = field(default=None, repr=False)
    #: When this member last committed a fresh path (Unix seconds).
    last_update: float = 0.0
    #: Mailboxes the room used before (still read until their last commit).
    previous: tuple[bytes, ...] = ()

    def to_bytes(self) -> bytes:
        return _pack(
            {
                "access": self.access.to_bytes(),
                "pk": self.pending_key,
                "pa": self.pending_action,
                "upd": self.last_update,
                "prev": list(self.previous),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> RoomMeta:
        m = _unpack(data, "room record")
        try:
            return cls(
                _access(_b(m["access"])),
                None if m["pk"] is None else _b(m["pk"]),
                _action(m["pa"]),
                float(m["upd"]),
                tuple(_b(x) for x in m["prev"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError):
            raise RecordError("The stored room record is damaged.") from None


@dataclass(frozen=True, slots=True)
class InviteEntry:
    """An invite a facilitator made: its record, its room and its drop mailbox."""

    room_id: bytes
    #: :class:`~backchannel.rooms.invites.InviteRecord` bytes.
    record: bytes = field(repr=False)
    drop_mailbox: bytes = field(repr=False)
    #: Seeds of the drop's read and admin keys (the write seed is in the link).
    drop_read_seed: bytes = field(repr=False)
    drop_admin_seed: bytes = field(repr=False)
    drop_write_seed: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        return _pack(
            {
                "room": self.room_id,
                "rec": self.record,
                "drop": self.drop_mailbox,
                "r": self.drop_read_seed,
                "a": self.drop_admin_seed,
                "w": self.drop_write_seed,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> InviteEntry:
        m = _unpack(data, "invite")
        try:
            return cls(
                _b(m["room"]),
                _b(m["rec"]),
                _b(m["drop"]),
                _b(m["r"]),
                _b(m["a"]),
                _b(m["w"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError):
            raise RecordError("The stored invite is damaged.") from None


@dataclass(frozen=True, slots=True)
class RequestEntry:
    """A join request waiting for the facilitator's decision."""

    request_id: bytes
    room_id: bytes
    invite_id: bytes
    display_name: str
    key_package: bytes = field(repr=False)
    inbox: bytes = field(repr=False)
    inbox_write_seed: bytes = field(repr=False)
    received_at: float

    def to_bytes(self) -> bytes:
        return _pack(
            {
                "rid": self.request_id,
                "room": self.room_id,
                "inv": self.invite_id,
                "name": self.display_name,
                "kp": self.key_package,
                "inbox": self.inbox,
                "iw": self.inbox_write_seed,
                "at": self.received_at,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> RequestEntry:
        m = _unpack(data, "join request")
        try:
            return cls(
                _b(m["rid"]),
                _b(m["room"]),
                _b(m["inv"]),
                _s(m["name"]),
                _b(m["kp"]),
                _b(m["inbox"]),
                _b(m["iw"]),
                float(m["at"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError):
            raise RecordError("The stored join request is damaged.") from None


#: What an answer to a join request is: the Welcome of an approved joiner, a
#: facilitator's "no", or an automatic "no" (the invite expired, was used up, …).
REPLY_KINDS: Final = frozenset({"welcome", "deny", "auto"})


@dataclass(frozen=True, slots=True)
class ReplyEntry:
    """An answer to a join request waiting in the outbox, kept until the relay takes it
    or refuses it (then it says whether to retry and what to tell the facilitator)."""

    #: One of :data:`REPLY_KINDS`.
    kind: str
    #: The room the request was for.
    room_id: bytes

    def __post_init__(self) -> None:
        if self.kind not in REPLY_KINDS:
            raise ValueError("unknown reply kind")

    def to_bytes(self) -> bytes:
        return _pack({"kind": self.kind, "room": self.room_id})

    @classmethod
    def from_bytes(cls, data: bytes) -> ReplyEntry:
        m = _unpack(data, "join reply")
        try:
            return cls(_s(m["kind"]), _b(m["room"]))
        except (KeyError, TypeError, ValueError):
            raise RecordError("The stored join reply is damaged.") from None


@dataclass(frozen=True, slots=True)
class JoiningEntry:
    """A join this device asked for and is waiting on."""

    request_id: bytes
    invite_secret: bytes = field(repr=False)
    hint: str
    #: The KeyPackageBundle (private keys) the Welcome will be for.
    bundle: bytes = field(repr=False)
    inbox: bytes = field(repr=False)
    inbox_read_seed: bytes = field(repr=False)
    inbox_write_seed: bytes = field(repr=False)
    requested_at: float

    def to_bytes(self) -> bytes:
        return _pack(
            {
                "rid": self.request_id,
                "s": self.invite_secret,
                "hint": self.hint,
                "kp": self.bundle,
                "inbox": self.inbox,
                "r": self.inbox_read_seed,
                "w": self.inbox_write_seed,
                "at": self.requested_at,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> JoiningEntry:
        m = _unpack(data, "pending join")
        try:
            return cls(
                _b(m["rid"]),
                _b(m["s"]),
                _s(m["hint"]),
                _b(m["kp"]),
                _b(m["inbox"]),
                _b(m["r"]),
                _b(m["w"]),
                float(m["at"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError):
            raise RecordError("The stored pending join is damaged.") from None
