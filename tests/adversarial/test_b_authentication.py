"""B01-B08: authentication, impersonation and confusion between channels.

B02 and B04 do not apply: the client has no key forwarding, history sharing, key
backup, export or device sync (see their one-line tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgpack

from backchannel.errors import BackchannelError
from backchannel.rooms.safety import LABEL as SAFETY_LABEL
from backchannel.rooms.safety import safety_number
from backchannel.views import NewMessage
from relay import protocol
from tests.e2e.harness import eventually

from .conftest import Net, Party, copy_room
from .hostile_relay import Frame, Link


async def _has(p: Party, room: str, text: str) -> bool:
    return text in await p.texts(room)


async def _settle(*ps: Party) -> None:
    for p in ps:
        with contextlib.suppress(BackchannelError):  # a hostile relay may withhold it
            await p.c.sync(timeout=3)
    await asyncio.sleep(0.5)


async def test_B01_safety_numbers_come_from_mls_keys_and_ids_do_not_cross_namespaces(
    net: Net,
) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Verify", ben)
    member, number = await fac.c.safety_number(room, "Ben")
    _, theirs = await ben.c.safety_number(room, fac.c.identity.identity_id.hex())
    expected = safety_number(
        (fac.c.identity.identity_id, fac.c.identity.public_key()),
        (ben.c.identity.identity_id, ben.c.identity.public_key()),
    )
    assert number == theirs == str(expected)
    assert member.id == ben.c.identity.identity_id.hex()
    # the fingerprint is length-prefixed under its own label: an identity that is
    # somebody's key (and the reverse) gives another number
    ident, key = ben.c.identity.identity_id, ben.c.identity.public_key()
    me = (fac.c.identity.identity_id, fac.c.identity.public_key())
    assert safety_number(me, (key, ident)) != safety_number(me, (ident, key))
    assert safety_number(me, (ident + key[:1], key[1:])) != safety_number(me, (ident, key))
    assert SAFETY_LABEL.startswith(b"backchannel/") and SAFETY_LABEL.endswith(b"\x00")
    # a name that spells another member's id never selects the other member by confusion
    dana = await net.party(ben.c.identity.identity_id.hex())
    await net.join(fac, dana, room)
    await fac.c.sync()
    chosen, _ = await fac.c.safety_number(room, ben.c.identity.identity_id.hex())
    assert chosen.id == ben.c.identity.identity_id.hex()  # the id namespace wins, exactly


async def test_B02_does_not_apply() -> None:
    """The client never shares history or forwards keys: a message is shown as from X
    only when X's MLS leaf signature authenticates it (B03, B05, B06)."""


async def test_B03_state_changes_through_another_channel_are_ignored(net: Net) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room_a = await net.room(fac, "Room A", ben)
    room_b = (await ben.c.create_room("Room B")).id  # Ben facilitates B
    await net.join(ben, fac, room_b)
    before = fac.state(room_a)
    # another room's well-signed commit: Ben (facilitator of B) removes Farida there
    b_room = copy_room(ben.live(room_b).room)
    leaf = next(m.leaf_index for m in b_room.members() if m.member_id == fac.c.identity.identity_id)
    other = b_room._group.commit(remove=[leaf], now=int(time.time()), include_proposals=False)
    # a relay plaintext "policy" frame and an application-message-shaped state change
    plain = msgpack.packb(
        {"t": "policy", "facilitators": [ben.c.identity.identity_id]}, use_bin_type=True
    )
    # Ben is in room A too: he can seal for its mailbox, so the MLS checks are reached
    for blob in (ben.seal(room_a, other.commit), ben.seal(room_a, plain), other.commit, plain):
        await fac.proxy.link.inject_push(fac.mailbox(room_a), blob)
    await fac.proxy.link.inject_frame({"t": "policy", "mailbox": fac.mailbox(room_a)})
    await _settle(fac)
    assert fac.state(room_a) == before
    roles = {m.name: m.role for m in await fac.c.members(room_a)}
    assert roles == {"Farida": "facilitator", "Ben": "participant"}


async def test_B04_does_not_apply() -> None:
    """There is no backup, export or device sync: the client never encrypts its state to a
    key it did not generate (the store key comes from the local passphrase only)."""


