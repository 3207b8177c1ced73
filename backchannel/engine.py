"""The room engine behind :class:`~backchannel.client.Client`: rooms, invites, joins, sync.

See the client module's docstring for the flow. This module wires the sans-IO
room protocol (:mod:`.rooms`) to the encrypted store and the relay connection:

* every followed mailbox is routed to a handler (room, invite drop, join inbox);
  each entry's effects are written in one store transaction with its cursor;
* own commits are saved, offered with the mailbox's epoch compare-and-set, and
  re-offered with the same idempotency key after a crash;
* removal moves the room to a mailbox derived from the new epoch's exporter
  (docs/room-protocol.md §10), which the removed member cannot compute.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import mimetypes
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import msgpack

from .caps import access_capability, capability, new_seed
from .errors import BackchannelError
from .identity import DeviceIdentity
from .mls.key_package_ops import KeyPackageBundle
from .records import InviteEntry, JoiningEntry, RecordError, RequestEntry, RoomMeta
from .rooms import events as rev
from .rooms.access import JoinReply, RoomAccess, derive_access, open_join_reply, seal_join_reply
from .rooms.content import (
    DEFAULT_MAX_FILE_BYTES,
    Content,
    Delete,
    Edit,
    FileChunk,
    FileManifest,
    Profile,
    Text,
    new_message_id,
    split_file,
)
from .rooms.errors import InviteError, JoinRequestReplayed, RoomError
from .rooms.invites import (
    Invite,
    InviteRecord,
    JoinRequest,
    create_invite,
    join_request_invite_id,
    open_join_request,
    parse_invite,
    seal_join_request,
)
from .rooms.policy import JoinApproval, RemoveMember, Role
from .rooms.room import Room
from .rooms.safety import safety_number
from .store import Store
from .store.records import Message, OutboxEntry
from .store.records import Room as RoomRecord
from .transport.connection import RelayConnection
from .transport.errors import Denied, MailboxExists, Rejected, StaleEpoch, TransportError
from .transport.events import ConnectionState, Entry, LinkState, Reset, Revoked
from .transport.outbox import OutboxItem, OutboxSender
from .views import (
    Alert,
    ClientEvent,
    ConnectionChanged,
    FileInfo,
    JoinAnswered,
    JoinRequested,
    MembersChanged,
    MemberView,
    MessageChanged,
    MessageView,
    NewMessage,
    RemovedFromRoom,
    RequestView,
    RoomChanged,
    RoomSummary,
    VerificationChanged,
)

__all__ = ["DEFAULT_SELF_UPDATE_SECONDS", "Engine"]

_log = logging.getLogger(__name__)

#: Members commit a fresh path this often (post-compromise security).
DEFAULT_SELF_UPDATE_SECONDS: Final = 7 * 86400
#: How often the housekeeping task runs (retention, scheduled updates).
HOUSEKEEPING_SECONDS: Final = 60.0
#: Tries of one change against concurrent commits before giving up.
COMMIT_ATTEMPTS: Final = 8
#: Seconds to wait for the winning commit after losing a race.
CATCH_UP_SECONDS: Final = 10.0
#: Seconds one relay request may take before the user is told.
REQUEST_SECONDS: Final = 30.0

_INVITE = "invite/"
_REQUEST = "request/"
_JOINING = "joining/"
_WRITE_CAP = "wcap/"
_ROLE_NAMES: Final = {
    Role.FACILITATOR: "facilitator",
    Role.PARTICIPANT: "participant",
    Role.OBSERVER: "observer",
}


def _hex(b: bytes) -> str:
    return b.hex()


def _unhex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        raise BackchannelError(f"{text!r} is not a valid {what} id.") from None


@dataclass(slots=True, eq=False)
class _Live:
    """A joined room in memory; ``lock`` serialises every change to it."""

    record: RoomRecord
    room: Room
    meta: RoomMeta
    names: dict[bytes, str] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    epoch_changed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _Effects:
    """What processing one entry (or one own commit) does, applied in one transaction."""

    messages: list[Message] = field(default_factory=list)
    edits: list[tuple[bytes, str, float]] = field(default_factory=list)
    deletes: list[bytes] = field(default_factory=list)
    chunks: list[tuple[bytes, int, bytes]] = field(default_factory=list)
    names: dict[bytes, str] = field(default_factory=dict)
    events: list[ClientEvent] = field(default_factory=list)
    outbox: list[OutboxEntry] = field(default_factory=list)
    settings: dict[str, bytes | None] = field(default_factory=dict)
    members_changed: bool = False
    moved_to: RoomAccess | None = None
    removed: bool = False
    announce: bool = False
    commit_leaves: bool = False


class _Source:
    """The store's outbox as the :class:`OutboxSender` reads it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def pending(self) -> Sequence[OutboxItem]:
        entries = await self._engine.store.pending(limit=1000)
        return [
            OutboxItem(e.idempotency_key, e.mailbox_id, e.payload, ttl=self._engine.ttl_for(e))
            for e in entries
        ]

    async def acknowledge(self, key: bytes, seq: int) -> None:
        await self._engine.store.acknowledge(key, seq)


