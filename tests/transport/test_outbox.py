"""OutboxSender against the real relay: order per mailbox, lost answers, refused items."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator, Sequence

import pytest

from backchannel.transport import outbox as outbox_module
from backchannel.transport.connection import Backoff, RelayConnection
from backchannel.transport.errors import (
    ConnectionClosed,
    Denied,
    MailboxFull,
    Rejected,
    StaleEpoch,
    TooLarge,
)
from backchannel.transport.outbox import OutboxItem, OutboxSender, Verdict
from backchannel.transport.session import MailboxCapability
from tests.conftest import RelayFactory, RunningRelay


@pytest.fixture
def store_kind() -> str:
    """The transport does not care about the relay's storage: SQLite only."""
    return "sqlite"


class MemoryOutbox:
    """The caller's outbox, kept in memory: an OutboxSource."""

    def __init__(self) -> None:
        self.items: list[OutboxItem] = []
        self.acks: list[tuple[bytes, int]] = []

    def add(self, mailbox: bytes, blob: bytes, **kwargs: object) -> OutboxItem:
        item = OutboxItem(os.urandom(16), mailbox, blob, **kwargs)  # type: ignore[arg-type]
        self.items.append(item)
        return item

    async def pending(self) -> Sequence[OutboxItem]:
        return list(self.items)

    async def acknowledge(self, key: bytes, seq: int) -> None:
        self.acks.append((key, seq))
        self.items = [i for i in self.items if i.key != key]


