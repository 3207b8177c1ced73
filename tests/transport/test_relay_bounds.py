"""A relay cannot crash or bloat the client (issue #15, item 4).

Every WebSocket message is capped at the protocol's largest frame before its payload is
read, and every frame and every answer's fields are checked against the protocol. A
message that breaks it closes that session (1009 for size, 1002 otherwise) and fails
the requests waiting on it with ``ProtocolMismatch``; nothing else changes: what arrived
before it stays, and a ``RelayConnection`` reconnects and goes on from its cursors with
nothing lost or duplicated.

Two kinds of relay: a scripted one (an aiohttp server on 127.0.0.1 that sends exactly
the frames a test gives it, raw WebSocket bytes included), and the real relay behind the
adversarial suite's hostile proxy, which corrupts one chosen frame on its way down.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from aiohttp import WSCloseCode, WSMsgType, web

from backchannel.transport.connection import Backoff, ConnectionState, Entry, RelayConnection
from backchannel.transport.errors import ProtocolMismatch, Unreachable
from backchannel.transport.session import MAX_MESSAGE_BYTES, MailboxCapability, RelaySession
from relay.protocol import BLOB_BYTES_MAX, SERVER_FRAME_BYTES_MAX, Push
from tests.adversarial.hostile_relay import Frame, HostileRelay, Link
from tests.conftest import RunningRelay

MAILBOX = b"M" * 16
NONCE = b"N" * 32
HELLO: Frame = {"t": "hello", "nonce": NONCE, "limits": {"max_fetch": 256}, "server": "scripted"}


@pytest.fixture
def store_kind() -> str:
    """The transport does not care about the relay's storage: SQLite only."""
    return "sqlite"


def encode(frame: Frame) -> bytes:
    data: bytes = msgpack.packb({"v": 1, **frame}, use_bin_type=True)
    return data


def push(seq: Any, blob: Any = b"blob") -> bytes:
    return encode({"t": "push", "mailbox": MAILBOX, "seq": seq, "blob": blob})


# -- a scripted relay -------------------------------------------------------------------------

Script = Callable[["Scripted", web.WebSocketResponse, web.Request], Awaitable[None]]


