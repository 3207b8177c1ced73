"""The outbox as a sender reads it: heads of every mailbox, rooms first; refused posts
leave it (issue #16: a backlog of refused answers jammed every later post)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backchannel.store import OutboxEntry, Room, Store

from . import ROOM, new_store, ref, text_message


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await new_store(tmp_path)
    await s.put_room(Room(ROOM, "Talks", 1.0))
    yield s
    await s.close()


def post(n: int, mailbox: bytes, *, room: bytes | None = None) -> OutboxEntry:
    return OutboxEntry(
        b"key-%012d" % n,
        mailbox,
        b"ciphertext %d" % n,
        float(n),
        room_id=room,
        ref=None if room is None else ref(n),
    )


async def test_a_backlog_in_other_mailboxes_never_hides_a_rooms_posts(store: Store) -> None:
    # 1,100 answers to join requests, each to its own inbox, queued before the room's post
    async with store.transaction() as tx:
        for n in range(1100):
            await tx.enqueue(post(n, b"inbox-%06d" % n))
    await store.queue_message(
        dataclasses.replace(text_message(5000), outgoing=True),
        post(5000, b"room-mailbox", room=ROOM),
    )
    # what the engine used to read (the first 1,000) did not reach the room's post
    assert all(e.room_id is None for e in await store.pending(limit=1000))
    heads = await store.outbox_heads(per_mailbox=8, mailboxes=64)
    assert heads[0].mailbox_id == b"room-mailbox"  # rooms first
    assert len(heads) == 64 and len({e.mailbox_id for e in heads}) == 64


async def test_heads_keep_the_order_within_a_mailbox(store: Store) -> None:
    async with store.transaction() as tx:
        for n in range(10):
            await tx.enqueue(post(n, b"a" if n % 2 else b"b", room=ROOM))
    heads = await store.outbox_heads(per_mailbox=3, mailboxes=8)
    assert [e.created_at for e in heads] == [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]


async def test_a_dropped_post_leaves_the_outbox_and_its_message_says_refused(
    store: Store,
) -> None:
    await store.queue_message(
        dataclasses.replace(text_message(1), outgoing=True), post(1, b"m", room=ROOM)
    )
    dropped = await store.drop_outbox(post(1, b"m").idempotency_key, refused_at=7.0)
    assert dropped is not None and dropped.ref == ref(1)
    assert await store.pending() == []
    assert await store.drop_outbox(post(1, b"m").idempotency_key) is None
    rows = await store.database.run(
        lambda c: c.execute("SELECT refused_at, delivered_seq FROM messages").fetchall()
    )
    assert [tuple(r) for r in rows] == [(7.0, None)]
