"""Push ordering (docs/relay-protocol.md §8, "What a client does with pushes") and
generations (§6): a RelayConnection behind a man in the middle, against the real relay.

Every test here fails on a transport that drops each push at or below the highest
number it has delivered (the rule before issue #15): a swapped pair loses its first
entry for good.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgpack
import pytest

from backchannel.transport import connection as transport
from backchannel.transport.connection import (
    Entry,
    GenerationChanged,
    RelayConnection,
    Reset,
    TransportEvent,
)
from backchannel.transport.errors import StaleEpoch
from backchannel.transport.session import MailboxCapability
from relay.appkeys import STORE
from relay.store.base import SEQ_PER_SECOND
from tests.conftest import FakeClock, RelayFactory, RunningRelay, free_port
from tests.e2e.mitm_proxy import Link, MitmProxy, Mode
from tests.relayproc import RelayProcess
from tests.transport.test_connection import next_of, quick_backoff

COUNT = 8


@pytest.fixture
def store_kind() -> str:
    """The transport does not care about the relay's storage: SQLite only."""
    return "sqlite"


@pytest.fixture
async def proxies() -> AsyncIterator[list[MitmProxy]]:
    started: list[MitmProxy] = []
    yield started
    for p in started:
        await p.stop()


@pytest.fixture
async def connect() -> AsyncIterator[RelayFactory]:
    opened: list[RelayConnection] = []

    async def open_(url: str, **kwargs: object) -> RelayConnection:
        kwargs.setdefault("backoff", quick_backoff(len(opened)))
        conn = RelayConnection(url, **kwargs)  # type: ignore[arg-type]
        await conn.start()
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        await conn.close()


async def entries_of(conn: RelayConnection, count: int) -> list[Entry]:
    """``count`` entries, acknowledged; then nothing more for a while (no duplicate)."""
    out: list[Entry] = []
    while len(out) < count:
        event = await conn.next_event(20)
        if isinstance(event, Entry):
            out.append(event)
            await conn.ack(event.mailbox, event.seq)
        else:
            assert not isinstance(event, Reset | GenerationChanged), event
    await nothing_more(conn)
    return out


async def nothing_more(conn: RelayConnection, wait: float = 1.0) -> None:
    """No further entry comes within ``wait`` seconds (no duplicate, nothing made up)."""
    while True:
        try:
            event = await conn.next_event(wait)
        except TimeoutError:
            return
        assert not isinstance(event, Entry), f"an entry too many: {event}"


async def setup(
    relay_url: str, proxy: MitmProxy, connect: RelayFactory
) -> tuple[RelayConnection, RelayConnection, MailboxCapability]:
    """A writer straight to the relay, a reader following one mailbox through ``proxy``."""
    writer = await connect(relay_url)
    reader = await connect(proxy.url)
    cap = MailboxCapability.generate()
    await writer.create_mailbox(cap)
    await reader.follow(cap)
    await reader.wait_connected()
    return writer, reader, cap


def blobs(count: int = COUNT) -> list[bytes]:
    return [b"entry %d " % i + bytes(200) for i in range(count)]


def assert_exactly(entries: list[Entry], sent: list[bytes]) -> None:
    assert [e.seq for e in entries] == list(range(1, len(sent) + 1))
    assert [e.blob for e in entries] == sent


# -- the orders a relay or a proxy can put pushes in -------------------------------------------


@pytest.mark.parametrize("mode", [Mode.REORDER, Mode.DUPLICATE, Mode.REPLAY, Mode.DELAY])
async def test_pushes_arrive_once_in_order_whatever_the_proxy_does(
    relay: RunningRelay, connect: RelayFactory, proxies: list[MitmProxy], mode: Mode
) -> None:
    proxy = await MitmProxy(relay.url, seed=1).start()
    proxies.append(proxy)
    writer, reader, cap = await setup(relay.url, proxy, connect)
    proxy.mode = mode
    sent = blobs()
    for blob in sent:
        await writer.append(cap.mailbox, blob)
    assert_exactly(await entries_of(reader, COUNT), sent)
    if mode is Mode.REORDER:
        assert proxy.stats["swapped"] >= COUNT // 2 - 1  # the pairs really were swapped


