"""Relay wire frames: round trips, signed-message layout, validation, and decoder fuzzing."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.errors import BadFrame, FieldInvalid, ProtocolViolation, UnknownOp, UnsupportedVersion
from relay.protocol import (
    ALSO_MAX,
    BLOB_BYTES_MAX,
    CODE_CHARS_MAX,
    FETCH_BYTES_MAX,
    FETCH_ENTRIES_MAX,
    ID_MAX,
    KEY_BYTES,
    MAILBOX_ID_BYTES,
    MAP_KEYS_MAX,
    MESSAGE_CHARS_MAX,
    NONCE_BYTES,
    OPS,
    RETRY_AFTER_MAX,
    SERVER_CHARS_MAX,
    SERVER_FRAME_BYTES_MAX,
    SIGNATURE_BYTES,
    TTL_MAX,
    U64_MAX,
    Append,
    Auth,
    Create,
    Entry,
    ErrFrame,
    Fetch,
    Hello,
    OkFrame,
    Ping,
    Push,
    Request,
    Revoked,
    Rotate,
    Subscribe,
    Trim,
    UnknownFrame,
    Unsubscribe,
    auth_message,
    decode_answer,
    decode_request,
    decode_server_frame,
    encode,
    encode_request,
    request_id_of,
    rotate_message,
)

MAILBOX = b"M" * MAILBOX_ID_BYTES
KEY = b"K" * KEY_BYTES
SIG = b"S" * SIGNATURE_BYTES
NONCE = b"N" * NONCE_BYTES
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EXAMPLES: list[Request] = [
    Create(1, MAILBOX, KEY, b"W" * 32),
    Create(2, MAILBOX, KEY, b"W" * 32, admin_key=b"A" * 32, ttl=86_400),
    Auth(3, MAILBOX, "read", SIG),
    Auth(4, MAILBOX, "write", SIG),
    Append(5, Entry(MAILBOX, b"ciphertext")),
    Append(
        6,
        Entry(MAILBOX, b"commit", key=b"k" * 16, ttl=60),
        epoch=7,
        also=(Entry(b"B" * 16, b"welcome", key=b"w" * 8), Entry(b"C" * 16, b"", ttl=1)),
    ),
    Append(ID_MAX, Entry(MAILBOX, b""), epoch=0),
    Fetch(8, MAILBOX, 0),
    Fetch(9, MAILBOX, U64_MAX, limit=ID_MAX),
    Subscribe(10, MAILBOX, 42),
    Unsubscribe(11, MAILBOX),
    Trim(12, MAILBOX, 99),
    Rotate(13, MAILBOX, KEY, b"W" * 32, None, SIG),
    Rotate(14, MAILBOX, KEY, b"W" * 32, b"A" * 32, SIG),
    Ping(0),
]


def frame(**fields: Any) -> bytes:
    """A request frame with the given fields (``v`` and ``t`` default to a valid request)."""
    body: dict[str, Any] = {"v": 1, "t": "req", **fields}
    data: bytes = msgpack.packb({k: v for k, v in body.items() if v is not ...}, use_bin_type=True)
    return data


def valid(op: str, **fields: Any) -> dict[str, Any]:
    """The fields of a minimal valid request for ``op``, with ``fields`` replacing some."""
    base: dict[str, dict[str, Any]] = {
        "create": {"mailbox": MAILBOX, "read_key": KEY, "write_key": KEY},
        "auth": {"mailbox": MAILBOX, "role": "read", "sig": SIG},
        "append": {"mailbox": MAILBOX, "blob": b"x"},
        "fetch": {"mailbox": MAILBOX, "after": 0},
        "subscribe": {"mailbox": MAILBOX, "after": 0},
        "unsubscribe": {"mailbox": MAILBOX},
        "trim": {"mailbox": MAILBOX, "through": 1},
        "rotate": {"mailbox": MAILBOX, "read_key": KEY, "write_key": KEY, "sig": SIG},
        "ping": {},
    }
    return {"id": 1, "op": op, **base[op], **fields}


# -- round trips ---------------------------------------------------------------------------


def test_every_op_has_an_example() -> None:
    names = {type(r).__name__.lower() for r in EXAMPLES}
    assert names == set(OPS)


@pytest.mark.parametrize("request_", EXAMPLES, ids=lambda r: f"{type(r).__name__}-{r.id}")
def test_request_round_trip(request_: Request) -> None:
    data = encode_request(request_)
    assert decode_request(data) == request_
    assert request_id_of(data) == request_.id


@pytest.mark.parametrize("op", OPS)
def test_minimal_valid_requests_decode(op: str) -> None:
    assert type(decode_request(frame(**valid(op)))).__name__.lower() == op


def test_optional_fields_may_be_nil() -> None:
    data = frame(
        **valid("append", key=None, ttl=None, epoch=None, also=None),
    )
    assert decode_request(data) == Append(1, Entry(MAILBOX, b"x"))
    assert decode_request(frame(**valid("create", admin_key=None, ttl=None))) == Create(
        1, MAILBOX, KEY, KEY
    )


def test_unknown_extra_fields_are_ignored() -> None:
    assert decode_request(frame(**valid("ping", extra=[1, 2]))) == Ping(1)


# -- signed messages -----------------------------------------------------------------------

AUTH_LEN = len(auth_message(NONCE, "read", MAILBOX))


def test_auth_message_layout() -> None:
    read = auth_message(NONCE, "read", MAILBOX)
    write = auth_message(NONCE, "write", MAILBOX)
    context = b"backchannel-relay/1 auth\x00"
    assert read == context + NONCE + b"r" + MAILBOX
    assert write == context + NONCE + b"w" + MAILBOX
    assert len(read) == len(write) == len(context) + NONCE_BYTES + 1 + MAILBOX_ID_BYTES
    assert read != write


def test_rotate_message_layout() -> None:
    msg = rotate_message(NONCE, MAILBOX, b"R" * 32, b"W" * 32, b"A" * 32)
    context = b"backchannel-relay/1 rotate\x00"
    assert msg == context + NONCE + MAILBOX + b"R" * 32 + b"W" * 32 + b"A" * 32
    assert len(msg) == len(context) + NONCE_BYTES + MAILBOX_ID_BYTES + 3 * KEY_BYTES


def test_rotate_and_auth_are_domain_separated() -> None:
    auth = auth_message(NONCE, "write", MAILBOX)
    rotate = rotate_message(NONCE, MAILBOX, KEY, KEY, KEY)
    # Neither is a prefix of the other, so no signature over one verifies as the other.
    assert not rotate.startswith(auth)
    assert not auth.startswith(rotate[:AUTH_LEN])
    assert auth[:20] == rotate[:20] == b"backchannel-relay/1 "


@given(
    a=st.tuples(
        st.binary(min_size=32, max_size=32),
        st.sampled_from(["read", "write"]),
        st.binary(min_size=16, max_size=16),
    ),
    b=st.tuples(
        st.binary(min_size=32, max_size=32),
        st.sampled_from(["read", "write"]),
        st.binary(min_size=16, max_size=16),
    ),
)
@settings(max_examples=300, deadline=None)
def test_auth_messages_are_injective(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    if a != b:
        assert auth_message(*a) != auth_message(*b)
    assert len(auth_message(*a)) == AUTH_LEN


# -- server frames -------------------------------------------------------------------------


def test_server_frames_decode() -> None:
    limits = {"max_blob_bytes": 262_144, "max_fetch": 256}
    assert decode_server_frame(
        encode({"t": "hello", "nonce": NONCE, "limits": limits, "server": "relay/1"})
    ) == Hello(NONCE, limits, "relay/1")
    assert decode_server_frame(encode({"t": "hello", "nonce": NONCE, "limits": {}})) == Hello(
        NONCE, {}, ""
    )
    assert decode_server_frame(encode({"t": "ok", "id": 5, "seq": 3, "epoch": 1})) == OkFrame(
        5, {"seq": 3, "epoch": 1}
    )
    assert decode_server_frame(
        encode({"t": "err", "id": 6, "code": "stale_epoch", "message": "m", "epoch": 4})
    ) == ErrFrame(6, "stale_epoch", "m", epoch=4)
    assert decode_server_frame(
        encode({"t": "err", "id": None, "code": "rate_limited", "message": "m", "retry_after": 2})
    ) == ErrFrame(None, "rate_limited", "m", retry_after=2.0)
    assert decode_server_frame(
        encode({"t": "err", "code": "bad_frame", "message": "m", "retry_after": 0.25})
    ) == ErrFrame(None, "bad_frame", "m", retry_after=0.25)
    assert decode_server_frame(
        encode({"t": "push", "mailbox": MAILBOX, "seq": 9, "blob": b"b"})
    ) == Push(MAILBOX, 9, b"b")
    assert decode_server_frame(encode({"t": "revoked", "mailbox": MAILBOX})) == Revoked(MAILBOX)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"t": "hello", "nonce": b"short", "limits": {}}, FieldInvalid),
        ({"t": "hello", "nonce": NONCE}, FieldInvalid),
        ({"t": "hello", "nonce": NONCE, "limits": [1]}, FieldInvalid),
        ({"t": "ok"}, FieldInvalid),
        ({"t": "ok", "id": -1}, FieldInvalid),
        ({"t": "err", "id": 1, "code": "x"}, FieldInvalid),
        ({"t": "err", "id": 1, "code": 5, "message": "m"}, FieldInvalid),
        ({"t": "err", "id": True, "code": "x", "message": "m"}, FieldInvalid),
        ({"t": "err", "code": "x", "message": "m", "epoch": "1"}, FieldInvalid),
        ({"t": "push", "mailbox": MAILBOX, "seq": 1.0, "blob": b""}, FieldInvalid),
        ({"t": "push", "mailbox": MAILBOX, "seq": 1, "blob": "text"}, FieldInvalid),
        ({"t": "revoked", "mailbox": b"short"}, FieldInvalid),
        ({"t": "req", "id": 1, "op": "ping"}, BadFrame),
        ({"t": 5}, BadFrame),
        ({"t": b"push"}, BadFrame),
        ({}, BadFrame),
    ],
)
def test_bad_server_frames(fields: dict[str, Any], error: type[ProtocolViolation]) -> None:
    with pytest.raises(error):
        decode_server_frame(encode(fields))


@pytest.mark.parametrize("version", [None, 0, 2, "1", True, 1.0, b"\x01"])
def test_server_frame_versions(version: Any) -> None:
    data = msgpack.packb({"v": version, "t": "revoked", "mailbox": MAILBOX}, use_bin_type=True)
    with pytest.raises(UnsupportedVersion):
        decode_server_frame(data)


def test_unknown_server_frame_types_are_ignored_not_refused() -> None:
    """§3 and §15: a later protocol's frame type decodes to UnknownFrame, for the client to skip."""
    assert decode_server_frame(encode({"t": "surprise", "x": [1, 2]})) == UnknownFrame("surprise")


