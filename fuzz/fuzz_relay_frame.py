"""Fuzz the relay's wire-frame decoders (relay/protocol.py), both directions.

Contract: ``decode_request`` and ``decode_server_frame`` raise ``ProtocolViolation``
(subclasses) and nothing else; ``request_id_of`` never raises; a decoded request
re-encodes to a frame that decodes to the same request.
"""

from __future__ import annotations

import contextlib
import sys

from _common import instrumented, main

with instrumented():
    from relay.errors import ProtocolViolation
    from relay.protocol import (
        Append,
        Auth,
        Create,
        Entry,
        Fetch,
        Ping,
        Subscribe,
        decode_request,
        decode_server_frame,
        encode,
        encode_request,
        request_id_of,
    )

MAILBOX = b"M" * 16


def seeds() -> list[bytes]:
    requests = [
        Create(1, MAILBOX, b"K" * 32, b"W" * 32, admin_key=b"A" * 32, ttl=86_400),
        Auth(3, MAILBOX, "read", b"S" * 64),
        Append(6, Entry(MAILBOX, b"commit", key=b"k" * 16, ttl=60), epoch=7),
        Fetch(9, MAILBOX, 5, limit=10),
        Subscribe(10, MAILBOX, 42),
        Ping(0),
    ]
    frames = [encode_request(r) for r in requests]
    frames += [
        encode({"v": 1, "t": "hello", "nonce": b"n" * 32, "limits": {"max": 1}, "server": "x"}),
        encode({"v": 1, "t": "ok", "id": 4, "seq": 9}),
        encode({"v": 1, "t": "err", "id": 4, "code": "stale", "message": "m", "epoch": 3}),
        encode({"v": 1, "t": "push", "mailbox": MAILBOX, "seq": 3, "blob": b"ciphertext"}),
        encode({"v": 1, "t": "revoked", "mailbox": MAILBOX, "reason": "rotated"}),
    ]
    return frames


def one_input(data: bytes) -> None:
    try:
        request = decode_request(data)
    except ProtocolViolation:
        pass
    else:
        assert decode_request(encode_request(request)) == request
    with contextlib.suppress(ProtocolViolation):
        decode_request(data, max_bytes=64)
    with contextlib.suppress(ProtocolViolation):
        decode_server_frame(data)
    rid = request_id_of(data)
    assert rid is None or 0 <= rid < 2**32


if __name__ == "__main__":
    main(one_input, seeds)
    sys.exit(0)
