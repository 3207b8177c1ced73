"""An honest relay never makes a client cry wolf (issue #16, item 9).

The echo check compares each own append with what comes back at the position the
relay acknowledged. Positions are per mailbox, and a removal moves the room to a new
mailbox numbered from 1 again: a check that remembered positions by sequence number
alone compared the new mailbox's entries with the old one's and said "This room has
forked" on the first commit after a removal. A false alarm teaches people to ignore
the real one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from backchannel.views import JoinRequested
from relay.app import create_app
from tests.conftest import relay_config

from .harness import Person, eventually, false_alarms, wait_event


@pytest.fixture
async def relay_url(tmp_path: Path) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(relay_config(tmp_path)), access_log=None, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/ws"
    await runner.cleanup()


async def _join(fac: Person, joiner: Person, room: str) -> None:
    rid = await joiner.c.join(await fac.c.invite(room))
    request = await wait_event(fac, JoinRequested)
    fac.seen.remove(request)
    await fac.c.approve(room, request.request.id)
    assert (await joiner.c.wait_join(rid, 30)) is not None


async def _texts(p: Person, room: str) -> set[str]:
    return {m.text for m in await p.c.history(room, limit=500) if m.kind == "text"}


async def test_a_removal_then_a_role_change_raises_no_fork_alarm(
    tmp_path: Path, relay_url: str
) -> None:
    people = [Person(n, tmp_path / n.lower(), relay_url) for n in ("Farida", "Ben", "Chen")]
    fac, ben, chen = people
    for p in people:
        await p.start(create=True)
    try:
        room = (await fac.c.create_room("Moves")).id
        await _join(fac, ben, room)
        await _join(fac, chen, room)
        for k in range(3):  # the old mailbox gets positions the new one will reuse
            await fac.c.send(room, f"before {k}")
            await ben.c.send(room, f"ben before {k}")
        room_id = bytes.fromhex(room)
        old = fac.c.engine._live[room_id].meta.access.mailbox
        await fac.c.remove(room, "Chen")
        await eventually(lambda: room_id not in chen.c.engine._live, timeout=30)
        assert fac.c.engine._live[room_id].meta.access.mailbox != old
        await fac.c.set_role(room, "Ben", "observer")

        async def observer() -> bool:
            return (await ben.c.room(room)).role == "observer"

        await eventually(observer, timeout=30)
        await fac.c.send(room, "after the move")
        await fac.c.set_role(room, "Ben", "participant")
        await ben.c.send(room, "ben after the move")
        for p in (fac, ben):
            await eventually(
                lambda p=p: _has(p, room, {"after the move", "ben after the move"}), timeout=30
            )
            await p.c.sync(30)
        for p in people:
            assert false_alarms(p) == [], (p.name, false_alarms(p))
    finally:
        for p in people:
            await p.stop()


async def _has(p: Person, room: str, texts: set[str]) -> bool:
    return texts <= await _texts(p, room)