# -- what a client accepts from a relay: every field bounded (issue #15, item 4) -----------


def oversized_map(count: int) -> dict[str, Any]:
    return {f"k{n}": n for n in range(count)}


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        # err: code and message are short strings, retry_after a sane number of seconds
        ({"t": "err", "code": "", "message": "m"}, FieldInvalid),
        ({"t": "err", "code": "c" * (CODE_CHARS_MAX + 1), "message": "m"}, FieldInvalid),
        ({"t": "err", "code": "x", "message": "m" * (MESSAGE_CHARS_MAX + 1)}, FieldInvalid),
        ({"t": "err", "code": "x", "message": b"m"}, FieldInvalid),
        ({"t": "err", "code": "x", "message": "m", "retry_after": math.nan}, FieldInvalid),
        ({"t": "err", "code": "x", "message": "m", "retry_after": math.inf}, FieldInvalid),
        ({"t": "err", "code": "x", "message": "m", "retry_after": -1}, FieldInvalid),
        (
            {"t": "err", "code": "x", "message": "m", "retry_after": RETRY_AFTER_MAX + 1},
            FieldInvalid,
        ),
        ({"t": "err", "code": "x", "message": "m", "retry_after": True}, FieldInvalid),
        ({"t": "err", "code": "x", "message": "m", "retry_after": "1"}, FieldInvalid),
        ({"t": "err", "code": "x", "message": "m", "epoch": U64_MAX + 1}, FieldInvalid),
        ({"t": "err", "id": ID_MAX + 1, "code": "x", "message": "m"}, FieldInvalid),
        # push: a sequence number from 1, a blob within the protocol's ceiling
        ({"t": "push", "mailbox": MAILBOX, "seq": 0, "blob": b""}, FieldInvalid),
        ({"t": "push", "mailbox": MAILBOX, "seq": U64_MAX + 1, "blob": b""}, FieldInvalid),
        ({"t": "push", "mailbox": MAILBOX, "seq": "1", "blob": b""}, FieldInvalid),
        ({"t": "push", "mailbox": MAILBOX, "seq": 1, "blob": 2**62}, FieldInvalid),
        ({"t": "push", "mailbox": MAILBOX, "seq": 1}, FieldInvalid),
        # hello: server is a short string, known limits are numbers within their ceilings
        ({"t": "hello", "nonce": NONCE, "limits": {}, "server": 1}, FieldInvalid),
        (
            {"t": "hello", "nonce": NONCE, "limits": {}, "server": "s" * (SERVER_CHARS_MAX + 1)},
            FieldInvalid,
        ),
        ({"t": "hello", "nonce": NONCE, "limits": {"max_fetch": True}}, FieldInvalid),
        ({"t": "hello", "nonce": NONCE, "limits": {"max_fetch": -1}}, FieldInvalid),
        ({"t": "hello", "nonce": NONCE, "limits": {"max_fetch": "256"}}, FieldInvalid),
        ({"t": "hello", "nonce": NONCE, "limits": {"max_fetch": 256.0}}, FieldInvalid),
        (
            {"t": "hello", "nonce": NONCE, "limits": {"max_fetch": FETCH_ENTRIES_MAX + 1}},
            FieldInvalid,
        ),
        (
            {"t": "hello", "nonce": NONCE, "limits": {"max_blob_bytes": BLOB_BYTES_MAX + 1}},
            FieldInvalid,
        ),
        (
            {"t": "hello", "nonce": NONCE, "limits": {"max_fetch_bytes": FETCH_BYTES_MAX + 1}},
            FieldInvalid,
        ),
        ({"t": "hello", "nonce": NONCE, "limits": {"max_also": ALSO_MAX + 1}}, FieldInvalid),
        ({"t": "hello", "nonce": NONCE, "limits": {"max_ttl": TTL_MAX + 1}}, FieldInvalid),
        (
            {"t": "hello", "nonce": NONCE, "limits": {"appends_per_second": math.nan}},
            FieldInvalid,
        ),
        ({"t": "hello", "nonce": NONCE, "limits": {"appends_per_second": -1.0}}, FieldInvalid),
        # revoked: a string reason
        ({"t": "revoked", "mailbox": MAILBOX, "reason": 1}, FieldInvalid),
        # ok: the id is a request id
        ({"t": "ok", "id": ID_MAX + 1}, FieldInvalid),
        ({"t": "ok", "id": True}, FieldInvalid),
        # shapes no relay frame has: more keys, longer strings or keys than any field needs
        ({"t": "ok", "id": 1, **oversized_map(MAP_KEYS_MAX)}, BadFrame),
        ({"t": "hello", "nonce": NONCE, "limits": oversized_map(MAP_KEYS_MAX + 1)}, BadFrame),
        ({"t": "ok", "id": 1, "x": "s" * (4 * MESSAGE_CHARS_MAX + 1)}, BadFrame),
        ({"t": "ok", "id": 1, "k" * 65: 1}, BadFrame),
        ({"t": "ok", "id": 1, "x": {b"bytes key": 1}}, BadFrame),
        ({"t": "ok", "id": 1, "x": [None] * (FETCH_ENTRIES_MAX + 1)}, BadFrame),
        # more array and map elements in one frame than a full fetch page has
        ({"t": "ok", "id": 1, "x": [[None] * FETCH_ENTRIES_MAX] * 4}, BadFrame),
    ],
)
def test_server_frames_out_of_bounds(
    fields: dict[str, Any], error: type[ProtocolViolation]
) -> None:
    with pytest.raises(error) as info:
        decode_server_frame(encode(fields))
    assert type(info.value) is error


