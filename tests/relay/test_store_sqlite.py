"""The SQLite store: the shared contract, plus file modes, PRAGMAs, migrations and group commit."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import threading
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from relay.errors import (
    CapabilityDenied,
    InternalError,
    MailboxFull,
    StaleEpoch,
    StoreFull,
    StoreUnavailable,
)
from relay.store.base import MailboxStore, NewEntry, StoreLimits, migration_scripts
from relay.store.sqlite import SQLiteStore, apply_migrations
from tests.relay.store_contract import (
    LIMITS,
    NOW,
    Recorder,
    StoreContract,
    StoreFactory,
    everything,
    limits,
    new_keys,
    new_mailbox,
    put,
)


@pytest.fixture
async def make_store(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    opened: list[SQLiteStore] = []

    async def make(store_limits: StoreLimits) -> MailboxStore:
        store = SQLiteStore(tmp_path / f"store{len(opened)}" / "relay.sqlite3", store_limits)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> SQLiteStore:
    made = await make_store(LIMITS)
    assert isinstance(made, SQLiteStore)
    return made


class TestSQLiteStoreContract(StoreContract):
    """The shared contract against SQLite (``make_store`` above)."""


# -- helpers ------------------------------------------------------------------------------


class HeldWriter:
    """Keeps the store's first batch from finishing its COMMIT until :meth:`release`.

    Writes made meanwhile queue up behind it (group commit starts the next batch only
    when the previous commit is done), so a test controls exactly what the writer
    finds queued; the group-commit tests then assert how that queue was cut into
    transactions, which is behaviour, not timing.
    """

    def __init__(self, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
        self.store = store
        self._entered = threading.Event()
        self._release = threading.Event()
        self._task: asyncio.Future[Any] | None = None
        original = store._commit
        held = [True]

        def commit() -> None:  # runs on the commit thread
            if held[0]:
                held[0] = False
                self._entered.set()
                self._release.wait(timeout=60)
            original()

        store._commit = commit  # type: ignore[method-assign]

    async def hold(self) -> None:
        self._task = asyncio.ensure_future(self.store._write(lambda tx: None))
        assert await asyncio.to_thread(self._entered.wait, 60), "the writer never committed"

    async def queued(self, count: int) -> None:
        """Wait until ``count`` writes wait in the queue (tasks need a loop turn to enqueue)."""
        for _ in range(10_000):
            if len(self.store._pending) >= count:
                return
            await asyncio.sleep(0)
        pytest.fail(f"only {len(self.store._pending)} of {count} writes were queued")

    async def release(self) -> None:
        self._release.set()
        assert self._task is not None
        await self._task


def count_batches(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every batch the writer runs as one transaction."""
    sizes: list[int] = []
    original = store._run_batch

    def run_batch(conn: sqlite3.Connection, batch: list[Any]) -> Any:
        sizes.append(len(batch))
        return original(conn, batch)

    monkeypatch.setattr(store, "_run_batch", run_batch)
    return sizes


def spawn(*coros: Awaitable[Any]) -> list[asyncio.Future[Any]]:
    return [asyncio.ensure_future(c) for c in coros]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- files and PRAGMAs --------------------------------------------------------------------


async def test_file_and_directory_modes(tmp_path: Path) -> None:
    path = tmp_path / "data" / "relay.sqlite3"
    store = SQLiteStore(path, LIMITS)
    await store.open()
    try:
        mb = await new_mailbox(store)
        await put(store, mb)
        assert mode(path.parent) == 0o700
        assert mode(path) == 0o600
        for suffix in ("-wal", "-shm"):
            assert mode(Path(f"{path}{suffix}")) == 0o600
    finally:
        await store.close()


async def test_existing_file_is_tightened_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    path.touch(mode=0o644)
    path.chmod(0o644)
    store = SQLiteStore(path, LIMITS)
    await store.open()
    await store.close()
    assert mode(path) == 0o600


