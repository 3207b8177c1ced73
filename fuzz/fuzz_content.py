"""Fuzz room content, padding and the room policy extension (backchannel/rooms/).

Contract: ``decode_content`` raises ``ContentDecodeError`` only, ``unpad`` raises
``PaddingError`` only, ``decode_policy`` raises ``PolicyDecodeError`` only; what decodes
re-encodes to something that decodes to the same value.
"""

from __future__ import annotations

import contextlib
import sys

from _common import instrumented, main

with instrumented():
    from backchannel.rooms.content import (
        Delete,
        Edit,
        FileManifest,
        Reaction,
        Text,
        decode_content,
        encode_content,
    )
    from backchannel.rooms.errors import ContentDecodeError, PaddingError, PolicyDecodeError
    from backchannel.rooms.padding import pad, unpad
    from backchannel.rooms.policy import Role, RoomPolicy, decode_policy, encode_policy

MID, TS = b"m" * 16, 1_700_000_000_000


def seeds() -> list[bytes]:
    contents = [
        Text(MID, TS, "hello"),
        Text(MID, TS, "a reply", b"r" * 16, b"a" * 16),
        Edit(MID, TS, b"t" * 16, "edited"),
        Delete(MID, TS, b"t" * 16),
        Reaction(MID, TS, b"t" * 16, b"a" * 16, "+1"),
        FileManifest(MID, TS, "report.pdf", 1000, b"h" * 32, 4096, "application/pdf"),
    ]
    out = [encode_content(c) for c in contents]
    policy = RoomPolicy(title="Fuzz", roles=((b"fac", Role.FACILITATOR),))
    out.append(encode_policy(policy))
    out.append(pad(b"plain"))
    return out


def one_input(data: bytes) -> None:
    try:
        content = decode_content(data)
    except ContentDecodeError:
        pass
    else:
        assert decode_content(encode_content(content)) == content
    with contextlib.suppress(PaddingError):
        unpad(data)
    try:
        policy = decode_policy(data)
    except PolicyDecodeError:
        pass
    else:
        assert encode_policy(policy) == data, "policy encoding is not canonical"


if __name__ == "__main__":
    main(one_input, seeds)
    sys.exit(0)
