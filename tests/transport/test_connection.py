"""RelayConnection against the real relay: follow, resume after kills and restores, errors, backoff."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backchannel.transport.connection import (
    AppendResult,
    Backoff,
    ConnectionState,
    Entry,
    LinkState,
    RelayConnection,
    Reset,
    Revoked,
    TransportEvent,
    full_jitter,
)
from backchannel.transport.errors import (
    ConnectionClosed,
    Denied,
    MailboxFull,
    StaleEpoch,
    TooLarge,
    Unreachable,
)
from backchannel.transport.session import MailboxCapability
from tests.conftest import RelayFactory, RunningRelay, free_port
from tests.relayproc import RelayProcess


@pytest.fixture
def store_kind() -> str:
    """The transport does not care about the relay's storage: SQLite only."""
    return "sqlite"


def quick_backoff(seed: int = 1) -> Backoff:
    """Short reconnect delays so the tests move on quickly (they assert no timings)."""
    return Backoff(base=0.05, cap=0.3, rng=random.Random(seed))


@pytest.fixture
async def connect() -> AsyncIterator[RelayFactory]:
    """Open started RelayConnections, all closed at the end."""
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


async def next_of(
    conn: RelayConnection, kind: type[TransportEvent], timeout: float = 20.0
) -> TransportEvent:
    """The next event of ``kind``, skipping connection-state events (failing on others)."""
    while True:
        event = await conn.next_event(timeout)
        if isinstance(event, kind):
            return event
        assert isinstance(event, ConnectionState), event


async def receive(conn: RelayConnection, count: int, *, ack: bool = True) -> list[Entry]:
    """``count`` entries, acknowledging each as a consumer would."""
    out: list[Entry] = []
    while len(out) < count:
        event = await next_of(conn, Entry)
        assert isinstance(event, Entry)
        out.append(event)
        if ack:
            await conn.ack(event.mailbox, event.seq)
    return out


