"""Fuzz the client's decoding of relay frames: ``decode_server_frame``, then ``decode_answer``.

The relay is untrusted (issue #15, item 4). Contract, for any bytes:

* ``decode_server_frame`` raises ``ProtocolViolation`` (subclasses) and nothing else, and
  a frame it accepts is within the protocol's bounds (lengths, integers, strings);
* for an ``ok`` frame, ``decode_answer`` for every op (with a request of that op) raises
  ``ProtocolViolation`` and nothing else, changes neither the fields nor the request, and
  an answer it accepts survives what ``RelayConnection`` does with it (``int()``,
  ``bytes()``) within the bounds the protocol and the request set.

A memory blow-up or a hang is a finding too (README.md): the decoders must refuse a
frame's lengths and counts before building them.
"""

from __future__ import annotations

import copy
import math
import sys
from typing import Any

from _common import instrumented, main

with instrumented():
    from relay.errors import ProtocolViolation
    from relay.protocol import (
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

MAILBOX = b"M" * 16
#: The request each op's answer is checked against (bounds that depend on it included).
REQUESTS: dict[str, dict[str, Any]] = {
    "append": {"epoch": 2, "also": [{}, {}]},
    "fetch": {"after": 3, "limit": 2},
    "trim": {"through": 5},
}


def seeds() -> list[bytes]:
    return [
        encode({"t": "hello", "nonce": b"n" * 32, "limits": {"max_fetch": 256}, "server": "r"}),
        encode({"t": "ok", "id": 1, "ttl": 86_400}),
        encode({"t": "ok", "id": 2, "seq": 7, "duplicate": True, "epoch": 3, "also": [8, 0]}),
        encode({"t": "ok", "id": 3, "entries": [[4, b"abc"], [5, b""]], "head": 9, "more": True}),
        encode({"t": "ok", "id": 4, "deleted": 2}),
        encode({"t": "ok", "id": 5}),
        encode({"t": "err", "id": 6, "code": "stale_epoch", "message": "m", "epoch": 4}),
        encode({"t": "err", "code": "rate_limited", "message": "m", "retry_after": 0.25}),
        encode({"t": "push", "mailbox": MAILBOX, "seq": 3, "blob": b"ciphertext"}),
        encode({"t": "revoked", "mailbox": MAILBOX, "reason": "expired"}),
        encode({"t": "later", "x": [1, {"y": b"z"}]}),
    ]


def _uint(value: object, hi: int = U64_MAX, lo: int = 0) -> bool:
    return type(value) is int and lo <= value <= hi


def _check_frame(frame: object) -> None:
    if isinstance(frame, Hello):
        assert len(frame.nonce) == 32
        assert len(frame.server) <= SERVER_CHARS_MAX
        assert all(
            type(v) in (int, float) and v >= 0 and math.isfinite(v) for v in frame.limits.values()
        )
    elif isinstance(frame, OkFrame):
        assert _uint(frame.id, ID_MAX)
    elif isinstance(frame, ErrFrame):
        assert frame.id is None or _uint(frame.id, ID_MAX)
        assert 1 <= len(frame.code) <= CODE_CHARS_MAX
        assert len(frame.message) <= MESSAGE_CHARS_MAX
        assert frame.epoch is None or _uint(frame.epoch)
        assert frame.retry_after is None or 0 <= frame.retry_after <= RETRY_AFTER_MAX
    elif isinstance(frame, Push):
        assert len(frame.mailbox) == 16
        assert _uint(frame.seq, lo=1)
        assert type(frame.blob) is bytes
        assert len(frame.blob) <= BLOB_BYTES_MAX
    elif isinstance(frame, Revoked):
        assert len(frame.mailbox) == 16
        assert frame.reason in REVOKED_REASONS
    else:
        assert isinstance(frame, UnknownFrame)


def _consume(op: str, result: dict[str, Any], request: dict[str, Any]) -> None:
    """What RelayConnection does with each answer (connection.py), and its bounds."""
    if op == "create":
        assert _uint(int(result["ttl"]), TTL_MAX, 1)
    elif op == "append":
        assert _uint(int(result["seq"]), lo=1)
        assert isinstance(bool(result.get("duplicate", False)), bool)
        assert result.get("epoch") is None or _uint(result["epoch"])
        also = tuple(int(s) for s in result.get("also", ()))
        assert len(also) == len(request["also"])
        assert all(_uint(s) for s in also)
    elif op == "fetch":
        entries = tuple((int(s), bytes(b)) for s, b in result["entries"])
        head = int(result["head"])
        assert type(result["more"]) is bool
        assert _uint(head)
        assert entries or not result["more"]
        assert len(entries) <= min(request["limit"], FETCH_ENTRIES_MAX)
        seqs = [s for s, _ in entries]
        assert seqs == sorted(set(seqs))
        assert all(request["after"] < s <= head for s in seqs)
        assert len(entries) < 2 or sum(len(b) for _, b in entries) <= FETCH_BYTES_MAX
    elif op == "trim":
        assert _uint(int(result["deleted"]), request["through"])
    else:
        assert result == {}


def one_input(data: bytes) -> None:
    try:
        frame = decode_server_frame(data)
    except ProtocolViolation:
        return
    _check_frame(frame)
    if not isinstance(frame, OkFrame):
        return
    for op in (*OPS, "later_op"):
        request = REQUESTS.get(op, {})
        before = copy.deepcopy((frame.fields, request))
        try:
            result = decode_answer(op, frame.fields, request)
        except ProtocolViolation:
            result = None
        assert (frame.fields, request) == before, "decode_answer changed its input"
        if result is not None:
            _consume(op, result, request)


if __name__ == "__main__":
    main(one_input, seeds)
    sys.exit(0)