class Engine:
    """Runs the room protocol for one started client. Use through :class:`Client`."""

    def __init__(
        self,
        store: Store,
        identity: DeviceIdentity,
        connection: RelayConnection,
        events: asyncio.Queue[ClientEvent],
        *,
        relay_url: str,
        clock: Callable[[], float],
        self_update_seconds: int = DEFAULT_SELF_UPDATE_SECONDS,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.store = store
        self.identity = identity
        self.connection = connection
        self._events = events
        self._relay_url = relay_url
        self._clock = clock
        self._self_update_seconds = self_update_seconds
        self._max_file_bytes = max_file_bytes
        self._me = identity.identity_id
        self._live: dict[bytes, _Live] = {}
        #: mailbox id -> ("room", room id) | ("drop", invite id) | ("inbox", request id)
        self._routes: dict[bytes, tuple[str, bytes]] = {}
        self._outbox = OutboxSender(connection, _Source(self), on_rejected=self._on_rejected)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pump: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._join_answers: dict[bytes, asyncio.Future[JoinAnswered]] = {}
        self._answered: dict[bytes, JoinAnswered] = {}
        self._closed = False

    # -- start and stop ----------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock()

    def _emit(self, event: ClientEvent) -> None:
        self._events.put_nowait(event)

    async def load(self) -> None:
        """Read rooms, invites and pending joins from the store and follow their mailboxes."""
        for record in await self.store.rooms():
            if record.state is None or record.mailbox is None:
                continue
            try:
                room = Room.from_bytes(record.state)
                meta = RoomMeta.from_bytes(record.mailbox)
            except (RoomError, RecordError):
                _log.error("a stored room could not be read; it is skipped")
                self._emit(Alert(_hex(record.room_id), "This room's saved state is damaged."))
                continue
            live = _Live(record, room, meta)
            await self._load_names(live)
            self._live[record.room_id] = live
            await self._follow_room(live)
        for _key, value in await self.store.settings_with_prefix(_WRITE_CAP):
            mailbox, seed = value[:16], value[16:]
            self.connection.register(capability(mailbox, write=seed))
        for _key, value in await self.store.settings_with_prefix(_INVITE):
            invite = InviteEntry.from_bytes(value)
            await self._follow_drop(invite)
        for _key, value in await self.store.settings_with_prefix(_JOINING):
            joining = JoiningEntry.from_bytes(value)
            await self._follow_inbox(joining)

    async def start(self) -> None:
        """Start pumping entries, sending the outbox and the housekeeping."""
        self._pump = asyncio.create_task(self._pump_entries(), name="client-entries")
        await self._outbox.start()
        for live in list(self._live.values()):
            if live.meta.pending_key is not None:
                self._spawn(self._recover_pending(live))
        self._housekeeping = asyncio.create_task(self._housekeep(), name="client-housekeeping")

    async def close(self) -> None:
        """Stop every background task (state is already saved)."""
        self._closed = True
        tasks = [t for t in (self._pump, self._housekeeping, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._outbox.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            text = exc.user_message() if isinstance(exc, BackchannelError) else type(exc).__name__
            _log.warning("a background room task failed: %s", type(exc).__name__)
            self._emit(Alert(None, f"A background task failed: {text}"))

    # -- following -----------------------------------------------------------------------

    async def _follow(self, cap: Any, after: int) -> None:
        try:
            await self.connection.follow(cap, after=after)
        except Rejected as exc:
            _log.warning("following a mailbox was refused (%s)", exc.code)

    async def _follow_room(self, live: _Live) -> None:
        access = live.meta.access
        self._routes[access.mailbox] = ("room", live.record.room_id)
        cursor = await self.store.cursor(access.mailbox) or 0
        await self._follow(access_capability(access), cursor)

    async def _follow_drop(self, invite: InviteEntry) -> None:
        cap = capability(
            invite.drop_mailbox, read=invite.drop_read_seed, admin=invite.drop_admin_seed
        )
        self._routes[invite.drop_mailbox] = (
            "drop",
            InviteRecord.from_bytes(invite.record).invite_id,
        )
        cursor = await self.store.cursor(invite.drop_mailbox) or 0
        await self._follow(cap, cursor)

    async def _follow_inbox(self, joining: JoiningEntry) -> None:
        cap = capability(
            joining.inbox, read=joining.inbox_read_seed, write=joining.inbox_write_seed
        )
        self._routes[joining.inbox] = ("inbox", joining.request_id)
        cursor = await self.store.cursor(joining.inbox) or 0
        await self._follow(cap, cursor)

    # -- the entry pump ----------------------------------------------------------------------

    async def _pump_entries(self) -> None:
        async for event in self.connection.events():
            if isinstance(event, ConnectionState):
                state = {
                    LinkState.CONNECTED: "connected",
                    LinkState.CONNECTING: "reconnecting",
                    LinkState.OFFLINE: "offline",
                    LinkState.CLOSED: "closed",
                }[event.state]
                self._emit(ConnectionChanged(state, event.detail or ""))
            elif isinstance(event, Entry):
                try:
                    await self._on_entry(event)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one bad entry must never stop the client
                    _log.warning(
                        "an entry could not be processed: %s", type(exc).__name__, exc_info=exc
                    )
                    self._emit(Alert(None, "A message from the relay could not be processed."))
                await self.connection.ack(event.mailbox, event.seq)
            elif isinstance(event, Revoked):
                route = self._routes.get(event.mailbox)
                if route is not None and route[0] == "room":
                    _log.info("a room mailbox was revoked (%s)", event.reason)
            elif isinstance(event, Reset):
                self._emit(Alert(None, "The relay lost messages (restored from a backup)."))

    async def _on_entry(self, entry: Entry) -> None:
        route = self._routes.get(entry.mailbox)
        if route is None:
            return
        kind, ident = route
        if kind == "room":
            live = self._live.get(ident)
            if live is not None:
                await self._room_entry(live, entry)
        elif kind == "drop":
            await self._drop_entry(ident, entry)
        elif kind == "inbox":
            await self._inbox_entry(ident, entry)

    # -- rooms: receiving -------------------------------------------------------------------

    async def _room_entry(self, live: _Live, entry: Entry) -> None:
        async with live.lock:
            if entry.mailbox != live.meta.access.mailbox or not live.room.active:
                return  # a mailbox the room has left: nothing after the move counts
            now = self._now()
            try:
                events = live.room.receive(entry.blob, now=int(now))
            except RoomError:
                # Echoes of own commits land here (the epoch moved on), and so does
                # anything forged, replayed or garbled: the state is unchanged.
                events = []
            effects = self._effects(live, events, now)
            await self._apply(live, effects, cursor=(entry.mailbox, entry.seq))
        await self._after(live, effects)

    def _name(self, live: _Live, member: bytes) -> str:
        return live.names.get(member) or f"member {member.hex()[:6]}"

    def _effects(self, live: _Live, events: Sequence[rev.RoomEvent], now: float) -> _Effects:
        fx = _Effects()
        room_id = live.record.room_id
        for ev in events:
            if isinstance(ev, rev.MessageReceived):
                self._content_effects(live, fx, ev.sender, ev.content, now)
            elif isinstance(ev, rev.MembersChanged):
                fx.members_changed = True
                fx.events.append(
                    MembersChanged(
                        _hex(room_id),
                        tuple(_hex(m) for m in ev.added),
                        tuple(_hex(m) for m in ev.removed),
                    )
                )
                if ev.removed and live.room.active:
                    fx.moved_to = derive_access(live.room.export_secret, live.room.epoch)
                if ev.added and self._me not in ev.added:
                    fx.announce = True
            elif isinstance(ev, rev.PolicyChanged):
                fx.members_changed = True
                fx.events.append(RoomChanged(_hex(room_id)))
            elif isinstance(ev, rev.RemovedFromRoom):
                fx.removed = True
                fx.events.append(RemovedFromRoom(_hex(room_id)))
            elif isinstance(ev, rev.CommitRejected):
                fx.events.append(
                    Alert(
                        _hex(room_id),
                        f"A change by {self._name(live, ev.committer)} "
                        f"was refused by the room's rules: {ev.reason}",
                    )
                )
            elif isinstance(ev, rev.ProposalQueued):
                change = ev.change
                if (
                    isinstance(change, RemoveMember)
                    and change.member == ev.proposer
                    and live.room.policy.role_of(self._me) is Role.FACILITATOR
                ):
                    fx.commit_leaves = True
            elif isinstance(ev, rev.ContentDropped):
                _log.info("room content was dropped by the room rules")
        return fx

    def _content_effects(
        self, live: _Live, fx: _Effects, sender: bytes, content: Content, now: float
    ) -> None:
        room_id = live.record.room_id
        sent_at = content.sent_at_ms / 1000
        name = fx.names.get(sender) or self._name(live, sender)
        outgoing = sender == self._me
        if isinstance(content, Text):
            m = Message(
                room_id,
                content.message_id,
                sender,
                name,
                sent_at,
                now,
                "text",
                content.body,
                content.reply_to,
                outgoing=outgoing,
            )
            fx.messages.append(m)
            fx.events.append(NewMessage(self._view(m)))
        elif isinstance(content, FileManifest):
            meta = msgpack.packb(
                {
                    "name": content.name,
                    "size": content.size,
                    "sha256": content.sha256,
                    "chunk": content.chunk_size,
                    "n": content.chunk_count,
                },
                use_bin_type=True,
            )
            m = Message(
                room_id,
                content.message_id,
                sender,
                name,
                sent_at,
                now,
                "file",
                content.name,
                None,
                meta,
                outgoing=outgoing,
            )
            fx.messages.append(m)
            fx.events.append(NewMessage(self._view(m)))
        elif isinstance(content, FileChunk):
            fx.chunks.append((content.file_id, content.index, content.data))
        elif isinstance(content, Edit):
            fx.edits.append((content.target, content.body, sent_at))
            fx.events.append(MessageChanged(_hex(room_id), _hex(content.target)))
        elif isinstance(content, Delete):
            fx.deletes.append(content.target)
            fx.events.append(MessageChanged(_hex(room_id), _hex(content.target)))
        elif isinstance(content, Profile):
            fx.names[sender] = content.display_name
            fx.members_changed = True

    async def _apply(
        self,
        live: _Live,
        fx: _Effects,
        *,
        cursor: tuple[bytes, int] | None = None,
    ) -> None:
        """Write the room state and every effect in one transaction; then emit the events."""
        room_id = live.record.room_id
        record = live.record
        if fx.moved_to is not None:
            meta = live.meta
            live.meta = replace(
                meta, access=fx.moved_to, previous=(*meta.previous, meta.access.mailbox)
            )
        policy = live.room.policy
        record = replace(
            record,
            title=policy.title,
            retention_seconds=policy.retention_seconds or None,
            state=live.room.to_bytes(),
            mailbox=live.meta.to_bytes(),
            joined=not fx.removed and live.room.active,
            left_at=self._now() if fx.removed else record.left_at,
        )
        live.names.update(fx.names)
        verification: list[ClientEvent] = []
        async with self.store.transaction() as tx:
            await tx.put_room(record)
            for m in fx.messages:
                await tx.add_message(m)
            for target, body, at in fx.edits:
                await tx.edit_message(room_id, target, body, at)
            for target in fx.deletes:
                await tx.delete_message(room_id, target)
            for file_id, index, data in fx.chunks:
                with contextlib.suppress(Exception):  # a chunk of an unknown file is dropped
                    await tx.put_attachment_chunk(room_id, file_id, index, data)
            if fx.members_changed or fx.removed or fx.moved_to is not None:
                verification = await self._sync_members(tx, live)
            for entry in fx.outbox:
                await tx.enqueue(entry)
            for key, value in fx.settings.items():
                if value is None:
                    await tx.delete_setting(key)
                else:
                    await tx.set_setting(key, value)
            if cursor is not None:
                await tx.set_cursor(cursor[0], cursor[1], room_id=room_id)
        live.record = record
        live.epoch_changed.set()
        for event in (*fx.events, *verification):
            self._emit(event)
        if fx.chunks:
            for file_id in {c[0] for c in fx.chunks}:
                self._emit(MessageChanged(_hex(room_id), _hex(file_id)))
        if fx.outbox:
            self._outbox.notify()

    async def _sync_members(self, tx: Any, live: _Live) -> list[ClientEvent]:
        room_id = live.record.room_id
        events: list[ClientEvent] = []
        current = {m.member_id: m for m in live.room.members()} if live.room.active else {}
        for member in await tx.members(room_id):
            if member.member_id not in current:
                await tx.remove_member(room_id, member.member_id)
        for member_id, m in current.items():
            before = await tx.member(room_id, member_id)
            stored = await tx.put_member(
                room_id,
                member_id,
                self._name(live, member_id),
                m.signature_key,
                _ROLE_NAMES[m.role],
            )
            if stored.key_changed and (before is None or not before.key_changed):
                _log.warning("a verified member's key changed")
                events.append(VerificationChanged(_hex(room_id), _hex(member_id), False, True))
        return events

    async def _after(self, live: _Live, fx: _Effects) -> None:
        """Follow-ups outside the room lock: new mailbox, announcements, leaves."""
        if fx.moved_to is not None:
            await self._moved(live, fx.moved_to)
        if fx.removed:
            await self.connection.unfollow(live.meta.access.mailbox)
            self._live.pop(live.record.room_id, None)
            return
        if fx.announce:
            await self._announce(live)
        if fx.commit_leaves:
            self._spawn(self._commit(live, lambda r, now: r.commit_proposals(now=now)))

    async def _moved(self, live: _Live, access: RoomAccess) -> None:
        """The room moved to ``access``: make sure it exists, follow it, move queued posts."""
        old = live.meta.previous[-1] if live.meta.previous else None
        cap = access_capability(access)
        with contextlib.suppress(MailboxExists):  # another member opened it: same keys
            await self.connection.create_mailbox(cap, timeout=REQUEST_SECONDS)
        self._routes[access.mailbox] = ("room", live.record.room_id)
        if old is not None:
            self._routes.pop(old, None)
            await self.connection.unfollow(old)
        await self.store.retarget_outbox(live.record.room_id, access.mailbox)
        await self._follow(cap, 0)
        self._outbox.notify()

    async def _announce(self, live: _Live) -> None:
        content = Profile(new_message_id(), int(self._now() * 1000), self.identity.display_name)
        await self._post(live, content, store_message=None)

    # -- rooms: sending ----------------------------------------------------------------------

    def ttl_for(self, entry: OutboxEntry) -> int | None:
        """The relay TTL of a queued post: the room's retention, if any."""
        if entry.room_id is None:
            return None
        live = self._live.get(entry.room_id)
        if live is None or not live.room.policy.retention_seconds:
            return None
        return int(live.room.policy.retention_seconds)

    async def _post(self, live: _Live, content: Content, *, store_message: Message | None) -> None:
        async with live.lock:
            if not live.room.active:
                raise BackchannelError("You are no longer a member of this room.")
            try:
                wire = live.room.send(content, now=int(self._now()))
            except RoomError as exc:
                raise BackchannelError(str(exc)) from None
            entry = OutboxEntry(
                os.urandom(16),
                live.meta.access.mailbox,
                wire,
                self._now(),
                room_id=live.record.room_id,
                message_id=store_message.message_id if store_message is not None else None,
            )
            state = live.room.to_bytes()
            try:
                async with self.store.transaction() as tx:
                    await tx.set_room_state(live.record.room_id, state)
                    if store_message is not None:
                        await tx.queue_message(store_message, entry)
                    else:
                        await tx.enqueue(entry)
            except BaseException:
                live.room = Room.from_bytes(live.record.state or state)
                raise
            live.record = replace(live.record, state=state)
        self._outbox.notify()

    async def send_text(self, room_id: bytes, text: str, reply_to: str | None) -> MessageView:
        live = self._require(room_id)
        reply = _unhex(reply_to, "message") if reply_to else None
        now = self._now()
        try:
            content = Text(new_message_id(), int(now * 1000), text, reply)
        except (TypeError, ValueError) as exc:
            raise BackchannelError(f"This message cannot be sent: {exc}.") from None
        m = Message(
            room_id,
            content.message_id,
            self._me,
            self.identity.display_name,
            now,
            now,
            "text",
            text,
            reply,
            outgoing=True,
        )
        await self._post(live, content, store_message=m)
        view = self._view(m)
        self._emit(NewMessage(view))
        return view

    async def edit(self, room_id: bytes, message: str, text: str) -> None:
        live = self._require(room_id)
        target = await self._own_message(room_id, message)
        now = self._now()
        try:
            content = Edit(new_message_id(), int(now * 1000), target, text)
        except (TypeError, ValueError) as exc:
            raise BackchannelError(f"This edit cannot be sent: {exc}.") from None
        await self._post(live, content, store_message=None)
        await self.store.edit_message(room_id, target, text, now)
        self._emit(MessageChanged(_hex(room_id), _hex(target)))

    async def delete(self, room_id: bytes, message: str) -> None:
        live = self._require(room_id)
        target = await self._own_message(room_id, message)
        now = self._now()
        await self._post(
            live, Delete(new_message_id(), int(now * 1000), target), store_message=None
        )
        await self.store.delete_message(room_id, target)
        self._emit(MessageChanged(_hex(room_id), _hex(target)))

    async def _own_message(self, room_id: bytes, message: str) -> bytes:
        target = _unhex(message, "message")
        stored = await self.store.message(room_id, target)
        if stored is None or stored.sender_id != self._me:
            raise BackchannelError("You can only change your own messages.")
        return target

    async def send_file(self, room_id: bytes, path: Path) -> MessageView:
        live = self._require(room_id)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
            if size > self._max_file_bytes:
                raise BackchannelError(
                    f"The file is too large: {size} bytes, and rooms take files up to "
                    f"{self._max_file_bytes} bytes."
                )
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise BackchannelError(f"Cannot read {path.name}: {exc.strerror}.") from None
        now = self._now()
        media_type = mimetypes.guess_type(path.name)[0]
        try:
            manifest, chunks = split_file(
                data,
                name=path.name,
                sent_at_ms=int(now * 1000),
                media_type=media_type,
                max_file_bytes=self._max_file_bytes,
            )
        except ValueError as exc:
            raise BackchannelError(f"This file cannot be sent: {exc}.") from None
        meta = msgpack.packb(
            {
                "name": manifest.name,
                "size": manifest.size,
                "sha256": manifest.sha256,
                "chunk": manifest.chunk_size,
                "n": manifest.chunk_count,
            },
            use_bin_type=True,
        )
        m = Message(
            room_id,
            manifest.message_id,
            self._me,
            self.identity.display_name,
            now,
            now,
            "file",
            manifest.name,
            None,
            meta,
            outgoing=True,
        )
        await self._post(live, manifest, store_message=m)
        for chunk in chunks:
            await self._post(live, chunk, store_message=None)
            await self.store.put_attachment_chunk(
                room_id, manifest.message_id, chunk.index, chunk.data
            )
        view = self._view(m, complete=True)
        self._emit(NewMessage(view))
        return view

    async def save_file(self, room_id: bytes, message: str, destination: Path) -> Path:
        mid = _unhex(message, "message")
        stored = await self.store.message(room_id, mid)
        if stored is None or stored.kind != "file" or stored.attachments is None:
            raise BackchannelError("That message has no file.")
        meta = msgpack.unpackb(stored.attachments, raw=False)
        data = await self.store.attachment(room_id, mid)
        if len(data) != meta["size"] or not hmac.compare_digest(
            hashlib.sha256(data).digest(), bytes(meta["sha256"])
        ):
            raise BackchannelError(
                "The file has not fully arrived yet (or failed its integrity check); "
                "sync and try again."
            )
        is_dir = await asyncio.to_thread(destination.is_dir)
        target = destination / Path(meta["name"]).name if is_dir else destination
        try:
            await asyncio.to_thread(target.write_bytes, data)
        except OSError as exc:
            raise BackchannelError(f"Cannot write {target}: {exc.strerror}.") from None
        return target

    # -- rooms: commits ----------------------------------------------------------------------

    async def _commit(
        self,
        live: _Live,
        make: Callable[[Room, int], Any],
        action: dict[str, Any] | None = None,
    ) -> None:
        """Make a commit with ``make(room, now)`` and get it accepted, retrying lost races."""
        for _attempt in range(COMMIT_ATTEMPTS):
            async with live.lock:
                if not live.room.active:
                    raise BackchannelError("You are no longer a member of this room.")
                epoch = live.room.epoch
                try:
                    make(live.room, int(self._now()))
                except RoomError as exc:
                    raise BackchannelError(str(exc)) from None
                live.meta = replace(live.meta, pending_key=os.urandom(16), pending_action=action)
                state = live.room.to_bytes()
                live.record = replace(live.record, state=state, mailbox=live.meta.to_bytes())
                await self.store.put_room(live.record)
                won, fx = await self._offer(live)
            if won:
                await self._after(live, fx)
                return
            await self._catch_up(live, epoch)
        raise BackchannelError(
            "Other changes kept winning the race for this room; try again in a moment."
        )

    async def _catch_up(self, live: _Live, epoch: int) -> None:
        deadline = asyncio.get_running_loop().time() + CATCH_UP_SECONDS
        while live.room.epoch <= epoch:
            live.epoch_changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(live.epoch_changed.wait(), remaining)

    async def _offer(self, live: _Live) -> tuple[bool, _Effects]:
        """Offer the pending commit (lock held). Returns whether it won, and its effects."""
        pending = live.room.pending
        key = live.meta.pending_key
        if pending is None or key is None:
            live.meta = replace(live.meta, pending_key=None, pending_action=None)
            await self._apply(live, _Effects())
            return False, _Effects()
        access = live.meta.access
        try:
            result = await self.connection.append(
                access.mailbox,
                pending.commit,
                key,
                epoch=access.relay_epoch(pending.epoch),
                timeout=REQUEST_SECONDS,
            )
        except StaleEpoch:
            live.room.discard_pending()
            live.meta = replace(live.meta, pending_key=None, pending_action=None)
            await self._apply(live, _Effects())
            return False, _Effects()
        except TransportError as exc:
            # Unknown outcome (offline, refused): keep the pending commit; it is
            # offered again with the same key when the client next starts.
            raise BackchannelError(
                f"The relay did not take the change ({exc.__class__.__name__}); it will be "
                "retried the next time this profile connects."
            ) from None
        welcome = pending.welcome
        action = live.meta.pending_action or {}
        events = live.room.confirm_pending()
        live.meta = replace(
            live.meta, pending_key=None, pending_action=None, last_update=self._now()
        )
        fx = self._effects(live, events, self._now())
        if "approve" in action and welcome is not None:
            await self._approved(live, fx, bytes(action["approve"]), welcome, result.seq, access)
        await self._apply(live, fx)
        if any(isinstance(e, MembersChanged) and e.added for e in fx.events):
            fx.announce = True  # newcomers learn every name from its owner, the committer too
        return True, fx

    async def _recover_pending(self, live: _Live) -> None:
        async with live.lock:
            won, fx = await self._offer(live)
        if won:
            await self._after(live, fx)

    # -- rooms: creating, inviting, approving ---------------------------------------------

    async def create_room(self, title: str, approval: str, retention: int) -> RoomSummary:
        try:
            mode = {"manual": JoinApproval.MANUAL, "auto": JoinApproval.AUTOMATIC}[approval]
        except KeyError:
            raise BackchannelError("Approval is 'manual' or 'auto'.") from None
        if retention < 0:
            raise BackchannelError("Retention must not be negative.")
        now = self._now()
        try:
            room = Room.create(
                self.identity.cipher_suite,
                self.identity.credential(),
                self.identity.private_key(),
                title=title.strip(),
                now=int(now),
                approval=mode,
                retention_seconds=retention,
            )
        except (RoomError, TypeError, ValueError) as exc:
            raise BackchannelError(f"This room cannot be created: {exc}") from None
        access = derive_access(room.export_secret, room.epoch)
        try:
            await self.connection.create_mailbox(access_capability(access), timeout=REQUEST_SECONDS)
        except TransportError as exc:
            raise BackchannelError(
                f"Cannot reach the relay to open the room ({exc.__class__.__name__}); "
                "check the connection and try again."
            ) from None
        meta = RoomMeta(access, last_update=now)
        record = RoomRecord(
            room.group_id,
            room.policy.title,
            now,
            room.to_bytes(),
            meta.to_bytes(),
            retention or None,
        )
        live = _Live(record, room, meta, {self._me: self.identity.display_name})
        async with self.store.transaction() as tx:
            await tx.put_room(record)
            await self._sync_members(tx, live)
        self._live[room.group_id] = live
        await self._follow_room(live)
        self._emit(RoomChanged(_hex(room.group_id)))
        return await self.summary(room.group_id)

    def _require(self, room_id: bytes) -> _Live:
        live = self._live.get(room_id)
        if live is None:
            raise BackchannelError("You are not in that room (any more).")
        return live

    def _require_facilitator(self, live: _Live) -> None:
        if live.room.policy.role_of(self._me) is not Role.FACILITATOR:
            raise BackchannelError("Only a facilitator of this room can do that.")

    async def invite(self, room_id: bytes, uses: int, expires_in: int) -> str:
        live = self._require(room_id)
        self._require_facilitator(live)
        if not 1 <= uses <= 1000:
            raise BackchannelError("An invite is good for 1 to 1000 people.")
        if not 60 <= expires_in <= 90 * 86400:
            raise BackchannelError("An invite expires after 1 minute to 90 days.")
        read, write, admin = new_seed(), new_seed(), new_seed()
        drop = os.urandom(16)
        cap = capability(drop, read=read, write=write, admin=admin)
        try:
            await self.connection.create_mailbox(cap, timeout=REQUEST_SECONDS)
        except TransportError as exc:
            raise BackchannelError(
                f"Cannot reach the relay to make the invite ({exc.__class__.__name__})."
            ) from None
        invite, record = create_invite(
            relay_url=self._relay_url,
            drop_mailbox=drop,
            drop_write_seed=write,
            expires_at=int(self._now()) + expires_in,
            max_uses=uses,
        )
        entry = InviteEntry(room_id, record.to_bytes(), drop, read, admin, write)
        await self.store.set_setting(_INVITE + _hex(record.invite_id), entry.to_bytes())
        await self._follow_drop(entry)
        return invite.to_link()

    async def _drop_entry(self, invite_id: bytes, entry: Entry) -> None:
        raw = await self.store.get_setting(_INVITE + _hex(invite_id))
        if raw is None:
            return
        invite = InviteEntry.from_bytes(raw)
        live = self._live.get(invite.room_id)
        record = InviteRecord.from_bytes(invite.record)
        try:
            if join_request_invite_id(entry.blob) != invite_id:
                return
            request = open_join_request(record.secret, entry.blob)
        except InviteError:
            _log.info("an unreadable join request was ignored")
            await self.store.set_cursor(entry.mailbox, entry.seq)
            return
        now = self._now()
        try:
            screened = record.screen(request, now=now)
        except JoinRequestReplayed:
            await self.store.set_cursor(entry.mailbox, entry.seq)
            return
        except InviteError:
            # Expired, used up or revoked: tell the joiner rather than leave them waiting.
            await self._reply(
                record.secret,
                request.request_id,
                request.inbox,
                request.inbox_write_seed,
                JoinReply(False),
            )
            await self.store.set_cursor(entry.mailbox, entry.seq)
            return
        req = RequestEntry(
            request.request_id,
            invite.room_id,
            invite_id,
            request.display_name,
            request.key_package,
            request.inbox,
            request.inbox_write_seed,
            now,
        )
        async with self.store.transaction() as tx:
            await tx.set_setting(
                _INVITE + _hex(invite_id), replace(invite, record=screened.to_bytes()).to_bytes()
            )
            await tx.set_setting(_REQUEST + _hex(request.request_id), req.to_bytes())
            await tx.set_cursor(entry.mailbox, entry.seq)
        view = self._request_view(req)
        self._emit(JoinRequested(view))
        if live is not None and live.room.policy.approval is JoinApproval.AUTOMATIC:
            self._spawn(self.approve(invite.room_id, view.id))

    def _request_view(self, req: RequestEntry) -> RequestView:
        from .mls.key_package_ops import KeyPackageIn

        try:
            leaf = KeyPackageIn.from_bytes(req.key_package).key_package.leaf_node
            identity = bytes(leaf.credential.identity)  # type: ignore[attr-defined]
            number = str(
                safety_number(
                    (self._me, self.identity.public_key()), (identity, bytes(leaf.signature_key))
                )
            )
        except Exception:  # a key package we cannot read shows as such, never crashes
            number = "unreadable key package"
        return RequestView(
            _hex(req.request_id), _hex(req.room_id), req.display_name, number, req.received_at
        )

    async def requests(self, room_id: bytes) -> list[RequestView]:
        out = []
        for _key, value in await self.store.settings_with_prefix(_REQUEST):
            req = RequestEntry.from_bytes(value)
            if req.room_id == room_id:
                out.append(self._request_view(req))
        return sorted(out, key=lambda r: r.received_at)

    async def _request(self, room_id: bytes, request: str) -> RequestEntry:
        rid = _unhex(request, "request")
        raw = await self.store.get_setting(_REQUEST + _hex(rid))
        if raw is None:
            raise BackchannelError("There is no such join request (already answered?).")
        req = RequestEntry.from_bytes(raw)
        if req.room_id != room_id:
            raise BackchannelError("That join request is for another room.")
        return req

    async def approve(self, room_id: bytes, request: str) -> None:
        live = self._require(room_id)
        self._require_facilitator(live)
        req = await self._request(room_id, request)
        raw = await self.store.get_setting(_INVITE + _hex(req.invite_id))
        if raw is not None:
            invite = InviteEntry.from_bytes(raw)
            try:
                approved = InviteRecord.from_bytes(invite.record).approve()
            except InviteError as exc:
                raise BackchannelError(str(exc)) from None
            await self.store.set_setting(
                _INVITE + _hex(req.invite_id),
                replace(invite, record=approved.to_bytes()).to_bytes(),
            )
        live.names[self._member_of(req)] = req.display_name
        await self._commit(
            live,
            lambda r, now: r.add_members([req.key_package], now=now),
            {"approve": req.request_id},
        )

    def _member_of(self, req: RequestEntry) -> bytes:
        from .mls.key_package_ops import KeyPackageIn

        try:
            cred = KeyPackageIn.from_bytes(req.key_package).key_package.leaf_node.credential
            return bytes(cred.identity)  # type: ignore[attr-defined]
        except Exception:
            return b""

    async def _approved(
        self, live: _Live, fx: _Effects, rid: bytes, welcome: bytes, seq: int, access: RoomAccess
    ) -> None:
        """The Add commit of request ``rid`` was accepted at ``seq``: queue the Welcome."""
        key = _REQUEST + _hex(rid)
        raw = await self.store.get_setting(key)
        if raw is None:
            return  # answered before a crash: the reply is already queued
        req = RequestEntry.from_bytes(raw)
        secret = await self._invite_secret(req.invite_id)
        blob = seal_join_reply(
            secret, req.inbox_write_seed, rid, JoinReply(True, welcome, access, seq)
        )
        self.connection.register(capability(req.inbox, write=req.inbox_write_seed))
        fx.settings[key] = None
        fx.settings[_WRITE_CAP + _hex(req.inbox)] = req.inbox + req.inbox_write_seed
        fx.outbox.append(OutboxEntry(rid, req.inbox, blob, self._now()))
        fx.names[self._member_of(req)] = req.display_name
        fx.members_changed = True
        fx.events.append(RoomChanged(_hex(live.record.room_id)))

    async def _reply(
        self, secret: bytes, rid: bytes, inbox: bytes, seed: bytes, reply: JoinReply
    ) -> None:
        blob = seal_join_reply(secret, seed, rid, reply)
        self.connection.register(capability(inbox, write=seed))
        await self.store.set_setting(_WRITE_CAP + _hex(inbox), inbox + seed)
        await self.store.enqueue(OutboxEntry(rid, inbox, blob, self._now()))
        self._outbox.notify()

    async def deny(self, room_id: bytes, request: str) -> None:
        live = self._require(room_id)
        self._require_facilitator(live)
        req = await self._request(room_id, request)
        secret = await self._invite_secret(req.invite_id)
        await self._reply(secret, req.request_id, req.inbox, req.inbox_write_seed, JoinReply(False))
        await self.store.delete_setting(_REQUEST + _hex(req.request_id))

    async def _invite_secret(self, invite_id: bytes) -> bytes:
        raw = await self.store.get_setting(_INVITE + _hex(invite_id))
        if raw is None:
            raise BackchannelError("The invite of that request is gone.")
        return InviteRecord.from_bytes(InviteEntry.from_bytes(raw).record).secret

    # -- joining ---------------------------------------------------------------------------

    async def join(self, link: str) -> str:
        try:
            invite: Invite = parse_invite(link, now=self._now())
        except InviteError as exc:
            raise BackchannelError(str(exc)) from None
        if invite.relay_url != self._relay_url:
            raise BackchannelError(
                f"This invite is for the relay {invite.relay_url}, but this profile uses "
                f"{self._relay_url}. Join with a profile on that relay "
                f"(`backchannel --home DIR init --relay {invite.relay_url}`)."
            )
        now = self._now()
        bundle = Room.key_package(
            self.identity.cipher_suite,
            self.identity.credential(),
            self.identity.private_key(),
            now=int(now),
        )
        read, write = new_seed(), new_seed()
        inbox = os.urandom(16)
        try:
            await self.connection.create_mailbox(
                capability(inbox, read=read, write=write), timeout=REQUEST_SECONDS
            )
        except TransportError as exc:
            raise BackchannelError(
                f"Cannot reach the relay of this invite ({exc.__class__.__name__})."
            ) from None
        rid = os.urandom(16)
        request = JoinRequest(
            rid,
            int(now * 1000),
            bundle.key_package.key_package.to_bytes(),
            self.identity.display_name,
            inbox,
            write,
        )
        blob = seal_join_request(invite, request)
        joining = JoiningEntry(
            rid, invite.secret, invite.hint, bundle.to_bytes(), inbox, read, write, now
        )
        self.connection.register(capability(invite.drop_mailbox, write=invite.drop_write_seed))
        async with self.store.transaction() as tx:
            await tx.set_setting(_JOINING + _hex(rid), joining.to_bytes())
            await tx.set_setting(
                _WRITE_CAP + _hex(invite.drop_mailbox), invite.drop_mailbox + invite.drop_write_seed
            )
            await tx.enqueue(OutboxEntry(rid, invite.drop_mailbox, blob, now))
        await self._follow_inbox(joining)
        self._outbox.notify()
        return _hex(rid)

    async def pending_joins(self) -> list[str]:
        return [k[len(_JOINING) :] for k, _ in await self.store.settings_with_prefix(_JOINING)]

    async def wait_join(self, request_id: str, timeout: float) -> JoinAnswered | None:
        rid = _unhex(request_id, "request")
        if rid in self._answered:
            return self._answered[rid]
        future = self._join_answers.setdefault(rid, asyncio.get_running_loop().create_future())
        if await self.store.get_setting(_JOINING + _hex(rid)) is None:
            return self._answered.get(rid)  # answered meanwhile, or never asked here
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return None

    async def _inbox_entry(self, rid: bytes, entry: Entry) -> None:
        raw = await self.store.get_setting(_JOINING + _hex(rid))
        if raw is None:
            return
        joining = JoiningEntry.from_bytes(raw)
        try:
            reply = open_join_reply(
                joining.invite_secret, joining.inbox_write_seed, rid, entry.blob
            )
        except InviteError:
            _log.info("an unreadable join reply was ignored")
            return
        if not reply.approved or reply.welcome is None or reply.access is None:
            await self.store.delete_setting(_JOINING + _hex(rid))
            self._routes.pop(joining.inbox, None)
            await self.connection.unfollow(joining.inbox)
            self._answer(JoinAnswered(_hex(rid), False))
            return
        now = self._now()
        try:
            bundle = KeyPackageBundle.from_bytes(joining.bundle)
            room = Room.join(reply.welcome, bundle, now=int(now))
        except Exception as exc:  # MLS or policy refusal of the Welcome: tell the user
            text = str(exc) if isinstance(exc, RoomError) else "the invitation is invalid"
            _log.warning("a Welcome was refused: %s", type(exc).__name__)
            self._emit(Alert(None, f"The invitation could not be accepted: {text}"))
            return
        access = reply.access
        meta = RoomMeta(access, last_update=now)
        record = RoomRecord(
            room.group_id,
            room.policy.title,
            now,
            room.to_bytes(),
            meta.to_bytes(),
            room.policy.retention_seconds or None,
        )
        live = _Live(record, room, meta, {self._me: self.identity.display_name})
        async with self.store.transaction() as tx:
            await tx.put_room(record)
            await tx.set_cursor(access.mailbox, reply.after, room_id=room.group_id)
            await tx.delete_setting(_JOINING + _hex(rid))
            await self._sync_members(tx, live)
        self._live[room.group_id] = live
        self._emit(RoomChanged(_hex(room.group_id)))
        self._answer(JoinAnswered(_hex(rid), True, _hex(room.group_id)))
        self._routes.pop(joining.inbox, None)
        await self.connection.unfollow(joining.inbox)
        await self._follow_room(live)
        await self._announce(live)

    def _answer(self, answer: JoinAnswered) -> None:
        self._emit(answer)
        rid = bytes.fromhex(answer.request_id)
        self._answered[rid] = answer
        future = self._join_answers.pop(rid, None)
        if future is not None and not future.done():
            future.set_result(answer)

    # -- members ---------------------------------------------------------------------------

    async def _load_names(self, live: _Live) -> None:
        for m in await self.store.members(live.record.room_id):
            live.names[m.member_id] = m.display_name
        live.names[self._me] = self.identity.display_name

    async def members(self, room_id: bytes) -> list[MemberView]:
        self._require(room_id)
        return [
            MemberView(
                _hex(m.member_id),
                m.display_name,
                m.role,
                m.verified,
                m.key_changed,
                m.member_id == self._me,
            )
            for m in await self.store.members(room_id)
        ]

    async def _member(self, room_id: bytes, member: str) -> bytes:
        members = await self.store.members(room_id)
        text = member.strip()
        by_id = [m for m in members if m.member_id.hex() == text.lower()]
        if by_id:
            return by_id[0].member_id
        by_name = [m for m in members if m.display_name.casefold() == text.casefold()]
        if len(by_name) == 1:
            return by_name[0].member_id
        if len(by_name) > 1:
            raise BackchannelError(f"Several members are called {text!r}; use the member id.")
        raise BackchannelError(f"No member {text!r} in this room.")

    async def remove(self, room_id: bytes, member: str) -> None:
        live = self._require(room_id)
        self._require_facilitator(live)
        target = await self._member(room_id, member)
        if target == self._me:
            raise BackchannelError("To go yourself, leave the room.")
        await self._commit(live, lambda r, now: r.remove_members([target], now=now))

    async def set_role(self, room_id: bytes, member: str, role: str) -> None:
        live = self._require(room_id)
        self._require_facilitator(live)
        target = await self._member(room_id, member)
        try:
            new_role = {v: k for k, v in _ROLE_NAMES.items()}[role]
        except KeyError:
            raise BackchannelError("A role is facilitator, participant or observer.") from None

        def make(r: Room, now: int) -> Any:
            try:
                policy = r.policy.with_role(target, new_role)
            except ValueError as exc:
                raise BackchannelError(f"That role change is not possible: {exc}") from None
            return r.change_policy(policy, now=now)

        await self._commit(live, make)

    async def leave(self, room_id: bytes) -> None:
        live = self._require(room_id)
        async with live.lock:
            try:
                wire = live.room.leave()
            except RoomError as exc:
                raise BackchannelError(str(exc)) from None
            state = live.room.to_bytes()
            async with self.store.transaction() as tx:
                await tx.set_room_state(room_id, state)
                await tx.enqueue(
                    OutboxEntry(
                        os.urandom(16), live.meta.access.mailbox, wire, self._now(), room_id=room_id
                    )
                )
            live.record = replace(live.record, state=state)
        self._outbox.notify()

    async def safety_number(self, room_id: bytes, member: str) -> tuple[MemberView, str]:
        self._require(room_id)
        target = await self._member(room_id, member)
        stored = await self.store.member(room_id, target)
        assert stored is not None
        number = safety_number((self._me, self.identity.public_key()), (target, stored.fingerprint))
        view = MemberView(
            _hex(target),
            stored.display_name,
            stored.role,
            stored.verified,
            stored.key_changed,
            target == self._me,
        )
        return view, str(number)

    async def verify(self, room_id: bytes, member: str) -> MemberView:
        self._require(room_id)
        target = await self._member(room_id, member)
        stored = await self.store.member(room_id, target)
        assert stored is not None
        marked = await self.store.mark_verified(room_id, target, stored.fingerprint)
        self._emit(VerificationChanged(_hex(room_id), _hex(target), True, False))
        return MemberView(
            _hex(target),
            marked.display_name,
            marked.role,
            marked.verified,
            marked.key_changed,
            target == self._me,
        )

    async def self_update(self, room_id: bytes) -> None:
        live = self._require(room_id)
        await self._commit(live, lambda r, now: r.self_update(now=now))

    # -- reading ----------------------------------------------------------------------------

    def resolve_room(self, room: str) -> bytes:
        """A room id from its hex id or an unambiguous title.

        Raises:
            BackchannelError: no such room, or several with that title.
        """
        text = room.strip()
        for room_id in self._live:
            if room_id.hex() == text.lower():
                return room_id
        titled = [r for r, live in self._live.items() if live.room.policy.title == text]
        if len(titled) == 1:
            return titled[0]
        if len(titled) > 1:
            raise BackchannelError(f"Several rooms are called {text!r}; use the room id.")
        raise BackchannelError(f"You are not in a room {text!r}; `backchannel rooms` lists yours.")

    async def summary(self, room_id: bytes) -> RoomSummary:
        live = self._require(room_id)
        policy = live.room.policy
        pending = 0
        if policy.role_of(self._me) is Role.FACILITATOR:
            pending = len(await self.requests(room_id))
        return RoomSummary(
            _hex(room_id),
            policy.title,
            _ROLE_NAMES[policy.role_of(self._me)],
            len(live.room.members()),
            "auto" if policy.approval is JoinApproval.AUTOMATIC else "manual",
            policy.retention_seconds,
            live.room.active,
            pending,
        )

    async def summaries(self) -> list[RoomSummary]:
        return [await self.summary(room_id) for room_id in self._live]

    def _view(self, m: Message, *, complete: bool | None = None) -> MessageView:
        file = None
        if m.kind == "file" and m.attachments is not None:
            meta = msgpack.unpackb(m.attachments, raw=False)
            file = FileInfo(str(meta["name"]), int(meta["size"]), bool(complete))
        return MessageView(
            _hex(m.message_id),
            _hex(m.room_id),
            _hex(m.sender_id),
            m.sender_name,
            m.body,
            m.sent_at,
            m.kind,
            _hex(m.reply_to) if m.reply_to else None,
            m.edited_at is not None,
            m.deleted,
            m.outgoing,
            (not m.outgoing) or m.delivered_seq is not None,
            file,
        )

    async def _views(self, messages: Sequence[Message]) -> list[MessageView]:
        out = []
        for m in messages:
            complete = None
            if m.kind == "file" and m.attachments is not None:
                n = int(msgpack.unpackb(m.attachments, raw=False)["n"])
                complete = await self.store.attachment_chunks(m.room_id, m.message_id) >= n
            out.append(self._view(m, complete=complete))
        return out

    async def history(self, room_id: bytes, limit: int, before: str | None) -> list[MessageView]:
        anchor = None
        if before is not None:
            anchor = await self.store.message(room_id, _unhex(before, "message"))
        return await self._views(await self.store.history(room_id, limit=limit, before=anchor))

    async def search(self, room_id: bytes, query: str, limit: int) -> list[MessageView]:
        return await self._views(await self.store.search(room_id, query, limit=limit))

    # -- sync and housekeeping ---------------------------------------------------------------

    async def sync(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(self.connection.wait_connected(), timeout)
            for _round in range(3):  # handling entries may follow new mailboxes or queue posts
                heads: dict[bytes, int] = {}
                for mailbox in list(self._routes):
                    if self.connection.cursor(mailbox) is None:
                        continue
                    with contextlib.suppress(Denied):
                        page = await self.connection.fetch(
                            mailbox, after=0, limit=1, timeout=max(0.1, deadline - loop.time())
                        )
                        heads[mailbox] = page.head
                for mailbox, head in heads.items():
                    while (cursor := self.connection.cursor(mailbox)) is not None and cursor < head:
                        if loop.time() > deadline:
                            raise TimeoutError
                        await asyncio.sleep(0.02)
                await asyncio.wait_for(self._outbox.flush(), max(0.1, deadline - loop.time()))
                while self._tasks:
                    await asyncio.wait(list(self._tasks), timeout=max(0.1, deadline - loop.time()))
                    if loop.time() > deadline:
                        raise TimeoutError
        except (TimeoutError, TransportError):
            raise BackchannelError(
                f"Could not finish syncing with the relay at {self._relay_url} within "
                f"{timeout:g} s; check that it is running and reachable."
            ) from None

    async def erase_expired(self) -> int:
        """Erase messages older than their room's retention; returns how many went."""
        return await self.store.erase_expired(self._now())

    async def run_due_updates(self) -> None:
        """Start a self-update in every room where this member's last one is due."""
        for live in list(self._live.values()):
            due = live.meta.last_update + self._self_update_seconds
            if live.room.active and self._now() >= due and live.room.pending is None:
                self._spawn(self.self_update(live.record.room_id))

    async def _housekeep(self) -> None:
        while not self._closed:
            try:
                await self.erase_expired()
                await self.run_due_updates()
            except Exception as exc:  # housekeeping must never stop the client
                _log.warning("housekeeping failed: %s", type(exc).__name__)
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async def _on_rejected(self, item: OutboxItem, exc: Rejected) -> None:
        """A queued post was refused for good."""
        route = self._routes.get(item.mailbox)
        if route is None:
            for live in self._live.values():
                if item.mailbox in live.meta.previous:
                    # The room moved while this was queued: send it to the new mailbox.
                    await self.store.retarget_outbox(live.record.room_id, live.meta.access.mailbox)
                    self._outbox.notify()
                    return
        self._emit(Alert(None, f"The relay refused a message ({exc.code})."))
