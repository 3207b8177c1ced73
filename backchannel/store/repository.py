"""The async repository over the store's records: ``Store`` and ``StoreTransaction``.

Theory of operation: every method is a short synchronous function of the
connection, run on the store thread by ``Database.run`` (its own transaction)
or ``Transaction.run`` (inside ``store.transaction()``). The crash-safety rules
live here as transaction boundaries:

* ``queue_message`` writes the local message and its outbox entry together, so a
  message the UI shows as sent is always either queued or acknowledged;
* ``acknowledge`` deletes the outbox entry, marks the message delivered and
  remembers the key in one transaction, so a key is never posted twice;
* a message is the pair (sender, id), never the id alone: ids are chosen by
  senders, so every lookup that changes a message names its author, and the
  views address messages by :func:`~.records.message_ref` of the pair;
* the client moves a mailbox cursor (``set_cursor``) in the same transaction as
  the messages it derived from that mailbox.

Erasing methods (retention, deletes, group-state overwrites) run with ``scrub``:
after the commit the WAL is checkpointed and truncated, and ``secure_delete``
has already zeroed the freed bytes in the pages.
"""

from __future__ import annotations

import dataclasses
import hmac
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from .database import Connection, Database, ProfilePaths, Transaction
from .errors import FingerprintMismatch, UnknownRecord
from .keys import RFC9106_SECOND, KdfParams
from .records import Member, Message, OutboxEntry, Room, from_row, fts_query

__all__ = ["Store", "StoreTransaction"]

T = TypeVar("T")
Clock = Callable[[], float]


def _anchor(message: Message) -> tuple[float, int]:
    if message.local_id is None:
        raise ValueError("paging anchors must be messages read from the store")
    return message.sent_at, message.local_id


