"""Invite links, sealed join requests, and the facilitator's bookkeeping of invites.

Theory of operation (docs/room-protocol.md §4): a facilitator creates a *drop*
mailbox on the relay and an invite. The link carries, all of it in the URL
fragment (which browsers never send to a server and web servers never log): the
relay URL, the drop's id and write-capability seed, a 32-byte invite secret and
an expiry time. From the secret, HKDF-SHA256 derives the invite id (16 bytes, the
only thing the relay sees of the secret) and the join-request key.

A joiner seals a :class:`JoinRequest` (its key package, display name, reply inbox
and that inbox's write capability) with ChaCha20-Poly1305 under the join-request
key, the invite id in the associated data, padded to a size bucket, and appends it
to the drop. The relay learns neither names nor key packages and cannot swap a key
package (the AEAD tag would fail). The facilitator opens requests with
:func:`open_join_request` and screens them with an :class:`InviteRecord`, which
enforces expiry, revocation, the use limit, and refuses replayed requests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final, NoReturn
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import (
    InviteExhausted,
    InviteExpired,
    InviteMalformed,
    InviteRevoked,
    InviteVersionUnsupported,
    JoinRequestInvalid,
    JoinRequestReplayed,
    PaddingError,
)
from .padding import check_bytes, check_int, check_text, packb, pad, unpack_map, unpad

__all__ = [
    "INVITE_VERSION",
    "JOIN_REQUEST_VERSION",
    "LINK_PREFIX",
    "MAX_PENDING_REQUESTS",
    "Invite",
    "InviteRecord",
    "JoinRequest",
    "create_invite",
    "derive_invite_id",
    "join_request_invite_id",
    "open_join_request",
    "parse_invite",
    "seal_join_request",
]

#: The ``v`` field of the link payload and of the invite record.
INVITE_VERSION: Final = 1
#: The ``v`` field of a join request (inner plaintext and outer envelope).
JOIN_REQUEST_VERSION: Final = 1
#: How links start. Everything after ``#`` is the payload.
LINK_PREFIX: Final = "backchannel://join#"
#: Invite secret length.
INVITE_SECRET_BYTES: Final = 32
#: Invite id length.
INVITE_ID_BYTES: Final = 16
#: Relay mailbox id length (docs/relay-protocol.md).
MAILBOX_ID_BYTES: Final = 16
#: Ed25519 private key seed length (a relay write capability).
CAPABILITY_SEED_BYTES: Final = 32
#: Longest link accepted, before whitespace is removed.
MAX_LINK_CHARS: Final = 4096
#: Longest relay URL, in bytes.
MAX_RELAY_URL_BYTES: Final = 512
#: Longest room hint in a link, in UTF-8 bytes.
MAX_HINT_BYTES: Final = 64
#: Longest display name in a join request, in UTF-8 bytes.
MAX_DISPLAY_NAME_BYTES: Final = 64
#: Largest key package in a join request.
MAX_KEY_PACKAGE_BYTES: Final = 16384
#: Largest use limit of an invite.
MAX_USES: Final = 1000
#: Most distinct requests an invite record remembers; after that the invite is exhausted.
MAX_SEEN_REQUESTS: Final = 4096
#: Most requests of one invite waiting for a decision at once; later ones are turned
#: away until some are answered (bounds what one link holder can park on the device).
MAX_PENDING_REQUESTS: Final = 64
_MAX_SECONDS: Final = 2**63 - 1
_MAX_BLOB_BYTES: Final = 1 << 18
_NONCE_BYTES: Final = 12

#: HKDF-SHA256 info labels (salt empty, IKM the invite secret).
INVITE_ID_LABEL: Final = b"backchannel/rooms/v1 invite id"
JOIN_KEY_LABEL: Final = b"backchannel/rooms/v1 join request key"
#: Associated data of a sealed join request: this label, then the invite id.
JOIN_AAD_LABEL: Final = b"backchannel/rooms/v1 join request\x00"

_PAYLOAD = re.compile(r"[A-Za-z0-9_-]+")
#: The one query a relay URL may carry: the admission token of a client's built-in
#: relay (``backchannel/embedded.py``), which admits new mailboxes only with it.
_ADMISSION_QUERY = re.compile(r"admit=[A-Za-z0-9_-]{16,128}")
_WEB_PREFIX = re.compile(r"https?://[^#]*", re.IGNORECASE)
_INVALID_REQUEST = "This join request could not be opened (wrong invite, tampered or malformed)."


def _hkdf(secret: bytes, info: bytes, length: int) -> bytes:
    check_bytes(secret, "invite secret", INVITE_SECRET_BYTES, INVITE_SECRET_BYTES)
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def derive_invite_id(secret: bytes) -> bytes:
    """The invite id of an invite secret: HKDF-SHA256(secret, info=INVITE_ID_LABEL), 16 bytes."""
    return _hkdf(secret, INVITE_ID_LABEL, INVITE_ID_BYTES)


def _join_key(secret: bytes) -> bytes:
    return _hkdf(secret, JOIN_KEY_LABEL, 32)


def _check_relay_url(url: str) -> None:
    check_text(url, "relay URL", 1, MAX_RELAY_URL_BYTES)
    if any(ch.isspace() for ch in url):
        raise ValueError("relay URL must not contain spaces")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        # urllib's messages may quote the input; ours name only the rule.
        raise ValueError("relay URL has a malformed host or port") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("relay URL must be a ws:// or wss:// URL with a host")
    if "@" in parts.netloc or parts.fragment or "#" in url:
        raise ValueError("relay URL must not carry credentials, a query or a fragment")
    if (parts.query or "?" in url) and not _ADMISSION_QUERY.fullmatch(parts.query):
        raise ValueError("relay URL must carry no query but an admission token (?admit=)")


@dataclass(frozen=True, slots=True)
class Invite:
    """What an invite link carries. Secrets are kept out of ``repr``."""

    #: The relay's WebSocket URL (``ws://`` or ``wss://``).
    relay_url: str
    #: The drop mailbox join requests go to.
    drop_mailbox: bytes
    #: Seed of the drop's Ed25519 write key, so joiners may append to it.
    drop_write_seed: bytes = field(repr=False)
    #: The invite secret.
    secret: bytes = field(repr=False)
    #: Expiry time, Unix seconds. Facilitators refuse requests received after it.
    expires_at: int
    #: A short hint shown to the joiner before joining (e.g. a room name); may be empty.
    hint: str = ""

    def __post_init__(self) -> None:
        _check_relay_url(self.relay_url)
        check_bytes(self.drop_mailbox, "drop_mailbox", MAILBOX_ID_BYTES, MAILBOX_ID_BYTES)
        check_bytes(
            self.drop_write_seed, "drop_write_seed", CAPABILITY_SEED_BYTES, CAPABILITY_SEED_BYTES
        )
        check_bytes(self.secret, "secret", INVITE_SECRET_BYTES, INVITE_SECRET_BYTES)
        check_int(self.expires_at, "expires_at", 0, _MAX_SECONDS)
        check_text(self.hint, "hint", 0, MAX_HINT_BYTES)

    def __repr__(self) -> str:
        return (
            f"Invite(relay_url={self.relay_url!r}, invite_id={self.invite_id.hex()}, "
            f"expires_at={self.expires_at}, secrets=<redacted>)"
        )

    @property
    def invite_id(self) -> bytes:
        """The invite id derived from the secret."""
        return derive_invite_id(self.secret)

    def to_link(self) -> str:
        """The link: :data:`LINK_PREFIX` then base64url (no padding) of the msgpack payload."""
        payload = {
            "v": INVITE_VERSION,
            "relay": self.relay_url,
            "drop": self.drop_mailbox,
            "dw": self.drop_write_seed,
            "s": self.secret,
            "exp": self.expires_at,
        }
        if self.hint:
            payload["hint"] = self.hint
        return LINK_PREFIX + base64.urlsafe_b64encode(packb(payload)).rstrip(b"=").decode("ascii")


def _malformed(message: str) -> NoReturn:
    raise InviteMalformed(f"This is not a valid Backchannel invite link: {message}.")


def parse_invite(text: str, *, now: float) -> Invite:
    """Read an invite link pasted by a person.

    Whitespace anywhere (line breaks from mail clients) and surrounding ``<>`` are
    ignored. Accepted forms: ``backchannel://join#P``, any ``https://…#P`` web
    form, and the bare payload ``P``.

    Args:
        text: the pasted text.
        now: the current time, Unix seconds, to fail fast on expired links.

    Raises:
        InviteMalformed: not a link, or a field is missing or invalid.
        InviteVersionUnsupported: made by a newer version of Backchannel.
        InviteExpired: the link's expiry time has passed.
    """
    if not isinstance(text, str):
        _malformed("it is not text")
    if len(text) > MAX_LINK_CHARS:
        _malformed("it is far too long")
    compact = "".join(text.split()).strip("<>")
    prefix, hash_sign, payload = compact.rpartition("#")
    payload = payload.rstrip("=")  # tolerate base64 padding some tools add
    if hash_sign and prefix.lower() != LINK_PREFIX[:-1] and not _WEB_PREFIX.fullmatch(prefix):
        _malformed("it does not start with backchannel://join#")
    if not _PAYLOAD.fullmatch(payload) or len(payload) % 4 == 1:
        _malformed("it is truncated or contains characters a link never has")
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        _malformed("it is truncated")
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != payload:
        _malformed("it is truncated")
    f = unpack_map(raw, lambda m: InviteMalformed(_fail_text(m)), "link", MAX_LINK_CHARS)
    version = f.get_int("v", 0, 2**64 - 1)
    if version != INVITE_VERSION:
        raise InviteVersionUnsupported(
            "This invite link was made by a newer version of Backchannel; update to use it."
        )
    hint = f.get_str("hint", 0, MAX_HINT_BYTES) if f.has("hint") else ""
    try:
        invite = Invite(
            f.get_str("relay", 1, MAX_RELAY_URL_BYTES),
            f.get_bytes("drop", MAILBOX_ID_BYTES, MAILBOX_ID_BYTES),
            f.get_bytes("dw", CAPABILITY_SEED_BYTES, CAPABILITY_SEED_BYTES),
            f.get_bytes("s", INVITE_SECRET_BYTES, INVITE_SECRET_BYTES),
            f.get_int("exp", 0, _MAX_SECONDS),
            hint,
        )
    except (TypeError, ValueError) as exc:
        _malformed(str(exc))
    if now >= invite.expires_at:
        raise InviteExpired("This invite link has expired; ask the facilitator for a new one.")
    return invite


def _fail_text(message: str) -> str:
    return f"This is not a valid Backchannel invite link: {message}."


def create_invite(
    *,
    relay_url: str,
    drop_mailbox: bytes,
    drop_write_seed: bytes,
    expires_at: int,
    max_uses: int = 1,
    hint: str = "",
    rng: Callable[[int], bytes] = os.urandom,
) -> tuple[Invite, InviteRecord]:
    """A new invite with a fresh secret, and the facilitator's record of it.

    The caller creates the drop mailbox first (one drop per invite makes revoking
    simple: rotate or expire the mailbox), keeps the record, and shares
    ``invite.to_link()``.
    """
    secret = rng(INVITE_SECRET_BYTES)
    invite = Invite(relay_url, drop_mailbox, drop_write_seed, secret, expires_at, hint)
    return invite, InviteRecord(secret, expires_at, max_uses)


# --- Join requests -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A joiner's request, as sealed for the facilitator. Private fields stay out of ``repr``."""

    #: Random 16-byte id; the facilitator refuses a second request with the same id.
    request_id: bytes
    #: The joiner's clock when it made the request, Unix milliseconds.
    created_at_ms: int
    #: The joiner's MLS KeyPackage (an MLSMessage), opaque here.
    key_package: bytes
    #: The name the joiner wants to be shown under (1 to 64 UTF-8 bytes).
    display_name: str = field(repr=False)
    #: The joiner's inbox mailbox on the same relay, where the Welcome goes.
    inbox: bytes = field(repr=False)
    #: Seed of the inbox's Ed25519 write key, so the facilitator can post the Welcome.
    inbox_write_seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_bytes(self.request_id, "request_id", 16, 16)
        check_int(self.created_at_ms, "created_at_ms", 0, _MAX_SECONDS)
        check_bytes(self.key_package, "key_package", 1, MAX_KEY_PACKAGE_BYTES)
        check_text(self.display_name, "display_name", 1, MAX_DISPLAY_NAME_BYTES)
        check_bytes(self.inbox, "inbox", MAILBOX_ID_BYTES, MAILBOX_ID_BYTES)
        check_bytes(
            self.inbox_write_seed, "inbox_write_seed", CAPABILITY_SEED_BYTES, CAPABILITY_SEED_BYTES
        )

    def __repr__(self) -> str:
        return f"JoinRequest(request_id={self.request_id.hex()}, created_at_ms={self.created_at_ms}, <private fields redacted>)"

    @property
    def key_package_digest(self) -> bytes:
        """SHA-256 of the key package (for replay detection)."""
        return hashlib.sha256(self.key_package).digest()


