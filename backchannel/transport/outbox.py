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

A permanent refusal (``stale_epoch``, ``too_large``, ``denied``, …) is passed to
``on_rejected``; that mailbox's later items wait until the caller removes or
replaces the refused one, so order is never broken. Call :meth:`OutboxSender.notify`
after adding items.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .connection import AlsoEntry, RelayConnection
from .errors import ConnectionClosed, Rejected

__all__ = ["OutboxItem", "OutboxSender", "OutboxSource"]

_log = logging.getLogger(__name__)


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


RejectedCallback = Callable[[OutboxItem, Rejected], Awaitable[None]]


class OutboxSender:
    """Sends an :class:`OutboxSource` through a connection; see the module docstring.

    Args:
        connection: a started :class:`RelayConnection` with the write capabilities.
        source: the outbox.
        on_rejected: awaited with an item the relay refused for good. Without it the
            refusal is only logged (by code).
    """

    def __init__(
        self,
        connection: RelayConnection,
        source: OutboxSource,
        *,
        on_rejected: RejectedCallback | None = None,
    ) -> None:
        self._connection = connection
        self._source = source
        self._on_rejected = on_rejected
        self._workers: dict[bytes, asyncio.Task[None]] = {}
        self._acked: set[bytes] = set()  # guards against a source slow to drop items
        self._rejected: set[bytes] = set()
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
            self._rejected &= keys
            queues: dict[bytes, list[OutboxItem]] = {}
            for item in items:
                if item.key not in self._acked:
                    queues.setdefault(item.mailbox, []).append(item)
            for mailbox, queue in queues.items():
                worker = self._workers.get(mailbox)
                if (worker is not None and not worker.done()) or queue[0].key in self._rejected:
                    continue  # busy (it re-reads when done), or blocked by a refused item
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
                self._rejected.add(item.key)
                _log.error("an outbox item names a mailbox with no write capability registered")
                return
            except Rejected as exc:
                self._rejected.add(item.key)
                _log.warning("the relay refused an outbox item (%s)", exc.code)
                if self._on_rejected is not None:
                    await self._on_rejected(item, exc)
                return  # later items of this mailbox wait: order is kept
            await self._source.acknowledge(item.key, result.seq)
            self._acked.add(item.key)
