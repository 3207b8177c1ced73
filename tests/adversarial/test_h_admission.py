"""H02: admission against a hostile link holder (issue #16, items 1, 2, 4, 7 and 11).

Every hostile request here is sealed and appended by a modified client (the helper
:func:`hostile_request`): a real profile that writes to the invite's drop what an honest
client never would. The facilitator is a real client on the real relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time

import pytest

from backchannel.caps import capability, new_seed
from backchannel.engine import admission
from backchannel.errors import BackchannelError
from backchannel.mls.credentials import BasicCredential
from backchannel.records import JoiningEntry
from backchannel.rooms.invites import JoinRequest, parse_invite, seal_join_request
from backchannel.views import JoinRequested
from tests.e2e.harness import eventually, false_alarms

from .conftest import Net, Party, key_package, readdress

#: The words of the facilitator's notice of a request naming a mailbox of her own.
IN_USE = "reply address"


async def hostile_request(
    sender: Party,
    link: str,
    *,
    inbox: bytes | None = None,
    seed: bytes | None = None,
    kp: bytes | None = None,
    name: str = "Eve",
) -> None:
    """Seal a join request with the given fields and append it to the link's drop."""
    invite = parse_invite(link, now=time.time())
    if kp is None:
        kp = key_package(sender.c.identity).key_package.to_bytes()
    request = JoinRequest(
        os.urandom(16),
        int(time.time() * 1000),
        kp,
        name,
        os.urandom(16) if inbox is None else inbox,
        new_seed() if seed is None else seed,
    )
    conn = sender.c.connection
    conn.register(capability(invite.drop_mailbox, write=invite.drop_write_seed))
    await conn.append(invite.drop_mailbox, seal_join_request(invite, request), timeout=20)


async def _read(fac: Party, link: str, seq: int) -> None:
    """Wait until ``fac`` has handled the link's drop up to ``seq``."""
    drop = parse_invite(link, now=time.time()).drop_mailbox
    await eventually(lambda: (fac.c.connection.cursor(drop) or 0) >= seq, 30)


def _requests(p: Party) -> list[JoinRequested]:
    return [e for e in p.seen if isinstance(e, JoinRequested)]


async def _has(p: Party, room: str, text: str) -> bool:
    return text in await p.texts(room)


async def _works(fac: Party, ben: Party, room: str, tag: str) -> None:
    """Farida reads, posts and commits in ``room``; Ben sees it and is seen."""
    await fac.c.send(room, f"from Farida {tag}")
    await eventually(lambda: _has(ben, room, f"from Farida {tag}"), 20)
    await ben.c.send(room, f"from Ben {tag}")
    await eventually(lambda: _has(fac, room, f"from Ben {tag}"), 20)
    epoch = fac.state(room)[0]
    await fac.c.update_room(room, title=f"Renamed {tag}")
    await eventually(lambda: ben.state(room)[0] > epoch, 20)
    assert (await ben.c.room(room)).title == f"Renamed {tag}"


async def _reconnect_and_restart(p: Party) -> None:
    await p.proxy.cut()
    await p.c.sync()
    await p.person.stop()
    await p.person.start()
    await p.c.sync()


async def _used_link(net: Net, fac: Party, joiner: Party, room: str) -> str:
    """A single-use link of ``room``, redeemed by ``joiner`` (who is then a member)."""
    link = await fac.c.invite(room, uses=1)
    rid = await joiner.c.join(readdress(link, joiner.proxy.url))
    await eventually(lambda: _requests(fac), 20)
    request = _requests(fac)[-1]
    fac.seen.remove(request)
    await fac.c.approve(room, request.request.id)
    answer = await joiner.c.wait_join(rid, 20)
    assert answer is not None and answer.approved
    await eventually(lambda: joiner.live(room).meta.access.mailbox in joiner.c.connection._caps)
    return link


# -- item 1: a requester's inbox must be new to the facilitator's device -----------------------