async def test_a_burst_of_swapped_pushes_loses_nothing(
    relay: RunningRelay, connect: RelayFactory, proxies: list[MitmProxy]
) -> None:
    """The issue's case: the relay swaps pushes of entries appended together."""
    proxy = await MitmProxy(relay.url, Mode.PASS, seed=2).start()
    proxies.append(proxy)
    writer, reader, cap = await setup(relay.url, proxy, connect)
    proxy.mode = Mode.REORDER
    sent = blobs(3 * COUNT)
    results = await asyncio.gather(*(writer.append(cap.mailbox, b) for b in sent))
    by_seq = {r.seq: b for r, b in zip(results, sent, strict=True)}
    got = await entries_of(reader, len(sent))
    assert [(e.seq, e.blob) for e in got] == sorted(by_seq.items())


async def test_connection_cut_mid_stream_resumes_from_the_cursor(
    relay: RunningRelay, connect: RelayFactory, proxies: list[MitmProxy]
) -> None:
    proxy = await MitmProxy(relay.url, seed=3, drop_every=2, max_drops=3).start()
    proxies.append(proxy)
    writer, reader, cap = await setup(relay.url, proxy, connect)
    proxy.mode = Mode.DROP
    sent = blobs()
    for blob in sent:
        await writer.append(cap.mailbox, blob)
    assert_exactly(await entries_of(reader, COUNT), sent)
    assert proxy.stats["dropped"] >= 1


class Withholding(MitmProxy):
    """Swallows the pushes whose seq is in ``withhold`` (fetch answers pass)."""

    def __init__(self, upstream: str, withhold: set[int]) -> None:
        super().__init__(upstream)
        self.withhold = withhold

    async def _down(self, link: Link, raw: bytes) -> bool:
        frame = msgpack.unpackb(raw)
        if frame.get("t") == "push" and frame["seq"] in self.withhold:
            self.stats["withheld"] += 1
            return True
        return await super()._down(link, raw)


async def test_a_push_that_never_comes_is_fetched(
    relay: RunningRelay, connect: RelayFactory, proxies: list[MitmProxy]
) -> None:
    proxy = await Withholding(relay.url, {2, 5, 6}).start()
    proxies.append(proxy)
    writer, reader, cap = await setup(relay.url, proxy, connect)
    sent = blobs()
    for blob in sent:
        await writer.append(cap.mailbox, blob)
    assert_exactly(await entries_of(reader, COUNT), sent)
    assert proxy.stats["withheld"] == 3


async def test_a_gap_of_trimmed_entries_is_skipped(
    relay: RunningRelay, connect: RelayFactory, proxies: list[MitmProxy]
) -> None:
    """Numbers the relay's fetch answer no longer has were trimmed: not waited for."""
    proxy = await Withholding(relay.url, {2, 3}).start()
    proxies.append(proxy)
    writer, reader, cap = await setup(relay.url, proxy, connect)
    other = await connect(relay.url)
    other.register(cap)
    await writer.append(cap.mailbox, b"one")
    assert [e.seq for e in await entries_of(reader, 1)] == [1]
    await writer.append(cap.mailbox, b"two")
    await writer.append(cap.mailbox, b"three")
    await other.trim(cap.mailbox, 3)  # another reader of the mailbox trims them
    await writer.append(cap.mailbox, b"four")
    got = await entries_of(reader, 1)
    assert [(e.seq, e.blob) for e in got] == [(4, b"four")]


