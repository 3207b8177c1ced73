"""A hostile relay: a programmable WebSocket interposer between real clients and a real relay.

Theory of operation
-------------------
One :class:`HostileRelay` is an aiohttp server on ``127.0.0.1:0``. Each WebSocket a
client opens to it becomes a :class:`Link`: the proxy opens its own WebSocket to the
real relay and pumps binary frames both ways. Every frame is decoded (msgpack, see
``relay/protocol.py``) to a ``dict`` and passed through an async hook:

* ``on_up(link, frame)``: client -> relay (requests: ``create``, ``auth``, ``append``...);
* ``on_down(link, frame)``: relay -> client (``hello``, ``ok``, ``err``, ``push``...).

A hook returns ``None`` to forward the (possibly mutated) frame, ``[]`` to drop it,
or a list of frames to send instead (duplicate, replace, reorder by holding frames
and sending them later with :meth:`Link.to_client` / :meth:`Link.to_relay`). A hook
may also sleep (delay: the link's frames in that direction queue behind it).

Give each client its own proxy (``relay_url=proxy.url``): "the connection of client
X" is then ``proxy_x.link``. Everything forwarded is recorded in :attr:`frames`
(F03 wire capture), every push delivered in :attr:`pushes` (replay), every append
sent in :attr:`appends` (reflection).

Injecting pushes: a client drops pushes whose ``seq`` is not above the last one it
saw, so :meth:`Link.inject_push` uses the next free number and shifts the link's
later real pushes (and ``subscribe``/``fetch`` cursors, ``fetch`` heads) by one, so
the client's stream stays consistent within the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgpack
from aiohttp import web

__all__ = ["Frame", "HostileRelay", "Link", "decode", "encode"]

Frame = dict[str, Any]
Hook = Callable[["Link", Frame], Awaitable[list[Frame] | None]]


def decode(raw: bytes) -> Frame:
    """One relay frame as a dict (keys are str, byte fields bytes)."""
    frame = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    assert isinstance(frame, dict)
    return frame


def encode(frame: Frame) -> bytes:
    """A dict back to a relay frame (adds ``v`` if absent)."""
    body = {"v": 1, **frame}
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


@dataclass
class Link:
    """One proxied client connection (client socket + upstream socket)."""

    proxy: HostileRelay
    number: int
    client_ws: web.WebSocketResponse
    relay_ws: aiohttp.ClientWebSocketResponse
    #: per mailbox: how many injected pushes shifted the real sequence numbers
    shift: dict[bytes, int] = field(default_factory=dict)
    #: per mailbox: highest seq delivered to the client (in the client's numbering)
    delivered: dict[bytes, int] = field(default_factory=dict)
    #: request id -> (op, mailbox) of the client's requests, to translate answers
    requests: dict[int, tuple[str, bytes | None]] = field(default_factory=dict)
    _send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def label(self) -> str:
        return f"{self.proxy.label}#{self.number}"

    async def to_client(self, frame: Frame) -> None:
        """Send ``frame`` to the client as is (no translation, but recorded)."""
        if frame.get("t") == "push":
            mb = bytes(frame["mailbox"])
            self.delivered[mb] = max(self.delivered.get(mb, 0), int(frame["seq"]))
            self.proxy.pushes.append((self, dict(frame)))
        self.proxy.frames.append(("down", self.label, dict(frame)))
        async with self._send_lock:
            if not self.client_ws.closed:
                await self.client_ws.send_bytes(encode(frame))

    async def to_relay(self, frame: Frame) -> None:
        """Send ``frame`` to the real relay as is (recorded)."""
        self.proxy.frames.append(("up", self.label, dict(frame)))
        if not self.relay_ws.closed:
            await self.relay_ws.send_bytes(encode(frame))

    async def inject_push(self, mailbox: bytes, blob: bytes) -> int:
        """Push ``blob`` on ``mailbox`` under the next free sequence number; returns it."""
        seq = self.delivered.get(mailbox, 0) + 1
        self.shift[mailbox] = self.shift.get(mailbox, 0) + 1
        await self.to_client({"t": "push", "mailbox": mailbox, "seq": seq, "blob": blob})
        return seq

    async def inject_frame(self, frame: Frame) -> None:
        """Any frame at all, to the client."""
        await self.to_client(frame)


class HostileRelay:
    """A proxy in front of the relay at ``upstream``; see the module docstring."""

    def __init__(self, upstream: str, label: str) -> None:
        self.upstream = upstream
        self.label = label
        self.on_up: Hook | None = None
        self.on_down: Hook | None = None
        self.links: list[Link] = []
        #: (direction, link label, frame) of everything forwarded or injected
        self.frames: list[tuple[str, str, Frame]] = []
        #: (link, push frame) of every push sent to the client
        self.pushes: list[tuple[Link, Frame]] = []
        #: every append request the client sent (before hooks)
        self.appends: list[Frame] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._numbers = itertools.count(1)
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def link(self) -> Link:
        """The newest connection (the client's current one)."""
        live = [lk for lk in self.links if not lk.client_ws.closed]
        assert live, f"{self.label}: no live connection"
        return live[-1]

    async def start(self) -> HostileRelay:
        app = web.Application()
        app.router.add_get("/v1/ws", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        for lk in list(self.links):
            with contextlib.suppress(Exception):
                await lk.relay_ws.close()
            with contextlib.suppress(Exception):
                await lk.client_ws.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def cut(self) -> None:
        """Close every current connection (the client reconnects through the proxy)."""
        for lk in list(self.links):
            with contextlib.suppress(Exception):
                await lk.client_ws.close()
            with contextlib.suppress(Exception):
                await lk.relay_ws.close()

    # -- queries -------------------------------------------------------------------------

    def push_frames(self, mailbox: bytes | None = None) -> list[Frame]:
        return [f for _, f in self.pushes if mailbox is None or bytes(f["mailbox"]) == mailbox]

    def append_frames(self, mailbox: bytes | None = None) -> list[Frame]:
        return [f for f in self.appends if mailbox is None or bytes(f["mailbox"]) == mailbox]

    def wire_bytes(self) -> bytes:
        """Every frame forwarded either way, re-encoded (for greps)."""
        return b"".join(encode(f) for _, _, f in self.frames)

    # -- the proxy -----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        client_ws = web.WebSocketResponse(max_msg_size=0)
        await client_ws.prepare(request)
        assert self._session is not None
        try:
            relay_ws = await self._session.ws_connect(self.upstream, max_msg_size=0)
        except aiohttp.ClientError:
            await client_ws.close()
            return client_ws
        link = Link(self, next(self._numbers), client_ws, relay_ws)
        self.links.append(link)
        up = asyncio.create_task(self._pump_up(link))
        down = asyncio.create_task(self._pump_down(link))
        self._tasks.update((up, down))
        try:
            await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (up, down):
                t.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            self._tasks.difference_update((up, down))
            with contextlib.suppress(Exception):
                await relay_ws.close()
            with contextlib.suppress(Exception):
                await client_ws.close()
        return client_ws

    async def _pump_up(self, link: Link) -> None:
        async for msg in link.client_ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            frame = decode(msg.data)
            if frame.get("t") == "req":
                op = str(frame.get("op"))
                mb = frame.get("mailbox")
                link.requests[int(frame["id"])] = (op, bytes(mb) if mb is not None else None)
                if op == "append":
                    self.appends.append(dict(frame))
                if op in {"subscribe", "fetch"} and mb is not None:
                    s = link.shift.get(bytes(mb), 0)
                    frame["after"] = max(0, int(frame["after"]) - s)
            out = [frame] if self.on_up is None else await self.on_up(link, frame)
            for f in [frame] if out is None else out:
                await link.to_relay(f)

    async def _pump_down(self, link: Link) -> None:
        async for msg in link.relay_ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            frame = decode(msg.data)
            kind = frame.get("t")
            if kind == "push":
                mb = bytes(frame["mailbox"])
                frame["seq"] = int(frame["seq"]) + link.shift.get(mb, 0)
            elif kind == "ok" and frame.get("id") is not None:
                op, mb = link.requests.get(int(frame["id"]), ("", None))
                if op == "fetch" and mb is not None and "head" in frame:
                    s = link.shift.get(mb, 0)
                    frame["head"] = int(frame["head"]) + s
                    frame["entries"] = [[int(q) + s, b] for q, b in frame.get("entries", [])]
            out = [frame] if self.on_down is None else await self.on_down(link, frame)
            for f in [frame] if out is None else out:
                await link.to_client(f)
