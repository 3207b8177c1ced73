"""Pilot tests of the main screen with a second participant as a real Client."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from backchannel.client import Client
from backchannel.store.records import Message
from backchannel.tui import BackchannelApp
from backchannel.tui.screens.main import MainScreen
from backchannel.tui.widgets.conversation import Conversation
from tests.e2e.harness import Person

from .conftest import (
    PASSPHRASE,
    RelayHandle,
    eventually,
    wait_for,
    wait_for_main,
    wait_for_workers,
)

Build = Callable[..., BackchannelApp]
HOSTILE = "\x1b[2J\x1b]0;pwned\x07[bold]x[/bold]\u202eevil\x9b31m"


@pytest.fixture
async def room(app_home: Path, peer: Person) -> str:
    """A room Ben facilitates and Ada (the app's profile) is in."""
    ada = await Client.open(app_home, PASSPHRASE)
    try:
        await ada.start()
        summary = await peer.c.create_room("Water talks", approval="auto")
        link = await peer.c.invite(summary.id)
        answer = await ada.wait_join(await ada.join(link), 30)
        assert answer is not None and answer.approved
        await ada.sync()
    finally:
        await ada.close()
    return summary.id


def _lines(conversation: Conversation) -> list[str]:
    return [conversation.line_text(i) for i in range(conversation.total_lines)]


async def _open_room(pilot: object, app: BackchannelApp, room: str) -> MainScreen:
    main = await wait_for_main(pilot)  # type: ignore[arg-type]
    await wait_for(pilot, lambda: main.room_id == room)  # type: ignore[arg-type]
    await wait_for_workers(pilot)  # type: ignore[arg-type]
    return main


async def _history(person: Person, room: str) -> list[str]:
    return [m.text for m in await person.c.history(room, limit=100)]


async def test_messages_from_the_other_appear(
    app_home: Path, room: str, peer: Person, build_app: Build
) -> None:
    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        main = await _open_room(pilot, app, room)
        await peer.c.send(room, "hello Ada, welcome")
        conv = main.conversation
        await wait_for(pilot, lambda: any("hello Ada, welcome" in t for t in _lines(conv)))
        assert any("Ben" in t for t in _lines(conv))
        panel = main.query_one("#members")
        await wait_for(
            pilot,
            lambda: {m.name for m in panel.members} == {"Ada", "Ben"},  # type: ignore[attr-defined]
        )


async def test_typing_and_enter_sends(
    app_home: Path, room: str, peer: Person, build_app: Build
) -> None:
    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        main = await _open_room(pilot, app, room)
        main.composer.focus()
        await pilot.press(*"first line")
        await pilot.press("ctrl+j")
        await pilot.press(*"second line")
        await pilot.press("enter")
        await wait_for(pilot, lambda: main.composer.text == "")
        wanted = "first line\nsecond line"
        await wait_for(pilot, lambda: any("second line" in t for t in _lines(main.conversation)))

        async def arrived() -> bool:
            return wanted in await _history(peer, room)

        await eventually(arrived, timeout=30)
        # once the relay acknowledged it, the sender's view stops saying "sending…"
        await wait_for(pilot, lambda: not any("sending" in t for t in _lines(main.conversation)))


async def test_offline_queues_and_reconnect_delivers(
    app_home: Path, room: str, peer: Person, relay: RelayHandle, build_app: Build
) -> None:
    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        main = await _open_room(pilot, app, room)
        await wait_for(pilot, lambda: app.connection_state == "connected")
        await relay.stop()
        await wait_for(pilot, lambda: app.connection_state != "connected")
        note = main.query_one("#offline-note")
        assert note.display
        assert "queued" in str(note.render())
        main.composer.focus()
        await pilot.press(*"sent while offline")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: any("sent while offline" in t for t in _lines(main.conversation))
        )
        await relay.start()
        await wait_for(pilot, lambda: app.connection_state == "connected", timeout=60)

        async def arrived() -> bool:
            return "sent while offline" in await _history(peer, room)

        await eventually(arrived, timeout=60)
        await wait_for(pilot, lambda: not note.display)


