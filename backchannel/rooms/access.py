"""Where a room lives on the relay, and the sealed answer a facilitator sends a joiner.

Theory of operation (docs/room-protocol.md §11): a room's traffic goes to one relay
mailbox at a time. Its id and its three capability seeds (read, write, admin) are
derived from the MLS exporter of the epoch in which the mailbox was opened
(:func:`derive_access`), so every member of that epoch computes the same
:class:`RoomAccess` and nobody else can. The room opens a new mailbox whenever a
member leaves or is removed: the removed member cannot compute the new exporter, so
it can neither read the new mailbox through the relay nor post to it.

Every blob of the room is sealed once more for its mailbox (:func:`seal_room_blob`):
ChaCha20-Poly1305 under the mailbox's *wrap key*, also from the exporter. The relay
then sees neither the MLS group id, nor the epoch, nor the content type of a
message, so it cannot link the room across a move, and it cannot alter any cleartext
MLS header field (the fork check in §13 included) without the blob failing to open.

A joiner cannot derive the access of an epoch before its own, so the facilitator
sends it, with the Welcome, in a :class:`JoinReply` appended to the joiner's inbox.
The reply is sealed with ChaCha20-Poly1305 under a key derived from the invite
secret *and* the joiner's inbox write seed (which only the joiner and the
facilitator know): the relay cannot open it, and neither can another holder of a
multi-use link.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import JoinRequestInvalid, PaddingError, RoomDecodeError
from .padding import check_bytes, check_int, packb, pad, unpack_map, unpad

__all__ = [
    "ACCESS_VERSION",
    "MAILBOX_EXPORTER_LABEL",
    "JoinReply",
    "RoomAccess",
    "derive_access",
    "open_join_reply",
    "open_room_blob",
    "seal_join_reply",
    "seal_room_blob",
]

#: The ``v`` field of an access record and of a join reply.
ACCESS_VERSION: Final = 1
#: MLS exporter label for a room mailbox (context empty, 144 bytes).
MAILBOX_EXPORTER_LABEL: Final = "backchannel/rooms/v1 mailbox"
#: HKDF-SHA256 info label of the join reply key (salt empty, IKM secret || inbox seed).
REPLY_KEY_LABEL: Final = b"backchannel/rooms/v1 join reply key"
#: Associated data of a sealed join reply: this label, then the request id.
REPLY_AAD_LABEL: Final = b"backchannel/rooms/v1 join reply\x00"
_MAILBOX_BYTES: Final = 16
_SEED_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_MAX_EPOCH: Final = 2**63 - 1
_MAX_WELCOME_BYTES: Final = 1 << 17
_MAX_REPLY_BYTES: Final = 1 << 18
#: Associated data of a sealed room blob: this label, then the mailbox id.
ROOM_BLOB_AAD_LABEL: Final = b"backchannel/rooms/v1 room blob\x00"
#: Label of the deterministic nonce of a sealed room blob (hash of the contents).
ROOM_BLOB_NONCE_LABEL: Final = b"backchannel/rooms/v1 room blob nonce\x00"
_INVALID_REPLY = "The answer to this join request could not be opened (tampered or malformed)."


@dataclass(frozen=True, slots=True)
class RoomAccess:
    """A room mailbox: its id, capability seeds, and the MLS epoch it was opened at."""

    #: The relay mailbox id (16 bytes).
    mailbox: bytes
    #: Ed25519 seed of the read key.
    read_seed: bytes = field(repr=False)
    #: Ed25519 seed of the write key.
    write_seed: bytes = field(repr=False)
    #: Ed25519 seed of the admin key.
    admin_seed: bytes = field(repr=False)
    #: The MLS epoch at which the mailbox's relay epoch counter was 0.
    base_epoch: int
    #: ChaCha20-Poly1305 key that seals every blob of this mailbox.
    wrap_key: bytes = field(repr=False)
    #: Relay epochs taken by commits that every member refused (a hostile member's
    #: well-formed but forbidden commit still wins the relay's compare-and-set).
    skipped: int = 0

    def __post_init__(self) -> None:
        check_bytes(self.mailbox, "mailbox", _MAILBOX_BYTES, _MAILBOX_BYTES)
        for name in ("read_seed", "write_seed", "admin_seed", "wrap_key"):
            check_bytes(getattr(self, name), name, _SEED_BYTES, _SEED_BYTES)
        check_int(self.base_epoch, "base_epoch", 0, _MAX_EPOCH)
        check_int(self.skipped, "skipped", 0, _MAX_EPOCH)

    def relay_epoch(self, mls_epoch: int) -> int:
        """The relay epoch a commit made in ``mls_epoch`` must name:
        ``mls_epoch - base_epoch + skipped``."""
        if mls_epoch < self.base_epoch:
            raise ValueError("the MLS epoch is older than this mailbox")
        return mls_epoch - self.base_epoch + self.skipped

    def to_wire(self) -> dict[str, object]:
        """The msgpack map (inside an encrypted record or a sealed reply)."""
        return {
            "v": ACCESS_VERSION,
            "mb": self.mailbox,
            "r": self.read_seed,
            "w": self.write_seed,
            "a": self.admin_seed,
            "base": self.base_epoch,
            "k": self.wrap_key,
            "skip": self.skipped,
        }

    def to_bytes(self) -> bytes:
        """msgpack encoding for the local (encrypted) store."""
        return packb(self.to_wire())

    @classmethod
    def from_bytes(cls, data: bytes) -> RoomAccess:
        """Decode :meth:`to_bytes` output.

        Raises:
            RoomDecodeError: the bytes are not an access record.
        """
        f = unpack_map(data, RoomDecodeError, "room access", 4096)
        if f.get_int("v", 0, 2**64 - 1) != ACCESS_VERSION:
            f.fail("unsupported version")
        return cls(
            f.get_bytes("mb", _MAILBOX_BYTES, _MAILBOX_BYTES),
            f.get_bytes("r", _SEED_BYTES, _SEED_BYTES),
            f.get_bytes("w", _SEED_BYTES, _SEED_BYTES),
            f.get_bytes("a", _SEED_BYTES, _SEED_BYTES),
            f.get_int("base", 0, _MAX_EPOCH),
            f.get_bytes("k", _SEED_BYTES, _SEED_BYTES),
            f.get_int("skip", 0, _MAX_EPOCH),
        )


def derive_access(exporter: Callable[[str, bytes, int], bytes], epoch: int) -> RoomAccess:
    """The mailbox of the epoch whose exporter is ``exporter`` (e.g. ``Room.export_secret``)."""
    material = exporter(MAILBOX_EXPORTER_LABEL, b"", _MAILBOX_BYTES + 4 * _SEED_BYTES)
    m = _MAILBOX_BYTES
    return RoomAccess(
        material[:m],
        material[m : m + 32],
        material[m + 32 : m + 64],
        material[m + 64 : m + 96],
        epoch,
        material[m + 96 : m + 128],
    )


def seal_room_blob(access: RoomAccess, data: bytes) -> bytes:
    """``data`` (an MLSMessage) sealed for ``access``'s mailbox: nonce || ciphertext.

    The nonce is derived from the contents, so sealing the same message twice gives
    the same blob (a commit offered again after a crash is byte-identical), and two
    different messages never share a nonce except with negligible probability.
    """
    digest = hashlib.sha256(ROOM_BLOB_NONCE_LABEL + access.wrap_key + data).digest()
    nonce = digest[:_NONCE_BYTES]
    sealed = ChaCha20Poly1305(access.wrap_key).encrypt(
        nonce, data, ROOM_BLOB_AAD_LABEL + access.mailbox
    )
    return nonce + sealed


def open_room_blob(access: RoomAccess, blob: bytes) -> bytes:
    """The MLSMessage inside a blob of ``access``'s mailbox.

    Raises:
        RoomDecodeError: the blob was not sealed for this mailbox, or was altered.
    """
    if len(blob) < _NONCE_BYTES + 16:
        raise RoomDecodeError("room blob: too short")
    try:
        return ChaCha20Poly1305(access.wrap_key).decrypt(
            blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], ROOM_BLOB_AAD_LABEL + access.mailbox
        )
    except InvalidTag:
        raise RoomDecodeError("room blob: not sealed for this mailbox") from None


@dataclass(frozen=True, slots=True)
class JoinReply:
    """The facilitator's answer to one join request."""

    #: True if approved; then ``welcome`` and ``access`` are set.
    approved: bool
    #: The MLS Welcome.
    welcome: bytes | None = field(default=None, repr=False)
    #: The room mailbox the joiner reads from.
    access: RoomAccess | None = field(default=None, repr=False)
    #: The relay sequence number of the commit that added the joiner: read after it.
    after: int = 0

    def __post_init__(self) -> None:
        if self.approved != (self.welcome is not None and self.access is not None):
            raise ValueError("an approval carries a welcome and an access; a denial neither")
        if self.welcome is not None:
            check_bytes(self.welcome, "welcome", 1, _MAX_WELCOME_BYTES)
        check_int(self.after, "after", 0, _MAX_EPOCH)


