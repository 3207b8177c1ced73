"""Real clients behind a man in the middle, in front of the real relay (issue #15, items 5 and 6).

Two real profiles in one room, each behind its own :class:`MitmProxy`. The room is
set up with the proxies passing frames; then they switch to a mode and both people
write at once. For every mode but bit flips, every message arrives exactly once and
unaltered on both sides, and nobody is warned of anything. With bit flips, nothing
altered is ever shown, and what was lost is said.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from backchannel.errors import BackchannelError
from backchannel.rooms.invites import parse_invite
from backchannel.views import Alert, JoinRequested, MessageView
from relay.app import create_app
from tests.conftest import relay_config

from .harness import Person, eventually, false_alarms, wait_event
from .mitm_proxy import MitmProxy, Mode

#: Messages each person writes while the proxies misbehave.
EACH = 5


@dataclasses.dataclass
class Side:
    person: Person
    proxy: MitmProxy

    @property
    def name(self) -> str:
        return self.person.name

    async def texts(self, room: str) -> list[MessageView]:
        try:
            return [m for m in await self.person.c.history(room, limit=500) if m.kind == "text"]
        except BackchannelError:
            return []

    def alerts(self) -> list[str]:
        return [e.text for e in self.person.seen if isinstance(e, Alert)]


@pytest.fixture
async def relay_url(tmp_path: Path) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(relay_config(tmp_path)), access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/ws"
    await runner.cleanup()


@pytest.fixture
async def sides(tmp_path: Path, relay_url: str) -> AsyncIterator[list[Side]]:
    made: list[Side] = []
    for seed, name in enumerate(("Farida", "Ben")):
        proxy = await MitmProxy(relay_url, seed=seed).start()
        person = Person(name, tmp_path / name.lower(), proxy.url)
        made.append(Side(person, proxy))
        await person.start(create=True)
    yield made
    for side in made:
        await side.person.stop()
        await side.proxy.stop()


async def _room(fac: Side, ben: Side) -> str:
    """A room of the two, with everything of its set-up delivered and read."""
    room = (await fac.person.c.create_room("Through a man in the middle")).id
    invite = parse_invite(await fac.person.c.invite(room), now=time.time())
    link = dataclasses.replace(invite, relay_url=ben.proxy.url).to_link()
    rid = await ben.person.c.join(link)
    request = await wait_event(fac.person, JoinRequested)
    await fac.person.c.approve(room, request.request.id)
    answer = await ben.person.c.wait_join(rid, 30)
    assert answer is not None and answer.approved

    async def settled() -> bool:
        for side in (fac, ben):
            try:
                names = {m.name for m in await side.person.c.members(room)}
            except BackchannelError:
                return False
            if names != {"Farida", "Ben"} or not side.person.c._events.empty():
                return False
        return ben.person.c.connection._caps.get(_mailbox(ben, room)) is not None

    await eventually(settled, 30)
    for side in (fac, ben):
        await side.person.c.sync(30)
    return room


def _mailbox(side: Side, room: str) -> bytes:
    return side.person.c.engine._live[bytes.fromhex(room)].meta.access.mailbox


def _words(mode: Mode, name: str, i: int) -> str:
    # Non-ASCII, and long enough to span the padding: an altered byte would show.
    return f"{name} · {mode.value} · message {i} · ¿acuerdo sobre la cláusula {i}?"


async def _has_all(side: Side, room: str, texts: set[str]) -> bool:
    return texts <= {m.text for m in await side.texts(room)}


@pytest.mark.parametrize(
    "mode",
    [Mode.PASS, Mode.REORDER, Mode.DUPLICATE, Mode.REPLAY, Mode.DELAY, Mode.DROP],
)
async def test_every_message_arrives_exactly_once_and_unaltered(
    sides: list[Side], mode: Mode
) -> None:
    fac, ben = sides
    room = await _room(fac, ben)
    warned_before = {s.name: len(s.alerts()) for s in sides}
    for side in sides:
        side.proxy.mode = mode
    sent = {s.name: [_words(mode, s.name, i) for i in range(EACH)] for s in sides}

    async def write(side: Side) -> None:
        for text in sent[side.name]:
            await side.person.c.send(room, text)

    await asyncio.gather(*(write(s) for s in sides))  # both at once, interleaved
    everything = {t for texts in sent.values() for t in texts}
    for side in sides:
        await eventually(lambda side=side: _has_all(side, room, everything), 60)
    for side in sides:
        side.proxy.mode = Mode.PASS
        await side.person.c.sync(30)
    await asyncio.sleep(1.0)  # room for a late duplicate to show up, if one could

    for side in sides:
        shown = await side.texts(room)
        texts = [m.text for m in shown]
        assert sorted(texts) == sorted(everything), (side.name, mode, texts)
        for m in shown:  # each under its author's name
            assert m.text in sent[m.sender_name], (side.name, m.sender_name, m.text)
            assert m.delivered
        assert false_alarms(side.person) == []
        assert side.alerts()[warned_before[side.name] :] == [], side.alerts()
    stats = fac.proxy.stats + ben.proxy.stats
    did = {
        Mode.PASS: "pushes",
        Mode.REORDER: "swapped",
        Mode.DUPLICATE: "duplicated",
        Mode.REPLAY: "replayed",
        Mode.DELAY: "delayed",
        Mode.DROP: "dropped",
    }[mode]
    assert stats[did] > 0, stats


async def test_flipped_bits_show_nothing_altered_and_what_was_lost_is_said(
    sides: list[Side],
) -> None:
    fac, ben = sides
    room = await _room(fac, ben)
    ben.proxy.mode = Mode.FLIP  # what reaches Ben has bits flipped
    sent = [_words(Mode.FLIP, "Farida", i) for i in range(3 * EACH)]
    for text in sent:
        await fac.person.c.send(room, text)
    await fac.person.c.sync(30)
    await asyncio.sleep(1.0)
    ben.proxy.mode = Mode.PASS
    last = "Farida · the last one, after the line is clean again"
    await fac.person.c.send(room, last)
    await eventually(lambda: _has_all(ben, room, {last}), 60)
    await ben.person.c.sync(30)

    shown = await ben.texts(room)
    texts = [m.text for m in shown]
    assert len(texts) == len(set(texts)), texts  # nothing twice
    assert set(texts) <= {*sent, last}, texts  # nothing altered: only what Farida wrote
    assert all(m.sender_name == "Farida" for m in shown)
    lost = set(sent) - set(texts)
    stats = ben.proxy.stats
    assert stats["flipped_blob"] > 0 and stats["flipped_header"] > 0, stats
    assert 0 < len(lost) <= stats["flipped_blob"] + stats["flipped_header"], (lost, stats)
    # Ben is told that messages of Farida's are missing.
    missing = [t for t in ben.alerts() if "missing" in t and "Farida" in t]
    assert missing, ben.alerts()
