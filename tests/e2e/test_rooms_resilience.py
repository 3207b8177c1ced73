"""Rooms over a relay process that dies, people who are never online together, leaving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from backchannel.errors import BackchannelError
from backchannel.views import JoinRequested, RemovedFromRoom
from tests.relayproc import RelayProcess

from .harness import Person, eventually, false_alarms, start_room_of_two, wait_event


async def _texts(p: Person, room: str) -> list[str]:
    return [m.text for m in await p.c.history(room, limit=500) if m.kind == "text"]


async def _has(p: Person, room: str, texts: set[str]) -> bool:
    try:
        return texts <= set(await _texts(p, room))
    except BackchannelError:
        return False


async def test_the_relay_killed_mid_conversation_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    relay = RelayProcess(tmp_path / "relay")
    await relay.wait_ready()
    fac = Person("Farida", tmp_path / "fac", relay.url)
    ben = Person("Ben", tmp_path / "ben", relay.url)
    try:
        room = await start_room_of_two(fac, ben, "Outage")
        await fac.c.send(room, "before the outage")
        await eventually(lambda: _has(ben, room, {"before the outage"}), timeout=30)
        relay.kill()  # kill -9: nothing flushed, nothing said goodbye
        sent = await ben.c.send(room, "queued while the relay is down")
        assert not sent.delivered
        await fac.c.send(room, "also queued")
        relay = RelayProcess(tmp_path / "relay", port=relay.port)
        await relay.wait_ready()
        expected = {"before the outage", "queued while the relay is down", "also queued"}
        for p in (fac, ben):
            await eventually(lambda p=p: _has(p, room, expected), timeout=60)
            await p.c.sync(30)
            texts = await _texts(p, room)
            assert sorted(texts) == sorted(expected), texts
        delivered = [m.delivered for m in await ben.c.history(room) if m.outgoing]
        assert delivered == [True]
        for p in (fac, ben):
            assert false_alarms(p) == [], (p.name, false_alarms(p))
    finally:
        for p in (fac, ben):
            await p.stop()
        relay.kill()


@pytest.fixture
async def relay_proc(tmp_path: Path) -> object:
    relay = RelayProcess(tmp_path / "relay")
    await relay.wait_ready()
    yield relay
    relay.kill()


async def test_facilitator_and_joiner_never_online_together(
    tmp_path: Path, relay_proc: RelayProcess
) -> None:
    fac = Person("Farida", tmp_path / "fac", relay_proc.url)
    ben = Person("Ben", tmp_path / "ben", relay_proc.url)
    await fac.start(create=True)
    room = (await fac.c.create_room("Asynchronous")).id
    link = await fac.c.invite(room)
    await fac.stop()

    await ben.start(create=True)
    rid = await ben.c.join(link)
    await ben.c.sync()  # the request is on the relay
    await ben.stop()

    await fac.start()
    await fac.c.sync()
    [request] = await fac.c.requests(room)
    assert request.name == "Ben" and len(request.safety_number.split()) == 12
    await fac.c.approve(room, request.id)
    await fac.c.send(room, "welcome, whenever you read this")
    await fac.c.sync()
    await fac.stop()

    await ben.start()
    await ben.c.sync()
    assert [r.id for r in await ben.c.rooms()] == [room]
    assert await _has(ben, room, {"welcome, whenever you read this"})
    assert await ben.c.pending_joins() == []
    assert rid not in await ben.c.pending_joins()
    await ben.stop()
    for p in (fac, ben):
        assert false_alarms(p) == [], (p.name, false_alarms(p))


async def test_leaving_is_committed_by_a_facilitator(
    tmp_path: Path, relay_proc: RelayProcess
) -> None:
    people = [Person(n, tmp_path / n, relay_proc.url) for n in ("Farida", "Ben", "Chen")]
    fac, ben, chen = people
    for p in people:
        await p.start(create=True)
    try:
        room = (await fac.c.create_room("Goodbyes")).id
        for joiner in (ben, chen):
            rid = await joiner.c.join(await fac.c.invite(room))
            request = await wait_event(fac, JoinRequested)
            fac.seen.remove(request)
            await fac.c.approve(room, request.request.id)
            assert (await joiner.c.wait_join(rid, 30)) is not None
        await ben.c.leave(room)
        await wait_event(ben, RemovedFromRoom, timeout=30)

        async def two_left() -> bool:
            return {m.name for m in await chen.c.members(room)} == {"Farida", "Chen"}

        await eventually(two_left, timeout=30)
        assert await ben.c.rooms() == []
        await fac.c.send(room, "without Ben")
        await eventually(lambda: _has(chen, room, {"without Ben"}), timeout=30)
        for p in people:
            assert false_alarms(p) == [], (p.name, false_alarms(p))
    finally:
        for p in people:
            await p.stop()


async def test_observers_read_but_cannot_post_and_updates_run_on_schedule(
    tmp_path: Path, relay_proc: RelayProcess
) -> None:
    fac = Person("Farida", tmp_path / "fac", relay_proc.url)
    obs = Person("Olga", tmp_path / "obs", relay_proc.url)
    for p in (fac, obs):
        await p.start(create=True)
    try:
        room = (await fac.c.create_room("Observed")).id
        rid = await obs.c.join(await fac.c.invite(room))
        request = await wait_event(fac, JoinRequested)
        await fac.c.approve(room, request.request.id)
        assert (await obs.c.wait_join(rid, 30)) is not None
        await fac.c.set_role(room, "Olga", "observer")

        async def is_observer() -> bool:
            return (await obs.c.room(room)).role == "observer"

        await eventually(is_observer, timeout=30)
        with pytest.raises(BackchannelError, match=r"[Oo]bserver"):
            await obs.c.send(room, "may I?")
        await fac.c.send(room, "observers read this")
        await eventually(lambda: _has(obs, room, {"observers read this"}), timeout=30)

        room_id = bytes.fromhex(room)
        before = fac.c.engine._live[room_id].room.epoch
        obs.c.engine._self_update_seconds = 0  # everything is due
        await obs.c.engine.run_due_updates()
        await asyncio.wait_for(obs.c.sync(), 30)

        async def advanced() -> bool:
            return fac.c.engine._live[room_id].room.epoch > before

        await eventually(advanced, timeout=30)
        auth = {p.c.engine._live[room_id].room.epoch_authenticator() for p in (fac, obs)}
        assert len(auth) == 1
        for p in (fac, obs):
            assert false_alarms(p) == [], (p.name, false_alarms(p))
    finally:
        for p in (fac, obs):
            await p.stop()


async def test_a_caller_that_stops_waiting_garbles_nothing(
    tmp_path: Path, relay_proc: RelayProcess
) -> None:
    """A UI cancels its workers freely; a send or commit cut off mid-way must still
    leave memory and disk agreeing, or the next message reuses a key generation the
    others already consumed and is silently lost (found in the TUI flow test)."""
    fac = Person("Farida", tmp_path / "fac", relay_proc.url)
    ben = Person("Ben", tmp_path / "ben", relay_proc.url)
    for p in (fac, ben):
        await p.start(create=True)
    try:
        room = (await fac.c.create_room("Interrupted")).id
        rid = await ben.c.join(await fac.c.invite(room))
        request = await wait_event(fac, JoinRequested)
        # The approval itself is cut off: its commit and follow-ups must still happen.
        approving = asyncio.create_task(fac.c.approve(room, request.request.id))
        await asyncio.sleep(0)
        approving.cancel()
        assert (await ben.c.wait_join(rid, 30)) is not None
        for k in range(16):
            sending = asyncio.create_task(fac.c.send(room, f"cut off {k}"))
            for _ in range(k):
                await asyncio.sleep(0)
            sending.cancel()
            await fac.c.send(room, f"after {k}")
        # A send cancelled before it started is simply not sent; any that started is
        # sent whole. Either way both sides end with the same messages, none lost.
        kept = await _texts(fac, room)
        assert {f"after {k}" for k in range(16)} <= set(kept)
        assert {f"cut off {k}" for k in range(1, 16)} <= set(kept)  # these had started
        assert len(kept) == len(set(kept))
        await eventually(lambda: _has(ben, room, set(kept)), timeout=60)
        await ben.c.sync()
        assert sorted(await _texts(ben, room)) == sorted(kept)
        assert false_alarms(ben) == [] and false_alarms(fac) == []
    finally:
        for p in (fac, ben):
            await p.stop()
