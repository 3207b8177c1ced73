"""Deterministic app builders for snapshot tests and the README screenshots.

The app is built with :func:`backchannel.tui.make_app`, as the CLI builds it, but its
``client_factory`` hands out a :class:`ScriptedClient`: a stand-in for the client
façade that answers from fixed display data (ids, names, times, safety numbers). A
real profile would show fresh random safety numbers and ids on every run, and
``snap_compare`` runs the app in its own event loop, where no in-test relay can
live; the screens never see the difference, because they only call the façade.

Regenerate the README screenshots with::

    python -m tests.tui.snapshot_apps docs/screenshots
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DirectoryTree, Input, TextArea

from backchannel.client import ProfileInfo
from backchannel.tui import BackchannelApp, make_app
from backchannel.tui.screens.main import MainScreen
from backchannel.views import (
    ClientEvent,
    ConnectionChanged,
    FileInfo,
    MemberView,
    MessageView,
    ReactionCount,
    RequestView,
    RoomSummary,
)

__all__ = [
    "FROZEN_NOW",
    "MEMBERS",
    "MESSAGES",
    "PASSPHRASE",
    "ROOMS",
    "WATER",
    "ScriptedClient",
    "ScriptedFactory",
    "build_app",
    "export_screenshots",
    "file_tree",
    "frozen_clock",
    "settle",
    "wait_for_main",
]

PASSPHRASE = "correct horse battery staple"

#: "Now" for every snapshot: Thursday 14 March 2024, 09:30 UTC.
FROZEN_NOW = 1710408600.0
_DAY = 86400.0


def _at(day: int, hour: int, minute: int) -> float:
    """A time on 13 March 2024 (``day=13``) or 14 March 2024 (``day=14``), UTC."""
    return FROZEN_NOW - (14 - day) * _DAY + (hour - 9) * 3600 + (minute - 30) * 60


def _hex(n: int) -> str:
    return f"{n:02x}" * 16


WATER, TENANTS, GARDEN = _hex(0xA1), _hex(0xA2), _hex(0xA3)
ADA, BEN, CHIDI, DANA, FARIDA = _hex(0x01), _hex(0x02), _hex(0x03), _hex(0x04), _hex(0x05)

ROOMS: list[RoomSummary] = [
    RoomSummary(WATER, "Water talks", "facilitator", 4, "manual", 0, True, 1),
    RoomSummary(TENANTS, "Tenants' union", "participant", 12, "auto", 30 * 86400, True, 0, 3),
    RoomSummary(GARDEN, "Garden committee", "observer", 6, "manual", 7 * 86400, True, 0),
]

MEMBERS: list[MemberView] = [
    MemberView(ADA, "Ada", "facilitator", False, False, True),
    MemberView(BEN, "Ben", "participant", True, False, False),
    MemberView(CHIDI, "Chidi", "participant", True, False, False),
    MemberView(DANA, "Dana", "participant", False, False, False),
]

SAFETY_NUMBERS: dict[str, str] = {
    BEN: "05820 97494 45923 07816 40628 62089 98628 03482 53421 17067 98214 80865",
    CHIDI: "13282 30664 70938 44609 55058 22317 25359 40812 84811 17450 28410 27019",
    DANA: "38521 10555 96446 22948 95493 03819 64428 81097 56659 33446 12847 56482",
    FARIDA: "31415 92653 58979 32384 62643 38327 95028 84197 16939 93751 05820 97494",
}

REQUESTS: list[RequestView] = [
    RequestView(_hex(0xB1), WATER, "Farida", SAFETY_NUMBERS[FARIDA], _at(14, 8, 55)),
]

#: The invite link the scripted client hands out (not a real one: it only has to look real).
INVITE_LINK = "backchannel://join#" + "bcinv1" + "Qx7ZkLm2" * 16


def _message(n: int, sender: str, name: str, when: float, text: str, **kw: Any) -> MessageView:
    return MessageView(
        id=_hex(0xC0 + n), room=WATER, sender=sender, sender_name=name, text=text, time=when, **kw
    )


MESSAGES: list[MessageView] = [
    _message(
        1,
        BEN,
        "Ben",
        _at(13, 18, 2),
        "Evening all. The council replied about the well on Mill Lane: they want a "
        "petition with at least 200 names before they test the water again.",
    ),
    _message(
        2, CHIDI, "Chidi", _at(13, 18, 5), "200 is doable. The school gate on Friday is busiest."
    ),
    _message(
        3,
        ADA,
        "Ada",
        _at(13, 18, 7),
        "I can print the sheets tomorrow. Who can stand at the gate with me?",
        edited=True,
        outgoing=True,
    ),
    _message(
        4,
        DANA,
        "Dana",
        _at(14, 8, 41),
        "Me! I'll bring a table and the clipboard.",
        reply_to=_hex(0xC3),
        reactions=(ReactionCount("👍", 2, True),),
    ),
    _message(
        5,
        BEN,
        "Ben",
        _at(14, 8, 44),
        "",
        kind="file",
        file=FileInfo("petition-sheet.pdf", 184_320, True),
    ),
    _message(
        6,
        CHIDI,
        "Chidi",
        _at(14, 8, 46),
        "Thanks Ben. Printing 20 copies at the library now.",
        reactions=(ReactionCount("🎉", 1, False),),
    ),
    _message(7, ADA, "Ada", _at(14, 9, 2), "Great, see you at 8:15 by the gate.", outgoing=True),
]


class ScriptedClient:
    """The client façade's read side over fixed data; writes change only that data.

    Args:
        name: the profile's display name.
    """

    def __init__(self, name: str = "Ada") -> None:
        self.name = name
        self.rooms_data = {r.id: r for r in ROOMS}
        self.messages: dict[str, list[MessageView]] = {WATER: list(MESSAGES)}
        self.requests_data: dict[str, list[RequestView]] = {WATER: list(REQUESTS)}
        self._closed = asyncio.Event()
        self._sent = 0

    # -- life cycle -------------------------------------------------------------------------

    def info(self) -> ProfileInfo:
        return ProfileInfo(self.name, _hex(0xEE), "ws://127.0.0.1:1/v1/ws", False, 1)

    async def load(self, *, proxy: str | None = None) -> None:
        return None

    async def connect(self) -> None:
        return None

    async def events(self) -> AsyncIterator[ClientEvent]:
        yield ConnectionChanged("connected")
        await self._closed.wait()

    async def close(self) -> None:
        self._closed.set()

    async def check_passphrase(self, passphrase: str) -> bool:
        return passphrase == PASSPHRASE

    # -- rooms and messages -----------------------------------------------------------------

    async def rooms(self) -> list[RoomSummary]:
        return list(self.rooms_data.values())

    async def room(self, room: str) -> RoomSummary:
        summary = self.rooms_data[room]
        return replace(summary, pending_requests=len(self.requests_data.get(room, [])))

    async def mark_read(self, room: str) -> None:
        self.rooms_data[room] = replace(self.rooms_data[room], unread=0)

    async def history(
        self, room: str, *, limit: int = 50, before: str | None = None
    ) -> list[MessageView]:
        page = self.messages.get(room, [])
        if before is not None:
            ids = [m.id for m in page]
            page = page[: ids.index(before)] if before in ids else []
        return page[-limit:]

    async def search(self, room: str, query: str, *, limit: int = 50) -> list[MessageView]:
        words = query.lower().split()
        found = [m for m in self.messages.get(room, []) if all(w in m.text.lower() for w in words)]
        return list(reversed(found))[:limit]

    async def members(self, room: str) -> list[MemberView]:
        return list(MEMBERS) if room == WATER else [MEMBERS[0]]

    async def safety_number(self, room: str, member: str) -> tuple[MemberView, str]:
        found = next(m for m in MEMBERS if m.id == member)
        return found, SAFETY_NUMBERS.get(member, "")

    async def requests(self, room: str) -> list[RequestView]:
        return list(self.requests_data.get(room, []))

    async def invite(self, room: str, *, uses: int = 1, expires_in: int = 7 * 86400) -> str:
        return INVITE_LINK

    async def send(self, room: str, text: str, *, reply_to: str | None = None) -> MessageView:
        self._sent += 1
        message = MessageView(
            _hex(0xD0 + self._sent), room, ADA, self.name, text, time.time(), reply_to=reply_to
        )
        self.messages.setdefault(room, []).append(replace(message, outgoing=True))
        return self.messages[room][-1]


class ScriptedFactory:
    """A :class:`~backchannel.tui.app.ClientFactory` that opens :class:`ScriptedClient`."""

    def __init__(self) -> None:
        #: The clients handed out, newest last.
        self.clients: list[ScriptedClient] = []

    async def open(self, home: Path, passphrase: str) -> ScriptedClient:
        client = ScriptedClient()
        self.clients.append(client)
        return client

    async def create(
        self, home: Path, *, name: str, passphrase: str, relay_url: str | None = None
    ) -> ScriptedClient:
        (home / "store.db").touch()
        client = ScriptedClient(name)
        self.clients.append(client)
        return client


def build_app(home: Path, *, profile: bool = True, unlock: bool = True) -> BackchannelApp:
    """The app as the CLI builds it, on scripted data.

    Args:
        home: a directory for the profile (its path never shows on screen).
        profile: whether the profile exists (False shows the first-run screen).
        unlock: whether to start with the passphrase (False stays on the unlock screen).
    """
    home.mkdir(parents=True, exist_ok=True)
    if profile:
        (home / "store.db").touch()
    return make_app(
        home,
        passphrase=PASSPHRASE if unlock else None,
        client_factory=ScriptedFactory(),  # type: ignore[arg-type]
        idle_lock_seconds=0,
    )


def file_tree(root: Path) -> None:
    """Fixed files for the send/save dialogs' trees under ``root/outbox`` and ``root/inbox``."""
    outbox = root / "outbox"
    (outbox / "photos").mkdir(parents=True, exist_ok=True)
    (outbox / "minutes-13-march.txt").write_text("Minutes of the meeting\n")
    (outbox / "petition-sheet.pdf").write_bytes(b"%PDF-1.4\n")
    (outbox / "well-test-2023.csv").write_text("date,nitrate\n")
    for name in ("Documents", "Downloads", "Petitions"):
        (root / "inbox" / name).mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def frozen_clock() -> Iterator[None]:
    """UTC and a clock stopped at :data:`FROZEN_NOW` (for the exporter; tests monkeypatch)."""
    old_tz = os.environ.get("TZ")
    old_time = time.time
    os.environ["TZ"] = "UTC"
    time.tzset()
    time.time = lambda: FROZEN_NOW
    try:
        yield
    finally:
        time.time = old_time
        if old_tz is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old_tz
        time.tzset()


