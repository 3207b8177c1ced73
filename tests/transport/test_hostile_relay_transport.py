"""A relay that lies, withholds, floods or refuses cannot make the transport lose an
entry silently, hang, or grow without bound (issue #15, items 4 to 6).

Each test is a red-team proof of concept turned around: before the fix the attack
worked (the assertion marked "before" held), now the client delivers, closes the
session, waits or says what is missing. Two kinds of relay: a scripted one (an aiohttp
server on 127.0.0.1 answering each request through a function) and the real relay
behind the adversarial suite's hostile proxy, which rewrites chosen frames.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack
import pytest
from aiohttp import WSMsgType, web

from backchannel.transport import connection as connection_module
from backchannel.transport.connection import (
    Entry,
    GapOpen,
    LateEntry,
    LinkState,
    RelayConnection,
    Skipped,
    TransportEvent,
)
from backchannel.transport.session import QUEUED_FRAMES, MailboxCapability
from tests.adversarial.hostile_relay import Frame, HostileRelay, Link
from tests.conftest import RunningRelay

from .test_connection import quick_backoff

NONCE = b"N" * 32


@pytest.fixture
def store_kind() -> str:
    """The transport does not care about the relay's storage: SQLite only."""
    return "sqlite"


# -- a scripted relay -------------------------------------------------------------------------


