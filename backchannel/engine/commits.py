"""A member's own commits: offered with the relay's epoch compare-and-set, lost races
retried, a saved pending commit offered again after a crash, scheduled self-updates.

See docs/room-protocol.md §12 ("Own commits").
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
from ..transport.errors import StaleEpoch, TransportError
from ..views import Alert, MembersChanged
from .state import CATCH_UP_SECONDS, COMMIT_ATTEMPTS, REQUEST_SECONDS, Effects, Live, hex_id


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