async def test_the_cursor_reaches_the_head_past_numbers_no_entry_has(
    relay: RunningRelay, connect: RelayFactory
) -> None:
    """A consumer that waits for its cursor to reach the head (a sync) never stalls on
    numbers the relay no longer has (trimmed here; skipped by a restored relay too)."""
    acked: list[int] = []

    async def on_ack(mailbox: bytes, seq: int) -> None:
        acked.append(seq)

    writer = await connect(relay.url)
    cap = MailboxCapability.generate()
    await writer.create_mailbox(cap)
    for i in range(5):
        await writer.append(cap.mailbox, b"%d" % i)
    await writer.trim(cap.mailbox, 5)
    reader = await connect(relay.url, on_ack=on_ack)
    await reader.follow(cap, after=1)
    await reader.wait_connected()
    assert reader.cursor(cap.mailbox) == 5 and acked == [5]
    await nothing_more(reader, 0.3)


async def test_the_cursor_moves_past_the_last_entry_once_it_is_acknowledged(
    start_relay: RelayFactory, connect: RelayFactory
) -> None:
    clock = FakeClock()
    relay = await start_relay(clock=clock)
    writer = await connect(relay.url)
    cap = MailboxCapability.generate()
    await writer.create_mailbox(cap)
    await writer.append(cap.mailbox, b"kept")
    await writer.append(cap.mailbox, b"short-lived", ttl=1)
    clock.advance(2 * 3600)  # the second entry has expired: the head is past the last
    reader = await connect(relay.url)
    await reader.follow(cap)
    entry = await next_of(reader, Entry)
    assert isinstance(entry, Entry) and (entry.seq, entry.blob) == (1, b"kept")
    assert reader.cursor(cap.mailbox) == 0
    await reader.ack(cap.mailbox, 1)
    assert reader.cursor(cap.mailbox) == 2


class Inventing(MitmProxy):
    """Adds ``count`` made-up pushes far ahead after the first real one."""

    def __init__(self, upstream: str, count: int, size: int) -> None:
        super().__init__(upstream)
        self.count, self.size = count, size
        self.mailbox: bytes | None = None

    async def _down(self, link: Link, raw: bytes) -> bool:
        frame = msgpack.unpackb(raw)
        ok = await super()._down(link, raw)
        if frame.get("t") == "push" and self.mailbox is None:
            self.mailbox = frame["mailbox"]
            for i in range(self.count):
                fake = {"v": 1, "t": "push", "mailbox": self.mailbox, "seq": 10**9 - i}
                await link.send(msgpack.packb(fake | {"blob": bytes(self.size)}))
        return ok


@pytest.mark.parametrize(("count", "size"), [(2000, 16), (64, 200_000)])
async def test_made_up_pushes_far_ahead_hold_bounded_memory_and_are_dropped(
    relay: RunningRelay,
    connect: RelayFactory,
    proxies: list[MitmProxy],
    count: int,
    size: int,
) -> None:
    proxy = await Inventing(relay.url, count, size).start()
    proxies.append(proxy)
    writer, reader, cap = await setup(relay.url, proxy, connect)
    await writer.append(cap.mailbox, b"first")
    await asyncio.sleep(0.1)
    follow = reader._follows[cap.mailbox]
    assert len(follow.held) <= transport.HOLD_ENTRIES
    assert follow.held_bytes <= transport.HOLD_BYTES
    sent = [b"first", *blobs(3)]
    for blob in sent[1:]:
        await writer.append(cap.mailbox, blob)
    assert_exactly(await entries_of(reader, len(sent)), sent)  # none of the made-up ones
    await asyncio.sleep(transport.GAP_WAIT * (transport.FILL_ATTEMPTS + 1))
    assert not follow.held and follow.held_bytes == 0
    await writer.append(cap.mailbox, b"later")
    (entry,) = await entries_of(reader, 1)
    assert (entry.seq, entry.blob) == (len(sent) + 1, b"later")


# -- generations: a relay restored from a backup -----------------------------------------------


@pytest.fixture
def processes() -> Iterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for p in started:
        p.kill()


async def start_process(processes: list[RelayProcess], data: Path, port: int) -> RelayProcess:
    p = RelayProcess(data, port=port)
    processes.append(p)
    await p.wait_ready()
    return p


