"""The PostgreSQL store: the shared contract, group commit, and hint coalescing across nodes."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from relay.appkeys import OPERATIONS, STORE
from relay.errors import CapabilityDenied, MailboxFull, StaleEpoch, StoreUnavailable
from relay.protocol import Push
from relay.store.base import MailboxStore, NewEntry, StoreLimits
from relay.store.postgres import PostgresStore
from tests.conftest import POSTGRES_URL, RelayFactory, RunningRelay
from tests.relay.store_contract import (
    LIMITS,
    Recorder,
    StoreContract,
    StoreFactory,
    eventually,
    everything,
    limits,
    new_mailbox,
    put,
)


@pytest.fixture
def store_kind() -> str:
    return "postgres"


@pytest.fixture
async def make_store(postgres_url: str) -> AsyncIterator[StoreFactory]:
    """Each store gets its own schema: the first the fixture's, later ones made here."""
    opened: list[PostgresStore] = []
    schemas: list[str] = []

    async def make(store_limits: StoreLimits) -> MailboxStore:
        url = postgres_url
        if opened:
            schema = "bc_test_" + os.urandom(6).hex()
            conn = await asyncpg.connect(POSTGRES_URL)
            try:
                await conn.execute(f"CREATE SCHEMA {schema}")
            finally:
                await conn.close()
            schemas.append(schema)
            url = postgres_url.rsplit("search_path=", 1)[0] + f"search_path={schema}"
        store = PostgresStore(url, store_limits)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
    if schemas:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            for schema in schemas:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> PostgresStore:
    made = await make_store(LIMITS)
    assert isinstance(made, PostgresStore)
    return made


class TestPostgresContract(StoreContract):
    """Everything a store promises, with appends going through the batch writer."""


# -- group commit ----------------------------------------------------------------------------


async def test_concurrent_appends_share_one_transaction(store: PostgresStore) -> None:
    mailboxes = [await new_mailbox(store) for _ in range(5)]
    before = store.batches
    results = await asyncio.gather(*(put(store, mailboxes[i % 5], b"%d" % i) for i in range(50)))
    # All 50 were queued in one loop turn: one writer takes them all, one COMMIT.
    assert store.batches - before == 1
    assert store.batched_appends >= 50
    for n, mb in enumerate(mailboxes):
        seqs = [r[0].seq for i, r in enumerate(results) if i % 5 == n]
        assert seqs == list(range(1, 11))  # gapless, and in the order they were queued
        assert [b for _, b in await everything(store, mb)] == [
            b"%d" % i for i in range(50) if i % 5 == n
        ]
    stats = await store.stats()
    assert (stats.entries, stats.bytes) == (50, sum(len(b"%d" % i) for i in range(50)))


async def test_a_refused_append_fails_alone_in_its_batch(make_store: StoreFactory) -> None:
    store = await make_store(limits(mailbox_max_entries=2))
    assert isinstance(store, PostgresStore)
    rec = Recorder()
    store.add_listener(rec)
    a, b, full, other = [await new_mailbox(store) for _ in range(4)]
    await put(store, full)
    await put(store, full)
    before = store.batches
    results = await asyncio.gather(
        put(store, a, b"a1", epoch=0),  # wins the epoch
        put(store, a, b"stale", epoch=0),  # stale_epoch: the epoch moved in this batch
        put(store, full, b"over"),  # mailbox_full
        put(store, secrets.token_bytes(16), b"nobody"),  # denied
        put(store, b, b"b1", also=[NewEntry(other, b"o1")]),
        put(store, a, b"with-full-also", also=[NewEntry(full, b"x")]),  # full also: all or none
        put(store, a, b"a2"),
        return_exceptions=True,
    )
    assert store.batches - before == 1
    ok_a1, stale, over, denied, with_also, bad_also, ok_a2 = results
    assert isinstance(stale, StaleEpoch) and stale.current == 1
    assert isinstance(over, MailboxFull)
    assert isinstance(denied, CapabilityDenied)
    assert isinstance(bad_also, MailboxFull)
    assert isinstance(ok_a1, list) and (ok_a1[0].seq, ok_a1[0].epoch) == (1, 1)
    assert isinstance(ok_a2, list) and ok_a2[0].seq == 2
    assert isinstance(with_also, list) and [x.seq for x in with_also] == [1, 1]
    assert await everything(store, a) == [(1, b"a1"), (2, b"a2")]
    assert await everything(store, other) == [(1, b"o1")]
    assert [s for s, _ in await everything(store, full)] == [1, 2]
    stats = await store.stats()
    assert stats.entries == 2 + 2 + 2  # full's two, a's two, b's and other's one each
    assert stats.bytes == len(b"blob") * 2 + len(b"a1a2b1o1")
    await eventually(lambda: len(rec.all()) >= 6, "the batch's notifications")
    assert sorted((x.mailbox, x.seq) for x in rec.all() if x.mailbox != full) == sorted(
        [(a, 1), (a, 2), (b, 1), (other, 1)]
    )


