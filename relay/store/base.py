"""The mailbox store interface every backend implements, and the values it trades in.

A mailbox is an ordered log of opaque blobs. Sequence numbers start at 1 and are
assigned without gaps or duplicates; trimming and expiry remove entries but never
reuse a number. A backend acknowledges a write only once it is durable, and tells
its listeners about new entries after the commit, in sequence order per mailbox.

Generations: every store holds one *generation* record, a random 16-byte id that the
relay announces in ``hello``. A store that is a restored copy (a backup made by
``backchannel-relay backup``, or one the operator marked with ``backchannel-relay
mark-restored``) carries a ``restored`` flag; the first open of such a store starts a
new generation: a new id, and every mailbox's head and epoch raised to a *floor*
above any number the store can have handed out before (:func:`restore_floor`), so
clients' cursors stay valid and no number is given out twice. See "Generations and
restores" in ``docs/relay-protocol.md``.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Final, Protocol

__all__ = [
    "GENERATION_BYTES",
    "SEQ_PER_SECOND",
    "Appended",
    "ClusterListener",
    "MailboxKeys",
    "MailboxStore",
    "NewEntry",
    "Page",
    "StoreLimits",
    "StoreStats",
    "SweepResult",
    "migration_scripts",
    "new_generation_id",
    "restore_floor",
    "round_up",
]

#: Length of a store generation id.
GENERATION_BYTES: Final = 16
#: Sequence numbers one mailbox could be given per second, at most, for restore floors:
#: far above what any store commits (2**20 is about a million a second).
SEQ_PER_SECOND: Final = 2**20
#: Largest sequence number or epoch: both stores keep them as signed 64-bit integers.
_U63: Final = 2**63 - 1


def new_generation_id() -> bytes:
    """A fresh random generation id."""
    return os.urandom(GENERATION_BYTES)


def restore_floor(now: float, max_head: int, max_epoch: int, old_floor: int) -> int:
    """The number heads and epochs are raised to when a restored store starts a generation.

    Anything the store handed out before the restore, including what the restore
    lost, was below ``now * SEQ_PER_SECOND``: numbers start at 1 and the previous
    floor was taken at an earlier time, and no mailbox takes a million appends a
    second. The floor is also above every head and epoch the restored copy holds, so
    it is right even if the clock is behind. (Assumes a wall clock that does not run
    far backwards between restores; see docs/operating-a-relay.md.)
    """
    floor = max(int(now) * SEQ_PER_SECOND, max_head + 1, max_epoch + 1, old_floor + 1)
    return min(floor, _U63 // 2)


def migration_scripts(backend: str) -> list[tuple[int, str]]:
    """The numbered SQL migrations of ``backend`` ("sqlite" or "postgres"), in order."""
    folder = resources.files("relay.store").joinpath("migrations", backend)
    found = [
        (int(item.name.split("_", 1)[0]), item.read_text(encoding="utf-8"))
        for item in folder.iterdir()
        if item.name.endswith(".sql")
    ]
    return sorted(found)


def round_up(when: float, granularity: int) -> int:
    """Round a time up to a multiple of ``granularity`` seconds (coarse expiry times)."""
    return int(math.ceil(when / granularity) * granularity)


@dataclass(frozen=True, slots=True)
class MailboxKeys:
    """A mailbox's public capability keys (Ed25519, 32 bytes each)."""

    read_key: bytes
    write_key: bytes
    admin_key: bytes


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A blob to append. ``ttl`` None means the mailbox's TTL; it is capped at it."""

    mailbox: bytes
    blob: bytes = field(repr=False)
    key: bytes | None = None
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of one entry of an append."""

    mailbox: bytes
    seq: int
    #: True when the idempotency key matched an earlier append: nothing new was written.
    duplicate: bool
    #: The mailbox's compare-and-set epoch after this append.
    epoch: int = 0
    blob: bytes = field(repr=False, default=b"")


@dataclass(frozen=True, slots=True)
class Page:
    """A page of entries above a cursor."""

    entries: list[tuple[int, bytes]] = field(repr=False)
    #: The mailbox's last assigned sequence number.
    head: int
    #: True when more entries follow this page.
    more: bool


@dataclass(frozen=True, slots=True)
class SweepResult:
    entries: int
    mailboxes: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    mailboxes: int
    entries: int
    bytes: int


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """The quotas and time rules a store enforces inside its transactions."""

    mailbox_max_entries: int = 100_000
    mailbox_max_bytes: int = 256 * 1024 * 1024
    store_max_bytes: int = 16 * 1024**3
    min_free_disk_bytes: int = 256 * 1024 * 1024
    expiry_granularity: int = 3600
    group_commit_max: int = 1024


Listener = Callable[[Sequence[Appended]], None]


class ClusterListener(Protocol):
    """What a store shared by several relay nodes reports about the other nodes' work."""

    def hinted(self, mailbox: bytes, seq: int) -> None:
        """Another node committed entry ``seq`` to ``mailbox``; its blob must be read."""

    def rotated(self, mailbox: bytes) -> None:
        """Another node replaced the mailbox's capability keys."""

    def resync(self) -> None:
        """Notifications may have been missed: re-read every mailbox someone follows."""


