"""The client's decoding of relay frames: only the documented error, bounded, no state changed.

Issue #15, item 4: the relay is untrusted, and a frame it sends must not crash the
client (``bytes(2**62)``, ``int()`` of 5,000 digits), make it allocate far more than the
frame, or change anything before it is refused. Here, with hypothesis:

* ``decode_server_frame`` then ``decode_answer`` (for every op, with the request that
  asked) on hostile ``ok`` answers, server-shaped maps and mutated valid frames: they
  raise ``ProtocolViolation`` and nothing else, and whatever they accept is within the
  protocol's bounds and survives what ``RelayConnection`` does with it (``int()``,
  ``bytes()``), cheaply;
* ``RelaySession`` fed a stream of WebSocket messages: the first bad one is reported as
  a ``ProtocolMismatch`` (the read loop then closes the session) and leaves the session
  as it was (its hello, its queued events, no request answered);
* frames of the protocol's largest size made of the smallest objects decode in memory
  about their own size.

``tests/relay/test_protocol.py`` has the example-based bounds and the request side;
``tests/transport/test_relay_bounds.py`` the same against a live socket.
"""

from __future__ import annotations

import asyncio
import copy
import math
import tracemalloc
from typing import Any

import msgpack
import pytest
from aiohttp import WSMessage, WSMsgType
from hypothesis import given
from hypothesis import strategies as st

from backchannel.transport.errors import ProtocolMismatch
from backchannel.transport.session import RelaySession
from relay.errors import ProtocolViolation
from relay.protocol import (
    ALSO_MAX,
    BLOB_BYTES_MAX,
    CODE_CHARS_MAX,
    FETCH_BYTES_MAX,
    FETCH_ENTRIES_MAX,
    ID_MAX,
    MESSAGE_CHARS_MAX,
    OPS,
    RETRY_AFTER_MAX,
    REVOKED_REASONS,
    SERVER_CHARS_MAX,
    SERVER_FRAME_BYTES_MAX,
    TTL_MAX,
    U64_MAX,
    ErrFrame,
    Hello,
    OkFrame,
    Push,
    Revoked,
    UnknownFrame,
    decode_answer,
    decode_server_frame,
    encode,
)

from . import fuzz_settings, mutated

MAILBOX = b"M" * 16

# -- strategies -----------------------------------------------------------------------------

# Integers around every boundary the protocol has, and far beyond.
edgy_ints = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from(
        [0, 1, 2, 255, 256, ID_MAX, ID_MAX + 1, TTL_MAX, TTL_MAX + 1, U64_MAX, U64_MAX + 1, -1]
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    edgy_ints,
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=24),
    st.sampled_from(["9" * 5000, "1", "", "\x1b[2J", b"\x00" * 16]),
)
structures = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
# [seq, blob]-ish entries: mostly the right shape, with wrong types and ranges mixed in.
entry_like = st.one_of(
    st.tuples(edgy_ints, st.binary(max_size=16)).map(list),
    st.tuples(edgy_ints | scalars, scalars).map(list),
    st.lists(scalars, max_size=3),
    scalars,
)
ANSWER_FIELDS = {
    "create": {"ttl": edgy_ints | scalars},
    "append": {
        "seq": edgy_ints | scalars,
        "duplicate": st.booleans() | scalars,
        "epoch": edgy_ints | scalars,
        "also": st.lists(edgy_ints, max_size=4) | structures,
    },
    "fetch": {
        "entries": st.lists(entry_like, max_size=6) | structures,
        "head": edgy_ints | scalars,
        "more": st.booleans() | scalars,
    },
    "trim": {"deleted": edgy_ints | scalars},
}
request_fields = st.fixed_dictionaries(
    {},
    optional={
        "after": edgy_ints | scalars,
        "limit": edgy_ints | scalars,
        "through": edgy_ints | scalars,
        "epoch": edgy_ints | scalars,
        "also": st.lists(st.just({}), max_size=4) | scalars,
    },
)


