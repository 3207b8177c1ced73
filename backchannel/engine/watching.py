"""What the engine watches for and tells the user: forks, withheld messages and moves.

Mixed into :class:`~backchannel.engine.core.Engine` (docs/room-protocol.md §13). The
room layer (:mod:`backchannel.rooms.watch`) reports forks and gaps it sees in MLS;
this module adds what only the client sees: whether each of its own appends comes
back at the position the relay acknowledged, and whether a room's move arrives
after the relay started refusing posts to its old mailbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging

from ..transport.events import Entry
from ..views import Alert
from .state import Effects, Live, hex_id

__all__ = ["FORK_TEXT", "MOVE_GRACE_SECONDS", "RECENT_ENTRIES", "WITHHELD_TEXT", "Watching"]

_log = logging.getLogger(__name__)

FORK_TEXT = (
    "This room has forked: the relay is showing members different histories. Do not "
    "trust what you see here until you have compared the room's check code with the "
    "others out of band."
)
WITHHELD_TEXT = (
    "The relay did not show you back a message you sent: it may be hiding it from the "
    "others. Compare the room's check code with them out of band."
)
#: Seconds a refused post may wait for its room's move before the user is warned.
MOVE_GRACE_SECONDS = 5.0
#: How many recent entries per room are remembered to check late acknowledgements.
RECENT_ENTRIES = 1024


class Watching:
    """Mixed into :class:`~backchannel.engine.core.Engine`; uses its state and helpers."""

    def _warn(self, live: Live, fx: Effects, kind: str, epoch: int, text: str) -> None:
        """Queue a warning for the user, once per kind and epoch."""
        if (kind, epoch) in live.warned:
            return
        live.warned.add((kind, epoch))
        _log.warning("room warning: %s", kind.split(":", 1)[0])
        fx.events.append(Alert(hex_id(live.record.room_id), text))

    def _check_echo(self, live: Live, fx: Effects, entry: Entry) -> None:
        """Compare an entry with what this member appended at that position, if anything.

        A position is a mailbox and a sequence number: a room that moves (after a
        removal) starts again at 1 in its new mailbox, and what was seen or expected in
        the old one says nothing about the new one's entries.
        """
        digest = hashlib.sha256(entry.blob).digest()
        position = (entry.mailbox, entry.seq)
        live.recent[position] = digest
        if len(live.recent) > RECENT_ENTRIES:
            del live.recent[next(iter(live.recent))]
        mine = live.expected.pop(position, None)
        if mine is not None and not hmac.compare_digest(mine, digest):
            self._warn(live, fx, "fork", entry.seq, FORK_TEXT)
        skipped = [
            (mailbox, seq)
            for mailbox, seq in live.expected
            if mailbox == entry.mailbox and seq < entry.seq
        ]
        for mailbox, seq in skipped:
            del live.expected[(mailbox, seq)]
            self._warn(live, fx, "withheld", seq, WITHHELD_TEXT)

    def expect_echo(self, mailbox: bytes, seq: int, blob: bytes) -> None:
        """This member's append of ``blob`` was stored at ``seq``: it must come back there."""
        route = self._routes.get(mailbox)
        live = self._live.get(route[1]) if route is not None and route[0] == "room" else None
        if live is None or mailbox != live.meta.access.mailbox:
            return  # a mailbox the room has left: its entries are no longer read
        cursor = self.connection.cursor(mailbox)
        position = (mailbox, seq)
        if cursor is not None and seq <= cursor and position not in live.recent:
            return  # read before this run (e.g. a retry after a restart): nothing to compare
        digest = hashlib.sha256(blob).digest()
        seen = live.recent.get(position)
        if seen is None:
            live.expected[position] = digest
        elif not hmac.compare_digest(seen, digest):
            fx = Effects()
            self._warn(live, fx, "fork", seq, FORK_TEXT)
            for event in fx.events:
                self._emit(event)

    def _forget_positions(self, live: Live) -> None:
        """The room moved to a new mailbox: positions seen in or expected of the old one
        are never compared again (its entries after the move are not read)."""
        live.recent.clear()
        live.expected.clear()

    async def _expect_move(self, live: Live, mailbox: bytes) -> None:
        """Warn if the room is still on a mailbox that refuses posts after a grace time."""
        await asyncio.sleep(MOVE_GRACE_SECONDS)
        if live.room.active and live.meta.access.mailbox == mailbox:
            fx = Effects()
            self._warn(
                live,
                fx,
                "withheld-move",
                live.room.epoch,
                "Changes to this room have not reached you: the relay refuses your posts "
                "to this room's mailbox, which happens once others have moved it on (after "
                "a removal), but the change that moved it was not delivered to you. Your "
                "messages are held until it arrives.",
            )
            for event in fx.events:
                self._emit(event)
