"""E01-E05: decoders and implementation bugs, at the MLS and room layers (direct calls).

Coverage-guided fuzzing of the same decoders is the fuzzing suite's (tests/fuzz*); these
are the named regression tests of the attack table.
"""

from __future__ import annotations

import dataclasses
import time
import tracemalloc

import pytest

from backchannel.mls.codec import decode_varint, encode_varint
from backchannel.mls.errors import DecodeError
from backchannel.mls.framing import MLSMessage, PrivateMessage, SenderData, SenderDataAAD
from backchannel.mls.group import Group
from backchannel.mls.secret_tree import sender_data_key_nonce
from backchannel.rooms.access import JoinReply, RoomAccess, open_join_reply, seal_join_reply
from backchannel.rooms.content import Text, new_message_id
from backchannel.rooms.errors import InviteError, MessageRejected, PaddingError, RoomError
from backchannel.rooms.events import EpochAhead, ForkDetected
from backchannel.rooms.invites import (
    JoinRequest,
    create_invite,
    open_join_request,
    seal_join_request,
)
from backchannel.rooms.padding import BUCKETS, MAX_PADDED_BYTES, pad, unpad
from backchannel.rooms.room import Room
from backchannel.views import RoomChanged
from tests.e2e.harness import eventually

from .conftest import NOW, Net, copy_room, identity, key_package, readdress, room_group


def _view(room: Room) -> tuple[object, ...]:
    return (room.epoch, room.epoch_authenticator(), room.members(), room.policy)


def _rejected(room: Room, wire: bytes) -> None:
    """Refused: no content, no change; at most a warning drawn from the unauthenticated
    header (ForkDetected/EpochAhead, documented as possibly forged)."""
    before = _view(room)
    try:
        events = room.receive(wire, now=NOW)
    except RoomError:
        events = []
    assert all(isinstance(e, ForkDetected | EpochAhead) for e in events), events
    assert _view(room) == before


