"""The client end-to-end scenario through two relay nodes sharing one PostgreSQL."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from backchannel.rooms.invites import parse_invite
from backchannel.views import JoinRequested
from relay.app import create_app
from tests.conftest import relay_config

from .harness import Person, eventually, wait_event


@pytest.fixture
async def two_nodes(tmp_path: Path, postgres_url: str) -> AsyncIterator[list[str]]:
    runners = []
    for name in ("a", "b"):
        config = relay_config(tmp_path / name, database_url=postgres_url)
        runner = web.AppRunner(create_app(config), access_log=None, shutdown_timeout=5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
    yield [f"ws://127.0.0.1:{r.addresses[0][1]}/v1/ws" for r in runners]
    for r in runners:
        await r.cleanup()


def _on_node(link: str, url: str) -> str:
    """The same invite as a load balancer would route it: to the other node's address."""
    invite = parse_invite(link, now=time.time())
    return dataclasses.replace(invite, relay_url=url).to_link()


async def test_a_room_spread_over_two_relay_nodes(tmp_path: Path, two_nodes: list[str]) -> None:
    a, b = two_nodes
    fac = Person("Farida", tmp_path / "fac", a)
    ben = Person("Ben", tmp_path / "ben", b)
    chen = Person("Chen", tmp_path / "chen", a)
    for p in (fac, ben, chen):
        await p.start(create=True)
    try:
        room = (await fac.c.create_room("Across nodes")).id
        for joiner in (ben, chen):
            link = await fac.c.invite(room)
            rid = await joiner.c.join(_on_node(link, joiner.relay_url))
            request = await wait_event(fac, JoinRequested)
            fac.seen.remove(request)
            await fac.c.approve(room, request.request.id)
            answer = await joiner.c.wait_join(rid, 30)
            assert answer is not None and answer.approved
        await ben.c.send(room, "from node b")
        await chen.c.send(room, "from node a")
        for p in (fac, ben, chen):

            async def both(p: Person = p) -> bool:
                texts = {m.text for m in await p.c.history(room)}
                return {"from node b", "from node a"} <= texts

            await eventually(both, timeout=30)
        await fac.c.remove(room, "Ben")
        await fac.c.send(room, "after the removal")

        async def chen_reads() -> bool:
            return "after the removal" in {m.text for m in await chen.c.history(room)}

        await eventually(chen_reads, timeout=30)
        await eventually(lambda: not ben.c.engine._live, timeout=30)
    finally:
        for p in (fac, ben, chen):
            await p.stop()