class MailboxStore(ABC):
    """Storage for mailboxes; all methods are coroutines safe to call concurrently.

    Errors: ``MailboxExists``, ``CapabilityDenied`` (no such mailbox), ``StaleEpoch``,
    ``MailboxFull``, ``StoreFull`` and ``StoreUnavailable`` from :mod:`relay.errors`.
    A failed call has written nothing.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._cluster: ClusterListener | None = None
        #: The store's generation id (:data:`GENERATION_BYTES` bytes), set by :meth:`open`.
        self.generation: bytes = b""

    def set_cluster_listener(self, listener: ClusterListener) -> None:
        """Receive the other nodes' appends and rotations (multi-node stores only)."""
        self._cluster = listener

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` on the event loop with each committed batch of new entries."""
        self._listeners.append(listener)

    def _notify(self, appended: Sequence[Appended]) -> None:
        for listener in self._listeners:
            listener(appended)

    @abstractmethod
    async def open(self) -> None:
        """Open connections, apply migrations and start background workers.

        Sets :attr:`generation`; a store marked as restored starts a new generation
        first (see the module docstring).
        """

    @abstractmethod
    async def close(self) -> None:
        """Finish queued writes, then release every resource."""

    @abstractmethod
    async def ping(self) -> None:
        """Return if the store answers; raise ``StoreUnavailable`` otherwise."""

    @abstractmethod
    async def create_mailbox(self, mailbox: bytes, keys: MailboxKeys, ttl: int, now: float) -> None:
        """Create an empty mailbox at epoch 0 whose entries live ``ttl`` seconds."""

    @abstractmethod
    async def get_keys(self, mailbox: bytes, now: float) -> MailboxKeys | None:
        """The mailbox's keys, or None if it does not exist (or has expired)."""

    @abstractmethod
    async def touch(self, mailbox: bytes, now: float) -> None:
        """Extend the mailbox's life by its TTL from ``now`` (it is in use)."""

    @abstractmethod
    async def append(
        self, entries: Sequence[NewEntry], epoch: int | None, now: float
    ) -> list[Appended]:
        """Append ``entries`` atomically; ``entries[0]`` is the main entry.

        With ``epoch``, the main entry's mailbox must be at that epoch, which then
        moves to ``epoch + 1``. When the main entry's idempotency key matches an
        earlier append, nothing is written and the earlier results come back with
        ``duplicate=True``.
        """

    @abstractmethod
    async def fetch(
        self, mailbox: bytes, after: int, limit: int, max_bytes: int, now: float
    ) -> Page:
        """Entries with a sequence number above ``after``, oldest first."""

    @abstractmethod
    async def trim(self, mailbox: bytes, through: int) -> int:
        """Delete entries up to and including ``through``; returns how many."""

    @abstractmethod
    async def rotate(self, mailbox: bytes, keys: MailboxKeys) -> None:
        """Replace the mailbox's capability keys."""

    @abstractmethod
    async def sweep(self, now: float) -> SweepResult:
        """Delete expired entries and mailboxes."""

    @abstractmethod
    async def stats(self) -> StoreStats:
        """Counts for metrics."""