class Forwarder:
    """A TCP hop in front of the relay that can swallow the relay's answers and cut the line."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.swallow_answers = False
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answers: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if answers and self.swallow_answers:
                        continue  # the relay did the work; the client never hears of it
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    def cut(self) -> None:
        """Drop every connection at once, as a network failure would."""
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def forwarder(relay: RunningRelay) -> AsyncIterator[Forwarder]:
    f = Forwarder(relay.port)
    await f.start()
    yield f
    await f.close()


@pytest.fixture
async def conn(relay: RunningRelay) -> AsyncIterator[RelayConnection]:
    c = RelayConnection(relay.url, backoff=Backoff(base=0.05, cap=0.3, rng=random.Random(3)))
    await c.start()
    yield c
    await c.close()


async def stored(relay: RunningRelay, cap: MailboxCapability) -> list[tuple[int, bytes]]:
    session = await relay.session()
    await session.auth(cap, "read")
    page = await session.call("fetch", mailbox=cap.mailbox, after=0)
    return [(seq, blob) for seq, blob in page["entries"]]


async def test_items_are_sent_in_order_per_mailbox_and_acknowledged(
    relay: RunningRelay, conn: RelayConnection
) -> None:
    caps = [MailboxCapability.generate() for _ in range(2)]
    for cap in caps:
        await conn.create_mailbox(cap)
    outbox = MemoryOutbox()
    items = [outbox.add(caps[i % 2].mailbox, b"item %d" % i) for i in range(12)]
    async with OutboxSender(conn, outbox) as sender:
        await asyncio.wait_for(sender.flush(), 20)
        later = outbox.add(caps[0].mailbox, b"later")
        sender.notify()
        await asyncio.wait_for(sender.flush(), 20)

    assert outbox.items == []
    assert sorted(k for k, _ in outbox.acks) == sorted(i.key for i in [*items, later])
    for n, cap in enumerate(caps):
        sent = [i.blob for i in items if i.mailbox == cap.mailbox] + ([b"later"] if n == 0 else [])
        assert await stored(relay, cap) == list(enumerate(sent, start=1))
    by_key = dict(outbox.acks)
    assert [by_key[i.key] for i in items if i.mailbox == caps[1].mailbox] == [1, 2, 3, 4, 5, 6]


async def test_a_lost_answer_is_retried_and_acknowledged_once(
    relay: RunningRelay, forwarder: Forwarder
) -> None:
    conn = RelayConnection(
        f"ws://127.0.0.1:{forwarder.port}/v1/ws",
        backoff=Backoff(base=0.05, cap=0.3, rng=random.Random(5)),
    )
    await conn.start()
    cap = MailboxCapability.generate()
    await conn.create_mailbox(cap)
    outbox = MemoryOutbox()
    sender = OutboxSender(conn, outbox)
    await sender.start()
    try:
        first = outbox.add(cap.mailbox, b"first")
        await asyncio.wait_for(sender.flush(), 20)  # the connection now holds a write grant
        forwarder.swallow_answers = True
        item = outbox.add(cap.mailbox, b"exactly once")
        sender.notify()
        while len(await stored(relay, cap)) < 2:  # stored, and answered into the void
            await asyncio.sleep(0.02)
        assert outbox.acks == [(first.key, 1)]
        connections = forwarder.connections
        forwarder.swallow_answers = False
        forwarder.cut()  # the connection drops before the answer arrives

        await asyncio.wait_for(sender.flush(), 20)
        assert forwarder.connections > connections  # it reconnected to retry
        assert outbox.acks == [(first.key, 1), (item.key, 2)]
        assert await stored(relay, cap) == [(1, b"first"), (2, b"exactly once")]
        again = await conn.append(cap.mailbox, b"exactly once", item.key, timeout=10)
        assert (again.seq, again.duplicate) == (2, True)
    finally:
        await sender.close()
        await conn.close()


async def test_a_refused_item_holds_back_its_mailbox_until_the_caller_drops_it(
    relay: RunningRelay, conn: RelayConnection
) -> None:
    blocked, other = MailboxCapability.generate(), MailboxCapability.generate()
    for cap in (blocked, other):
        await conn.create_mailbox(cap)
    refused: list[tuple[OutboxItem, Rejected]] = []

    async def on_rejected(item: OutboxItem, error: Rejected) -> None:
        refused.append((item, error))

    outbox = MemoryOutbox()
    stale = outbox.add(blocked.mailbox, b"commit for a future epoch", epoch=5)
    behind = outbox.add(blocked.mailbox, b"after the commit")
    free = outbox.add(other.mailbox, b"elsewhere")
    async with OutboxSender(conn, outbox, on_rejected=on_rejected) as sender:
        await asyncio.wait_for(sender.flush(), 20)
        assert [(i, type(e)) for i, e in refused] == [(stale, StaleEpoch)]
        assert refused[0][1].epoch == 0
        assert [k for k, _ in outbox.acks] == [free.key]
        assert await stored(relay, blocked) == []  # order kept: nothing jumped the queue

        await asyncio.wait_for(sender.flush(), 20)  # still blocked, and not resent
        assert len(refused) == 1

        outbox.items.remove(stale)  # the caller rebuilds or drops the refused item
        sender.notify()
        await asyncio.wait_for(sender.flush(), 20)
    assert outbox.acks[-1] == (behind.key, 1)
    assert await stored(relay, blocked) == [(1, b"after the commit")]


async def test_a_failing_source_is_not_hidden(conn: RelayConnection) -> None:
    class Broken(MemoryOutbox):
        async def pending(self) -> Sequence[OutboxItem]:
            raise RuntimeError("the store is locked")

    sender = OutboxSender(conn, Broken())
    await sender.start()
    with pytest.raises(RuntimeError, match="locked"):
        await asyncio.wait_for(sender.flush(), 20)
    with pytest.raises(RuntimeError, match="locked"):
        await sender.close()


def test_outbox_items_keep_content_out_of_repr() -> None:
    item = OutboxItem(b"k" * 16, b"m" * 16, b"secret ciphertext")
    assert "secret" not in repr(item)


async def test_closing_the_connection_stops_the_sender_and_keeps_the_items(
    relay: RunningRelay,
) -> None:
    conn = RelayConnection(relay.url, backoff=Backoff(base=0.05, cap=0.3, rng=random.Random(6)))
    await conn.start()
    cap = MailboxCapability.generate()
    await conn.create_mailbox(cap)
    outbox = MemoryOutbox()
    sender = OutboxSender(conn, outbox)
    await sender.start()
    await conn.close()
    item = outbox.add(cap.mailbox, b"not sent")
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(sender.flush(), 20)
    await sender.close()  # a closed connection is no error of the sender's
    assert outbox.items == [item] and outbox.acks == []


# -- refusals: dropped, retried or held, so that nothing jams (issue #16) ---------------------


async def test_a_dropped_refusal_lets_the_items_behind_it_go(
    relay: RunningRelay, conn: RelayConnection
) -> None:
    """The caller drops a post the relay refuses for good; the mailbox goes on at once,
    and the item is never sent again even if the source is slow to forget it."""
    cap = MailboxCapability.generate()
    await conn.create_mailbox(cap)
    refused: list[tuple[OutboxItem, Rejected]] = []

    async def on_rejected(item: OutboxItem, error: Rejected) -> Verdict:
        refused.append((item, error))
        return Verdict.DROP  # (the source keeps listing it: the sender must not care)

    outbox = MemoryOutbox()
    big = outbox.add(cap.mailbox, b"x" * (relay.config.limits.max_blob_bytes + 1))
    after = [outbox.add(cap.mailbox, b"after %d" % i) for i in range(3)]
    async with OutboxSender(conn, outbox, on_rejected=on_rejected) as sender:
        await asyncio.wait_for(sender.flush(), 20)
        await asyncio.wait_for(sender.flush(), 20)
    assert [(i, type(e)) for i, e in refused] == [(big, TooLarge)]
    assert [k for k, _ in outbox.acks] == [i.key for i in after]
    assert await stored(relay, cap) == [(n, b"after %d" % (n - 1)) for n in (1, 2, 3)]


async def test_a_full_mailbox_is_retried_with_backoff_and_reported_once(
    start_relay: RelayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "RETRY_BASE", 0.05)
    relay = await start_relay(mailbox_max_entries=2)
    conn = RelayConnection(relay.url, backoff=Backoff(base=0.05, cap=0.3, rng=random.Random(7)))
    await conn.start()
    full, free = MailboxCapability.generate(), MailboxCapability.generate()
    for cap in (full, free):
        await conn.create_mailbox(cap)
    for blob in (b"fills", b"it"):
        await conn.append(full.mailbox, blob, timeout=10)
    refused: list[type[Rejected]] = []

    async def on_rejected(item: OutboxItem, error: Rejected) -> None:
        refused.append(type(error))  # no answer: the sender decides by the code

    outbox = MemoryOutbox()
    waiting = outbox.add(full.mailbox, b"waits for room")
    behind = outbox.add(full.mailbox, b"behind it")
    elsewhere = outbox.add(free.mailbox, b"elsewhere")
    sender = OutboxSender(conn, outbox, on_rejected=on_rejected, rng=random.Random(1))
    await sender.start()
    try:
        await asyncio.wait_for(sender.flush(), 20)
        assert [k for k, _ in outbox.acks] == [elsewhere.key]  # other mailboxes go on
        await asyncio.sleep(0.5)  # several retries, each refused again
        assert refused == [MailboxFull]  # told once, not at every retry
        await conn.trim(full.mailbox, 2, timeout=10)  # a reader catches up
        while len(outbox.acks) < 3:
            await asyncio.sleep(0.05)
        assert [k for k, _ in outbox.acks][1:] == [waiting.key, behind.key]  # in order
    finally:
        await sender.close()
        await conn.close()


async def test_an_item_without_a_write_key_is_refused_not_stuck(
    relay: RunningRelay, conn: RelayConnection
) -> None:
    cap = MailboxCapability.generate()
    await conn.create_mailbox(cap)
    refused: list[type[Rejected]] = []

    async def on_rejected(item: OutboxItem, error: Rejected) -> Verdict:
        refused.append(type(error))
        outbox.items.remove(item)
        return Verdict.DROP

    outbox = MemoryOutbox()
    outbox.add(os.urandom(16), b"to a mailbox this connection holds no key of")
    free = outbox.add(cap.mailbox, b"sent")
    async with OutboxSender(conn, outbox, on_rejected=on_rejected) as sender:
        await asyncio.wait_for(sender.flush(), 20)
    assert refused == [Denied]
    assert [k for k, _ in outbox.acks] == [free.key]
    assert outbox.items == []
