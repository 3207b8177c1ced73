"""BackchannelApp: wires the screens together, pumps client events, locks when idle.

The app owns the :class:`~backchannel.client.Client` once a profile is created or
unlocked. One worker turns ``client.events()`` into :mod:`.messages` for the main
screen; network and store calls run in async workers, and every failure ends in
:meth:`BackchannelApp.show_error` (a notification with a sentence, never a traceback).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Protocol

from textual import events, work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.worker import Worker, WorkerState

from ..client import Client
from ..errors import BackchannelError
from ..views import (
    Alert,
    ClientEvent,
    ConnectionChanged,
    JoinAnswered,
    JoinRequested,
    MembersChanged,
    MessageChanged,
    NewMessage,
    RemovedFromRoom,
    RoomChanged,
    VerificationChanged,
)
from . import lazy_strips
from . import messages as msg
from .commands import BackchannelCommands
from .heap import HeapKeeper

__all__ = ["BackchannelApp", "ClientFactory", "make_app", "to_message"]

#: Seconds after the main screen appears (its first page shown by then) to settle the heap.
SETTLE_HEAP_AFTER = 1.0


class ClientFactory(Protocol):
    """How the app makes a :class:`Client` (the class itself, or a stand-in in tests)."""

    async def create(
        self, home: Path, *, name: str, passphrase: str, relay_url: str | None = None
    ) -> Client: ...

    async def open(self, home: Path, passphrase: str) -> Client: ...


def to_message(event: ClientEvent) -> Message | None:
    """The Textual message for one client event (None for events the UI ignores)."""
    if isinstance(event, ConnectionChanged):
        return msg.ConnectionStateChanged(event.state, event.detail)
    if isinstance(event, NewMessage):
        return msg.MessageArrived(event.message)
    if isinstance(event, MessageChanged):
        return msg.MessageUpdated(event.room, event.message_id)
    if isinstance(event, MembersChanged | VerificationChanged):
        return msg.MembersUpdated(event.room)
    if isinstance(event, RoomChanged):
        return msg.RoomUpdated(event.room)
    if isinstance(event, JoinRequested):
        return msg.JoinRequestArrived(event.request)
    if isinstance(event, JoinAnswered):
        return msg.JoinAnswerArrived(event.request_id, event.approved, event.room)
    if isinstance(event, RemovedFromRoom):
        return msg.RemovedFromRoomNotice(event.room)
    if isinstance(event, Alert):
        return msg.AlertRaised(event.room, event.text)
    return None


class BackchannelApp(App[None]):
    """The terminal app. Build it with :func:`make_app`."""

    CSS_PATH = "app.tcss"
    TITLE = "Backchannel"
    COMMANDS = App.COMMANDS | {BackchannelCommands}
    BINDINGS = [
        Binding(
            "ctrl+l",
            "lock",
            "Lock",
            tooltip="Hide everything behind the passphrase now",
            id="app.lock",
            priority=True,
        ),
        Binding("f1", "help", "Keys", tooltip="Show every key and what it does", id="app.help"),
        Binding(
            "ctrl+q",
            "quit",
            "Quit",
            tooltip="Close Backchannel (the profile is locked on disk)",
            id="app.quit",
            priority=True,
        ),
    ]

    def __init__(
        self,
        home: Path,
        *,
        proxy: str | None = None,
        client_factory: ClientFactory = Client,
        passphrase: str | None = None,
        idle_lock_seconds: float = 600.0,
        tune_gc: bool = False,
    ) -> None:
        super().__init__()
        lazy_strips.install()  # fewer objects per drawn line (see lazy_strips.py)
        self.heap = HeapKeeper() if tune_gc else None
        """Garbage collection kept for idle moments (``tune_gc``), or None."""
        self.home = home
        """The profile directory."""
        self.proxy = proxy
        """SOCKS5 proxy URL for the relay connection, or None."""
        self.client_factory = client_factory
        self.client: Client | None = None
        """The open profile, once created or unlocked."""
        self.idle_lock_seconds = idle_lock_seconds
        """Lock after this many seconds without a key or mouse press (0 never locks)."""
        self.locked = False
        """Whether the lock screen hides everything."""
        self.connection_state = "reconnecting"
        """The newest relay connection state."""
        self._initial_passphrase = passphrase
        #: Warnings raised before the main screen exists, shown once it does.
        self._early: list[Message] = []
        self._last_activity = time.monotonic()

    # -- start-up ---------------------------------------------------------------------------------

    @property
    def has_profile(self) -> bool:
        """Whether ``home`` holds a profile already."""
        return Client.exists(self.home)

    def on_mount(self) -> None:
        from .screens.first_run import FirstRunScreen
        from .screens.unlock import UnlockScreen

        if not self.has_profile:
            self.push_screen(FirstRunScreen())
        else:
            self.push_screen(UnlockScreen())
            if self._initial_passphrase:
                self.unlock(self._initial_passphrase)
        self.set_interval(1.0, self._check_idle, name="idle lock")

    @work(exclusive=True, group="profile", exit_on_error=False, name="Unlocking the profile")
    async def unlock(self, passphrase: str) -> None:
        """Open the profile with ``passphrase`` and show the rooms (errors stay on screen)."""
        from .screens.unlock import UnlockScreen

        try:
            client = await self.client_factory.open(self.home, passphrase)
        except BackchannelError as exc:
            if not isinstance(self.screen, UnlockScreen):
                raise  # shown as a notification
            # Said on the unlock screen, beside the field; not also as a notification,
            # which would still be showing after the right passphrase opened the rooms.
            self.screen.show_error(str(exc))
            return
        await self._start(client)

    @work(exclusive=True, group="profile", exit_on_error=False, name="Creating the profile")
    async def create_profile(
        self, name: str, passphrase: str, relay_url: str | None, link: str | None
    ) -> None:
        """Create the profile, connect, and (with ``link``) ask to join that room."""
        client = await self.client_factory.create(
            self.home, name=name, passphrase=passphrase, relay_url=relay_url
        )
        await self._start(client)
        if link:
            await client.join(link)
            self.notify(
                "Asked to join the room; a facilitator will answer.", title="Join request sent"
            )

    async def _start(self, client: Client) -> None:
        """Show the profile's rooms as stored, then load them, then connect.

        Loading (the MLS state) and connecting come after the first paint: the rooms
        are readable at once; a message sent in that moment goes once they are loaded
        and waits in the outbox until connected, as it would offline.
        """
        from .screens.main import MainScreen

        self.client = client
        self._pump_events()
        try:
            main = MainScreen(client)
            await main.preload()  # from the store: the rooms load after the first paint
        except BackchannelError:
            await self._give_up(client)
            raise
        self._last_activity = time.monotonic()
        await self.switch_screen(main)
        for early in self._early:
            main.post_message(early)
        self._early.clear()
        if self.heap is not None:
            self.set_timer(SETTLE_HEAP_AFTER, self.heap.settle, name="settle heap")
        painted = asyncio.Event()
        main.call_after_refresh(painted.set)
        await painted.wait()
        try:
            await client.load(proxy=self.proxy)
            main.loaded()
            await client.connect()
        except BackchannelError as exc:
            # Nothing could ever be sent or received: back to the unlock screen, with why.
            await self._give_up(client)
            from .screens.unlock import UnlockScreen

            await self.switch_screen(UnlockScreen())
            self.show_error("Cannot connect", exc)

    async def _give_up(self, client: Client) -> None:
        await client.close()
        self.client = None

    @work(exclusive=True, group="client-events", exit_on_error=False, name="Client events")
    async def _pump_events(self) -> None:
        """The one place client events become Textual messages."""
        assert self.client is not None
        async for event in self.client.events():
            message = to_message(event)
            if message is None:
                continue
            if isinstance(message, msg.ConnectionStateChanged):
                self.connection_state = message.state
            main = self.main_screen
            if main is not None:
                for early in self._early:  # what happened while the profile was opening
                    main.post_message(early)
                self._early.clear()
                main.post_message(message)
            elif isinstance(message, msg.AlertRaised):
                # e.g. a damaged room found while starting, before the main screen exists
                self._early.append(message)

    @property
    def main_screen(self) -> Any:
        """The main screen, if the profile is open (wherever it sits in the stack)."""
        from .screens.main import MainScreen

        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                return screen
        return None

    async def on_unmount(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await client.close()

    # -- errors: the one place they become UI --------------------------------------------------

    def show_error(self, title: str, error: BaseException) -> None:
        """Tell the person what went wrong, as a sentence (never a traceback)."""
        if isinstance(error, BackchannelError):
            text = error.user_message()
        else:
            # Not one of ours: a bug. Say so plainly; details go to the Textual log only.
            self.log.error(title, repr(error))
            text = f"Something unexpected went wrong ({type(error).__name__}). Please try again."
        self.notify(text, title=title, severity="error", timeout=10, markup=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            self.show_error(event.worker.name or "Error", event.worker.error)

    # -- locking -----------------------------------------------------------------------------------

    def on_event(self, event: events.Event) -> Any:
        if isinstance(
            event, events.Key | events.MouseDown | events.MouseScrollUp | events.MouseScrollDown
        ):
            self._last_activity = time.monotonic()
        return super().on_event(event)

    def _check_idle(self) -> None:
        if self.heap is not None:
            self.heap.tick(time.monotonic() - self._last_activity)
        if self.idle_lock_seconds <= 0 or self.locked or self.client is None:
            return
        if time.monotonic() - self._last_activity >= self.idle_lock_seconds:
            self.action_lock()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "lock":
            return self.client is not None and not self.locked
        return True

    def action_lock(self) -> None:
        """Hide everything behind the lock screen at once."""
        from .screens.lock import LockScreen

        if self.client is None or self.locked:
            return
        self.locked = True
        self.clear_notifications()  # they may quote messages
        self.push_screen(LockScreen())

    def unlocked(self) -> None:
        """Called by the lock screen once the passphrase matched."""
        self.locked = False
        self._last_activity = time.monotonic()

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        if not self.locked:
            self.push_screen(HelpScreen())


def make_app(
    home: Path,
    *,
    proxy: str | None = None,
    passphrase: str | None = None,
    client_factory: ClientFactory = Client,
    idle_lock_seconds: float = 600.0,
    tune_gc: bool = False,
) -> BackchannelApp:
    """Build the app as the CLI and the tests both do.

    Args:
        home: the profile directory (a first-run screen creates a profile there if none).
        proxy: SOCKS5 proxy URL for the relay connection (e.g. Tor), or None.
        passphrase: try this passphrase at start (from --passphrase-file or the
            environment); the unlock screen shows if it is missing or wrong.
        client_factory: makes the client (``Client`` itself outside tests).
        idle_lock_seconds: lock after this long without input (0: never).
        tune_gc: keep full garbage collections for idle moments (see ``heap.py``);
            the real app sets it, tests leave it off (it is process-wide).
    """
    return BackchannelApp(
        home,
        proxy=proxy,
        client_factory=client_factory,
        passphrase=passphrase,
        idle_lock_seconds=idle_lock_seconds,
        tune_gc=tune_gc,
    )