def _reply_key(invite_secret: bytes, inbox_write_seed: bytes) -> bytes:
    check_bytes(invite_secret, "invite_secret", 32, 32)
    check_bytes(inbox_write_seed, "inbox_write_seed", _SEED_BYTES, _SEED_BYTES)
    hkdf = HKDF(hashes.SHA256(), 32, salt=None, info=REPLY_KEY_LABEL)
    return hkdf.derive(invite_secret + inbox_write_seed)


def seal_join_reply(
    invite_secret: bytes,
    inbox_write_seed: bytes,
    request_id: bytes,
    reply: JoinReply,
    *,
    rng: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """The blob the facilitator appends to the joiner's inbox."""
    check_bytes(request_id, "request_id", 16, 16)
    inner: dict[str, object] = {"v": ACCESS_VERSION, "ok": reply.approved, "after": reply.after}
    if reply.welcome is not None and reply.access is not None:
        inner["welcome"] = reply.welcome
        inner["access"] = reply.access.to_wire()
    nonce = rng(_NONCE_BYTES)
    sealed = ChaCha20Poly1305(_reply_key(invite_secret, inbox_write_seed)).encrypt(
        nonce, pad(packb(inner)), REPLY_AAD_LABEL + request_id
    )
    return packb({"v": ACCESS_VERSION, "nonce": nonce, "ct": sealed})


def _invalid(_message: str = "") -> JoinRequestInvalid:
    return JoinRequestInvalid(_INVALID_REPLY)


def open_join_reply(
    invite_secret: bytes, inbox_write_seed: bytes, request_id: bytes, blob: bytes
) -> JoinReply:
    """Open a reply sealed by :func:`seal_join_reply`.

    Raises:
        JoinRequestInvalid: on any failure, with one message. Nothing else, on any blob.
    """
    key = _reply_key(invite_secret, inbox_write_seed)
    f = unpack_map(blob, _invalid, "join reply", _MAX_REPLY_BYTES)
    if f.get_int("v", 0, 2**64 - 1) != ACCESS_VERSION:
        raise _invalid()
    nonce = f.get_bytes("nonce", _NONCE_BYTES, _NONCE_BYTES)
    sealed = f.get_bytes("ct", 16, _MAX_REPLY_BYTES)
    try:
        inner = unpad(ChaCha20Poly1305(key).decrypt(nonce, sealed, REPLY_AAD_LABEL + request_id))
    except (InvalidTag, PaddingError):
        raise _invalid() from None
    g = unpack_map(inner, _invalid, "join reply", _MAX_REPLY_BYTES)
    if g.get_int("v", 0, 2**64 - 1) != ACCESS_VERSION:
        raise _invalid()
    approved = g.get_bool("ok")
    after = g.get_int("after", 0, _MAX_EPOCH)
    if not approved:
        return JoinReply(False, after=after)
    welcome = g.get_bytes("welcome", 1, _MAX_WELCOME_BYTES)
    raw = g.raw("access")
    if not isinstance(raw, dict):
        raise _invalid()
    try:
        access = RoomAccess.from_bytes(packb(raw))
    except (RoomDecodeError, TypeError, ValueError):
        raise _invalid() from None
    return JoinReply(True, welcome, access, after)
