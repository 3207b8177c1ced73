"""What a member does in a room: send, edit, delete, files, members, verification, reading."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import mimetypes
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack

from .. import stored_views
from ..errors import BackchannelError
from ..rooms.content import (
    Content,
    Delete,
    Edit,
    Reaction,
    Text,
    new_message_id,
    split_file,
)
from ..rooms.errors import RoomError
from ..rooms.policy import JoinApproval, Role
from ..rooms.room import Room
from ..rooms.safety import safety_number
from ..rooms.watch import fork_check
from ..store.records import Message, OutboxEntry
from ..views import (
    MemberView,
    MessageChanged,
    MessageView,
    NewMessage,
    QueuedPost,
    RoomSummary,
    VerificationChanged,
)
from .state import (
    READ_KEY,
    ROLE_NAMES,
    Live,
    hex_id,
    parse_id,
)

_log = logging.getLogger(__name__)


def saved_name(name: str) -> str:
    """The name a received file is saved under in a directory the user chose.

    Only the last part of the sender's name counts (no ``../``), and a name that
    starts with a dot gets a visible ``_`` before it: a member's ``.bashrc`` must not
    land as a hidden file, nor replace the user's own.
    """
    base = Path(name).name
    if not base:
        return "file"
    return "_" + base if base.startswith(".") else base


def _write_file(target: Path, data: bytes, overwrite: bool) -> None:
    """Write ``data`` to ``target``; unless ``overwrite``, never over an existing file.

    Raises:
        FileExistsError: ``target`` exists (a file, a link, anything) and not ``overwrite``.
        OSError: the system refused.
    """
    with open(target, "wb" if overwrite else "xb") as out:
        out.write(data)


class RoomActions:
    """Mixed into :class:`~backchannel.engine.core.Engine`; uses its state and helpers."""

    # -- rooms: sending ----------------------------------------------------------------------

    def ttl_for(self, entry: OutboxEntry) -> int | None:
        """The relay TTL of a queued post: the room's retention, if any."""
        if entry.room_id is None:
            return None
        live = self._live.get(entry.room_id)
        if live is None or not live.room.policy.retention_seconds:
            return None
        return int(live.room.policy.retention_seconds)

    async def _post(
        self, live: Live, content: Content, *, store_message: Message | None
    ) -> QueuedPost:
        """Queue ``content`` for the room's mailbox; what was queued (its post id)."""
        async with live.lock:
            if not live.room.active:
                raise BackchannelError("You are no longer a member of this room.")
            if live.behind is not None:
                raise BackchannelError(
                    "Changes to this room have not reached you yet; sending is paused "
                    "until they arrive (the relay may be withholding them)."
                )
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
                ref=store_message.ref if store_message is not None else None,
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
        return QueuedPost(hex_id(live.record.room_id), hex_id(entry.idempotency_key))

    async def send_text(self, room_id: bytes, text: str, reply_to: str | None) -> MessageView:
        live = self._require(room_id)
        quoted = await self._message_by_ref(room_id, reply_to) if reply_to else None
        reply = (quoted.message_id, quoted.sender_id) if quoted is not None else (None, None)
        now = self._now()
        try:
            content = Text(new_message_id(), int(now * 1000), text, *reply)
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
            reply[0],
            outgoing=True,
            reply_author=reply[1],
        )
        await self._post(live, content, store_message=m)
        view = self._view(m)
        self._emit(NewMessage(view))
        return view

    async def edit(self, room_id: bytes, message: str, text: str) -> QueuedPost:
        live = self._require(room_id)
        target = await self._own_message(room_id, message)
        if target.kind != "text":
            raise BackchannelError("Only text messages can be edited.")
        now = self._now()
        try:
            content = Edit(new_message_id(), int(now * 1000), target.message_id, text)
        except (TypeError, ValueError) as exc:
            raise BackchannelError(f"This edit cannot be sent: {exc}.") from None
        queued = await self._post(live, content, store_message=None)
        await self.store.edit_message(room_id, self._me, target.message_id, text, now)
        self._emit(MessageChanged(hex_id(room_id), hex_id(target.ref)))
        return queued

    async def delete(self, room_id: bytes, message: str) -> QueuedPost:
        live = self._require(room_id)
        target = await self._own_message(room_id, message)
        now = self._now()
        content = Delete(new_message_id(), int(now * 1000), target.message_id)
        queued = await self._post(live, content, store_message=None)
        await self.store.delete_message(room_id, self._me, target.message_id)
        self._emit(MessageChanged(hex_id(room_id), hex_id(target.ref)))
        return queued

    async def react(self, room_id: bytes, message: str, emoji: str, remove: bool) -> QueuedPost:
        live = self._require(room_id)
        target = await self._message_by_ref(room_id, message)
        if target.deleted:
            raise BackchannelError("That message was deleted.")
        now = self._now()
        try:
            content = Reaction(
                new_message_id(),
                int(now * 1000),
                target.message_id,
                target.sender_id,
                emoji,
                remove,
            )
        except (TypeError, ValueError) as exc:
            raise BackchannelError(f"That reaction cannot be sent: {exc}.") from None
        queued = await self._post(live, content, store_message=None)
        await self.store.set_reaction(
            room_id, target.sender_id, target.message_id, self._me, emoji, remove=remove, at=now
        )
        self._emit(MessageChanged(hex_id(room_id), hex_id(target.ref)))
        return queued

    async def _message_by_ref(self, room_id: bytes, message: str) -> Message:
        """The stored message a UI names (by its ref: author and id together)."""
        stored = await self.store.message(room_id, parse_id(message, "message"))
        if stored is None:
            raise BackchannelError("There is no such message in this room.")
        return stored

    async def _own_message(self, room_id: bytes, message: str) -> Message:
        stored = await self.store.message(room_id, parse_id(message, "message"))
        if stored is None or stored.sender_id != self._me:
            raise BackchannelError("You can only change your own messages.")
        return stored

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
                room_id, self._me, manifest.message_id, chunk.index, chunk.data
            )
        view = self._view(m, complete=True)
        self._emit(NewMessage(view))
        return view

    async def save_file(
        self, room_id: bytes, message: str, destination: Path, overwrite: bool = False
    ) -> Path:
        stored = await self.store.message(room_id, parse_id(message, "message"))
        if stored is None or stored.kind != "file" or stored.attachments is None:
            raise BackchannelError("That message has no file.")
        meta = msgpack.unpackb(stored.attachments, raw=False)
        data = await self.store.attachment(room_id, stored.ref)
        if len(data) != meta["size"] or not hmac.compare_digest(
            hashlib.sha256(data).digest(), bytes(meta["sha256"])
        ):
            raise BackchannelError(
                "The file has not fully arrived yet (or failed its integrity check); "
                "sync and try again."
            )
        is_dir = await asyncio.to_thread(destination.is_dir)
        target = destination / saved_name(str(meta["name"])) if is_dir else destination
        try:
            await asyncio.to_thread(_write_file, target, data, overwrite)
        except FileExistsError:
            raise BackchannelError(
                f"{target} exists already: choose another name, or replace it "
                "(the command line's --overwrite)."
            ) from None
        except OSError as exc:
            raise BackchannelError(f"Cannot write {target}: {exc.strerror}.") from None
        return target

    # -- members ---------------------------------------------------------------------------

    async def _load_names(self, live: Live) -> None:
        for m in await self.store.members(live.record.room_id):
            live.names[m.member_id] = m.display_name
        live.names[self._me] = self.identity.display_name

    async def members(self, room_id: bytes) -> list[MemberView]:
        self._require(room_id)
        return await stored_views.member_views(self.store, self._me, room_id)

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
            new_role = {v: k for k, v in ROLE_NAMES.items()}[role]
        except KeyError:
            raise BackchannelError("A role is facilitator, participant or observer.") from None

        def make(r: Room, now: int) -> Any:
            try:
                policy = r.policy.with_role(target, new_role)
            except ValueError as exc:
                raise BackchannelError(f"That role change is not possible: {exc}") from None
            return r.change_policy(policy, now=now)

        await self._commit(live, make)

    async def update_room(
        self,
        room_id: bytes,
        title: str | None,
        approval: str | None,
        retention_seconds: int | None,
    ) -> None:
        live = self._require(room_id)
        self._require_facilitator(live)
        modes = {"manual": JoinApproval.MANUAL, "auto": JoinApproval.AUTOMATIC}
        if approval is not None and approval not in modes:
            raise BackchannelError("Approval is 'manual' or 'auto'.")

        def make(r: Room, now: int) -> Any:
            changes: dict[str, Any] = {}
            if title is not None:
                changes["title"] = title.strip()
            if approval is not None:
                changes["approval"] = modes[approval]
            if retention_seconds is not None:
                changes["retention_seconds"] = retention_seconds
            try:
                policy = replace(r.policy, **changes)
            except (TypeError, ValueError) as exc:
                raise BackchannelError(f"Those room settings are not possible: {exc}") from None
            return r.change_policy(policy, now=now)

        await self._commit(live, make)

    def room_code(self, room_id: bytes) -> str:
        live = self._require(room_id)
        check = fork_check(live.room.epoch_authenticator())[1:]
        digits = "".join(
            f"{int.from_bytes(check[i : i + 3], 'big') % 100000:05d}" for i in range(0, 15, 3)
        )
        return " ".join(digits[i : i + 5] for i in range(0, 25, 5))

    async def leave(self, room_id: bytes) -> QueuedPost:
        live = self._require(room_id)
        async with live.lock:
            try:
                wire = live.room.leave()
            except RoomError as exc:
                raise BackchannelError(str(exc)) from None
            state = live.room.to_bytes()
            key = os.urandom(16)
            async with self.store.transaction() as tx:
                await tx.set_room_state(room_id, state)
                await tx.enqueue(
                    OutboxEntry(key, live.meta.access.mailbox, wire, self._now(), room_id=room_id)
                )
                await self._mark_leaving(tx, room_id)  # proposed again until committed
            live.record = replace(live.record, state=state)
            self._leave_asked(room_id)
        self._outbox.notify()
        return QueuedPost(hex_id(room_id), hex_id(key))

    async def safety_number(self, room_id: bytes, member: str) -> tuple[MemberView, str]:
        self._require(room_id)
        target = await self._member(room_id, member)
        stored = await self.store.member(room_id, target)
        assert stored is not None
        number = safety_number((self._me, self.identity.public_key()), (target, stored.fingerprint))
        view = MemberView(
            hex_id(target),
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
        self._emit(VerificationChanged(hex_id(room_id), hex_id(target), True, False))
        return MemberView(
            hex_id(target),
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

    def dropped_content(self, room_id: bytes) -> dict[str, int]:
        return dict(self._require(room_id).dropped)

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
            hex_id(room_id),
            policy.title,
            ROLE_NAMES[policy.role_of(self._me)],
            len(live.room.members()),
            "auto" if policy.approval is JoinApproval.AUTOMATIC else "manual",
            policy.retention_seconds,
            live.room.active,
            pending,
            await self.store.unread_count(
                room_id, await stored_views.last_read(self.store, room_id)
            ),
        )

    async def mark_read(self, room_id: bytes) -> None:
        self._require(room_id)
        await self.store.set_setting(READ_KEY + hex_id(room_id), repr(self._now()).encode())

    async def summaries(self) -> list[RoomSummary]:
        return [await self.summary(room_id) for room_id in self._live]

    def _view(
        self,
        m: Message,
        *,
        complete: bool | None = None,
        reactions: Sequence[tuple[str, bytes]] = (),
    ) -> MessageView:
        live = self._live.get(m.room_id)
        names = None
        if live is not None:
            current = (member.member_id for member in live.room.members())
            names = {mid: live.names[mid] for mid in current if mid in live.names}
        return stored_views.message_view(
            m, self._me, complete=complete, reactions=reactions, names=names
        )

    async def _views(self, messages: Sequence[Message]) -> list[MessageView]:
        return await stored_views.message_views(self.store, self._me, messages)

    async def message(self, room_id: bytes, message: str) -> MessageView | None:
        stored = await self.store.message(room_id, parse_id(message, "message"))
        return None if stored is None else (await self._views([stored]))[0]

    async def history(self, room_id: bytes, limit: int, before: str | None) -> list[MessageView]:
        anchor = None
        if before is not None:
            anchor = await self.store.message(room_id, parse_id(before, "message"))
        return await self._views(await self.store.history(room_id, limit=limit, before=anchor))

    async def search(self, room_id: bytes, query: str, limit: int) -> list[MessageView]:
        return await self._views(await self.store.search(room_id, query, limit=limit))