async def test_H02_a_request_naming_the_room_mailbox_cannot_lock_the_facilitator_out(
    net: Net,
) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = (await fac.c.create_room("Lockout")).id
    link = await _used_link(net, fac, ben, room)
    # Ben, a participant, knows the room's mailbox; on his used-up link he names it as
    # his inbox, with a write key of his own.
    await hostile_request(ben, link, inbox=fac.mailbox(room))
    await _read(fac, link, 2)
    await _reconnect_and_restart(fac)
    await _works(fac, ben, room, "after")
    assert len(fac.alerts(IN_USE)) == 1  # refused, and said once
    assert false_alarms(fac.person) == [] and false_alarms(ben.person) == []


async def test_H02_a_request_naming_an_invite_drop_cannot_kill_the_invite(net: Net) -> None:
    fac, ben, carol = [await net.party(n) for n in ("Farida", "Ben", "Carol")]
    room = (await fac.c.create_room("Dropped")).id
    used = await _used_link(net, fac, ben, room)
    open_link = await fac.c.invite(room, uses=2)
    drop = parse_invite(open_link, now=time.time()).drop_mailbox
    await hostile_request(ben, used, inbox=drop)
    await _read(fac, used, 2)
    await _reconnect_and_restart(fac)
    # the invite still works: Carol's request is read and she is admitted
    rid = await carol.c.join(readdress(open_link, carol.proxy.url))
    await eventually(lambda: _requests(fac), 20)
    await fac.c.approve(room, _requests(fac)[-1].request.id)
    answer = await carol.c.wait_join(rid, 20)
    assert answer is not None and answer.approved
    assert len(fac.alerts(IN_USE)) == 1
    assert false_alarms(fac.person) == [] and false_alarms(carol.person) == []


async def test_H02_a_request_naming_another_requesters_inbox_is_refused(net: Net) -> None:
    fac, ben, carol = [await net.party(n) for n in ("Farida", "Ben", "Carol")]
    room = (await fac.c.create_room("Crossed")).id
    used = await _used_link(net, fac, ben, room)
    open_link = await fac.c.invite(room, uses=1)
    rid = await carol.c.join(readdress(open_link, carol.proxy.url))
    await eventually(lambda: _requests(fac), 20)
    carol_request = _requests(fac)[-1]
    # the relay saw Carol create her inbox; Ben names it on his used-up link
    raw = await carol.c.store.get_setting("joining/" + rid)
    assert raw is not None
    inbox = JoiningEntry.from_bytes(raw).inbox
    await hostile_request(ben, used, inbox=inbox)
    await _read(fac, used, 2)
    await fac.c.approve(room, carol_request.request.id)
    answer = await carol.c.wait_join(rid, 20)
    assert answer is not None and answer.approved
    # nothing but Carol's Welcome was ever posted to her inbox, and Farida was told
    assert len(fac.proxy.append_frames(inbox)) == 1
    assert len(fac.alerts(IN_USE)) == 1
    assert false_alarms(fac.person) == []


async def test_H02_a_link_naming_a_joiners_room_mailbox_is_refused(net: Net) -> None:
    """The same rule on the joiner's side: a link whose drop is one of Ben's mailboxes
    (made by a member of his room) cannot take that mailbox from him."""
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Joiner side", ben)
    honest = parse_invite(await fac.c.invite(room), now=time.time())
    hostile = dataclasses.replace(
        honest, relay_url=ben.proxy.url, drop_mailbox=ben.mailbox(room), drop_write_seed=new_seed()
    )
    with pytest.raises(BackchannelError, match="already uses"):
        await ben.c.join(hostile.to_link())
    await _reconnect_and_restart(ben)
    await _works(fac, ben, room, "after")
    assert false_alarms(fac.person) == [] and false_alarms(ben.person) == []


