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
from backchannel.rooms.access import open_room_blob
from backchannel.rooms.errors import MessageRejected
from backchannel.rooms.events import MessageReceived
from backchannel.rooms.room import message_epoch
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
    """Chen writes; the relay withholds it from Farida and Ben (pushes *and* fetch
    answers, so the transport's gap filling cannot bring it); Farida removes Chen and
    Dana takes Chen's leaf; only then does the relay deliver Chen's message, on the old
    mailbox, and (with Ben, an insider, sealing it again) on the new one.

    The engine must not show it under Dana's name. It in fact never hands it to the room
    layer: after the move, nothing on the old mailbox counts, and the new mailbox takes
    nothing from before its base epoch (engine/core.py ``_room_entries``). So the second
    half hands the same MLS message to each member's real room state (a copy of it),
    as if it had got through: it must be refused or attributed to Chen, who sent it in
    an epoch where that leaf was Chen's, never to the leaf's current owner.
    """
    fac, ben, chen = [await net.party(n) for n in ("Farida", "Ben", "Chen")]
    room = await net.room(fac, "Leaf reuse", ben, chen)
    old_access = fac.live(room).meta.access
    old_mb = old_access.mailbox
    chen_id, text = chen.c.identity.identity_id, "Chen wrote this"
    chen_leaf = next(m.leaf_index for m in fac.live(room).room.members() if m.member_id == chen_id)
    held: list[bytes] = []

    async def record(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("op") == "append" and f.get("mailbox") == old_mb and f.get("epoch") is None:
            held.append(bytes(f["blob"]))  # before the relay has it: no push can come first
        return None

    async def withhold(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("t") == "push" and bytes(f["blob"]) in held:
            return []
        if f.get("t") == "ok" and f.get("entries"):  # a fetch answer: leave the gap open
            kept = [e for e in f["entries"] if bytes(e[1]) not in held]
            if len(kept) != len(f["entries"]):
                return [{**f, "entries": kept}]
        return None

    chen.proxy.on_up = record
    fac.proxy.on_down = ben.proxy.on_down = withhold
    await chen.c.send(room, text)
    await eventually(lambda: chen.proxy.append_frames(old_mb) and held, 10)
    chen.proxy.on_up = None
    sent_epoch = fac.live(room).room.epoch
    await fac.c.remove(room, "Chen")
    dana = await net.party("Dana")
    await net.join(fac, dana, room)
    ids = {p.c.identity.identity_id for p in (fac, ben, dana)}
    await eventually(lambda: fac.state(room) == ben.state(room) and fac.state(room)[2] == ids)
    dana_id = dana.c.identity.identity_id
    dana_leaf = next(m.leaf_index for m in fac.live(room).room.members() if m.member_id == dana_id)
    assert dana_leaf == chen_leaf, "Dana should take Chen's leaf for this attack"
    for p in (fac, ben):  # it really was withheld until now
        assert text not in await p.texts(room), p.name
    (blob,) = held
    data = open_room_blob(old_access, blob)  # the MLS message (Ben, an insider, can do this)
    assert message_epoch(data) == sent_epoch < fac.live(room).room.epoch

    # End to end: the relay delivers it now, on the old mailbox and sealed for the new one.
    fac.proxy.on_down = ben.proxy.on_down = None
    for p in (fac, ben, dana):
        await p.proxy.link.inject_push(old_mb, blob)
        await p.proxy.link.inject_push(p.mailbox(room), ben.seal(room, data))
    await ben.c.send(room, "marker after the held message")
    for p in (fac, ben, dana):
        await eventually(lambda p=p: _has(p, room, "marker after the held message"), 30)
    await _settle(fac, ben, dana)
    for p in (fac, ben, dana):
        for m in await p.c.history(room, limit=500):
            if m.text == text:
                assert m.sender == chen_id.hex() and m.sender != dana_id.hex(), p.name
        news = [e.message for e in p.seen if isinstance(e, NewMessage)]
        assert all(m.sender == chen_id.hex() for m in news if m.text == text), p.name

    # The room layer, with each member's real state: if the message got that far.
    for p in (fac, ben):
        r = copy_room(p.live(room).room)
        assert r.epoch > sent_epoch and dana_id in {m.member_id for m in r.members()}
        try:
            events = r.receive(data, now=int(time.time()))
        except MessageRejected:
            continue
        got = [e for e in events if isinstance(e, MessageReceived)]
        assert [e.sender for e in got] == [chen_id], (p.name, events)
        assert got[0].content.body == text


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