def backup(data: Path, destination: Path) -> None:
    """``backchannel-relay backup``, as the operator runs it (the relay keeps running)."""
    subprocess.run(
        [sys.executable, "-m", "relay", "backup", str(destination), "--data-dir", str(data)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def restore(data: Path, copy: Path) -> None:
    for leftover in data.glob("relay.sqlite3*"):
        leftover.unlink()
    (data / "relay.sqlite3").write_bytes(copy.read_bytes())


@pytest.mark.slow
async def test_a_restored_relay_is_a_new_generation_and_nothing_is_skipped_or_repeated(
    tmp_path: Path, processes: list[RelayProcess], connect: RelayFactory
) -> None:
    port, data = free_port(), tmp_path / "data"
    first = await start_process(processes, data, port)
    writer = await connect(first.url)
    reader = await connect(first.url)
    cap = MailboxCapability.generate()
    await writer.create_mailbox(cap)
    await reader.follow(cap)
    await writer.append(cap.mailbox, b"commit 0", epoch=0)
    await writer.append(cap.mailbox, b"kept")
    assert [e.seq for e in await entries_of(reader, 2)] == [1, 2]
    before = reader.generation
    assert before is not None and len(before) == 16
    copy = tmp_path / "backup.sqlite3"
    await asyncio.to_thread(backup, data, copy)
    for i in range(3):  # acknowledged, then lost with the restore
        await writer.append(cap.mailbox, b"lost %d" % i)
    await writer.append(cap.mailbox, b"commit 1", epoch=1)
    assert [e.seq for e in await entries_of(reader, 4)] == [3, 4, 5, 6]

    first.kill()
    restore(data, copy)
    await start_process(processes, data, port)

    changed = await next_of(reader, GenerationChanged)
    assert isinstance(changed, GenerationChanged)
    assert changed.previous == before and changed.generation == reader.generation != before
    # The relay numbers on above everything it handed out before: the new entries are
    # delivered, nothing the reader has is delivered again, and no Reset is needed.
    result = await writer.append(cap.mailbox, b"after the restore")
    assert result.seq > 6
    got = await entries_of(reader, 1)
    assert [(e.seq, e.blob) for e in got] == [(result.seq, b"after the restore")]
    assert result.seq > SEQ_PER_SECOND  # raised to the restore floor
    assert reader.cursor(cap.mailbox) == result.seq
    # The epoch moved on too: a commit for the epoch the room knows is refused with the
    # relay's epoch, which is above every epoch it gave out, so the member can catch up.
    with pytest.raises(StaleEpoch) as stale:
        await writer.append(cap.mailbox, b"commit 2", epoch=2)
    assert stale.value.epoch is not None and stale.value.epoch > 2
    await writer.append(cap.mailbox, b"commit 2", epoch=stale.value.epoch)
    (commit,) = await entries_of(reader, 1)
    assert commit.blob == b"commit 2"


@pytest.mark.slow
async def test_a_restart_keeps_the_generation(
    tmp_path: Path, processes: list[RelayProcess], connect: RelayFactory
) -> None:
    port, data = free_port(), tmp_path / "data"
    first = await start_process(processes, data, port)
    reader = await connect(first.url)
    cap = MailboxCapability.generate()
    await reader.create_mailbox(cap)
    await reader.follow(cap)
    await reader.wait_connected()
    before = reader.generation
    first.kill()  # kill -9 and restart: the same store, the same generation
    await start_process(processes, data, port)
    await reader.append(cap.mailbox, b"after")
    seen: list[TransportEvent] = []
    while not any(isinstance(e, Entry) for e in seen):
        seen.append(await reader.next_event(20))
    assert not any(isinstance(e, GenerationChanged | Reset) for e in seen)
    assert reader.generation == before


async def test_a_kept_generation_is_compared_after_a_client_restart(
    relay: RunningRelay, connect: RelayFactory
) -> None:
    reader = RelayConnection(relay.url, backoff=quick_backoff())
    reader.expect_generation(b"\x01" * 16)  # kept from a run before the relay was restored
    await reader.start()
    try:
        changed = await next_of(reader, GenerationChanged)
        assert changed == GenerationChanged(b"\x01" * 16, relay.app[STORE].generation)
    finally:
        await reader.close()