def test_H02_keys_are_added_never_replaced() -> None:
    from backchannel.transport.connection import RelayConnection
    from backchannel.transport.session import MailboxCapability

    conn = RelayConnection("ws://127.0.0.1:9/v1/ws")
    room = MailboxCapability.generate()
    assert conn.register(room)
    mailbox = room.mailbox
    assert not conn.register(capability(mailbox, write=new_seed()))  # a stranger's key
    assert conn._caps[mailbox] == room
    assert conn.register(MailboxCapability(mailbox, write=room.write))  # the same key: fine
    reply = capability(os.urandom(16), write=new_seed())
    assert conn.register(reply) and conn.holds(reply.mailbox)
    conn.unregister(reply)
    assert not conn.holds(reply.mailbox)


# -- item 2: an old link cannot jam the outbox -------------------------------------------------


async def _flood(sender: Party, link: str, count: int) -> None:
    """``count`` requests on ``link``, each naming an inbox nobody created."""
    for start in range(0, count, 100):
        await asyncio.gather(
            *(
                hostile_request(sender, link, kp=os.urandom(64))
                for _ in range(min(100, count - start))
            )
        )


async def test_H02_an_old_link_cannot_jam_the_facilitators_outbox(net: Net) -> None:
    fac, ben, eve = [await net.party(n) for n in ("Farida", "Ben", "Eve")]
    room = await net.room(fac, "Jammed", ben)
    link = await fac.c.invite(room, uses=5, expires_in=60)
    real = fac.c.engine._clock
    fac.c.engine._clock = lambda: real() + 3600  # the link expired an hour ago
    before = {bytes(f["mailbox"]) for f in fac.proxy.append_frames()}
    await _flood(eve, link, 1100)
    drop = parse_invite(link, now=time.time()).drop_mailbox
    await eventually(lambda: fac.c.connection.cursor(drop) == 1100, 60)
    await fac.c.send(room, "still heard")
    await eventually(lambda: _has(ben, room, "still heard"), 30)
    # the automatic denials are rate-limited per link, and those refused are gone
    sent = {bytes(f["mailbox"]) for f in fac.proxy.append_frames()} - before
    assert len(sent) <= getattr(admission, "AUTO_REPLIES", 5)
    await eventually(lambda: _outbox_empty(fac), 20)
    await fac.person.stop()
    await fac.person.start()
    await fac.c.send(room, "after a restart")
    await eventually(lambda: _has(ben, room, "after a restart"), 30)
    assert fac.alerts() == []
    assert false_alarms(fac.person) == []


async def _outbox_empty(p: Party) -> bool:
    return await p.c.store.pending(limit=10) == []


