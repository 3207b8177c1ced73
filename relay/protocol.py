"""Relay wire frames: msgpack maps with a version field, their validation and encoding.

Theory of operation: every WebSocket message is one binary frame holding one msgpack
map. ``v`` is the protocol version and ``t`` the frame type. A client sends ``req``
frames, each with an ``id`` of its choice and an ``op``; the relay answers each with
``ok`` or ``err`` carrying the same ``id``, and sends ``hello`` first, ``push`` for
subscribed entries and ``revoked`` when a key rotation cut a connection off a mailbox.
The full description, precise enough to write a client from, is in
``docs/relay-protocol.md``.

This module is shared: the relay decodes requests and encodes answers with it, and
the client (``backchannel.transport``) does the reverse. Decoding raises
:class:`~relay.errors.ProtocolViolation` subclasses and nothing else, on any input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgpack

from . import PROTOCOL_VERSION
from .errors import BadFrame, FieldInvalid, ProtocolViolation, UnknownOp, UnsupportedVersion

__all__ = [
    "ID_MAX",
    "KEY_BYTES",
    "MAILBOX_ID_BYTES",
    "NONCE_BYTES",
    "SIGNATURE_BYTES",
    "Append",
    "Auth",
    "Create",
    "Entry",
    "ErrFrame",
    "Fetch",
    "Hello",
    "OkFrame",
    "Ping",
    "Push",
    "Request",
    "Revoked",
    "Rotate",
    "ServerFrame",
    "Subscribe",
    "Trim",
    "Unsubscribe",
    "auth_message",
    "decode_request",
    "decode_server_frame",
    "encode",
    "encode_request",
    "rotate_message",
]

MAILBOX_ID_BYTES: Final = 16
KEY_BYTES: Final = 32  # Ed25519 public key
SIGNATURE_BYTES: Final = 64  # Ed25519 signature
NONCE_BYTES: Final = 32
IDEMPOTENCY_KEY_MIN: Final = 8
IDEMPOTENCY_KEY_MAX: Final = 32
ID_MAX: Final = 2**32 - 1
#: Largest sequence number, epoch or cursor: both stores keep them as signed 64-bit integers.
U64_MAX: Final = 2**63 - 1

Role = Literal["read", "write"]
ROLES: Final = ("read", "write")

_AUTH_CONTEXT: Final = b"backchannel-relay/1 auth\x00"
_ROTATE_CONTEXT: Final = b"backchannel-relay/1 rotate\x00"
_ROLE_BYTE: Final = {"read": b"r", "write": b"w"}


def auth_message(nonce: bytes, role: Role, mailbox: bytes) -> bytes:
    """The bytes a client signs to prove it holds ``role``'s key for ``mailbox``.

    The connection's nonce binds the signature to one connection, so a captured
    signature is worthless anywhere else. Every part has a fixed length, so the
    concatenation is unambiguous.
    """
    return _AUTH_CONTEXT + nonce + _ROLE_BYTE[role] + mailbox


def rotate_message(
    nonce: bytes, mailbox: bytes, read_key: bytes, write_key: bytes, admin_key: bytes
) -> bytes:
    """The bytes the current admin key signs to replace a mailbox's capability keys."""
    return _ROTATE_CONTEXT + nonce + mailbox + read_key + write_key + admin_key


# -- requests -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Create:
    """Create a mailbox with its public capability keys."""

    id: int
    mailbox: bytes
    read_key: bytes
    write_key: bytes
    #: Key that may rotate the others; defaults to ``write_key`` when absent.
    admin_key: bytes | None = None
    #: Seconds an entry lives, and how long the mailbox lives unused; server default if None.
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class Auth:
    """Prove possession of a mailbox key by signing :func:`auth_message`."""

    id: int
    mailbox: bytes
    role: Role
    sig: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Entry:
    """One blob to write: the main entry of an append, or one of its ``also`` entries."""

    mailbox: bytes
    blob: bytes = field(repr=False)
    #: Client idempotency key: a retry with the same key is stored once.
    key: bytes | None = None
    #: Seconds this entry lives (at most the mailbox's TTL); the mailbox's TTL if None.
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class Append:
    """Append ``entry``; with ``epoch``, only while the mailbox is at that epoch."""

    id: int
    entry: Entry
    epoch: int | None = None
    #: Entries for other mailboxes written in the same transaction (Welcomes).
    also: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class Fetch:
    """Read entries with a sequence number above ``after``, one page at a time."""

    id: int
    mailbox: bytes
    after: int
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Push every entry above ``after``: the backlog, then live appends."""

    id: int
    mailbox: bytes
    after: int


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: int
    mailbox: bytes


@dataclass(frozen=True, slots=True)
class Trim:
    """Delete the mailbox's entries up to and including ``through``."""

    id: int
    mailbox: bytes
    through: int


