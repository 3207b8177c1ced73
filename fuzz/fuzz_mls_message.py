"""Fuzz MLSMessage decoding and Group.process on a fixed group state (security-attacks.md §3.4).

A room of three (fac, ann, bob; ciphersuite 1) is built once; ann's saved group state is
the fixture. Every input is decoded as an ``MLSMessage`` (it either raises
``DecodeError`` or re-encodes to exactly the input) and then processed by a fresh copy
of ann's group: it is either one of the real messages, or rejected with
``DecodeError`` / ``ValidationError`` / ``VerificationError`` and the state unchanged.
"""

from __future__ import annotations

import functools
import sys

from _common import instrumented, main

with instrumented():
    from backchannel.mls.credentials import BasicCredential
    from backchannel.mls.crypto.signatures import SignaturePrivateKey
    from backchannel.mls.crypto.suites import CipherSuite, get_cipher_suite
    from backchannel.mls.errors import DecodeError, ValidationError, VerificationError
    from backchannel.mls.framing import MLSMessage
    from backchannel.mls.group import Group
    from backchannel.rooms import Text
    from backchannel.rooms.room import Room

SUITE = CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519
NOW = 1_700_000_000
REJECTED = (DecodeError, ValidationError, VerificationError)


@functools.cache
def fixture() -> tuple[bytes, tuple[bytes, ...]]:
    """ann's saved MLS state, and real messages for ann (application, proposal, commit)."""

    def key() -> SignaturePrivateKey:
        return SignaturePrivateKey.generate(get_cipher_suite(SUITE).signature_scheme)

    fac = Room.create(SUITE, BasicCredential(b"fac"), key(), title="Fuzz", now=NOW)
    rooms = {"fac": fac}
    for name in ("ann", "bob"):
        bundle = Room.key_package(SUITE, BasicCredential(name.encode()), key(), now=NOW)
        out = fac.add_members([bundle.key_package.to_bytes()], now=NOW)
        for other in rooms.values():
            if other is not fac:
                other.receive(out.commit, now=NOW)
        fac.confirm_pending()
        assert out.welcome is not None
        rooms[name] = Room.join(out.welcome, bundle, now=NOW)
    ann_state = rooms["ann"]._group.to_bytes()
    valid = [
        fac.send(Text(b"m" * 16, NOW * 1000, "hello"), now=NOW),
        rooms["bob"].send(Text(b"n" * 16, NOW * 1000, "x" * 300), now=NOW),
        rooms["bob"].leave(),
    ]
    commit = fac.self_update(now=NOW)
    valid.append(commit.commit)
    fac.discard_pending()
    return ann_state, tuple(valid)


def seeds() -> list[bytes]:
    return list(fixture()[1])


def one_input(data: bytes) -> None:
    state, valid = fixture()
    try:
        message = MLSMessage.from_bytes(data)
    except DecodeError:
        pass
    else:
        assert message.to_bytes() == data, "MLSMessage encoding is not canonical"
    group = Group.from_bytes(state)
    try:
        group.process(data)
    except REJECTED:
        assert group.to_bytes() == state, "a rejected message changed the group state"
        return
    assert data in valid, "a message that is not one of the real ones was accepted"


if __name__ == "__main__":
    main(one_input, seeds)
    sys.exit(0)
