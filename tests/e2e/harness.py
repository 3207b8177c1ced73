"""Real profiles against a real relay on loopback, for the end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from backchannel.client import Client
from backchannel.views import ClientEvent

__all__ = ["ALARMS", "Person", "eventually", "false_alarms", "wait_event"]

PASSPHRASE = "correct horse battery staple"
E = TypeVar("E", bound=ClientEvent)


@dataclass
class Person:
    """One profile directory and, while started, its client."""

    name: str
    home: Path
    relay_url: str
    client: Client | None = None
    seen: list[ClientEvent] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def start(self, *, create: bool = False) -> Client:
        if create:
            client = await Client.create(
                self.home, name=self.name, passphrase=PASSPHRASE, relay_url=self.relay_url
            )
        else:
            client = await Client.open(self.home, PASSPHRASE)
        await client.start()
        self.client = client
        self._reader = asyncio.create_task(self._read(client))
        return client

    async def _read(self, client: Client) -> None:
        async for event in client.events():
            self.seen.append(event)

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.client is not None:
            await self.client.close()
        self.client = None

    @property
    def c(self) -> Client:
        assert self.client is not None, f"{self.name} is not started"
        return self.client


#: Words of the warnings an honest relay must never cause (fork, gaps, withheld changes).
ALARMS = ("forked", "missing", "not reached", "did not show you back")


def false_alarms(person: Person) -> list[str]:
    """Security warnings this person saw; with an honest relay there must be none."""
    from backchannel.views import Alert

    return [
        e.text
        for e in person.seen
        if isinstance(e, Alert) and any(word in e.text for word in ALARMS)
    ]


async def eventually(check: Callable[[], object], timeout: float = 20.0) -> None:
    """Poll an async or sync ``check`` until it returns truthy (tests never assert timings)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def wait_event(person: Person, kind: type[E], timeout: float = 20.0) -> E:
    """The first event of ``kind`` the person has seen (waiting for it if needed)."""
    found: list[E] = []

    def check() -> bool:
        found[:] = [e for e in person.seen if isinstance(e, kind)]
        return bool(found)

    await eventually(check, timeout)
    return found[0]


async def start_room_of_two(fac: Person, ben: Person, title: str) -> str:
    """Start two new profiles; ``fac`` opens a room and ``ben`` joins it through an invite.

    Returns:
        The room's id.
    """
    from backchannel.views import JoinRequested

    for p in (fac, ben):
        await p.start(create=True)
    room = (await fac.c.create_room(title)).id
    rid = await ben.c.join(await fac.c.invite(room))
    request = await wait_event(fac, JoinRequested)
    await fac.c.approve(room, request.request.id)
    assert (await ben.c.wait_join(rid, 30)) is not None
    return room
