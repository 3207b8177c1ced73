"""One protocol session with a relay: connect, authenticate, request, receive pushes.

This is the low-level layer: one WebSocket, requests matched to answers by id,
pushes delivered through :meth:`RelaySession.next_event`. Reconnection, cursors and
the outbox are built on top of it.

The relay is untrusted. A WebSocket message larger than the protocol's largest frame
(``relay.protocol.SERVER_FRAME_BYTES_MAX``) is refused from its header, before its
payload is read; every frame, and the result fields of every answer, are checked
against the protocol (``relay.protocol.decode_server_frame``, ``decode_answer``). A
message that fails any check is a protocol error: the session closes (code 1002, or
1009 for size) and every waiting request fails with :class:`ProtocolMismatch`; nothing
from that message reaches the caller, and what was received before it stays valid.
Frames of an unknown type are ignored (``docs/relay-protocol.md`` §15).

Pushes, ``revoked`` and unmatched ``err`` frames wait in a queue for the caller. It is
bounded: with :data:`QUEUED_FRAMES` frames waiting, the session stops reading the
WebSocket (so TCP pushes back on the relay) until the caller takes some; answers to
requests behind them wait too, so the caller must keep taking frames without waiting
on a request (``RelayConnection``'s pump never waits).
"""

from __future__ import annotations

import asyncio
import itertools
import ssl as ssl_module
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgpack

from relay.errors import ProtocolViolation, UnsupportedVersion
from relay.protocol import (
    SERVER_FRAME_BYTES_MAX,
    ErrFrame,
    Hello,
    OkFrame,
    Push,
    Revoked,
    ServerFrame,
    UnknownFrame,
    auth_message,
    decode_answer,
    decode_server_frame,
    rotate_message,
)

from .capability import MailboxCapability, new_mailbox_id
from .errors import ProtocolMismatch, Unreachable, rejected

__all__ = [
    "MAX_MESSAGE_BYTES",
    "QUEUED_FRAMES",
    "MailboxCapability",
    "RedirectRefused",
    "RelaySession",
    "http_session",
    "new_mailbox_id",
]


class RedirectRefused(aiohttp.ClientError):
    """The relay answered the WebSocket upgrade with a redirect, which is not followed."""


async def _refuse_redirect(*_: object) -> None:
    # A relay (or whoever answers for its address) must not send the client to another
    # host or scheme: a wss:// relay could send it to a cleartext ws:// one.
    raise RedirectRefused("the relay answered with a redirect")


