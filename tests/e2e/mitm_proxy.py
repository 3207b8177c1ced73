"""A man in the middle between a real client and the real relay, for the ordering tests.

Theory of operation
-------------------
One :class:`MitmProxy` is an aiohttp server on ``127.0.0.1:0``. Each WebSocket a
client opens to it becomes a :class:`Link`: the proxy opens its own WebSocket to the
relay and pumps messages both ways. Client frames (requests) pass unchanged. Relay
frames pass through the proxy's current :class:`Mode`, which a test may change at
any time (set up a room in ``PASS``, then switch):

* ``PASS``: as they come.
* ``REORDER``: frames are swapped in adjacent pairs (the first of a pair is held
  until the next arrives, which goes out before it); a frame left alone is released
  after ``lone_delay`` seconds.
* ``DUPLICATE``: every frame but ``hello`` is sent twice.
* ``REPLAY``: every second push is followed by an older push, replayed from any
  earlier connection of this proxy.
* ``DELAY``: every frame waits up to ``max_delay`` seconds (order kept).
* ``DROP``: every ``drop_every``-th push is not forwarded; the connection is cut
  there instead (both sockets aborted), at most ``max_drops`` times.
* ``FLIP``: pushes have a bit flipped: every third in its blob (the ciphertext), the
  one after it somewhere in the frame's header (type, version, mailbox, seq); the
  third passes. :attr:`MitmProxy.flipped` keeps the original blobs that were hit.

Nothing here decodes with the project's own code: frames are plain msgpack maps,
so the proxy also forwards what the client would refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import aiohttp
import msgpack
from aiohttp import web

__all__ = ["Link", "MitmProxy", "Mode"]


class Mode(Enum):
    PASS = "pass"
    REORDER = "reorder"
    DUPLICATE = "duplicate"
    REPLAY = "replay"
    DELAY = "delay"
    DROP = "drop"
    FLIP = "flip"


def _kind(raw: bytes) -> tuple[str | None, bytes | None]:
    """The frame's type and, for a push, its blob (None when it is not a msgpack map)."""
    try:
        frame = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception:
        return None, None
    if not isinstance(frame, dict):
        return None, None
    kind = frame.get("t")
    blob = frame.get("blob")
    return (kind if isinstance(kind, str) else None), (blob if isinstance(blob, bytes) else None)


