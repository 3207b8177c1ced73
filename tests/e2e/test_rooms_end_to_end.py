"""A facilitator and participants, each a real profile, talking through a real relay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from backchannel.errors import BackchannelError
from backchannel.views import JoinAnswered, JoinRequested
from relay.app import create_app
from tests.conftest import relay_config

from .harness import Person, eventually, wait_event


@pytest.fixture
async def relay_url(tmp_path: Path) -> AsyncIterator[str]:
    config = relay_config(tmp_path)
    runner = web.AppRunner(create_app(config), access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/ws"
    await runner.cleanup()


@pytest.fixture
async def people(tmp_path: Path, relay_url: str) -> AsyncIterator[dict[str, Person]]:
    names = ["Farida", "Ben", "Chen", "Dana"]
    crowd = {n: Person(n, tmp_path / n.lower(), relay_url) for n in names}
    for p in crowd.values():
        await p.start(create=True)
    yield crowd
    for p in crowd.values():
        await p.stop()


async def _texts(person: Person, room: str) -> list[str]:
    return [m.text for m in await person.c.history(room, limit=500) if m.kind == "text"]


async def _join(fac: Person, joiner: Person, room: str, *, approve: bool = True) -> str:
    link = await fac.c.invite(room)
    rid = await joiner.c.join(link)
    request = await wait_event(fac, JoinRequested)
    fac.seen.remove(request)
    assert request.request.name == joiner.name
    if approve:
        await fac.c.approve(room, request.request.id)
    else:
        await fac.c.deny(room, request.request.id)
    answer = await joiner.c.wait_join(rid, 20)
    assert answer is not None and answer.approved is approve
    return rid


async def test_create_invite_approve_chat_and_remove(people: dict[str, Person]) -> None:
    fac, ben, chen = people["Farida"], people["Ben"], people["Chen"]
    room = (await fac.c.create_room("Water talks")).id
    await _join(fac, ben, room)
    await _join(fac, chen, room)
    await fac.c.send(room, "welcome, both")
    await ben.c.send(room, "hello from Ben")
    for p in (fac, ben, chen):
        await eventually(
            lambda p=p: _has_all(p, room, {"welcome, both", "hello from Ben"}), timeout=30
        )
    # everyone learns everyone's name
    await eventually(lambda: _names(chen, room, {"Farida", "Ben", "Chen"}), timeout=30)
    members = await fac.c.members(room)
    assert {m.name for m in members} >= {"Farida", "Ben", "Chen"}
    assert {m.role for m in members if m.name == "Farida"} == {"facilitator"}

    await fac.c.remove(room, "Ben")
    await fac.c.send(room, "after Ben left")
    await eventually(lambda: _has_all(chen, room, {"after Ben left"}), timeout=30)
    await ben.c.sync()
    assert "after Ben left" not in await _texts(ben, room) if _in_room(ben, room) else True
    with pytest.raises(BackchannelError):
        await ben.c.send(room, "let me back in")


async def test_a_denied_request_is_told_and_adds_no_one(people: dict[str, Person]) -> None:
    fac, dana = people["Farida"], people["Dana"]
    room = (await fac.c.create_room("Closed")).id
    await _join(fac, dana, room, approve=False)
    assert [m.name for m in await fac.c.members(room)] == ["Farida"]
    assert await dana.c.rooms() == []


async def test_auto_approval_adds_without_a_facilitator_action(people: dict[str, Person]) -> None:
    fac, chen = people["Farida"], people["Chen"]
    room = (await fac.c.create_room("Open door", approval="auto")).id
    link = await fac.c.invite(room, uses=5)
    rid = await chen.c.join(link)
    answer = await chen.c.wait_join(rid, 30)
    assert isinstance(answer, JoinAnswered) and answer.approved and answer.room == room
    await chen.c.send(room, "auto hello")
    await eventually(lambda: _has_all(fac, room, {"auto hello"}), timeout=30)


async def _has_all(p: Person, room: str, texts: set[str]) -> bool:
    try:
        return texts <= set(await _texts(p, room))
    except BackchannelError:
        return False


async def _names(p: Person, room: str, names: set[str]) -> bool:
    return names <= {m.name for m in await p.c.members(room)}


def _in_room(p: Person, room: str) -> bool:
    try:
        p.c.engine.resolve_room(room)
    except BackchannelError:
        return False
    return True
