"""The mailbox-store contract: backend-independent test classes every store must pass."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Awaitable, Callable, Sequence

import pytest

from relay.errors import CapabilityDenied, MailboxExists, MailboxFull, StaleEpoch, StoreFull
from relay.store.base import (
    Appended,
    MailboxKeys,
    MailboxStore,
    NewEntry,
    StoreLimits,
    SweepResult,
)

__all__ = ["LIMITS", "NOW", "TTL", "StoreContract", "StoreFactory"]

NOW = 1_900_000_000.0
TTL = 1000
LIMITS = StoreLimits(
    mailbox_max_entries=10_000,
    mailbox_max_bytes=1024 * 1024,
    store_max_bytes=16 * 1024 * 1024,
    min_free_disk_bytes=0,
    expiry_granularity=1,
    group_commit_max=1024,
)
BIG = 1 << 30

StoreFactory = Callable[[StoreLimits], Awaitable[MailboxStore]]


def limits(**changes: int) -> StoreLimits:
    return dataclasses.replace(LIMITS, **changes)


def new_keys() -> MailboxKeys:
    return MailboxKeys(secrets.token_bytes(32), secrets.token_bytes(32), secrets.token_bytes(32))


async def new_mailbox(store: MailboxStore, ttl: int = TTL, now: float = NOW) -> bytes:
    mailbox = secrets.token_bytes(16)
    await store.create_mailbox(mailbox, new_keys(), ttl, now)
    return mailbox


async def put(
    store: MailboxStore,
    mailbox: bytes,
    blob: bytes = b"blob",
    *,
    key: bytes | None = None,
    ttl: int | None = None,
    epoch: int | None = None,
    also: Sequence[NewEntry] = (),
    now: float = NOW,
) -> list[Appended]:
    return await store.append([NewEntry(mailbox, blob, key, ttl), *also], epoch, now)


async def everything(
    store: MailboxStore, mailbox: bytes, now: float = NOW
) -> list[tuple[int, bytes]]:
    page = await store.fetch(mailbox, 0, 1_000_000, BIG, now)
    assert not page.more
    return page.entries


async def head(store: MailboxStore, mailbox: bytes, now: float = NOW) -> int:
    return (await store.fetch(mailbox, 0, 1, BIG, now)).head


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait until ``condition()`` holds (listeners may run after the ack); fail after a while."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"never happened: {what}")


class Recorder:
    """A listener that records every notified entry in order."""

    def __init__(self) -> None:
        self.batches: list[list[Appended]] = []

    def __call__(self, appended: Sequence[Appended]) -> None:
        self.batches.append(list(appended))

    def seqs(self, mailbox: bytes) -> list[int]:
        return [a.seq for batch in self.batches for a in batch if a.mailbox == mailbox]

    def all(self) -> list[Appended]:
        return [a for batch in self.batches for a in batch]


class _Fixtures:
    @pytest.fixture
    async def store(self, make_store: StoreFactory) -> MailboxStore:
        return await make_store(LIMITS)


class CreateContract(_Fixtures):
    async def test_create_then_get_keys(self, store: MailboxStore) -> None:
        keys = new_keys()
        await store.create_mailbox(b"m" * 16, keys, TTL, NOW)
        assert await store.get_keys(b"m" * 16, NOW) == keys
        assert (await store.stats()).mailboxes == 1

    async def test_new_mailbox_is_empty_at_epoch_zero(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        page = await store.fetch(mb, 0, 10, BIG, NOW)
        assert (page.entries, page.head, page.more) == ([], 0, False)
        # Epoch 0 is the only one a compare-and-set append may name.
        with pytest.raises(StaleEpoch) as info:
            await put(store, mb, epoch=1)
        assert info.value.current == 0
        assert (await put(store, mb, epoch=0))[0].epoch == 1

    async def test_create_existing_raises(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        original = await store.get_keys(mb, NOW)
        with pytest.raises(MailboxExists):
            await store.create_mailbox(mb, new_keys(), TTL, NOW + 1)
        assert await store.get_keys(mb, NOW + 1) == original
        assert (await store.stats()).mailboxes == 1

    async def test_recreate_after_expiry_starts_fresh(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store, ttl=10)
        await put(store, mb, b"old", key=b"k" * 8, epoch=0)
        later = NOW + 11
        keys = new_keys()
        await store.create_mailbox(mb, keys, TTL, later)
        assert await store.get_keys(mb, later) == keys
        assert await everything(store, mb, later) == []
        assert await head(store, mb, later) == 0
        # The old idempotency key and epoch went with the old mailbox.
        appended = await put(store, mb, b"new", key=b"k" * 8, epoch=0, now=later)
        assert (appended[0].seq, appended[0].duplicate) == (1, False)
        stats = await store.stats()
        assert (stats.mailboxes, stats.entries, stats.bytes) == (1, 1, 3)

    async def test_get_keys_unknown_is_none(self, store: MailboxStore) -> None:
        assert await store.get_keys(secrets.token_bytes(16), NOW) is None

    async def test_get_keys_expired_is_none(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store, ttl=10)
        assert await store.get_keys(mb, NOW + 9) is not None
        assert await store.get_keys(mb, NOW + 10) is None

    async def test_touch_extends_life(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store, ttl=100)
        await store.touch(mb, NOW + 60)
        assert await store.get_keys(mb, NOW + 150) is not None
        assert await store.get_keys(mb, NOW + 160) is None
        untouched = await new_mailbox(store, ttl=100)
        assert await store.get_keys(untouched, NOW + 150) is None

    async def test_touch_never_shortens(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store, ttl=100)
        await store.touch(mb, NOW + 50)
        await store.touch(mb, NOW)
        assert await store.get_keys(mb, NOW + 149) is not None

    async def test_touch_unknown_is_denied(self, store: MailboxStore) -> None:
        with pytest.raises(CapabilityDenied):
            await store.touch(secrets.token_bytes(16), NOW)

    async def test_rotate_replaces_keys(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        await put(store, mb, b"kept", epoch=0)
        keys = new_keys()
        await store.rotate(mb, keys)
        assert await store.get_keys(mb, NOW) == keys
        assert await everything(store, mb) == [(1, b"kept")]
        assert (await put(store, mb, epoch=1))[0].seq == 2

    async def test_rotate_unknown_is_denied(self, store: MailboxStore) -> None:
        with pytest.raises(CapabilityDenied):
            await store.rotate(secrets.token_bytes(16), new_keys())
        assert (await store.stats()).mailboxes == 0


class AppendContract(_Fixtures):
    async def test_seq_starts_at_one(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        first = await put(store, mb, b"a")
        second = await put(store, mb, b"b")
        assert [(a.mailbox, a.seq, a.duplicate) for a in first + second] == [
            (mb, 1, False),
            (mb, 2, False),
        ]
        assert await everything(store, mb) == [(1, b"a"), (2, b"b")]
        stats = await store.stats()
        assert (stats.entries, stats.bytes) == (2, 2)

    async def test_mailboxes_number_independently(self, store: MailboxStore) -> None:
        a, b = await new_mailbox(store), await new_mailbox(store)
        await put(store, a)
        await put(store, a)
        assert (await put(store, b))[0].seq == 1

    async def test_append_unknown_or_expired_is_denied(self, store: MailboxStore) -> None:
        with pytest.raises(CapabilityDenied):
            await put(store, secrets.token_bytes(16))
        mb = await new_mailbox(store, ttl=10)
        with pytest.raises(CapabilityDenied):
            await put(store, mb, now=NOW + 10)
        assert (await store.stats()).entries == 0

    async def test_concurrent_appends_are_gapless_and_ordered(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        blobs = [f"blob {i}".encode() for i in range(300)]
        results = await asyncio.gather(*(put(store, mb, blob) for blob in blobs))
        by_seq = {r[0].seq: blob for r, blob in zip(results, blobs, strict=True)}
        assert sorted(by_seq) == list(range(1, 301))
        assert await everything(store, mb) == sorted(by_seq.items())
        assert (await store.stats()).entries == 300

    async def test_concurrent_appends_across_mailboxes(self, store: MailboxStore) -> None:
        boxes = [await new_mailbox(store) for _ in range(4)]
        await asyncio.gather(*(put(store, boxes[i % 4], b"x") for i in range(200)))
        for mb in boxes:
            assert [seq for seq, _ in await everything(store, mb)] == list(range(1, 51))

    async def test_empty_blob_is_an_entry(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        await put(store, mb, b"")
        assert await everything(store, mb) == [(1, b"")]


class IdempotencyContract(_Fixtures):
    async def test_same_key_returns_same_seq_and_writes_once(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        await put(store, mb, b"before")
        first = await put(store, mb, b"payload", key=b"k" * 16)
        stats = await store.stats()
        again = await put(store, mb, b"payload", key=b"k" * 16)
        assert (first[0].seq, first[0].duplicate) == (2, False)
        assert (again[0].seq, again[0].duplicate) == (2, True)
        assert await everything(store, mb) == [(1, b"before"), (2, b"payload")]
        assert await store.stats() == stats
        assert (await put(store, mb, b"after"))[0].seq == 3

    async def test_retry_with_other_blob_keeps_the_first(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        await put(store, mb, b"first", key=b"k" * 8)
        again = await put(store, mb, b"second", key=b"k" * 8)
        assert again[0].duplicate
        assert await everything(store, mb) == [(1, b"first")]

    async def test_concurrent_retries_write_once(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        results = await asyncio.gather(*(put(store, mb, key=b"k" * 32) for _ in range(50)))
        assert {r[0].seq for r in results} == {1}
        assert sum(not r[0].duplicate for r in results) == 1
        assert await everything(store, mb) == [(1, b"blob")]

    async def test_keys_are_per_mailbox(self, store: MailboxStore) -> None:
        a, b = await new_mailbox(store), await new_mailbox(store)
        await put(store, a, b"x", key=b"k" * 8)
        await put(store, a, b"y")
        other = await put(store, b, b"z", key=b"k" * 8)
        assert (other[0].seq, other[0].duplicate) == (1, False)

    async def test_also_entry_with_a_used_key_is_not_written_again(
        self, store: MailboxStore
    ) -> None:
        rec = Recorder()
        store.add_listener(rec)
        a, b = await new_mailbox(store), await new_mailbox(store)
        await put(store, b, b"welcome", key=b"w" * 8)
        out = await put(store, a, b"commit", also=[NewEntry(b, b"welcome again", b"w" * 8)])
        assert [(x.mailbox, x.seq, x.duplicate) for x in out] == [(a, 1, False), (b, 1, True)]
        assert await everything(store, b) == [(1, b"welcome")]
        assert (await store.stats()).entries == 2
        await eventually(lambda: a in [x.mailbox for x in rec.all()], "the commit's notification")
        assert [(x.mailbox, x.seq) for x in rec.all()] == [(b, 1), (a, 1)]

    async def test_duplicate_with_also_writes_nothing(self, store: MailboxStore) -> None:
        a, b = await new_mailbox(store), await new_mailbox(store)
        welcome = NewEntry(b, b"welcome", b"w" * 8)
        first = await put(store, a, b"commit", key=b"c" * 8, epoch=0, also=[welcome])
        stats = await store.stats()
        again = await put(store, a, b"commit", key=b"c" * 8, epoch=0, also=[welcome])
        assert len(again) == 2
        assert all(x.duplicate for x in again)
        assert again[0].seq == first[0].seq == 1
        assert await everything(store, b) == [(1, b"welcome")]
        assert await store.stats() == stats


class EpochContract(_Fixtures):
    async def test_epoch_moves_only_with_compare_and_set(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        assert (await put(store, mb))[0].epoch == 0
        assert (await put(store, mb, epoch=0))[0].epoch == 1
        assert (await put(store, mb))[0].epoch == 1
        assert (await put(store, mb, epoch=1))[0].epoch == 2

    async def test_stale_and_future_epochs_are_refused(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        await put(store, mb, epoch=0)
        for wrong in (0, 2, 99):
            with pytest.raises(StaleEpoch) as info:
                await put(store, mb, b"late", epoch=wrong)
            assert info.value.current == 1
        assert await everything(store, mb) == [(1, b"blob")]

    async def test_one_of_many_concurrent_commits_wins(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        keys = [secrets.token_bytes(16) for _ in range(40)]
        results = await asyncio.gather(
            *(put(store, mb, key, key=key, epoch=0) for key in keys), return_exceptions=True
        )
        winners = [(key, r) for key, r in zip(keys, results, strict=True) if isinstance(r, list)]
        losers = [r for r in results if not isinstance(r, list)]
        assert len(winners) == 1
        assert len(losers) == 39
        assert all(isinstance(e, StaleEpoch) and e.current == 1 for e in losers)
        win_key, win = winners[0]
        assert (win[0].seq, win[0].epoch) == (1, 1)
        assert await everything(store, mb) == [(1, win_key)]
        # Someone builds on the winner; then the winner's client retries its commit.
        await put(store, mb, b"next", epoch=1)
        retry = await put(store, mb, win_key, key=win_key, epoch=0)
        assert (retry[0].seq, retry[0].duplicate) == (1, True)
        # A loser's retry is still refused.
        loser_key = next(k for k in keys if k != win_key)
        with pytest.raises(StaleEpoch) as info:
            await put(store, mb, loser_key, key=loser_key, epoch=0)
        assert info.value.current == 2


class AlsoContract(_Fixtures):
    async def test_also_entries_are_written_with_the_main_one(self, store: MailboxStore) -> None:
        a, b, c = [await new_mailbox(store) for _ in range(3)]
        await put(store, c, b"already")
        out = await put(store, a, b"commit", epoch=0, also=[NewEntry(b, b"w1"), NewEntry(c, b"w2")])
        assert [(x.mailbox, x.seq, x.duplicate) for x in out] == [
            (a, 1, False),
            (b, 1, False),
            (c, 2, False),
        ]
        assert out[0].epoch == 1
        assert await everything(store, b) == [(1, b"w1")]
        assert await everything(store, c) == [(1, b"already"), (2, b"w2")]
        stats = await store.stats()
        assert (stats.entries, stats.bytes) == (4, 6 + 2 + 2 + 7)

    async def test_stale_epoch_writes_no_also_entry(self, store: MailboxStore) -> None:
        a, b = await new_mailbox(store), await new_mailbox(store)
        await put(store, a, epoch=0)
        stats = await store.stats()
        with pytest.raises(StaleEpoch):
            await put(store, a, b"commit", epoch=0, also=[NewEntry(b, b"welcome")])
        assert await everything(store, b) == []
        assert await head(store, b) == 0
        assert await store.stats() == stats

    @pytest.mark.parametrize("position", [0, 1])
    async def test_unknown_also_mailbox_writes_nothing(
        self, store: MailboxStore, position: int
    ) -> None:
        a, b = await new_mailbox(store), await new_mailbox(store)
        also = [NewEntry(b, b"welcome")]
        also.insert(position, NewEntry(secrets.token_bytes(16), b"lost"))
        stats = await store.stats()
        with pytest.raises(CapabilityDenied):
            await put(store, a, b"commit", epoch=0, also=also)
        assert await everything(store, a) == []
        assert await everything(store, b) == []
        assert await store.stats() == stats
        # The failed commit did not consume the epoch.
        assert (await put(store, a, epoch=0))[0].seq == 1

    async def test_expired_also_mailbox_is_unknown(self, store: MailboxStore) -> None:
        a = await new_mailbox(store, ttl=100)
        b = await new_mailbox(store, ttl=10)
        with pytest.raises(CapabilityDenied):
            await put(store, a, also=[NewEntry(b, b"late")], now=NOW + 20)
        assert await everything(store, a, NOW + 20) == []


class ExpiryContract(_Fixtures):
    async def test_entry_ttl_is_capped_at_the_mailbox_ttl(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store, ttl=100)
        await put(store, mb, b"short", ttl=10)
        await put(store, mb, b"long", ttl=100_000)
        await put(store, mb, b"default")
        await store.touch(mb, NOW + 90)  # keep the mailbox itself alive
        assert [b for _, b in await everything(store, mb, NOW + 9)] == [
            b"short",
            b"long",
            b"default",
        ]
        assert await everything(store, mb, NOW + 10) == [(2, b"long"), (3, b"default")]
        assert await everything(store, mb, NOW + 99) == [(2, b"long"), (3, b"default")]
        assert await everything(store, mb, NOW + 100) == []

    async def test_expired_entries_are_hidden_before_sweep(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        await put(store, mb, b"a", ttl=5)
        await put(store, mb, b"b")
        page = await store.fetch(mb, 0, 10, BIG, NOW + 5)
        assert (page.entries, page.head, page.more) == ([(2, b"b")], 2, False)

    async def test_fetch_unknown_or_expired_is_denied(self, store: MailboxStore) -> None:
        with pytest.raises(CapabilityDenied):
            await store.fetch(secrets.token_bytes(16), 0, 10, BIG, NOW)
        mb = await new_mailbox(store, ttl=10)
        with pytest.raises(CapabilityDenied):
            await store.fetch(mb, 0, 10, BIG, NOW + 10)

    async def test_sweep_removes_expired_entries_and_mailboxes(self, store: MailboxStore) -> None:
        keep = await new_mailbox(store, ttl=100)
        gone = await new_mailbox(store, ttl=10)
        await put(store, keep, b"12345", ttl=5)
        await put(store, keep, b"stays")
        await put(store, gone, b"abc")
        await put(store, gone, b"de")
        assert await store.sweep(NOW) == SweepResult(0, 0)
        result = await store.sweep(NOW + 10)
        assert (result.entries, result.mailboxes) == (3, 1)
        stats = await store.stats()
        assert (stats.mailboxes, stats.entries, stats.bytes) == (1, 1, 5)
        assert await everything(store, keep, NOW + 10) == [(2, b"stays")]
        assert await store.get_keys(gone, NOW + 10) is None
        again = await store.sweep(NOW + 10)
        assert (again.entries, again.mailboxes) == (0, 0)
        # The survivor keeps numbering where it was.
        assert (await put(store, keep, now=NOW + 10))[0].seq == 3

    async def test_sweep_of_an_empty_expired_mailbox(self, store: MailboxStore) -> None:
        await new_mailbox(store, ttl=10)
        result = await store.sweep(NOW + 10)
        assert (result.entries, result.mailboxes) == (0, 1)
        assert (await store.stats()).mailboxes == 0


class FetchContract(_Fixtures):
    @pytest.fixture
    async def ten(self, store: MailboxStore) -> bytes:
        mb = await new_mailbox(store)
        for i in range(1, 11):
            await put(store, mb, bytes([i]) * 100)
        return mb

    async def test_limit_pages(self, store: MailboxStore, ten: bytes) -> None:
        page = await store.fetch(ten, 0, 3, BIG, NOW)
        assert [s for s, _ in page.entries] == [1, 2, 3]
        assert (page.head, page.more) == (10, True)
        assert page.entries[0] == (1, b"\x01" * 100)
        page = await store.fetch(ten, 7, 3, BIG, NOW)
        assert ([s for s, _ in page.entries], page.more) == ([8, 9, 10], False)
        page = await store.fetch(ten, 10, 3, BIG, NOW)
        assert (page.entries, page.head, page.more) == ([], 10, False)
        page = await store.fetch(ten, 50, 3, BIG, NOW)
        assert (page.entries, page.more) == ([], False)

    async def test_max_bytes_pages(self, store: MailboxStore, ten: bytes) -> None:
        page = await store.fetch(ten, 3, 100, 250, NOW)
        assert ([s for s, _ in page.entries], page.more) == ([4, 5], True)
        page = await store.fetch(ten, 3, 100, 300, NOW)
        assert ([s for s, _ in page.entries], page.more) == ([4, 5, 6], True)
        page = await store.fetch(ten, 8, 100, 200, NOW)
        assert ([s for s, _ in page.entries], page.more) == ([9, 10], False)

    async def test_max_bytes_returns_at_least_one(self, store: MailboxStore, ten: bytes) -> None:
        page = await store.fetch(ten, 0, 100, 1, NOW)
        assert ([s for s, _ in page.entries], page.more) == ([1], True)
        page = await store.fetch(ten, 9, 100, 1, NOW)
        assert ([s for s, _ in page.entries], page.more) == ([10], False)

    async def test_paging_walks_everything_once(self, store: MailboxStore, ten: bytes) -> None:
        seen: list[int] = []
        after, more = 0, True
        while more:
            page = await store.fetch(ten, after, 3, 150, NOW)
            seen += [s for s, _ in page.entries]
            after, more = page.entries[-1][0] if page.entries else after, page.more
        assert seen == list(range(1, 11))


class TrimContract(_Fixtures):
    async def test_trim(self, store: MailboxStore) -> None:
        mb, other = await new_mailbox(store), await new_mailbox(store)
        for i in range(10):
            await put(store, mb, b"x" * (i + 1))
        await put(store, other, b"other")
        assert await store.trim(mb, 4) == 4
        assert await store.trim(mb, 4) == 0
        assert await store.trim(mb, 2) == 0
        page = await store.fetch(mb, 0, 100, BIG, NOW)
        assert [s for s, _ in page.entries] == [5, 6, 7, 8, 9, 10]
        assert page.head == 10
        stats = await store.stats()
        assert (stats.entries, stats.bytes) == (7, sum(range(5, 11)) + 5)
        assert await everything(store, other) == [(1, b"other")]
        assert (await put(store, mb))[0].seq == 11

    async def test_trim_past_head_empties_but_keeps_numbering(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        await put(store, mb)
        await put(store, mb)
        assert await store.trim(mb, 100) == 2
        page = await store.fetch(mb, 0, 10, BIG, NOW)
        assert (page.entries, page.head) == ([], 2)
        assert (await store.stats()).entries == 0
        assert (await put(store, mb))[0].seq == 3

    async def test_trim_frees_quota(self, make_store: StoreFactory) -> None:
        store = await make_store(limits(mailbox_max_entries=2))
        mb = await new_mailbox(store)
        await put(store, mb)
        await put(store, mb)
        with pytest.raises(MailboxFull):
            await put(store, mb)
        await store.trim(mb, 1)
        assert (await put(store, mb))[0].seq == 3


class QuotaContract(_Fixtures):
    async def test_mailbox_max_entries(self, make_store: StoreFactory) -> None:
        store = await make_store(limits(mailbox_max_entries=3))
        mb = await new_mailbox(store)
        for _ in range(3):
            await put(store, mb)
        stats = await store.stats()
        with pytest.raises(MailboxFull):
            await put(store, mb, b"over", epoch=0)
        assert await store.stats() == stats
        assert await head(store, mb) == 3
        # The refused commit did not consume the epoch.
        with pytest.raises(StaleEpoch) as info:
            await put(store, mb, epoch=1)
        assert info.value.current == 0

    async def test_mailbox_max_bytes(self, make_store: StoreFactory) -> None:
        store = await make_store(limits(mailbox_max_bytes=100))
        mb = await new_mailbox(store)
        await put(store, mb, b"a" * 60)
        with pytest.raises(MailboxFull):
            await put(store, mb, b"b" * 41)
        await put(store, mb, b"c" * 40)  # exactly at the quota
        with pytest.raises(MailboxFull):
            await put(store, mb, b"d")
        assert [b for _, b in await everything(store, mb)] == [b"a" * 60, b"c" * 40]
        assert (await store.stats()).bytes == 100

    async def test_store_max_bytes(self, make_store: StoreFactory) -> None:
        store = await make_store(limits(store_max_bytes=100))
        a, b = await new_mailbox(store), await new_mailbox(store)
        await put(store, a, b"a" * 60)
        with pytest.raises(StoreFull):
            await put(store, b, b"b" * 41)
        await put(store, b, b"b" * 40)
        with pytest.raises(StoreFull):
            await put(store, a, b"x")
        assert await everything(store, b) == [(1, b"b" * 40)]
        stats = await store.stats()
        assert (stats.entries, stats.bytes) == (2, 100)

    async def test_full_also_mailbox_writes_nothing(self, make_store: StoreFactory) -> None:
        store = await make_store(limits(mailbox_max_entries=2))
        a, b, c = [await new_mailbox(store) for _ in range(3)]
        await put(store, c)
        await put(store, c)
        stats = await store.stats()
        with pytest.raises(MailboxFull):
            await put(store, a, epoch=0, also=[NewEntry(b, b"w"), NewEntry(c, b"w")])
        assert await everything(store, a) == []
        assert await everything(store, b) == []
        assert await store.stats() == stats
        assert (await put(store, a, epoch=0, also=[NewEntry(b, b"w")]))[1].seq == 1

    async def test_also_entries_count_towards_the_store_quota(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store(limits(store_max_bytes=100))
        a, b = await new_mailbox(store), await new_mailbox(store)
        with pytest.raises(StoreFull):
            await put(store, a, b"a" * 60, also=[NewEntry(b, b"b" * 41)])
        assert await everything(store, a) == []
        assert await everything(store, b) == []
        assert (await store.stats()).bytes == 0
        await put(store, a, b"a" * 60, also=[NewEntry(b, b"b" * 40)])
        assert (await store.stats()).bytes == 100

    async def test_concurrent_appends_stop_exactly_at_the_quota(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store(limits(mailbox_max_entries=25))
        mb = await new_mailbox(store)
        results = await asyncio.gather(*(put(store, mb) for _ in range(60)), return_exceptions=True)
        assert sum(isinstance(r, list) for r in results) == 25
        assert all(isinstance(r, list | MailboxFull) for r in results)
        assert [s for s, _ in await everything(store, mb)] == list(range(1, 26))


class ListenerContract(_Fixtures):
    async def test_listener_sees_appends_in_seq_order(self, store: MailboxStore) -> None:
        rec = Recorder()
        store.add_listener(rec)
        mb = await new_mailbox(store)
        results = await asyncio.gather(*(put(store, mb, b"%d" % i) for i in range(200)))
        await eventually(lambda: len(rec.seqs(mb)) >= 200, "200 notifications")
        assert rec.seqs(mb) == list(range(1, 201))
        blobs = {r[0].seq: b"%d" % i for i, r in enumerate(results)}
        assert all(a.blob == blobs[a.seq] and not a.duplicate for a in rec.all())

    async def test_listener_sees_also_entries(self, store: MailboxStore) -> None:
        rec = Recorder()
        store.add_listener(rec)
        a, b = await new_mailbox(store), await new_mailbox(store)
        await put(store, a, b"commit", epoch=0, also=[NewEntry(b, b"welcome")])
        await eventually(lambda: len(rec.all()) >= 2, "two notifications")
        assert sorted((x.mailbox, x.seq, x.blob) for x in rec.all()) == sorted(
            [(a, 1, b"commit"), (b, 1, b"welcome")]
        )

    async def test_listener_is_told_after_the_commit(self, store: MailboxStore) -> None:
        mb = await new_mailbox(store)
        reads: list[tuple[int, asyncio.Future[list[tuple[int, bytes]]]]] = []

        def read_back(appended: Sequence[Appended]) -> None:
            # Start a read the moment we are told: it must already see the entry.
            for a in appended:
                reads.append((a.seq, asyncio.ensure_future(everything(store, a.mailbox))))

        store.add_listener(read_back)
        await asyncio.gather(*(put(store, mb, b"%d" % i) for i in range(20)))
        await eventually(lambda: len(reads) >= 20, "20 notifications")
        for seq, read in reads:
            assert seq in [s for s, _ in await read]

    async def test_no_notification_for_failures_or_duplicates(
        self, make_store: StoreFactory
    ) -> None:
        store = await make_store(limits(mailbox_max_entries=3))
        rec = Recorder()
        store.add_listener(rec)
        mb = await new_mailbox(store)
        await put(store, mb, key=b"k" * 8, epoch=0)
        await put(store, mb, key=b"k" * 8, epoch=0)  # duplicate
        with pytest.raises(StaleEpoch):
            await put(store, mb, epoch=0)
        with pytest.raises(CapabilityDenied):
            await put(store, mb, also=[NewEntry(secrets.token_bytes(16), b"x")])
        await put(store, mb, b"second")
        await put(store, mb, b"third")
        with pytest.raises(MailboxFull):
            await put(store, mb)
        await store.trim(mb, 1)
        await put(store, mb, b"fourth")
        await eventually(lambda: 4 in rec.seqs(mb), "the fourth entry's notification")
        assert [(a.seq, a.blob) for a in rec.all()] == [
            (1, b"blob"),
            (2, b"second"),
            (3, b"third"),
            (4, b"fourth"),
        ]


class StoreContract(
    CreateContract,
    AppendContract,
    IdempotencyContract,
    EpochContract,
    AlsoContract,
    ExpiryContract,
    FetchContract,
    TrimContract,
    QuotaContract,
    ListenerContract,
):
    """Every behaviour a :class:`~relay.store.base.MailboxStore` promises.

    A backend's test module subclasses this and provides one fixture, ``make_store``: an
    async factory that takes :class:`StoreLimits` and returns an opened, empty store,
    closing everything it opened when the test ends. The suite derives the ``store``
    fixture from it with :data:`LIMITS`; the quota tests ask for tighter limits.

    Time is an argument of the store, so no test sleeps: every call passes ``now``
    explicitly, starting at :data:`NOW`, with ``expiry_granularity=1`` so expiry times
    are exact. Listeners may be told asynchronously (e.g. through LISTEN/NOTIFY), so
    listener assertions wait for the expected notifications with :func:`eventually`
    rather than assuming they are synchronous.
    """