@dataclass(frozen=True, slots=True)
class Rotate:
    """Replace the mailbox's keys; ``sig`` is by the current admin key over
    :func:`rotate_message`."""

    id: int
    mailbox: bytes
    read_key: bytes
    write_key: bytes
    admin_key: bytes | None
    sig: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Ping:
    id: int


Request = Create | Auth | Append | Fetch | Subscribe | Unsubscribe | Trim | Rotate | Ping

# -- field readers --------------------------------------------------------------------------


def _missing(name: str) -> FieldInvalid:
    return FieldInvalid(f"The field '{name}' is required.")


def _bytes(
    m: Mapping[str, Any], name: str, size: int | None = None, *, lo: int = 0, hi: int = 0
) -> bytes:
    value = m.get(name)
    if value is None:
        raise _missing(name)
    if not isinstance(value, bytes):
        raise FieldInvalid(f"The field '{name}' must be binary.")
    if size is not None and len(value) != size:
        raise FieldInvalid(f"The field '{name}' must be {size} bytes.")
    if size is None and not lo <= len(value) <= hi:
        raise FieldInvalid(f"The field '{name}' must be {lo} to {hi} bytes.")
    return value


def _opt_bytes(
    m: Mapping[str, Any], name: str, size: int | None = None, *, lo: int = 0, hi: int = 0
) -> bytes | None:
    return None if m.get(name) is None else _bytes(m, name, size, lo=lo, hi=hi)


def _uint(m: Mapping[str, Any], name: str, hi: int = U64_MAX, lo: int = 0) -> int:
    value = m.get(name)
    if value is None:
        raise _missing(name)
    # bool is an int subclass; a msgpack true is not a number.
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise FieldInvalid(f"The field '{name}' must be an integer from {lo} to {hi}.")
    return value


def _opt_uint(m: Mapping[str, Any], name: str, hi: int = U64_MAX, lo: int = 0) -> int | None:
    return None if m.get(name) is None else _uint(m, name, hi, lo)


def _mailbox(m: Mapping[str, Any], name: str = "mailbox") -> bytes:
    return _bytes(m, name, MAILBOX_ID_BYTES)


def _entry(m: Mapping[str, Any]) -> Entry:
    return Entry(
        mailbox=_mailbox(m),
        blob=_bytes(m, "blob", lo=0, hi=2**32),
        key=_opt_bytes(m, "key", lo=IDEMPOTENCY_KEY_MIN, hi=IDEMPOTENCY_KEY_MAX),
        ttl=_opt_uint(m, "ttl", hi=2**32, lo=1),
    )


def _role(m: Mapping[str, Any]) -> Role:
    value = m.get("role")
    if value == "read":
        return "read"
    if value == "write":
        return "write"
    raise FieldInvalid("The field 'role' must be 'read' or 'write'.")


def _also(m: Mapping[str, Any]) -> tuple[Entry, ...]:
    value = m.get("also")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise FieldInvalid("The field 'also' must be a list of entry maps.")
    return tuple(_entry(e) for e in value)


