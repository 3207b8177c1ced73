"""The client façade: one async object a UI talks to (profile, rooms, invites, events).

Theory of operation
-------------------
A :class:`Client` is one unlocked profile. Right after :meth:`Client.open` it reads
what is stored (rooms, history, members; :mod:`.stored_views`). :meth:`Client.start`
is two steps that a UI may take apart: :meth:`Client.load` loads the rooms' MLS
state (every operation works from then on, offline), and :meth:`Client.connect`
starts the embedded relay if the profile has none, connects
(:class:`~.transport.connection.RelayConnection`), follows every mailbox the profile
reads (room mailboxes, invite drops, join inboxes) from its stored cursor, and starts
the outbox sender. The terminal app paints its first screen before either. One task pumps the
connection's entries through :mod:`.engine`, which runs the room protocol
(docs/room-protocol.md) and writes every effect of one entry (room state,
messages, members, cursor) in one store transaction, so a crash never loses or
replays an entry.

Own changes are MLS commits offered to the relay with the mailbox's epoch
compare-and-set: the commit is saved (in the MLS state, as the pending commit)
before it is offered and re-offered with the same idempotency key after a crash;
a commit that loses the race is discarded, the winner is read, and the change is
tried again. Messages go through the store's outbox: saved first, then sent with
an idempotency key, so a crash neither loses nor duplicates them.

Everything that happens comes out of :meth:`Client.events` as :mod:`.views` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import stored_views
from .errors import BackchannelError, ProfileError
from .locations import embedded_relay_dir
from .store import NoProfile, ProfileExists, ProfileLocked, Store, StoreError, WrongPassphrase
from .views import (
    ClientEvent,
    ConnectionChanged,
    JoinAnswered,
    MemberView,
    MessageView,
    QueuedPost,
    RequestView,
    RoomSummary,
)

if TYPE_CHECKING:
    from .embedded import EmbeddedRelay
    from .engine import Engine
    from .identity import DeviceIdentity
    from .transport.connection import RelayConnection

# The room engine (rooms, MLS) and the network stack are imported when first needed,
# not with this module: see Client.open and Client.connect.

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


def _no_core_dumps() -> None:
    """Keys live in this process's memory: a crash must never write them to a core file."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _import_identity() -> None:
    """Import the identity's signature code (in a worker thread; see :meth:`Client.open`)."""
    from . import identity  # noqa: F401


def _import_engine() -> None:
    """Import the room engine and MLS (in a worker thread; see :meth:`Client.load`)."""
    from . import engine  # noqa: F401


def _import_network(*, embedded: bool) -> None:
    """Import what connecting needs (in a worker thread; see :meth:`Client.connect`)."""
    import aiohttp  # noqa: F401

    from .transport import session  # noqa: F401

    if embedded:
        from . import embedded as _embedded  # noqa: F401


def _parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BackchannelError(f"--listen takes HOST:PORT, e.g. 0.0.0.0:8765, not {listen!r}.")
    return host, int(port)