async def test_pragmas_in_force(store: SQLiteStore) -> None:
    def read_pragmas(tx: Any) -> tuple[int, int]:
        synchronous = tx.conn.execute("PRAGMA synchronous").fetchone()[0]
        secure_delete = tx.conn.execute("PRAGMA secure_delete").fetchone()[0]
        return synchronous, secure_delete

    assert await store._write(read_pragmas) == (2, 1)  # FULL, ON
    # journal_mode=WAL is persistent: any connection to the file sees it.
    with sqlite3.connect(store.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()
    # Readers cannot write even by mistake.
    assert await store._read(lambda c: c.execute("PRAGMA query_only").fetchone()[0]) == 1


async def test_migrations_recorded_and_idempotent(store: SQLiteStore) -> None:
    latest = max(number for number, _ in migration_scripts("sqlite"))
    assert latest >= 1
    with sqlite3.connect(store.path, isolation_level=None) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        assert apply_migrations(conn) == latest
        assert apply_migrations(conn) == latest
        assert (
            conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
            == schema
        )
    conn.close()


def test_migrations_on_an_empty_database(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "fresh.sqlite3", isolation_level=None)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        version = apply_migrations(conn)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == version >= 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"mailboxes", "entries"} <= tables
    finally:
        conn.close()


async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    first = SQLiteStore(path, LIMITS)
    await first.open()
    keys = new_keys()
    await first.create_mailbox(b"a" * 16, keys, 1000, NOW)
    b = await new_mailbox(first)
    for i in range(5):
        await put(first, b"a" * 16, b"entry %d" % i, key=b"key-%04d" % i)
    await put(first, b"a" * 16, b"commit", epoch=0, also=[NewEntry(b, b"welcome")])
    await first.trim(b"a" * 16, 2)
    stats = await first.stats()
    await first.close()

    second = SQLiteStore(path, LIMITS)
    await second.open()
    try:
        assert await second.stats() == stats
        assert await second.get_keys(b"a" * 16, NOW) == keys
        page = await second.fetch(b"a" * 16, 0, 100, 1 << 30, NOW)
        assert page.head == 6
        assert page.entries == [(3, b"entry 2"), (4, b"entry 3"), (5, b"entry 4"), (6, b"commit")]
        assert await everything(second, b) == [(1, b"welcome")]
        retry = await put(second, b"a" * 16, b"entry 4", key=b"key-0004")
        assert (retry[0].seq, retry[0].duplicate) == (5, True)
        with pytest.raises(StaleEpoch) as info:
            await put(second, b"a" * 16, epoch=0)
        assert info.value.current == 1
        assert (await put(second, b"a" * 16))[0].seq == 7
    finally:
        await second.close()


# -- group commit ------------------------------------------------------------------------