async def everything(conn: RelayConnection, mailbox: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while True:
        page = await conn.fetch(mailbox, out[-1][0] if out else 0, timeout=20)
        out += page.entries
        if not page.more:
            return out


# -- a relay as its operator runs it: a process to kill -9 and restart on the same port ------


@pytest.fixture
def processes() -> Iterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for p in started:
        p.kill()


async def start_process(processes: list[RelayProcess], data_dir: Path, port: int) -> RelayProcess:
    p = RelayProcess(data_dir, port=port)
    processes.append(p)
    await p.wait_ready()
    return p


async def wait_state(conn: RelayConnection, state: LinkState, seen: list[TransportEvent]) -> None:
    """Read events (keeping them in ``seen``) until the connection reports ``state``."""
    while True:
        event = await conn.next_event(20)
        seen.append(event)
        if isinstance(event, ConnectionState) and event.state is state:
            return


# -- following --------------------------------------------------------------------------------


async def test_follow_delivers_entries_in_order_and_acks_reach_the_callback(
    relay: RunningRelay, connect: RelayFactory
) -> None:
    acked: list[tuple[bytes, int]] = []

    async def on_ack(mailbox: bytes, seq: int) -> None:
        acked.append((mailbox, seq))

    writer = await connect(relay.url)
    reader = await connect(relay.url, on_ack=on_ack)
    cap = MailboxCapability.generate()
    assert await writer.create_mailbox(cap) == relay.config.default_ttl
    await reader.follow(cap)
    results = [await writer.append(cap.mailbox, b"blob %d" % i) for i in range(5)]
    assert [r.seq for r in results] == [1, 2, 3, 4, 5]
    assert not any(r.duplicate for r in results)

    entries = await receive(reader, 5)
    assert [(e.seq, e.blob) for e in entries] == [(i + 1, b"blob %d" % i) for i in range(5)]
    assert acked == [(cap.mailbox, s) for s in range(1, 6)]
    assert reader.cursor(cap.mailbox) == 5
    await reader.ack(cap.mailbox, 3)  # going backwards is a no-op
    assert reader.cursor(cap.mailbox) == 5 and len(acked) == 5
    assert "blob" not in repr(entries[0])  # content stays out of logs


async def test_follow_from_a_cursor_skips_what_was_processed(
    relay: RunningRelay, connect: RelayFactory
) -> None:
    writer = await connect(relay.url)
    cap = MailboxCapability.generate()
    await writer.create_mailbox(cap)
    for i in range(4):
        await writer.append(cap.mailbox, b"%d" % i)
    reader = await connect(relay.url)
    await reader.wait_connected()
    await reader.follow(cap, after=2)
    await writer.append(cap.mailbox, b"4")
    assert [e.seq for e in await receive(reader, 3)] == [3, 4, 5]


async def test_unfollow_stops_delivery(relay: RunningRelay, connect: RelayFactory) -> None:
    writer = await connect(relay.url)
    reader = await connect(relay.url)
    one, two = MailboxCapability.generate(), MailboxCapability.generate()
    for cap in (one, two):
        await writer.create_mailbox(cap)
        await reader.follow(cap)
    await writer.append(one.mailbox, b"a")
    assert (await receive(reader, 1))[0].mailbox == one.mailbox
    await reader.unfollow(one.mailbox)
    assert reader.cursor(one.mailbox) is None
    await writer.append(one.mailbox, b"b")
    await writer.append(two.mailbox, b"c")
    (entry,) = await receive(reader, 1)
    assert (entry.mailbox, entry.blob) == (two.mailbox, b"c")


async def test_cursor_past_the_head_resets_instead_of_stalling(
    relay: RunningRelay, connect: RelayFactory
) -> None:
    acked: list[tuple[bytes, int]] = []

    async def on_ack(mailbox: bytes, seq: int) -> None:
        acked.append((mailbox, seq))

    writer = await connect(relay.url)
    cap = MailboxCapability.generate()
    await writer.create_mailbox(cap)
    await writer.append(cap.mailbox, b"one")
    reader = await connect(relay.url, on_ack=on_ack)
    await reader.follow(cap, after=7)  # e.g. the relay was restored from an older backup
    reset = await next_of(reader, Reset)
    assert reset == Reset(cap.mailbox, cursor=7, head=1)
    # Everything the relay still holds is read again (what came after its rollback
    # point cannot be told from what came before); the consumer drops what it had.
    (again,) = await receive(reader, 1)
    assert (again.seq, again.blob) == (1, b"one")
    await writer.append(cap.mailbox, b"two")
    (entry,) = await receive(reader, 1)
    assert (entry.seq, entry.blob) == (2, b"two")
    assert acked[-1] == (cap.mailbox, 2)


# -- surviving the relay ----------------------------------------------------------------------


@pytest.mark.slow
async def test_relay_killed_mid_stream_resumes_with_nothing_lost_or_duplicated(
    tmp_path: Path, processes: list[RelayProcess], connect: RelayFactory
) -> None:
    port, data = free_port(), tmp_path / "data"
    first = await start_process(processes, data, port)
    writer = await connect(first.url)
    reader = await connect(first.url)
    cap = MailboxCapability.generate()
    await writer.create_mailbox(cap)
    await reader.follow(cap)

    total = 60
    results: list[AppendResult] = []

    async def write_all() -> None:
        for i in range(total):  # one at a time: the order of the blobs is the order of seqs
            results.append(await writer.append(cap.mailbox, b"m%03d" % i))

    writing = asyncio.create_task(write_all())
    received = await receive(reader, 20)
    first.kill()  # with an append most likely in flight
    states: list[TransportEvent] = []
    await wait_state(reader, LinkState.OFFLINE, states)
    received += [e for e in states if isinstance(e, Entry)]  # pushes that beat the kill
    await start_process(processes, data, port)
    await asyncio.wait_for(writing, 60)
    received += await receive(reader, total - len(received))

    assert [e.seq for e in received] == list(range(1, total + 1))
    assert [e.blob for e in received] == [b"m%03d" % i for i in range(total)]
    assert [r.seq for r in results] == list(range(1, total + 1))
    assert await everything(writer, cap.mailbox) == [(e.seq, e.blob) for e in received]
    assert reader.state.state is LinkState.CONNECTED


@pytest.mark.slow
async def test_appends_made_while_offline_are_delivered_once_after_reconnect(
    tmp_path: Path, processes: list[RelayProcess], connect: RelayFactory
) -> None:
    port, data = free_port(), tmp_path / "data"
    first = await start_process(processes, data, port)
    writer = await connect(first.url)
    reader = await connect(first.url)
    cap = MailboxCapability.generate()
    await writer.create_mailbox(cap)
    await reader.follow(cap)
    await writer.append(cap.mailbox, b"before")
    assert [e.blob for e in await receive(reader, 1)] == [b"before"]

    first.kill()
    await wait_state(writer, LinkState.OFFLINE, [])
    pending = [asyncio.create_task(writer.append(cap.mailbox, b"offline %d" % i)) for i in range(5)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in pending)  # they wait for the relay to come back
    await start_process(processes, data, port)
    results = await asyncio.wait_for(asyncio.gather(*pending), 60)

    entries = await receive(reader, 5)
    assert sorted(r.seq for r in results) == [2, 3, 4, 5, 6]
    assert [e.seq for e in entries] == [2, 3, 4, 5, 6]
    assert sorted(e.blob for e in entries) == sorted(b"offline %d" % i for i in range(5))
    assert len(await everything(writer, cap.mailbox)) == 6
    with pytest.raises(TimeoutError):  # and nothing more: no duplicate arrives
        await next_of(reader, Entry, timeout=0.3)


@pytest.mark.slow
async def test_relay_restored_from_a_backup_resets_the_cursor(
    tmp_path: Path, processes: list[RelayProcess], connect: RelayFactory
) -> None:
    port, data = free_port(), tmp_path / "data"
    first = await start_process(processes, data, port)
    acked: list[int] = []

    async def on_ack(mailbox: bytes, seq: int) -> None:
        acked.append(seq)

    writer = await connect(first.url)
    reader = await connect(first.url, on_ack=on_ack)
    cap = MailboxCapability.generate()
    await writer.create_mailbox(cap)
    await reader.follow(cap)
    for i in range(2):
        await writer.append(cap.mailbox, b"kept %d" % i)
    await receive(reader, 2)
    backup = tmp_path / "backup.sqlite3"
    src = sqlite3.connect(f"{(data / 'relay.sqlite3').as_uri()}?mode=ro", uri=True)
    dst = sqlite3.connect(backup)
    src.backup(dst)  # what `backchannel-relay backup` does
    src.close()
    dst.close()
    for i in range(3):
        await writer.append(cap.mailbox, b"lost %d" % i)
    assert [e.seq for e in await receive(reader, 3)] == [3, 4, 5]

    first.kill()
    for leftover in data.glob("relay.sqlite3*"):
        leftover.unlink()
    (data / "relay.sqlite3").write_bytes(backup.read_bytes())
    await start_process(processes, data, port)

    reset = await next_of(reader, Reset)
    assert reset == Reset(cap.mailbox, cursor=5, head=2)
    assert [e.seq for e in await receive(reader, 2)] == [1, 2]  # read again, from the start
    await writer.append(cap.mailbox, b"new")
    (entry,) = await receive(reader, 1)
    assert (entry.seq, entry.blob) == (3, b"new")  # a new entry, not mistaken for an old one
    assert acked[-1] == 3


# -- capabilities -----------------------------------------------------------------------------


async def test_rotation_by_someone_else_surfaces_as_revoked(
    relay: RunningRelay, connect: RelayFactory
) -> None:
    admin = await connect(relay.url)
    reader = await connect(relay.url)
    cap = MailboxCapability.generate()
    await admin.create_mailbox(cap)
    await reader.follow(cap)
    await reader.wait_connected()
    await admin.append(cap.mailbox, b"a")
    await receive(reader, 1)

    new = MailboxCapability.generate(cap.mailbox)
    await admin.rotate(cap, new)
    assert await next_of(reader, Revoked) == Revoked(cap.mailbox, "rotated")
    assert reader.cursor(cap.mailbox) is None
    with pytest.raises(Denied):  # the old write key is refused at once, not retried
        await reader.append(cap.mailbox, b"with old keys", timeout=10)
    assert (await admin.append(cap.mailbox, b"b")).seq == 2  # the rotator carries on


async def test_own_rotation_keeps_following_with_the_new_keys(
    relay: RunningRelay, connect: RelayFactory
) -> None:
    owner = await connect(relay.url)
    cap = MailboxCapability.generate()
    await owner.create_mailbox(cap)
    await owner.follow(cap)
    await owner.append(cap.mailbox, b"before")
    new = MailboxCapability.generate(cap.mailbox)
    await owner.rotate(cap, new)
    await owner.append(cap.mailbox, b"after")
    entries = await receive(owner, 2)  # a Revoked event would fail next_of
    assert [(e.seq, e.blob) for e in entries] == [(1, b"before"), (2, b"after")]


async def test_permanent_refusals_raise_at_once(
    start_relay: RelayFactory, connect: RelayFactory
) -> None:
    relay = await start_relay(max_blob_bytes=64, mailbox_max_entries=3)
    conn = await connect(relay.url)
    cap = MailboxCapability.generate()
    await conn.create_mailbox(cap)

    with pytest.raises(TooLarge):
        await conn.append(cap.mailbox, b"x" * 65, timeout=10)
    won = await conn.append(cap.mailbox, b"commit", epoch=0, timeout=10)
    assert won.epoch == 1
    with pytest.raises(StaleEpoch) as stale:
        await conn.append(cap.mailbox, b"losing commit", epoch=0, timeout=10)
    assert stale.value.epoch == 1
    again = await conn.append(cap.mailbox, b"commit", won.key, epoch=0, timeout=10)
    assert (again.seq, again.duplicate) == (1, True)  # a retried winner is not stale
    await conn.append(cap.mailbox, b"2", timeout=10)
    await conn.append(cap.mailbox, b"3", timeout=10)
    with pytest.raises(MailboxFull):
        await conn.append(cap.mailbox, b"4", timeout=10)

    stranger = MailboxCapability.generate()  # never created on the relay
    conn.register(stranger)
    with pytest.raises(Denied):
        await conn.append(stranger.mailbox, b"x", timeout=10)
    with pytest.raises(ValueError, match="no write capability"):
        await conn.append(os.urandom(16), b"x")
    with pytest.raises(ValueError, match="8 to 32 bytes"):
        await conn.append(cap.mailbox, b"x", b"short")


async def test_follow_refused_while_connected_raises(
    relay: RunningRelay, connect: RelayFactory
) -> None:
    conn = await connect(relay.url)
    await conn.wait_connected()
    with pytest.raises(Denied):
        await conn.follow(MailboxCapability.generate())


async def test_rate_limited_appends_wait_and_go_through(
    start_relay: RelayFactory, connect: RelayFactory
) -> None:
    relay = await start_relay(appends_per_second=40.0, append_burst=2)
    conn = await connect(relay.url)
    cap = MailboxCapability.generate()
    await conn.create_mailbox(cap)
    results = await asyncio.gather(
        *(conn.append(cap.mailbox, b"%d" % i, timeout=30) for i in range(8))
    )
    assert sorted(r.seq for r in results) == list(range(1, 9))
    assert len(await everything(conn, cap.mailbox)) == 8


# -- life cycle -------------------------------------------------------------------------------


async def test_offline_reports_retries_and_close_fails_waiting_requests(
    connect: RelayFactory,
) -> None:
    conn = await connect(f"ws://127.0.0.1:{free_port()}/v1/ws")  # nothing listens there
    cap = MailboxCapability.generate()
    conn.register(cap)
    waiting = asyncio.create_task(conn.append(cap.mailbox, b"x"))
    offline: list[ConnectionState] = []
    while len(offline) < 3:
        event = await conn.next_event(20)
        if isinstance(event, ConnectionState) and event.state is LinkState.OFFLINE:
            offline.append(event)
    assert [s.attempt for s in offline] == [1, 2, 3]
    assert all(s.retry_in is not None and 0 <= s.retry_in <= 0.3 for s in offline)
    assert "Cannot reach the relay" in offline[0].detail
    with pytest.raises(Unreachable):
        await conn.append(cap.mailbox, b"y", timeout=0.2)

    await conn.close()
    with pytest.raises(ConnectionClosed):
        await waiting
    rest = [event async for event in conn.events()]
    assert rest and rest[-1] == ConnectionState(LinkState.CLOSED)
    with pytest.raises(ConnectionClosed):
        await conn.append(cap.mailbox, b"z")


def test_relay_url_must_be_a_websocket_url() -> None:
    with pytest.raises(ValueError, match="ws://"):
        RelayConnection("http://127.0.0.1:8765/v1/ws")


# -- backoff ----------------------------------------------------------------------------------


def test_full_jitter_stays_within_its_growing_capped_ceiling() -> None:
    rng = random.Random(1234)
    for attempt in range(40):
        ceiling = min(60.0, 0.5 * 2**attempt)
        delays = [full_jitter(attempt, base=0.5, cap=60.0, rng=rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # really spread over the range: jitter, not a constant
        assert len(set(delays)) == len(delays)
    a = [full_jitter(n, base=1.0, cap=8.0, rng=random.Random(7)) for n in range(10)]
    b = [full_jitter(n, base=1.0, cap=8.0, rng=random.Random(7)) for n in range(10)]
    assert a == b  # a seeded source makes it reproducible
    for bad in ({"base": 0.0, "cap": 1.0}, {"base": 2.0, "cap": 1.0}):
        with pytest.raises(ValueError):
            full_jitter(0, rng=rng, **bad)
    with pytest.raises(ValueError):
        full_jitter(-1, base=1.0, cap=2.0, rng=rng)


def test_backoff_grows_caps_and_resets_after_a_stable_connection() -> None:
    backoff = Backoff(base=1.0, cap=10.0, stable_after=30.0, rng=random.Random(99))
    ceilings = []
    for _ in range(8):
        ceilings.append(min(10.0, 1.0 * 2**backoff.attempt))
        assert backoff.next_delay(now=0.0) <= ceilings[-1]
    assert ceilings == [1, 2, 4, 8, 10, 10, 10, 10]

    backoff.connected(now=100.0)
    backoff.next_delay(now=105.0)  # dropped after 5 s: a flapping relay keeps backing off
    assert backoff.attempt == 9
    backoff.connected(now=200.0)
    assert backoff.next_delay(now=230.0) <= 1.0  # up 30 s: start again from the base
    assert backoff.attempt == 1
