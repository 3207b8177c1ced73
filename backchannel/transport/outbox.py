"""Idempotent sending of a caller-kept outbox through a :class:`~.connection.RelayConnection`.

Theory of operation
-------------------
The caller (the client façade, over its encrypted store) keeps the outbox and
exposes it through :class:`OutboxSource`. :class:`OutboxSender` reads
``pending()``, and for each mailbox sends that mailbox's items one after the other,
in the order given, each with its own idempotency key. An append waits for the
relay and is retried across reconnects by the connection; when it is answered,
the sender calls ``acknowledge(key, seq)`` and the source drops the item.

If the process dies after the relay stored an item but before ``acknowledge``
ran, the item is still pending on the next run, is sent again with the same key,
and the relay answers ``duplicate`` with the first copy's sequence number: the
relay holds one copy and the source is acknowledged once.

A refusal is passed to ``on_rejected``, whose answer (a :class:`Verdict`) says what
becomes of the item, so that no item holds back the items behind it for good:

* ``DROP``: the caller took it out of the source (or replaced it); the sender never
  sends it again and goes on with the mailbox's next item.
* ``RETRY``: it is sent again, same key, after a growing backoff (:data:`RETRY_BASE`
  doubling up to :data:`RETRY_CAP`, jittered); the mailbox's later items wait behind it
  (order is kept) and other mailboxes go on. For refusals that may pass later
  (:data:`RETRY_CODES`: a full mailbox or store, a busy relay).
* ``HOLD``: it stays, and its mailbox waits, until the caller changes the outbox and
  calls :meth:`OutboxSender.notify` (e.g. the room is moving to a new mailbox).

``on_rejected`` is called once per item and refusal code: an item retried and refused
again with the same code is backed off again without a second call. Without an
answer (or without ``on_rejected``), codes in :data:`RETRY_CODES` are retried and any
other holds the item. An item naming a mailbox with no write key registered is
refused locally as ``denied``.

Every mailbox is sent by its own task, so one slow or refusing mailbox never delays
another; the source decides how many mailboxes and items one ``pending()`` returns.
Call :meth:`OutboxSender.notify` after adding items.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from .connection import AlsoEntry, RelayConnection
from .errors import TRANSIENT_CODES, ConnectionClosed, Denied, Rejected

__all__ = [
    "RETRY_BASE",
    "RETRY_CAP",
    "RETRY_CODES",
    "OutboxItem",
    "OutboxSender",
    "OutboxSource",
    "Verdict",
    "retry_later",
]

_log = logging.getLogger(__name__)

#: Refusals after which the same item may go through later: the mailbox or the relay's
#: storage is full until readers catch up, or the relay is busy.
RETRY_CODES: Final = frozenset(
    {"mailbox_full", "store_full", "rate_limited", "too_many_subscriptions", *TRANSIENT_CODES}
)
#: The first retry of a refused item waits about this long (seconds); each next one twice
#: as long, up to :data:`RETRY_CAP`.
RETRY_BASE: Final = 2.0
RETRY_CAP: Final = 300.0


def retry_later(error: Rejected) -> bool:
    """Whether the refused item may go through if sent again later (:data:`RETRY_CODES`)."""
    return error.code in RETRY_CODES


class Verdict(enum.Enum):
    """What becomes of an item the relay refused: ``on_rejected``'s answer."""

    #: The caller took it out of the source (or replaced it): go on with the next item.
    DROP = "drop"
    #: Send it again after a backoff; the mailbox's later items wait behind it.
    RETRY = "retry"
    #: Keep it, and its mailbox waiting, until the caller changes the outbox (``notify``).
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One append waiting to be sent."""

    #: The idempotency key (8 to 32 random bytes), fixed when the item was queued.
    key: bytes
    #: The target mailbox (its write capability registered on the connection).
    mailbox: bytes
    #: The content.
    blob: bytes = field(repr=False)
    #: Compare-and-set epoch (MLS commits), or None.
    epoch: int | None = None
    #: Further entries written atomically with this one.
    also: tuple[AlsoEntry, ...] = ()
    #: The entry's own TTL in seconds, or None.
    ttl: int | None = None


class OutboxSource(Protocol):
    """Where the sender finds the outbox; the caller implements it over its storage."""

    async def pending(self) -> Sequence[OutboxItem]:
        """Every unacknowledged item, oldest first (per mailbox, this is the send order)."""
        ...

    async def acknowledge(self, key: bytes, seq: int) -> None:
        """The relay holds the item with ``key`` at ``seq``: drop it from the outbox."""
        ...


RejectedCallback = Callable[[OutboxItem, Rejected], Awaitable[Verdict | None]]


class OutboxSender:
    """Sends an :class:`OutboxSource` through a connection; see the module docstring.

    Args:
        connection: a started :class:`RelayConnection` with the write capabilities.
        source: the outbox.
        on_rejected: awaited with an item the relay refused and the refusal; answers
            with a :class:`Verdict` (see the module docstring). Without it the refusal
            is only logged (by code).
        rng: the jitter of retry delays (seed it for reproducible tests).
    """

    def __init__(
        self,
        connection: RelayConnection,
        source: OutboxSource,
        *,
        on_rejected: RejectedCallback | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._connection = connection
        self._source = source
        self._on_rejected = on_rejected
        self._rng = rng or random.Random()
        self._workers: dict[bytes, asyncio.Task[None]] = {}
        self._acked: set[bytes] = set()  # guards against a source slow to drop items
        self._dropped: set[bytes] = set()  # DROP answers: never sent again, whatever the source
        self._rejected: set[bytes] = set()  # HOLD answers: their mailbox waits
        #: (key, code) -> the answer given, so a retried item is not reported twice
        self._verdicts: dict[tuple[bytes, str], Verdict] = {}
        self._retries: dict[bytes, int] = {}  # key -> refusals retried so far
        self._retry_at: dict[bytes, float] = {}  # mailbox -> loop time of its next try
        self._wake = asyncio.Event()
        self._requested = 0
        self._idle_at = -1
        self._idle = asyncio.Condition()
        self._runner: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def start(self) -> None:
        """Start sending in the background."""
        if self._runner is not None:
            raise RuntimeError("an OutboxSender starts once")
        self._runner = asyncio.create_task(self._run(), name="outbox-sender")

    async def close(self) -> None:
        """Stop sending; appends in flight are abandoned (their items stay pending).

        Raises:
            Exception: whatever the source raised, if it failed meanwhile.
        """
        tasks = [t for t in (self._runner, *self._workers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runner = None
        if self._error is not None and not isinstance(self._error, ConnectionClosed):
            raise self._error  # a failing source is the caller's bug; do not hide it

    async def __aenter__(self) -> OutboxSender:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def notify(self) -> int:
        """New items were added: look at ``pending()`` again. Returns a flush ticket."""
        self._requested += 1
        self._wake.set()
        return self._requested

    async def flush(self) -> None:
        """Return once everything pending now was sent or refused (waits while offline).

        Raises:
            ConnectionClosed: the connection was closed first.
            Exception: whatever the source raised, if it failed.
        """
        if self._runner is None:
            raise RuntimeError("start the OutboxSender first")
        ticket = self.notify()
        async with self._idle:
            await self._idle.wait_for(lambda: self._idle_at >= ticket or self._error is not None)
        if self._error is not None:
            raise self._error

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._error = self._error or task.exception()
        self._wake.set()

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error = self._error or exc
        finally:
            async with self._idle:
                self._idle.notify_all()

    async def _loop(self) -> None:
        while self._error is None:
            ticket = self._requested
            self._wake.clear()
            items = await self._source.pending()
            keys = {item.key for item in items}
            self._acked &= keys  # forget what the source has dropped
            self._dropped &= keys
            self._rejected &= keys
            self._retries = {k: n for k, n in self._retries.items() if k in keys}
            self._verdicts = {k: v for k, v in self._verdicts.items() if k[0] in keys}
            queues: dict[bytes, list[OutboxItem]] = {}
            for item in items:
                if item.key not in self._acked and item.key not in self._dropped:
                    queues.setdefault(item.mailbox, []).append(item)
            now = asyncio.get_running_loop().time()
            self._retry_at = {m: t for m, t in self._retry_at.items() if m in queues and t > now}
            for mailbox, queue in queues.items():
                worker = self._workers.get(mailbox)
                if (worker is not None and not worker.done()) or queue[0].key in self._rejected:
                    continue  # busy (it re-reads when done), or blocked by a refused item
                if mailbox in self._retry_at:
                    continue  # backing off; a timer wakes the loop
                worker = asyncio.create_task(self._send(queue), name="outbox-mailbox")
                worker.add_done_callback(self._worker_done)
                self._workers[mailbox] = worker
            self._workers = {m: w for m, w in self._workers.items() if not w.done()}
            if not self._workers:
                async with self._idle:
                    self._idle_at = ticket
                    self._idle.notify_all()
            await self._wake.wait()

    async def _send(self, queue: Sequence[OutboxItem]) -> None:
        for item in queue:
            try:
                result = await self._connection.append(
                    item.mailbox,
                    item.blob,
                    item.key,
                    epoch=item.epoch,
                    also=item.also,
                    ttl=item.ttl,
                )
            except ConnectionClosed as exc:
                self._error = self._error or exc  # nothing more can be sent: stop
                self._wake.set()
                return
            except ValueError:  # no write capability registered for a mailbox it names
                _log.warning("an outbox item names a mailbox with no write key registered")
                refusal: Rejected = Denied("denied")
            except Rejected as exc:
                _log.info("the relay refused an outbox item (%s)", exc.code)
                refusal = exc
            else:
                await self._source.acknowledge(item.key, result.seq)
                self._acked.add(item.key)
                self._retries.pop(item.key, None)
                continue
            verdict = await self._verdict(item, refusal)
            if verdict is Verdict.DROP:
                self._dropped.add(item.key)
                continue  # the mailbox goes on with its next item
            if verdict is Verdict.RETRY:
                self._back_off(item)
            else:
                self._rejected.add(item.key)
            return  # later items of this mailbox wait: order is kept

    async def _verdict(self, item: OutboxItem, error: Rejected) -> Verdict:
        """The caller's answer for this refusal (asked once per item and code)."""
        told = self._verdicts.get((item.key, error.code))
        if told is not None:
            return told
        answer = None
        if self._on_rejected is not None:
            answer = await self._on_rejected(item, error)
        if answer is None:
            answer = Verdict.RETRY if retry_later(error) else Verdict.HOLD
        self._verdicts[(item.key, error.code)] = answer
        return answer

    def _back_off(self, item: OutboxItem) -> None:
        """Try ``item`` again after a growing, jittered delay; its mailbox waits meanwhile."""
        tries = self._retries.get(item.key, 0)
        self._retries[item.key] = tries + 1
        ceiling = min(RETRY_CAP, RETRY_BASE * 2 ** min(tries, 16))
        delay = ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)
        loop = asyncio.get_running_loop()
        self._retry_at[item.mailbox] = loop.time() + delay
        loop.call_later(delay, self._wake.set)