class Client:
    """An open profile. Create with :meth:`create` or :meth:`open`; finish with :meth:`close`.

    Example::

        client = await Client.open(home, passphrase)
        await client.start()
        room = await client.create_room("Water talks")
        link = await client.invite(room.id, uses=3)
        async for event in client.events():
            ...
    """

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
        self._loading = False
        self._connecting = False
        self._closed = False
        self.connection: RelayConnection | None = None
        self._engine: Engine | None = None
        self._events: asyncio.Queue[ClientEvent] = asyncio.Queue()

    # -- profiles ---------------------------------------------------------------------------

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
        _no_core_dumps()
        name = name.strip()
        if not name or len(name.encode()) > 64 or not name.isprintable():
            raise ProfileError("A display name needs 1 to 64 printable characters.")
        if relay_url is not None and not relay_url.startswith(("ws://", "wss://")):
            raise ProfileError("The relay URL must start with ws:// or wss://.")
        if listen is None and relay_url is None:
            from .embedded import free_port

            listen = f"127.0.0.1:{free_port()}"  # fixed from now on: invites carry the address
        if listen is not None:
            _parse_listen(listen)
        await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True, mode=0o700)
        try:
            store = await Store.create(home, passphrase)
        except StoreError as exc:
            raise _profile_error(exc, home) from None
        from .identity import DeviceIdentity

        identity = DeviceIdentity.generate(name)
        async with store.transaction() as tx:
            await tx.set_setting(_IDENTITY, identity.to_bytes())
            if relay_url is not None:
                await tx.set_setting(_RELAY_URL, relay_url.encode())
            if listen is not None:
                await tx.set_setting(_LISTEN, listen.encode())
        return cls(home, store, identity, relay_url, listen)

    @staticmethod
    def exists(home: Path) -> bool:
        """Whether ``home`` holds a profile (created, whatever its passphrase)."""
        return Store.exists(home)

    @staticmethod
    def invite_relay(link: str) -> str:
        """The relay URL an invite link names (to create a profile on it before joining).

        Raises:
            BackchannelError: not a valid, unexpired invite link (the sentence says why).
        """
        from .rooms.errors import InviteError
        from .rooms.invites import parse_invite

        try:
            return parse_invite(link, now=time.time()).relay_url
        except InviteError as exc:
            raise BackchannelError(str(exc)) from None

    @classmethod
    async def open(cls, home: Path, passphrase: str) -> Client:
        """Unlock the profile in ``home``.

        Raises:
            ProfileError: no profile, wrong passphrase, or open elsewhere.
        """
        _no_core_dumps()
        # Stretching the passphrase (Argon2id, about a tenth of a second) runs in a thread
        # that does not hold the GIL: the identity's signature code is imported meanwhile.
        imported = asyncio.ensure_future(asyncio.to_thread(_import_identity))
        try:
            store = await Store.open(home, passphrase)
        except StoreError as exc:
            raise _profile_error(exc, home) from None
        finally:
            await asyncio.wait([imported])
        imported.result()
        try:
            raw = await store.get_setting(_IDENTITY)
            if raw is None:
                raise ProfileError(
                    f"The profile at {home} has no identity; it was not created completely."
                )
            from .identity import DeviceIdentity

            identity = DeviceIdentity.from_bytes(raw)
            relay = await store.get_setting(_RELAY_URL)
            listen = await store.get_setting(_LISTEN)
        except StoreError as exc:
            with contextlib.suppress(StoreError):
                await store.close()
            raise _profile_error(exc, home) from None
        except BaseException:
            with contextlib.suppress(StoreError):
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
        """Name, identity, relay and suite of this profile."""
        return ProfileInfo(
            name=self.identity.display_name,
            identity=self.identity.identity_id.hex(),
            relay=self.relay_url,
            embedded_relay=self._relay_url is None,
            cipher_suite=self.identity.cipher_suite,
        )

    async def check_passphrase(self, passphrase: str) -> bool:
        """Whether ``passphrase`` is this profile's (to unlock a locked screen)."""
        return await self.store.check_passphrase(passphrase)

    async def change_passphrase(self, old: str, new: str) -> None:
        """Re-key the profile under ``new``.

        Raises:
            ProfileError: ``old`` is wrong (nothing changed), or the disk refused.
        """
        if not new:
            raise ProfileError("The new passphrase must not be empty.")
        try:
            await self.store.change_passphrase(old, new)
        except StoreError as exc:
            raise _profile_error(exc, self.home) from None

    @property
    def relay_url(self) -> str:
        """The WebSocket URL of the relay this profile uses, as invite links carry it.

        For the built-in relay: an address others can reach (see ``embedded.py``),
        with the token that admits the people invited.
        """
        return self._relay_urls()[0]

    def _relay_urls(self) -> tuple[str, str]:
        """(the relay's URL for others, the URL this client connects to)."""
        if self._relay_url is not None:
            return self._relay_url, self._relay_url
        from .embedded import relay_urls

        host, port = _parse_listen(self._listen or "127.0.0.1:8765")
        return relay_urls(host, port, self.identity.signature_key)

    async def use_relay(self, relay_url: str) -> None:
        """Switch a profile that has no rooms yet to ``relay_url`` (before :meth:`start`).

        Raises:
            BackchannelError: the client is started, or the profile already has rooms.
        """
        if self.connection is not None:
            raise BackchannelError("Switch relays before connecting.")
        if not relay_url.startswith(("ws://", "wss://")):
            raise BackchannelError("The relay URL must start with ws:// or wss://.")
        if await self.store.rooms(include_left=True):
            raise BackchannelError(
                "This profile already has rooms on its relay; use another profile (--home) "
                "for rooms on another relay."
            )
        await self.store.set_setting(_RELAY_URL, relay_url.encode())
        self._relay_url = relay_url

    # -- life cycle --------------------------------------------------------------------------

    async def start(self, *, proxy: str | None = None) -> None:
        """:meth:`load`, then :meth:`connect`: everything a started client does.

        Raises:
            BackchannelError: the embedded relay cannot listen, or the proxy URL is bad.
        """
        await self.load(proxy=proxy)
        await self.connect()

    async def load(self, *, proxy: str | None = None) -> None:
        """Load the rooms (their MLS state) from the store, touching no network.

        After this every operation works; what is sent waits in the outbox until
        :meth:`connect`. Before it, reading works from what is stored (see
        :mod:`.stored_views`): the app paints its first screen from that, then loads.

        Raises:
            BackchannelError: already loaded, or the proxy URL is bad.
        """
        if self._engine is not None or self._loading:
            raise BackchannelError("The client is started already.")
        self._loading = True
        # The engine and MLS are a quarter of a second of imports: in a thread, the
        # caller's event loop (the app, just painted) keeps answering keys.
        await asyncio.to_thread(_import_engine)
        from .engine import Engine
        from .transport.connection import RelayConnection

        relay_url, own_url = self._relay_urls()
        try:
            self.connection = RelayConnection(own_url, proxy=proxy)
        except ValueError as exc:
            raise BackchannelError(f"Cannot use that proxy: {exc}") from None
        self._engine = Engine(
            self.store,
            self.identity,
            self.connection,
            self._events,
            relay_url=relay_url,
            clock=time.time,
        )
        await self._engine.load()

    async def connect(self) -> None:
        """Start the embedded relay if the profile uses one, connect, and follow every mailbox.

        Raises:
            BackchannelError: not loaded, connected already, or the embedded relay
                cannot listen.
        """
        if self._engine is None or self.connection is None:
            raise BackchannelError("Load the client before connecting it.")
        if self._connecting:
            raise BackchannelError("The client is connected already.")
        self._connecting = True
        # The network stack (aiohttp, the embedded relay) is a fifth of a second of
        # imports: loaded in a thread, the caller's event loop (the app) keeps running.
        await asyncio.to_thread(_import_network, embedded=self._relay_url is None)
        if self._closed:  # closed while the imports ran (the app quit as it opened)
            raise BackchannelError("The client is closed.")
        if self._relay_url is None:
            from .embedded import EmbeddedRelay

            host, port = _parse_listen(self._listen or "127.0.0.1:8765")
            self._embedded = EmbeddedRelay(
                embedded_relay_dir(self.home), host, port, secret=self.identity.signature_key
            )
            try:
                await self._embedded.start()
            except OSError as exc:
                self._embedded = None
                raise BackchannelError(
                    f"Cannot start the local relay on {host}:{port} ({exc.strerror or exc}); "
                    "another program may be using that port."
                ) from None
        await self.connection.start()
        await self._engine.start()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise BackchannelError("The client is not started; call start() first.")
        return self._engine

    async def events(self) -> AsyncIterator[ClientEvent]:
        """Everything that happens, for a UI to render, in order."""
        while True:
            yield await self._events.get()

    async def close(self) -> None:
        """Stop background work, disconnect, stop the embedded relay and lock the profile."""
        self._closed = True
        if self._engine is not None:
            await self._engine.close()
        if self.connection is not None:
            await self.connection.close()
        if self._embedded is not None:
            await self._embedded.stop()
        await self.store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- rooms --------------------------------------------------------------------------------

    async def rooms(self) -> list[RoomSummary]:
        """The rooms this profile is in, oldest first.

        Before :meth:`load`, as last stored: without the join approval and the count of
        pending requests, which only the loaded rooms know (see :mod:`.stored_views`).
        """
        if self._engine is None:
            return await stored_views.stored_summaries(self.store, self.identity.identity_id)
        return await self.engine.summaries()

    async def room(self, room: str) -> RoomSummary:
        """One room, by id (or an unambiguous title); before :meth:`load`, as stored.

        Raises:
            BackchannelError: no such room.
        """
        if self._engine is None:
            return await self._stored_room(room)
        return await self.engine.summary(self.engine.resolve_room(room))

    async def _stored_room(self, room: str) -> RoomSummary:
        rooms = await self.rooms()
        text = room.strip()
        found = [r for r in rooms if r.id == text.lower()] or [r for r in rooms if r.title == text]
        if len(found) > 1:
            raise BackchannelError(f"Several rooms are called {text!r}; use the room id.")
        if not found:
            raise BackchannelError(
                f"You are not in a room {text!r}; `backchannel rooms` lists yours."
            )
        return found[0]

    async def mark_read(self, room: str) -> None:
        """Everything in ``room`` up to now counts as read (its unread count drops to 0)."""
        await self.engine.complete(self.engine.mark_read(self.engine.resolve_room(room)))

    async def create_room(
        self, title: str, *, approval: str = "manual", retention_seconds: int = 0
    ) -> RoomSummary:
        """Open a new room with this member as its facilitator.

        Args:
            title: shown to members (never to the relay).
            approval: ``manual`` (a facilitator decides each request) or ``auto``.
            retention_seconds: erase messages this old everywhere (0 keeps them).
        """
        return await self.engine.complete(
            self.engine.create_room(title, approval, retention_seconds)
        )

    async def invite(self, room: str, *, uses: int = 1, expires_in: int = 7 * 86400) -> str:
        """A new invite link for ``room`` (facilitators only)."""
        return await self.engine.complete(
            self.engine.invite(self.engine.resolve_room(room), uses, expires_in)
        )

    async def join(self, link: str) -> str:
        """Ask to join the room of an invite link; returns the request id.

        The answer arrives as a :class:`~.views.JoinAnswered` event (see :meth:`wait_join`).
        """
        return await self.engine.complete(self.engine.join(link))

    async def wait_join(self, request_id: str, timeout: float) -> JoinAnswered | None:
        """Wait up to ``timeout`` seconds for the answer to a join request (None: no answer yet)."""
        return await self.engine.wait_join(request_id, timeout)

    async def pending_joins(self) -> list[str]:
        """Ids of the join requests this device sent that have no answer yet."""
        return await self.engine.pending_joins()

    async def requests(self, room: str) -> list[RequestView]:
        """Join requests waiting for a decision in ``room``."""
        return await self.engine.requests(self.engine.resolve_room(room))

    async def approve(self, room: str, request: str) -> None:
        """Add the requester: commits the Add and sends the Welcome to their inbox."""
        await self.engine.complete(self.engine.approve(self.engine.resolve_room(room), request))

    async def deny(self, room: str, request: str) -> None:
        """Turn a join request away; the requester is told."""
        await self.engine.complete(self.engine.deny(self.engine.resolve_room(room), request))

    async def send(self, room: str, text: str, *, reply_to: str | None = None) -> MessageView:
        """Send a text (optionally a reply); it is queued while offline."""
        return await self.engine.complete(
            self.engine.send_text(self.engine.resolve_room(room), text, reply_to)
        )

    async def edit(self, room: str, message: str, text: str) -> QueuedPost:
        """Replace the text of one of this member's messages; returns what was queued."""
        return await self.engine.complete(
            self.engine.edit(self.engine.resolve_room(room), message, text)
        )

    async def delete(self, room: str, message: str) -> QueuedPost:
        """Delete one of this member's messages for everyone; returns what was queued."""
        return await self.engine.complete(
            self.engine.delete(self.engine.resolve_room(room), message)
        )

    async def react(
        self, room: str, message: str, emoji: str, *, remove: bool = False
    ) -> QueuedPost:
        """React to a message with an emoji (or take the reaction back with ``remove``)."""
        return await self.engine.complete(
            self.engine.react(self.engine.resolve_room(room), message, emoji, remove)
        )

    async def post_delivered(self, post: QueuedPost) -> bool:
        """Whether the relay acknowledged ``post`` (an edit, deletion, reaction or leave).

        False while it is queued, and once the relay refused it (a
        :class:`~.views.PostRefused` event says so). A message's own ``delivered``
        says the same for a message.
        """
        return await self.store.acknowledged_seq(bytes.fromhex(post.post)) is not None

    async def post_queued(self, post: str) -> bool:
        """Whether the post ``post`` (a :attr:`QueuedPost.post`, a :class:`~.views.PostRefused`'s
        ``post``) is still in this device's outbox, to be offered to the relay again."""
        key = bytes.fromhex(post)
        return any(e.idempotency_key == key for e in await self.store.pending(limit=100_000))

    async def send_file(self, room: str, path: Path) -> MessageView:
        """Send a file (chunked, integrity-checked, up to the configured size)."""
        return await self.engine.complete(
            self.engine.send_file(self.engine.resolve_room(room), path)
        )

    async def save_file(
        self, room: str, message: str, destination: Path, *, overwrite: bool = False
    ) -> Path:
        """Write a received file to ``destination`` (a directory or a file path).

        In a directory, the file takes the sender's name, its last part only, with a
        ``_`` before a name that starts with a dot (``_.bashrc``).

        Raises:
            BackchannelError: the file has not fully arrived, or the target exists and
                not ``overwrite``, or it cannot be written.
        """
        return await self.engine.save_file(
            self.engine.resolve_room(room), message, destination, overwrite
        )

    def save_target(self, message: MessageView, destination: Path) -> Path:
        """Where :meth:`save_file` would write ``message``'s file for ``destination``.

        For a UI that asks before replacing a file; checks nothing on disk but whether
        ``destination`` is a directory.
        """
        from .engine.actions import saved_name

        name = message.file.name if message.file is not None else ""
        return destination / saved_name(name) if destination.is_dir() else destination

    async def message(self, room: str, message: str) -> MessageView | None:
        """One message of a room by id (None if this device does not have it)."""
        return await self.engine.message(self.engine.resolve_room(room), message)

    async def history(
        self, room: str, *, limit: int = 50, before: str | None = None
    ) -> list[MessageView]:
        """A page of a room's messages, oldest first (the newest page unless ``before``)."""
        if self._engine is None:  # before load(): the same, from the store alone
            room_id = bytes.fromhex((await self._stored_room(room)).id)
            anchor = None
            if before is not None:
                try:
                    anchor = await self.store.message(room_id, bytes.fromhex(before))
                except ValueError:
                    raise BackchannelError(f"{before!r} is not a valid message id.") from None
            page = await self.store.history(room_id, limit=limit, before=anchor)
            return await stored_views.message_views(self.store, self.identity.identity_id, page)
        return await self.engine.history(self.engine.resolve_room(room), limit, before)

    def dropped_content(self, room: str) -> dict[str, int]:
        """What this device refused of a room's content since it loaded, by reason.

        Members' messages that broke the room's rules: an edit, delete or file chunk
        aimed at someone else's message, a reaction or reply naming the wrong author,
        an observer posting. Counted here, never shown as messages.
        """
        return self.engine.dropped_content(self.engine.resolve_room(room))

    async def search(self, room: str, query: str, *, limit: int = 50) -> list[MessageView]:
        """Messages of a room containing every word of ``query``, newest first."""
        return await self.engine.search(self.engine.resolve_room(room), query, limit)

    async def members(self, room: str) -> list[MemberView]:
        """Members with their roles and verification state (before :meth:`load`, as stored)."""
        if self._engine is None:
            room_id = bytes.fromhex((await self._stored_room(room)).id)
            return await stored_views.member_views(self.store, self.identity.identity_id, room_id)
        return await self.engine.members(self.engine.resolve_room(room))

    async def remove(self, room: str, member: str) -> None:
        """Remove a member (facilitators only); the room moves to a mailbox they cannot reach."""
        await self.engine.complete(self.engine.remove(self.engine.resolve_room(room), member))

    async def update_room(
        self,
        room: str,
        *,
        title: str | None = None,
        approval: str | None = None,
        retention_seconds: int | None = None,
    ) -> None:
        """Change a room's title, join approval (``manual``/``auto``) or retention.

        Facilitators only; every member's client checks the change against the rules.
        """
        await self.engine.complete(
            self.engine.update_room(
                self.engine.resolve_room(room), title, approval, retention_seconds
            )
        )

    async def set_role(self, room: str, member: str, role: str) -> None:
        """Make a member a ``facilitator``, ``participant`` or ``observer`` (facilitators only)."""
        await self.engine.complete(
            self.engine.set_role(self.engine.resolve_room(room), member, role)
        )

    async def leave(self, room: str) -> QueuedPost:
        """Leave a room: a facilitator's client commits the departure; returns what was queued."""
        return await self.engine.complete(self.engine.leave(self.engine.resolve_room(room)))

    async def wait_left(self, room_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for this member's leave of a room to complete.

        ``room_id`` is the room's id (once left, a title no longer names it). True once
        a commit removed this member; False while the leave waits for a facilitator's
        client to commit it. Until then the leave is asked for again after every change
        to the room, whenever this profile runs (a proposal lasts one epoch).
        """
        try:
            room = bytes.fromhex(room_id.strip())
        except ValueError:
            raise BackchannelError(f"{room_id!r} is not a valid room id.") from None
        return await self.engine.wait_left(room, timeout)

    def room_code(self, room: str) -> str:
        """The room's check code for this epoch (5 groups of 5 digits).

        Members who compare it out of band and find it equal see the same room; a
        relay that partitions them cannot make it match (docs/room-protocol.md §13).
        """
        return self.engine.room_code(self.engine.resolve_room(room))

    async def safety_number(self, room: str, member: str) -> tuple[MemberView, str]:
        """The member and the safety number to compare with them out of band."""
        return await self.engine.safety_number(self.engine.resolve_room(room), member)

    async def verify(self, room: str, member: str) -> MemberView:
        """Record that the safety number was compared and matched."""
        return await self.engine.complete(
            self.engine.verify(self.engine.resolve_room(room), member)
        )

    async def self_update(self, room: str) -> None:
        """Commit a fresh key path now (normally done on a schedule)."""
        await self.engine.complete(self.engine.self_update(self.engine.resolve_room(room)))

    async def sync(self, timeout: float = 15.0) -> None:
        """Wait until every followed mailbox is read to its head and the outbox is sent.

        Raises:
            BackchannelError: the relay could not be reached within ``timeout`` seconds.
        """
        await self.engine.sync(timeout)
