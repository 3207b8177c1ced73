"""Copy a SQLite relay store into PostgreSQL, so a relay can grow to several nodes."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from .base import StoreLimits
from .postgres import PostgresStore
from .sqlite import apply_migrations

__all__ = ["copy_sqlite_to_postgres"]

_SELECT_MAILBOXES = "SELECT id, read_key, write_key, admin_key, ttl, epoch, head, entries, bytes, expires_at FROM mailboxes"
_SELECT_ENTRIES = "SELECT mailbox, seq, blob, idem, expires_at FROM entries"


_Generation = tuple[bytes, int, bool]


def _read_sqlite(
    path: Path,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], _Generation | None]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            raise ConfigError(f"{path} is not a Backchannel relay store.")
        conn.execute("BEGIN")  # one consistent snapshot of every table
        mailboxes = conn.execute(_SELECT_MAILBOXES).fetchall()
        entries = conn.execute(_SELECT_ENTRIES).fetchall()
        row = conn.execute("SELECT id, floor, restored FROM generation").fetchone()
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.__class__.__name__}.") from None
    finally:
        conn.close()
    # The clients of a moved store keep seeing its generation (docs/relay-protocol.md §6).
    generation = None if row is None else (bytes(row[0]), int(row[1]), bool(row[2]))
    return mailboxes, entries, generation


async def copy_sqlite_to_postgres(source: str, target: str) -> tuple[int, int]:
    """Copy every mailbox and entry from ``source`` (sqlite:) into ``target`` (postgresql:).

    Returns:
        How many mailboxes and entries were copied.

    Raises:
        ConfigError: bad URLs, or the source is not a relay store.
        MailboxExists: the target already holds one of the mailboxes; nothing was written.
        StoreUnavailable: PostgreSQL cannot be reached.
    """
    from . import sqlite_path_from_url

    if urlsplit(target).scheme not in {"postgres", "postgresql"}:
        raise ConfigError("--to must be a postgresql:// URL.")
    path = sqlite_path_from_url(source)
    if not path.is_file():
        raise ConfigError(f"There is no SQLite store at {path}.")
    lock = _lock_store(path)
    try:
        return await _copy(path, target)
    finally:
        os.close(lock)


def _lock_store(path: Path) -> int:
    """Hold the store's lock file, as a running relay does: copying a live store is refused."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # not POSIX
        pass
    except OSError:
        os.close(fd)
        raise ConfigError(
            f"A relay is still using {path}; stop it before copying the store."
        ) from None
    return fd


async def _copy(path: Path, target: str) -> tuple[int, int]:
    # Bring an old store up to the current schema first, so the columns match.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        apply_migrations(conn)
    finally:
        conn.close()
    mailboxes, entries, generation = await asyncio.to_thread(_read_sqlite, path)
    store = PostgresStore(target, StoreLimits())
    await store.open()
    try:
        await store.import_rows(mailboxes, entries, generation)
    finally:
        await store.close()
    return len(mailboxes), len(entries)
