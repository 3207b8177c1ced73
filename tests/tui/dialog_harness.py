"""A minimal app for dialog tests: holds a real client, pushes one dialog, records its result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from textual.app import App
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widget import Widget

from backchannel.client import Client

__all__ = ["DialogHarness", "click", "settle", "wait_until"]

_UNSET = object()


class DialogHarness(App[None]):
    """Pushes ``make(client)`` on mount and records what it dismisses with.

    Args:
        client: a started client (None for dialogs that take none).
        make: builds the dialog.
    """

    def __init__(self, client: Client | None, make: Callable[[Any], Screen[Any]]) -> None:
        super().__init__()
        self.client = client
        self.make = make
        #: Every dismiss result, in order.
        self.results: list[Any] = []
        self.dismissed = asyncio.Event()

    def on_mount(self) -> None:
        self.push_screen(self.make(self.client), self._record)

    def _record(self, result: Any) -> None:
        self.results.append(result)
        self.dismissed.set()

    @property
    def result(self) -> Any:
        """The first dismiss result (fails if the dialog is still open)."""
        assert self.results, "the dialog was not dismissed"
        return self.results[0]


async def settle(pilot: Pilot[Any]) -> None:
    """Let the dialog's workers (its client calls) finish and the screen catch up."""
    await pilot.pause()
    screen = pilot.app.screen
    await wait_until(
        pilot,
        lambda: not any(w.node is screen and w.is_running for w in pilot.app.workers),
        timeout=30,
    )
    await pilot.pause()


async def wait_until(pilot: Pilot[Any], check: Callable[[], object], timeout: float = 20.0) -> None:
    """Pump the app until ``check()`` is truthy (tests never assert timings)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.05)


async def click(pilot: Pilot[Any], selector: str) -> None:
    """Scroll the widget into view on the current screen, then click it with the mouse."""
    widget: Widget = pilot.app.screen.query_one(selector)
    # A button ignores clicks during its 0.2 s "pressed" animation, as it does for people.
    await wait_until(pilot, lambda: not widget.has_class("-active"), timeout=5)
    widget.scroll_visible(animate=False, immediate=True)
    await pilot.pause()
    await pilot.click(widget)
    await pilot.pause()