def test_server_frame_bounds_are_inclusive() -> None:
    assert decode_server_frame(
        encode(
            {
                "t": "err",
                "id": ID_MAX,
                "code": "c" * CODE_CHARS_MAX,
                "message": "m" * MESSAGE_CHARS_MAX,
                "epoch": U64_MAX,
                "retry_after": RETRY_AFTER_MAX,
            }
        )
    ) == ErrFrame(ID_MAX, "c" * CODE_CHARS_MAX, "m" * MESSAGE_CHARS_MAX, U64_MAX, RETRY_AFTER_MAX)
    assert decode_server_frame(
        encode({"t": "err", "code": "x", "message": "", "retry_after": 0})
    ) == ErrFrame(None, "x", "", retry_after=0.0)
    limits = {
        "max_blob_bytes": BLOB_BYTES_MAX,
        "max_fetch_bytes": FETCH_BYTES_MAX,
        "max_fetch": FETCH_ENTRIES_MAX,
        "max_also": ALSO_MAX,
        "max_frame_bytes": U64_MAX,
        "appends_per_second": 50,
        "requests_per_second": 0.5,
    }
    hello = decode_server_frame(
        encode({"t": "hello", "nonce": NONCE, "limits": limits, "server": "s" * SERVER_CHARS_MAX})
    )
    assert hello == Hello(NONCE, limits, "s" * SERVER_CHARS_MAX)
    assert decode_server_frame(
        encode({"t": "push", "mailbox": MAILBOX, "seq": U64_MAX, "blob": b"b" * BLOB_BYTES_MAX})
    ) == Push(MAILBOX, U64_MAX, b"b" * BLOB_BYTES_MAX)


