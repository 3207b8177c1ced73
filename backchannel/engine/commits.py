"""A member's own commits: offered with the relay's epoch compare-and-set, lost races
retried, a saved pending commit offered again after a crash, scheduled self-updates;
and leaving, which someone else's commit completes.

See docs/room-protocol.md §12 ("Own commits", "Leaving").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..errors import BackchannelError
from ..rooms.access import seal_room_blob
from ..rooms.errors import RoomError
from ..rooms.room import Room
from ..store.records import OutboxEntry
from ..transport.errors import StaleEpoch, TransportError
from ..views import Alert, MembersChanged
from .state import CATCH_UP_SECONDS, COMMIT_ATTEMPTS, REQUEST_SECONDS, Effects, Live, hex_id

#: Setting per room this member asked to leave, until a commit removes it.
LEAVING_KEY = "leaving/"


class Commits:
    """Mixed into :class:`~backchannel.engine.core.Engine`; uses its state and helpers."""

    async def _commit(
        self,
        live: Live,
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
                saved = replace(
                    live.record, state=live.room.to_bytes(), mailbox=live.meta.to_bytes()
                )
                try:
                    await self.store.put_room(saved)
                except BaseException:
                    self._restore(live)  # the commit was never saved, so never offered
                    raise
                live.record = saved
                won, fx = await self._offer(live)
            if won:
                await self._after(live, fx)
                return
            relay = live.relay_epoch
            if relay is None or relay > live.meta.access.relay_epoch(epoch):
                await self._catch_up(live, epoch)  # a winning commit should be on its way
            await self._resync_relay_epoch(live, epoch)
        raise BackchannelError(
            f"Your change to this room was not sequenced by the relay after "
            f"{COMMIT_ATTEMPTS} tries (other changes kept winning the race, or the relay "
            "keeps refusing it); try again in a moment."
        )

    async def _resync_relay_epoch(self, live: Live, epoch: int) -> None:
        """The relay's epoch and the room's disagree: set the offset from the relay's answer.

        Honest members count refused commits as they read them (``skipped``), assuming
        each took a relay epoch. This corrects the count from the relay's own answer
        when one was appended without the compare-and-set (too many counted), or took
        an epoch without reaching this member as a commit (too few).
        """
        relay = live.relay_epoch
        live.relay_epoch = None
        if relay is None or live.room.epoch != epoch:
            return
        async with live.lock:
            access = live.meta.access
            skipped = relay - (epoch - access.base_epoch)
            if live.room.epoch != epoch or skipped < 0 or skipped == access.skipped:
                return
            live.meta = replace(live.meta, access=replace(access, skipped=skipped))
            await self._apply(live, Effects())

    async def _catch_up(self, live: Live, epoch: int) -> None:
        deadline = asyncio.get_running_loop().time() + CATCH_UP_SECONDS
        while live.room.epoch <= epoch:
            live.epoch_changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(live.epoch_changed.wait(), remaining)

    async def _offer(self, live: Live) -> tuple[bool, Effects]:
        """Offer the pending commit (lock held). Returns whether it won, and its effects."""
        pending = live.room.pending
        key = live.meta.pending_key
        if pending is None or key is None:
            live.meta = replace(live.meta, pending_key=None, pending_action=None)
            await self._apply(live, Effects())
            return False, Effects()
        access = live.meta.access
        blob = seal_room_blob(access, pending.commit)
        try:
            result = await self.connection.append(
                access.mailbox,
                blob,
                key,
                epoch=access.relay_epoch(pending.epoch),
                timeout=REQUEST_SECONDS,
            )
        except StaleEpoch as exc:
            live.relay_epoch = exc.epoch
            live.room.discard_pending()
            live.meta = replace(live.meta, pending_key=None, pending_action=None)
            await self._apply(live, Effects())
            return False, Effects()
        except TransportError as exc:
            # Unknown outcome (offline, refused): keep the pending commit; it is
            # offered again with the same key when the client next starts.
            raise BackchannelError(
                f"Your change to this room was not sequenced by the relay "
                f"({exc.__class__.__name__}); it will be retried the next time this "
                "profile connects."
            ) from None
        self.expect_echo(access.mailbox, result.seq, blob)
        welcome = pending.welcome
        action = live.meta.pending_action or {}
        events = live.room.confirm_pending()
        live.meta = replace(
            live.meta, pending_key=None, pending_action=None, last_update=self._now()
        )
        fx = self._effects(live, events, self._now())
        fx.own_commit = True
        if "approve" in action and welcome is not None:
            await self._approved(live, fx, bytes(action["approve"]), welcome, result.seq, access)
        await self._apply(live, fx)
        if any(isinstance(e, MembersChanged) and e.added for e in fx.events):
            fx.announce = True  # newcomers learn every name from its owner, the committer too
        return True, fx

    async def _recover_pending(self, live: Live) -> None:
        async with live.lock:
            won, fx = await self._offer(live)
        if won:
            await self._after(live, fx)

    # -- scheduled self-updates ------------------------------------------------------------

    async def run_due_updates(self) -> None:
        """Start a self-update in every room where this member's last one is due."""
        for live in list(self._live.values()):
            due = live.meta.last_update + self._self_update_seconds
            if live.room.active and self._now() >= due and live.room.pending is None:
                self._spawn(self._scheduled_update(live))

    async def _scheduled_update(self, live: Live) -> None:
        """A self-update for post-compromise security; a failure is the user's to know."""
        try:
            await self._commit(live, lambda r, now: r.self_update(now=now))
        except BackchannelError as exc:
            overdue = self._now() - live.meta.last_update - self._self_update_seconds
            self._emit(
                Alert(
                    hex_id(live.record.room_id),
                    f"Your scheduled key update was not sequenced ({exc.user_message()}) "
                    f"It is {overdue / 86400:.1f} days overdue; until it goes through, a "
                    "past compromise of this device is not healed in this room.",
                )
            )

    # -- leaving ---------------------------------------------------------------------------
    # Leaving is a Remove proposal for oneself that a facilitator's client commits. A
    # proposal belongs to its epoch: a commit that lands first (anyone's) drops it. So
    # the wish to leave is kept (a setting per room, and ``_leaving`` in memory) and
    # the proposal is made again in every epoch this member is still in, until a commit
    # removes it (docs/room-protocol.md §12, "Leaving").

    async def _load_leaves(self) -> None:
        """Read the rooms this member is leaving (at load, after the rooms)."""
        for key, _value in await self.store.settings_with_prefix(LEAVING_KEY):
            try:
                room_id = bytes.fromhex(key[len(LEAVING_KEY) :])
            except ValueError:
                room_id = b""
            if room_id in self._live:
                self._leaving.setdefault(room_id, asyncio.Event())
            else:  # left meanwhile (or never there): nothing to wait for
                await self.store.delete_setting(key)

    def _resume_leaves(self) -> None:
        """Propose again the leaves whose epoch ended while this profile was away."""
        for room_id in list(self._leaving):
            live = self._live.get(room_id)
            if live is not None:
                self._spawn(self._keep_leaving(live))

    async def _mark_leaving(self, tx: Any, room_id: bytes) -> None:
        """Record, in the leave's own transaction, that this member is leaving."""
        await tx.set_setting(LEAVING_KEY + hex_id(room_id), b"\x01")

    def _leave_asked(self, room_id: bytes) -> None:
        self._leaving.setdefault(room_id, asyncio.Event())

    async def _keep_leaving(self, live: Live) -> None:
        """If this member is leaving and its proposal's epoch has ended, propose again."""
        room_id = live.record.room_id
        if room_id not in self._leaving:
            return
        async with live.lock:
            room = live.room
            if not room.active or room.leaving or room.pending is not None:
                return  # gone, still waiting in this epoch, or after an own commit
            try:
                wire = room.leave()
            except RoomError as exc:
                # e.g. the other facilitators left meanwhile: the leave cannot complete
                await self._drop_leave(room_id)
                self._emit(Alert(hex_id(room_id), f"Your leave was withdrawn: {exc}"))
                return
            state = room.to_bytes()
            entry = OutboxEntry(
                os.urandom(16), live.meta.access.mailbox, wire, self._now(), room_id=room_id
            )
            try:
                async with self.store.transaction() as tx:
                    await tx.set_room_state(room_id, state)
                    await tx.enqueue(entry)
            except BaseException:
                self._restore(live)
                raise
            live.record = replace(live.record, state=state)
        self._outbox.notify()

    async def _drop_leave(self, room_id: bytes) -> None:
        """This member is no longer leaving ``room_id`` (it left, or cannot)."""
        done = self._leaving.pop(room_id, None)
        await self.store.delete_setting(LEAVING_KEY + hex_id(room_id))
        if done is not None:
            done.set()

    async def wait_left(self, room_id: bytes, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for this member's leave of ``room_id`` to complete.

        True once a commit removed this member (or it is not in the room); False while
        the leave still waits for a facilitator's client to commit it.
        """
        if room_id not in self._live:
            return True
        done = self._leaving.get(room_id)
        if done is None:
            return False  # not leaving
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
        return room_id not in self._live

    async def _commit_leaves(self, live: Live) -> None:
        """Commit the leaves queued in this epoch (a facilitator's client does, unasked)."""
        try:
            await self._commit(live, lambda r, now: r.commit_proposals(now=now))
        except BackchannelError:
            if live.room.active and live.room.proposals_waiting:
                raise
            # Another member's commit came first: it took the leave with it, or ended
            # its epoch (the leaver proposes again, and this runs again).
