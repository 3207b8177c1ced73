"""The SQLite store's transaction machinery: connections, migrations, the mailbox row
cache and the view a write job gets of its transaction (see ``sqlite.py``)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CapabilityDenied
from .base import Appended, StoreLimits, migration_scripts, new_generation_id, restore_floor

__all__ = [
    "Job",
    "MailboxRow",
    "Totals",
    "Transaction",
    "apply_migrations",
    "connect",
    "mark_restored",
    "open_generation",
]

log = logging.getLogger(__name__)

_ROW_CACHE_MAX = 50_000


def apply_migrations(conn: sqlite3.Connection) -> int:
    """Apply the numbered migrations newer than ``PRAGMA user_version``; returns the version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in migration_scripts("sqlite"):
        if number > current:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
            current = number
    return int(current)


def open_generation(conn: sqlite3.Connection, now: float) -> bytes:
    """The store's generation id, written on first use; a new generation if the store
    is marked restored (every head and epoch raised to the new floor, in one transaction).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT id, floor, restored FROM generation").fetchone()
        if row is None:
            generation = new_generation_id()
            conn.execute("INSERT INTO generation (one, id) VALUES (1, ?)", (generation,))
        elif row[2]:
            head, epoch = conn.execute(
                "SELECT coalesce(max(head), 0), coalesce(max(epoch), 0) FROM mailboxes"
            ).fetchone()
            floor = restore_floor(now, head, epoch, row[1])
            conn.execute(
                "UPDATE mailboxes SET head = max(head, ?), epoch = max(epoch, ?)", (floor, floor)
            )
            generation = new_generation_id()
            conn.execute(
                "UPDATE generation SET id = ?, floor = ?, restored = 0", (generation, floor)
            )
            log.warning(
                "this store is a restored copy: a new generation starts; sequence numbers "
                "and epochs continue above the restore floor"
            )
        else:
            generation = bytes(row[0])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return generation


def mark_restored(conn: sqlite3.Connection) -> None:
    """Flag the store as a restored copy: its next open starts a new generation."""
    apply_migrations(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT INTO generation (one, id, restored) VALUES (1, ?, 1) "
            "ON CONFLICT (one) DO UPDATE SET restored = 1",
            (new_generation_id(),),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL in WAL mode syncs the WAL on every commit: an ack means durable.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA fullfsync = ON")
        # Deleted ciphertext and keys are overwritten, not left in free pages.
        conn.execute("PRAGMA secure_delete = ON")
    return conn


@dataclass(slots=True)
class Totals:
    mailboxes: int = 0
    entries: int = 0
    bytes: int = 0


@dataclass(slots=True)
class MailboxRow:
    """A mailbox row as loaded inside a write transaction and updated in memory."""

    id: bytes
    ttl: int
    epoch: int
    head: int
    entries: int
    bytes: int
    expires_at: int
    dirty: bool = False


@dataclass(slots=True)
class Transaction:
    """What a transaction function sees: the connection, time, limits and running totals.

    ``cache`` holds mailbox rows across transactions: the store's writer is the only
    writer, so a cached row is the truth once its transaction commits. Rows changed by
    appends are written back once per transaction (:meth:`flush`), not once per entry.
    """

    conn: sqlite3.Connection
    limits: StoreLimits
    totals: Totals
    disk_low: bool
    cache: dict[bytes, MailboxRow]
    delta: Totals = field(default_factory=Totals)
    appended: list[Appended] = field(default_factory=list)
    dirty: dict[bytes, MailboxRow] = field(default_factory=dict)

    def load(self, mailbox: bytes, now: float) -> MailboxRow:
        row = self.cache.get(mailbox)
        if row is None:
            found = self.conn.execute(
                "SELECT ttl, epoch, head, entries, bytes, expires_at FROM mailboxes WHERE id = ?",
                (mailbox,),
            ).fetchone()
            if found is None:
                raise CapabilityDenied()
            if len(self.cache) >= _ROW_CACHE_MAX:
                self.flush()
                self.cache.clear()
            row = self.cache[mailbox] = MailboxRow(mailbox, *found)
        if row.expires_at <= now:
            raise CapabilityDenied()
        return row

    def save(self, row: MailboxRow) -> None:
        self.dirty[row.id] = row

    def flush(self) -> None:
        """Write changed rows, so plain SQL in this transaction sees them."""
        if self.dirty:
            self.conn.executemany(
                "UPDATE mailboxes SET epoch = ?, head = ?, entries = ?, bytes = ?, expires_at = ? "
                "WHERE id = ?",
                [
                    (r.epoch, r.head, r.entries, r.bytes, r.expires_at, r.id)
                    for r in self.dirty.values()
                ],
            )
            self.dirty.clear()

    def forget(self, mailbox: bytes) -> None:
        """A job changed this mailbox's row with plain SQL: reload it next time."""
        self.cache.pop(mailbox, None)


@dataclass(slots=True)
class Job:
    fn: Callable[[Transaction], Any]
    future: asyncio.Future[Any]
    #: False for jobs that check everything before their first write (appends): they
    #: need no savepoint, which saves two statements per append.
    savepoint: bool = True
