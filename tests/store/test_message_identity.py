"""A message is (room, author, id): two members' messages never share a row or a ref.

Message ids are chosen by senders, so a hostile member can send any id it has
seen. These tests hold the store to the rule that nothing addressed by (author,
id) can reach another author's message, and that schema 3 carries a version 2
profile over without losing or re-attributing anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import pytest

from backchannel.store import Message, Store
from backchannel.store.database import apply_migrations
from backchannel.store.records import message_ref

from . import ALICE, ROOM, mid, new_store, ref, text_message

MALLORY = b"mallory"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    from backchannel.store import Room

    s = await new_store(tmp_path)
    await s.put_room(Room(ROOM, "Talks", 1.0))
    yield s
    await s.close()


def forged(n: int, body: str = "forged") -> Message:
    """Mallory's message reusing the id of Alice's message number ``n``."""
    return dataclasses.replace(text_message(n, body), sender_id=MALLORY, sender_name="Mallory")


async def test_the_same_id_from_two_senders_is_two_messages(store: Store) -> None:
    assert await store.add_message(text_message(1, "the original"))
    assert await store.add_message(forged(1))
    assert not await store.add_message(forged(1, "again"))  # a replay of Mallory's own
    alice, mallory = await store.message(ROOM, ref(1)), await store.message(ROOM, ref(1, MALLORY))
    assert alice is not None and alice.body == "the original" and alice.sender_id == ALICE
    assert mallory is not None and mallory.body == "forged" and mallory.sender_id == MALLORY
    assert ref(1) != ref(1, MALLORY)
    assert await store.message_count(ROOM) == 2


@pytest.mark.parametrize("forged_first", [False, True])
async def test_an_author_touches_only_its_own_message(store: Store, forged_first: bool) -> None:
    order = [forged(1), text_message(1, "the original")]
    for m in order if forged_first else order[::-1]:
        await store.add_message(m)
    await store.add_message(dataclasses.replace(text_message(2), kind="file", attachments=b"m"))
    # Everything Mallory aims at id 1 and 2 touches Mallory's message or nothing.
    assert await store.edit_message(ROOM, MALLORY, mid(1), "REWRITTEN", 5.0)
    assert await store.delete_message(ROOM, MALLORY, mid(1))
    assert not await store.edit_message(ROOM, MALLORY, mid(2), "REWRITTEN", 5.0)
    assert not await store.delete_message(ROOM, MALLORY, mid(2))
    with pytest.raises(Exception, match="No such file"):
        await store.put_attachment_chunk(ROOM, MALLORY, mid(2), 0, b"evil")
    assert not await store.set_reaction(ROOM, MALLORY, mid(2), MALLORY, "👎")
    alice = await store.message(ROOM, ref(1))
    assert alice is not None and alice.body == "the original"
    assert alice.edited_at is None and not alice.deleted
    assert await store.attachment_chunks(ROOM, ref(2)) == 0
    assert await store.reactions(ROOM, [ref(1), ref(2)]) == {}
    # A file's own sender still writes its chunks; only texts can be edited.
    await store.put_attachment_chunk(ROOM, ALICE, mid(2), 0, b"good")
    assert await store.attachment(ROOM, ref(2)) == b"good"
    assert not await store.edit_message(ROOM, ALICE, mid(2), "renamed.exe", 6.0)


async def test_reply_refs_name_the_author(store: Store) -> None:
    reply = dataclasses.replace(text_message(3), reply_to=mid(1), reply_author=ALICE)
    await store.add_message(reply)
    got = await store.message(ROOM, ref(3))
    assert got is not None and got.reply_ref == ref(1) and got.reply_ref != ref(1, MALLORY)
    assert await store.message_id_used(ROOM, mid(3))
    assert not await store.message_id_used(ROOM, mid(1))
    with pytest.raises(ValueError, match="go together"):
        dataclasses.replace(text_message(4), reply_to=mid(1))


def _v2_database() -> object:
    """An in-memory database at schema 2 with data of every kind."""
    import sqlcipher3.dbapi2 as sqlite

    conn = sqlite.connect(":memory:", isolation_level=None)
    folder = resources.files("backchannel.store").joinpath("migrations")
    for name in ("0001_initial.sql", "0002_reactions.sql"):
        conn.executescript(folder.joinpath(name).read_text(encoding="utf-8"))
    conn.execute("PRAGMA user_version = 2")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("INSERT INTO rooms (room_id, title, created_at) VALUES (?, 'Talks', 1)", (ROOM,))
    rows = [
        (1, mid(1), ALICE, "hello world", None, 0),
        (2, mid(2), b"bob", "a reply to alice", mid(1), 1),
        (3, mid(3), b"bob", "a reply to nothing here", b"x" * 16, 0),
    ]
    for n, message_id, sender, body, reply_to, outgoing in rows:
        conn.execute(
            "INSERT INTO messages (id, room_id, message_id, sender_id, sender_name, sent_at,"
            " received_at, kind, body, reply_to, outgoing) VALUES (?, ?, ?, ?, 'x', ?, ?,"
            " 'text', ?, ?, ?)",
            (n, ROOM, message_id, sender, n, n, body, reply_to, outgoing),
        )
    conn.execute("INSERT INTO attachment_chunks VALUES (1, 0, x'00ff')")
    conn.execute("INSERT INTO reactions VALUES (?, ?, ?, '👍', 4.0)", (ROOM, mid(1), b"bob"))
    conn.execute(
        "INSERT INTO outbox (idempotency_key, room_id, mailbox_id, payload, message_id,"
        " created_at) VALUES (?, ?, ?, x'01', ?, 5.0)",
        (b"k" * 16, ROOM, b"mbox", mid(2)),
    )
    return conn


def test_schema_3_carries_a_version_2_profile_over() -> None:
    conn = _v2_database()
    folder = resources.files("backchannel.store").joinpath("migrations")
    latest = max(int(m.name[:4]) for m in folder.iterdir() if m.name.endswith(".sql"))
    assert apply_migrations(conn) == latest  # type: ignore[arg-type]
    c = conn  # type: ignore[assignment]
    got = c.execute(  # type: ignore[attr-defined]
        "SELECT id, ref, sender_id, body, reply_to, reply_author FROM messages ORDER BY id"
    ).fetchall()
    assert [tuple(r) for r in got] == [
        (1, message_ref(ALICE, mid(1)), ALICE, "hello world", None, None),
        (2, message_ref(b"bob", mid(2)), b"bob", "a reply to alice", mid(1), ALICE),
        (3, message_ref(b"bob", mid(3)), b"bob", "a reply to nothing here", None, None),
    ]
    assert c.execute("SELECT * FROM attachment_chunks").fetchall() == [(1, 0, b"\x00\xff")]  # type: ignore[attr-defined]
    assert [tuple(r) for r in c.execute("SELECT * FROM reactions").fetchall()] == [  # type: ignore[attr-defined]
        (1, b"bob", "👍", 4.0)
    ]
    outbox = c.execute("SELECT ref FROM outbox").fetchall()  # type: ignore[attr-defined]
    assert [r[0] for r in outbox] == [message_ref(b"bob", mid(2))]
    # The search index still points at the right rows, and follows edits.
    hits = c.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'reply'").fetchall()  # type: ignore[attr-defined]
    assert sorted(r[0] for r in hits) == [2, 3]
    c.execute("UPDATE messages SET body = 'goodbye' WHERE id = 1")  # type: ignore[attr-defined]
    assert c.execute(
        "SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'goodbye'"
    ).fetchall() == [(1,)]  # type: ignore[attr-defined]
    # Foreign keys are back on, and a tombstone still takes its reactions.
    assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1  # type: ignore[attr-defined]
    c.execute("UPDATE messages SET deleted = 1 WHERE id = 1")  # type: ignore[attr-defined]
    assert c.execute("SELECT count(*) FROM reactions").fetchone()[0] == 0  # type: ignore[attr-defined]
    c.execute("DELETE FROM messages WHERE id = 1")  # type: ignore[attr-defined]
    assert c.execute("SELECT count(*) FROM attachment_chunks").fetchone()[0] == 0  # type: ignore[attr-defined]