async def test_concurrent_appends_share_one_transaction(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    mb = await new_mailbox(store)
    sizes = count_batches(store, monkeypatch)
    held = HeldWriter(store)
    await held.hold()
    tasks = spawn(*(put(store, mb, b"%d" % i) for i in range(200)))
    await held.queued(200)
    await held.release()
    results = await asyncio.gather(*tasks)
    assert sorted(r[0].seq for r in results) == list(range(1, 201))
    # The holding job was one batch; the 200 appends queued behind it were one more.
    assert sizes == [1, 200]


async def test_group_commit_max_caps_a_batch(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await make_store(limits(group_commit_max=64))
    assert isinstance(store, SQLiteStore)
    mb = await new_mailbox(store)
    sizes = count_batches(store, monkeypatch)
    held = HeldWriter(store)
    await held.hold()
    tasks = spawn(*(put(store, mb) for _ in range(200)))
    await held.queued(200)
    await held.release()
    await asyncio.gather(*tasks)
    assert sizes == [1, 64, 64, 64, 8]
    assert [s for s, _ in await everything(store, mb)] == list(range(1, 201))


async def test_a_failing_job_fails_alone(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await make_store(limits(mailbox_max_entries=2))
    assert isinstance(store, SQLiteStore)
    rec = Recorder()
    store.add_listener(rec)
    mb, full = await new_mailbox(store), await new_mailbox(store)
    await put(store, full)
    await put(store, full, epoch=0)
    sizes = count_batches(store, monkeypatch)

    def sql_error(tx: Any) -> None:
        tx.conn.execute("INSERT INTO mailboxes (id) VALUES (NULL)")

    def our_bug(tx: Any) -> None:
        tx.conn.execute("DELETE FROM entries")
        raise KeyError("bug")

    held = HeldWriter(store)
    await held.hold()
    tasks = spawn(
        put(store, mb, b"first", epoch=0),
        put(store, full, epoch=0),  # stale: the epoch is 1
        put(store, mb, also=[NewEntry(b"\0" * 16, b"x")]),  # unknown also-mailbox
        put(store, full, b"over"),  # mailbox full
        store._write(sql_error),
        store._write(our_bug),
        put(store, mb, b"second", epoch=1),
    )
    await held.queued(len(tasks))
    await held.release()
    results: list[Any] = await asyncio.gather(*tasks, return_exceptions=True)
    assert sizes == [1, len(tasks)]
    assert [type(r) for r in results[1:6]] == [
        StaleEpoch,
        CapabilityDenied,
        MailboxFull,
        StoreUnavailable,
        InternalError,
    ]
    assert [(a.seq, a.epoch) for a in results[0] + results[6]] == [(1, 1), (2, 2)]
    assert await everything(store, mb) == [(1, b"first"), (2, b"second")]
    assert [s for s, _ in await everything(store, full)] == [1, 2]
    stats = await store.stats()
    assert (stats.mailboxes, stats.entries) == (2, 4)
    assert [(a.mailbox, a.seq) for a in rec.all()[-2:]] == [(mb, 1), (mb, 2)]
    assert len(rec.all()) == 4


async def test_listeners_run_before_the_ack(store: SQLiteStore) -> None:
    rec = Recorder()
    store.add_listener(rec)
    mb = await new_mailbox(store)
    await put(store, mb, b"x")
    assert rec.seqs(mb) == [1]


async def test_append_needs_an_entry(store: SQLiteStore) -> None:
    with pytest.raises(ValueError, match="at least one"):
        await store.append([], None, NOW)


# -- closing -----------------------------------------------------------------------------


async def test_close_commits_queued_writes(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    store = SQLiteStore(path, LIMITS)
    await store.open()
    mb = await new_mailbox(store)
    held = HeldWriter(store)
    await held.hold()
    tasks = spawn(*(put(store, mb, b"%d" % i) for i in range(50)))
    await held.queued(50)
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0)  # close() has marked the store closed and queued its stop
    with pytest.raises(StoreUnavailable):
        await put(store, mb, b"too late")
    await held.release()
    await closing
    results = await asyncio.gather(*tasks)
    assert sorted(r[0].seq for r in results) == list(range(1, 51))

    again = SQLiteStore(path, LIMITS)
    await again.open()
    try:
        assert len(await everything(again, mb)) == 50
        assert (await again.stats()).entries == 50
    finally:
        await again.close()


async def test_operations_after_close_are_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "relay.sqlite3", LIMITS)
    await store.open()
    mb = await new_mailbox(store)
    await store.ping()
    await store.close()
    await store.close()  # closing twice is harmless
    calls: list[Awaitable[Any]] = [
        store.ping(),
        store.create_mailbox(b"n" * 16, new_keys(), 100, NOW),
        store.get_keys(mb, NOW),
        store.touch(mb, NOW),
        put(store, mb),
        store.fetch(mb, 0, 10, 1000, NOW),
        store.trim(mb, 1),
        store.rotate(mb, new_keys()),
        store.sweep(NOW),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable):
            await call


# -- a full disk -------------------------------------------------------------------------


async def limit_pages(store: SQLiteStore, spare: int) -> None:
    """Cap the database file at its current size plus ``spare`` pages: SQLITE_FULL beyond."""

    def cap(tx: Any) -> None:
        pages = tx.conn.execute("PRAGMA page_count").fetchone()[0]
        tx.conn.execute(f"PRAGMA max_page_count = {pages + spare}").fetchone()

    await store._write(cap)


async def test_disk_full_is_store_full(store: SQLiteStore) -> None:
    mb = await new_mailbox(store)
    await put(store, mb, b"small")
    await limit_pages(store, 4)
    stats = await store.stats()
    with pytest.raises(StoreFull):
        await put(store, mb, bytes(200_000))
    assert await store.stats() == stats
    assert await everything(store, mb) == [(1, b"small")]
    # The store keeps working for writes that fit.
    assert (await put(store, mb, b"fits"))[0].seq == 2


async def test_disk_full_fails_only_the_job_that_hit_it(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    mb = await new_mailbox(store)
    await put(store, mb, b"small")
    await limit_pages(store, 4)
    sizes = count_batches(store, monkeypatch)
    held = HeldWriter(store)
    await held.hold()
    tasks = spawn(
        put(store, mb, b"before"), put(store, mb, bytes(200_000)), put(store, mb, b"after")
    )
    await held.queued(3)
    await held.release()
    results: list[Any] = await asyncio.gather(*tasks, return_exceptions=True)
    assert sizes == [1, 3]
    assert isinstance(results[1], StoreFull)
    assert [r[0].seq for r in (results[0], results[2])] == [2, 3]
    assert await everything(store, mb) == [(1, b"small"), (2, b"before"), (3, b"after")]
    stats = await store.stats()
    assert (stats.entries, stats.bytes) == (3, 5 + 6 + 5)