_DECODERS: Final[dict[str, Callable[[int, Mapping[str, Any]], Request]]] = {
    "create": lambda i, m: Create(
        i,
        _mailbox(m),
        _bytes(m, "read_key", KEY_BYTES),
        _bytes(m, "write_key", KEY_BYTES),
        _opt_bytes(m, "admin_key", KEY_BYTES),
        _opt_uint(m, "ttl", hi=2**32, lo=1),
    ),
    "auth": lambda i, m: Auth(i, _mailbox(m), _role(m), _bytes(m, "sig", SIGNATURE_BYTES)),
    "append": lambda i, m: Append(i, _entry(m), _opt_uint(m, "epoch"), _also(m)),
    "fetch": lambda i, m: Fetch(
        i, _mailbox(m), _uint(m, "after"), _opt_uint(m, "limit", lo=1, hi=ID_MAX)
    ),
    "subscribe": lambda i, m: Subscribe(i, _mailbox(m), _uint(m, "after")),
    "unsubscribe": lambda i, m: Unsubscribe(i, _mailbox(m)),
    "trim": lambda i, m: Trim(i, _mailbox(m), _uint(m, "through")),
    "rotate": lambda i, m: Rotate(
        i,
        _mailbox(m),
        _bytes(m, "read_key", KEY_BYTES),
        _bytes(m, "write_key", KEY_BYTES),
        _opt_bytes(m, "admin_key", KEY_BYTES),
        _bytes(m, "sig", SIGNATURE_BYTES),
    ),
    "ping": lambda i, m: Ping(i),
}

#: The operations of this protocol version, in documentation order.
OPS: Final = tuple(_DECODERS)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError("extension types are not part of the protocol")


def _unpack_map(data: bytes, max_bytes: int) -> dict[str, Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadFrame("Frames must be binary msgpack, not text.")
    try:
        # Length caps keep a hostile frame from making the decoder allocate more than
        # the frame itself; no extension types are part of the protocol.
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=max_bytes,
            max_str_len=max_bytes,
            max_array_len=max_bytes,
            max_map_len=max_bytes,
            max_ext_len=0,
            ext_hook=_refuse_ext,  # max_ext_len=0 still lets an empty extension through
        )
    except Exception as exc:  # msgpack raises many types; all mean "not a frame"
        raise BadFrame("The frame is not valid msgpack.") from exc
    if not isinstance(value, dict):
        raise BadFrame("A frame must be a msgpack map.")
    return value


def _check_version(m: Mapping[str, Any]) -> None:
    version = m.get("v")
    # Exactly the integer: True and 1.0 compare equal to 1 but are not version numbers.
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise UnsupportedVersion(
            f"This relay speaks protocol version {PROTOCOL_VERSION}; the frame says {version!r}."
            if isinstance(version, int) and not isinstance(version, bool)
            else None
        )


def request_id_of(data: bytes) -> int | None:
    """Best-effort request id of a frame that failed to decode, for the ``err`` answer."""
    try:
        m = _unpack_map(data, len(data))
    except ProtocolViolation:
        return None
    rid = m.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid <= ID_MAX:
        return rid
    return None


def decode_request(data: bytes, *, max_bytes: int | None = None) -> Request:
    """Decode and validate one client frame.

    Args:
        data: the binary WebSocket message.
        max_bytes: the largest frame accepted (caps every length inside it).

    Returns:
        One of the request dataclasses.

    Raises:
        ProtocolViolation: (a subclass of it) for any malformed, unknown or invalid frame.
    """
    m = _unpack_map(data, max_bytes if max_bytes is not None else len(data))
    _check_version(m)
    if m.get("t") != "req":
        raise BadFrame("Clients send frames of type 'req' only.")
    request_id = _uint(m, "id", hi=ID_MAX)
    op = m.get("op")
    if not isinstance(op, str):
        raise FieldInvalid("The field 'op' must be a string.")
    decoder = _DECODERS.get(op)
    if decoder is None:
        raise UnknownOp(f"Unknown operation {op[:32]!r}; this relay knows {', '.join(OPS)}.")
    return decoder(request_id, m)


def encode(frame: Mapping[str, Any]) -> bytes:
    """Pack a frame map (adding the version field) into msgpack bytes."""
    packed: bytes = msgpack.packb({"v": PROTOCOL_VERSION, **frame}, use_bin_type=True)
    return packed


