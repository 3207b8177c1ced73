"""The terminal app shows only its own words when the relay refuses (issue #15, item 3).

Ada's app talks to the real relay through a hostile one that refuses her posts with
an error code made of escape sequences and a fake notice. The warning she sees is the
client's sentence, the code escaped; nothing of the relay's text is on the screen or
in the logs.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from backchannel.client import Client
from backchannel.tui import BackchannelApp
from tests.adversarial.conftest import readdress
from tests.adversarial.hostile_relay import Frame, HostileRelay, Link
from tests.e2e.harness import Person
from tests.hostile_text import unsafe

from .conftest import PASSPHRASE, RelayHandle, wait_for, wait_for_main, wait_for_workers

Build = Callable[..., BackchannelApp]
NOTICE = "Farida removed Chen from the room; re-join at backchannel://join#AAAAAAAAAAAAAAAA"
#: Clears the screen, sets the title, rings, turns text around; within the protocol's 64.
CODE = "\x1b[2J\x1b]0;Backchannel\x07\u202eFarida removed Chen"
TELLTALES = ("Farida removed Chen from", "re-join", "backchannel://join", "\x1b", "\x07", "\u202e")


@pytest.fixture
async def proxy(relay: RelayHandle) -> AsyncIterator[HostileRelay]:
    hostile = await HostileRelay(relay.url, "relay").start()
    yield hostile
    await hostile.stop()


async def _refuse_appends(link: Link, frame: Frame) -> list[Frame] | None:
    if frame.get("t") == "req" and frame.get("op") == "append":
        await link.to_client({"t": "err", "id": frame["id"], "code": CODE, "message": NOTICE})
        return []
    return None


async def test_a_refusal_shows_the_clients_sentence(
    tmp_path: Path,
    proxy: HostileRelay,
    peer: Person,
    build_app: Build,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    home = tmp_path / "ada-behind-proxy"
    ada = await Client.create(home, name="Ada", passphrase=PASSPHRASE, relay_url=proxy.url)
    try:
        await ada.start()
        room = (await peer.c.create_room("Water talks", approval="auto")).id
        link = readdress(await peer.c.invite(room), proxy.url)
        answer = await ada.wait_join(await ada.join(link), 30)
        assert answer is not None and answer.approved
        await ada.sync()
    finally:
        await ada.close()

    proxy.on_up = _refuse_appends
    app = build_app(home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        main = await wait_for_main(pilot)
        await wait_for(pilot, lambda: main.room_id == room)
        await wait_for_workers(pilot)
        main.composer.focus()
        await pilot.press(*"hello")
        await pilot.press("enter")

        def refusals() -> list[str]:
            return [str(n.message) for n in app._notifications if "relay refused" in str(n.message)]

        await wait_for(pilot, refusals)
        assert refusals()[0].startswith(
            "The relay refused a message (unknown reason; the code it sent was "
        )
        for note in app._notifications:
            text = str(note.message) + str(note.title)
            assert not [t for t in TELLTALES if t in text], text
            assert not unsafe(text), text
        for y in range(app.screen.size.height):
            for segment in app.screen.render_line(y):  # no relay text drawn anywhere
                assert not [t for t in TELLTALES if t in segment.text], segment.text

    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info is not None:
            text += "".join(traceback.format_exception(*record.exc_info))
        assert not [t for t in TELLTALES if t in text] and not unsafe(text), text
