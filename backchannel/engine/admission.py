"""Admission checks of join requests, kept apart from the invite flows that use them.

A request's inbox must be a mailbox new to this device; the uses of an invite are
counted by settings written with the Add commits that admitted joiners; automatic
answers are rate-limited per link; an answer the relay refuses is dropped, never
retried for long (docs/room-protocol.md §4.5, §4.6).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field

from ..caps import capability
from ..errors import BackchannelError
from ..records import ReplyEntry, RequestEntry
from ..transport.errors import Rejected
from ..transport.outbox import OutboxItem, Verdict, retry_later
from ..views import Alert
from .state import JOINING_KEY, REQUEST_KEY, WRITE_CAP_KEY, hex_id

__all__ = [
    "AUTO_REPLIES",
    "AUTO_REPLY_SECONDS",
    "MISUSE_TEXT",
    "REPLY_KEY",
    "USE_KEY",
    "Admission",
    "AdmissionRefused",
]

_log = logging.getLogger(__name__)

#: Automatic answers ("no": the link expired, is used up or revoked, or the request
#: cannot be admitted) sent per link within :data:`AUTO_REPLY_SECONDS`; requests beyond
#: that get none, so a link holder cannot fill the facilitator's outbox.
AUTO_REPLIES = 5
AUTO_REPLY_SECONDS = 60.0
#: Setting per joiner admitted by an invite: ``USE_KEY`` + invite id + ``/`` + request id,
#: written with the Add commit that admitted them (the invite's use count).
USE_KEY = "invite-use/"
#: Setting per answer to a join request still in the outbox (a :class:`ReplyEntry`).
REPLY_KEY = "reply/"

MISUSE_TEXT = (
    "A join request on one of your invites named a mailbox this device already uses as "
    "its reply address, which only a modified client does. It was turned away; your "
    "rooms and invites are unaffected."
)


class AdmissionRefused(BackchannelError):
    """This request cannot be admitted: the invite is used up or revoked, or the room
    refuses the Add (a malformed key package, an identity already in the room)."""


@dataclass(slots=True)
class _Admission:
    """What the admission flows keep in memory (per started engine)."""

    #: invite id -> times of the automatic answers sent within the window
    replies: dict[bytes, collections.deque[float]] = field(default_factory=dict)
    #: invite id -> lock: one approval of an invite at a time
    locks: dict[bytes, asyncio.Lock] = field(default_factory=dict)
    #: invites whose misuse was reported already (once per run)
    told: set[bytes] = field(default_factory=set)


class Admission:
    """Mixed into :class:`~backchannel.engine.invites.InviteFlows`; uses the engine's
    state and helpers."""

    def _admission(self) -> _Admission:
        state: _Admission | None = getattr(self, "_admission_state", None)
        if state is None:
            state = _Admission()
            self._admission_state = state
        return state

    async def _mailbox_in_use(self, mailbox: bytes) -> bool:
        """Whether ``mailbox`` is one this device uses or answers to already: a room's
        (now or before it moved), an invite drop, an inbox of its own joins, or the
        inbox of a request waiting or answered."""
        if self.connection.holds(mailbox) or mailbox in self._routes:
            return True
        for live in self._live.values():
            if mailbox == live.meta.access.mailbox or mailbox in live.meta.previous:
                return True
        if await self.store.get_setting(WRITE_CAP_KEY + hex_id(mailbox)) is not None:
            return True
        requests = await self.store.settings_with_prefix(REQUEST_KEY)
        return any(RequestEntry.from_bytes(value).inbox == mailbox for _k, value in requests)

    def _misused(self, room_id: bytes, invite_id: bytes) -> None:
        """A request named a mailbox of this device as its inbox: say so, once per invite."""
        told = self._admission().told
        if invite_id in told:
            _log.debug("a join request named a mailbox this device uses; turned away")
            return
        _log.warning("a join request named a mailbox this device uses; turned away")
        told.add(invite_id)
        self._emit(Alert(hex_id(room_id), MISUSE_TEXT))

    def _may_auto_reply(self, invite_id: bytes, now: float) -> bool:
        """Whether one more automatic answer on this link fits in the rate limit."""
        sent = self._admission().replies.setdefault(invite_id, collections.deque())
        while sent and sent[0] <= now - AUTO_REPLY_SECONDS:
            sent.popleft()
        if len(sent) >= AUTO_REPLIES:
            _log.debug("an automatic answer to a join request was left out (rate limit)")
            return False
        sent.append(now)
        return True

    async def _uses(self, invite_id: bytes) -> int:
        """Joiners this invite admitted (their Add commits counted, see ``_approved``)."""
        return len(await self.store.settings_with_prefix(f"{USE_KEY}{hex_id(invite_id)}/"))

    async def _waiting(self, invite_id: bytes) -> int:
        """Requests of this invite waiting for a decision."""
        values = await self.store.settings_with_prefix(REQUEST_KEY)
        return sum(RequestEntry.from_bytes(v).invite_id == invite_id for _k, v in values)

    async def _in_flight(self, invite_id: bytes) -> int:
        """Adds of this invite's requesters built and saved, not yet accepted (a crash or
        a lost connection left them to be offered again)."""
        count = 0
        for live in self._live.values():
            action = live.meta.pending_action or {}
            if "approve" in action:
                raw = await self.store.get_setting(REQUEST_KEY + hex_id(bytes(action["approve"])))
                if raw is not None and RequestEntry.from_bytes(raw).invite_id == invite_id:
                    count += 1
        return count

    async def _join_post_refused(self, item: OutboxItem, exc: Rejected) -> Verdict:
        """The relay refused a join request (this device joining) or an answer to one
        (this device facilitating). An answer is never retried for long: a "no" is
        dropped at once, a Welcome once the refusal is final (the facilitator is told);
        a join request the relay may take later is retried."""
        raw = await self.store.get_setting(REPLY_KEY + hex_id(item.key))
        note = ReplyEntry.from_bytes(raw) if raw is not None else None
        joining = await self.store.get_setting(JOINING_KEY + hex_id(item.key)) is not None
        if (joining or (note is not None and note.kind == "welcome")) and retry_later(exc):
            return Verdict.RETRY
        await self.store.drop_outbox(item.key)
        await self._release_reply(item.mailbox, item.key)
        _log.info("an invitation post was refused by the relay (%s) and dropped", exc.code)
        if joining:
            self._emit(
                Alert(
                    None,
                    f"Your request to join could not be delivered: {exc.reason}. Ask the "
                    "facilitator for a new invite link.",
                )
            )
        elif note is not None and note.kind == "welcome":
            self._emit(
                Alert(
                    hex_id(note.room_id),
                    f"The invitation of someone you approved could not be delivered: "
                    f"{exc.reason}. They are listed as a member but cannot read the room; "
                    "remove them and send a new invite.",
                )
            )
        return Verdict.DROP

    async def _release_reply(self, mailbox: bytes, key: bytes) -> None:
        """A join request or answer left the outbox (sent or dropped): forget what it
        needed, the write key of its mailbox once nothing else is queued for it."""
        await self.store.delete_setting(REPLY_KEY + hex_id(key))
        if await self.store.pending(mailbox, limit=1):
            return
        raw = await self.store.get_setting(WRITE_CAP_KEY + hex_id(mailbox))
        if raw is None:
            return
        await self.store.delete_setting(WRITE_CAP_KEY + hex_id(mailbox))
        self.connection.unregister(capability(mailbox, write=raw[16:]))
