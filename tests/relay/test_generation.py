"""Store generations (docs/relay-protocol.md §6, "Generations and restores").

A store keeps its generation id for life; a restored copy (made by ``backup``, or
marked with ``mark-restored``) starts a new one when it is opened, and every head and
epoch is raised above anything the store can have handed out before the restore.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest

from relay.appkeys import STORE
from relay.errors import ConfigError, FieldInvalid, StaleEpoch
from relay.protocol import GENERATION_BYTES, Hello, decode_server_frame
from relay.store import mark_store_restored
from relay.store.base import SEQ_PER_SECOND, MailboxStore, restore_floor
from relay.store.migrate import copy_sqlite_to_postgres
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SQLiteStore, backup_store
from tests.conftest import RunningRelay
from tests.relay.store_contract import LIMITS, everything, head, new_mailbox, put

NONCE = bytes(range(32))


@pytest.fixture
async def opened() -> AsyncIterator[list[MailboxStore]]:
    stores: list[MailboxStore] = []
    yield stores
    for store in stores:
        await store.close()


async def open_sqlite(path: Path, opened: list[MailboxStore]) -> SQLiteStore:
    store = SQLiteStore(path, LIMITS)
    await store.open()
    opened.append(store)
    return store


async def fill(store: MailboxStore) -> bytes:
    """A mailbox with 5 entries (two trimmed) at epoch 2."""
    mailbox = await new_mailbox(store)
    for i in range(5):
        await put(store, mailbox, b"entry %d" % i, epoch=i if i < 2 else None)
    await store.trim(mailbox, 2)
    return mailbox


def test_the_floor_is_above_everything_handed_out_before() -> None:
    now = 1_800_000_000.0
    assert restore_floor(now, 7, 3, 0) == int(now) * SEQ_PER_SECOND
    # A mailbox that took almost a million entries a second since the last restore is
    # still below the next floor.
    last = restore_floor(now, 0, 0, 0)
    assert restore_floor(now + 10, 0, 0, last) > last + 10 * (SEQ_PER_SECOND - 1)
    # A clock that is behind still never gives a number out twice.
    assert restore_floor(1.0, 10**12, 5, last) == max(10**12, last) + 1
    assert restore_floor(now, 0, 10**15, 0) > 10**15


async def test_a_store_keeps_its_generation(tmp_path: Path, opened: list[MailboxStore]) -> None:
    path = tmp_path / "relay.sqlite3"
    first = await open_sqlite(path, opened)
    generation = first.generation
    assert len(generation) == GENERATION_BYTES
    mailbox = await fill(first)
    await first.close()
    opened.remove(first)
    again = await open_sqlite(path, opened)
    assert again.generation == generation
    assert await head(again, mailbox) == 5  # nothing renumbered
    other = await open_sqlite(tmp_path / "other.sqlite3", opened)
    assert other.generation != generation


async def test_a_backup_opened_as_the_store_starts_a_new_generation_above_everything(
    tmp_path: Path, opened: list[MailboxStore]
) -> None:
    path, copy = tmp_path / "relay.sqlite3", tmp_path / "backup.sqlite3"
    live = await open_sqlite(path, opened)
    mailbox = await fill(live)
    await asyncio.to_thread(backup_store, path, copy)  # while the store is open
    assert copy.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        await asyncio.to_thread(backup_store, path, copy)
    for i in range(3):  # acknowledged after the backup: the restore loses these
        await put(live, mailbox, b"lost %d" % i)
    assert await head(live, mailbox) == 8
    generation = live.generation
    await live.close()
    opened.remove(live)

    before = time.time()
    restored = await open_sqlite(copy, opened)
    assert restored.generation != generation
    floor = await head(restored, mailbox)
    assert floor >= int(before) * SEQ_PER_SECOND > 8
    assert await everything(restored, mailbox) == [
        (3, b"entry 2"),
        (4, b"entry 3"),
        (5, b"entry 4"),
    ]
    (appended,) = await put(restored, mailbox, b"new")
    assert appended.seq == floor + 1  # above every number handed out before
    with pytest.raises(StaleEpoch) as stale:  # the epoch was raised to the floor too
        await put(restored, mailbox, b"commit", epoch=2)
    assert stale.value.current == floor
    (commit,) = await put(restored, mailbox, b"commit", epoch=floor)
    assert commit.epoch == floor + 1
    # Only once: opening it again keeps the new generation and the numbers.
    new_generation = restored.generation
    await restored.close()
    opened.remove(restored)
    again = await open_sqlite(copy, opened)
    assert again.generation == new_generation
    assert await head(again, mailbox) == floor + 2
    # A mailbox created after the restore starts at 1, as any new mailbox does.
    fresh = await new_mailbox(again)
    assert (await put(again, fresh, b"first"))[0].seq == 1


async def test_marking_a_store_restored(tmp_path: Path, opened: list[MailboxStore]) -> None:
    path = tmp_path / "relay.sqlite3"
    url = f"sqlite:///{path}"
    store = await open_sqlite(path, opened)
    mailbox = await fill(store)
    generation = store.generation
    with pytest.raises(ConfigError, match="still using"):
        await mark_store_restored(url)  # the relay holds the store's lock
    await store.close()
    opened.remove(store)
    await mark_store_restored(url)
    restored = await open_sqlite(path, opened)
    assert restored.generation != generation
    assert await head(restored, mailbox) > SEQ_PER_SECOND
    with pytest.raises(ConfigError, match="no SQLite store"):
        await mark_store_restored(f"sqlite:///{tmp_path / 'nothing.sqlite3'}")
    (tmp_path / "not-a-store").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a Backchannel relay store"):
        await mark_store_restored(f"sqlite:///{tmp_path / 'not-a-store'}")


def test_the_commands_mark_a_backup_and_a_store(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def make() -> bytes:
        store = SQLiteStore(data / "relay.sqlite3", LIMITS)
        await store.open()
        await fill(store)
        generation = store.generation
        await store.close()
        return generation

    async def generation_of(path: Path) -> bytes:
        store = SQLiteStore(path, LIMITS)
        await store.open()
        await store.close()
        return store.generation

    generation = asyncio.run(make())

    def relay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "relay", *args, "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = relay("backup", str(tmp_path / "copy.sqlite3"))
    assert made.returncode == 0, made.stderr
    assert asyncio.run(generation_of(data / "relay.sqlite3")) == generation  # the store: kept
    assert asyncio.run(generation_of(tmp_path / "copy.sqlite3")) != generation  # the copy: new
    marked = relay("mark-restored")
    assert marked.returncode == 0, marked.stderr
    assert "new generation" in marked.stderr
    assert asyncio.run(generation_of(data / "relay.sqlite3")) != generation


async def test_postgres_generation_restore_and_migration(
    tmp_path: Path, postgres_url: str, opened: list[MailboxStore]
) -> None:
    first = PostgresStore(postgres_url, LIMITS, pool_size=2)
    await first.open()
    opened.append(first)
    generation = first.generation
    assert len(generation) == GENERATION_BYTES
    mailbox = await fill(first)
    await first.close()
    opened.remove(first)
    await mark_store_restored(postgres_url)
    # Two nodes start at once: one starts the new generation, both announce it.
    nodes = [PostgresStore(postgres_url, LIMITS, pool_size=2) for _ in range(2)]
    await asyncio.gather(*(n.open() for n in nodes))
    opened.extend(nodes)
    assert nodes[0].generation == nodes[1].generation != generation
    floor = await head(nodes[0], mailbox)
    assert floor > SEQ_PER_SECOND
    assert (await put(nodes[1], mailbox, b"new"))[0].seq == floor + 1
    # A node that ran through another node's restart learns the id at its next sweep.
    nodes[0].generation = b"stale"
    await nodes[0].sweep(1.0)
    assert nodes[0].generation == nodes[1].generation


async def test_moving_a_store_to_postgres_keeps_its_generation(
    tmp_path: Path, postgres_url: str, opened: list[MailboxStore]
) -> None:
    path = tmp_path / "relay.sqlite3"
    source = await open_sqlite(path, opened)
    mailbox = await fill(source)
    generation = source.generation
    await source.close()
    opened.remove(source)
    assert await copy_sqlite_to_postgres(f"sqlite:///{path}", postgres_url) == (1, 3)
    target = PostgresStore(postgres_url, LIMITS, pool_size=2)
    await target.open()
    opened.append(target)
    assert target.generation == generation  # its clients see no restore: nothing was lost
    assert await head(target, mailbox) == 5


async def test_hello_names_the_generation(relay: RunningRelay) -> None:
    session = await relay.session()
    assert session.hello is not None
    assert session.hello.generation == relay.app[STORE].generation
    assert len(session.hello.generation) == GENERATION_BYTES


def test_hello_generation_decoding() -> None:
    def hello(**extra: object) -> bytes:
        frame = {"v": 1, "t": "hello", "nonce": NONCE, "limits": {}, **extra}
        packed: bytes = msgpack.packb(frame, use_bin_type=True)
        return packed

    plain = decode_server_frame(hello())
    assert isinstance(plain, Hello) and plain.generation is None  # a relay without them
    decoded = decode_server_frame(hello(generation=b"g" * GENERATION_BYTES))
    assert isinstance(decoded, Hello) and decoded.generation == b"g" * GENERATION_BYTES
    for bad in (b"short", b"g" * 17, "text"):
        with pytest.raises(FieldInvalid):
            decode_server_frame(hello(generation=bad))
