"""Fuzz invite links, sealed join requests and invite records (backchannel/rooms/invites.py).

Contract: ``parse_invite`` and ``open_join_request`` raise ``InviteError`` subclasses
only; ``InviteRecord.from_bytes`` raises ``InviteMalformed`` only; what parses
round-trips. The same input bytes feed all three (as UTF-8 text for the link).
"""

from __future__ import annotations

import contextlib
import functools
import sys

from _common import instrumented, main

with instrumented():
    from backchannel.rooms.errors import InviteError, InviteMalformed
    from backchannel.rooms.invites import (
        InviteRecord,
        JoinRequest,
        create_invite,
        open_join_request,
        parse_invite,
        seal_join_request,
    )

NOW = 1_900_000_000


@functools.cache
def fixture() -> tuple[bytes, list[bytes]]:
    invite, record = create_invite(
        relay_url="wss://relay.example.org/v1/ws",
        drop_mailbox=b"D" * 16,
        drop_write_seed=b"S" * 32,
        expires_at=NOW + 3600,
        max_uses=3,
        hint="Lake Geneva",
    )
    request = JoinRequest(
        request_id=b"R" * 16,
        created_at_ms=NOW * 1000,
        key_package=b"\x00\x01" + b"K" * 300,
        display_name="Amira",
        inbox=b"I" * 16,
        inbox_write_seed=b"W" * 32,
    )
    screened = record.screen(request, now=NOW)
    return invite.secret, [
        invite.to_link().encode(),
        seal_join_request(invite, request),
        record.to_bytes(),
        screened.approve().to_bytes(),
    ]


def seeds() -> list[bytes]:
    return fixture()[1]


def one_input(data: bytes) -> None:
    secret, _ = fixture()
    text = data.decode("utf-8", "replace")
    try:
        invite = parse_invite(text, now=NOW)
    except InviteError:
        pass
    else:
        assert parse_invite(invite.to_link(), now=NOW) == invite
    with contextlib.suppress(InviteError):
        open_join_request(secret, data)
    try:
        record = InviteRecord.from_bytes(data)
    except InviteMalformed:
        pass
    else:
        assert InviteRecord.from_bytes(record.to_bytes()) == record


if __name__ == "__main__":
    main(one_input, seeds)
    sys.exit(0)
