"""D01-D02: KeyPackages and re-initialization.

Key-package pools do not exist here: a joiner makes a fresh key package for each join
request and seals it to the facilitator (the relay never serves one), so "drain the
pool" and "serve a stale one" reduce to the checks below. Relay-side fetch rate
limits are the relay suite's (tests/relay).
"""

from __future__ import annotations

import time

import pytest

from backchannel.mls.messages import ReInit
from backchannel.rooms.content import Text, new_message_id
from backchannel.rooms.errors import PolicyViolation
from backchannel.rooms.events import CommitRejected
from backchannel.views import RoomChanged

from .conftest import NOW, Net, copy_room, identity, key_package, room_group


async def test_D01_second_welcome_for_a_used_key_package_is_rejected(net: Net) -> None:
    fac, dana = await net.party("Farida"), await net.party("Dana")
    room = await net.room(fac, "Once", dana)
    inbox_pushes = [
        f
        for f in dana.proxy.push_frames()
        if bytes(f["mailbox"]) != dana.mailbox(room) and len(bytes(f["blob"])) > 1000
    ]
    assert inbox_pushes, "the join reply went through Dana's proxy"
    rooms_before = [r.id for r in await dana.c.rooms()]
    state = dana.state(room)
    seen = len(dana.seen)
    for f in inbox_pushes:  # the relay replays the Welcome-carrying reply
        await dana.proxy.link.to_client(dict(f))
        await dana.proxy.link.inject_push(bytes(f["mailbox"]), bytes(f["blob"]))
    await dana.c.sync()
    assert [r.id for r in await dana.c.rooms()] == rooms_before
    assert dana.state(room) == state
    assert not [e for e in dana.seen[seen:] if isinstance(e, RoomChanged)]
    # the key package's private keys are gone: no stored join can open a Welcome again
    assert await dana.c.pending_joins() == []


def test_D01_expired_key_package_is_refused_by_the_facilitator() -> None:
    _, (fac,) = room_group(1)
    old = key_package(identity("Stale"), now=int(time.time()) - 5 * 365 * 86400)
    with pytest.raises(PolicyViolation):
        fac.add_members([old.key_package.to_bytes()], now=int(time.time()))


def test_D02_reinit_is_refused_from_participants_and_facilitators_alike() -> None:
    _, (fac, ben, _chen) = room_group(3)
    suite = fac._group.cipher_suite
    # a participant's ReInit (to the classical suite 1) is refused by everyone
    forged = copy_room(ben)
    out = forged._group.commit(reinit=ReInit(b"\x01" * 16, 1, 1, ()), now=NOW)
    before = fac.to_bytes()
    events = fac.receive(out.commit, now=NOW)
    assert [type(e) for e in events] == [CommitRejected]
    assert fac.to_bytes() == before
    # a facilitator's ReInit, even to the same suite, is refused too: rooms of this
    # version have no re-initialization flow, so none can carry a downgrade
    legit = copy_room(fac)
    same = legit._group.commit(reinit=ReInit(b"\x03" * 16, 1, suite, ()), now=NOW)
    receiver = copy_room(ben)
    before = receiver.to_bytes()
    assert [type(e) for e in receiver.receive(same.commit, now=NOW)] == [CommitRejected]
    assert receiver.to_bytes() == before
    receiver.send(Text(new_message_id(), NOW * 1000, "still here"), now=NOW)


def test_D02_reinit_to_a_weaker_suite_is_rejected() -> None:
    _, (fac, ben) = room_group(2)
    assert fac._group.cipher_suite != 1
    down = copy_room(fac)._group.commit(reinit=ReInit(b"\x02" * 16, 1, 1, ()), now=NOW)
    events = ben.receive(down.commit, now=NOW)
    assert [type(e) for e in events] == [CommitRejected]