class _Repository:
    """The record operations, shared by the store and its transactions."""

    _clock: Clock

    async def _run(self, fn: Callable[[Connection], T], *, scrub: bool = False) -> T:
        raise NotImplementedError

    async def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        return await self._run(lambda c: c.execute(sql, args).fetchone())

    async def _all(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        return await self._run(lambda c: c.execute(sql, args).fetchall())

    async def _change(self, sql: str, args: tuple[Any, ...], *, scrub: bool = False) -> int:
        return await self._run(lambda c: c.execute(sql, args).rowcount, scrub=scrub)

    # -- settings -------------------------------------------------------------------------

    async def get_setting(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None."""
        row = await self._one("SELECT value FROM settings WHERE key = ?", (key,))
        return None if row is None else bytes(row[0])

    async def set_setting(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``; an old value is erased from the disk."""
        await self._change(
            "INSERT INTO settings (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, bytes(value)),
            scrub=True,
        )

    async def delete_setting(self, key: str) -> bool:
        """Erase ``key``; returns whether it existed."""
        return await self._change("DELETE FROM settings WHERE key = ?", (key,), scrub=True) > 0

    async def settings_with_prefix(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every setting whose key starts with ``prefix``, by key."""
        rows = await self._all(
            "SELECT key, value FROM settings WHERE substr(key, 1, ?) = ? ORDER BY key",
            (len(prefix), prefix),
        )
        return [(str(k), bytes(v)) for k, v in rows]

    # -- rooms ------------------------------------------------------------------------------

    async def put_room(self, room: Room) -> None:
        """Insert or replace a room's row (its messages, members and cursors stay)."""
        await self._change(
            "INSERT INTO rooms (room_id, title, created_at, state, mailbox, retention_seconds,"
            " joined, left_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (room_id) DO UPDATE"
            " SET title = excluded.title, created_at = excluded.created_at,"
            " state = excluded.state, mailbox = excluded.mailbox,"
            " retention_seconds = excluded.retention_seconds, joined = excluded.joined,"
            " left_at = excluded.left_at",
            (room.room_id, room.title, room.created_at, room.state, room.mailbox,
             room.retention_seconds, int(room.joined), room.left_at),
            scrub=True,
        )  # fmt: skip

    async def set_room_state(self, room_id: bytes, state: bytes) -> None:
        """Replace a room's opaque state; the old one is erased from the disk.

        Raises:
            UnknownRecord: no such room.
        """
        sql = "UPDATE rooms SET state = ? WHERE room_id = ?"
        if await self._change(sql, (state, room_id), scrub=True) == 0:
            raise UnknownRecord("No such room in the store.")

    async def room(self, room_id: bytes) -> Room | None:
        """The room, or None."""
        row = await self._one("SELECT * FROM rooms WHERE room_id = ?", (room_id,))
        return None if row is None else from_row(Room, row)

    async def rooms(self, *, include_left: bool = False) -> list[Room]:
        """All rooms (joined ones only unless ``include_left``), oldest first."""
        rows = await self._all(
            "SELECT * FROM rooms WHERE joined >= ? ORDER BY created_at, room_id",
            (0 if include_left else 1,),
        )
        return [from_row(Room, r) for r in rows]

    async def erase_room(self, room_id: bytes) -> bool:
        """Erase a room with its messages, attachments, members, cursors and outbox entries."""
        sql = "DELETE FROM rooms WHERE room_id = ?"
        return await self._change(sql, (room_id,), scrub=True) > 0

    async def archive_room(self, room_id: bytes, archive_id: bytes) -> bool:
        """Move a room this profile left, with what it kept of it, to ``archive_id``.

        For a Welcome back into a room this profile has left (a re-admission): the new
        membership starts from nothing, and the history kept from before stays under
        its own id (marked left), never mixed into what the new membership shows. The
        old MLS state is erased, and so are posts still queued for it (they belong to a
        group state that is over).

        Returns:
            False if there is no room ``room_id``.

        Raises:
            ValueError: the room is still joined (a live room is never archived).
        """

        def op(c: Connection) -> bool:
            row = c.execute("SELECT joined FROM rooms WHERE room_id = ?", (room_id,)).fetchone()
            if row is None:
                return False
            if row[0]:
                raise ValueError("only a room this profile has left can be archived")
            c.execute(
                "INSERT INTO rooms (room_id, title, created_at, state, mailbox,"
                " retention_seconds, joined, left_at) SELECT ?, title, created_at, NULL, NULL,"
                " retention_seconds, 0, left_at FROM rooms WHERE room_id = ?",
                (archive_id, room_id),
            )
            moves = (
                "UPDATE messages SET room_id = ? WHERE room_id = ?",
                "UPDATE members SET room_id = ? WHERE room_id = ?",
                "UPDATE cursors SET room_id = ? WHERE room_id = ?",
                "UPDATE held_changes SET room_id = ? WHERE room_id = ?",
            )
            for sql in moves:
                c.execute(sql, (archive_id, room_id))
            c.execute("DELETE FROM outbox WHERE room_id = ?", (room_id,))
            c.execute("DELETE FROM rooms WHERE room_id = ?", (room_id,))
            return True

        return await self._run(op, scrub=True)

    # -- cursors -----------------------------------------------------------------------------

    async def cursor(self, mailbox_id: bytes) -> int | None:
        """The last sequence number processed from ``mailbox_id``, or None."""
        row = await self._one("SELECT seq FROM cursors WHERE mailbox_id = ?", (mailbox_id,))
        return None if row is None else int(row[0])

    async def set_cursor(
        self, mailbox_id: bytes, seq: int, *, room_id: bytes | None = None
    ) -> None:
        """Move a mailbox cursor forward to ``seq`` (never backward)."""
        if seq < 0:
            raise ValueError("seq must not be negative")
        await self._change(
            "INSERT INTO cursors (mailbox_id, room_id, seq) VALUES (?, ?, ?)"
            " ON CONFLICT (mailbox_id) DO UPDATE SET seq = max(seq, excluded.seq),"
            " room_id = coalesce(excluded.room_id, room_id)",
            (mailbox_id, room_id, seq),
        )

    async def reset_cursor(self, mailbox_id: bytes, seq: int) -> None:
        """Move a mailbox cursor to ``seq``, backward too: the relay lost entries after
        it (restored from a backup) and numbers its next ones from there."""
        if seq < 0:
            raise ValueError("seq must not be negative")
        await self._change("UPDATE cursors SET seq = ? WHERE mailbox_id = ?", (seq, mailbox_id))

    # -- messages ----------------------------------------------------------------------------

    async def add_message(self, message: Message) -> bool:
        """Store a message; False (and nothing changes) if its sender already sent that id."""
        return await self._run(lambda c: _insert_message(c, message))

    async def add_messages(self, messages: Sequence[Message]) -> int:
        """Store many messages in one go (catching up); returns how many were new."""
        return await self._run(lambda c: sum(_insert_message(c, m) for m in messages))

    async def queue_message(self, message: Message, entry: OutboxEntry) -> bool:
        """Store an outgoing message and its outbox entry atomically.

        Returns:
            False if the entry's key was already queued or acknowledged (a retry):
            nothing is written twice.
        """

        def op(c: Connection) -> bool:
            if not _enqueue(c, entry):
                return False
            _insert_message(c, message)
            return True

        return await self._run(op)

    async def message(self, room_id: bytes, ref: bytes) -> Message | None:
        """The message whose :attr:`~.records.Message.ref` is ``ref``, or None."""
        row = await self._one(
            "SELECT * FROM messages WHERE room_id = ? AND ref = ?", (room_id, ref)
        )
        return None if row is None else from_row(Message, row)

    async def has_message(self, room_id: bytes, sender_id: bytes, message_id: bytes) -> bool:
        """Whether ``sender_id``'s message ``message_id`` is stored (even as a tombstone)."""
        return await self._run(
            lambda c: _message_row(c, room_id, sender_id, message_id) is not None
        )

    async def message_id_used(self, room_id: bytes, message_id: bytes) -> bool:
        """Whether some member's message in the room has the id ``message_id``."""
        sql = "SELECT 1 FROM messages WHERE room_id = ? AND message_id = ? LIMIT 1"
        return await self._one(sql, (room_id, message_id)) is not None

    async def history(
        self,
        room_id: bytes,
        *,
        limit: int = 50,
        before: Message | None = None,
        after: Message | None = None,
    ) -> list[Message]:
        """A page of a room's history, oldest first, ordered by (sent_at, local_id).

        Args:
            room_id: the room.
            limit: at most this many messages.
            before: the page just older than this message (the newest page if None).
            after: the page just newer than this message (instead of ``before``).
        """
        if before is not None and after is not None:
            raise ValueError("give before or after, not both")
        if after is not None:
            rows = await self._all(
                "SELECT * FROM messages WHERE room_id = ? AND (sent_at, id) > (?, ?)"
                " ORDER BY sent_at, id LIMIT ?",
                (room_id, *_anchor(after), limit),
            )
            return [from_row(Message, r) for r in rows]
        if before is not None:
            rows = await self._all(
                "SELECT * FROM messages WHERE room_id = ? AND (sent_at, id) < (?, ?)"
                " ORDER BY sent_at DESC, id DESC LIMIT ?",
                (room_id, *_anchor(before), limit),
            )
        else:
            rows = await self._all(
                "SELECT * FROM messages WHERE room_id = ? ORDER BY sent_at DESC, id DESC LIMIT ?",
                (room_id, limit),
            )
        return [from_row(Message, r) for r in reversed(rows)]

    async def message_count(self, room_id: bytes) -> int:
        """How many messages the room has stored."""
        row = await self._one("SELECT count(*) FROM messages WHERE room_id = ?", (room_id,))
        return int(row[0])

    async def unread_count(self, room_id: bytes, since: float) -> int:
        """Messages from others received after ``since`` (not deleted)."""
        row = await self._one(
            "SELECT count(*) FROM messages WHERE room_id = ? AND received_at > ?"
            " AND outgoing = 0 AND deleted = 0",
            (room_id, since),
        )
        return int(row[0])

    async def search(self, room_id: bytes, query: str, *, limit: int = 50) -> list[Message]:
        """Messages of one room containing every word of ``query`` (last word as a prefix).

        Returns:
            Matches, newest first; empty if ``query`` has no words.
        """
        match = fts_query(query)
        if match is None:
            return []
        rows = await self._all(
            # CROSS JOIN keeps the FTS index as the outer loop: the planner would otherwise
            # walk the room's messages by time and probe the index once per row.
            "SELECT m.* FROM messages_fts CROSS JOIN messages AS m ON m.id = messages_fts.rowid"
            " WHERE messages_fts MATCH ? AND m.room_id = ? AND m.deleted = 0"
            " ORDER BY m.sent_at DESC, m.id DESC LIMIT ?",
            (match, room_id, limit),
        )
        return [from_row(Message, r) for r in rows]

    async def edit_message(
        self, room_id: bytes, sender_id: bytes, message_id: bytes, body: str, edited_at: float
    ) -> bool:
        """Replace the text of ``sender_id``'s text message ``message_id`` (the old text is
        erased); False if that sender has no such text, or it was deleted."""
        sql = (
            "UPDATE messages SET body = ?, edited_at = ? WHERE room_id = ? AND sender_id = ?"
            " AND message_id = ? AND kind = 'text' AND deleted = 0"
        )
        args = (body, edited_at, room_id, sender_id, message_id)
        return await self._change(sql, args, scrub=True) > 0

    async def delete_message(self, room_id: bytes, sender_id: bytes, message_id: bytes) -> bool:
        """Keep a tombstone of ``sender_id``'s message ``message_id``, erase its text,
        attachment and chunks; False if that sender has no such message."""

        def op(c: Connection) -> bool:
            ref = _message_row(c, room_id, sender_id, message_id)
            if ref is None:
                return False
            c.execute("DELETE FROM attachment_chunks WHERE message_ref = ?", (ref,))
            c.execute(
                "UPDATE messages SET body = '', attachments = NULL, deleted = 1 WHERE id = ?",
                (ref,),
            )
            return True

        return await self._run(op, scrub=True)

    async def put_attachment_chunk(
        self, room_id: bytes, sender_id: bytes, file_id: bytes, index: int, data: bytes
    ) -> None:
        """Store chunk ``index`` of the file ``file_id`` that ``sender_id`` announced.

        Raises:
            UnknownRecord: that sender announced no such file, or deleted it.
        """

        def op(c: Connection) -> None:
            ref = _message_row(c, room_id, sender_id, file_id, kind="file", live=True)
            if ref is None:
                raise UnknownRecord("No such file in the store.")
            c.execute(
                "INSERT OR REPLACE INTO attachment_chunks (message_ref, idx, data) VALUES (?, ?, ?)",
                (ref, index, data),
            )

        await self._run(op)

    async def attachment(self, room_id: bytes, ref: bytes) -> bytes:
        """The attachment chunks of the message ``ref``, joined in order (empty if none)."""
        rows = await self._all(
            "SELECT data FROM attachment_chunks WHERE message_ref ="
            " (SELECT id FROM messages WHERE room_id = ? AND ref = ?) ORDER BY idx",
            (room_id, ref),
        )
        return b"".join(bytes(r[0]) for r in rows)

    async def attachment_chunks(self, room_id: bytes, ref: bytes) -> int:
        """How many chunks of the message ``ref``'s attachment are stored."""
        row = await self._one(
            "SELECT count(*) FROM attachment_chunks WHERE message_ref ="
            " (SELECT id FROM messages WHERE room_id = ? AND ref = ?)",
            (room_id, ref),
        )
        return int(row[0])

    # -- changes waiting for their message ------------------------------------------------

    async def hold_change(
        self,
        room_id: bytes,
        sender_id: bytes,
        target: bytes,
        change: bytes,
        *,
        at: float,
        max_count: int,
        max_bytes: int,
    ) -> int:
        """Keep ``change`` (opaque) until ``sender_id``'s message ``target`` arrives.

        The room keeps at most ``max_count`` held changes of at most ``max_bytes`` in
        all; the oldest go first. Returns how many were let go to make room.
        """

        def op(c: Connection) -> int:
            c.execute(
                "INSERT INTO held_changes (room_id, sender_id, target, change, held_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (room_id, sender_id, target, change, at),
            )
            rows = c.execute(
                "SELECT id, length(change) FROM held_changes WHERE room_id = ? ORDER BY id DESC",
                (room_id,),
            ).fetchall()
            kept, total, evict = 0, 0, []
            for row_id, size in rows:
                if kept < max_count and total + int(size) <= max_bytes:
                    kept += 1
                    total += int(size)
                else:
                    evict.append((int(row_id),))
            c.executemany("DELETE FROM held_changes WHERE id = ?", evict)
            return len(evict)

        return await self._run(op, scrub=True)

    async def take_held(self, room_id: bytes, sender_id: bytes, target: bytes) -> list[bytes]:
        """The changes held for ``sender_id``'s message ``target``, oldest first, removed."""

        def op(c: Connection) -> list[bytes]:
            where = "WHERE room_id = ? AND sender_id = ? AND target = ?"
            args = (room_id, sender_id, target)
            rows = c.execute(f"SELECT change FROM held_changes {where} ORDER BY id", args)  # noqa: S608 - a constant
            out = [bytes(r[0]) for r in rows.fetchall()]
            if out:
                c.execute(f"DELETE FROM held_changes {where}", args)  # noqa: S608 - a constant
            return out

        return await self._run(op, scrub=True)

    # -- reactions ---------------------------------------------------------------------------

    async def set_reaction(
        self,
        room_id: bytes,
        target_author: bytes,
        target: bytes,
        sender_id: bytes,
        emoji: str,
        *,
        remove: bool = False,
        at: float | None = None,
    ) -> bool:
        """Record (or withdraw) ``sender_id``'s reaction to ``target_author``'s message
        ``target``; False if that author has no such message, or it was deleted."""
        when = self._clock() if at is None else at

        def op(c: Connection) -> bool:
            row = _message_row(c, room_id, target_author, target, live=True)
            if row is None:
                return False
            if remove:
                c.execute(
                    "DELETE FROM reactions WHERE message_ref = ? AND sender_id = ? AND emoji = ?",
                    (row, sender_id, emoji),
                )
            else:
                c.execute(
                    "INSERT OR IGNORE INTO reactions (message_ref, sender_id, emoji, reacted_at)"
                    " VALUES (?, ?, ?, ?)",
                    (row, sender_id, emoji, when),
                )
            return True

        return await self._run(op)

    async def reactions(
        self, room_id: bytes, refs: Sequence[bytes]
    ) -> dict[bytes, list[tuple[str, bytes]]]:
        """``(emoji, sender)`` pairs per message ref, oldest first, for the given messages."""
        out: dict[bytes, list[tuple[str, bytes]]] = {}
        for start in range(0, len(refs), 500):  # SQLite's parameter limit
            chunk = list(refs[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = await self._all(
                "SELECT m.ref, r.emoji, r.sender_id FROM reactions AS r"  # noqa: S608 - only "?" marks are interpolated
                " JOIN messages AS m ON m.id = r.message_ref"
                f" WHERE m.room_id = ? AND m.ref IN ({marks}) ORDER BY r.reacted_at, r.emoji",
                (room_id, *chunk),
            )
            for ref, emoji, sender in rows:
                out.setdefault(bytes(ref), []).append((str(emoji), bytes(sender)))
        return out

    # -- retention ------------------------------------------------------------------------

    async def erase_older_than(self, room_id: bytes, cutoff: float) -> int:
        """Erase the room's messages older than ``cutoff`` (and their attachments).

        A message counts as older when either clock says so (the sender's
        ``sent_at`` or our ``received_at``): a sender's clock set in the future
        cannot keep a message alive past its time.

        Returns:
            How many messages were erased.
        """
        return await self._run(lambda c: _erase_before(c, room_id, cutoff), scrub=True)

    async def erase_expired(self, now: float) -> int:
        """Apply every room's retention at time ``now``; returns how many messages went."""

        def op(c: Connection) -> int:
            rooms = c.execute(
                "SELECT room_id, retention_seconds FROM rooms WHERE retention_seconds IS NOT NULL"
            ).fetchall()
            return sum(_erase_before(c, r[0], now - r[1]) for r in rooms)

        return await self._run(op, scrub=True)

    # -- members ----------------------------------------------------------------------------

    async def put_member(
        self, room_id: bytes, member_id: bytes, display_name: str, fingerprint: bytes, role: str
    ) -> Member:
        """Insert or update a member; a verification stays recorded against the key it was for.

        Returns:
            The stored member: check ``key_changed`` and warn loudly if it is set.
        """

        def op(c: Connection) -> Member:
            c.execute(
                "INSERT INTO members (room_id, member_id, display_name, fingerprint, role)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, member_id) DO UPDATE SET"
                " display_name = excluded.display_name, fingerprint = excluded.fingerprint,"
                " role = excluded.role",
                (room_id, member_id, display_name, fingerprint, role),
            )
            member = _member(c, room_id, member_id)
            assert member is not None
            return member

        return await self._run(op)

    async def member(self, room_id: bytes, member_id: bytes) -> Member | None:
        """One member, or None."""
        return await self._run(lambda c: _member(c, room_id, member_id))

    async def mark_verified(
        self, room_id: bytes, member_id: bytes, fingerprint: bytes, *, at: float | None = None
    ) -> Member:
        """Record that the user compared ``fingerprint`` with this member out of band.

        Raises:
            UnknownRecord: no such member.
            FingerprintMismatch: ``fingerprint`` is not the member's current key.
        """
        when = self._clock() if at is None else at

        def op(c: Connection) -> Member:
            member = _member(c, room_id, member_id)
            if member is None:
                raise UnknownRecord("No such member in the store.")
            if not hmac.compare_digest(member.fingerprint, fingerprint):
                raise FingerprintMismatch
            c.execute(
                "UPDATE members SET verified_fingerprint = ?, verified_at = ?"
                " WHERE room_id = ? AND member_id = ?",
                (fingerprint, when, room_id, member_id),
            )
            return dataclasses.replace(member, verified_fingerprint=fingerprint, verified_at=when)

        return await self._run(op)

    async def members(self, room_id: bytes) -> list[Member]:
        """The room's members, by display name."""
        rows = await self._all(
            "SELECT * FROM members WHERE room_id = ? ORDER BY display_name, member_id", (room_id,)
        )
        return [from_row(Member, r) for r in rows]

    async def remove_member(self, room_id: bytes, member_id: bytes) -> bool:
        """Forget a member of a room; returns whether it was there."""
        sql = "DELETE FROM members WHERE room_id = ? AND member_id = ?"
        return await self._change(sql, (room_id, member_id)) > 0

    # -- outbox -------------------------------------------------------------------------------

    async def enqueue(self, entry: OutboxEntry) -> bool:
        """Queue a post; False (no change) if the key is already queued or acknowledged."""
        return await self._run(lambda c: _enqueue(c, entry))

    async def pending(
        self, mailbox_id: bytes | None = None, *, limit: int = 100
    ) -> list[OutboxEntry]:
        """Queued posts in the order they were queued, for one mailbox or all."""
        rows = await self._all(
            "SELECT * FROM outbox WHERE ?1 IS NULL OR mailbox_id = ?1 ORDER BY position LIMIT ?2",
            (mailbox_id, limit),
        )
        return [from_row(OutboxEntry, r) for r in rows]

    async def outbox_heads(self, *, per_mailbox: int, mailboxes: int) -> list[OutboxEntry]:
        """The first ``per_mailbox`` queued posts of each of up to ``mailboxes`` mailboxes.

        What a sender reads: the posts behind one mailbox's head never crowd out another
        mailbox's, however many are queued. Rooms' mailboxes come first, then the others
        (invite drops, joiners' inboxes), each group by its oldest post; within a
        mailbox, in the order queued.
        """
        rows = await self._all(
            "WITH heads AS (SELECT mailbox_id, min(room_id IS NULL) AS other,"
            " min(position) AS first FROM outbox GROUP BY mailbox_id"
            " ORDER BY other, first LIMIT ?1),"
            " ranked AS (SELECT outbox.*, heads.other, heads.first, row_number() OVER"
            " (PARTITION BY outbox.mailbox_id ORDER BY outbox.position) AS n"
            " FROM outbox JOIN heads USING (mailbox_id))"
            " SELECT * FROM ranked WHERE n <= ?2 ORDER BY other, first, position",
            (mailboxes, per_mailbox),
        )
        return [from_row(OutboxEntry, r) for r in rows]

    async def drop_outbox(
        self, idempotency_key: bytes, *, refused_at: float | None = None
    ) -> OutboxEntry | None:
        """Take a post out of the outbox unsent (the relay refused it for good).

        Its message, if it carries one, is marked refused at ``refused_at`` (the clock
        by default): not delivered, and no longer queued.

        Returns:
            The dropped entry, or None if it was not queued.
        """
        when = self._clock() if refused_at is None else refused_at

        def op(c: Connection) -> OutboxEntry | None:
            row = c.execute(
                "SELECT * FROM outbox WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
            if row is None:
                return None
            entry = from_row(OutboxEntry, row)
            c.execute("DELETE FROM outbox WHERE idempotency_key = ?", (idempotency_key,))
            if entry.ref is not None and entry.room_id is not None:
                c.execute(
                    "UPDATE messages SET refused_at = ?"
                    " WHERE room_id = ? AND ref = ? AND delivered_seq IS NULL",
                    (when, entry.room_id, entry.ref),
                )
            return entry

        return await self._run(op, scrub=True)

    async def record_attempt(self, idempotency_key: bytes, *, at: float | None = None) -> None:
        """Count a send attempt of a queued post (no-op if it is gone)."""
        when = self._clock() if at is None else at
        await self._change(
            "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ?"
            " WHERE idempotency_key = ?",
            (when, idempotency_key),
        )

    async def acknowledge(
        self, idempotency_key: bytes, seq: int, *, at: float | None = None
    ) -> bool:
        """Record the relay's acknowledgement of a post: dequeue it, mark its message delivered.

        Idempotent: a second acknowledgement of the same key changes nothing.

        Returns:
            True if this call moved the entry out of the outbox.
        """
        when = self._clock() if at is None else at

        def op(c: Connection) -> bool:
            row = c.execute(
                "SELECT mailbox_id, room_id, ref FROM outbox WHERE idempotency_key = ?",
                (idempotency_key,),
            ).fetchone()
            if row is None:
                return False
            mailbox_id, room_id, ref = row
            c.execute("DELETE FROM outbox WHERE idempotency_key = ?", (idempotency_key,))
            c.execute(
                "INSERT OR IGNORE INTO acknowledged (idempotency_key, mailbox_id, seq, acked_at)"
                " VALUES (?, ?, ?, ?)",
                (idempotency_key, mailbox_id, seq, when),
            )
            if ref is not None and room_id is not None:
                c.execute(
                    "UPDATE messages SET delivered_seq = ? WHERE room_id = ? AND ref = ?",
                    (seq, room_id, ref),
                )
            return True

        return await self._run(op, scrub=True)

    async def retarget_outbox(self, room_id: bytes, mailbox_id: bytes) -> int:
        """Point a room's queued posts at ``mailbox_id`` (the room moved), with fresh keys.

        Fresh idempotency keys, because the relay never stored the old ones in the
        new mailbox. Returns how many posts moved.
        """
        return await self._change(
            "UPDATE outbox SET mailbox_id = ?1, idempotency_key = randomblob(16)"
            " WHERE room_id = ?2 AND mailbox_id != ?1",
            (mailbox_id, room_id),
        )

    async def acknowledged_seq(self, idempotency_key: bytes) -> int | None:
        """The relay sequence number a key was acknowledged with, or None."""
        sql = "SELECT seq FROM acknowledged WHERE idempotency_key = ?"
        row = await self._one(sql, (idempotency_key,))
        return None if row is None else int(row[0])

    async def prune_acknowledged(self, before: float) -> int:
        """Forget acknowledged keys older than ``before`` (once no retry can carry them)."""
        return await self._change("DELETE FROM acknowledged WHERE acked_at < ?", (before,))


def _message_row(
    c: Connection,
    room_id: bytes,
    sender_id: bytes,
    message_id: bytes,
    *,
    kind: str | None = None,
    live: bool = False,
) -> int | None:
    """The row id of ``sender_id``'s message ``message_id`` (of ``kind``; not deleted if
    ``live``), or None. The author is part of the key: ids are chosen by senders."""
    sql = (
        "SELECT id, kind, deleted FROM messages"
        " WHERE room_id = ? AND sender_id = ? AND message_id = ?"
    )
    row = c.execute(sql, (room_id, sender_id, message_id)).fetchone()
    if row is None or (kind is not None and row[1] != kind) or (live and row[2]):
        return None
    return int(row[0])


def _member(c: Connection, room_id: bytes, member_id: bytes) -> Member | None:
    row = c.execute(
        "SELECT * FROM members WHERE room_id = ? AND member_id = ?", (room_id, member_id)
    ).fetchone()
    return None if row is None else from_row(Member, row)


def _erase_before(c: Connection, room_id: bytes, cutoff: float) -> int:
    c.execute("DELETE FROM held_changes WHERE room_id = ? AND held_at < ?", (room_id, cutoff))
    return c.execute(
        "DELETE FROM messages WHERE room_id = ? AND (sent_at < ? OR received_at < ?)",
        (room_id, cutoff, cutoff),
    ).rowcount


def _insert_message(c: Connection, m: Message) -> bool:
    # A second message with a (sender, id) already stored is a replay and changes nothing;
    # the same id from another sender is another message.
    cur = c.execute(
        "INSERT INTO messages (room_id, ref, message_id, sender_id, sender_name, sent_at,"
        " received_at, kind, body, reply_to, reply_author, attachments, outgoing, edited_at,"
        " deleted, delivered_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (m.room_id, m.ref, m.message_id, m.sender_id, m.sender_name, m.sent_at, m.received_at,
         m.kind, m.body, m.reply_to, m.reply_author, m.attachments, int(m.outgoing),
         m.edited_at, int(m.deleted), m.delivered_seq),
    )  # fmt: skip
    return cur.rowcount > 0


def _enqueue(c: Connection, e: OutboxEntry) -> bool:
    key = e.idempotency_key
    if c.execute("SELECT 1 FROM acknowledged WHERE idempotency_key = ?", (key,)).fetchone():
        return False
    cur = c.execute(
        "INSERT INTO outbox (idempotency_key, room_id, mailbox_id, payload, ref,"
        " created_at, attempts, last_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (idempotency_key) DO NOTHING",
        (key, e.room_id, e.mailbox_id, e.payload, e.ref, e.created_at, e.attempts,
         e.last_attempt_at),
    )  # fmt: skip
    return cur.rowcount > 0


class StoreTransaction(_Repository):
    """The record operations inside one ``Store.transaction()``; all commit or none do."""

    __slots__ = ("_clock", "_tx")

    def __init__(self, tx: Transaction, clock: Clock) -> None:
        self._tx = tx
        self._clock = clock

    async def _run(self, fn: Callable[[Connection], T], *, scrub: bool = False) -> T:
        return await self._tx.run(fn, scrub=scrub)


class Store(_Repository):
    """A profile's encrypted store. Build with ``Store.create()`` or ``Store.open()``.

    Every method is a coroutine; blocking work happens on the store's own thread.
    """

    def __init__(self, database: Database, *, clock: Clock = time.time) -> None:
        self.database = database
        self._clock = clock

    @staticmethod
    def exists(directory: Path) -> bool:
        """Whether ``directory`` holds a profile's store."""
        return ProfilePaths(directory).db.exists()

    def __repr__(self) -> str:
        return f"Store({self.database!r})"

    @classmethod
    async def create(
        cls,
        directory: Path,
        passphrase: str | bytes,
        *,
        kdf: KdfParams = RFC9106_SECOND,
        clock: Clock = time.time,
    ) -> Store:
        """Create a profile store in ``directory`` (see ``Database.create``)."""
        return cls(await Database.create(directory, passphrase, kdf=kdf), clock=clock)

    @classmethod
    async def open(
        cls, directory: Path, passphrase: str | bytes, *, clock: Clock = time.time
    ) -> Store:
        """Unlock a profile store (see ``Database.open`` for the errors)."""
        return cls(await Database.open(directory, passphrase), clock=clock)

    async def close(self) -> None:
        """Close the store and release the profile. Idempotent."""
        await self.database.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def change_passphrase(
        self, old: str | bytes, new: str | bytes, *, kdf: KdfParams | None = None
    ) -> None:
        """Re-key the database under ``new`` (see ``Database.change_passphrase``)."""
        await self.database.change_passphrase(old, new, kdf=kdf)

    async def check_passphrase(self, passphrase: str | bytes) -> bool:
        """Whether ``passphrase`` opens this profile (the store stays open either way)."""
        return await self.database.check_passphrase(passphrase)

    async def checkpoint(self) -> None:
        """Fold the WAL into the database file and truncate it."""
        await self.database.checkpoint()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTransaction]:
        """Group several operations atomically: ``async with store.transaction() as tx:``."""
        async with self.database.transaction() as tx:
            yield StoreTransaction(tx, self._clock)

    async def _run(self, fn: Callable[[Connection], T], *, scrub: bool = False) -> T:
        return await self.database.run(fn, scrub=scrub)