def _entry_map(e: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {"mailbox": e.mailbox, "blob": e.blob}
    if e.key is not None:
        out["key"] = e.key
    if e.ttl is not None:
        out["ttl"] = e.ttl
    return out


def encode_request(request: Request) -> bytes:
    """Encode a request dataclass as a client frame (the inverse of :func:`decode_request`)."""
    body: dict[str, Any] = {"t": "req", "id": request.id}
    match request:
        case Create():
            body |= {
                "op": "create",
                "mailbox": request.mailbox,
                "read_key": request.read_key,
                "write_key": request.write_key,
            }
            if request.admin_key is not None:
                body["admin_key"] = request.admin_key
            if request.ttl is not None:
                body["ttl"] = request.ttl
        case Auth():
            body |= {
                "op": "auth",
                "mailbox": request.mailbox,
                "role": request.role,
                "sig": request.sig,
            }
        case Append():
            body |= {"op": "append", **_entry_map(request.entry)}
            if request.epoch is not None:
                body["epoch"] = request.epoch
            if request.also:
                body["also"] = [_entry_map(e) for e in request.also]
        case Fetch():
            body |= {"op": "fetch", "mailbox": request.mailbox, "after": request.after}
            if request.limit is not None:
                body["limit"] = request.limit
        case Subscribe():
            body |= {"op": "subscribe", "mailbox": request.mailbox, "after": request.after}
        case Unsubscribe():
            body |= {"op": "unsubscribe", "mailbox": request.mailbox}
        case Trim():
            body |= {"op": "trim", "mailbox": request.mailbox, "through": request.through}
        case Rotate():
            body |= {
                "op": "rotate",
                "mailbox": request.mailbox,
                "read_key": request.read_key,
                "write_key": request.write_key,
                "sig": request.sig,
            }
            if request.admin_key is not None:
                body["admin_key"] = request.admin_key
        case Ping():
            body["op"] = "ping"
    return encode(body)


# -- server frames --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame on every connection."""

    nonce: bytes
    limits: dict[str, int]
    server: str


@dataclass(frozen=True, slots=True)
class OkFrame:
    """A successful answer; ``fields`` holds the op's result fields."""

    id: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ErrFrame:
    """A refused request. ``id`` is None when the request's id could not be read."""

    id: int | None
    code: str
    message: str
    epoch: int | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Push:
    """One entry of a subscribed mailbox."""

    mailbox: bytes
    seq: int
    blob: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Revoked:
    """This connection's access to a mailbox, and its subscription there, ended.

    ``reason`` is ``"rotated"`` (the keys changed: authenticate with the new ones),
    ``"expired"`` (the mailbox is gone) or ``"unavailable"`` (the store failed while
    catching up: subscribe again later from your cursor).
    """

    mailbox: bytes
    reason: str = "rotated"


ServerFrame = Hello | OkFrame | ErrFrame | Push | Revoked


def decode_server_frame(data: bytes) -> ServerFrame:
    """Decode one relay frame (client side).

    Raises:
        ProtocolViolation: for anything that is not a valid relay frame.
    """
    m = _unpack_map(data, len(data))
    _check_version(m)
    kind = m.get("t")
    if kind == "hello":
        limits = m.get("limits")
        if not isinstance(limits, dict):
            raise FieldInvalid("The field 'limits' must be a map.")
        server = m.get("server")
        return Hello(
            _bytes(m, "nonce", NONCE_BYTES), limits, server if isinstance(server, str) else ""
        )
    if kind == "ok":
        rid = _uint(m, "id", hi=ID_MAX)
        return OkFrame(rid, {k: v for k, v in m.items() if k not in {"v", "t", "id"}})
    if kind == "err":
        err_id = None if m.get("id") is None else _uint(m, "id", hi=ID_MAX)
        code, message = m.get("code"), m.get("message")
        if not isinstance(code, str) or not isinstance(message, str):
            raise FieldInvalid("An error frame needs string 'code' and 'message'.")
        retry = m.get("retry_after")
        return ErrFrame(
            err_id,
            code,
            message,
            _opt_uint(m, "epoch"),
            float(retry)
            if isinstance(retry, int | float) and not isinstance(retry, bool)
            else None,
        )
    if kind == "push":
        return Push(_mailbox(m), _uint(m, "seq"), _bytes(m, "blob", lo=0, hi=2**32))
    if kind == "revoked":
        reason = m.get("reason")
        return Revoked(_mailbox(m), reason if isinstance(reason, str) else "rotated")
    raise BadFrame("Unknown frame type.")