def encode(frame: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb({"v": 1, **frame}, use_bin_type=True)
    return data


def hello() -> bytes:
    return encode({"t": "hello", "nonce": NONCE, "limits": {}, "server": "scripted"})


def ok(request: dict[str, Any], **fields: Any) -> bytes:
    return encode({"t": "ok", "id": request["id"], **fields})


def err(request: dict[str, Any], code: str) -> bytes:
    return encode({"t": "err", "id": request["id"], "code": code, "message": ""})


def push(mailbox: bytes, seq: int, blob: bytes = b"x") -> bytes:
    return encode({"t": "push", "mailbox": mailbox, "seq": seq, "blob": blob})


Handler = Callable[["Fake", web.WebSocketResponse], Awaitable[None]]


class Fake:
    """Runs ``handler`` on each connection; records every request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def count(self, op: str) -> int:
        return sum(1 for r in self.requests if r.get("op") == op)

    async def recv(self, ws: web.WebSocketResponse, timeout: float = 30) -> dict[str, Any] | None:
        msg = await ws.receive(timeout=timeout)
        if msg.type != WSMsgType.BINARY:
            return None
        request: dict[str, Any] = msgpack.unpackb(msg.data, raw=False)
        self.requests.append(request)
        return request

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        with contextlib.suppress(Exception):
            await self.handler(self, ws)
        with contextlib.suppress(Exception):
            await ws.close()
        return ws


@pytest.fixture
async def fake() -> AsyncIterator[Callable[[Handler], Awaitable[Fake]]]:
    started: list[Fake] = []

    async def start(handler: Handler) -> Fake:
        server = Fake(handler)
        app = web.Application()
        app.router.add_get("/v1/ws", server._handle)
        server.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await server.runner.setup()
        site = web.TCPSite(server.runner, "127.0.0.1", 0)
        await site.start()
        server.port = server.runner.addresses[0][1]
        started.append(server)
        return server

    yield start
    for server in started:
        assert server.runner is not None
        await server.runner.cleanup()


async def set_up(fake: Fake, ws: web.WebSocketResponse) -> None:
    """Answer the setup of one mailbox (auth, fetch: empty, subscribe)."""
    while True:
        request = await fake.recv(ws)
        assert request is not None
        if request["op"] == "fetch":
            await ws.send_bytes(ok(request, entries=[], head=0, more=False))
        else:
            await ws.send_bytes(ok(request))
        if request["op"] == "subscribe":
            return


async def drain(conn: RelayConnection, seconds: float) -> list[TransportEvent]:
    """Every event for ``seconds``, acknowledging entries as a consumer does."""
    out: list[TransportEvent] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        try:
            event = await conn.next_event(max(0.01, end - loop.time()))
        except TimeoutError:
            break
        out.append(event)
        if isinstance(event, Entry):
            await conn.ack(event.mailbox, event.seq)
    return out


def entries(events: list[TransportEvent]) -> list[tuple[int, bytes]]:
    return [(e.seq, e.blob) for e in events if isinstance(e, Entry)]


async def pair(
    relay: RunningRelay, proxy: HostileRelay, **kwargs: Any
) -> tuple[RelayConnection, RelayConnection, MailboxCapability]:
    """A writer straight to the relay and a reader through ``proxy``, following one mailbox."""
    writer = RelayConnection(relay.url, backoff=quick_backoff())
    reader = RelayConnection(proxy.url, backoff=quick_backoff(), **kwargs)
    cap = MailboxCapability.generate()
    await writer.start()
    await writer.create_mailbox(cap)
    await reader.follow(cap)
    await reader.start()
    await reader.wait_connected()
    return writer, reader, cap


# -- item 4: numbers skipped on the relay's word ------------------------------------------------


async def test_a_push_for_a_number_the_fetch_left_out_is_delivered_late_and_reported(
    relay: RunningRelay,
) -> None:
    """Before: the fetch answer left entry 1 out, the cursor moved past it, and its push,
    arriving later, was dropped as a duplicate: entry 1 never came, and nothing said so."""
    proxy = await HostileRelay(relay.url, "reader").start()
    stash: list[tuple[Link, Frame]] = []

    async def down(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("t") == "push" and f["seq"] == 1:
            stash.append((link, f))
            return []  # late
        if f.get("t") == "ok" and f.get("entries"):
            return [{**f, "entries": [e for e in f["entries"] if e[0] != 1]}]
        if f.get("t") == "push" and f["seq"] == 2:

            async def late() -> None:
                await asyncio.sleep(1.0)  # after the fill's fetch
                await stash[0][0].to_client(stash[0][1])

            asyncio.get_running_loop().create_task(late())
        return None

    proxy.on_down = down
    writer, reader, cap = await pair(relay, proxy)
    try:
        await writer.append(cap.mailbox, b"one")
        await writer.append(cap.mailbox, b"two")
        events = await drain(reader, 3)
        assert stash  # the push of entry 1 did reach the client
        assert entries(events) == [(2, b"two"), (1, b"one")]  # before: [(2, b"two")]
        said = [e for e in events if isinstance(e, Skipped | LateEntry)]
        assert said == [Skipped(cap.mailbox, 1, 1), LateEntry(cap.mailbox, 1)]
    finally:
        await reader.close()
        await writer.close()
        await proxy.stop()


async def test_one_fetch_answer_with_a_huge_head_moves_no_cursor(relay: RunningRelay) -> None:
    """Before: one answer with head 2**63-1 moved (and acknowledged) the cursor there, and
    every later entry of the session was dropped as already delivered."""
    proxy = await HostileRelay(relay.url, "reader").start()
    lied: list[int] = []

    async def down(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("t") == "push" and f["seq"] == 1 and not lied:
            return []  # withheld: the fill's fetch answers for it
        if f.get("t") == "ok" and "head" in f and f.get("entries") and not lied:
            lied.append(1)
            return [{**f, "head": 2**63 - 1}]
        return None

    proxy.on_down = down
    acked: list[int] = []

    async def on_ack(mailbox: bytes, seq: int) -> None:
        acked.append(seq)

    writer, reader, cap = await pair(relay, proxy, on_ack=on_ack)
    try:
        await writer.append(cap.mailbox, b"one")
        await writer.append(cap.mailbox, b"two")  # push 2 is held, the fill fetches
        first = await drain(reader, 1.5)
        for i in range(5):
            await writer.append(cap.mailbox, b"later %d" % i)
        later = await drain(reader, 3)
        assert lied
        assert entries(first) == [(1, b"one"), (2, b"two")]
        assert entries(later) == [(3 + i, b"later %d" % i) for i in range(5)]  # before: []
        assert reader.cursor(cap.mailbox) == 7 and max(acked) == 7
    finally:
        await reader.close()
        await writer.close()
        await proxy.stop()


# -- items 2 and 3: refusals and lost answers while setting a mailbox up ------------------------


async def test_rate_limited_setup_waits_and_follows_on(relay: RunningRelay) -> None:
    """Before: one ``rate_limited`` answer to the setup's fetch unfollowed the mailbox for
    the rest of the process (a Revoked event, read by the engine as a log line)."""
    proxy = await HostileRelay(relay.url, "reader").start()
    refused: list[int] = []

    async def up(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("op") == "fetch" and not refused:
            refused.append(int(f["id"]))
            await link.to_client(
                {
                    "t": "err",
                    "id": f["id"],
                    "code": "rate_limited",
                    "message": "slow down",
                    "retry_after": 0.5,
                }
            )
            return []
        return None

    proxy.on_up = up
    writer, reader, cap = await pair(relay, proxy)
    try:
        for i in range(3):
            await writer.append(cap.mailbox, b"after %d" % i)
        events = await drain(reader, 3)
        assert refused
        assert entries(events) == [(1 + i, b"after %d" % i) for i in range(3)]
        assert reader.cursor(cap.mailbox) == 3  # still followed
    finally:
        await reader.close()
        await writer.close()
        await proxy.stop()


async def test_a_lost_answer_while_setting_up_drops_the_session(relay: RunningRelay) -> None:
    """Before: the setup fetch's answer was dropped, the request timed out, and the
    session stayed up, CONNECTED, with the mailbox unsubscribed: nothing was delivered
    until the connection happened to drop."""
    proxy = await HostileRelay(relay.url, "reader").start()
    dropped: list[int] = []

    async def down(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("t") == "ok" and not dropped:
            op, _ = link.requests.get(int(f["id"]), ("", None))
            if op == "fetch":
                dropped.append(int(f["id"]))
                return []
        return None

    proxy.on_down = down
    writer = RelayConnection(relay.url, backoff=quick_backoff())
    reader = RelayConnection(proxy.url, backoff=quick_backoff(), request_timeout=1.0)
    cap = MailboxCapability.generate()
    await writer.start()
    try:
        await writer.create_mailbox(cap)
        await reader.follow(cap)
        await reader.start()
        for i in range(3):
            await writer.append(cap.mailbox, b"msg %d" % i)
        events = await drain(reader, 5)
        assert dropped
        assert entries(events) == [(1 + i, b"msg %d" % i) for i in range(3)]  # before: []
        assert reader.state.state is LinkState.CONNECTED
    finally:
        await reader.close()
        await writer.close()
        await proxy.stop()


# -- item 8: a gap the relay will not fill ------------------------------------------------------


async def test_a_gap_the_relay_refuses_to_fill_is_reported_and_still_filled(
    fake: Callable[[Handler], Awaitable[Fake]],
) -> None:
    """Before: three ``internal`` answers to the fill's fetch, and the filler gave up in
    silence: entry 2 waited, held, with no event, until another push or session."""
    cap = MailboxCapability.generate()
    refusals = 5

    async def handler(server: Fake, ws: web.WebSocketResponse) -> None:
        nonlocal refusals
        await ws.send_bytes(hello())
        await set_up(server, ws)
        await ws.send_bytes(push(cap.mailbox, 2, b"two"))  # 1 withheld
        while (request := await server.recv(ws)) is not None:
            if request["op"] == "fetch" and refusals:
                refusals -= 1
                await ws.send_bytes(err(request, "internal"))
            elif request["op"] == "fetch":
                entries = [[1, b"one"], [2, b"two"]]
                await ws.send_bytes(ok(request, entries=entries, head=2, more=False))
            else:
                await ws.send_bytes(ok(request))

    server = await fake(handler)
    conn = RelayConnection(server.url, backoff=quick_backoff())
    await conn.follow(cap)
    await conn.start()
    try:
        events: list[TransportEvent] = []
        async with asyncio.timeout(30):
            while len(entries(events)) < 2:
                events += await drain(conn, 0.5)
        gaps = [e for e in events if isinstance(e, GapOpen)]
        assert gaps == [GapOpen(cap.mailbox, 0, 2)]  # said once
        assert entries(events) == [(1, b"one"), (2, b"two")]
    finally:
        await conn.close()


# -- items 5, 6, 7: nothing the relay sends grows the client without bound ----------------------


async def test_a_backlog_without_end_waits_for_the_consumer(
    fake: Callable[[Handler], Awaitable[Fake]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the setup read page after page (``more`` forever) into an unbounded queue,
    whatever the consumer had taken: 234 MiB for 60 pages, and never CONNECTED."""
    monkeypatch.setattr(connection_module, "QUEUE_ENTRIES", 1000, raising=False)
    per_page = 400

    async def handler(server: Fake, ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(hello())
        while (request := await server.recv(ws)) is not None:
            if request["op"] == "fetch":
                after = request["after"]
                entries = [[after + i + 1, bytes(100)] for i in range(per_page)]
                head = after + 10**9
                await ws.send_bytes(ok(request, entries=entries, head=head, more=True))
            else:
                await ws.send_bytes(ok(request))

    server = await fake(handler)
    cap = MailboxCapability.generate()
    conn = RelayConnection(server.url, backoff=quick_backoff())
    await conn.follow(cap)
    await conn.start()
    try:
        await asyncio.wait_for(conn.wait_connected(), 10)
        await asyncio.sleep(1)  # the consumer reads nothing
        fetched = server.count("fetch")
        assert fetched <= 3  # before: as many pages as the relay would send
        assert conn._queued_entries <= 1000 + per_page
        taken = 0
        async with asyncio.timeout(10):
            while taken < 3 * per_page:  # the consumer reads: the transport reads on
                event = await conn.next_event()
                if isinstance(event, Entry):
                    taken += 1
                    assert event.seq == taken
            while server.count("fetch") == fetched:
                await asyncio.sleep(0.05)
        assert conn._queued_entries <= 1000 + per_page
    finally:
        await conn.close()


async def test_a_flood_of_frames_is_read_no_faster_than_it_is_handled(
    fake: Callable[[Handler], Awaitable[Fake]],
) -> None:
    """Before: the session queued every frame the relay sent (200,000 small pushes: 200,000
    queued), and the pump made a task per frame. Now reading waits while QUEUED_FRAMES
    wait, and the pump keeps up."""
    cap = MailboxCapability.generate()
    frames = 30_000
    sent = asyncio.Event()

    async def handler(server: Fake, ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(hello())
        await set_up(server, ws)
        frame = push(b"Z" * 16, 1, b"")  # a mailbox not followed
        for _ in range(frames // 1000):
            await asyncio.gather(*(ws.send_bytes(frame) for _ in range(1000)))
        sent.set()
        while await server.recv(ws, timeout=60) is not None:
            pass

    server = await fake(handler)
    conn = RelayConnection(server.url, backoff=quick_backoff())
    await conn.follow(cap)
    await conn.start()
    peak = 0
    try:
        async with asyncio.timeout(60):
            while not sent.is_set() or (conn._session and conn._session.pending_events()):
                session = conn._session
                if session is not None:
                    peak = max(peak, session.pending_events())
                await asyncio.sleep(0)
        assert peak <= QUEUED_FRAMES + 1
        assert conn.state.state is LinkState.CONNECTED
    finally:
        await conn.close()


async def test_revoked_frames_for_one_mailbox_start_one_recovery(
    fake: Callable[[Handler], Awaitable[Fake]],
) -> None:
    """Before: each ``revoked`` frame started a recovery task (20,000 frames: 20,000 tasks
    waiting on the mailbox lock behind a fetch the relay never answers)."""
    cap = MailboxCapability.generate()
    frame = encode({"t": "revoked", "mailbox": cap.mailbox, "reason": "rotated"})
    sent = asyncio.Event()

    async def handler(server: Fake, ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(hello())
        await set_up(server, ws)
        for _ in range(5):
            await asyncio.gather(*(ws.send_bytes(frame) for _ in range(1000)))
        sent.set()
        while (request := await server.recv(ws, timeout=60)) is not None:
            if request["op"] == "auth":  # fetches are never answered
                await ws.send_bytes(ok(request))

    server = await fake(handler)
    conn = RelayConnection(server.url, backoff=quick_backoff(), request_timeout=60)
    await conn.follow(cap)
    await conn.start()
    peak = 0
    try:
        async with asyncio.timeout(30):
            while not sent.is_set() or (conn._session and conn._session.pending_events()):
                peak = max(peak, len(conn._session_tasks))
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        peak = max(peak, len(conn._session_tasks))
        assert peak <= 2  # one recovery (and at most a filler); before: thousands
    finally:
        await conn.close()
