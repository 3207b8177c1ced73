"""F01-F03: metadata the relay (or the network) sees: sizes, automatic responses, plaintexts."""

from __future__ import annotations

import asyncio
import os
import time

import msgpack

from backchannel.rooms.content import (
    Delete,
    Edit,
    Profile,
    Reaction,
    Text,
    new_message_id,
    split_file,
)
from backchannel.rooms.padding import BUCKETS
from tests.e2e.harness import eventually

from .conftest import NOW, Net, Party, room_group


def test_F01_ciphertext_sizes_stay_within_the_buckets() -> None:
    _, (fac, _ben) = room_group(2)
    ts = NOW * 1000
    sizes = {len(fac.send(Text(new_message_id(), ts, "a" * n), now=NOW)) for n in range(4097)}
    assert len(sizes) <= len(BUCKETS), sorted(sizes)
    short = len(fac.send(Text(new_message_id(), ts, "ok"), now=NOW))
    target = new_message_id()
    fac.send(Text(target, ts, "the target"), now=NOW)
    manifest, chunks = split_file(b"x" * 10, name="a.txt", sent_at_ms=ts)
    controls = [
        Reaction(new_message_id(), ts, target, fac.member_id, "👍"),
        Reaction(new_message_id(), ts, target, fac.member_id, "👍", remove=True),
        Delete(new_message_id(), ts, target),
        Edit(new_message_id(), ts, target, "the target!"),
        Profile(new_message_id(), ts, "Farida"),
        manifest,
        *chunks,
    ]
    for content in controls:
        size = len(fac.send(content, now=NOW))
        assert size == short, (type(content).__name__, size, short)


async def test_F02_probes_trigger_no_outbound_frames(net: Net) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Silent", ben)
    await ben.c.sync()
    await asyncio.sleep(0.5)
    link = ben.proxy.link
    up_before = len([1 for d, _, f in ben.proxy.frames if d == "up" and f.get("op") != "ping"])
    other = room_group(2)[1][0]  # a non-member's well-formed message
    probes = [
        other.send(Text(new_message_id(), NOW * 1000, "are you there?"), now=NOW),
        os.urandom(300),
        msgpack.packb({"t": "receipt_request"}),
    ]
    for blob in probes:
        await link.inject_push(ben.mailbox(room), blob)
    await asyncio.sleep(1.5)
    up_after = [f for d, _, f in ben.proxy.frames if d == "up" and f.get("op") != "ping"]
    assert len(up_after) == up_before, up_after[up_before:]


async def test_F03_relay_sees_no_names_titles_texts_or_invite_secrets(net: Net) -> None:
    fac, ben = await net.party("Farida Haddad"), await net.party("Benedikt Ole")
    room = (await fac.c.create_room("Kashmir water sharing")).id
    from backchannel.rooms.invites import parse_invite

    from .conftest import readdress

    link = await fac.c.invite(room)
    secret = parse_invite(link, now=time.time()).secret
    rid = await ben.c.join(readdress(link, ben.proxy.url))
    from backchannel.views import JoinRequested

    await eventually(lambda: [e for e in fac.seen if isinstance(e, JoinRequested)], 20)
    req = next(e for e in fac.seen if isinstance(e, JoinRequested))
    await fac.c.approve(room, req.request.id)
    assert (await ben.c.wait_join(rid, 20)) is not None
    await eventually(lambda: _writable(ben, room), 20)
    await ben.c.send(room, "the northern reservoir proposal")
    await fac.c.send(room, "agreed on the monsoon schedule")
    await fac.c.update_room(room, title="Indus basin dialogue")
    await eventually(lambda: _has(fac, room, "the northern reservoir proposal"), 20)
    await eventually(lambda: _has(ben, room, "agreed on the monsoon schedule"), 20)
    await fac.c.sync()
    await ben.c.sync()
    wire = b"".join(p.proxy.wire_bytes() for p in (fac, ben))
    assert len(wire) > 10_000
    secrets = [
        "Farida Haddad",
        "Benedikt Ole",
        "Kashmir water",
        "Indus basin",
        "northern reservoir",
        "monsoon schedule",
    ]
    for s in secrets:
        for form in (s.encode(), s.encode("utf-16-le"), s.encode("utf-16-be")):
            assert form not in wire, s
    assert secret not in wire
    assert link.split("#", 1)[1].encode() not in wire
    for p in (fac, ben):  # credentials (identity ids and signature keys) are never in clear
        assert p.c.identity.identity_id not in wire
        assert p.c.identity.public_key() not in wire


async def test_F03_the_group_id_is_in_no_blob_before_or_after_a_mailbox_move(net: Net) -> None:
    """What this shows, and only this: the MLS group id, which would tie the two
    mailboxes together, never appears in an appended blob. The relay can still link
    them by connection and timing (docs/threat-model.md, residual risks; issue #19)."""
    fac, ben, chen = [await net.party(n) for n in ("Farida", "Ben", "Chen")]
    room = await net.room(fac, "Unlinkable", ben, chen)
    old = fac.mailbox(room)
    await fac.c.send(room, "before")
    await fac.c.remove(room, "Chen")
    await eventually(lambda: fac.mailbox(room) != old)
    await fac.c.send(room, "after")
    await fac.c.sync()
    new = fac.mailbox(room)
    blobs = {mb: [bytes(f["blob"]) for f in fac.proxy.append_frames(mb)] for mb in (old, new)}
    gid = bytes.fromhex(room)
    linked = any(gid in b for b in blobs[old]) and any(gid in b for b in blobs[new])
    assert not linked


def _writable(p: Party, room: str) -> bool:
    try:
        cap = p.c.connection._caps.get(p.mailbox(room))
    except KeyError:
        return False
    return cap is not None and cap.write is not None


async def _has(p: Party, room: str, text: str) -> bool:
    return text in await p.texts(room)