async def test_B05_rewritten_envelope_does_not_move_a_message(net: Net) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room_a = await net.room(fac, "Envelope A", ben)
    room_b = await net.room(fac, "Envelope B", ben)
    mb_a, mb_b = fac.mailbox(room_a), fac.mailbox(room_b)
    mode = {"move": True}

    async def rewrite(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("t") != "push" or f["mailbox"] != mb_a:
            return None
        if mode["move"]:  # the room label (mailbox) is rewritten: A's message shown as B's?
            await link.inject_push(mb_b, bytes(f["blob"]))
            return []
        return [{**f, "seq": f["seq"] + 7}]  # the sequence number is rewritten

    fac.proxy.on_down = rewrite
    await ben.c.send(room_a, "meant for room A")
    await eventually(lambda: len(fac.proxy.push_frames(mb_b)) > 0, 10)
    await _settle(fac)
    assert "meant for room A" not in await fac.texts(room_b)
    mode["move"] = False
    await ben.c.send(room_a, "second for room A")
    await eventually(lambda: _has(fac, room_a, "second for room A"), 20)
    shown = [m for m in await fac.c.history(room_a) if m.text == "second for room A"]
    assert len(shown) == 1 and shown[0].sender == ben.c.identity.identity_id.hex()
    assert shown[0].sender_name == "Ben"


async def test_B06_held_message_is_not_attributed_to_the_leaf_reuser(net: Net) -> None:
    fac, ben, chen = [await net.party(n) for n in ("Farida", "Ben", "Chen")]
    room = await net.room(fac, "Leaf reuse", ben, chen)
    old_mb = fac.mailbox(room)
    chen_leaf = next(
        m.leaf_index
        for m in fac.live(room).room.members()
        if m.member_id == chen.c.identity.identity_id
    )
    held: list[bytes] = []

    async def hold(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("t") == "push" and f["mailbox"] == old_mb and not held:
            # Chen's message is the next room push: keep it back
            held.append(bytes(f["blob"]))
            return []
        return None

    fac.proxy.on_down = ben.proxy.on_down = hold
    await chen.c.send(room, "Chen wrote this")
    await eventually(lambda: bool(held), 10)
    fac.proxy.on_down = ben.proxy.on_down = None
    await fac.c.remove(room, "Chen")
    dana = await net.party("Dana")
    await net.join(fac, dana, room)
    await eventually(lambda: fac.state(room) == ben.state(room) and len(fac.state(room)[2]) == 3)
    dana_leaf = next(
        m.leaf_index
        for m in fac.live(room).room.members()
        if m.member_id == dana.c.identity.identity_id
    )
    assert dana_leaf == chen_leaf, "Dana should take Chen's leaf for this attack"
    for p in (fac, ben):
        await p.proxy.link.inject_push(p.mailbox(room), held[0])
    await _settle(fac, ben)
    for p in (fac, ben):
        for m in await p.c.history(room):
            if m.text == "Chen wrote this":
                assert m.sender == chen.c.identity.identity_id.hex(), p.name
                assert m.sender != dana.c.identity.identity_id.hex()


async def test_B07_relay_auth_keys_and_labels_are_separate_from_mls(net: Net) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Keys", ben)
    await fac.c.send(room, "x")
    await _settle(fac, ben)
    identity_keys = {p.c.identity.public_key() for p in (fac, ben)}
    mailbox_keys: set[bytes] = set()
    auths = 0
    for p in (fac, ben):
        for direction, _, f in p.proxy.frames:
            if direction == "up" and f.get("op") in {"create", "rotate"}:
                mailbox_keys |= {
                    bytes(f[k]) for k in ("read_key", "write_key", "admin_key") if k in f
                }
            if direction == "up" and f.get("op") == "auth":
                auths += 1
    assert mailbox_keys and auths
    assert not identity_keys & mailbox_keys  # no MLS signature key ever signs relay auth
    assert protocol._AUTH_CONTEXT.startswith(b"backchannel-relay/1 ")
    assert not protocol._AUTH_CONTEXT.startswith(b"MLS 1.0 ")  # MLS SignWithLabel prefix


async def test_B08_reflected_message_and_commit_change_nothing(net: Net) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Mirror", ben)
    other = await net.room(fac, "Other room", ben)
    await ben.c.send(room, "reflect me")
    await eventually(lambda: _has(fac, room, "reflect me"), 20)
    blob = bytes(ben.proxy.append_frames(ben.mailbox(room))[-1]["blob"])
    await ben.c.self_update(room)
    await eventually(lambda: fac.state(room) == ben.state(room), 20)
    commit = bytes(ben.proxy.append_frames(ben.mailbox(room))[-1]["blob"])
    await _settle(ben)
    before = {r: ben.state(r) for r in (room, other)}
    shown = len([e for e in ben.seen if isinstance(e, NewMessage)])
    link = ben.proxy.link
    for b in (blob, commit):
        await link.inject_push(ben.mailbox(room), b)  # back to the sender
        await link.inject_push(ben.mailbox(other), b)  # into another room
    await _settle(ben)
    assert {r: ben.state(r) for r in (room, other)} == before
    assert len([e for e in ben.seen if isinstance(e, NewMessage)]) == shown
    assert (await ben.texts(room)).count("reflect me") == 1
    assert "reflect me" not in await ben.texts(other)