async def test_a_failed_commit_fails_every_append_of_the_batch(store: PostgresStore) -> None:
    """A deferred constraint trigger raises at COMMIT: nobody may be acknowledged."""
    assert store._pool is not None
    async with store._pool.acquire() as conn:
        await conn.execute(
            """
            CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.blob = '\\x706f69736f6e'::bytea THEN  -- 'poison'
                    RAISE EXCEPTION 'refused at commit';
                END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER poison AFTER INSERT ON relay_entries
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_poison();
            """
        )
    rec = Recorder()
    store.add_listener(rec)
    mb = await new_mailbox(store)
    results = await asyncio.gather(
        put(store, mb, b"fine"),
        put(store, mb, b"poison"),
        put(store, mb, b"also fine"),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert await everything(store, mb) == []
    assert (await store.stats()).entries == 0
    # Later batches are not affected, and the sequence has no gap.
    assert (await put(store, mb, b"next"))[0].seq == 1
    await eventually(lambda: len(rec.all()) >= 1, "the next entry's notification")
    assert [(x.seq, x.blob) for x in rec.all()] == [(1, b"next")]


async def test_many_writers_on_one_store_stay_gapless_with_few_batches(
    store: PostgresStore,
) -> None:
    mailboxes = [await new_mailbox(store) for _ in range(8)]
    before = store.batches

    async def writer(w: int) -> list[tuple[bytes, int]]:
        out = []
        for n in range(20):
            mb = mailboxes[(w + n) % 8]
            out.append((mb, (await put(store, mb, b"%d:%d" % (w, n)))[0].seq))
        return out

    done = await asyncio.gather(*(writer(w) for w in range(40)))
    per_mailbox: dict[bytes, list[int]] = {}
    for mb, seq in (x for xs in done for x in xs):
        per_mailbox.setdefault(mb, []).append(seq)
    for mb in mailboxes:
        assert sorted(per_mailbox[mb]) == list(range(1, 101))
        assert [s for s, _ in await everything(store, mb)] == list(range(1, 101))
    # 800 appends with 40 in flight at a time: far fewer transactions than appends.
    assert store.batches - before < 400


async def test_a_batch_chosen_as_deadlock_victim_runs_again(store: PostgresStore) -> None:
    """Another session locks a counter row, then the batch's mailbox row: a real deadlock."""
    mb = await new_mailbox(store)
    other = await asyncpg.connect(store.url)
    try:
        await other.execute("BEGIN")
        await other.execute(
            "UPDATE relay_totals SET entries = entries WHERE shard = $1", mb[0] % 16
        )
        task = asyncio.ensure_future(put(store, mb, b"patient"))
        for _ in range(500):  # until the batch waits for that counter row
            await other.execute("SELECT pg_stat_clear_snapshot()")  # fresh in a transaction
            waiting = await other.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%relay_append_batch%'"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the batch never waited for the counter row")
        # The batch waited first, so its deadlock check fires first: it is the victim.
        await other.execute("SELECT 1 FROM relay_mailboxes WHERE id = $1 FOR UPDATE", mb)
        await other.execute("ROLLBACK")
        result = await task
    finally:
        await other.close()
    assert result[0].seq == 1 and store.batch_retries == 1
    assert await everything(store, mb) == [(1, b"patient")]
    assert (await store.stats()).entries == 1


# -- two nodes ---------------------------------------------------------------------------------


@pytest.fixture
async def two_nodes(start_relay: RelayFactory) -> list[RunningRelay]:
    return [await start_relay(), await start_relay()]


async def test_concurrent_appends_on_two_nodes_are_gapless_and_delivered_once(
    two_nodes: list[RunningRelay],
) -> None:
    caps = [await two_nodes[0].mailbox() for _ in range(3)]
    readers = []  # several subscriptions per mailbox on each node: hints get shared
    for node in two_nodes:
        for cap in caps:
            for _ in range(3):
                r = await node.session()
                await r.auth(cap, "read")
                await r.call("subscribe", mailbox=cap.mailbox, after=0)
                readers.append((cap, r))
    writers = []
    for node in two_nodes:
        for _ in range(4):
            w = await node.session()
            for cap in caps:
                await w.auth(cap, "write")
            writers.append(w)

    async def write(index: int, w: object) -> list[tuple[bytes, int]]:
        answers = await asyncio.gather(
            *(
                w.call("append", mailbox=caps[n % 3].mailbox, blob=b"%d:%d" % (index, n))  # type: ignore[attr-defined]
                for n in range(30)
            )
        )
        return [(caps[n % 3].mailbox, a["seq"]) for n, a in enumerate(answers)]

    per_writer = await asyncio.gather(*(write(i, w) for i, w in enumerate(writers)))
    expected: dict[tuple[bytes, int], bytes] = {}
    for i, pairs in enumerate(per_writer):
        for n, key in enumerate(pairs):
            expected[key] = b"%d:%d" % (i, n)
    for cap in caps:
        assert sorted(s for mb, s in expected if mb == cap.mailbox) == list(range(1, 81))
    for cap, reader in readers:
        got: list[Push] = []
        while len(got) < 80:
            event = await reader.next_event(15)
            assert isinstance(event, Push)
            got.append(event)
        assert [p.seq for p in got] == list(range(1, 81))
        assert all(p.blob == expected[(cap.mailbox, p.seq)] for p in got)
        with pytest.raises(TimeoutError):
            await reader.next_event(0.2)
    for node in two_nodes:
        pg = node.app[STORE]
        assert isinstance(pg, PostgresStore)
        assert pg.batches < pg.batched_appends  # some appends shared a transaction


async def test_one_store_read_serves_every_subscription_of_a_hinted_mailbox(
    two_nodes: list[RunningRelay],
) -> None:
    writer_node, reader_node = two_nodes
    writer = await writer_node.session()
    cap = await writer_node.mailbox(writer)
    readers = []
    for _ in range(10):
        r = await reader_node.session()
        await r.auth(cap, "read")
        await r.call("subscribe", mailbox=cap.mailbox, after=0)
        readers.append(r)
    hub = reader_node.app[OPERATIONS].hub
    await asyncio.sleep(0.2)  # the initial catch-ups end: every subscription is live
    before = hub.hint_reads
    for n in range(5):
        await writer.call("append", mailbox=cap.mailbox, blob=b"%d" % n)
        for r in readers:
            event = await r.next_event(10)
            assert isinstance(event, Push) and event.seq == n + 1 and event.blob == b"%d" % n
    # One shared read per hinted entry at most, not one per subscription (10 each).
    assert hub.hint_reads - before <= 5
    for r in readers:
        with pytest.raises(TimeoutError):
            await r.next_event(0.2)


# -- settings ----------------------------------------------------------------------------------


def test_database_pool_size_setting_reaches_the_store() -> None:
    from relay.config import load_config
    from relay.errors import ConfigError
    from relay.store import open_store

    config = load_config(environ={"BACKCHANNEL_RELAY_DATABASE_POOL_SIZE": "3"})
    assert config.database_pool_size == 3
    assert load_config(environ={}).database_pool_size == 10
    with pytest.raises(ConfigError, match="database_pool_size"):
        load_config(environ={"BACKCHANNEL_RELAY_DATABASE_POOL_SIZE": "0"})
    with pytest.raises(ConfigError, match="database_pool_size"):
        load_config(environ={"BACKCHANNEL_RELAY_DATABASE_POOL_SIZE": "ten"})
    store = open_store("postgresql://relay@localhost/relay", StoreLimits(), pool_size=3)
    assert isinstance(store, PostgresStore) and store.pool_size == 3


async def test_a_small_pool_still_batches_and_stays_gapless(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, LIMITS, pool_size=1)
    await store.open()
    try:
        mb = await new_mailbox(store)
        results = await asyncio.gather(*(put(store, mb, b"%d" % i) for i in range(100)))
        assert [r[0].seq for r in results] == list(range(1, 101))
        assert store.batches <= 2  # 100 appends queued at once: batches of at most 64
        assert [s for s, _ in await everything(store, mb)] == list(range(1, 101))
    finally:
        await store.close()