def test_E01_truncated_extended_and_flipped_messages_are_rejected() -> None:
    _, (fac, ben) = room_group(2)
    app = fac.send(Text(new_message_id(), NOW * 1000, "tag me"), now=NOW)
    commit = copy_room(fac)._group.commit(now=NOW).commit
    for wire in (app, commit):
        for cut in (1, 2, 16, 17, 32, len(wire) // 2, len(wire) - 1):
            _rejected(ben, wire[:-cut])
        _rejected(ben, wire + b"\x00")
        _rejected(ben, wire + bytes(16))
        for i in range(len(wire)):  # every byte, one bit each
            flipped = bytearray(wire)
            flipped[i] ^= 1 << (i % 8)
            _rejected(ben, bytes(flipped))
    assert isinstance(ben.receive(app, now=NOW)[0].content, Text)  # the original still works


def _with_sender(room: Room, wire: bytes, leaf: int, generation: int) -> bytes:
    """An insider re-seals a PrivateMessage's sender data with any leaf and generation."""
    state = room._group._state
    cs, secret = state.epoch.suite, state.epoch.secrets.sender_data_secret
    msg = MLSMessage.from_bytes(wire)
    pm = msg.body
    assert isinstance(pm, PrivateMessage)
    key, nonce = sender_data_key_nonce(cs, secret, pm.ciphertext)
    aad = SenderDataAAD(pm.group_id, pm.epoch, pm.content_type).to_bytes()
    sealed = cs.aead_seal(key, nonce, aad, SenderData(leaf, generation, b"\x00" * 4).to_bytes())
    return dataclasses.replace(
        msg, body=dataclasses.replace(pm, encrypted_sender_data=sealed)
    ).to_bytes()


@pytest.mark.parametrize(
    ("leaf", "generation"),
    [(2, 0), (2**31, 0), (2**32 - 1, 0), (0, 1000), (0, 2**31), (0, 2**32 - 1), (1, 5000)],
)
def test_E02_huge_leaf_index_or_generation_costs_bounded_time_and_memory(
    leaf: int, generation: int
) -> None:
    _, (fac, ben) = room_group(2)
    wire = fac.send(Text(new_message_id(), NOW * 1000, "x"), now=NOW)
    forged = _with_sender(ben, wire, leaf, generation)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        _rejected(ben, forged)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 5.0, elapsed  # a bound, not a timing target: O(window), not O(2^32)
    assert peak < 64 * 1024 * 1024, peak


def test_E03_non_minimal_varints_trailing_bytes_and_oversized_lengths_are_rejected() -> None:
    for value in (0, 0x3F, 0x40, 0x3FFF, 0x4000, 0x3FFFFFFF):
        enc = encode_varint(value)
        assert decode_varint(enc) == (value, len(enc))
    for bad in (b"\x40\x01", b"\x40\x3f", b"\x80\x00\x00\x3f", b"\x80\x00\x3f\xff", b"\xc0"):
        with pytest.raises(DecodeError):
            decode_varint(bad)
    _, (fac, ben) = room_group(2)
    wire = fac.send(Text(new_message_id(), NOW * 1000, "x"), now=NOW)
    with pytest.raises(DecodeError):
        MLSMessage.from_bytes(wire + b"\x00")  # trailing bytes
    # a declared length far beyond the data: refused before any allocation
    pm = MLSMessage.from_bytes(wire).body
    assert isinstance(pm, PrivateMessage)
    header = wire[: 4 + 1 + len(pm.group_id)]
    tracemalloc.start()
    try:
        for claimed in (b"\x80\x3f\xff\xff", b"\xbf\xff\xff\xff"):
            with pytest.raises(DecodeError):
                MLSMessage.from_bytes(header[:4] + claimed + b"\x00" * 8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
    _rejected(ben, header[:4] + b"\x80\x3f\xff\xff")


def _welcome_without_tree() -> tuple[bytes, bytes, object, Room]:
    _, (fac, _ben) = room_group(2)
    adder = copy_room(fac)
    state = adder._group._state
    state.config = dataclasses.replace(state.config, ratchet_tree_extension=False)
    dana_kp = key_package(identity("Dana"), now=NOW)
    out = adder.add_members([dana_kp.key_package.to_bytes()], now=NOW)
    adder.confirm_pending()
    assert out.welcome is not None
    return out.welcome, adder._group.ratchet_tree(), dana_kp, adder


def test_E04_tampered_ratchet_tree_in_a_welcome_is_rejected() -> None:
    welcome, tree, dana_kp, adder = _welcome_without_tree()
    positions = sorted({*range(0, len(tree), max(1, len(tree) // 60)), len(tree) - 1})
    for i in positions:
        bad = bytearray(tree)
        bad[i] ^= 0x01
        with pytest.raises(RoomError):
            Room.join(welcome, dana_kp, now=NOW, ratchet_tree=bytes(bad))  # type: ignore[arg-type]
    joined = Room.join(welcome, dana_kp, now=NOW, ratchet_tree=tree)  # type: ignore[arg-type]
    assert joined.epoch_authenticator() == adder.epoch_authenticator()
    assert Group  # the MLS entry point the room wraps


async def test_E04_welcome_reusing_an_existing_group_id_leaves_the_room_intact(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    fac, dana, mallory = [await net.party(n) for n in ("Farida", "Dana", "Mallory")]
    room = await net.room(fac, "Original", dana)
    await fac.c.send(room, "original history")
    await eventually(lambda: _has(dana, room, "original history"), 20)
    gid = bytes.fromhex(room)
    real_create = Group.create.__func__  # type: ignore[attr-defined]

    def create(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
        return real_create(cls, *args, **{**kwargs, "group_id": gid})

    monkeypatch.setattr(Group, "create", classmethod(create))
    # Mallory's client makes a room under the same group id (public to the relay anyway)
    evil = (await mallory.c.create_room("Impostor")).id
    monkeypatch.undo()
    assert evil == room
    link = readdress(await mallory.c.invite(evil), dana.proxy.url)
    rid = await dana.c.join(link)
    from backchannel.views import JoinRequested

    await eventually(lambda: [e for e in mallory.seen if isinstance(e, JoinRequested)], 20)
    req = next(e for e in mallory.seen if isinstance(e, JoinRequested))
    await mallory.c.approve(evil, req.request.id)
    await dana.c.wait_join(rid, 20)
    await dana.c.sync()
    summary = await dana.c.room(room)
    assert summary.title == "Original"
    assert "original history" in await dana.texts(room)
    assert dana.c.identity.identity_id in dana.state(room)[2]
    assert fac.c.identity.identity_id in dana.state(room)[2]
    _ = RoomChanged


async def _has(p: object, room: str, text: str) -> bool:
    return text in await p.texts(room)  # type: ignore[attr-defined]


def test_E05_padded_and_sealed_blobs_fail_closed_on_any_bit_flip() -> None:
    for n in (0, 1, 251, 252, 253, 1000, BUCKETS[-2] - 4, MAX_PADDED_BYTES - 4):
        data = bytes([n % 251]) * n
        padded = pad(data)
        assert len(padded) in BUCKETS and unpad(padded) == data
    with pytest.raises((PaddingError, ValueError)):
        pad(bytes(MAX_PADDED_BYTES))
    padded = pad(b"hello")
    for bad in (padded[:-1], padded + b"\x00", b"\xff\xff\xff\xff" + padded[4:], b"", b"\x00"):
        with pytest.raises(PaddingError):
            unpad(bad)
    # a sealed join request and a sealed join reply: any single flipped bit fails
    invite, record = create_invite(
        relay_url="ws://127.0.0.1:1/v1/ws",
        drop_mailbox=b"\x01" * 16,
        drop_write_seed=b"\x02" * 32,
        expires_at=NOW + 3600,
        max_uses=1,
    )
    kp = key_package(identity("Dana")).key_package.to_bytes()
    request = JoinRequest(b"\x03" * 16, NOW * 1000, kp, "Dana", b"\x04" * 16, b"\x05" * 32)
    blob = seal_join_request(invite, request)
    assert open_join_request(record.secret, blob).key_package == kp
    access = RoomAccess(b"\x06" * 16, b"\x07" * 32, b"\x08" * 32, b"\x09" * 32, 3, b"\x0a" * 32)
    reply = seal_join_reply(
        record.secret, b"\x05" * 32, b"\x03" * 16, JoinReply(True, b"W" * 500, access, 9)
    )
    for i in range(0, len(blob), 3):
        bad = bytearray(blob)
        bad[i] ^= 1 << (i % 8)
        with pytest.raises(InviteError):
            open_join_request(record.secret, bytes(bad))
    for i in range(0, len(reply), 3):
        bad = bytearray(reply)
        bad[i] ^= 1 << (i % 8)
        with pytest.raises(InviteError):
            open_join_reply(record.secret, b"\x05" * 32, b"\x03" * 16, bytes(bad))
    assert MessageRejected  # (the room-layer refusals are E01's)
