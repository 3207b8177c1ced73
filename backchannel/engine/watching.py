"""What the engine watches for and tells the user: forks, withheld messages and moves.

Mixed into :class:`~backchannel.engine.core.Engine` (docs/room-protocol.md §13). The
room layer (:mod:`backchannel.rooms.watch`) reports forks and gaps it sees in MLS;
this module adds what only the client sees: whether each of its own appends comes
back at the position the relay acknowledged, whether a room's move arrives
after the relay started refusing posts to its old mailbox, and what the transport
reports of the relay's answers (numbers skipped, entries withheld then pushed, gaps
it will not fill, a room mailbox it no longer serves), each said once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from dataclasses import dataclass, field

from ..transport.errors import TransportError
from ..transport.events import Entry, GapOpen, LateEntry, Revoked, Skipped
from ..views import Alert
from .state import REQUEST_SECONDS, Effects, Live, hex_id

__all__ = [
    "ECHO_CHECK_SECONDS",
    "FORK_TEXT",
    "GAP_TEXT",
    "LATE_TEXT",
    "MOVE_GRACE_SECONDS",
    "RECENT_ENTRIES",
    "RESET_QUIET_SECONDS",
    "REVOKED_TEXT",
    "WITHHELD_TEXT",
    "Watching",
]

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
LATE_TEXT = (
    "The relay held back a message of this room and delivered it only later, after "
    "saying it had none: it may be hiding messages. Compare the room's check code with "
    "the others out of band."
)
GAP_TEXT = (
    "Messages of this room are missing: the relay does not answer for them. Backchannel "
    "keeps asking; until they arrive, later messages wait."
)
REVOKED_TEXT = (
    "The relay no longer lets you read this room: you will not receive its messages "
    "until it does. Leave and ask to be invited again if this lasts."
)
#: How many recent entries per room are remembered to check late acknowledgements.
RECENT_ENTRIES = 1024
#: Seconds an own append may go unseen before the relay is asked for it directly.
ECHO_CHECK_SECONDS = 10.0
#: Resets of one mailbox closer together than this are one storm: told once.
RESET_QUIET_SECONDS = 600.0
#: Ranges of skipped numbers remembered per mailbox; keys of alerts given once.
SKIPS_KEPT = 64
ONCE_KEPT = 4096


@dataclass(slots=True)
class _RelayWatch:
    """What the engine remembers of the relay's answers in this run."""

    #: mailbox -> [first, last] ranges the transport skipped (no entry, it said)
    skips: dict[bytes, list[tuple[int, int]]] = field(default_factory=dict)
    #: keys of the alerts already given (bounded)
    once: set[object] = field(default_factory=set)
    #: mailbox -> loop time of its last Reset
    resets: dict[bytes, float] = field(default_factory=dict)


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
        """This member's append of ``blob`` was stored at ``seq``: it must come back there.

        Evidence that it will not: the transport skipped that number in this run (the
        relay's fetch said no entry has it), or the relay, asked directly
        :data:`ECHO_CHECK_SECONDS` later, has no such entry (e.g. an acknowledgement
        beyond its head). A number read before this run (a retry after a restart) is
        not compared.
        """
        live = self._current_room(mailbox)
        if live is None:
            return  # a mailbox the room has left: its entries are no longer read
        position = (mailbox, seq)
        if self._was_skipped(mailbox, seq):
            self._tell(live, "withheld", seq, WITHHELD_TEXT)
            return
        cursor = self.connection.cursor(mailbox)
        if cursor is not None and seq <= cursor and position not in live.recent:
            return  # read before this run (e.g. a retry after a restart): nothing to compare
        digest = hashlib.sha256(blob).digest()
        seen = live.recent.get(position)
        if seen is None:
            live.expected[position] = digest
            # Not _spawn: sync() waits for those, and this one sleeps first.
            task = asyncio.create_task(self._verify_echo(live, position, digest))
            self._operations.add(task)  # cancelled by close()
            task.add_done_callback(self._operation_done)
        elif not hmac.compare_digest(seen, digest):
            self._tell(live, "fork", seq, FORK_TEXT)

    async def _verify_echo(self, live: Live, position: tuple[bytes, int], digest: bytes) -> None:
        """An own append still unseen after a while: ask the relay for that very entry."""
        await asyncio.sleep(ECHO_CHECK_SECONDS)
        mailbox, seq = position
        if live.expected.get(position) != digest:
            return  # seen (or the room moved, or the relay reset)
        try:
            page = await self.connection.fetch(
                mailbox, after=seq - 1, limit=1, timeout=REQUEST_SECONDS
            )
        except (TransportError, ValueError) as exc:
            _log.info("an own message could not be looked up: %s", type(exc).__name__)
            return
        if live.expected.get(position) != digest or self._current_room(mailbox) is not live:
            return
        found = page.entries[0][1] if page.entries and page.entries[0][0] == seq else None
        if found is None:  # not there, right after the relay said it stored it there
            del live.expected[position]
            self._tell(live, "withheld", seq, WITHHELD_TEXT)
        elif not hmac.compare_digest(hashlib.sha256(found).digest(), digest):
            del live.expected[position]
            self._tell(live, "fork", seq, FORK_TEXT)
        # else: it is there as sent, and is delivered through the stream (or skipped there)

    # -- what the transport reports -----------------------------------------------------------

    def _relay_watch(self) -> _RelayWatch:
        watch = self.__dict__.get("_relay_watch_state")
        if watch is None:
            watch = self.__dict__["_relay_watch_state"] = _RelayWatch()
        return watch  # type: ignore[no-any-return]

    def _once(self, key: object) -> bool:
        """True the first time ``key`` is seen in this run."""
        once = self._relay_watch().once
        if key in once:
            return False
        if len(once) >= ONCE_KEPT:
            once.clear()
        once.add(key)
        return True

    def _current_room(self, mailbox: bytes) -> Live | None:
        """The active room whose current mailbox ``mailbox`` is, if any."""
        route = self._routes.get(mailbox)
        live = self._live.get(route[1]) if route is not None and route[0] == "room" else None
        if live is None or mailbox != live.meta.access.mailbox or not live.room.active:
            return None
        return live

    def _tell(self, live: Live, kind: str, epoch: int, text: str) -> None:
        fx = Effects()
        self._warn(live, fx, kind, epoch, text)
        for event in fx.events:
            self._emit(event)

    def _was_skipped(self, mailbox: bytes, seq: int) -> bool:
        return any(a <= seq <= b for a, b in self._relay_watch().skips.get(mailbox, ()))

    def _on_skipped(self, event: Skipped) -> None:
        """The transport passed numbers without an entry: own appends there were withheld."""
        _log.info("the relay has no entries at %d number(s)", event.last - event.first + 1)
        skips = self._relay_watch().skips.setdefault(event.mailbox, [])
        skips.append((event.first, event.last))
        del skips[:-SKIPS_KEPT]
        live = self._current_room(event.mailbox)
        if live is None:
            return
        for mailbox, seq in list(live.expected):
            if mailbox == event.mailbox and event.first <= seq <= event.last:
                del live.expected[(mailbox, seq)]
                self._tell(live, "withheld", seq, WITHHELD_TEXT)

    def _on_late_entry(self, event: LateEntry) -> None:
        """The relay pushed an entry its own fetch answer had said did not exist."""
        live = self._current_room(event.mailbox)
        if live is not None:
            self._tell(live, "late", 0, LATE_TEXT)
        elif self._once(("late", event.mailbox)):
            self._emit(Alert(None, LATE_TEXT.replace(" of this room", "")))

    def _on_gap_open(self, event: GapOpen) -> None:
        """The relay keeps refusing to fill a gap: say so, once per gap."""
        live = self._current_room(event.mailbox)
        if live is not None:
            self._tell(live, f"gap:{event.after}", 0, GAP_TEXT)

    def _on_revoked(self, event: Revoked) -> None:
        """The transport stopped following a mailbox the relay refuses: a room's is told."""
        live = self._current_room(event.mailbox)
        if live is None:
            _log.info("a mailbox was revoked (%s)", event.reason)
            return
        _log.warning("a room mailbox was revoked (%s)", event.reason)
        self._tell(live, "revoked", live.room.epoch, REVOKED_TEXT)

    def _reset_storm(self, mailbox: bytes) -> bool:
        """Whether a Reset of ``mailbox`` starts a storm (the first in a quiet while)."""
        now = asyncio.get_running_loop().time()
        resets = self._relay_watch().resets
        last = resets.get(mailbox)
        resets[mailbox] = now
        self._relay_watch().skips.pop(mailbox, None)  # numbers from before mean nothing
        return last is None or now - last > RESET_QUIET_SECONDS

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
