"""One client connection: its nonce, granted capabilities, send queue and rate limit.

Theory of operation: the WebSocket handler reads frames and handles them one at a
time, in order, so a client may pipeline requests and gets answers in the same order.
Everything sent (answers and pushes) goes through a bounded queue drained by one
writer task. Live pushes never wait: if the queue would exceed its byte limit the
client is too slow, and the connection is closed with :data:`CLOSE_SLOW_CONSUMER`
instead of letting memory grow. Backlog delivery does wait for room (backpressure),
since the backlog is bounded by the store.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
import time
from typing import TYPE_CHECKING, Any, Final

from aiohttp import WSCloseCode, web

from .protocol import Role, encode

if TYPE_CHECKING:
    from .config import Admission
    from .hub import Subscription
    from .metrics import RelayMetrics

__all__ = ["CLOSE_SLOW_CONSUMER", "Connection", "TokenBucket"]

log = logging.getLogger(__name__)

#: Close code for a client that does not read its pushes fast enough.
CLOSE_SLOW_CONSUMER: Final = 4008

#: Below this much unsent data in the socket's buffer, frames are written straight to
#: the transport; above it, they wait in the connection's queue for the writer task.
_DIRECT_WRITE_BELOW: Final = 64 * 1024


def _binary_frame_header(length: int) -> bytes:
    """RFC 6455 §5.2 header of an unmasked, final, binary frame (server to client)."""
    if length < 126:
        return struct.pack("!BB", 0x82, length)
    if length < 65536:
        return struct.pack("!BBH", 0x82, 126, length)
    return struct.pack("!BBQ", 0x82, 127, length)


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float, count: int = 1) -> float:
        """Take ``count`` tokens; returns 0 on success or the seconds to wait before retrying."""
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= count:
            self._tokens -= count
            return 0.0
        return (count - self._tokens) / self.rate


class Connection:
    """Per-connection state; created by the WebSocket handler, closed with it."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        nonce: bytes,
        *,
        queue_limit: int,
        bucket: TokenBucket,
        request_bucket: TokenBucket,
        metrics: RelayMetrics,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        self.nonce = nonce
        self.bucket = bucket
        self.request_bucket = request_bucket
        #: mailbox -> role -> the public key the grant was proven with, so a grant can be
        #: checked against the mailbox's current keys after a rotation elsewhere.
        self.grants: dict[bytes, dict[Role, bytes]] = {}
        self.subscriptions: dict[bytes, Subscription] = {}
        #: The admission token this connection presented, if the relay knows it: what
        #: lets it create mailboxes on a relay that admits only invited people.
        self.admission: Admission | None = None
        self.busy = 0  # requests being handled (graceful shutdown waits for 0)
        self._metrics = metrics
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._queue_limit = queue_limit
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._sending = False  # the writer task is between taking a frame and writing it
        self._held: list[bytes] | None = None  # frames collected by hold()
        self._held_bytes = 0
        # Frames usually go straight to the transport: waking a writer task for every
        # push cost more CPU than writing the frame. The task only drains the queue
        # that builds up while the socket is backed up.
        self._transport = transport
        self._writer = asyncio.create_task(self._write_loop(), name="relay-ws-writer")

    @property
    def closing(self) -> bool:
        return self._closing or self.ws.closed

    # -- capabilities -----------------------------------------------------------------------

    def granted(self, mailbox: bytes, role: Role) -> bool:
        return role in self.grants.get(mailbox, ())

    def grant(self, mailbox: bytes, role: Role, key: bytes) -> None:
        self.grants.setdefault(mailbox, {})[role] = key

    def revoke(self, mailbox: bytes) -> None:
        """Forget every grant and the subscription on ``mailbox`` (its keys were rotated)."""
        self.grants.pop(mailbox, None)
        sub = self.subscriptions.pop(mailbox, None)
        if sub is not None:
            sub.close()
        self.send({"t": "revoked", "mailbox": mailbox, "reason": "rotated"})

    # -- sending ------------------------------------------------------------------------------

    def send(self, frame: dict[str, Any], *, force: bool = True) -> bool:
        """Queue a frame. With ``force=False`` (live pushes), refuse and close the connection
        as a slow consumer when the queue is over its limit. Returns whether it was queued."""
        if self.closing:
            return False
        return self.send_encoded(encode(frame), force=force)

    def send_encoded(self, data: bytes, *, force: bool = True) -> bool:
        """:meth:`send` for a frame already encoded (one push encoded once for every
        subscriber)."""
        if self.closing:
            return False
        if not force and self._queued_bytes + self._held_bytes + len(data) > self._queue_limit:
            self._metrics.disconnects["slow_consumer"] += 1
            self.close_soon(
                CLOSE_SLOW_CONSUMER, "slow_consumer: reconnect and resume from your cursor"
            )
            return False
        if self._held is not None:
            self._held.append(data)
            self._held_bytes += len(data)
            return True
        transport = self._transport
        if (
            transport is not None
            and not self._queue
            and not self._sending
            and not transport.is_closing()
            and transport.get_write_buffer_size() < _DIRECT_WRITE_BELOW
        ):
            transport.write(_binary_frame_header(len(data)) + data)
            self._metrics.sent_bytes += len(data)
            return True
        self._enqueue(data)
        return True

    def hold(self) -> None:
        """Collect frames instead of writing them, until :meth:`release_held`.

        The hub holds every connection it pushes to while it fans out one committed
        batch, so each connection gets its share in one socket write, not one per
        frame (a group commit of a hundred appends gives a busy member several)."""
        if self._held is None:
            self._held = []

    def release_held(self) -> None:
        """Write the frames collected since :meth:`hold`, in order."""
        held, self._held = self._held, None
        self._held_bytes = 0
        if not held or self.closing:
            return
        transport = self._transport
        if (
            transport is not None
            and not self._queue
            and not self._sending
            and not transport.is_closing()
            and transport.get_write_buffer_size() < _DIRECT_WRITE_BELOW
        ):
            transport.write(b"".join(_binary_frame_header(len(d)) + d for d in held))
            self._metrics.sent_bytes += sum(len(d) for d in held)
            return
        for data in held:
            self._enqueue(data)

    def _enqueue(self, data: bytes) -> None:
        self._queue.append(data)
        self._queued_bytes += len(data)
        if self._queued_bytes >= self._queue_limit:
            self._room.clear()
        self._wakeup.set()

    async def wait_for_room(self) -> None:
        """Wait until the send queue is below its limit (backlog backpressure)."""
        while not self.closing and not self._room.is_set():
            await self._room.wait()

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue:
                    data = self._queue.popleft()
                    self._queued_bytes -= len(data)
                    if self._queued_bytes < self._queue_limit:
                        self._room.set()
                    self._sending = True
                    try:
                        await self.ws.send_bytes(data)  # waits while the socket is backed up
                    finally:
                        self._sending = False
                    self._metrics.sent_bytes += len(data)
        except (ConnectionError, RuntimeError):
            # The peer went away or the socket is closing; the reader loop notices too.
            self._closing = True
            self._room.set()

    async def flush(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until everything queued has been written."""
        deadline = time.monotonic() + timeout
        # Only used at shutdown; an event per frame would cost every send for this one use.
        while self._queue and not self.ws.closed and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    def close_soon(self, code: int, message: str) -> None:
        """Close the socket from a context that must not wait (e.g. a push)."""
        if self._closing:
            return
        self._closing = True
        self._room.set()
        asyncio.get_running_loop().create_task(self.ws.close(code=code, message=message.encode()))

    async def close(self, code: int = WSCloseCode.GOING_AWAY, message: str = "") -> None:
        self._closing = True
        self._room.set()
        if not self.ws.closed:
            await self.ws.close(code=code, message=message.encode())

    async def release(self) -> None:
        """Stop the writer and drop subscriptions; called once the socket is closed."""
        self._closing = True
        self._room.set()
        for sub in self.subscriptions.values():
            sub.close()
        self.subscriptions.clear()
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