@st.composite
def answers(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(op, the ok frame's result fields, the request's fields)."""
    op = draw(st.sampled_from([*OPS, "future_op"]))
    shape = ANSWER_FIELDS.get(op, {})
    fields = draw(st.fixed_dictionaries({}, optional=shape)) if shape else {}
    fields |= draw(st.dictionaries(st.text(max_size=8), structures, max_size=2))
    return op, fields, draw(request_fields)


def pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


# -- what an accepted frame or answer may be ------------------------------------------------


def is_uint(value: object, hi: int = U64_MAX, lo: int = 0) -> bool:
    return type(value) is int and lo <= value <= hi


def check_accepted_frame(frame: object) -> None:
    """Everything a decoded frame holds is within the protocol's bounds."""
    if isinstance(frame, Hello):
        assert len(frame.nonce) == 32 and len(frame.server) <= SERVER_CHARS_MAX
        for value in frame.limits.values():
            assert type(value) in (int, float) and value >= 0 and math.isfinite(value)
    elif isinstance(frame, OkFrame):
        assert is_uint(frame.id, ID_MAX)
    elif isinstance(frame, ErrFrame):
        assert frame.id is None or is_uint(frame.id, ID_MAX)
        assert 1 <= len(frame.code) <= CODE_CHARS_MAX and len(frame.message) <= MESSAGE_CHARS_MAX
        assert frame.epoch is None or is_uint(frame.epoch)
        assert frame.retry_after is None or 0 <= frame.retry_after <= RETRY_AFTER_MAX
    elif isinstance(frame, Push):
        assert len(frame.mailbox) == 16 and is_uint(frame.seq, lo=1)
        assert type(frame.blob) is bytes and len(frame.blob) <= BLOB_BYTES_MAX
    elif isinstance(frame, Revoked):
        assert len(frame.mailbox) == 16 and frame.reason in REVOKED_REASONS
    else:
        assert isinstance(frame, UnknownFrame)


def consume(op: str, result: dict[str, Any], request: dict[str, Any]) -> None:
    """What RelayConnection does with an answer (connection.py), and the answer's bounds."""
    if op == "create":
        assert is_uint(int(result["ttl"]), TTL_MAX, 1)
    elif op == "append":
        assert is_uint(int(result["seq"]), lo=1)
        assert type(bool(result.get("duplicate", False))) is bool
        assert result.get("epoch") is None or is_uint(result["epoch"])
        also = tuple(int(s) for s in result.get("also", ()))
        assert len(also) <= ALSO_MAX and all(is_uint(s) for s in also)
    elif op == "fetch":
        entries = tuple((int(s), bytes(b)) for s, b in result["entries"])
        head, more = int(result["head"]), bool(result["more"])
        assert is_uint(head) and type(result["more"]) is bool and isinstance(more, bool)
        assert entries or not more
        limit = request.get("limit")
        cap = limit if is_uint(limit) and limit else FETCH_ENTRIES_MAX
        assert len(entries) <= min(cap, FETCH_ENTRIES_MAX)
        seqs = [s for s, _ in entries]
        assert seqs == sorted(set(seqs)) and all(1 <= s <= head for s in seqs)
        after = request.get("after")
        if is_uint(after):
            assert all(s > after for s in seqs)
        if len(entries) > 1:
            assert sum(len(b) for _, b in entries) <= FETCH_BYTES_MAX
    elif op == "trim":
        assert is_uint(int(result["deleted"]))
    else:
        assert result == {}


def decode_ok(op: str, data: bytes, request: dict[str, Any]) -> None:
    """decode_server_frame then, for an ok frame, decode_answer: the client's whole path."""
    try:
        frame = decode_server_frame(data)
    except ProtocolViolation:
        return
    check_accepted_frame(frame)
    if isinstance(frame, OkFrame):
        before = copy.deepcopy((frame.fields, request))
        try:
            result = decode_answer(op, frame.fields, request)
        except ProtocolViolation:
            result = None
        assert (frame.fields, request) == before  # the decoder changes nothing it is given
        if result is not None:
            consume(op, result, request)


# -- properties ------------------------------------------------------------------------------


@given(answers())
@fuzz_settings(400)
def test_hostile_answers_raise_only_protocol_violation(
    case: tuple[str, dict[str, Any], dict[str, Any]],
) -> None:
    op, fields, request = case
    decode_ok(op, encode({"t": "ok", "id": 1, **fields}), request)


SEEDS = [
    encode({"t": "hello", "nonce": b"n" * 32, "limits": {"max_fetch": 256}, "server": "r/1"}),
    encode({"t": "ok", "id": 1, "ttl": 86_400}),
    encode({"t": "ok", "id": 2, "seq": 7, "duplicate": True, "epoch": 3, "also": [8, 0]}),
    encode({"t": "ok", "id": 3, "entries": [[4, b"abc"], [5, b""]], "head": 9, "more": True}),
    encode({"t": "ok", "id": 4, "deleted": 2}),
    encode({"t": "err", "id": 5, "code": "stale_epoch", "message": "m", "epoch": 4}),
    encode({"t": "err", "code": "rate_limited", "message": "m", "retry_after": 0.25}),
    encode({"t": "push", "mailbox": MAILBOX, "seq": 3, "blob": b"ciphertext"}),
    encode({"t": "revoked", "mailbox": MAILBOX, "reason": "expired"}),
]
REQUESTS = {
    "append": {"epoch": 2, "also": [{}, {}]},
    "fetch": {"after": 3, "limit": 2},
    "trim": {"through": 5},
}


@given(mutated(SEEDS), st.sampled_from([*OPS, "future_op"]))
@fuzz_settings(400)
def test_mutated_relay_frames_raise_only_protocol_violation(data: bytes, op: str) -> None:
    decode_ok(op, data, REQUESTS.get(op, {}))


FRAME_FIELDS = sorted(
    {"id", "nonce", "limits", "server", "code", "message", "epoch", "retry_after"}
    | {"mailbox", "seq", "blob", "reason", "entries", "head", "more", "deleted"}
)
server_shaped = st.builds(
    lambda t, fields: {"v": 1, "t": t, **fields},
    st.sampled_from(["hello", "ok", "err", "push", "revoked", "req", "later"]) | scalars,
    st.dictionaries(
        st.sampled_from(FRAME_FIELDS),
        structures
        | st.binary(min_size=16, max_size=16)
        | st.binary(min_size=32, max_size=32)
        | st.dictionaries(st.sampled_from(["max_fetch", "max_blob_bytes", "x"]), scalars),
        max_size=6,
    ),
)


@given(server_shaped, st.sampled_from(OPS))
@fuzz_settings(400)
def test_server_shaped_maps_raise_only_protocol_violation(value: Any, op: str) -> None:
    decode_ok(op, pack(value), REQUESTS.get(op, {}))


def test_the_seeds_are_accepted() -> None:
    for data in SEEDS:
        check_accepted_frame(decode_server_frame(data))


# -- the session: the first bad message changes nothing ---------------------------------------


class _IdleSocket:
    """Stands in for the WebSocket: no message ever comes from it (the test feeds them)."""

    closed = False
    close_code = None

    def __aiter__(self) -> _IdleSocket:
        return self

    async def __anext__(self) -> WSMessage:
        await asyncio.Event().wait()
        raise StopAsyncIteration

    async def close(self, **_: Any) -> bool:
        return True


def snapshot(session: RelaySession) -> tuple[Any, ...]:
    events = list(session._events._queue)  # type: ignore[attr-defined]
    return session.hello, events


HELLO = SEEDS[0]
messages = st.one_of(
    mutated(SEEDS).map(lambda d: WSMessage(WSMsgType.BINARY, d, None)),
    st.sampled_from(SEEDS).map(lambda d: WSMessage(WSMsgType.BINARY, d, None)),
    server_shaped.map(lambda v: WSMessage(WSMsgType.BINARY, pack(v), None)),
    st.text(max_size=20).map(lambda t: WSMessage(WSMsgType.TEXT, t, None)),
)


def outcome(fut: asyncio.Future[Any]) -> object:
    if not fut.done():
        return "waiting"
    return type(fut.exception()) if fut.exception() is not None else ("answered", fut.result())


@given(st.lists(messages, min_size=1, max_size=8), st.sampled_from(["fetch", "append", "ping"]))
@fuzz_settings(200)
def test_a_bad_message_leaves_the_session_as_it_was(messages: list[WSMessage], op: str) -> None:
    """Requests wait under ids 1-5 (the ids the seeds answer); after the hello, messages
    come until one is refused. That one changes neither the hello nor the queued events,
    and answers nothing: only a request it claimed to answer fails (ProtocolMismatch),
    as all the others will when the read loop closes the session."""

    async def run() -> None:
        session = RelaySession(_IdleSocket(), None, False)  # type: ignore[arg-type]
        try:
            loop = asyncio.get_running_loop()
            futures: dict[int, asyncio.Future[dict[str, Any]]] = {}
            for request_id in range(1, 6):
                futures[request_id] = loop.create_future()
                session._pending[request_id] = (op, REQUESTS.get(op, {}), futures[request_id])
            for message in [WSMessage(WSMsgType.BINARY, HELLO, None), *messages]:
                before = snapshot(session), {i: outcome(f) for i, f in futures.items()}
                error = session._receive(message)
                if error is None:
                    continue
                assert isinstance(error, ProtocolMismatch)
                assert snapshot(session) == before[0]
                for request_id, fut in futures.items():
                    was, now = before[1][request_id], outcome(fut)
                    assert now == was or (was == "waiting" and now is ProtocolMismatch)
                return
        finally:
            session._reader.cancel()
            await asyncio.gather(session._reader, return_exceptions=True)

    asyncio.run(run())


# -- memory: the largest frame, of the smallest objects ------------------------------------


def densest(kind: str) -> bytes:
    """An ok frame of nearly SERVER_FRAME_BYTES_MAX bytes of tiny msgpack objects."""
    item = {"str": "ab", "float": 1.5, "map": {}, "int": 65_536, "list": []}[kind]
    row = [item] * FETCH_ENTRIES_MAX
    size = len(pack(row))
    rows = (SERVER_FRAME_BYTES_MAX - 64) // size
    return encode({"t": "ok", "id": 1, "x": [row] * min(rows, FETCH_ENTRIES_MAX)})


@pytest.mark.parametrize("kind", ["str", "float", "map", "int", "list"])
def test_the_largest_frame_of_tiny_objects_decodes_in_bounded_memory(kind: str) -> None:
    data = densest(kind)
    assert len(data) <= SERVER_FRAME_BYTES_MAX
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolViolation):
            decode_server_frame(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A full decode would build millions of objects (hundreds of MB); the element budget
    # stops it after a full fetch page's worth.
    assert peak < len(data) + (8 << 20), f"decoding allocated {peak} bytes"
