"""What a relay connection reports and returns: events, append and fetch results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "AlsoEntry",
    "AppendResult",
    "ConnectionState",
    "Entry",
    "FetchPage",
    "GapOpen",
    "GenerationChanged",
    "LateEntry",
    "LinkState",
    "Reset",
    "Revoked",
    "Skipped",
    "TransportEvent",
]


class LinkState(Enum):
    """Where the connection stands."""

    #: Opening a WebSocket to the relay.
    CONNECTING = "connecting"
    #: Connected, and every followed mailbox was set up again.
    CONNECTED = "connected"
    #: No connection; the next attempt comes after ``retry_in`` seconds.
    OFFLINE = "offline"
    #: :meth:`~.connection.RelayConnection.close` was called; nothing more happens.
    CLOSED = "closed"


class TransportEvent:
    """Base of everything :meth:`~.connection.RelayConnection.next_event` returns."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Entry(TransportEvent):
    """One entry of a followed mailbox, delivered once."""

    #: The mailbox id.
    mailbox: bytes
    #: The entry's sequence number; acknowledge it with :meth:`~.connection.RelayConnection.ack`.
    seq: int
    #: The opaque content (ciphertext).
    blob: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ConnectionState(TransportEvent):
    """The connection changed state."""

    #: The new state.
    state: LinkState
    #: Attempts since the last successful connection (0 when connected).
    attempt: int = 0
    #: Seconds until the next attempt, when ``state`` is ``OFFLINE``.
    retry_in: float | None = None
    #: A sentence about why, for people (no secrets).
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Revoked(TransportEvent):
    """Access to a followed mailbox ended; it is no longer followed.

    ``reason`` is the ``revoked`` frame's (``"rotated"``, ``"expired"``; an undocumented
    one reads as ``"rotated"``) or, when setting the mailbox up again was refused, the
    refusal's :attr:`~.errors.Rejected.code` (one of :data:`~.errors.CODES` or
    ``"unknown"``): never a string the relay chose.
    """

    #: The mailbox id.
    mailbox: bytes
    #: Why, as above.
    reason: str


@dataclass(frozen=True, slots=True)
class Reset(TransportEvent):
    """The relay's head is behind the cursor (e.g. restored from a backup without
    the mark that starts a new generation: docs/relay-protocol.md §6).

    Entries up to ``cursor`` that the relay no longer has are gone. The relay numbers
    its new entries on from the point it was rolled back to, which the client cannot
    know, so the cursor moves to 0: every entry the relay still holds is delivered
    again, and the consumer drops those it already processed (for rooms: MLS refuses
    a message key used before, and the store a ``(sender, id)`` it has). The consumer
    should move the cursor it keeps to 0 too, or after a restart it would skip them.
    """

    #: The mailbox id.
    mailbox: bytes
    #: The cursor before the reset.
    cursor: int
    #: The relay's head, the new cursor.
    head: int


@dataclass(frozen=True, slots=True)
class GenerationChanged(TransportEvent):
    """The relay's store is in another generation than the one last seen.

    A relay starts a new generation when its store was restored from a backup (or
    its operator marked it restored): entries it acknowledged after the backup may
    be lost, for this client and everyone else. It numbers on above everything it
    handed out before, so cursors stay valid: every followed mailbox is set up again
    from its cursor, nothing is delivered twice, and a head behind a cursor (a relay
    that did not renumber) still comes as a :class:`Reset`.
    """

    #: The generation id seen before.
    previous: bytes
    #: The relay's generation id now; keep it (see ``RelayConnection.expect_generation``).
    generation: bytes


@dataclass(frozen=True, slots=True)
class Skipped(TransportEvent):
    """The cursor of a followed mailbox moved past ``first`` to ``last`` without an entry.

    The relay's fetch answer held an entry above those numbers and none of them: the
    relay says they were trimmed or have expired, or lie below a restore's floor
    (docs/relay-protocol.md §6). A relay that withholds entries says the same, so a
    consumer compares it with what it knows (e.g. its own appends at those numbers).
    Comes before the entry above them.
    """

    #: The mailbox id.
    mailbox: bytes
    #: The first and the last number passed.
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class LateEntry(TransportEvent):
    """The relay pushed an entry at ``seq``, a number its own fetch answer had said holds
    none (a :class:`Skipped` before): it withheld that entry, at least for a while.

    Proof that the relay lied. The entry itself follows as an :class:`Entry`, out of
    order (below the cursor), at most once.
    """

    #: The mailbox id.
    mailbox: bytes
    #: The entry's sequence number.
    seq: int


@dataclass(frozen=True, slots=True)
class GapOpen(TransportEvent):
    """Entries after ``after`` were pushed (up to ``pushed``) but the relay keeps refusing
    to answer the fetches that would fill the gap before them.

    The gap is still being filled, with backoff, and on every new connection; the
    entries above it wait. Said once per gap and session.
    """

    #: The mailbox id.
    mailbox: bytes
    #: The cursor: the last number delivered.
    after: int
    #: The highest number pushed.
    pushed: int


@dataclass(frozen=True, slots=True)
class AlsoEntry:
    """A further entry written atomically with an append (its ``also`` list)."""

    mailbox: bytes
    blob: bytes = field(repr=False)
    #: Idempotency key; give one to learn its sequence number on a retry.
    key: bytes | None = None
    ttl: int | None = None

    def wire(self) -> dict[str, Any]:
        """The entry as the ``also`` map of an append request."""
        out: dict[str, Any] = {"mailbox": self.mailbox, "blob": self.blob}
        if self.key is not None:
            out["key"] = self.key
        if self.ttl is not None:
            out["ttl"] = self.ttl
        return out


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The relay's answer to an append."""

    #: The main entry's sequence number.
    seq: int
    #: The idempotency key the append carried.
    key: bytes
    #: True when an earlier attempt had stored it (nothing was written this time).
    duplicate: bool = False
    #: The mailbox's epoch after the append, if it carried one.
    epoch: int | None = None
    #: Sequence numbers of the ``also`` entries (0: unknown on a duplicate without key).
    also: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchPage:
    """One page of a mailbox, from :meth:`~.connection.RelayConnection.fetch`."""

    #: ``(seq, blob)`` pairs in increasing order.
    entries: tuple[tuple[int, bytes], ...] = field(repr=False)
    #: The mailbox's head (last number assigned).
    head: int
    #: True if entries after the last one returned exist.
    more: bool
