"""Invites, join requests and joining: the facilitator's and the joiner's side.

A request is screened and its inbox checked (:mod:`.admission`) before anything of it
is kept; a use of an invite is counted in the transaction of the Add commit that
admits the joiner, and approvals of one invite run one at a time
(docs/room-protocol.md §4.5, §4.6).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from typing import Any

from ..caps import access_capability, capability, new_seed
from ..errors import BackchannelError
from ..mls.key_package_ops import KeyPackageBundle, KeyPackageIn
from ..records import InviteEntry, JoiningEntry, ReplyEntry, RequestEntry, RoomMeta
from ..rooms.access import JoinReply, RoomAccess, open_join_reply, seal_join_reply
from ..rooms.errors import InviteError, JoinRequestReplayed, RoomError
from ..rooms.invites import (
    Invite,
    InviteRecord,
    JoinRequest,
    create_invite,
    join_request_invite_id,
    open_join_request,
    parse_invite,
    seal_join_request,
)
from ..rooms.policy import JoinApproval
from ..rooms.room import Room
from ..rooms.safety import safety_number
from ..store.records import OutboxEntry
from ..store.records import Room as RoomRecord
from ..transport.errors import TransportError
from ..transport.events import Entry
from ..views import (
    Alert,
    JoinAnswered,
    JoinRequested,
    RequestView,
    RoomChanged,
)
from .admission import REPLY_KEY, USE_KEY, Admission, AdmissionRefused
from .state import (
    INVITE_KEY,
    JOINING_KEY,
    REQUEST_KEY,
    REQUEST_SECONDS,
    WRITE_CAP_KEY,
    Effects,
    Live,
    hex_id,
    parse_id,
)

_log = logging.getLogger(__name__)


class InviteFlows(Admission):
    """Mixed into :class:`~backchannel.engine.core.Engine`; uses its state and helpers."""

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
        await self.store.set_setting(INVITE_KEY + hex_id(record.invite_id), entry.to_bytes())
        await self._follow_drop(entry)
        return invite.to_link()

    async def _drop_entry(self, invite_id: bytes, entry: Entry) -> None:
        raw = await self.store.get_setting(INVITE_KEY + hex_id(invite_id))
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
        # The inbox is written to with a key the requester chose: never one of ours.
        in_use = await self._mailbox_in_use(request.inbox)
        try:
            screened = record.screen(
                request,
                now=now,
                used=await self._uses(invite_id),
                pending=await self._waiting(invite_id),
            )
        except JoinRequestReplayed:
            await self.store.set_cursor(entry.mailbox, entry.seq)
            return
        except InviteError:
            # Expired, used up or revoked: tell the joiner rather than leave them waiting,
            # a few times per link and only at an inbox of theirs.
            if in_use:
                self._misused(invite.room_id, invite_id)
            elif self._may_auto_reply(invite_id, now):
                await self._reply(
                    record.secret,
                    request.request_id,
                    request.inbox,
                    request.inbox_write_seed,
                    JoinReply(False),
                    ReplyEntry("auto", invite.room_id),
                )
            await self.store.set_cursor(entry.mailbox, entry.seq)
            return
        if in_use:
            async with self.store.transaction() as tx:  # seen, so a replay is ignored
                await tx.set_setting(
                    INVITE_KEY + hex_id(invite_id),
                    replace(invite, record=screened.to_bytes()).to_bytes(),
                )
                await tx.set_cursor(entry.mailbox, entry.seq)
            self._misused(invite.room_id, invite_id)
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
                INVITE_KEY + hex_id(invite_id),
                replace(invite, record=screened.to_bytes()).to_bytes(),
            )
            await tx.set_setting(REQUEST_KEY + hex_id(request.request_id), req.to_bytes())
            await tx.set_cursor(entry.mailbox, entry.seq)
        view = self._request_view(req)
        self._emit(JoinRequested(view))
        if live is not None and live.room.policy.approval is JoinApproval.AUTOMATIC:
            self._spawn(self._auto_approve(invite.room_id, request.request_id))

    def _request_view(self, req: RequestEntry) -> RequestView:

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
            hex_id(req.request_id), hex_id(req.room_id), req.display_name, number, req.received_at
        )

    async def requests(self, room_id: bytes) -> list[RequestView]:
        out = []
        for _key, value in await self.store.settings_with_prefix(REQUEST_KEY):
            req = RequestEntry.from_bytes(value)
            if req.room_id == room_id:
                out.append(self._request_view(req))
        return sorted(out, key=lambda r: r.received_at)

    async def _request(self, room_id: bytes, request: str) -> RequestEntry:
        rid = parse_id(request, "request")
        raw = await self.store.get_setting(REQUEST_KEY + hex_id(rid))
        if raw is None:
            raise BackchannelError("There is no such join request (already answered?).")
        req = RequestEntry.from_bytes(raw)
        if req.room_id != room_id:
            raise BackchannelError("That join request is for another room.")
        return req

    async def approve(self, room_id: bytes, request: str) -> None:
        """Admit a requester: commit the Add, then (``_approved``) count the use and
        queue the Welcome. Nothing of the request is kept before the Add commits.

        Raises:
            AdmissionRefused: the invite is used up or revoked, or the room refuses the Add.
        """
        live = self._require(room_id)
        self._require_facilitator(live)
        invite_id = (await self._request(room_id, request)).invite_id
        # One approval of an invite at a time, each counting the uses committed and the
        # Adds in flight: two approvals of a single-use link can never both pass.
        lock = self._admission().locks.setdefault(invite_id, asyncio.Lock())
        async with lock:
            req = await self._request(room_id, request)  # not answered meanwhile
            raw = await self.store.get_setting(INVITE_KEY + hex_id(req.invite_id))
            if raw is not None:
                try:
                    InviteRecord.from_bytes(InviteEntry.from_bytes(raw).record).admit(
                        used=await self._uses(req.invite_id),
                        reserved=await self._in_flight(req.invite_id),
                    )
                except InviteError as exc:
                    raise AdmissionRefused(str(exc)) from None
            refused: list[RoomError] = []

            def add(room: Room, now: int) -> Any:
                try:
                    return room.add_members([req.key_package], now=now)
                except RoomError as exc:
                    refused.append(exc)
                    raise

            try:
                await self._commit(live, add, {"approve": req.request_id})
            except BackchannelError as exc:
                if refused:
                    raise AdmissionRefused(str(exc)) from None
                raise

    async def _auto_approve(self, room_id: bytes, rid: bytes) -> None:
        """Approve a request in a room that admits automatically; one that cannot be
        admitted is turned away (told so within the link's rate limit)."""
        try:
            await self.approve(room_id, hex_id(rid))
        except AdmissionRefused:
            _log.info("a join request could not be admitted automatically; turned away")
            raw = await self.store.get_setting(REQUEST_KEY + hex_id(rid))
            if raw is None:
                return
            req = RequestEntry.from_bytes(raw)
            if self._may_auto_reply(req.invite_id, self._now()):
                secret = await self._invite_secret(req.invite_id)
                note = ReplyEntry("auto", room_id)
                await self._reply(
                    secret, rid, req.inbox, req.inbox_write_seed, JoinReply(False), note, req
                )
            else:
                await self.store.delete_setting(REQUEST_KEY + hex_id(rid))

    def _member_of(self, req: RequestEntry) -> bytes:

        try:
            cred = KeyPackageIn.from_bytes(req.key_package).key_package.leaf_node.credential
            return bytes(cred.identity)  # type: ignore[attr-defined]
        except Exception:
            return b""

    async def _approved(
        self, live: Live, fx: Effects, rid: bytes, welcome: bytes, seq: int, access: RoomAccess
    ) -> None:
        """The Add commit of request ``rid`` was accepted at ``seq``: queue the Welcome."""
        key = REQUEST_KEY + hex_id(rid)
        raw = await self.store.get_setting(key)
        if raw is None:
            return  # answered before a crash: the reply is already queued
        req = RequestEntry.from_bytes(raw)
        secret = await self._invite_secret(req.invite_id)
        blob = seal_join_reply(
            secret, req.inbox_write_seed, rid, JoinReply(True, welcome, access, seq)
        )
        if not self.connection.register(capability(req.inbox, write=req.inbox_write_seed)):
            # The inbox was new on arrival and is checked again here: not sent, and said.
            _log.warning("an approved joiner's inbox is a mailbox in use; Welcome not sent")
            fx.events.append(
                Alert(
                    hex_id(live.record.room_id),
                    "The invitation of someone you approved was not sent: their request "
                    "named a mailbox this device already uses. They are listed as a member "
                    "but cannot read the room; remove them and send a new invite.",
                )
            )
        else:
            out = os.urandom(16)  # the outbox key is ours, never the requester's id
            fx.settings[WRITE_CAP_KEY + hex_id(req.inbox)] = req.inbox + req.inbox_write_seed
            fx.settings[REPLY_KEY + hex_id(out)] = ReplyEntry(
                "welcome", live.record.room_id
            ).to_bytes()
            fx.outbox.append(OutboxEntry(out, req.inbox, blob, self._now()))
        fx.settings[key] = None
        # The invite's use, counted in the transaction of the Add commit that admitted them.
        fx.settings[f"{USE_KEY}{hex_id(req.invite_id)}/{hex_id(rid)}"] = b"\x01"
        fx.names[self._member_of(req)] = req.display_name
        fx.members_changed = True
        fx.events.append(RoomChanged(hex_id(live.record.room_id)))

    async def _reply(
        self,
        secret: bytes,
        rid: bytes,
        inbox: bytes,
        seed: bytes,
        reply: JoinReply,
        note: ReplyEntry,
        answered: RequestEntry | None = None,
    ) -> None:
        """Queue ``reply`` for the requester's inbox (and forget ``answered``, in one
        transaction). The inbox's write key is added to those held, never in place of
        one: if it conflicts with a key held, nothing is sent."""
        blob = seal_join_reply(secret, seed, rid, reply)
        if not self.connection.register(capability(inbox, write=seed)):
            _log.warning("an answer to a join request was not sent: its inbox is in use")
            if answered is not None:
                await self.store.delete_setting(REQUEST_KEY + hex_id(answered.request_id))
            return
        out = os.urandom(16)  # the outbox key is ours, never the requester's id
        async with self.store.transaction() as tx:
            await tx.set_setting(WRITE_CAP_KEY + hex_id(inbox), inbox + seed)
            await tx.set_setting(REPLY_KEY + hex_id(out), note.to_bytes())
            await tx.enqueue(OutboxEntry(out, inbox, blob, self._now()))
            if answered is not None:
                await tx.delete_setting(REQUEST_KEY + hex_id(answered.request_id))
        self._outbox.notify()

    async def deny(self, room_id: bytes, request: str) -> None:
        live = self._require(room_id)
        self._require_facilitator(live)
        req = await self._request(room_id, request)
        secret = await self._invite_secret(req.invite_id)
        note = ReplyEntry("deny", room_id)
        await self._reply(
            secret, req.request_id, req.inbox, req.inbox_write_seed, JoinReply(False), note, req
        )

    async def _invite_secret(self, invite_id: bytes) -> bytes:
        raw = await self.store.get_setting(INVITE_KEY + hex_id(invite_id))
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
        if not self.connection.register(
            capability(invite.drop_mailbox, write=invite.drop_write_seed)
        ):
            raise BackchannelError(
                "This invite link names a mailbox this device already uses for something "
                "else, so it cannot be used. Ask the facilitator for a new link."
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
        async with self.store.transaction() as tx:
            await tx.set_setting(JOINING_KEY + hex_id(rid), joining.to_bytes())
            await tx.set_setting(
                WRITE_CAP_KEY + hex_id(invite.drop_mailbox),
                invite.drop_mailbox + invite.drop_write_seed,
            )
            await tx.enqueue(OutboxEntry(rid, invite.drop_mailbox, blob, now))
        await self._follow_inbox(joining)
        self._outbox.notify()
        return hex_id(rid)

    async def pending_joins(self) -> list[str]:
        return [
            k[len(JOINING_KEY) :] for k, _ in await self.store.settings_with_prefix(JOINING_KEY)
        ]

    async def wait_join(self, request_id: str, timeout: float) -> JoinAnswered | None:
        rid = parse_id(request_id, "request")
        if rid in self._answered:
            return self._answered[rid]
        future = self._join_answers.setdefault(rid, asyncio.get_running_loop().create_future())
        if await self.store.get_setting(JOINING_KEY + hex_id(rid)) is None:
            return self._answered.get(rid)  # answered meanwhile, or never asked here
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return None

    async def _inbox_entry(self, rid: bytes, entry: Entry) -> None:
        raw = await self.store.get_setting(JOINING_KEY + hex_id(rid))
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
            await self.store.delete_setting(JOINING_KEY + hex_id(rid))
            self._routes.pop(joining.inbox, None)
            await self.connection.unfollow(joining.inbox)
            self._answer(JoinAnswered(hex_id(rid), False))
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
        old = await self.store.room(room.group_id)
        if room.group_id in self._live or (old is not None and old.joined):
            # A Welcome must never replace a room this profile is in (E04).
            _log.warning("a Welcome named a room id already in use; refused")
            self._emit(
                Alert(
                    None,
                    "An invitation was refused: it named a room you already have. Ask the "
                    "facilitator for a new invite.",
                )
            )
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
        live = Live(record, room, meta, {self._me: self.identity.display_name})
        async with self.store.transaction() as tx:
            if old is not None:
                # Admitted again to a room this profile left or was removed from: the
                # old state and history go to an archive, so nothing of the old
                # membership (or of a look-alike group's) mixes with the new one.
                await tx.archive_room(room.group_id, os.urandom(16))
            await tx.put_room(record)
            await tx.set_cursor(access.mailbox, reply.after, room_id=room.group_id)
            await tx.delete_setting(JOINING_KEY + hex_id(rid))
            await self._sync_members(tx, live)
        # The room's capability is registered before anyone can act on the room.
        self.connection.register(access_capability(access))
        self._live[room.group_id] = live
        self._emit(RoomChanged(hex_id(room.group_id)))
        self._answer(JoinAnswered(hex_id(rid), True, hex_id(room.group_id)))
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
