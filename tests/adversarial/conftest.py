"""Fixtures for the adversarial suite: a real relay, and real clients each behind a hostile proxy."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from backchannel.engine.state import Live
from backchannel.errors import BackchannelError
from backchannel.rooms.access import seal_room_blob
from backchannel.rooms.invites import parse_invite
from backchannel.views import Alert, JoinRequested
from relay.app import create_app
from tests.conftest import relay_config
from tests.e2e.harness import Person, eventually, wait_event

from .hostile_relay import HostileRelay

__all__ = ["Net", "Party", "readdress"]


def readdress(link: str, url: str) -> str:
    """The same invite, pointing at another relay URL (a joiner behind its own proxy)."""
    return dataclasses.replace(parse_invite(link, now=time.time()), relay_url=url).to_link()


@dataclass
class Party:
    """A real profile, its client, and the hostile proxy between it and the relay."""

    person: Person
    proxy: HostileRelay

    @property
    def c(self):  # type: ignore[no-untyped-def]
        return self.person.c

    @property
    def name(self) -> str:
        return self.person.name

    @property
    def seen(self) -> list[object]:
        return self.person.seen

    def live(self, room: str) -> Live:
        return self.c.engine._live[bytes.fromhex(room)]

    def mailbox(self, room: str) -> bytes:
        return self.live(room).meta.access.mailbox

    def seal(self, room: str, data: bytes) -> bytes:
        """``data`` sealed for the room's current mailbox, as this member can (an
        insider's forgery reaches the MLS and policy checks; the relay's cannot)."""
        return seal_room_blob(self.live(room).meta.access, data)

    def state(self, room: str) -> tuple[int, bytes, frozenset[bytes]]:
        """(epoch, epoch_authenticator, member ids) from the MLS tree."""
        r = self.live(room).room
        return r.epoch, r.epoch_authenticator(), frozenset(m.member_id for m in r.members())

    async def texts(self, room: str) -> list[str]:
        try:
            return [m.text for m in await self.c.history(room, limit=500) if m.kind == "text"]
        except BackchannelError:
            return []

    def alerts(self, phrase: str = "") -> list[Alert]:
        return [e for e in self.seen if isinstance(e, Alert) and phrase in e.text]


class Net:
    """Makes parties on one relay; stops them all at the end."""

    def __init__(self, tmp_path: Path, relay_url: str) -> None:
        self.tmp_path = tmp_path
        self.relay_url = relay_url
        self.parties: list[Party] = []

    async def party(self, name: str) -> Party:
        proxy = await HostileRelay(self.relay_url, name).start()
        person = Person(name, self.tmp_path / name.lower(), proxy.url)
        await person.start(create=True)
        p = Party(person, proxy)
        self.parties.append(p)
        return p

    async def room(self, fac: Party, title: str, *members: Party) -> str:
        room = (await fac.c.create_room(title)).id
        for m in members:
            await self.join(fac, m, room)
        ids = {m.c.identity.identity_id for m in (fac, *members)}
        names = {m.name for m in (fac, *members)}
        for p in (fac, *members):
            await eventually(lambda p=p: p.state(room)[2] == ids and _same(fac, p, room), 30)
        for p in (fac, *members):
            # Every name announced after the joins has arrived and its event been read,
            # so a test starts from a room with nothing legitimate still on its way.
            await eventually(lambda p=p: _knows_names(p, room, names), 30)
            await eventually(lambda p=p: p.c._events.empty(), 30)
        return room

    async def join(self, fac: Party, joiner: Party, room: str) -> None:
        link = readdress(await fac.c.invite(room), joiner.proxy.url)
        rid = await joiner.c.join(link)
        request = await wait_event(fac.person, JoinRequested)
        fac.seen.remove(request)
        await fac.c.approve(room, request.request.id)
        answer = await joiner.c.wait_join(rid, 30)
        assert answer is not None and answer.approved
        # the joiner's room is live a moment before its mailbox capability is registered
        # (engine/invites.py _inbox_entry): wait for both, so tests start from a usable room
        await eventually(lambda: _writable(joiner, room), 20)

    async def close(self) -> None:
        for p in self.parties:
            await p.person.stop()
            await p.proxy.stop()


def _writable(p: Party, room: str) -> bool:
    try:
        cap = p.c.connection._caps.get(p.mailbox(room))
    except KeyError:
        return False
    return cap is not None and cap.write is not None


async def _knows_names(p: Party, room: str, names: set[str]) -> bool:
    return {m.name for m in await p.c.members(room)} == names


def _same(a: Party, b: Party, room: str) -> bool:
    try:
        return a.state(room)[:2] == b.state(room)[:2]
    except KeyError:
        return False


@pytest.fixture
async def relay_url(tmp_path: Path) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(relay_config(tmp_path)), access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/ws"
    await runner.cleanup()


@pytest.fixture
async def net(tmp_path: Path, relay_url: str) -> AsyncIterator[Net]:
    n = Net(tmp_path, relay_url)
    yield n
    await n.close()


# -- the room layer without I/O (insider crafting, decoders) ---------------------------------

NOW = 1_900_000_000


def identity(name: str):  # type: ignore[no-untyped-def]
    from backchannel.identity import DeviceIdentity

    return DeviceIdentity.generate(name)


def key_package(ident, now: int | None = None):  # type: ignore[no-untyped-def]
    """A key package of ``ident`` valid at ``now`` (default: the wall clock)."""
    from backchannel.rooms.room import Room

    now = int(time.time()) if now is None else now

    return Room.key_package(ident.cipher_suite, ident.credential(), ident.private_key(), now=now)


def room_group(n: int, now: int = NOW, title: str = "Sans-IO room"):  # type: ignore[no-untyped-def]
    """``n`` members' :class:`Room` objects (member 0 the facilitator), all at one epoch."""
    from backchannel.rooms.room import Room

    ids = [identity(f"member{i}") for i in range(n)]
    first = ids[0]
    rooms = [
        Room.create(
            first.cipher_suite, first.credential(), first.private_key(), title=title, now=now
        )
    ]
    for ident in ids[1:]:
        kp = key_package(ident, now)
        out = rooms[0].add_members([kp.key_package.to_bytes()], now=now)
        rooms[0].confirm_pending()
        for r in rooms[1:]:
            r.receive(out.commit, now=now)
        assert out.welcome is not None
        rooms.append(Room.join(out.welcome, kp, now=now))
    return ids, rooms


def copy_room(room):  # type: ignore[no-untyped-def]
    """An independent copy of a member's room state (to craft hostile messages from it)."""
    from backchannel.rooms.room import Room

    return Room.from_bytes(room.to_bytes())
