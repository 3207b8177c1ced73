"""A01-A08: membership and authority, attacked by the relay, an insider or a removed member.

Real clients talk to a real relay through :class:`~.hostile_relay.HostileRelay`; hostile
MLS messages are built with the sans-IO ``Room``/``Group`` objects from a copy of the
attacker's own state (``party.live(room).room``) and injected by the proxy.

A02 does not apply: a profile is one device (one leaf per identity); there are no
device lists for the relay to extend (see ``test_A02_does_not_apply``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgpack
import pytest

from backchannel.engine import commits as engine_commits
from backchannel.errors import BackchannelError
from backchannel.mls.group import Group
from backchannel.rooms.content import Text, new_message_id
from backchannel.rooms.mls_mapping import required_capabilities, room_capabilities
from backchannel.rooms.policy import Role, RoomPolicy, policy_extension
from backchannel.rooms.room import Room
from backchannel.views import Alert, JoinRequested
from tests.e2e.harness import eventually

from .conftest import Net, Party, copy_room, identity, key_package, readdress
from .hostile_relay import Frame, Link

GROUP_INFO_PREFIX = b"\x00\x01\x00\x04"  # MLSMessage: version mls10, wire_format group_info


async def _push_all(room: str, blob: bytes, *parties: Party) -> None:
    for p in parties:
        await p.proxy.link.inject_push(p.mailbox(room), blob)


async def _still(room: str, expected: dict[str, tuple[int, bytes, frozenset[bytes]]], *ps: Party):
    """Give the clients time to process, then check nothing moved."""
    for p in ps:
        with contextlib.suppress(BackchannelError):  # a hostile relay may withhold it
            await p.c.sync(timeout=3)
    await asyncio.sleep(0.5)
    for p in ps:
        assert p.state(room) == expected[p.name], p.name


async def _roundtrip(room: str, sender: Party, *readers: Party, text: str) -> None:
    await sender.c.send(room, text)
    for r in readers:
        await eventually(lambda r=r: _has(r, room, text), 20)


async def _has(p: Party, room: str, text: str) -> bool:
    return text in await p.texts(room)


def _ids(*ps: Party) -> frozenset[bytes]:
    return frozenset(p.c.identity.identity_id for p in ps)


async def test_A01_relay_cannot_add_a_member(net: Net) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Closeness", ben)
    before = {p.name: p.state(room) for p in (fac, ben)}
    # The relay sees the group id and epoch in clear: it builds its own group with the
    # same id, brings it to the same epoch, and commits an Add of its own member.
    mallory, ghost = identity("Mallory"), identity("Ghost")
    live = fac.live(room).room
    policy = RoomPolicy.create("Closeness", [mallory.identity_id])
    group = Group.create(
        mallory.cipher_suite,
        mallory.credential(),
        mallory.private_key(),
        now=int(time.time()),
        group_id=live.group_id,
        extensions=[required_capabilities(), policy_extension(policy)],
        capabilities=room_capabilities(mallory.cipher_suite),
    )
    fake = Room(group)
    while fake.epoch < live.epoch:
        fake.self_update(now=int(time.time()))
        fake.confirm_pending()
    out = fake.add_members([key_package(ghost).key_package.to_bytes()], now=int(time.time()))
    assert out.welcome is not None
    plaintext = msgpack.packb(
        {"t": "member_joined", "member": ghost.identity_id}, use_bin_type=True
    )
    for blob in (out.commit, out.welcome, plaintext, b"\x00" * 64):
        await _push_all(room, blob, fac, ben)
    # a frame type the client does not know, straight on the link
    await ben.proxy.link.inject_frame({"t": "member_joined", "member": ghost.identity_id})
    await _still(room, before, fac, ben)
    assert ghost.identity_id not in {m.member_id for m in fac.live(room).room.members()}
    shown = {m.id for m in await ben.c.members(room)}
    assert ghost.identity_id.hex() not in shown and len(shown) == 2
    # the room still works, and the next commit carries no path to a ghost leaf
    await fac.c.self_update(room)
    await eventually(lambda: fac.state(room) == ben.state(room), 20)
    assert fac.state(room)[2] == _ids(fac, ben)
    await _roundtrip(room, ben, fac, text="still just us")


async def test_A02_does_not_apply() -> None:
    """A profile is exactly one device with one leaf per identity: there is no device
    list the relay could extend, and every leaf is added only by a facilitator's commit
    (A01, A04)."""


async def test_A03_removed_member_cannot_burgle_back_in(net: Net) -> None:
    fac, ben, chen = [await net.party(n) for n in ("Farida", "Ben", "Chen")]
    room = await net.room(fac, "Burglary", ben, chen)
    old = copy_room(chen.live(room).room)  # Chen keeps its state from before the Remove
    await fac.c.remove(room, "Chen")
    await eventually(lambda: fac.state(room) == ben.state(room) and len(fac.state(room)[2]) == 2)
    before = {p.name: p.state(room) for p in (fac, ben)}
    now = int(time.time())
    ident = chen.c.identity
    # (a) an Add proposal (of a fresh key package of its own) from the old epoch
    proposal = old._group.propose_add(key_package(identity("Friend")).key_package.to_bytes())
    # (b) an external commit from a (leaked) current GroupInfo
    info = fac.live(room).room._group.group_info(external_pub=True)
    _, external = Group.join_external(
        info,
        ident.credential(),
        ident.private_key(),
        now=now,
        capabilities=room_capabilities(ident.cipher_suite),
    )
    # the relay colludes: it delivers both on the room's new mailbox
    for blob in (proposal, external):
        await _push_all(room, blob, fac, ben)
    await _still(room, before, fac, ben)
    await _roundtrip(room, fac, ben, text="the door is shut")


async def test_A03_removed_member_old_epoch_message_is_not_shown(net: Net) -> None:
    fac, ben, chen = [await net.party(n) for n in ("Farida", "Ben", "Chen")]
    room = await net.room(fac, "Burglary 2", ben, chen)
    old = copy_room(chen.live(room).room)
    await fac.c.remove(room, "Chen")
    await eventually(lambda: fac.state(room) == ben.state(room) and len(fac.state(room)[2]) == 2)
    now = int(time.time())
    message = old.send(Text(new_message_id(), now * 1000, "I am back"), now=now)
    await _push_all(room, message, fac, ben)
    await _still(room, {p.name: p.state(room) for p in (fac, ben)}, fac, ben)
    for p in (fac, ben):
        assert "I am back" not in await p.texts(room)


async def test_A04_participant_commits_are_rejected_by_every_client(net: Net) -> None:
    fac, ben, chen = [await net.party(n) for n in ("Farida", "Ben", "Chen")]
    room = await net.room(fac, "Authority", ben, chen)
    everyone = (fac, ben, chen)
    before = {p.name: p.state(room) for p in everyone}
    me = ben.c.identity.identity_id
    now = int(time.time())
    base = ben.live(room).room
    leaves = {m.member_id: m.leaf_index for m in base.members()}
    dana = identity("Dana")
    # correctly signed by Ben (a participant), each from Ben's own current state
    add = copy_room(base)._group.commit(
        add=[key_package(dana).key_package.to_bytes()], now=now, include_proposals=False
    )
    remove = copy_room(base)._group.commit(
        remove=[leaves[fac.c.identity.identity_id]], now=now, include_proposals=False
    )
    forged = copy_room(base)
    promoted = forged.policy.with_role(me, Role.FACILITATOR)
    gce = forged._group.commit(
        extensions=forged._extensions_with(promoted), now=now, include_proposals=False
    )
    for result in (add, remove, gce):
        blob = ben.seal(room, result.commit)  # Ben is an insider: he can seal for the mailbox
        await _push_all(room, blob, fac, chen)
        # Ben's own client gets it too (as if another device of Ben's had sent it)
        await _push_all(room, blob, ben)
    await _still(room, before, *everyone)
    epochs = {p.state(room)[:2] for p in everyone}
    assert len(epochs) == 1, "the clients forked"
    assert fac.alerts("refused by the room's rules")
    # a facilitator's commits with the same content are accepted by all
    await fac.c.set_role(room, "Ben", "facilitator")
    await fac.c.remove(room, "Chen")
    await eventually(lambda: fac.state(room) == ben.state(room), 20)
    assert fac.state(room)[2] == _ids(fac, ben)
    assert fac.live(room).room.policy.role_of(me) is Role.FACILITATOR
    await net.join(fac, await net.party("Dana"), room)


async def test_A04_participant_commit_through_the_relay_does_not_freeze_the_room(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_commits, "CATCH_UP_SECONDS", 1.0)
    monkeypatch.setattr(engine_commits, "COMMIT_ATTEMPTS", 3)
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Frozen", ben)
    base = ben.live(room).room
    leaves = {m.member_id: m.leaf_index for m in base.members()}
    bad = copy_room(base)._group.commit(
        remove=[leaves[fac.c.identity.identity_id]], now=int(time.time()), include_proposals=False
    )
    access = ben.live(room).meta.access
    # Ben offers it for the room's epoch like any commit: the relay takes it
    await ben.c.connection.append(
        access.mailbox,
        ben.seal(room, bad.commit),
        epoch=access.relay_epoch(base.epoch),
        timeout=10,
    )
    await eventually(lambda: fac.alerts("refused by the room's rules"), 20)
    await asyncio.wait_for(fac.c.set_role(room, "Ben", "observer"), 30)
    await eventually(lambda: fac.state(room) == ben.state(room), 20)
    # and junk that takes the next relay epoch without being a commit at all (nobody
    # can even open it): the facilitator learns the relay's epoch and goes on
    access = fac.live(room).meta.access
    await ben.c.connection.append(
        access.mailbox, b"junk" * 8, epoch=access.relay_epoch(fac.live(room).room.epoch)
    )
    await asyncio.wait_for(fac.c.set_role(room, "Ben", "participant"), 30)
    await eventually(lambda: fac.state(room) == ben.state(room), 20)


async def test_A05_relay_fork_is_detected(net: Net) -> None:
    fac, ben, chen = [await net.party(n) for n in ("Farida", "Ben", "Chen")]
    room = await net.room(fac, "Forked", ben, chen)
    mailbox = fac.mailbox(room)
    c2: list[bytes] = []
    hold = {"chen": True, "swap": False}

    async def chen_up(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("op") == "append" and f.get("epoch") is not None and f["mailbox"] == mailbox:
            c2.append(bytes(f["blob"]))
            seq = link.delivered.get(mailbox, 0) + 1000
            await link.to_client({"t": "ok", "id": f["id"], "seq": seq, "epoch": f["epoch"] + 1})
            return []  # the real relay never sees Chen's commit
        return None

    async def chen_down(link: Link, f: Frame) -> list[Frame] | None:
        if hold["chen"] and f.get("t") == "push" and f["mailbox"] == mailbox:
            return []
        return None

    async def ben_down(link: Link, f: Frame) -> list[Frame] | None:
        if hold["swap"] and f.get("t") == "push" and f["mailbox"] == mailbox and c2:
            hold["swap"] = False
            return [{**f, "blob": c2[0]}]
        return None

    chen.proxy.on_up, chen.proxy.on_down, ben.proxy.on_down = chen_up, chen_down, ben_down
    await chen.c.self_update(room)  # fork B: only Chen (and soon Ben) see it
    hold["swap"] = True
    await fac.c.self_update(room)  # fork A: the relay's real history
    await eventually(lambda: ben.state(room)[0] == fac.state(room)[0], 20)
    assert ben.state(room)[1] != fac.state(room)[1], "the harness did not fork the room"
    hold["chen"] = False
    await fac.c.send(room, "in fork A")
    await chen.c.send(room, "in fork B")

    def detected() -> bool:
        return any(p.alerts("forked") for p in (fac, ben, chen))

    await eventually(detected, 20)  # the "forked" Alert


async def test_A06_swapped_key_package_in_join_request_is_dropped(net: Net) -> None:
    fac, dana = await net.party("Farida"), await net.party("Dana")
    room = (await fac.c.create_room("Ghosts")).id
    link = readdress(await fac.c.invite(room, uses=2), dana.proxy.url)
    from backchannel.rooms.invites import parse_invite

    drop = parse_invite(link, now=time.time()).drop_mailbox
    tampered: list[bytes] = []

    async def swap(link_: Link, f: Frame) -> list[Frame] | None:
        if f.get("op") == "append" and f["mailbox"] == drop and not tampered:
            blob = bytearray(f["blob"])
            mid = len(blob) // 2  # inside the sealed key package: the relay cannot re-seal
            blob[mid : mid + 32] = bytes(32)
            tampered.append(bytes(blob))
            return [{**f, "blob": bytes(blob)}]
        return None

    dana.proxy.on_up = swap
    await dana.c.join(link)
    await eventually(lambda: bool(tampered), 10)
    await fac.c.sync()
    await asyncio.sleep(1.0)
    assert not [e for e in fac.seen if isinstance(e, JoinRequested)]
    assert await fac.c.requests(room) == []
    assert [m.name for m in await fac.c.members(room)] == ["Farida"]
    # control: the same join, untouched, reaches the facilitator
    dana.proxy.on_up = None
    await dana.c.join(link)
    await eventually(lambda: [e for e in fac.seen if isinstance(e, JoinRequested)], 20)
    assert [r.name for r in await fac.c.requests(room)] == ["Dana"]


async def test_A07_external_commits_are_rejected_and_no_group_info_is_uploaded(
    net: Net,
) -> None:
    fac, ben, chen = [await net.party(n) for n in ("Farida", "Ben", "Chen")]
    room = await net.room(fac, "External", ben, chen)
    before = {p.name: p.state(room) for p in (fac, ben, chen)}
    now = int(time.time())
    info = fac.live(room).room._group.group_info(external_pub=True)  # leaked GroupInfo
    mallory = identity("Mallory")
    _, join = Group.join_external(
        info,
        mallory.credential(),
        mallory.private_key(),
        now=now,
        capabilities=room_capabilities(mallory.cipher_suite),
    )
    # resync: the holder of Ben's stolen signature key replaces Ben's leaf
    stolen = ben.c.identity
    ben_leaf = next(
        m.leaf_index for m in ben.live(room).room.members() if m.member_id == stolen.identity_id
    )
    _, resync = Group.join_external(
        info,
        stolen.credential(),
        stolen.private_key(),
        now=now,
        capabilities=room_capabilities(stolen.cipher_suite),
        resync_leaf=ben_leaf,
    )
    for blob in (join, resync):
        # sealed as an insider could (the thief of Ben's keys has his mailbox key too)
        await _push_all(room, ben.seal(room, blob), fac, chen)
    await _still(room, before, fac, chen)
    await _roundtrip(room, ben, fac, chen, text="Ben is still Ben")
    for p in net.parties:
        for f in p.proxy.appends:
            assert not bytes(f["blob"]).startswith(GROUP_INFO_PREFIX), p.name


async def test_A08_malformed_update_path_is_refused_by_the_member_it_cheats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An insider's commit sends a wrong path secret to one member (room layer)."""
    from backchannel.mls import treekem
    from backchannel.rooms.errors import MessageRejected

    from .conftest import NOW, room_group

    _, (fac, ben, chen) = room_group(3)
    real = treekem.encrypt_with_label
    calls: list[int] = []

    def corrupt(cs, public_key, label, context, secret):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:  # the second copath resolution of leaf 1 is Chen's leaf
            secret = bytes(len(secret))
        return real(cs, public_key, label, context, secret)

    monkeypatch.setattr(treekem, "encrypt_with_label", corrupt)
    out = ben.self_update(now=NOW)
    monkeypatch.setattr(treekem, "encrypt_with_label", real)
    assert len(calls) == 2
    ben.confirm_pending()
    saved = chen.to_bytes()
    with pytest.raises(MessageRejected):
        chen.receive(out.commit, now=NOW)  # Chen detects it and refuses it
    assert chen.to_bytes() == saved  # and is not moved anywhere
    fac.receive(out.commit, now=NOW)  # Farida cannot tell
    assert fac.epoch_authenticator() == ben.epoch_authenticator()
    # no rejoin path exists: Room has no constructor from a GroupInfo
    assert not hasattr(Room, "join_external")


async def test_A01_alert_is_never_forged_by_injection(net: Net) -> None:
    """A relay push cannot produce a membership event: only MLS commits do."""
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Quiet", ben)
    seen = len(ben.seen)
    await _push_all(room, msgpack.packb({"t": "members", "added": ["Mallory"]}), ben)
    await ben.c.sync()
    await asyncio.sleep(0.3)
    from backchannel.views import MembersChanged

    assert not [e for e in ben.seen[seen:] if isinstance(e, MembersChanged)]
    assert not [e for e in ben.seen[seen:] if isinstance(e, Alert) and "Mallory" in e.text]
