"""Records: settings, rooms, paged history, search, outbox, cursors, members, retention."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backchannel.store import (
    FingerprintMismatch,
    Message,
    OutboxEntry,
    Room,
    Store,
    UnknownRecord,
)
from backchannel.store.records import fts_query

from . import ALICE, PASSPHRASE, ROOM, decrypted_pages, mid, new_store, ref, text_message

OTHER = b"room-2"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await new_store(tmp_path)
    await s.put_room(Room(ROOM, "Talks", 1.0, state=b"state-1", retention_seconds=100))
    await s.put_room(Room(OTHER, "Other", 2.0))
    yield s
    await s.close()


def entry(n: int, *, room: bytes = ROOM, mailbox: bytes = b"mailbox-1") -> OutboxEntry:
    return OutboxEntry(
        idempotency_key=b"key-%012d" % n,
        mailbox_id=mailbox,
        payload=b"ciphertext %d" % n,
        created_at=float(n),
        room_id=room,
        ref=ref(n),
    )


async def test_settings(store: Store) -> None:
    assert await store.get_setting("relay_url") is None
    await store.set_setting("relay_url", b"wss://relay.example")
    await store.set_setting("relay_url", b"wss://other.example")
    assert await store.get_setting("relay_url") == b"wss://other.example"
    assert await store.delete_setting("relay_url")
    assert not await store.delete_setting("relay_url")


async def test_rooms(store: Store) -> None:
    room = await store.room(ROOM)
    assert room is not None and room.state == b"state-1" and room.retention_seconds == 100
    assert "state-1" not in repr(room)
    await store.set_room_state(ROOM, b"state-2")
    assert (await store.room(ROOM)).state == b"state-2"  # type: ignore[union-attr]
    with pytest.raises(UnknownRecord):
        await store.set_room_state(b"nope", b"x")
    await store.put_room(dataclasses.replace(room, joined=False, left_at=5.0))
    assert [r.room_id for r in await store.rooms()] == [OTHER]
    assert [r.room_id for r in await store.rooms(include_left=True)] == [ROOM, OTHER]
    assert (await store.room(ROOM)).state == b"state-1"  # type: ignore[union-attr]


async def test_duplicate_message_is_stored_once(store: Store) -> None:
    assert await store.add_message(text_message(1))
    assert not await store.add_message(dataclasses.replace(text_message(1), body="changed"))
    assert await store.add_message(text_message(1, room=OTHER))  # ids are unique per room
    got = await store.message(ROOM, ref(1))
    assert got is not None and got.body == "message 1" and got.local_id is not None
    assert await store.message_count(ROOM) == 1


async def test_paged_history(store: Store) -> None:
    async with store.transaction() as tx:
        for n in range(1, 26):
            await tx.add_message(text_message(n))
        await tx.add_message(text_message(100, sent_at=7.0))  # same time as n=7: id breaks ties
    newest = await store.history(ROOM, limit=10)
    assert [m.sent_at for m in newest] == [float(n) for n in range(16, 26)]
    seen = list(newest)
    while page := await store.history(ROOM, limit=10, before=seen[0]):
        seen = page + seen
    assert len(seen) == 26
    assert [(m.sent_at, m.local_id) for m in seen] == sorted((m.sent_at, m.local_id) for m in seen)
    forward = await store.history(ROOM, limit=5, after=seen[0])
    assert forward == seen[1:6]
    with pytest.raises(ValueError):
        await store.history(ROOM, before=text_message(1))  # not read from the store
    assert await store.history(OTHER) == []


async def test_search(store: Store) -> None:
    bodies = [
        "We accept the ceasefire proposal",
        "The ceasefire is fragile",
        "Lunch at noon?",
        "Genève talks postponed",
    ]
    for n, body in enumerate(bodies, 1):
        await store.add_message(text_message(n, body))
    await store.add_message(text_message(9, "ceasefire elsewhere", room=OTHER))
    assert [m.body for m in await store.search(ROOM, "ceasefire")] == bodies[1::-1]
    assert [m.body for m in await store.search(ROOM, "cease")] == bodies[1::-1]  # prefix
    assert [m.body for m in await store.search(ROOM, "CEASEFIRE fragile")] == [bodies[1]]
    assert [m.body for m in await store.search(ROOM, "geneve")] == [bodies[3]]
    assert await store.search(ROOM, "   ") == []
    for hostile in ['"', "NEAR(a b", "ceasefire OR lunch", "*", "body:x", "a AND"]:
        await store.search(ROOM, hostile)  # FTS syntax in the input is inert, never an error
    assert [m.body for m in await store.search(ROOM, "ceasefire OR lunch")] == []
    await store.edit_message(ROOM, ALICE, mid(3), "Dinner instead", 10.0)
    assert await store.search(ROOM, "lunch") == []
    assert [m.edited_at for m in await store.search(ROOM, "dinner")] == [10.0]
    assert await store.delete_message(ROOM, ALICE, mid(2))
    assert [m.body for m in await store.search(ROOM, "ceasefire")] == [bodies[0]]


def test_fts_query_quotes_every_word() -> None:
    assert fts_query('say "NEAR(x)" *') == '"say" "NEAR" "x"*'
    assert fts_query("--") is None


async def test_delete_keeps_a_tombstone_and_erases_content(store: Store) -> None:
    await store.add_message(dataclasses.replace(text_message(1), kind="file", attachments=b"m"))
    await store.put_attachment_chunk(ROOM, ALICE, mid(1), 1, b"world")
    await store.put_attachment_chunk(ROOM, ALICE, mid(1), 0, b"hello ")
    assert await store.attachment(ROOM, ref(1)) == b"hello world"
    with pytest.raises(UnknownRecord):
        await store.put_attachment_chunk(ROOM, ALICE, b"missing", 0, b"x")
    assert await store.delete_message(ROOM, ALICE, mid(1))
    assert not await store.delete_message(ROOM, ALICE, b"missing")
    gone = await store.message(ROOM, ref(1))
    assert gone is not None and gone.deleted and gone.body == "" and gone.attachments is None
    assert await store.attachment(ROOM, ref(1)) == b""
    assert not await store.edit_message(ROOM, ALICE, mid(1), "resurrect", 3.0)


async def test_outbox_queue_and_acknowledge(store: Store) -> None:
    for n in (1, 2, 3):
        out = dataclasses.replace(text_message(n), outgoing=True)
        assert await store.queue_message(out, entry(n))
    assert not await store.queue_message(text_message(1), entry(1))  # a retry: no double
    assert await store.enqueue(entry(4, mailbox=b"mailbox-2"))
    assert [e.idempotency_key for e in await store.pending()] == [
        entry(n).idempotency_key for n in (1, 2, 3, 4)
    ]
    assert [e.created_at for e in await store.pending(b"mailbox-1", limit=2)] == [1.0, 2.0]
    assert "ciphertext" not in repr(await store.pending())
    await store.record_attempt(entry(1).idempotency_key, at=5.0)
    first = (await store.pending())[0]
    assert (first.attempts, first.last_attempt_at) == (1, 5.0)

    assert await store.acknowledge(entry(2).idempotency_key, 42, at=6.0)
    assert not await store.acknowledge(entry(2).idempotency_key, 43)  # idempotent
    assert await store.acknowledged_seq(entry(2).idempotency_key) == 42
    delivered = await store.message(ROOM, ref(2))
    assert delivered is not None and delivered.delivered_seq == 42 and delivered.outgoing
    assert [e.created_at for e in await store.pending()] == [1.0, 3.0, 4.0]
    # Once acknowledged, the same key can never be queued (and so posted) again.
    assert not await store.enqueue(entry(2))
    assert not await store.queue_message(text_message(2), entry(2))
    assert await store.prune_acknowledged(before=7.0) == 1
    assert await store.acknowledged_seq(entry(2).idempotency_key) is None
    with pytest.raises(ValueError):
        OutboxEntry(b"short", b"m", b"p", 1.0)


async def test_queue_message_is_atomic(store: Store) -> None:
    bad = dataclasses.replace(text_message(1), room_id=b"no-such-room")  # breaks a foreign key
    with pytest.raises(Exception, match="constraint"):
        await store.queue_message(bad, entry(1))
    assert await store.pending() == []  # the outbox row went with the failed message


async def test_cursors_only_move_forward(store: Store) -> None:
    assert await store.cursor(b"mb") is None
    await store.set_cursor(b"mb", 10, room_id=ROOM)
    await store.set_cursor(b"mb", 7)
    assert await store.cursor(b"mb") == 10
    await store.set_cursor(b"mb", 12)
    assert await store.cursor(b"mb") == 12
    with pytest.raises(ValueError):
        await store.set_cursor(b"mb", -1)


async def test_members_verification_and_key_change(store: Store) -> None:
    bob = await store.put_member(ROOM, b"bob", "Bob", b"fp-1", "participant")
    assert not bob.verified and not bob.key_changed
    with pytest.raises(FingerprintMismatch):
        await store.mark_verified(ROOM, b"bob", b"fp-0")
    with pytest.raises(UnknownRecord):
        await store.mark_verified(ROOM, b"carol", b"fp-1")
    bob = await store.mark_verified(ROOM, b"bob", b"fp-1", at=3.0)
    assert bob.verified and bob.verified_at == 3.0
    bob = await store.put_member(ROOM, b"bob", "Bobby", b"fp-1", "facilitator")
    assert bob.verified and not bob.key_changed and bob.role == "facilitator"
    bob = await store.put_member(ROOM, b"bob", "Bobby", b"fp-2", "facilitator")
    assert bob.key_changed and not bob.verified  # the loud-warning case
    assert await store.member(ROOM, b"bob") == bob
    await store.put_member(ROOM, b"amy", "Amy", b"fp-a", "observer")
    assert [m.display_name for m in await store.members(ROOM)] == ["Amy", "Bobby"]
    assert await store.remove_member(ROOM, b"amy")
    assert not await store.remove_member(ROOM, b"amy")


async def test_retention_erases_by_either_clock(store: Store) -> None:
    await store.add_message(text_message(1, sent_at=10.0))
    await store.add_message(dataclasses.replace(text_message(2), sent_at=500.0, received_at=20.0))
    await store.add_message(text_message(3, sent_at=300.0))
    await store.add_message(text_message(4, sent_at=10.0, room=OTHER))
    assert await store.erase_older_than(ROOM, 100.0) == 2
    assert [m.sent_at for m in await store.history(ROOM)] == [300.0]
    assert await store.message_count(OTHER) == 1
    # Room 1 keeps 100 s; room 2 keeps everything.
    assert await store.erase_expired(now=450.0) == 1
    assert await store.message_count(ROOM) == 0 and await store.message_count(OTHER) == 1


async def test_erase_room_takes_everything_with_it(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.queue_message(dataclasses.replace(text_message(1), kind="file"), entry(1))
        await tx.put_attachment_chunk(ROOM, ALICE, mid(1), 0, b"chunk")
        await tx.put_member(ROOM, b"bob", "Bob", b"fp", "participant")
        await tx.set_cursor(b"mailbox-1", 5, room_id=ROOM)
    assert await store.erase_room(ROOM)
    assert await store.room(ROOM) is None
    assert await store.history(ROOM) == [] and await store.members(ROOM) == []
    assert await store.pending() == [] and await store.cursor(b"mailbox-1") is None
    rows = await store.database.run(
        lambda c: c.execute("SELECT count(*) FROM attachment_chunks").fetchone()[0]
    )
    assert rows == 0
    assert not await store.erase_room(ROOM)


async def test_erased_text_leaves_no_residue_under_the_key(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    await store.put_room(Room(ROOM, "Talks", 1.0, state=b"EPOCH-SECRET-AAAA"))
    marker = "Quokkabanana plan at Zanzibarwombat"
    await store.add_message(dataclasses.replace(text_message(1, marker, sent_at=1.0), kind="file"))
    await store.put_attachment_chunk(ROOM, ALICE, mid(1), 0, b"ATTACHMENT-CHUNK-XYZ")
    for n in range(2, 40):
        await store.add_message(text_message(n, "filler text " * 20, sent_at=1000.0 + n))
    await store.checkpoint()
    folder = tmp_path / "profile"
    plain = decrypted_pages(folder, PASSPHRASE)
    # The decryption really works: the content is there before the erase.
    for needle in (
        marker.encode(),
        b"zanzibarwombat",
        b"ATTACHMENT-CHUNK-XYZ",
        b"EPOCH-SECRET-AAAA",
    ):
        assert needle in plain, needle

    assert await store.erase_older_than(ROOM, 500.0) == 1
    await store.set_room_state(ROOM, b"EPOCH-SECRET-BBBB")
    assert (folder / "store.db-wal").stat().st_size == 0  # scrubbed: the WAL is truncated
    plain = decrypted_pages(folder, PASSPHRASE)
    for needle in (b"Quokkabanana", b"quokkabanana", b"zanzibarwombat", b"ATTACHMENT-CHUNK-XYZ"):
        assert needle not in plain, needle
    assert b"EPOCH-SECRET-AAAA" not in plain and b"EPOCH-SECRET-BBBB" in plain
    await store.close()


@pytest.mark.slow
async def test_ten_thousand_messages(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    await store.put_room(Room(ROOM, "Talks", 1.0))
    batch = [
        text_message(n, f"message {n} about item{n % 97} and the agenda") for n in range(10_000)
    ]
    assert await store.add_messages(batch[:5000]) == 5000
    async with store.transaction() as tx:
        assert await tx.add_messages(batch[4000:]) == 5000  # overlapping ids are skipped
    await store.close()
    store = await Store.open(tmp_path / "profile", PASSPHRASE)
    assert await store.message_count(ROOM) == 10_000
    page = await store.history(ROOM, limit=50)
    assert [m.sent_at for m in page] == [float(n) for n in range(9950, 10_000)]
    older = await store.history(ROOM, limit=50, before=page[0])
    assert older[-1].sent_at == 9949.0
    hits = await store.search(ROOM, "item13 agenda", limit=500)
    assert len(hits) == len([n for n in range(10_000) if n % 97 == 13])
    await store.close()


async def test_message_repr_hides_the_body() -> None:
    m: Message = text_message(1, "very private words")
    assert "very private words" not in repr(m)


async def test_reactions_follow_their_message(store: Store) -> None:
    await store.add_message(text_message(1))
    await store.add_message(text_message(2))
    m1, m2 = ref(1), ref(2)
    assert await store.set_reaction(ROOM, ALICE, mid(1), b"bob", "👍", at=1.0)
    assert await store.set_reaction(ROOM, ALICE, mid(1), b"bob", "👍", at=2.0)  # idempotent
    assert await store.set_reaction(ROOM, ALICE, mid(1), b"carol", "🎉", at=3.0)
    assert await store.set_reaction(ROOM, ALICE, mid(2), b"bob", "👍", at=4.0)
    assert not await store.set_reaction(ROOM, ALICE, b"msg-unknown", b"bob", "👍")
    assert not await store.set_reaction(ROOM, b"bob", mid(1), b"bob", "👍")  # wrong author
    got = await store.reactions(ROOM, [m1, m2])
    assert got == {m1: [("👍", b"bob"), ("🎉", b"carol")], m2: [("👍", b"bob")]}
    assert await store.set_reaction(ROOM, ALICE, mid(1), b"bob", "👍", remove=True)
    assert (await store.reactions(ROOM, [m1]))[m1] == [("🎉", b"carol")]
    assert await store.delete_message(ROOM, ALICE, mid(1))  # a tombstone keeps no reactions
    assert await store.reactions(ROOM, [m1]) == {}
    assert not await store.set_reaction(ROOM, ALICE, mid(1), b"bob", "👍")
    assert await store.erase_older_than(ROOM, 10.0) == 2  # erased messages take theirs along
    assert await store.reactions(ROOM, [m2]) == {}
