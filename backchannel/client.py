"""The client façade: one async object a UI talks to (profiles, relay connection, events).

This first part opens and creates profiles (the encrypted store and the device
identity), runs the embedded relay when the profile has none, and keeps the relay
connection. Rooms arrive on top of it with the MLS group layer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from .embedded import EmbeddedRelay, free_port
from .errors import BackchannelError, ProfileError
from .identity import DeviceIdentity
from .locations import embedded_relay_dir
from .store import NoProfile, ProfileExists, ProfileLocked, Store, StoreError, WrongPassphrase
from .transport.connection import ConnectionState, LinkState, RelayConnection

__all__ = ["Client", "ClientEvent", "ConnectionChanged", "ProfileInfo"]

_IDENTITY = "identity"
_RELAY_URL = "relay.url"
_LISTEN = "relay.listen"


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """What ``status`` shows about a profile."""

    name: str
    identity: str
    relay: str
    embedded_relay: bool
    cipher_suite: int


class ClientEvent:
    """Base of everything :meth:`Client.events` yields."""


@dataclass(frozen=True, slots=True)
class ConnectionChanged(ClientEvent):
    """The relay connection went up, down, or is retrying."""

    state: str
    detail: str = ""


def _profile_error(exc: StoreError, home: Path) -> ProfileError:
    if isinstance(exc, WrongPassphrase):
        return ProfileError("Wrong passphrase for this profile. Try again.")
    if isinstance(exc, ProfileLocked):
        return ProfileError(
            f"The profile at {home} is open in another Backchannel; close that one first."
        )
    if isinstance(exc, NoProfile):
        return ProfileError(f"There is no profile at {home}; create one with `backchannel init`.")
    if isinstance(exc, ProfileExists):
        return ProfileError(
            f"A profile already exists at {home}; open it, or choose another --home."
        )
    return ProfileError(f"The profile at {home} cannot be opened: {exc}")


def _parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BackchannelError(f"--listen takes HOST:PORT, e.g. 0.0.0.0:8765, not {listen!r}.")
    return host, int(port)


class Client:
    """An open profile. Create with :meth:`create` or :meth:`open`; finish with :meth:`close`."""

    def __init__(
        self,
        home: Path,
        store: Store,
        identity: DeviceIdentity,
        relay_url: str | None,
        listen: str | None,
    ) -> None:
        self.home = home
        self.store = store
        self.identity = identity
        self._relay_url = relay_url
        self._listen = listen
        self._embedded: EmbeddedRelay | None = None
        self.connection: RelayConnection | None = None
        self._events: asyncio.Queue[ClientEvent] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    @classmethod
    async def create(
        cls,
        home: Path,
        *,
        name: str,
        passphrase: str,
        relay_url: str | None = None,
        listen: str | None = None,
    ) -> Client:
        """Create a profile in ``home`` with a new identity.

        Args:
            name: the display name others see.
            relay_url: ``ws://`` or ``wss://`` URL of a relay; None for the embedded one.
            listen: ``HOST:PORT`` for the embedded relay (default 127.0.0.1 and a free port).

        Raises:
            ProfileError: a profile exists there, or the arguments are unusable.
        """
        name = name.strip()
        if not name or len(name) > 64:
            raise ProfileError("A display name needs 1 to 64 characters.")
        if relay_url is not None and not relay_url.startswith(("ws://", "wss://")):
            raise ProfileError("The relay URL must start with ws:// or wss://.")
        if listen is None and relay_url is None:
            listen = f"127.0.0.1:{free_port()}"  # fixed from now on: invites carry the address
        if listen is not None:
            _parse_listen(listen)
        await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True, mode=0o700)
        try:
            store = await Store.create(home, passphrase)
        except StoreError as exc:
            raise _profile_error(exc, home) from None
        identity = DeviceIdentity.generate(name)
        async with store.transaction() as tx:
            await tx.set_setting(_IDENTITY, identity.to_bytes())
            if relay_url is not None:
                await tx.set_setting(_RELAY_URL, relay_url.encode())
            if listen is not None:
                await tx.set_setting(_LISTEN, listen.encode())
        return cls(home, store, identity, relay_url, listen)

    @classmethod
    async def open(cls, home: Path, passphrase: str) -> Client:
        """Unlock the profile in ``home``.

        Raises:
            ProfileError: no profile, wrong passphrase, or open elsewhere.
        """
        try:
            store = await Store.open(home, passphrase)
        except StoreError as exc:
            raise _profile_error(exc, home) from None
        try:
            raw = await store.get_setting(_IDENTITY)
            if raw is None:
                raise ProfileError(
                    f"The profile at {home} has no identity; it was not created completely."
                )
            identity = DeviceIdentity.from_bytes(raw)
            relay = await store.get_setting(_RELAY_URL)
            listen = await store.get_setting(_LISTEN)
        except BaseException:
            await store.close()
            raise
        return cls(
            home,
            store,
            identity,
            relay.decode() if relay else None,
            listen.decode() if listen else None,
        )

    def info(self) -> ProfileInfo:
        return ProfileInfo(
            name=self.identity.display_name,
            identity=self.identity.identity_id.hex(),
            relay=self.relay_url,
            embedded_relay=self._relay_url is None,
            cipher_suite=self.identity.cipher_suite,
        )

    @property
    def relay_url(self) -> str:
        if self._relay_url is not None:
            return self._relay_url
        host, port = _parse_listen(self._listen or "127.0.0.1:8765")
        shown = "127.0.0.1" if host in {"0.0.0.0", "::"} else host  # noqa: S104
        return f"ws://{shown}:{port}/v1/ws"

    async def start(self, *, proxy: str | None = None) -> None:
        """Start the embedded relay if the profile uses one, and connect to the relay."""
        if self._relay_url is None:
            host, port = _parse_listen(self._listen or "127.0.0.1:8765")
            self._embedded = EmbeddedRelay(embedded_relay_dir(self.home), host, port)
            try:
                await self._embedded.start()
            except OSError as exc:
                self._embedded = None
                raise BackchannelError(
                    f"Cannot start the local relay on {host}:{port} ({exc.strerror or exc}); "
                    "another program may be using that port."
                ) from None
        self.connection = RelayConnection(self.relay_url, proxy=proxy)
        await self.connection.start()
        self._pump = asyncio.create_task(self._pump_transport(), name="client-transport-events")

    async def _pump_transport(self) -> None:
        assert self.connection is not None
        async for event in self.connection.events():
            if isinstance(event, ConnectionState):
                state = {
                    LinkState.CONNECTED: "connected",
                    LinkState.CONNECTING: "reconnecting",
                    LinkState.OFFLINE: "offline",
                    LinkState.CLOSED: "closed",
                }[event.state]
                await self._events.put(ConnectionChanged(state, event.detail or ""))

    async def events(self) -> AsyncIterator[ClientEvent]:
        """Everything that happens, for a UI to render, in order."""
        while True:
            yield await self._events.get()

    async def close(self) -> None:
        """Disconnect, stop the embedded relay and lock the profile."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.connection is not None:
            await self.connection.close()
        if self._embedded is not None:
            await self._embedded.stop()
        await self.store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