async def test_H02_refused_automatic_replies_are_dropped_not_retried(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every request answered: this is about the replies the relay refuses
    monkeypatch.setattr(admission, "AUTO_REPLIES", 10_000, raising=False)
    fac, ben, eve = [await net.party(n) for n in ("Farida", "Ben", "Eve")]
    room = await net.room(fac, "Refused", ben)
    link = await fac.c.invite(room, uses=1, expires_in=60)
    real = fac.c.engine._clock
    fac.c.engine._clock = lambda: real() + 3600
    await _flood(eve, link, 60)
    drop = parse_invite(link, now=time.time()).drop_mailbox
    await eventually(lambda: fac.c.connection.cursor(drop) == 60, 30)
    await eventually(lambda: _outbox_empty(fac), 30)  # each refused denial was dropped
    await fac.c.send(room, "heard")
    await eventually(lambda: _has(ben, room, "heard"), 20)
    await fac.person.stop()
    await fac.person.start()
    await fac.c.sync()
    assert fac.alerts() == []  # nothing to tell: an automatic reply is best effort
    assert not [k for k, _ in await fac.c.store.settings_with_prefix("wcap/")]


# -- item 4: uses are counted when the Add commits, atomically ---------------------------------


async def test_H02_a_single_use_link_admits_one_of_three_concurrent_requesters(
    net: Net,
) -> None:
    fac = await net.party("Farida")
    joiners = [await net.party(n) for n in ("Ben", "Carol", "Dan")]
    room = (await fac.c.create_room("Auto", approval="auto")).id
    link = await fac.c.invite(room, uses=1)
    rids = await asyncio.gather(*(j.c.join(readdress(link, j.proxy.url)) for j in joiners))
    answers = await asyncio.gather(
        *(j.c.wait_join(rid, 40) for j, rid in zip(joiners, rids, strict=True))
    )
    assert len(fac.state(room)[2]) == 2  # Farida and one joiner
    assert all(a is not None for a in answers)  # the others were told
    assert sorted(a.approved for a in answers if a is not None) == [False, False, True]
    assert fac.alerts() == []
    assert false_alarms(fac.person) == []


async def test_H02_garbage_key_packages_do_not_use_up_a_link(net: Net) -> None:
    fac, eve, ben = [await net.party(n) for n in ("Farida", "Eve", "Ben")]
    room = (await fac.c.create_room("Garbage", approval="auto")).id
    link = await fac.c.invite(room, uses=5)
    good = key_package(eve.c.identity).key_package.to_bytes()
    for _ in range(5):
        # well sealed, but the key package is not one: a flipped byte in the signature
        await hostile_request(eve, link, kp=good[:-1] + bytes([good[-1] ^ 1]))
    drop = parse_invite(link, now=time.time()).drop_mailbox
    await eventually(lambda: fac.c.connection.cursor(drop) == 5, 20)
    await eventually(lambda: not fac.c.engine._tasks, 20)  # each automatic approval ran
    rid = await ben.c.join(readdress(link, ben.proxy.url))
    answer = await ben.c.wait_join(rid, 30)
    assert answer is not None and answer.approved
    assert ben.c.identity.identity_id in fac.state(room)[2]
    assert await fac.c.requests(room) == []  # the garbage was turned away, not parked
    assert false_alarms(fac.person) == []


# -- item 7: nothing from a request is kept before it is accepted ------------------------------


async def test_H02_a_request_claiming_a_members_id_renames_nobody(net: Net) -> None:
    fac, chen, eve = [await net.party(n) for n in ("Farida", "Chen", "Eve")]
    room = await net.room(fac, "Names", chen)
    link = await fac.c.invite(room, uses=1)
    # Eve's key package carries Chen's member id, under her own signature key
    suite = fac.c.identity.cipher_suite
    forged = BasicCredential(chen.c.identity.identity_id)
    kp = key_package_for(eve, forged, suite).key_package.to_bytes()
    await hostile_request(eve, link, kp=kp, name="Farida (host)")
    await eventually(lambda: _requests(fac), 20)
    request = _requests(fac)[-1]
    with contextlib.suppress(BackchannelError):  # refused: the id is a member's already
        await fac.c.approve(room, request.request.id)
    assert chen.c.identity.identity_id in fac.state(room)[2]
    await chen.c.send(room, "it is me")
    await eventually(lambda: _has(fac, room, "it is me"), 20)
    [m] = [m for m in await fac.c.history(room, limit=50) if m.text == "it is me"]
    assert m.sender_name == "Chen"
    assert {m.name for m in await fac.c.members(room)} == {"Farida", "Chen"}
    assert false_alarms(fac.person) == []


def key_package_for(p: Party, credential: BasicCredential, suite: int):  # type: ignore[no-untyped-def]
    from backchannel.rooms.room import Room

    ident = p.c.identity
    return Room.key_package(suite, credential, ident.private_key(), now=int(time.time()))


# -- item 11 (part): pending requests per invite are capped ------------------------------------


async def test_H02_one_link_parks_a_bounded_number_of_requests(net: Net) -> None:
    from backchannel.rooms import invites as room_invites

    fac, eve = await net.party("Farida"), await net.party("Eve")
    room = (await fac.c.create_room("Parked")).id
    link = await fac.c.invite(room, uses=1000)
    cap = getattr(room_invites, "MAX_PENDING_REQUESTS", 64)
    for start in range(0, cap + 10, 50):
        await asyncio.gather(
            *(hostile_request(eve, link) for _ in range(min(50, cap + 10 - start)))
        )
    drop = parse_invite(link, now=time.time()).drop_mailbox
    await eventually(lambda: fac.c.connection.cursor(drop) == cap + 10, 30)
    assert len(await fac.c.requests(room)) == cap
    assert false_alarms(fac.person) == []