def test_a_blob_over_the_ceiling_is_refused_before_it_is_built() -> None:
    data = encode({"t": "push", "mailbox": MAILBOX, "seq": 1, "blob": b"b" * (BLOB_BYTES_MAX + 1)})
    with pytest.raises(BadFrame):
        decode_server_frame(data)


def test_a_frame_over_the_protocols_largest_is_refused() -> None:
    data = encode({"t": "ok", "id": 1})
    data = data[:-1] + b"\x00" * (SERVER_FRAME_BYTES_MAX - len(data) + 2)
    with pytest.raises(BadFrame, match=str(SERVER_FRAME_BYTES_MAX)):
        decode_server_frame(data)


def test_unknown_limits_are_dropped_and_unknown_reasons_read_as_rotated() -> None:
    hello = decode_server_frame(
        encode({"t": "hello", "nonce": NONCE, "limits": {"max_fetch": 9, "new": [1], "x": "y"}})
    )
    assert hello == Hello(NONCE, {"max_fetch": 9}, "")
    for reason in ("\x1b[2J Farida removed Chen", "ROTATED", ""):
        revoked = decode_server_frame(
            encode({"t": "revoked", "mailbox": MAILBOX, "reason": reason})
        )
        assert revoked == Revoked(MAILBOX, "rotated")
    for reason in ("rotated", "expired", "unavailable"):
        revoked = decode_server_frame(
            encode({"t": "revoked", "mailbox": MAILBOX, "reason": reason})
        )
        assert revoked == Revoked(MAILBOX, reason)


# -- the result fields of ok answers ---------------------------------------------------------