@dataclass
class Scripted:
    """A WebSocket server that runs ``script`` on each connection and records what it saw."""

    script: Script
    port: int = 0
    #: the close code of each connection, as the client sent it
    close_codes: list[int | None] = field(default_factory=list)
    #: every request frame the client sent
    requests: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def next_request(self, ws: web.WebSocketResponse) -> dict[str, Any]:
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.BINARY, msg
        request: dict[str, Any] = msgpack.unpackb(msg.data, raw=False)
        self.requests.append(request)
        return request

    async def until_closed(self, ws: web.WebSocketResponse, timeout: float = 10) -> None:
        """Wait for the client's close frame (its code lands in ``close_codes``)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    msg = await ws.receive()
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                        break
        self.close_codes.append(ws.close_code)

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        try:
            await self.script(self, ws, request)
        finally:
            await ws.close()
        return ws

    async def start(self) -> Scripted:
        app = web.Application()
        app.router.add_get("/v1/ws", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], Awaitable[Scripted]]]:
    servers: list[Scripted] = []

    async def start(script: Script) -> Scripted:
        server = await Scripted(script).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        assert server.runner is not None
        await server.runner.cleanup()


async def close_codes(server: Scripted) -> list[int | None]:
    """The close codes the scripted relay saw, once it has seen one (it records it last)."""
    async with asyncio.timeout(10):
        while not server.close_codes:
            await asyncio.sleep(0.01)
    return server.close_codes


def answer_to(request: dict[str, Any], **fields: Any) -> bytes:
    return encode({"t": "ok", "id": request["id"], **fields})


# -- the three cases of the issue -----------------------------------------------------------


async def test_a_declared_300_mb_push_is_refused_from_its_header(scripted: Any) -> None:
    """Before: no cap (max_msg_size=0), so the client buffered the whole message (914 MB RSS
    for a 300 MB push). Now the frame header alone closes the session with 1009: the
    relay here sends the header and 64 KiB of payload, and the client never waits for more."""

    async def script(server: Scripted, ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.send_bytes(encode(HELLO))
        await server.next_request(ws)  # a fetch, left unanswered
        assert request.transport is not None
        declared = 300 * 1024 * 1024
        # A binary frame, final, unmasked (server to client), with a 64-bit length.
        request.transport.write(bytes([0x82, 127]) + declared.to_bytes(8, "big"))
        request.transport.write(b"\0" * 65536)
        await server.until_closed(ws)

    server = await scripted(script)
    session = await RelaySession.connect(server.url)
    with pytest.raises(ProtocolMismatch, match="larger than the protocol allows"):
        await session.call("fetch", mailbox=MAILBOX, after=0, timeout=10)
    await session.wait_closed()
    assert session.closed
    assert await close_codes(server) == [WSCloseCode.MESSAGE_TOO_BIG]
    assert session.protocol_error is not None
    await session.close()


async def test_the_largest_frame_passes_and_one_byte_more_closes_the_session(
    scripted: Any,
) -> None:
    """The cap is the protocol's largest frame exactly (aiohttp's own limit is exclusive)."""
    assert MAX_MESSAGE_BYTES == SERVER_FRAME_BYTES_MAX

    def padded(request: dict[str, Any], size: int) -> bytes:
        """An answer to ``ping`` of exactly ``size`` bytes, padded with unknown bin fields."""
        a = b = b"p" * BLOB_BYTES_MAX
        c = b""
        for _ in range(2):  # the second round corrects for c's longer length header
            c = b"p" * (len(c) + size - len(answer_to(request, a=a, b=b, c=c)))
        data = answer_to(request, a=a, b=b, c=c)
        assert len(data) == size, (len(data), size)
        return data

    async def script(server: Scripted, ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.send_bytes(encode(HELLO))
        first = await server.next_request(ws)
        await ws.send_bytes(padded(first, SERVER_FRAME_BYTES_MAX))
        second = await server.next_request(ws)
        await ws.send_bytes(padded(second, SERVER_FRAME_BYTES_MAX + 1))
        await server.until_closed(ws)

    server = await scripted(script)
    session = await RelaySession.connect(server.url)
    assert await session.call("ping", timeout=20) == {}  # unknown fields dropped
    with pytest.raises(ProtocolMismatch, match="larger"):
        await session.call("ping", timeout=20)
    await session.wait_closed()
    assert await close_codes(server) == [WSCloseCode.MESSAGE_TOO_BIG]
    await session.close()


def quick_backoff() -> Backoff:
    return Backoff(base=0.05, cap=0.3, rng=random.Random(1))


@pytest.fixture
async def proxied(relay: RunningRelay) -> AsyncIterator[tuple[HostileRelay, RelayConnection]]:
    """A RelayConnection to the real relay through a hostile proxy (passing all by default)."""
    proxy = await HostileRelay(relay.url, "client").start()
    conn = RelayConnection(proxy.url, backoff=quick_backoff(), request_timeout=10)
    await conn.start()
    yield proxy, conn
    await conn.close()
    await proxy.stop()


def corrupt_once(kind: str, change: Callable[[Frame], Frame]) -> Any:
    """An ``on_down`` hook that replaces the first frame that ``kind`` matches."""
    done: list[bool] = []

    async def hook(link: Link, frame: Frame) -> list[Frame] | None:
        if not done and matches(kind, frame):
            done.append(True)
            return [change(frame)]
        return None

    return hook


def matches(kind: str, frame: Frame) -> bool:
    if kind == "fetch":
        return frame.get("t") == "ok" and "head" in frame
    return frame.get("t") == kind


async def filled_mailbox(relay: RunningRelay, count: int) -> MailboxCapability:
    s = await relay.session()
    cap = await relay.mailbox(s)
    for n in range(1, count + 1):
        await s.call("append", mailbox=cap.mailbox, blob=b"entry-%d" % n)
    return cap


@pytest.mark.parametrize(
    "change",
    [
        # The fetch answer: bytes(2**62) raised MemoryError in RelayConnection.fetch.
        pytest.param(lambda f: {**f, "entries": [[1, 2**62]]}, id="entries-1-2**62"),
        # The 5,000-digit head: int() raised ValueError (the digit limit).
        pytest.param(lambda f: {**f, "head": "9" * 5000}, id="head-5000-digits"),
        pytest.param(lambda f: {**f, "head": "1"}, id="head-as-text"),
        pytest.param(lambda f: {**f, "entries": [["1", b"x"]]}, id="seq-as-text"),
        pytest.param(lambda f: {**f, "more": "no"}, id="more-as-text"),
    ],
)
async def test_a_bad_fetch_answer_costs_the_session_only(
    relay: RunningRelay,
    proxied: tuple[HostileRelay, RelayConnection],
    change: Callable[[Frame], Frame],
) -> None:
    proxy, conn = proxied
    cap = await filled_mailbox(relay, 3)
    conn.register(cap)
    proxy.on_down = corrupt_once("fetch", change)
    page = await conn.fetch(cap.mailbox, 0, timeout=20)  # retried on the next session
    assert page.entries == ((1, b"entry-1"), (2, b"entry-2"), (3, b"entry-3"))
    assert (page.head, page.more) == (3, False)
    assert len(proxy.links) == 2  # the bad answer closed the first connection
    assert proxy.links[0].client_ws.close_code == WSCloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda f: {**f, "blob": 2**62}, id="blob-as-integer"),
        pytest.param(lambda f: {**f, "seq": str(f["seq"])}, id="seq-as-text"),
        pytest.param(lambda f: {**f, "seq": 0}, id="seq-zero"),
        pytest.param(lambda f: {**f, "mailbox": f["mailbox"] * 2}, id="long-mailbox"),
        pytest.param(lambda f: {**f, "v": 2}, id="other-version"),
    ],
)
async def test_a_bad_push_closes_the_session_and_nothing_is_lost_or_repeated(
    relay: RunningRelay,
    proxied: tuple[HostileRelay, RelayConnection],
    change: Callable[[Frame], Frame],
) -> None:
    proxy, conn = proxied
    cap = MailboxCapability.generate()
    s = await relay.session()
    await s.create(cap)
    await s.auth(cap, "write")
    await s.call("append", mailbox=cap.mailbox, blob=b"entry-1")
    second = [False]

    async def hook(link: Link, frame: Frame) -> list[Frame] | None:
        if frame.get("t") == "push" and frame["seq"] == 2 and not second[0]:
            second[0] = True
            return [change(frame)]
        return None

    proxy.on_down = hook
    await conn.follow(cap)
    for n in (2, 3):
        await s.call("append", mailbox=cap.mailbox, blob=b"entry-%d" % n)
    entries: list[tuple[int, bytes]] = []
    while len(entries) < 3:
        event = await conn.next_event(20)
        if isinstance(event, Entry):
            entries.append((event.seq, event.blob))
            await conn.ack(event.mailbox, event.seq)
        else:
            assert isinstance(event, ConnectionState), event
    assert entries == [(1, b"entry-1"), (2, b"entry-2"), (3, b"entry-3")]
    assert conn.cursor(cap.mailbox) == 3
    assert second[0] and len(proxy.links) == 2
    assert proxy.links[0].client_ws.close_code == WSCloseCode.PROTOCOL_ERROR


# -- one bad message, whatever it is: that session closes, nothing else changes ---------------

BAD_MESSAGES: dict[str, bytes | str] = {
    "not msgpack": b"\xc1garbage",
    "not a map": msgpack.packb([1, 2, 3]),
    "text message": '{"t": "push"}',
    "second hello": encode(HELLO),
    "other version": msgpack.packb({"v": 2, "t": "push", "mailbox": MAILBOX, "seq": 3}),
    "push seq 0": push(0),
    "push seq above u64": push(2**64 - 1),
    "push blob as integer": push(3, 2**62),
    "push seq as text": push("3"),
    "push blob over the ceiling": push(3, b"x" * (BLOB_BYTES_MAX + 1)),
    "err code of 5000 chars": encode({"t": "err", "code": "c" * 5000, "message": "m"}),
    "err retry_after NaN": encode(
        {"t": "err", "code": "rate_limited", "message": "m", "retry_after": float("nan")}
    ),
    "revoked reason as integer": encode({"t": "revoked", "mailbox": MAILBOX, "reason": 7}),
    "deep nesting": b"\x91" * 100_000 + b"\xc0",
    "bytes map key": msgpack.packb({b"t": "push"}, use_bin_type=True),
    "extension type": msgpack.packb({"v": 1, "t": "ok", "id": 1, "x": msgpack.ExtType(1, b"x")}),
}


@pytest.mark.parametrize("bad", list(BAD_MESSAGES), ids=list(BAD_MESSAGES))
async def test_one_bad_message_closes_only_its_session(scripted: Any, bad: str) -> None:
    async def script(server: Scripted, ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.send_bytes(encode(HELLO))
        await server.next_request(ws)  # a fetch, left waiting
        await ws.send_bytes(push(1, b"before"))
        message = BAD_MESSAGES[bad]
        if isinstance(message, str):
            await ws.send_str(message)
        else:
            await ws.send_bytes(message)
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(push(2, b"after"))
        await server.until_closed(ws)

    server = await scripted(script)
    session = await RelaySession.connect(server.url)
    hello = session.hello
    with pytest.raises(ProtocolMismatch):
        await session.call("fetch", mailbox=MAILBOX, after=0, timeout=10)
    await session.wait_closed()
    assert session.closed and session.protocol_error is not None
    assert await close_codes(server) == [WSCloseCode.PROTOCOL_ERROR]
    assert session.hello is hello
    assert await session.next_event(1) == Push(MAILBOX, 1, b"before")  # what came before stays
    assert session.pending_events() == 0  # and nothing after
    with pytest.raises(Unreachable):
        await session.call("ping")
    await session.close()


async def test_a_bad_answer_fails_its_request_and_the_others_waiting(scripted: Any) -> None:
    async def script(server: Scripted, ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.send_bytes(encode(HELLO))
        requests = [await server.next_request(ws) for _ in range(2)]  # the ping is not answered
        fetch = next(r for r in requests if r["op"] == "fetch")
        await ws.send_bytes(answer_to(fetch, entries=[[1, 2**62]], head=1, more=False))
        await server.until_closed(ws)

    server = await scripted(script)
    session = await RelaySession.connect(server.url)
    fetch = asyncio.create_task(session.call("fetch", mailbox=MAILBOX, after=0, timeout=10))
    await asyncio.sleep(0)
    ping = asyncio.create_task(session.call("ping", timeout=10))
    with pytest.raises(ProtocolMismatch, match="answer to 'fetch'"):
        await fetch
    with pytest.raises(ProtocolMismatch):
        await ping
    assert await close_codes(server) == [WSCloseCode.PROTOCOL_ERROR]
    await session.close()


async def test_unknown_frame_types_and_late_answers_are_skipped(scripted: Any) -> None:
    async def script(server: Scripted, ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.send_bytes(encode({"t": "news", "anything": [1, {"x": b"y"}]}))
        await ws.send_bytes(encode(HELLO))
        ping = await server.next_request(ws)
        await ws.send_bytes(encode({"t": "ok", "id": 999, "entries": "not checked: no request"}))
        await ws.send_bytes(encode({"t": "news"}))
        await ws.send_bytes(answer_to(ping))
        await server.until_closed(ws)

    server = await scripted(script)
    session = await RelaySession.connect(server.url)
    assert await session.call("ping", timeout=10) == {}
    assert not session.closed
    await session.close()


@pytest.mark.parametrize(
    "first",
    [
        encode({"t": "push", "mailbox": MAILBOX, "seq": 1, "blob": b""}),
        encode({"t": "hello", "nonce": b"short", "limits": {}}),
        encode({"t": "hello", "nonce": NONCE, "limits": {"max_blob_bytes": 2**40}}),
        b"\x00",
    ],
    ids=["push", "short-nonce", "limit-over-ceiling", "garbage"],
)
async def test_a_bad_greeting_fails_the_connect_at_once(scripted: Any, first: bytes) -> None:
    async def script(server: Scripted, ws: web.WebSocketResponse, request: web.Request) -> None:
        await ws.send_bytes(first)
        await server.until_closed(ws)

    server = await scripted(script)
    with pytest.raises(ProtocolMismatch) as info:
        await RelaySession.connect(server.url, timeout=30)
    # Refused on the frame itself; before, the bad frame was skipped and the client waited
    # out its timeout for a hello.
    assert "did not greet" not in str(info.value)
    assert await close_codes(server) == [WSCloseCode.PROTOCOL_ERROR]


async def test_a_redirect_on_the_upgrade_is_not_followed() -> None:
    """A relay's address answers the WebSocket upgrade with a redirect (to another host,
    or from wss:// to cleartext): the client does not go there."""
    from aiohttp import web

    from backchannel.transport.errors import Unreachable
    from backchannel.transport.session import RelaySession

    hits: list[str] = []

    async def redirect(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if request.path == "/v1/ws":
            raise web.HTTPFound("/elsewhere")
        return web.Response(text="followed")

    app = web.Application()
    app.router.add_get("/{tail:.*}", redirect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/ws"
        with pytest.raises(Unreachable, match="RedirectRefused"):
            await RelaySession.connect(url, timeout=5.0)
        assert hits == ["/v1/ws"]
    finally:
        await runner.cleanup()


async def test_an_unreachable_relay_is_named_without_its_token() -> None:
    """A link's relay URL may carry an admission token (?admit=): errors never show it."""
    from backchannel.transport.errors import Unreachable
    from backchannel.transport.session import RelaySession

    with pytest.raises(Unreachable) as caught:
        await RelaySession.connect("ws://user:pw@127.0.0.1:9/v1/ws?admit=SECRET-TOKEN", timeout=5)
    assert "SECRET-TOKEN" not in str(caught.value) and "pw" not in str(caught.value)
    assert "ws://127.0.0.1:9/v1/ws" in str(caught.value)