async def test_hostile_text_renders_literally(
    app_home: Path, room: str, peer: Person, build_app: Build
) -> None:
    # Honest clients refuse control characters, so a hostile peer's message is put
    # straight into the store, as a modified client's would arrive.
    ada = await Client.open(app_home, PASSPHRASE)
    try:
        now = time.time()
        await ada.store.add_message(
            Message(
                room_id=bytes.fromhex(room),
                message_id=os.urandom(16),
                sender_id=b"\x02" * 16,
                sender_name="Mallory\x1b[31m\u202e",
                sent_at=now,
                received_at=now,
                kind="text",
                body=HOSTILE,
            )
        )
    finally:
        await ada.close()
    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        main = await _open_room(pilot, app, room)
        await peer.c.send(room, "[red]markup[/red] stays [b]literal[/b]")
        conv = main.conversation
        await wait_for(pilot, lambda: any("markup" in t for t in _lines(conv)))
        lines = _lines(conv)
        assert any("[red]markup[/red] stays [b]literal[/b]" in t for t in lines)
        line = next(t for t in lines if "pwned" in t)
        assert "␛[2J␛]0;pwned␇[bold]x[/bold]\ufffdevil\ufffd31m" in line
        assert any("Mallory␛[31m\ufffd" in t for t in lines)
        for y in range(conv.size.height):
            for segment in conv.render_line(y):
                assert not any(
                    ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in segment.text
                )


@pytest.mark.slow
async def test_ten_thousand_messages_scroll_with_bounded_lines(
    app_home: Path, room: str, build_app: Build
) -> None:
    total = 10_000
    ada = await Client.open(app_home, PASSPHRASE)
    try:
        room_id = bytes.fromhex(room)
        start = time.time() - total * 60
        await ada.store.add_messages(
            [
                Message(
                    room_id=room_id,
                    message_id=os.urandom(16),
                    sender_id=b"\x01" * 16,
                    sender_name="Archive",
                    sent_at=start + i * 60,
                    received_at=start + i * 60,
                    kind="text",
                    body=f"message {i}" + (" with a longer body that wraps" * (i % 4)),
                )
                for i in range(total)
            ]
        )
    finally:
        await ada.close()

    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(100, 30)) as pilot:
        main = await _open_room(pilot, app, room)
        conv = main.conversation
        conv.focus()
        bound = conv.max_cached_lines + 20  # one block may overshoot before eviction
        await wait_for(
            pilot,
            lambda: (
                bool(conv.messages) and conv.messages[-1].text.startswith(f"message {total - 1}")
            ),
        )
        for _ in range(200):
            conv.scroll_to(y=0, animate=False, immediate=True)
            await wait_for_workers(pilot)
            assert len(conv.messages) <= conv.max_loaded
            assert conv.cached_line_count <= bound
            if conv.messages[0].text == "message 0":
                break
        assert conv.messages[0].text == "message 0"
        conv.scroll_to(y=0, animate=False, immediate=True)
        await pilot.pause()
        assert any("message 0" in t for t in conv.visible_text())
        for _ in range(200):
            conv.scroll_end(animate=False, immediate=True)
            await wait_for_workers(pilot)
            assert len(conv.messages) <= conv.max_loaded
            assert conv.cached_line_count <= bound
            if conv.at_live_end:
                break
        assert conv.at_live_end
        conv.scroll_end(animate=False, immediate=True)
        await pilot.pause()
        assert conv.messages[-1].text.startswith(f"message {total - 1}")
        assert len({m.id for m in conv.messages}) == len(conv.messages)


async def test_an_empty_room_says_why_until_its_first_message(
    app_home: Path, room: str, peer: Person, build_app: Build
) -> None:
    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        main = await _open_room(pilot, app, room)
        conv = main.conversation

        def shown() -> str:
            return " ".join(conv.render_line(y).text.strip() for y in range(4))

        assert "No messages here yet." in shown()
        assert "only what is sent after they join" in shown()
        await peer.c.send(room, "first words")
        await wait_for(pilot, lambda: "first words" in shown())
        assert "No messages here yet." not in shown()