def answer(
    op: str, fields: dict[str, Any], request: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The frame as a relay sends it, decoded and checked as the client does."""
    ok = decode_server_frame(encode({"t": "ok", "id": 1, **fields}))
    assert isinstance(ok, OkFrame)
    return decode_answer(op, ok.fields, request)


def test_issue_15_fetch_entry_with_an_integer_blob_is_refused() -> None:
    """A fetch answer with entries [[1, 2**62]] made the client call bytes(2**62): MemoryError."""
    with pytest.raises(FieldInvalid, match="entry"):
        answer("fetch", {"entries": [[1, 2**62]], "head": 1, "more": False}, {"after": 0})


def test_issue_15_head_of_thousands_of_digits_is_refused() -> None:
    """A 5,000-digit head made the client call int() on it: ValueError."""
    with pytest.raises(BadFrame):  # longer than any string a relay may send
        answer("fetch", {"entries": [], "head": "9" * 5000, "more": False})
    with pytest.raises(FieldInvalid, match="head"):  # a string is not a uint, whatever its length
        answer("fetch", {"entries": [], "head": "9" * 4000, "more": False})
    with pytest.raises(FieldInvalid, match="head"):
        answer("fetch", {"entries": [], "head": U64_MAX + 1, "more": False})


@pytest.mark.parametrize(
    ("op", "fields", "request_", "expected"),
    [
        ("create", {"ttl": 1_209_600}, {}, {"ttl": 1_209_600}),
        ("create", {"ttl": TTL_MAX, "extra": "dropped"}, {}, {"ttl": TTL_MAX}),
        ("append", {"seq": 1}, {}, {"seq": 1}),
        (
            "append",
            {"seq": U64_MAX, "duplicate": True, "epoch": 3, "also": [0, 7]},
            {"epoch": 2, "also": [{}, {}]},
            {"seq": U64_MAX, "duplicate": True, "epoch": 3, "also": [0, 7]},
        ),
        ("append", {"seq": 4, "also": [5]}, {}, {"seq": 4}),  # also nobody asked for: dropped
        ("fetch", {"entries": [], "head": 0, "more": False}, {"after": 0}, ...),
        ("fetch", {"entries": [], "head": 3, "more": False}, {"after": 9}, ...),  # restored relay
        ("fetch", {"entries": [[4, b"a"], [9, b""]], "head": 9, "more": True}, {"after": 3}, ...),
        ("fetch", {"entries": [[1, b"x" * BLOB_BYTES_MAX]], "head": 5, "more": True}, {}, ...),
        (
            "fetch",
            {
                "entries": [[n, b""] for n in range(1, FETCH_ENTRIES_MAX + 1)],
                "head": U64_MAX,
                "more": True,
            },
            {},
            ...,
        ),
        ("trim", {"deleted": 0}, {"through": 0}, {"deleted": 0}),
        ("trim", {"deleted": 5}, {"through": 5}, {"deleted": 5}),
        ("ping", {"anything": [1, 2]}, {}, {}),
        ("auth", {}, {}, {}),
        ("subscribe", {}, {}, {}),
        ("unsubscribe", {}, {}, {}),
        ("rotate", {}, {}, {}),
        ("future_op", {"x": 1}, {}, {}),
    ],
)
def test_valid_answers(
    op: str, fields: dict[str, Any], request_: dict[str, Any], expected: Any
) -> None:
    assert answer(op, fields, request_) == (fields if expected is ... else expected)


@pytest.mark.parametrize(
    ("op", "fields", "request_"),
    [
        ("create", {}, {}),
        ("create", {"ttl": 0}, {}),
        ("create", {"ttl": TTL_MAX + 1}, {}),
        ("create", {"ttl": "1"}, {}),
        ("append", {}, {}),
        ("append", {"seq": 0}, {}),
        ("append", {"seq": True}, {}),
        ("append", {"seq": 1.0}, {}),
        ("append", {"seq": 1, "duplicate": 1}, {}),
        ("append", {"seq": 1, "duplicate": "yes"}, {}),
        ("append", {"seq": 1, "epoch": -1}, {"epoch": 0}),
        ("append", {"seq": 1, "epoch": "1"}, {"epoch": 0}),
        ("append", {"seq": 1}, {"also": [{}]}),  # one number per also entry is required
        ("append", {"seq": 1, "also": []}, {"also": [{}]}),
        ("append", {"seq": 1, "also": [1, 2]}, {"also": [{}]}),
        ("append", {"seq": 1, "also": [-1]}, {"also": [{}]}),
        ("append", {"seq": 1, "also": ["1"]}, {"also": [{}]}),
        ("append", {"seq": 1, "also": {"0": 1}}, {"also": [{}]}),
        ("fetch", {"head": 0, "more": False}, {}),
        ("fetch", {"entries": [], "more": False}, {}),
        ("fetch", {"entries": [], "head": 0}, {}),
        ("fetch", {"entries": [], "head": 0, "more": 0}, {}),
        ("fetch", {"entries": [], "head": -1, "more": False}, {}),
        ("fetch", {"entries": [], "head": 1.0, "more": False}, {}),
        ("fetch", {"entries": {}, "head": 0, "more": False}, {}),
        ("fetch", {"entries": [[1, b"a"]], "head": 0, "more": False}, {}),  # above the head
        ("fetch", {"entries": [[3, b"a"]], "head": 5, "more": False}, {"after": 3}),  # not after
        ("fetch", {"entries": [[2, b"a"], [2, b"b"]], "head": 5, "more": False}, {}),  # repeated
        ("fetch", {"entries": [[3, b"a"], [2, b"b"]], "head": 5, "more": False}, {}),  # decreasing
        ("fetch", {"entries": [[0, b"a"]], "head": 5, "more": False}, {}),
        ("fetch", {"entries": [[1, "text"]], "head": 5, "more": False}, {}),
        ("fetch", {"entries": [[1, b"a", 3]], "head": 5, "more": False}, {}),
        ("fetch", {"entries": [[1]], "head": 5, "more": False}, {}),
        ("fetch", {"entries": [1], "head": 5, "more": False}, {}),
        ("fetch", {"entries": [[True, b""]], "head": 5, "more": False}, {}),
        ("fetch", {"entries": [[1, b""], [2, b""]], "head": 5, "more": True}, {"limit": 1}),
        ("fetch", {"entries": [], "head": 5, "more": True}, {}),  # more, but an empty page
        (
            "fetch",
            {"entries": [[1, b"x" * FETCH_BYTES_MAX], [2, b"y"]], "head": 5, "more": True},
            {},
        ),
        ("trim", {}, {}),
        ("trim", {"deleted": -1}, {}),
        ("trim", {"deleted": 6}, {"through": 5}),
        ("trim", {"deleted": U64_MAX + 1}, {}),
    ],
)
def test_invalid_answers(op: str, fields: dict[str, Any], request_: dict[str, Any]) -> None:
    with pytest.raises(ProtocolViolation) as info:
        answer(op, fields, request_)
    assert isinstance(info.value, FieldInvalid | BadFrame)


def test_answers_keep_only_checked_fields() -> None:
    fields = {"seq": 2, "smuggled": b"x" * 1000, "epoch": None}
    assert answer("append", fields) == {"seq": 2}


# -- request validation --------------------------------------------------------------------

LONG = b"x" * 1000


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        # missing fields
        ({"op": "ping"}, FieldInvalid),
        ({"id": 1}, FieldInvalid),
        (valid("create", read_key=...), FieldInvalid),
        (valid("auth", sig=...), FieldInvalid),
        (valid("append", blob=...), FieldInvalid),
        (valid("append", mailbox=...), FieldInvalid),
        (valid("fetch", after=...), FieldInvalid),
        (valid("trim", through=...), FieldInvalid),
        (valid("rotate", sig=...), FieldInvalid),
        # wrong types
        (valid("ping", id=True), FieldInvalid),
        (valid("ping", id=1.0), FieldInvalid),
        (valid("ping", id="1"), FieldInvalid),
        (valid("fetch", after=False), FieldInvalid),
        (valid("fetch", after=1.5), FieldInvalid),
        (valid("append", epoch=True), FieldInvalid),
        (valid("append", ttl=True), FieldInvalid),
        (valid("append", blob="text"), FieldInvalid),
        (valid("append", mailbox="M" * 16), FieldInvalid),
        (valid("append", key="k" * 16), FieldInvalid),
        (valid("auth", role=b"read"), FieldInvalid),
        (valid("auth", role="admin"), FieldInvalid),
        (valid("auth", role=None), FieldInvalid),
        (valid("create", read_key=[1] * 32), FieldInvalid),
        (valid("append", also={"mailbox": MAILBOX, "blob": b""}), FieldInvalid),
        (valid("append", also=[b"not a map"]), FieldInvalid),
        (valid("append", also=[{"mailbox": MAILBOX}]), FieldInvalid),
        (valid("append", also=[{"mailbox": b"short", "blob": b""}]), FieldInvalid),
        ({"id": 1, "op": 7}, FieldInvalid),
        ({"id": 1, "op": b"ping"}, FieldInvalid),
        # out of range
        (valid("ping", id=-1), FieldInvalid),
        (valid("ping", id=ID_MAX + 1), FieldInvalid),
        (valid("fetch", after=-1), FieldInvalid),
        (valid("fetch", limit=0), FieldInvalid),
        (valid("fetch", limit=ID_MAX + 1), FieldInvalid),
        (valid("append", ttl=0), FieldInvalid),
        (valid("append", ttl=2**32 + 1), FieldInvalid),
        (valid("append", epoch=-1), FieldInvalid),
        (valid("create", ttl=0), FieldInvalid),
        (valid("trim", through=-5), FieldInvalid),
        # wrong lengths
        (valid("append", mailbox=b"M" * 15), FieldInvalid),
        (valid("append", mailbox=b"M" * 17), FieldInvalid),
        (valid("append", key=b"k" * 7), FieldInvalid),
        (valid("append", key=b"k" * 33), FieldInvalid),
        (valid("append", key=b""), FieldInvalid),
        (valid("create", read_key=KEY[:-1]), FieldInvalid),
        (valid("create", write_key=KEY + b"!"), FieldInvalid),
        (valid("create", admin_key=b""), FieldInvalid),
        (valid("auth", sig=SIG[:-1]), FieldInvalid),
        (valid("rotate", sig=SIG + b"!"), FieldInvalid),
        (valid("rotate", admin_key=LONG), FieldInvalid),
        (valid("subscribe", mailbox=b""), FieldInvalid),
        # unknown op
        ({"id": 1, "op": "delete"}, UnknownOp),
        ({"id": 1, "op": ""}, UnknownOp),
        ({"id": 1, "op": "PING"}, UnknownOp),
        # frame type
        ({"t": "ok", "id": 1, "op": "ping"}, BadFrame),
        ({"t": None, "id": 1, "op": "ping"}, BadFrame),
        ({"t": ..., "id": 1, "op": "ping"}, BadFrame),
        # version
        ({"v": ..., "id": 1, "op": "ping"}, UnsupportedVersion),
        ({"v": 2, "id": 1, "op": "ping"}, UnsupportedVersion),
        ({"v": 0, "id": 1, "op": "ping"}, UnsupportedVersion),
        ({"v": "1", "id": 1, "op": "ping"}, UnsupportedVersion),
        ({"v": True, "id": 1, "op": "ping"}, UnsupportedVersion),
        ({"v": 1.0, "id": 1, "op": "ping"}, UnsupportedVersion),
        ({"v": None, "id": 1, "op": "ping"}, UnsupportedVersion),
    ],
)
def test_invalid_requests(fields: dict[str, Any], error: type[ProtocolViolation]) -> None:
    with pytest.raises(error) as info:
        decode_request(frame(**fields))
    assert type(info.value) is error
    assert info.value.message.endswith(".")


def test_boundary_values_are_accepted() -> None:
    assert decode_request(frame(**valid("ping", id=ID_MAX))) == Ping(ID_MAX)
    assert decode_request(frame(**valid("append", ttl=2**32, epoch=U64_MAX, key=b"k" * 32)))
    assert decode_request(frame(**valid("append", ttl=1, key=b"k" * 8)))
    assert decode_request(frame(**valid("fetch", after=U64_MAX, limit=1)))


def test_error_messages_name_the_field() -> None:
    with pytest.raises(FieldInvalid, match="'sig'"):
        decode_request(frame(**valid("auth", sig=b"short")))
    with pytest.raises(FieldInvalid, match="'after'"):
        decode_request(frame(**valid("fetch", after=True)))
    with pytest.raises(UnsupportedVersion, match="says 2"):
        decode_request(frame(**valid("ping", v=2)))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in msgpack
        msgpack.packb([1, "req"]),
        msgpack.packb(1),
        msgpack.packb(None),
        msgpack.packb("req"),
        msgpack.packb(b"\x81\xa1v\x01"),
        frame(**valid("ping"))[:-1],  # truncated
        frame(**valid("ping")) + b"\x00",  # trailing bytes
        msgpack.packb({1: 1, "v": 1}),  # non-string map key
        msgpack.packb(msgpack.ExtType(5, b"x")),
        msgpack.packb({"v": 1, "t": "req", "id": 1, "op": "ping", "x": msgpack.ExtType(1, b"")}),
        msgpack.packb({"v": 1, "t": "req", "id": 1, "op": "ping", "x": msgpack.Timestamp(1)}),
    ],
)
def test_non_frames_are_bad_frames(data: bytes) -> None:
    with pytest.raises(BadFrame):
        decode_request(data)
    with pytest.raises(BadFrame):
        decode_server_frame(data)
    assert request_id_of(data) is None


def test_text_is_a_bad_frame() -> None:
    text: Any = '{"v": 1, "t": "req", "id": 1, "op": "ping"}'
    with pytest.raises(BadFrame, match="binary"):
        decode_request(text)
    with pytest.raises(BadFrame):
        decode_server_frame(text)


def test_max_bytes_caps_lengths_inside_the_frame() -> None:
    data = frame(**valid("append", blob=b"x" * 100))
    assert decode_request(data, max_bytes=len(data)).entry.blob == b"x" * 100  # type: ignore[union-attr]
    with pytest.raises(BadFrame):
        decode_request(data, max_bytes=50)


def test_request_id_of() -> None:
    assert request_id_of(frame(id=77, op="nonsense")) == 77
    assert request_id_of(frame(id=ID_MAX)) == ID_MAX
    assert request_id_of(frame(id=ID_MAX + 1)) is None
    assert request_id_of(frame(id=True)) is None
    assert request_id_of(frame(id=-1)) is None
    assert request_id_of(frame(id="1")) is None
    assert request_id_of(b"\x93\x01\x02") is None


# -- fuzzing -------------------------------------------------------------------------------

mailboxes = st.binary(min_size=16, max_size=16)
keys32 = st.binary(min_size=32, max_size=32)
ids = st.integers(0, ID_MAX)
u64 = st.integers(0, U64_MAX)
ttls = st.none() | st.integers(1, 2**32)
entries = st.builds(
    Entry,
    mailboxes,
    st.binary(max_size=64),
    st.none() | st.binary(min_size=8, max_size=32),
    ttls,
)
requests: st.SearchStrategy[Request] = st.one_of(
    st.builds(Create, ids, mailboxes, keys32, keys32, st.none() | keys32, ttls),
    st.builds(
        Auth,
        ids,
        mailboxes,
        st.sampled_from(["read", "write"]),
        st.binary(min_size=64, max_size=64),
    ),
    st.builds(Append, ids, entries, st.none() | u64, st.lists(entries, max_size=3).map(tuple)),
    st.builds(Fetch, ids, mailboxes, u64, st.none() | st.integers(1, ID_MAX)),
    st.builds(Subscribe, ids, mailboxes, u64),
    st.builds(Unsubscribe, ids, mailboxes),
    st.builds(Trim, ids, mailboxes, u64),
    st.builds(
        Rotate,
        ids,
        mailboxes,
        keys32,
        keys32,
        st.none() | keys32,
        st.binary(min_size=64, max_size=64),
    ),
    st.builds(Ping, ids),
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), U64_MAX)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
structures = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10) | st.binary(max_size=4), children, max_size=5)
    ),
    max_leaves=20,
)
FIELD_NAMES = sorted(
    {"mailbox", "blob", "key", "ttl", "epoch", "also", "after", "limit", "through"}
    | {"read_key", "write_key", "admin_key", "sig", "role", "nonce", "limits", "seq"}
    | {"code", "message", "retry_after", "server", "id"}
)
# Request-shaped maps whose fields hold anything: they reach every field validator.
request_shaped = st.builds(
    lambda op, rid, fields: {"v": 1, "t": "req", "id": rid, "op": op, **fields},
    st.sampled_from(OPS),
    ids | structures,
    st.dictionaries(st.sampled_from(FIELD_NAMES), structures, max_size=6),
)
server_shaped = st.builds(
    lambda t, fields: {"v": 1, "t": t, **fields},
    st.sampled_from(["hello", "ok", "err", "push", "revoked", "req"]),
    st.dictionaries(st.sampled_from(FIELD_NAMES), structures, max_size=6),
)


def decodes_or_violates(data: bytes) -> None:
    try:
        result = decode_request(data)
    except ProtocolViolation:
        return
    assert decode_request(encode_request(result)) == result


def server_decodes_or_violates(data: bytes) -> None:
    with contextlib.suppress(ProtocolViolation):
        decode_server_frame(data)


def pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


@given(requests)
@FUZZ
def test_fuzz_round_trip(request_: Request) -> None:
    data = encode_request(request_)
    assert decode_request(data) == request_
    assert request_id_of(data) == request_.id


@given(st.binary(max_size=200))
@FUZZ
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    decodes_or_violates(data)
    server_decodes_or_violates(data)
    request_id_of(data)


@given(structures | request_shaped)
@FUZZ
def test_fuzz_msgpack_structures(value: Any) -> None:
    data = pack(value)
    decodes_or_violates(data)
    server_decodes_or_violates(data)
    request_id_of(data)


@given(server_shaped)
@FUZZ
def test_fuzz_server_shaped(value: Any) -> None:
    data = pack(value)
    server_decodes_or_violates(data)
    decodes_or_violates(data)


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 10_000), st.integers(0, 255)
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, steps: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, where, byte in steps:
        at = where % (len(out) + 1)
        if kind == "insert":
            out.insert(at, byte)
        elif out and kind == "flip":
            out[at % len(out)] ^= byte or 1
        elif out:
            del out[at % len(out)]
    return bytes(out)


@given(requests, mutations)
@FUZZ
def test_fuzz_mutated_requests(request_: Request, steps: list[tuple[str, int, int]]) -> None:
    data = mutate(encode_request(request_), steps)
    decodes_or_violates(data)
    server_decodes_or_violates(data)
    request_id_of(data)


server_frames = st.one_of(
    st.builds(
        lambda n, s: encode({"t": "hello", "nonce": n, "limits": {"max_fetch": 256}, "server": s}),
        st.binary(min_size=32, max_size=32),
        st.text(max_size=10),
    ),
    st.builds(lambda i, s: encode({"t": "ok", "id": i, "seq": s}), ids, u64),
    st.builds(
        lambda i, e: encode({"t": "err", "id": i, "code": "x", "message": "m", "epoch": e}),
        st.none() | ids,
        st.none() | u64,
    ),
    st.builds(
        lambda m, s, b: encode({"t": "push", "mailbox": m, "seq": s, "blob": b}),
        mailboxes,
        st.integers(1, U64_MAX),
        st.binary(max_size=32),
    ),
    st.builds(lambda m: encode({"t": "revoked", "mailbox": m}), mailboxes),
)


@given(server_frames, mutations)
@FUZZ
def test_fuzz_mutated_server_frames(data: bytes, steps: list[tuple[str, int, int]]) -> None:
    decode_server_frame(data)
    server_decodes_or_violates(mutate(data, steps))


@given(st.binary(max_size=100) | structures.map(pack) | requests.map(encode_request))
@FUZZ
def test_fuzz_request_id_of_never_raises(data: bytes) -> None:
    rid = request_id_of(data)
    assert rid is None or 0 <= rid <= ID_MAX
