"""The room engine behind :class:`~backchannel.client.Client`: rooms, invites, joins, sync.

See the client module's docstring for the flow. This module wires the sans-IO
room protocol (:mod:`.rooms`) to the encrypted store and the relay connection:

* every followed mailbox is routed to a handler (room, invite drop, join inbox);
  each entry's effects are written in one store transaction with its cursor;
* own commits are saved, offered with the mailbox's epoch compare-and-set, and
  re-offered with the same idempotency key after a crash;
* removal moves the room to a mailbox derived from the new epoch's exporter
  (docs/room-protocol.md §11), which the removed member cannot compute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..caps import access_capability, capability
from ..errors import BackchannelError
from ..identity import DeviceIdentity
from ..records import InviteEntry, JoiningEntry, RecordError, RoomMeta
from ..rooms import events as rev
from ..rooms.access import RoomAccess, derive_access, open_room_blob, seal_room_blob
from ..rooms.content import (
    DEFAULT_MAX_FILE_BYTES,
    Content,
    Delete,
    Edit,
    FileChunk,
    FileManifest,
    Profile,
    Reaction,
    Text,
    new_message_id,
)
from ..rooms.errors import RoomError
from ..rooms.invites import (
    InviteRecord,
)
from ..rooms.policy import JoinApproval, RemoveMember, Role
from ..rooms.room import Room, message_epoch
from ..store import Store
from ..store.errors import UnknownRecord
from ..store.records import Message, OutboxEntry, message_ref
from ..store.records import Room as RoomRecord
from ..stored_views import name_key
from ..transport.capability import MailboxCapability
from ..transport.connection import RelayConnection
from ..transport.errors import Denied, MailboxExists, Rejected, TransportError
from ..transport.events import (
    ConnectionState,
    Entry,
    GapOpen,
    GenerationChanged,
    LateEntry,
    LinkState,
    Reset,
    Revoked,
    Skipped,
)
from ..transport.outbox import OutboxItem, OutboxSender, Verdict, retry_later
from ..views import (
    Alert,
    ClientEvent,
    ConnectionChanged,
    JoinAnswered,
    MembersChanged,
    MessageChanged,
    NewMessage,
    PostRefused,
    RemovedFromRoom,
    RoomChanged,
    RoomSummary,
    VerificationChanged,
)
from .actions import RoomActions
from .commits import Commits
from .invites import InviteFlows
from .state import (
    BATCH_ENTRIES,
    DEFAULT_SELF_UPDATE_SECONDS,
    HOUSEKEEPING_SECONDS,
    INVITE_KEY,
    JOINING_KEY,
    MAX_HELD_BYTES,
    MAX_HELD_CHANGES,
    REQUEST_SECONDS,
    ROLE_NAMES,
    WRITE_CAP_KEY,
    Chunk,
    ContentChange,
    Deleted,
    Edited,
    Effects,
    Live,
    Reacted,
    decode_held,
    encode_held,
    hex_id,
)
from .watching import FORK_TEXT, Watching

__all__ = ["Engine"]

SAME_NAME_TEXT = (
    "Two members of this room now go by the same name. Each is shown with the start "
    "of their member id; compare safety numbers to be sure who is who."
)


@dataclass(slots=True)
class _Applied:
    """What writing one batch of content did, for the events sent after it commits."""

    #: ref -> the message as stored (None: a replay, not stored again)
    stored: dict[bytes, Message | None] = field(default_factory=dict)
    #: refs of messages edited, deleted, reacted to or given a chunk
    changed: dict[bytes, None] = field(default_factory=dict)
    #: reasons, one per change refused
    dropped: list[str] = field(default_factory=list)


_log = logging.getLogger(__name__)
T = TypeVar("T")
#: Setting: the relay store's generation this profile saw last.
_GENERATION_KEY = "relay/generation"
GENERATION_TEXT = (
    "The relay was restored from a backup: messages sent shortly before the backup was "
    "made may be lost, for everyone in your rooms. Messages from now on arrive as usual."
)


class _Source:
    """The store's outbox as the :class:`OutboxSender` reads it.

    Each read takes the first :attr:`PER_MAILBOX` posts of up to :attr:`MAILBOXES`
    mailboxes, rooms first: however many posts wait for one mailbox (answers to join
    requests the relay refuses, a long file), every other mailbox's posts are read too.
    """

    PER_MAILBOX = 64
    MAILBOXES = 64

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sent: dict[bytes, tuple[bytes, bytes]] = {}
        self._messages: dict[bytes, tuple[bytes, bytes]] = {}
        #: key -> mailbox of the posts that belong to no room (join requests, answers)
        self._others: dict[bytes, bytes] = {}

    async def pending(self) -> Sequence[OutboxItem]:
        entries = await self._engine.store.outbox_heads(
            per_mailbox=self.PER_MAILBOX, mailboxes=self.MAILBOXES
        )
        items = []
        self._sent = {}
        self._others = {}
        for e in entries:
            blob = self._engine.wire_blob(e)
            if blob is None:
                continue  # its room moved: it is retargeted when the move is read
            self._sent[e.idempotency_key] = (e.mailbox_id, blob)
            if e.room_id is not None and e.ref is not None:
                self._messages[e.idempotency_key] = (e.room_id, e.ref)
            if e.room_id is None:
                self._others[e.idempotency_key] = e.mailbox_id
            items.append(
                OutboxItem(e.idempotency_key, e.mailbox_id, blob, ttl=self._engine.ttl_for(e))
            )
        return items

    async def acknowledge(self, key: bytes, seq: int) -> None:
        await self._engine.store.acknowledge(key, seq)
        sent = self._sent.pop(key, None)
        if sent is not None:
            self._engine.expect_echo(sent[0], seq, sent[1])
        shown = self._messages.pop(key, None)
        if shown is not None:  # the UI's "sending…" becomes delivered
            self._engine.message_delivered(*shown)
        other = self._others.pop(key, None)
        if other is not None:  # its write key is no longer needed
            await self._engine._release_reply(other, key)


class Engine(Commits, InviteFlows, RoomActions, Watching):
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
        self._live: dict[bytes, Live] = {}
        #: mailbox id -> ("room", room id) | ("drop", invite id) | ("inbox", request id)
        self._routes: dict[bytes, tuple[str, bytes]] = {}
        self._outbox = OutboxSender(connection, _Source(self), on_rejected=self._on_rejected)
        self._tasks: set[asyncio.Task[Any]] = set()
        #: User operations in flight (see ``complete``); cancelled only by ``close``.
        self._operations: set[asyncio.Task[Any]] = set()
        self._pump: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._join_answers: dict[bytes, asyncio.Future[JoinAnswered]] = {}
        self._answered: dict[bytes, JoinAnswered] = {}
        #: Rooms this member asked to leave -> set once it is out (see ``Commits``).
        self._leaving: dict[bytes, asyncio.Event] = {}
        self._closed = False

    # -- start and stop ----------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock()

    def _emit(self, event: ClientEvent) -> None:
        self._events.put_nowait(event)

    async def load(self) -> None:
        """Read rooms, invites and pending joins from the store and follow their mailboxes."""
        # The relay store's generation seen last (transport/connection.py, "Generations").
        self.connection.expect_generation(await self.store.get_setting(_GENERATION_KEY))
        for record in await self.store.rooms():
            if record.state is None or record.mailbox is None:
                continue
            try:
                room = Room.from_bytes(record.state)
                meta = RoomMeta.from_bytes(record.mailbox)
            except (RoomError, RecordError):
                _log.error("a stored room could not be read; it is skipped")
                self._emit(Alert(hex_id(record.room_id), "This room's saved state is damaged."))
                continue
            live = Live(record, room, meta)
            await self._load_names(live)
            self._live[record.room_id] = live
            await self._follow_room(live)
        for _key, value in await self.store.settings_with_prefix(WRITE_CAP_KEY):
            mailbox, seed = value[:16], value[16:]
            self.connection.register(capability(mailbox, write=seed))
        for _key, value in await self.store.settings_with_prefix(INVITE_KEY):
            invite = InviteEntry.from_bytes(value)
            await self._follow_drop(invite)
        for _key, value in await self.store.settings_with_prefix(JOINING_KEY):
            joining = JoiningEntry.from_bytes(value)
            await self._follow_inbox(joining)
        await self._load_leaves()

    async def start(self) -> None:
        """Start pumping entries, sending the outbox and the housekeeping."""
        self._pump = asyncio.create_task(self._pump_entries(), name="client-entries")
        await self._outbox.start()
        for live in list(self._live.values()):
            if live.meta.pending_key is not None:
                self._spawn(self._recover_pending(live))
        self._resume_leaves()
        self._housekeeping = asyncio.create_task(self._housekeep(), name="client-housekeeping")

    async def close(self) -> None:
        """Stop every background task (state is already saved)."""
        self._closed = True
        tasks = [
            t
            for t in (self._pump, self._housekeeping, *self._tasks, *self._operations)
            if t is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._outbox.close()

    async def complete(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run a user operation to its end even if the caller stops waiting for it.

        A UI cancels its workers freely (a dialog closes, a newer request replaces an
        older one). An operation cut off halfway would leave a commit won but its
        follow-ups undone, or a message enqueued for sending while the room in memory
        went back to before it (its next message would then reuse a key generation the
        others have already consumed). So the caller's cancellation only stops the
        waiting; ``close`` is what stops the work.
        """
        if self._closed:
            operation.close()
            raise BackchannelError("The client is closed.")
        task = asyncio.ensure_future(operation)
        self._operations.add(task)
        task.add_done_callback(self._operation_done)
        return await asyncio.shield(task)

    def _operation_done(self, task: asyncio.Task[Any]) -> None:
        self._operations.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller may have stopped waiting for it

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

    async def _follow_room(self, live: Live) -> None:
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
                generation = self.connection.generation
                if (
                    event.state is LinkState.CONNECTED
                    and generation is not None
                    and await self.store.get_setting(_GENERATION_KEY) != generation
                ):
                    await self.store.set_setting(_GENERATION_KEY, generation)
            elif isinstance(event, GenerationChanged):
                # Once per generation in a run: a relay flapping between two says nothing new.
                fresh = self._once(("generation", event.generation))
                self._once(("generation", event.previous))
                if fresh:
                    self._emit(Alert(None, GENERATION_TEXT))
            elif isinstance(event, Entry):
                # A burst of entries (catching up, a busy room) is handled in batches:
                # one store transaction per room per batch instead of one per entry.
                await self._on_entries([event, *self.connection.ready_entries(BATCH_ENTRIES)])
            elif isinstance(event, Revoked):
                self._on_revoked(event)
            elif isinstance(event, Skipped):
                self._on_skipped(event)
            elif isinstance(event, LateEntry):
                self._on_late_entry(event)
            elif isinstance(event, GapOpen):
                self._on_gap_open(event)
            elif isinstance(event, Reset):
                # The stored cursor follows the transport's back to the start (see
                # Reset), or after a restart the entries the relay numbers anew would be
                # skipped. Positions seen before say nothing about the ones to come.
                await self.store.reset_cursor(event.mailbox, 0)
                route = self._routes.get(event.mailbox)
                live = self._live.get(route[1]) if route and route[0] == "room" else None
                if live is not None:
                    live.recent.clear()
                    live.expected.clear()
                if self._reset_storm(event.mailbox):  # once per mailbox per storm
                    self._emit(Alert(None, "The relay lost messages (restored from a backup)."))

    async def _on_entries(self, entries: list[Entry]) -> None:
        """Handle entries in order; consecutive ones of one room share a transaction."""
        i = 0
        while i < len(entries):
            entry = entries[i]
            route = self._routes.get(entry.mailbox)
            j = i + 1
            if route is not None and route[0] == "room":
                while j < len(entries) and entries[j].mailbox == entry.mailbox:
                    j += 1
            try:
                if route is None:
                    pass
                elif route[0] == "room":
                    live = self._live.get(route[1])
                    if live is not None:
                        await self._room_entries(live, entries[i:j])
                elif route[0] == "drop":
                    await self._drop_entry(route[1], entry)
                elif route[0] == "inbox":
                    await self._inbox_entry(route[1], entry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad entry must never stop the client
                _log.warning(
                    "an entry could not be processed: %s", type(exc).__name__, exc_info=exc
                )
                self._emit(Alert(None, "A message from the relay could not be processed."))
            for done in entries[i:j]:
                await self.connection.ack(done.mailbox, done.seq)
            i = j

    # -- rooms: receiving -------------------------------------------------------------------

    async def _room_entries(self, live: Live, entries: Sequence[Entry]) -> None:
        """Process a room's entries; effects are saved together, and at every change of
        membership, mailbox or rules (whose follow-ups need the room lock released)."""
        pending = list(entries)
        while pending:
            async with live.lock:
                fx = Effects()
                last: Entry | None = None
                while pending:
                    entry = pending.pop(0)
                    if entry.mailbox != live.meta.access.mailbox or not live.room.active:
                        continue  # a mailbox the room has left: nothing after the move counts
                    now = self._now()
                    try:
                        data = open_room_blob(live.meta.access, entry.blob)
                        if (message_epoch(data) or 0) < live.meta.access.base_epoch:
                            # From before this mailbox was opened: only a member who
                            # has since been removed would post that here.
                            raise RoomError("a message from before the room moved here")
                        events = live.room.receive(data, now=int(now))
                    except RoomError as exc:
                        # Echoes of own commits land here (the epoch moved on), and so does
                        # anything forged, replayed or garbled: the state is unchanged.
                        _log.debug("room entry %d not applied: %s", entry.seq, exc)
                        events = []
                    self._effects(live, events, now, fx)
                    self._check_echo(live, fx, entry)
                    last = entry
                    if fx.structural:
                        break
                if last is None:
                    return
                await self._apply(live, fx, cursor=(last.mailbox, last.seq))
            await self._after(live, fx)

    def _name(self, live: Live, member: bytes) -> str:
        return live.names.get(member) or f"member {member.hex()[:6]}"

    def _effects(
        self,
        live: Live,
        events: Sequence[rev.RoomEvent],
        now: float,
        fx: Effects | None = None,
    ) -> Effects:
        """Map room events onto effects (added to ``fx`` if given)."""
        fx = Effects() if fx is None else fx
        room_id = live.record.room_id
        for ev in events:
            if isinstance(ev, rev.MessageReceived):
                self._content_effects(live, fx, ev.sender, ev.content, now)
            elif isinstance(ev, rev.MembersChanged):
                fx.members_changed = True
                fx.events.append(
                    MembersChanged(
                        hex_id(room_id),
                        tuple(hex_id(m) for m in ev.added),
                        tuple(hex_id(m) for m in ev.removed),
                    )
                )
                if ev.removed and live.room.active:
                    fx.moved_to = derive_access(live.room.export_secret, live.room.epoch)
                if ev.added and self._me not in ev.added:
                    fx.announce = True
            elif isinstance(ev, rev.PolicyChanged):
                fx.members_changed = True
                fx.events.append(RoomChanged(hex_id(room_id)))
            elif isinstance(ev, rev.RemovedFromRoom):
                fx.removed = True
                fx.events.append(RemovedFromRoom(hex_id(room_id)))
            elif isinstance(ev, rev.CommitRejected):
                fx.skipped_epochs += 1  # it still took the relay's compare-and-set epoch
                fx.events.append(
                    Alert(
                        hex_id(room_id),
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
                live.dropped[ev.reason] += 1
                _log.info("room content was dropped by the room rules")
            elif isinstance(ev, rev.ForkDetected):
                self._warn(live, fx, "fork", ev.epoch, FORK_TEXT)
            elif isinstance(ev, rev.MessagesMissing):
                self._warn(
                    live,
                    fx,
                    f"missing:{ev.sender.hex()}:{ev.count}",
                    ev.epoch,
                    f"{ev.count} message(s) from {self._name(live, ev.sender)} are missing: "
                    "the relay did not deliver them.",
                )
            elif isinstance(ev, rev.EpochAhead):
                live.behind = max(live.behind or 0, ev.epoch)
                self._warn(
                    live,
                    fx,
                    "behind",
                    ev.epoch,
                    "Changes to this room have not reached you (others are at a later "
                    "stage of the room): the relay may be withholding them. Sending is "
                    "paused until they arrive.",
                )
        if live.behind is not None and live.room.epoch >= live.behind:
            live.behind = None
        return fx

    def message_delivered(self, room_id: bytes, ref: bytes) -> None:
        """The relay acknowledged one of this member's messages (by ref): tell the UI."""
        self._emit(MessageChanged(hex_id(room_id), hex_id(ref)))

    def wire_blob(self, entry: OutboxEntry) -> bytes | None:
        """What a queued post sends: room messages are sealed for their room's mailbox.

        The outbox keeps the bare MLS message, so a post queued before a move is sealed
        for the new mailbox once it is retargeted. None while it still names a
        mailbox its room has left.
        """
        if entry.room_id is None:
            return entry.payload  # an invite drop or a joiner's inbox: sealed already
        live = self._live.get(entry.room_id)
        if live is None or entry.mailbox_id != live.meta.access.mailbox:
            return None
        return seal_room_blob(live.meta.access, entry.payload)

    def _content_effects(
        self, live: Live, fx: Effects, sender: bytes, content: Content, now: float
    ) -> None:
        room_id = live.record.room_id
        # The sender's clock orders the history. One set in the future would keep its
        # messages below everything said after them (and off the newest page), so a
        # message is never placed later than it reached this device.
        sent_at = min(content.sent_at_ms / 1000, now)
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
                reply_author=content.reply_author,
            )
            fx.content.append(m)
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
            fx.content.append(m)
            fx.events.append(NewMessage(self._view(m)))
        # The room layer let an edit, delete or chunk through only if its target is a
        # message of the same sender; the store is asked by (sender, id) all the same.
        elif isinstance(content, FileChunk):
            fx.content.append(Chunk(sender, content.file_id, content.index, content.data))
        elif isinstance(content, Edit):
            fx.content.append(Edited(sender, content.target, content.body, sent_at))
        elif isinstance(content, Delete):
            fx.content.append(Deleted(sender, content.target))
        elif isinstance(content, Reaction):
            fx.content.append(
                Reacted(
                    content.target_author, content.target, sender, content.emoji, content.remove
                )
            )
        elif isinstance(content, Profile):
            if live.names.get(sender) != content.display_name:
                # Say so: a members list on screen otherwise keeps "member 0eae8b".
                # Not MembersChanged: nobody joined or left, only an MLS commit says that.
                fx.events.append(RoomChanged(hex_id(room_id)))
                key = name_key(content.display_name)
                others = {m.member_id for m in live.room.members()} - {sender}
                names = {**live.names, **fx.names}
                if any(m in names and name_key(names[m]) == key for m in others):
                    fx.events.append(Alert(hex_id(room_id), SAME_NAME_TEXT))
            fx.names[sender] = content.display_name
            fx.members_changed = True

    async def _apply(
        self,
        live: Live,
        fx: Effects,
        *,
        cursor: tuple[bytes, int] | None = None,
    ) -> None:
        """Write the room state and every effect in one transaction; then emit the events."""
        room_id = live.record.room_id
        record = live.record
        now = self._now()
        if fx.skipped_epochs and fx.moved_to is None:
            access = live.meta.access
            live.meta = replace(
                live.meta, access=replace(access, skipped=access.skipped + fx.skipped_epochs)
            )
        if fx.moved_to is not None:
            meta = live.meta
            fx.moved_from = meta.access
            live.meta = replace(
                meta, access=fx.moved_to, previous=(*meta.previous, meta.access.mailbox)
            )
            self._forget_positions(live)
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
        applied = _Applied()
        try:
            async with self.store.transaction() as tx:
                await tx.put_room(record)
                for change in fx.content:
                    await self._apply_change(tx, room_id, change, now, applied)
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
        except BaseException:
            # Nothing was written: put the room back as the store has it, so memory and
            # disk never disagree (the entry is read again after a restart).
            self._restore(live)
            raise
        live.record = record
        live.epoch_changed.set()
        for why in applied.dropped:
            live.dropped[why] += 1
            _log.info("room content was dropped: it referred to a message it may not touch")
        for event in (*fx.events, *verification):
            if isinstance(event, NewMessage):
                # Shown once, as stored: a replay of a (sender, id) already here is not new.
                m = applied.stored.get(bytes.fromhex(event.message.id))
                if m is None:
                    continue
                event = NewMessage(self._view(m))
            self._emit(event)
        for ref in applied.changed:  # after NewMessage: one changed in its own batch too
            self._emit(MessageChanged(hex_id(room_id), hex_id(ref)))
        if fx.outbox:
            self._outbox.notify()

    async def _apply_change(
        self, tx: Any, room_id: bytes, change: ContentChange, now: float, out: _Applied
    ) -> None:
        """Write one received message or change, addressed by (author, id), into ``tx``.

        An edit, delete or chunk whose message is not here yet is held until it comes
        (``held_changes``): a relay that puts a delete before its message must not keep
        a retracted message on screen.
        """
        if isinstance(change, Message):
            m, why = await self._checked_reply(tx, change)
            if why is not None:
                out.dropped.append(why)
            new = await tx.add_message(m)
            out.stored[m.ref] = m if new else None
            held = await tx.take_held(room_id, m.sender_id, m.message_id) if new else []
            for raw in held:
                await self._apply_change(tx, room_id, decode_held(raw), now, out)
            if held:  # shown as it now stands (edited, deleted, its file in part)
                out.stored[m.ref] = await tx.message(room_id, m.ref)
            return
        if isinstance(change, Edited | Deleted | Chunk):
            target = change.file_id if isinstance(change, Chunk) else change.target
            if not await tx.has_message(room_id, change.sender, target):
                evicted = await tx.hold_change(
                    room_id, change.sender, target, encode_held(change),
                    at=now, max_count=MAX_HELD_CHANGES, max_bytes=MAX_HELD_BYTES,
                )  # fmt: skip
                out.dropped.extend(["A change waited too long for its message."] * evicted)
                return
        if isinstance(change, Edited):
            ref = message_ref(change.sender, change.target)
            done = await tx.edit_message(
                room_id, change.sender, change.target, change.body, change.at
            )
        elif isinstance(change, Deleted):
            ref = message_ref(change.sender, change.target)
            done = await tx.delete_message(room_id, change.sender, change.target)
        elif isinstance(change, Reacted):
            ref = message_ref(change.author, change.target)
            done = await tx.set_reaction(
                room_id, change.author, change.target, change.sender, change.emoji,
                remove=change.remove, at=now,
            )  # fmt: skip
            if not done:
                out.dropped.append("A reaction named a message its author never sent here.")
        else:
            ref = message_ref(change.sender, change.file_id)
            try:
                await tx.put_attachment_chunk(
                    room_id, change.sender, change.file_id, change.index, change.data
                )
                done = True
            except UnknownRecord:  # its sender's message is a text, or the file was deleted
                done = False
                out.dropped.append("A file chunk named a message of its sender that is no file.")
        if done:
            out.changed[ref] = None

    async def _checked_reply(self, tx: Any, m: Message) -> tuple[Message, str | None]:
        """``m`` without its reply link if that names the wrong author, with the reason.

        A reply names ``(author, id)``. When this room has a message with that id but
        only from someone else, the sender got the author wrong or is trying to pin
        words on a member: the link is dropped (the text stays) and counted. A reply
        to a message not stored here (sent before we joined, or erased) keeps its link.
        """
        if m.reply_to is None or m.reply_author is None:
            return m, None
        if await tx.message(m.room_id, message_ref(m.reply_author, m.reply_to)) is not None:
            return m, None
        if not await tx.message_id_used(m.room_id, m.reply_to):
            return m, None
        return replace(m, reply_to=None, reply_author=None), (
            "A reply named the wrong author for the message it answers."
        )

    def _restore(self, live: Live) -> None:
        """Reset a room in memory to its last saved state."""
        if live.record.state is not None and live.record.mailbox is not None:
            live.room = Room.from_bytes(live.record.state)
            live.meta = RoomMeta.from_bytes(live.record.mailbox)

    async def _sync_members(self, tx: Any, live: Live) -> list[ClientEvent]:
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
                ROLE_NAMES[m.role],
            )
            if stored.key_changed and (before is None or not before.key_changed):
                _log.warning("a verified member's key changed")
                events.append(VerificationChanged(hex_id(room_id), hex_id(member_id), False, True))
        return events

    async def _after(self, live: Live, fx: Effects) -> None:
        """Follow-ups outside the room lock: new mailbox, announcements, leaves."""
        if fx.moved_to is not None:
            await self._moved(live, fx.moved_to)
            if fx.own_commit and fx.moved_from is not None:
                await self._seal_old_mailbox(fx.moved_from)
        if fx.removed:
            self._routes.pop(live.meta.access.mailbox, None)
            await self.connection.unfollow(live.meta.access.mailbox)
            self._live.pop(live.record.room_id, None)
            if live.record.room_id in self._leaving:
                await self._drop_leave(live.record.room_id)  # the leave is complete
            return
        if fx.announce:
            await self._announce(live)
        if fx.commit_leaves:
            self._spawn(self._commit_leaves(live))
        await self._keep_leaving(live)  # a leave whose epoch ended is proposed again

    async def _moved(self, live: Live, access: RoomAccess) -> None:
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

    async def _seal_old_mailbox(self, old: RoomAccess) -> None:
        """Rotate the old mailbox's write and admin keys to keys nobody keeps.

        Its read key stays, so members who are behind can still read up to the
        commit that moved the room; nobody, the removed member included, can post
        there any more.
        """
        sealed = MailboxCapability(
            old.mailbox,
            Ed25519PrivateKey.from_private_bytes(old.read_seed),
            Ed25519PrivateKey.generate(),
            Ed25519PrivateKey.generate(),
        )
        try:
            await self.connection.rotate(access_capability(old), sealed, timeout=REQUEST_SECONDS)
        except TransportError as exc:  # the room has moved anyway; this only closes a door
            _log.info("the old room mailbox could not be sealed (%s)", type(exc).__name__)

    async def _announce(self, live: Live) -> None:
        content = Profile(new_message_id(), int(self._now() * 1000), self.identity.display_name)
        await self._post(live, content, store_message=None)

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
        live = Live(record, room, meta, {self._me: self.identity.display_name})
        async with self.store.transaction() as tx:
            await tx.put_room(record)
            await self._sync_members(tx, live)
        self._live[room.group_id] = live
        await self._follow_room(live)
        self._emit(RoomChanged(hex_id(room.group_id)))
        return await self.summary(room.group_id)

    def _require(self, room_id: bytes) -> Live:
        live = self._live.get(room_id)
        if live is None:
            raise BackchannelError("You are not in that room (any more).")
        return live

    def _require_facilitator(self, live: Live) -> None:
        if live.room.policy.role_of(self._me) is not Role.FACILITATOR:
            raise BackchannelError("Only a facilitator of this room can do that.")

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

    async def _housekeep(self) -> None:
        while not self._closed:
            try:
                await self.erase_expired()
                await self.run_due_updates()
                # Erased messages and superseded keys leave the WAL only at a checkpoint
                # (secure_delete overwrites the pages; TRUNCATE drops the old copies).
                await self.store.checkpoint()
            except Exception as exc:  # housekeeping must never stop the client
                _log.warning("housekeeping failed: %s", type(exc).__name__)
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async def _on_rejected(self, item: OutboxItem, exc: Rejected) -> Verdict:
        """A queued post was refused: retried if the relay may take it later, else
        dropped (its message marked refused, the user told once), or held while the
        room moves (see :class:`~..transport.outbox.Verdict`)."""
        route = self._routes.get(item.mailbox)
        if route is None:
            for live in self._live.values():
                if item.mailbox in live.meta.previous:
                    # The room moved while this was queued: send it to the new mailbox.
                    await self.store.retarget_outbox(live.record.room_id, live.meta.access.mailbox)
                    self._outbox.notify()
                    return Verdict.DROP  # under a new key
        if route is None or route[0] != "room":
            return await self._join_post_refused(item, exc)  # a join request or an answer
        if retry_later(exc):
            _log.info("a post waits: the relay is full or busy (%s)", exc.code)
            return Verdict.RETRY
        room = hex_id(route[1]) if route is not None and route[0] == "room" else None
        # Typed, for a UI that waits on this very post (the command line does).
        self._emit(PostRefused(room, hex_id(item.key), exc.sentence("a message")))
        if route is not None and route[0] == "room" and isinstance(exc, Denied):
            # The room is moving (a removal was committed and its old mailbox sealed):
            # the post goes to the new mailbox once this member reads the move. If the
            # move never comes, the relay is withholding it: say so.
            _log.info("a post waits for the room's move to a new mailbox")
            live = self._live.get(route[1])
            if live is not None:
                self._spawn(self._expect_move(live, item.mailbox))
            return Verdict.HOLD
        # Refused for good: it leaves the outbox, so the posts behind it go on.
        dropped = await self.store.drop_outbox(item.key)
        if dropped is not None and dropped.room_id is not None and dropped.ref is not None:
            self._emit(MessageChanged(hex_id(dropped.room_id), hex_id(dropped.ref)))
        self._emit(Alert(None, exc.sentence("a message")))
        return Verdict.DROP