@dataclass
class Link:
    """One proxied connection: the client's socket and the proxy's socket to the relay."""

    number: int
    request: web.Request
    client_ws: web.WebSocketResponse
    relay_ws: aiohttp.ClientWebSocketResponse
    #: REORDER: the frame waiting for its pair, and the task that releases it alone.
    held: bytes | None = None
    release: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, raw: bytes) -> None:
        if not self.client_ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.client_ws.send_bytes(raw)

    def abort(self) -> None:
        """Cut both sockets at once, without a close handshake."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        with contextlib.suppress(Exception):
            self.relay_ws._response.connection.transport.abort()  # type: ignore[union-attr]


class MitmProxy:
    """A man in the middle in front of the relay at ``upstream``; see the module docstring."""

    def __init__(
        self,
        upstream: str,
        mode: Mode = Mode.PASS,
        *,
        seed: int = 0,
        lone_delay: float = 0.15,
        max_delay: float = 0.2,
        drop_every: int = 3,
        max_drops: int = 4,
    ) -> None:
        self.upstream = upstream
        self.mode = mode
        self.lone_delay = lone_delay
        self.max_delay = max_delay
        self.drop_every = drop_every
        self.max_drops = max_drops
        self.rng = random.Random(seed)
        #: What each mode did: "swapped", "released", "duplicated", "replayed",
        #: "delayed", "dropped", "flipped_blob", "flipped_header", "pushes".
        self.stats: Counter[str] = Counter()
        #: The original blobs of pushes whose blob had a bit flipped.
        self.flipped: list[bytes] = []
        self.links: list[Link] = []
        self._pushes: list[bytes] = []  # raw push frames forwarded, for REPLAY
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def start(self) -> MitmProxy:
        app = web.Application()
        app.router.add_get("/v1/ws", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._http = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        for link in list(self.links):
            with contextlib.suppress(Exception):
                await link.relay_ws.close()
            with contextlib.suppress(Exception):
                await link.client_ws.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the proxy -----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        client_ws = web.WebSocketResponse(max_msg_size=0)
        await client_ws.prepare(request)
        assert self._http is not None
        try:
            relay_ws = await self._http.ws_connect(self.upstream, max_msg_size=0)
        except aiohttp.ClientError:
            await client_ws.close()
            return client_ws
        link = Link(len(self.links) + 1, request, client_ws, relay_ws)
        self.links.append(link)
        up = asyncio.create_task(self._pump_up(link))
        down = asyncio.create_task(self._pump_down(link))
        self._tasks.update((up, down))
        try:
            await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down, link.release):
                if task is not None:
                    task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            self._tasks.difference_update((up, down))
            with contextlib.suppress(Exception):
                await relay_ws.close()
            with contextlib.suppress(Exception):
                await client_ws.close()
        return client_ws

    async def _pump_up(self, link: Link) -> None:
        async for msg in link.client_ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                await link.relay_ws.send_bytes(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                await link.relay_ws.send_str(msg.data)

    async def _pump_down(self, link: Link) -> None:
        async for msg in link.relay_ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            if not await self._down(link, bytes(msg.data)):
                return

    async def _down(self, link: Link, raw: bytes) -> bool:
        """Forward one relay frame as the mode says; False once the link is cut."""
        kind, blob = _kind(raw)
        push = kind == "push"
        if push:
            self.stats["pushes"] += 1
        mode = self.mode
        if mode is Mode.REORDER:
            await self._reorder(link, raw)
        elif mode is Mode.DUPLICATE:
            await link.send(raw)
            if kind != "hello":  # a second hello is a protocol error, not a duplicate
                await link.send(raw)
                self.stats["duplicated"] += 1
        elif mode is Mode.REPLAY:
            await link.send(raw)
            if push:
                if self.stats["pushes"] % 2 == 0 and self._pushes:
                    await link.send(self.rng.choice(self._pushes))
                    self.stats["replayed"] += 1
                self._pushes.append(raw)
        elif mode is Mode.DELAY:
            await asyncio.sleep(self.rng.uniform(0, self.max_delay))
            self.stats["delayed"] += 1
            await link.send(raw)
        elif mode is Mode.DROP:
            if (
                push
                and self.stats["pushes"] % self.drop_every == 0
                and self.stats["dropped"] < self.max_drops
            ):
                self.stats["dropped"] += 1
                link.abort()  # mid-stream: this push is lost with the connection
                return False
            await link.send(raw)
        elif mode is Mode.FLIP and push and blob is not None:
            await link.send(self._flip(raw, blob))
        else:
            await link.send(raw)
        return True

    async def _reorder(self, link: Link, raw: bytes) -> None:
        async with link.lock:
            if link.held is None:
                link.held = raw
                link.release = asyncio.create_task(self._release_alone(link, raw))
                return
            first, link.held = link.held, None
            if link.release is not None:
                link.release.cancel()
            await link.send(raw)
            await link.send(first)
            self.stats["swapped"] += 1

    async def _release_alone(self, link: Link, raw: bytes) -> None:
        await asyncio.sleep(self.lone_delay)
        async with link.lock:
            if link.held is raw:
                link.held = None
                await link.send(raw)
                self.stats["released"] += 1

    def _flip(self, raw: bytes, blob: bytes) -> bytes:
        turn = self.stats["pushes"] % 3
        start = raw.find(blob)
        if turn == 1 and blob and start >= 0:
            at = start + self.rng.randrange(len(blob))
            self.flipped.append(blob)
            self.stats["flipped_blob"] += 1
        elif turn == 2 and start > 0:
            at = self.rng.randrange(start)
            self.stats["flipped_header"] += 1
        else:
            return raw
        return raw[:at] + bytes([raw[at] ^ (1 << self.rng.randrange(8))]) + raw[at + 1 :]