def _shown(url: str) -> str:
    """A relay URL as errors may show it: without its query (an admission token) or
    any user and password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def http_session(connector: aiohttp.BaseConnector | None = None) -> aiohttp.ClientSession:
    """The HTTP client sessions to relays use: one that never follows a redirect."""
    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(_refuse_redirect)
    return aiohttp.ClientSession(connector=connector, trace_configs=[trace])


#: The largest WebSocket message accepted from a relay: the protocol's largest frame.
MAX_MESSAGE_BYTES = SERVER_FRAME_BYTES_MAX
#: aiohttp refuses a message of ``max_msg_size`` bytes or more (checked on each frame
#: header, before the payload is buffered), so the setting is one above the largest.
_MAX_MSG_SIZE = MAX_MESSAGE_BYTES + 1

#: Frames (pushes, revocations, unmatched errors) queued for the caller before reading pauses.
QUEUED_FRAMES = 1024

_Pending = tuple[str, dict[str, Any], "asyncio.Future[dict[str, Any]]"]


class RelaySession:
    """A connected relay session. Use :meth:`connect`; close with :meth:`close`."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, http: aiohttp.ClientSession, own: bool
    ) -> None:
        self._ws = ws
        self._http = http
        self._own_http = own
        self._ids = itertools.count(1)
        #: request id -> (op, request fields, future of the answer's checked fields)
        self._pending: dict[int, _Pending] = {}
        self._events: asyncio.Queue[Push | Revoked | ErrFrame] = asyncio.Queue()
        #: Set when the queue has room (see QUEUED_FRAMES), and once closing.
        self._room = asyncio.Event()
        self._room.set()
        #: Set when a frame was queued or the reader stopped (wakes :meth:`next_frame`).
        self._wake = asyncio.Event()
        self._closing = False
        self.hello: Hello | None = None
        self._hello_seen = asyncio.Event()
        self._reader = asyncio.create_task(self._read_loop(), name="relay-session-reader")
        self.close_code: int | None = None
        #: Why this session closed itself, if the relay broke the protocol.
        self.protocol_error: ProtocolMismatch | None = None

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
            ProtocolMismatch: it does not speak this protocol (or broke it before the hello).
        """
        own = http is None
        client = http or http_session()
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
        # cancellation that arrives as the inner call completes, and a closing
        # RelayConnection would then wait forever for its runner.
        try:
            async with asyncio.timeout(timeout):
                ws = await client.ws_connect(
                    url,
                    max_msg_size=_MAX_MSG_SIZE,
                    heartbeat=30.0,
                    ssl=ssl if ssl is not None else True,
                    timeout=aiohttp.ClientWSTimeout(ws_close=timeout),
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if own:
                await client.close()
            raise Unreachable(
                f"Cannot reach the relay at {_shown(url)}: {exc.__class__.__name__}."
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
            if session.protocol_error is not None:
                raise session.protocol_error
            raise ProtocolMismatch("The relay closed the connection before its hello.")
        return session

    @property
    def nonce(self) -> bytes:
        assert self.hello is not None
        return self.hello.nonce

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def _read_loop(self) -> None:
        error: ProtocolMismatch | None = None
        try:
            async for msg in self._ws:
                error = self._receive(msg)
                if error is not None:
                    break
                if not self._events.empty():
                    self._wake.set()
                    if self._events.qsize() >= QUEUED_FRAMES and not self._closing:
                        self._room.clear()
                        await self._room.wait()  # the caller takes frames; TCP waits
            if error is not None:
                self.protocol_error = error
                self._fail_pending(error)  # now, not after the close handshake
                if not self._ws.closed:
                    await self._ws.close(code=aiohttp.WSCloseCode.PROTOCOL_ERROR)
        finally:
            self.close_code = self._ws.close_code
            self._hello_seen.set()
            self._wake.set()
            self._fail_pending(error)

    def _fail_pending(self, error: ProtocolMismatch | None) -> None:
        for _, _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(
                    Unreachable("The relay connection closed.")
                    if error is None
                    else ProtocolMismatch(str(error))
                )
        self._pending.clear()

    def _receive(self, msg: aiohttp.WSMessage) -> ProtocolMismatch | None:
        """Handle one WebSocket message; a protocol error to close the session on, or None."""
        if msg.type == aiohttp.WSMsgType.ERROR:
            if not isinstance(msg.data, aiohttp.WebSocketError):
                return None  # the connection failed; the loop ends with it
            if msg.data.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                return ProtocolMismatch(
                    "The relay sent a message larger than the protocol allows "
                    f"({MAX_MESSAGE_BYTES} bytes); the connection was closed."
                )
            return ProtocolMismatch("The relay broke the WebSocket protocol.")
        if msg.type == aiohttp.WSMsgType.TEXT:
            return ProtocolMismatch("The relay sent a text message; its frames are binary.")
        if msg.type != aiohttp.WSMsgType.BINARY:
            return None
        try:
            frame = decode_server_frame(msg.data)
        except UnsupportedVersion:
            return ProtocolMismatch("The relay speaks another version of the protocol.")
        except ProtocolViolation as exc:
            return ProtocolMismatch(f"The relay sent an invalid frame: {exc.message}")
        return self._dispatch(frame)

    def _dispatch(self, frame: ServerFrame) -> ProtocolMismatch | None:
        if isinstance(frame, UnknownFrame):
            return None  # a later protocol's frame type: ignored
        if isinstance(frame, Hello):
            if self.hello is not None:
                return ProtocolMismatch("The relay sent a second hello.")
            self.hello = frame
            self._hello_seen.set()
            return None
        if self.hello is None:
            return ProtocolMismatch("The relay's first frame was not a hello.")
        if isinstance(frame, OkFrame):
            pending = self._pending.pop(frame.id, None)
            if pending is None:
                return None  # the answer to a request that gave up waiting
            op, request, fut = pending
            try:
                result = decode_answer(op, frame.fields, request)
            except ProtocolViolation as exc:
                error = ProtocolMismatch(f"The relay's answer to '{op}' is invalid: {exc.message}")
                if not fut.done():
                    fut.set_exception(ProtocolMismatch(str(error)))
                return error
            if not fut.done():
                fut.set_result(result)
        elif isinstance(frame, ErrFrame):
            pending = self._pending.pop(frame.id, None) if frame.id is not None else None
            if pending is not None and not pending[2].done():
                pending[2].set_exception(
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
        return None

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
        """Send one request and wait for its answer's fields, checked against the protocol.

        Raises:
            Rejected: the relay answered with an error (the subclass for its code).
            Unreachable: the connection closed first.
            ProtocolMismatch: the answer, or another frame meanwhile, broke the protocol;
                the session is closed.
        """
        if self._reader.done() or self._ws.closed:  # no answer could ever be matched
            raise Unreachable("The relay connection closed.")
        request_id = self.next_id()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (op, fields, fut)
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
            frame = await self._events.get()
        self._taken()
        return frame

    async def next_frame(self) -> Push | Revoked | ErrFrame | None:
        """The next push, revocation or unmatched error frame; None once the session has
        closed and every frame received before was taken."""
        while self._events.empty():
            if self._reader.done():
                return None
            self._wake.clear()
            await self._wake.wait()
        frame = self._events.get_nowait()
        self._taken()
        return frame

    def _taken(self) -> None:
        if self._events.qsize() < QUEUED_FRAMES:
            self._room.set()

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
        self._closing = True
        self._room.set()  # a reader waiting for room reads on to the close
        await self._ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)
        if self._own_http:
            await self._http.close()
