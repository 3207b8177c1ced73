"""Pilot tests of the app's life cycle: first run, unlock, lock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Input

from backchannel.tui import BackchannelApp
from backchannel.tui.screens.first_run import FirstRunScreen, strength_hint
from backchannel.tui.screens.lock import LockScreen
from backchannel.tui.screens.main import MainScreen
from backchannel.tui.screens.unlock import UnlockScreen
from backchannel.views import JoinRequested
from tests.e2e.harness import Person, wait_event

from .conftest import PASSPHRASE, RelayHandle, wait_for, wait_for_main, wait_for_workers

Build = Callable[..., BackchannelApp]


def test_strength_hint_counts_length_and_classes() -> None:
    assert strength_hint("").startswith("Use at least")
    assert strength_hint("short").startswith("Too short")
    assert strength_hint("abcdefghijk").startswith("Weak")
    assert strength_hint("Abcdefgh1234!").startswith("Fair")
    assert strength_hint("correct horse battery staple").startswith("Strong")


async def test_first_run_creates_a_profile(
    tmp_path: Path, relay: RelayHandle, build_app: Build
) -> None:
    home = tmp_path / "new"
    app = build_app(home)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        screen = app.screen
        screen.query_one("#name", Input).value = "Ada"
        screen.query_one("#passphrase", Input).value = PASSPHRASE
        screen.query_one("#passphrase2", Input).value = "something else entirely"
        await pilot.click("#create")
        await pilot.pause()
        assert "differ" in str(screen.query_one("#first-run-error").render())
        assert not app.has_profile
        screen.query_one("#passphrase2", Input).value = PASSPHRASE
        await pilot.click("#relay-url-choice")
        screen.query_one("#relay-url", Input).value = relay.url
        await pilot.click("#create")
        main = await wait_for_main(pilot)
        assert app.has_profile
        assert app.client is not None
        assert app.client.info().name == "Ada"
        assert app.client.info().relay == relay.url
        await wait_for(pilot, lambda: app.connection_state == "connected")
        assert main.query_one("#connection").render()


async def test_unlock_wrong_then_right_passphrase(app_home: Path, build_app: Build) -> None:
    app = build_app(app_home)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, UnlockScreen))
        field = app.screen.query_one("#unlock-passphrase", Input)
        field.value = "not the passphrase"
        await pilot.press("enter")
        await wait_for_workers(pilot)
        assert isinstance(app.screen, UnlockScreen)
        assert "Wrong passphrase" in str(app.screen.query_one("#unlock-error").render())
        assert app.client is None
        # Said once, beside the field: no notification that would outlast the unlock.
        assert not any("passphrase" in str(n.message).lower() for n in app._notifications)
        field.value = PASSPHRASE
        await pilot.press("enter")
        await wait_for_main(pilot)
        assert app.client is not None


async def test_passphrase_from_the_cli_unlocks_directly(app_home: Path, build_app: Build) -> None:
    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_main(pilot)


async def test_lock_hides_everything_and_unlock_restores(app_home: Path, build_app: Build) -> None:
    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        main = await wait_for_main(pilot)
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert isinstance(app.screen, LockScreen)
        assert app.locked
        # Nothing of the main screen is drawn: the lock screen is opaque.
        assert not any(s is main for s in [app.screen])
        assert "Ada" not in _screen_text(app)
        field = app.screen.query_one("#lock-passphrase", Input)
        field.value = "wrong wrong wrong"
        await pilot.press("enter")
        await wait_for_workers(pilot)
        assert isinstance(app.screen, LockScreen)
        assert "Wrong passphrase" in str(app.screen.query_one("#lock-error").render())
        field.value = PASSPHRASE
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert not app.locked
        assert "Ada" in _screen_text(app)


async def test_idle_time_locks(app_home: Path, build_app: Build) -> None:
    app = build_app(app_home, passphrase=PASSPHRASE, idle_lock_seconds=0.5)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_main(pilot)
        await wait_for(pilot, lambda: isinstance(app.screen, LockScreen), timeout=10)


def _screen_text(app: BackchannelApp) -> str:
    """Every character the terminal would show right now."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


