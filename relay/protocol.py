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
The client's decoders (:func:`decode_server_frame`, :func:`decode_answer`) also bound
every length, count and integer a relay sends by the protocol's ceilings
(``SERVER_FRAME_BYTES_MAX`` and the constants next to it), since the relay is untrusted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgpack

from . import PROTOCOL_VERSION
from .errors import BadFrame, FieldInvalid, ProtocolViolation, UnknownOp, UnsupportedVersion

__all__ = [
    "ALSO_MAX",
    "BLOB_BYTES_MAX",
    "CODE_CHARS_MAX",
    "FETCH_BYTES_MAX",
    "FETCH_ENTRIES_MAX",
    "FRAME_OVERHEAD_BYTES",
    "ID_MAX",
    "KEY_BYTES",
    "MAILBOX_ID_BYTES",
    "MAP_KEYS_MAX",
    "MESSAGE_CHARS_MAX",
    "NAME_CHARS_MAX",
    "NONCE_BYTES",
    "RETRY_AFTER_MAX",
    "REVOKED_REASONS",
    "SERVER_CHARS_MAX",
    "SERVER_FRAME_BYTES_MAX",
    "SIGNATURE_BYTES",
    "TTL_MAX",
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
    "UnknownFrame",
    "Unsubscribe",
    "auth_message",
    "decode_answer",
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
#: A store generation id, in ``hello`` (docs/relay-protocol.md §4).
GENERATION_BYTES: Final = 16
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
#
# The client's side of the protocol. A relay is untrusted (design.md): every field of every
# frame it sends is checked for type and range here, against the protocol's ceilings below,
# before anything else in the client sees it. Anything out of bounds is a ProtocolViolation.

_KIB: Final = 1024
_MIB: Final = 1024 * _KIB

#: Protocol ceilings (docs/relay-protocol.md §11). A relay may configure its limits lower,
#: never higher; a client refuses frames beyond them, so a relay cannot make it buffer,
#: allocate or loop more than these allow.
#: Largest blob of one entry (ceiling of ``max_blob_bytes``).
BLOB_BYTES_MAX: Final = 4 * _MIB
#: Most blob bytes in one ``fetch`` page of more than one entry (ceiling of ``max_fetch_bytes``).
FETCH_BYTES_MAX: Final = 4 * _MIB
#: Most entries in one ``fetch`` page (ceiling of ``max_fetch``).
FETCH_ENTRIES_MAX: Final = 4096
#: Most ``also`` entries of one append (ceiling of ``max_also``).
ALSO_MAX: Final = 256
#: Framing around the blobs of the largest frame (a full fetch page is at most 15 bytes
#: per entry plus the envelope), with room to spare.
FRAME_OVERHEAD_BYTES: Final = 128 * _KIB
#: Largest WebSocket message a relay may send: one larger blob plus a full page of the
#: others (the bound §1 tells clients not to go below), plus framing.
SERVER_FRAME_BYTES_MAX: Final = BLOB_BYTES_MAX + FETCH_BYTES_MAX + FRAME_OVERHEAD_BYTES
#: Largest ``ttl`` (seconds), as in requests.
TTL_MAX: Final = 2**32
#: Longest ``code`` of an ``err`` frame, in characters.
CODE_CHARS_MAX: Final = 64
#: Longest ``message`` of an ``err`` frame, in characters.
MESSAGE_CHARS_MAX: Final = 1024
#: Longest ``server`` of a ``hello`` frame, in characters.
SERVER_CHARS_MAX: Final = 256
#: Longest frame type ``t`` and map key, in characters.
NAME_CHARS_MAX: Final = 64
#: Most keys in any map of a relay frame (the frame itself, ``limits``).
MAP_KEYS_MAX: Final = 64
#: Longest ``retry_after`` (seconds).
RETRY_AFTER_MAX: Final = 3600.0
#: The ``reason`` values of ``revoked``; any other reads as ``"rotated"`` (§8).
REVOKED_REASONS: Final = ("rotated", "expired", "unavailable")

#: UTF-8 takes at most 4 bytes a character: no string a relay may send is longer.
_STR_BYTES_MAX: Final = 4 * MESSAGE_CHARS_MAX
#: Elements of all arrays and maps of one frame together: a full fetch page (the list,
#: and two per entry) or a full ``limits`` map, with the envelope. Bounds the objects
#: the decoder builds, whatever the frame's bytes are spent on.
_ITEMS_MAX: Final = 3 * FETCH_ENTRIES_MAX + 4 * MAP_KEYS_MAX

#: The limits ``hello`` announces (§11): integer ones, with their ceiling …
_INT_LIMITS: Final[dict[str, int]] = {
    "max_frame_bytes": U64_MAX,
    "max_blob_bytes": BLOB_BYTES_MAX,
    "max_also": ALSO_MAX,
    "max_fetch": FETCH_ENTRIES_MAX,
    "max_fetch_bytes": FETCH_BYTES_MAX,
    "append_burst": U64_MAX,
    "request_burst": U64_MAX,
    "max_subscriptions": U64_MAX,
    "mailbox_max_entries": U64_MAX,
    "mailbox_max_bytes": U64_MAX,
    "default_ttl": TTL_MAX,
    "max_ttl": TTL_MAX,
    "expiry_granularity": TTL_MAX,
}
#: … and rates (a msgpack float, or an integer).
_RATE_LIMITS: Final = frozenset({"appends_per_second", "requests_per_second"})
_RATE_MAX: Final = 1e9


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame on every connection."""

    nonce: bytes
    #: The known limits of §11, each checked against its type and ceiling; others dropped.
    limits: dict[str, int | float]
    server: str
    #: The store's generation id (:data:`GENERATION_BYTES`); None from a relay without one.
    generation: bytes | None = None


@dataclass(frozen=True, slots=True)
class OkFrame:
    """A successful answer; ``fields`` holds the op's result fields, not yet checked:
    pass them through :func:`decode_answer` with the op of the request ``id`` names."""

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


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A well-formed frame of a type this version does not know: ignore it (§3, §15)."""

    kind: str


ServerFrame = Hello | OkFrame | ErrFrame | Push | Revoked | UnknownFrame


class _Budget:
    """Counts the elements of the arrays and maps the unpacker builds; refuses past the cap."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = _ITEMS_MAX

    def take(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise ValueError("too many elements")

    def array(self, items: list[Any]) -> list[Any]:
        self.take(len(items))
        return items

    def map(self, pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
        self.take(len(pairs))
        out: dict[str, Any] = {}
        for key, value in pairs:
            if type(key) is not str or len(key) > NAME_CHARS_MAX:
                raise ValueError("map keys must be short strings")
            out[key] = value
        return out


def _unpack_server_map(data: object) -> dict[str, Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadFrame("Frames must be binary msgpack, not text.")
    if len(data) > SERVER_FRAME_BYTES_MAX:
        raise BadFrame(f"A relay frame is at most {SERVER_FRAME_BYTES_MAX} bytes.")
    budget = _Budget()
    try:
        # Every length is capped at what some field of some relay frame may hold, and
        # the hooks count every element, so a hostile frame costs at most about its own
        # size in memory; no extension types are part of the protocol.
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            list_hook=budget.array,
            object_pairs_hook=budget.map,
            max_bin_len=BLOB_BYTES_MAX,
            max_str_len=_STR_BYTES_MAX,
            max_array_len=FETCH_ENTRIES_MAX,
            max_map_len=MAP_KEYS_MAX,
            max_ext_len=0,
            ext_hook=_refuse_ext,
        )
    except Exception as exc:  # msgpack raises many types; all mean "not a frame"
        raise BadFrame("The frame is not valid msgpack within the protocol's limits.") from exc
    if not isinstance(value, dict):
        raise BadFrame("A frame must be a msgpack map.")
    return value


def _text(m: Mapping[str, Any], name: str, hi: int, *, lo: int = 0) -> str:
    value = m.get(name)
    if value is None:
        raise _missing(name)
    if not isinstance(value, str) or not lo <= len(value) <= hi:
        raise FieldInvalid(f"The field '{name}' must be a string of {lo} to {hi} characters.")
    return value


def _is_uint(value: object, hi: int = U64_MAX, lo: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _number(value: object, hi: float) -> bool:
    """A non-negative finite int or float up to ``hi`` (NaN fails every comparison)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= hi


def _limits(m: Mapping[str, Any]) -> dict[str, int | float]:
    value = m.get("limits")
    if not isinstance(value, dict):
        raise FieldInvalid("The field 'limits' must be a map.")
    out: dict[str, int | float] = {}
    for key, limit in value.items():
        if key in _INT_LIMITS:
            if not _is_uint(limit, _INT_LIMITS[key]):
                raise FieldInvalid(
                    f"The limit '{key}' must be an integer from 0 to {_INT_LIMITS[key]}."
                )
        elif key in _RATE_LIMITS:
            if not _number(limit, _RATE_MAX):
                raise FieldInvalid(f"The limit '{key}' must be a number from 0 to {_RATE_MAX:g}.")
        else:
            continue  # unknown limits are ignored (§15)
        out[key] = limit
    return out


def _retry_after(m: Mapping[str, Any]) -> float | None:
    value = m.get("retry_after")
    if value is None:
        return None
    if not _number(value, RETRY_AFTER_MAX):
        raise FieldInvalid(
            f"The field 'retry_after' must be a number of seconds from 0 to {RETRY_AFTER_MAX:g}."
        )
    return float(value)


def _reason(m: Mapping[str, Any]) -> str:
    value = m.get("reason")
    if value is None:
        return "rotated"  # the reference decoder's reading of a missing reason (§8)
    if not isinstance(value, str):
        raise FieldInvalid("The field 'reason' must be a string.")
    return value if value in REVOKED_REASONS else "rotated"


def decode_server_frame(data: bytes) -> ServerFrame:
    """Decode one relay frame (client side), checking every field against the protocol.

    Lengths, counts and integers are bounded by the ceilings above before anything is
    built from them. The result fields of ``ok`` are checked by :func:`decode_answer`,
    which needs the op of the request.

    Raises:
        ProtocolViolation: (a subclass of it) for anything that is not a valid relay frame.
    """
    m = _unpack_server_map(data)
    _check_version(m)
    kind = m.get("t")
    if not isinstance(kind, str):
        raise BadFrame("A frame needs a string type 't'.")
    if kind == "hello":
        server = m.get("server")
        return Hello(
            _bytes(m, "nonce", NONCE_BYTES),
            _limits(m),
            "" if server is None else _text(m, "server", SERVER_CHARS_MAX),
            _opt_bytes(m, "generation", GENERATION_BYTES),
        )
    if kind == "ok":
        rid = _uint(m, "id", hi=ID_MAX)
        return OkFrame(rid, {k: v for k, v in m.items() if k not in {"v", "t", "id"}})
    if kind == "err":
        return ErrFrame(
            _opt_uint(m, "id", hi=ID_MAX),
            _text(m, "code", CODE_CHARS_MAX, lo=1),
            _text(m, "message", MESSAGE_CHARS_MAX),
            _opt_uint(m, "epoch"),
            _retry_after(m),
        )
    if kind == "push":
        return Push(_mailbox(m), _uint(m, "seq", lo=1), _bytes(m, "blob", lo=0, hi=BLOB_BYTES_MAX))
    if kind == "revoked":
        return Revoked(_mailbox(m), _reason(m))
    if kind == "req":
        raise BadFrame("A relay does not send requests.")
    return UnknownFrame(kind)


# -- the result fields of ok answers ----------------------------------------------------------


def _request_uint(request: Mapping[str, Any], name: str) -> int | None:
    value = request.get(name)
    return value if _is_uint(value) else None


def _flag(m: Mapping[str, Any], name: str) -> bool | None:
    value = m.get(name)
    if value is not None and not isinstance(value, bool):
        raise FieldInvalid(f"The field '{name}' must be true or false.")
    return value


def _append_answer(m: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": _uint(m, "seq", lo=1)}
    duplicate = _flag(m, "duplicate")
    if duplicate is not None:
        out["duplicate"] = duplicate
    epoch = _opt_uint(m, "epoch")
    if epoch is not None:
        out["epoch"] = epoch
    sent = request.get("also")
    count = len(sent) if isinstance(sent, list | tuple) else 0
    if count:  # one sequence number per also entry, 0 for a keyless one on a retry
        also = m.get("also")
        if (
            not isinstance(also, list)
            or len(also) != count
            or not all(_is_uint(seq) for seq in also)
        ):
            raise FieldInvalid(f"The field 'also' must be a list of {count} sequence numbers.")
        out["also"] = also
    return out


def _fetch_answer(m: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    head = _uint(m, "head")
    more = _flag(m, "more")
    if more is None:
        raise _missing("more")
    asked = _request_uint(request, "limit")
    limit = FETCH_ENTRIES_MAX if asked is None else max(1, min(asked, FETCH_ENTRIES_MAX))
    entries = m.get("entries")
    if not isinstance(entries, list) or len(entries) > limit:
        raise FieldInvalid(f"The field 'entries' must be a list of at most {limit} entries.")
    last = _request_uint(request, "after") or 0
    total = 0
    for entry in entries:
        # [seq, blob] pairs, seq increasing, each above the cursor and at most the head.
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not _is_uint(entry[0], hi=head, lo=last + 1)
            or not isinstance(entry[1], bytes)
            or len(entry[1]) > BLOB_BYTES_MAX
        ):
            raise FieldInvalid(
                "Each entry must be a [seq, blob] pair, seq increasing from 'after' to 'head'."
            )
        last = entry[0]
        total += len(entry[1])
    if len(entries) > 1 and total > FETCH_BYTES_MAX:
        raise FieldInvalid(f"A page of several entries holds at most {FETCH_BYTES_MAX} bytes.")
    if more and not entries:  # a page holds at least one entry if any exists (§7)
        raise FieldInvalid("An empty page cannot say that more entries follow.")
    return {"entries": entries, "head": head, "more": more}


def _trim_answer(m: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    through = _request_uint(request, "through")
    return {"deleted": _uint(m, "deleted", hi=U64_MAX if through is None else through)}


_ANSWERS: Final[dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]]] = {
    "create": lambda m, r: {"ttl": _uint(m, "ttl", hi=TTL_MAX, lo=1)},
    "append": _append_answer,
    "fetch": _fetch_answer,
    "trim": _trim_answer,
}


def decode_answer(
    op: str, fields: Mapping[str, Any], request: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check the result fields of an ``ok`` answer to ``op`` (client side).

    Args:
        op: the operation of the request the answer's ``id`` names.
        fields: :attr:`OkFrame.fields`.
        request: the request's own fields; bounds the answer where the protocol ties
            them (``fetch``: at most ``limit`` entries, all above ``after``; ``append``:
            one sequence number per ``also`` entry; ``trim``: at most ``through`` deleted).

    Returns:
        The op's result fields (§7), each checked for type and range; unknown fields are
        dropped (§2). Operations without result fields, or unknown here, give ``{}``.

    Raises:
        FieldInvalid: a result field is missing, of the wrong type or out of range.
    """
    answer = _ANSWERS.get(op)
    return {} if answer is None else answer(fields, request or {})
