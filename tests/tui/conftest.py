"""Fixtures for pilot tests: a real relay on loopback, real profiles, the app via make_app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from textual.pilot import Pilot
from textual.widgets import Input, TextArea
from textual.worker import WorkerCancelled

from backchannel.client import Client
from backchannel.tui import BackchannelApp, make_app
from backchannel.tui.screens.main import MainScreen
from relay.app import create_app
from tests.conftest import relay_config
from tests.e2e.harness import PASSPHRASE, Person, eventually

__all__ = [
    "PASSPHRASE",
    "RelayHandle",
    "eventually",
    "wait_for",
    "wait_for_main",
    "wait_for_workers",
]


@pytest.fixture(autouse=True)
def no_cursor_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blinking cursors make screens differ from one frame to the next."""
    monkeypatch.setattr(Input, "cursor_blink", False)
    monkeypatch.setattr(TextArea, "cursor_blink", False)


@dataclass
class RelayHandle:
    """A relay served in the test's loop; ``stop()`` and ``start()`` keep its port and data."""

    tmp_path: Path
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def start(self) -> None:
        self.runner = web.AppRunner(
            create_app(relay_config(self.tmp_path)), access_log=None, shutdown_timeout=1
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayHandle]:
    handle = RelayHandle(tmp_path / "relay-data")
    await handle.start()
    yield handle
    await handle.stop()


@pytest.fixture
async def app_home(tmp_path: Path, relay: RelayHandle) -> Path:
    """A profile called Ada on the test relay (created and closed again)."""
    home = tmp_path / "ada"
    client = await Client.create(home, name="Ada", passphrase=PASSPHRASE, relay_url=relay.url)
    await client.close()
    return home


@pytest.fixture
async def peer(tmp_path: Path, relay: RelayHandle) -> AsyncIterator[Person]:
    """Ben: a second participant as a real Client (not the app)."""
    person = Person("Ben", tmp_path / "ben", relay.url)
    await person.start(create=True)
    yield person
    await person.stop()


@pytest.fixture
def build_app() -> Callable[..., BackchannelApp]:
    """The app exactly as the CLI builds it (auto-lock off unless a test sets it)."""

    def build(home: Path, **kwargs: object) -> BackchannelApp:
        kwargs.setdefault("idle_lock_seconds", 0)
        return make_app(home, **kwargs)  # type: ignore[arg-type]

    return build


async def wait_for_workers(pilot: Pilot[object]) -> None:
    """Let running workers finish and the screen catch up."""
    # The client-event pump runs for the app's whole life: wait for the others.
    busy = [w for w in pilot.app.workers if w.group != "client-events" and not w.is_finished]
    if busy:  # an empty list would mean "all of them", the pump included
        with contextlib.suppress(WorkerCancelled):
            await pilot.app.workers.wait_for_complete(busy)
    await pilot.pause()


async def wait_for(pilot: Pilot[object], check: Callable[[], object], timeout: float = 30) -> None:
    """Pause the pilot until ``check()`` is truthy."""

    async def done() -> bool:
        await pilot.pause(0.05)
        return bool(check())

    await eventually(done, timeout)


async def wait_for_main(pilot: Pilot[object]) -> MainScreen:
    """Wait until the profile is open and the main screen shows."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, MainScreen))
    screen = pilot.app.screen
    assert isinstance(screen, MainScreen)
    return screen