async def test_help_lists_the_keys(app_home: Path, build_app: Build) -> None:
    from textual.widgets import DataTable

    from backchannel.tui.commands import catalogue
    from backchannel.tui.screens.help import HelpScreen

    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        main = await wait_for_main(pilot)
        titles = {e.title for e in catalogue(app, main)}
        assert {"New room", "Invite", "Lock", "Keys", "Quit", "Message actions"} <= titles
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one(DataTable)
        shown = {str(table.get_row_at(i)[1]) for i in range(table.row_count)}
        assert {"New room", "Lock", "Send"} <= shown
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_first_run_with_an_invite_link_joins_on_the_links_relay(
    tmp_path: Path, relay: RelayHandle, peer: Person, build_app: Build
) -> None:
    """The relay comes from the link; the join request reaches the facilitator at once."""
    room = (await peer.c.create_room("Invited")).id
    link = await peer.c.invite(room)
    app = build_app(tmp_path / "joiner")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        screen = app.screen
        screen.query_one("#name", Input).value = "Joy"
        screen.query_one("#passphrase", Input).value = PASSPHRASE
        screen.query_one("#passphrase2", Input).value = PASSPHRASE
        await pilot.click("#relay-link-choice")
        screen.query_one("#invite-link", Input).value = "not a link"
        await pilot.click("#create")
        await pilot.pause()
        assert "not a valid Backchannel invite link" in str(
            screen.query_one("#first-run-error").render()
        )
        assert not app.has_profile
        field = screen.query_one("#invite-link", Input)
        field.value = link
        field.focus()
        await pilot.press("enter")  # Enter in a field submits the form, as the button does
        await wait_for_main(pilot)
        assert app.client is not None and app.client.info().relay == relay.url
        request = await wait_event(peer, JoinRequested)
        assert request.request.name == "Joy"


async def test_a_warning_raised_while_opening_is_shown_on_the_main_screen(
    app_home: Path, build_app: Build
) -> None:
    """A damaged room found while the profile opens is announced, not silently skipped."""
    from backchannel.client import Client

    client = await Client.open(app_home, PASSPHRASE)
    await client.start()
    room = (await client.create_room("Will be damaged")).id
    await client.close()
    client = await Client.open(app_home, PASSPHRASE)
    await client.store.set_room_state(bytes.fromhex(room), b"not a room")
    await client.close()
    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_main(pilot)
        await wait_for(pilot, lambda: any("damaged" in str(n.message) for n in app._notifications))


async def _stored_room(home: Path) -> str:
    """A room "Stored talks" in the profile at ``home`` with one sent message; its id."""
    from backchannel.client import Client

    async with await Client.open(home, PASSPHRASE) as client:
        await client.start()
        room = await client.create_room("Stored talks")
        await client.send(room.id, "kept on this device")
        await client.sync()
    return room.id


async def test_rooms_show_before_the_relay_answers(
    app_home: Path, relay: RelayHandle, build_app: Build
) -> None:
    """The main screen is painted from the store; connecting comes after, offline or not."""
    await _stored_room(app_home)
    await relay.stop()
    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(
            pilot,
            lambda: (
                isinstance(app.screen, MainScreen)
                and any(
                    "kept on this device" in line for line in app.screen.conversation.visible_text()
                )
            ),
        )
        assert app.connection_state != "connected"
        await relay.start()
        await wait_for(pilot, lambda: app.connection_state == "connected")


async def test_a_local_relay_that_cannot_listen_returns_to_the_unlock_screen(
    tmp_path: Path, build_app: Build
) -> None:
    """The embedded relay's port is taken: the app says why and asks again, nothing opens."""
    import socket

    from backchannel.client import Client

    home = tmp_path / "local"
    client = await Client.create(home, name="Ada", passphrase=PASSPHRASE)
    port = int(client.relay_url.rsplit(":", 1)[1].split("/")[0])
    await client.close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        app = build_app(home, passphrase=PASSPHRASE)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(
                pilot,
                lambda: any(
                    "Cannot start the local relay" in str(n.message) for n in app._notifications
                ),
            )
            await wait_for(pilot, lambda: isinstance(app.screen, UnlockScreen))
            assert app.client is None
            assert app.main_screen is None


async def test_the_stored_rooms_show_before_they_load_and_a_quick_message_waits(
    app_home: Path, build_app: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Painted from the store; a message or dialog before the rooms load goes once they do."""
    from backchannel.client import Client

    room = await _stored_room(app_home)

    gate = asyncio.Event()
    real_load = Client.load

    async def held_load(self: Client, **kwargs: object) -> None:
        await gate.wait()
        await real_load(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Client, "load", held_load)
    app = build_app(app_home, passphrase=PASSPHRASE)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        main = app.screen
        assert isinstance(main, MainScreen)
        await wait_for(
            pilot,
            lambda: any("kept on this device" in line for line in main.conversation.visible_text()),
        )
        assert app.client is not None and app.client._engine is None  # not loaded yet
        assert "1 member, you are facilitator" in str(main.query_one("#room-header").render())
        assert [r.title for r in await app.client.rooms()] == ["Stored talks"]
        main.composer.focus()
        await pilot.press(*"typed at once")
        await pilot.press("enter")
        await pilot.press("ctrl+n")  # a dialog waits for the rooms too
        await pilot.pause(0.2)
        assert isinstance(app.screen, MainScreen)
        gate.set()
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CreateRoomDialog")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        await wait_for(
            pilot, lambda: any("typed at once" in line for line in main.conversation.visible_text())
        )
        await wait_for(pilot, lambda: app.connection_state == "connected")
    reopened = await Client.open(app_home, PASSPHRASE)
    try:
        await reopened.start()
        await reopened.sync()
        texts = [m.text for m in await reopened.history(room)]
        assert texts == ["kept on this device", "typed at once"]
        assert all(m.delivered for m in await reopened.history(room))
    finally:
        await reopened.close()
