"""One protocol session with a relay: connect, authenticate, request, receive pushes.

This is the low-level layer: one WebSocket, requests matched to answers by id,
pushes delivered through :meth:`RelaySession.next_event`. Reconnection, cursors and
the outbox are built on top of it.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl as ssl_module
from typing import Any

import aiohttp
import msgpack

from relay.errors import ProtocolViolation
from relay.protocol import (
    ErrFrame,
    Hello,
    OkFrame,
    Push,
    Revoked,
    auth_message,
    decode_server_frame,
    rotate_message,
)

from .capability import MailboxCapability, new_mailbox_id
from .errors import ProtocolMismatch, Unreachable, rejected

__all__ = ["MailboxCapability", "RelaySession", "new_mailbox_id"]


class RelaySession:
    """A connected relay session. Use :meth:`connect`; close with :meth:`close`."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, http: aiohttp.ClientSession, own: bool
    ) -> None:
        self._ws = ws
        self._http = http
        self._own_http = own
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[Push | Revoked | ErrFrame] = asyncio.Queue()
        self.hello: Hello | None = None
        self._hello_seen = asyncio.Event()
        self._reader = asyncio.create_task(self._read_loop(), name="relay-session-reader")
        self.close_code: int | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        http: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        ssl: ssl_module.SSLContext | None = None,
    ) -> RelaySession:
        """Open ``url`` (``ws://`` or ``wss://host:port/v1/ws``) and wait for the relay's hello.

        Args:
            url: the relay's WebSocket URL.
            http: a client session to use (and not close); a private one otherwise.
            timeout: seconds for connecting and for the hello.
            ssl: an ``ssl.SSLContext`` for ``wss://`` relays with a private CA.

        Raises:
            Unreachable: the relay cannot be reached.
            ProtocolMismatch: it does not speak this protocol.
        """
        own = http is None
        client = http or aiohttp.ClientSession()
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
        # cancellation that arrives as the inner call completes, and a closing
        # RelayConnection would then wait forever for its runner.
        try:
            async with asyncio.timeout(timeout):
                ws = await client.ws_connect(
                    url,
                    max_msg_size=0,
                    heartbeat=30.0,
                    ssl=ssl if ssl is not None else True,
                    timeout=aiohttp.ClientWSTimeout(ws_close=timeout),
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if own:
                await client.close()
            raise Unreachable(
                f"Cannot reach the relay at {url}: {exc.__class__.__name__}."
            ) from None
        session = cls(ws, client, own)
        try:
            async with asyncio.timeout(timeout):
                await session._hello_seen.wait()
        except TimeoutError:
            await session.close()
            raise ProtocolMismatch("The relay did not greet this client.") from None
        if session.hello is None:
            await session.close()
            raise ProtocolMismatch("The relay's first frame was not a hello.")
        return session

    @property
    def nonce(self) -> bytes:
        assert self.hello is not None
        return self.hello.nonce

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def _read_loop(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    continue
                try:
                    frame = decode_server_frame(msg.data)
                except ProtocolViolation:
                    continue
                if isinstance(frame, Hello):
                    self.hello = frame
                    self._hello_seen.set()
                elif isinstance(frame, OkFrame):
                    fut = self._pending.pop(frame.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame.fields)
                elif isinstance(frame, ErrFrame):
                    fut = self._pending.pop(frame.id, None) if frame.id is not None else None
                    if fut is not None and not fut.done():
                        fut.set_exception(
                            rejected(
                                frame.code,
                                frame.message,
                                epoch=frame.epoch,
                                retry_after=frame.retry_after,
                            )
                        )
                    else:
                        self._events.put_nowait(frame)
                else:
                    self._events.put_nowait(frame)
        finally:
            self.close_code = self._ws.close_code
            self._hello_seen.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(Unreachable("The relay connection closed."))
            self._pending.clear()

    async def wait_closed(self) -> None:
        """Return once the connection has closed (by either side) and its reader has stopped.

        Events received before the close stay available through :meth:`next_event`.
        """
        await asyncio.wait({self._reader})

    async def send_raw(self, data: bytes | str) -> None:
        """Send arbitrary bytes (or text) as one frame; for tests and tools."""
        if isinstance(data, str):
            await self._ws.send_str(data)
        else:
            await self._ws.send_bytes(data)

    def next_id(self) -> int:
        return next(self._ids)

    async def call(self, op: str, *, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its answer's fields.

        Raises:
            Rejected: the relay answered with an error (the subclass for its code).
            Unreachable: the connection closed first.
        """
        if self._reader.done():  # closed: no answer could ever be matched
            raise Unreachable("The relay connection closed.")
        request_id = self.next_id()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        frame = {"v": 1, "t": "req", "id": request_id, "op": op, **fields}
        try:
            await self._ws.send_bytes(msgpack.packb(frame, use_bin_type=True))
        except (ConnectionError, RuntimeError) as exc:
            self._pending.pop(request_id, None)
            raise Unreachable("The relay connection closed.") from exc
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pending.pop(request_id, None)

    async def next_event(self, timeout: float | None = None) -> Push | Revoked | ErrFrame:
        """The next push, revocation or unmatched error frame."""
        async with asyncio.timeout(timeout):
            return await self._events.get()

    def pending_events(self) -> int:
        return self._events.qsize()

    # -- conveniences -------------------------------------------------------------------------

    async def create(self, cap: MailboxCapability, *, ttl: int | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"mailbox": cap.mailbox, **cap.public_keys()}
        if ttl is not None:
            fields["ttl"] = ttl
        return await self.call("create", **fields)

    async def auth(self, cap: MailboxCapability, role: str) -> None:
        key = cap.read if role == "read" else cap.write
        if key is None:
            raise ValueError(f"no {role} key for this mailbox")
        sig = key.sign(auth_message(self.nonce, "read" if role == "read" else "write", cap.mailbox))
        await self.call("auth", mailbox=cap.mailbox, role=role, sig=sig)

    async def rotate(self, cap: MailboxCapability, new: MailboxCapability) -> None:
        """Replace ``cap``'s keys with ``new``'s (same mailbox id), signed by ``cap.admin``."""
        if cap.admin is None:
            raise ValueError("rotating needs the current admin key")
        keys: dict[str, Any] = new.public_keys()
        admin = keys.get("admin_key", keys["write_key"])
        sig = cap.admin.sign(
            rotate_message(self.nonce, cap.mailbox, keys["read_key"], keys["write_key"], admin)
        )
        await self.call("rotate", mailbox=cap.mailbox, sig=sig, **keys)

    async def close(self) -> None:
        await self._ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)
        if self._own_http:
            await self._http.close()