def seal_join_request(
    invite: Invite, request: JoinRequest, *, rng: Callable[[int], bytes] = os.urandom
) -> bytes:
    """The blob a joiner appends to the invite's drop mailbox."""
    inner = packb(
        {
            "v": JOIN_REQUEST_VERSION,
            "rid": request.request_id,
            "ts": request.created_at_ms,
            "kp": request.key_package,
            "name": request.display_name,
            "inbox": request.inbox,
            "iw": request.inbox_write_seed,
        }
    )
    invite_id = invite.invite_id
    nonce = rng(_NONCE_BYTES)
    check_bytes(nonce, "nonce", _NONCE_BYTES, _NONCE_BYTES)
    sealed = ChaCha20Poly1305(_join_key(invite.secret)).encrypt(
        nonce, pad(inner), JOIN_AAD_LABEL + invite_id
    )
    return packb({"v": JOIN_REQUEST_VERSION, "invite": invite_id, "nonce": nonce, "ct": sealed})


def _invalid(_message: str = "") -> JoinRequestInvalid:
    return JoinRequestInvalid(_INVALID_REQUEST)


def join_request_invite_id(blob: bytes) -> bytes:
    """The invite id a sealed request names, to find the invite's secret.

    Raises:
        JoinRequestInvalid: the blob is not a sealed join request.
    """
    f = unpack_map(blob, _invalid, "join request", _MAX_BLOB_BYTES)
    if f.get_int("v", 0, 2**64 - 1) != JOIN_REQUEST_VERSION:
        raise _invalid()
    return f.get_bytes("invite", INVITE_ID_BYTES, INVITE_ID_BYTES)