# -- driving the app to a still frame -----------------------------------------------------------


async def _until(pilot: Pilot[Any], check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the app did not settle in {timeout} s")
        await pilot.pause(0.02)


async def settle(pilot: Pilot[Any]) -> None:
    """Wait until every worker but the long-lived ones has finished, and trees are loaded."""

    def quiet() -> bool:
        for worker in pilot.app.workers:
            if worker.group in {"client-events", "_loader"}:
                continue  # these run for the app's (or the tree's) whole life
            if not worker.is_finished:
                return False
        trees = pilot.app.screen.query(DirectoryTree)
        return all(tree.root.children or not tree.root.allow_expand for tree in trees)

    await pilot.pause()
    await _until(pilot, quiet)
    await pilot.pause()


async def wait_for_main(pilot: Pilot[Any]) -> MainScreen:
    """Wait until the main screen shows Water talks, connected, with nothing left to load."""

    def ready() -> bool:
        main = pilot.app.main_screen  # type: ignore[attr-defined]
        return (
            main is not None
            and main.room_id == WATER
            and pilot.app.connection_state == "connected"  # type: ignore[attr-defined]
            and main.conversation.total_lines > 0
        )

    await _until(pilot, ready)
    await settle(pilot)
    main = pilot.app.main_screen  # type: ignore[attr-defined]
    assert isinstance(main, MainScreen)
    return main


async def select_message(pilot: Pilot[Any], index: int) -> MainScreen:
    """Put the conversation's cursor on ``MESSAGES[index]``."""
    main = await wait_for_main(pilot)
    main.conversation.focus()
    main.conversation.select(MESSAGES[index].id)
    await settle(pilot)
    return main


async def open_requests(pilot: Pilot[Any]) -> None:
    """The main screen, then the join-requests dialog with Farida waiting."""
    main = await wait_for_main(pilot)
    main.action_requests()
    await settle(pilot)


async def type_into(pilot: Pilot[Any], selector: str, text: str) -> None:
    """Set a field's text as if typed (without key-repeat timing)."""
    widget = pilot.app.screen.query_one(selector)
    if isinstance(widget, Input):
        widget.value = text
        widget.cursor_position = len(text)
    elif isinstance(widget, TextArea):
        widget.text = text
    await settle(pilot)


# -- README screenshots ---------------------------------------------------------------------------


async def _show_main(pilot: Pilot[Any]) -> None:
    await wait_for_main(pilot)


async def _screenshot(
    app: BackchannelApp, size: tuple[int, int], drive: Callable[[Pilot[Any]], Awaitable[None]]
) -> str:
    async with app.run_test(size=size) as pilot:
        await drive(pilot)
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
        svg = app.export_screenshot(title="Backchannel", simplify=True)
    # Rich puts a random id into every export; a fixed one keeps the files stable in git.
    return re.sub(r"\bterminal-\d+-", "terminal-backchannel-", svg)


def export_screenshots(directory: Path | str) -> list[Path]:
    """Write ``main-screen.svg`` and ``join-requests.svg`` into ``directory``.

    Returns:
        The files written.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    # A blinking cursor differs between frames (conftest.no_cursor_blink does this for tests).
    with pytest.MonkeyPatch.context() as patch, frozen_clock():
        patch.setattr(Input, "cursor_blink", False)
        patch.setattr(TextArea, "cursor_blink", False)
        with tempfile.TemporaryDirectory() as tmp:
            shots: list[tuple[str, Callable[[Pilot[Any]], Awaitable[None]]]] = [
                ("main-screen.svg", _show_main),
                ("join-requests.svg", open_requests),
            ]
            for name, drive in shots:
                app = build_app(Path(tmp) / name)
                svg = asyncio.run(_screenshot(app, (120, 36), drive))
                path = out / name
                path.write_text(svg, encoding="utf-8")
                written.append(path)
    return written


if __name__ == "__main__":
    for written_path in export_screenshots(
        sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"
    ):
        print(written_path)
