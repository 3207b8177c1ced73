"""H01: a captured invite link (or join request) used again: redeemed, expired, replayed by
the relay, or moved to another room's drop. The facilitator's client refuses each."""

from __future__ import annotations

import asyncio
import time

from backchannel.rooms.invites import parse_invite
from backchannel.views import JoinRequested
from tests.e2e.harness import eventually

from .conftest import Net, Party, readdress


def _requests(p: Party) -> list[JoinRequested]:
    return [e for e in p.seen if isinstance(e, JoinRequested)]


async def _quiet(fac: Party, count: int) -> None:
    await fac.c.sync()
    await asyncio.sleep(1.0)
    assert len(_requests(fac)) == count


async def test_H01_redeemed_invite_is_refused(net: Net) -> None:
    fac, ben, eve = [await net.party(n) for n in ("Farida", "Ben", "Eve")]
    room = (await fac.c.create_room("Single use")).id
    link = await fac.c.invite(room, uses=1)
    rid = await ben.c.join(readdress(link, ben.proxy.url))
    await eventually(lambda: _requests(fac), 20)
    await fac.c.approve(room, _requests(fac)[0].request.id)
    assert (await ben.c.wait_join(rid, 20)).approved  # type: ignore[union-attr]
    # the same link, captured, redeemed again by someone else
    again = await eve.c.join(readdress(link, eve.proxy.url))
    answer = await eve.c.wait_join(again, 20)
    assert answer is not None and not answer.approved
    await _quiet(fac, 1)
    assert await eve.c.rooms() == []


async def test_H01_expired_invite_is_refused(net: Net) -> None:
    fac, eve = await net.party("Farida"), await net.party("Eve")
    room = (await fac.c.create_room("Expiring")).id
    link = await fac.c.invite(room, expires_in=60)
    real = fac.c.engine._clock
    fac.c.engine._clock = lambda: real() + 3600  # the request reaches Farida too late
    rid = await eve.c.join(readdress(link, eve.proxy.url))
    answer = await eve.c.wait_join(rid, 20)
    assert answer is not None and not answer.approved
    await _quiet(fac, 0)


async def test_H01_replayed_and_cross_room_requests_are_refused(net: Net) -> None:
    fac, eve = await net.party("Farida"), await net.party("Eve")
    room_a = (await fac.c.create_room("Room A")).id
    room_b = (await fac.c.create_room("Room B")).id
    link_a = await fac.c.invite(room_a, uses=5)
    link_b = await fac.c.invite(room_b, uses=5)
    drop_a = parse_invite(link_a, now=time.time()).drop_mailbox
    drop_b = parse_invite(link_b, now=time.time()).drop_mailbox
    await eve.c.join(readdress(link_a, eve.proxy.url))
    await eventually(lambda: _requests(fac), 20)
    sealed = bytes(next(f for f in eve.proxy.append_frames(drop_a))["blob"])
    link = fac.proxy.link
    await link.inject_push(drop_a, sealed)  # the relay replays the request
    await link.inject_push(drop_b, sealed)  # and presents room A's request for room B
    await _quiet(fac, 1)
    assert await fac.c.requests(room_b) == []
    assert len(await fac.c.requests(room_a)) == 1
    # the invite secret itself never crossed the relay link
    secret = parse_invite(link_a, now=time.time()).secret
    for p in (fac, eve):
        assert secret not in p.proxy.wire_bytes()