def open_join_request(invite_secret: bytes, blob: bytes) -> JoinRequest:
    """Open a sealed join request with the invite's secret.

    Raises:
        JoinRequestInvalid: on any failure (wrong invite, tampered, malformed), with
            one message whatever the cause. Nothing else, on any blob.
        ValueError: ``invite_secret`` is not 32 bytes (a caller bug).
    """
    key = _join_key(invite_secret)
    invite_id = derive_invite_id(invite_secret)
    f = unpack_map(blob, _invalid, "join request", _MAX_BLOB_BYTES)
    if f.get_int("v", 0, 2**64 - 1) != JOIN_REQUEST_VERSION:
        raise _invalid()
    if not hmac.compare_digest(f.get_bytes("invite", INVITE_ID_BYTES, INVITE_ID_BYTES), invite_id):
        raise _invalid()
    nonce = f.get_bytes("nonce", _NONCE_BYTES, _NONCE_BYTES)
    sealed = f.get_bytes("ct", 16, _MAX_BLOB_BYTES)
    try:
        inner = unpad(ChaCha20Poly1305(key).decrypt(nonce, sealed, JOIN_AAD_LABEL + invite_id))
    except (InvalidTag, PaddingError):
        raise _invalid() from None
    g = unpack_map(inner, _invalid, "join request", _MAX_BLOB_BYTES)
    if g.get_int("v", 0, 2**64 - 1) != JOIN_REQUEST_VERSION:
        raise _invalid()
    try:
        return JoinRequest(
            g.get_bytes("rid", 16, 16),
            g.get_int("ts", 0, _MAX_SECONDS),
            g.get_bytes("kp", 1, MAX_KEY_PACKAGE_BYTES),
            g.get_str("name", 1, MAX_DISPLAY_NAME_BYTES),
            g.get_bytes("inbox", MAILBOX_ID_BYTES, MAILBOX_ID_BYTES),
            g.get_bytes("iw", CAPABILITY_SEED_BYTES, CAPABILITY_SEED_BYTES),
        )
    except (TypeError, ValueError):
        raise _invalid() from None


# --- The facilitator's record of an invite -----------------------------------------------


@dataclass(frozen=True, slots=True)
class InviteRecord:
    """What the facilitator's client keeps about one invite (sans-IO; persist with ``to_bytes``).

    Each method returns a new record; the caller stores it before acting on the result.

    Uses are counted when the Add of an approved joiner commits, not before: the
    caller keeps that count next to the room state it commits with (``used``), and
    :meth:`admit` checks it, with the approvals still in flight (``reserved``), before
    an Add is built (docs/room-protocol.md §4.5).
    """

    #: The invite secret.
    secret: bytes = field(repr=False)
    #: Expiry time, Unix seconds.
    expires_at: int
    #: How many joiners may be approved (1 for a single-use invite).
    max_uses: int = 1
    #: How many have been approved.
    uses: int = 0
    #: True once the facilitator revoked the invite.
    revoked: bool = False
    #: Request ids already received.
    seen_requests: frozenset[bytes] = field(default=frozenset(), repr=False)
    #: SHA-256 digests of key packages already received.
    seen_key_packages: frozenset[bytes] = field(default=frozenset(), repr=False)

    def __post_init__(self) -> None:
        check_bytes(self.secret, "secret", INVITE_SECRET_BYTES, INVITE_SECRET_BYTES)
        check_int(self.expires_at, "expires_at", 0, _MAX_SECONDS)
        check_int(self.max_uses, "max_uses", 1, MAX_USES)
        check_int(self.uses, "uses", 0, self.max_uses)
        if not isinstance(self.revoked, bool):
            raise TypeError("revoked must be a bool")
        for name, ids, size in (
            ("seen_requests", self.seen_requests, 16),
            ("seen_key_packages", self.seen_key_packages, 32),
        ):
            if not isinstance(ids, frozenset) or len(ids) > MAX_SEEN_REQUESTS:
                raise ValueError(f"{name} must be a frozenset of at most {MAX_SEEN_REQUESTS}")
            for item in ids:
                check_bytes(item, name, size, size)

    def __repr__(self) -> str:
        return (
            f"InviteRecord(invite_id={self.invite_id.hex()}, expires_at={self.expires_at}, "
            f"uses={self.uses}/{self.max_uses}, revoked={self.revoked})"
        )

    @property
    def invite_id(self) -> bytes:
        """The invite id derived from the secret."""
        return derive_invite_id(self.secret)

    def screen(
        self, request: JoinRequest, *, now: float, used: int = 0, pending: int = 0
    ) -> InviteRecord:
        """Check a newly received request and remember it.

        Args:
            request: the opened request.
            now: the facilitator's clock, Unix seconds.
            used: joiners admitted and counted outside this record (their Adds committed).
            pending: requests of this invite already waiting for a decision.

        Returns:
            The record with the request noted as seen.

        Raises:
            InviteRevoked, JoinRequestReplayed, InviteExpired, InviteExhausted: in
            this order of precedence (exhausted: used up, 4096 requests seen, or
            :data:`MAX_PENDING_REQUESTS` waiting).
        """
        if self.revoked:
            raise InviteRevoked("This invite was revoked; the request is turned away.")
        digest = request.key_package_digest
        if request.request_id in self.seen_requests or digest in self.seen_key_packages:
            raise JoinRequestReplayed(
                "This join request was already received; the copy is ignored."
            )
        if now >= self.expires_at:
            raise InviteExpired("The request came after the invite expired; send a new invite.")
        if self.uses + used >= self.max_uses or len(self.seen_requests) >= MAX_SEEN_REQUESTS:
            raise InviteExhausted("This invite has been used up; send a new invite.")
        if pending >= MAX_PENDING_REQUESTS:
            raise InviteExhausted(
                "Too many requests on this invite are waiting for a decision; this one is "
                "turned away."
            )
        return replace(
            self,
            seen_requests=self.seen_requests | {request.request_id},
            seen_key_packages=self.seen_key_packages | {digest},
        )

    def admit(self, *, used: int = 0, reserved: int = 0) -> None:
        """Check that one more joiner may be admitted, before the Add is built.

        Args:
            used: joiners admitted and counted outside this record (their Adds committed).
            reserved: approvals of this invite in flight (Adds built, not yet committed).

        Raises:
            InviteRevoked: the invite was revoked meanwhile.
            InviteExhausted: the use limit is reached.
        """
        if self.revoked:
            raise InviteRevoked("This invite was revoked; the request is turned away.")
        if self.uses + used + reserved >= self.max_uses:
            raise InviteExhausted("This invite has been used up; send a new invite.")

    def approve(self) -> InviteRecord:
        """Count one approved joiner in this record (checked as :meth:`admit` does).

        Raises:
            InviteRevoked: the invite was revoked meanwhile.
            InviteExhausted: the use limit is reached.
        """
        self.admit()
        return replace(self, uses=self.uses + 1)

    def revoke(self) -> InviteRecord:
        """The record, revoked."""
        return replace(self, revoked=True)

    def to_bytes(self) -> bytes:
        """msgpack encoding for the local store (which encrypts it at rest)."""
        return packb(
            {
                "v": INVITE_VERSION,
                "s": self.secret,
                "exp": self.expires_at,
                "max": self.max_uses,
                "uses": self.uses,
                "revoked": self.revoked,
                "rids": sorted(self.seen_requests),
                "kps": sorted(self.seen_key_packages),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> InviteRecord:
        """Decode :meth:`to_bytes` output.

        Raises:
            InviteMalformed: the bytes are not an invite record. Nothing else.
        """
        f = unpack_map(data, InviteMalformed, "invite record", 1 << 20)
        if f.get_int("v", 0, 2**64 - 1) != INVITE_VERSION:
            f.fail("unsupported version")
        sets: list[frozenset[bytes]] = []
        for key, size in (("rids", 16), ("kps", 32)):
            items = f.raw(key)
            if not isinstance(items, list) or len(items) > MAX_SEEN_REQUESTS:
                f.fail(f"field '{key}' must be a list")
            sets.append(frozenset(f.check_bytes(item, key, size, size) for item in items))
        try:
            return cls(
                f.get_bytes("s", INVITE_SECRET_BYTES, INVITE_SECRET_BYTES),
                f.get_int("exp", 0, _MAX_SECONDS),
                f.get_int("max", 1, MAX_USES),
                f.get_int("uses", 0, MAX_USES),
                f.get_bool("revoked"),
                sets[0],
                sets[1],
            )
        except (TypeError, ValueError) as exc:
            f.fail(str(exc))
