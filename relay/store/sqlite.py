"""The default single-node store: SQLite in WAL mode with full sync and group commit.

Theory of operation: one writer thread owns the only write connection. Writes are
queued to it as small transaction functions; it takes everything queued (up to
``group_commit_max``), runs each function inside its own SAVEPOINT within one
``BEGIN IMMEDIATE`` transaction, and commits once, so many concurrent appends share
one fsync. A function that raises a relay error is rolled back to its savepoint and
fails alone. Only after COMMIT returns (the WAL is synced, ``synchronous=FULL``) are
the callers' futures resolved and the listeners told about the new entries, so an
acknowledged append survives ``kill -9``. Reads run on a small pool of read-only
connections, which WAL lets proceed alongside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from ..errors import (
    CapabilityDenied,
    InternalError,
    MailboxExists,
    MailboxFull,
    RelayError,
    StaleEpoch,
    StoreFull,
    StoreUnavailable,
)
from .base import (
    Appended,
    MailboxKeys,
    MailboxStore,
    NewEntry,
    Page,
    StoreLimits,
    StoreStats,
    SweepResult,
    round_up,
)

__all__ = ["SQLiteStore", "apply_migrations"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_SWEEP_CHUNK = 2000


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("relay.store").joinpath("migrations", "sqlite")
    found = []
    for item in folder.iterdir():
        if item.name.endswith(".sql"):
            found.append((int(item.name.split("_", 1)[0]), item.read_text(encoding="utf-8")))
    return sorted(found)


def apply_migrations(conn: sqlite3.Connection) -> int:
    """Apply the numbered migrations newer than ``PRAGMA user_version``; returns the version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in _migrations():
        if number > current:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
            current = number
    return int(current)


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
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
class _Totals:
    mailboxes: int = 0
    entries: int = 0
    bytes: int = 0


@dataclass(slots=True)
class _Row:
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
class _Tx:
    """What a transaction function sees: the connection, time, limits and running totals."""

    conn: sqlite3.Connection
    limits: StoreLimits
    totals: _Totals
    disk_low: bool
    delta: _Totals = field(default_factory=_Totals)
    appended: list[Appended] = field(default_factory=list)

    def load(self, mailbox: bytes, now: float) -> _Row:
        row = self.conn.execute(
            "SELECT ttl, epoch, head, entries, bytes, expires_at FROM mailboxes "
            "WHERE id = ? AND expires_at > ?",
            (mailbox, now),
        ).fetchone()
        if row is None:
            raise CapabilityDenied()
        return _Row(mailbox, *row)

    def save(self, row: _Row) -> None:
        self.conn.execute(
            "UPDATE mailboxes SET epoch = ?, head = ?, entries = ?, bytes = ?, expires_at = ? "
            "WHERE id = ?",
            (row.epoch, row.head, row.entries, row.bytes, row.expires_at, row.id),
        )


@dataclass(slots=True)
class _Job:
    fn: Callable[[_Tx], Any]
    future: asyncio.Future[Any]


class SQLiteStore(MailboxStore):
    """Mailboxes in one SQLite file. Open with :meth:`open`, release with :meth:`close`."""

    def __init__(self, path: Path, limits: StoreLimits | None = None, *, readers: int = 2) -> None:
        super().__init__()
        self.path = Path(path)
        self.limits = limits or StoreLimits()
        self._readers = readers
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._totals = _Totals()
        self._writer: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = True
        self._write_conn: sqlite3.Connection

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._prepare)
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="relay-sqlite-read")
        self._writer = threading.Thread(
            target=self._writer_main, name="relay-sqlite-write", daemon=True
        )
        self._closed = False
        self._writer.start()

    def _prepare(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = _connect(self.path)
        try:
            apply_migrations(conn)
            mailboxes, entries, size = conn.execute(
                "SELECT count(*), coalesce(sum(entries), 0), coalesce(sum(bytes), 0) FROM mailboxes"
            ).fetchone()
            self._totals = _Totals(mailboxes, entries, size)
        except BaseException:
            conn.close()
            raise
        # Opened here, used only by the writer thread: a bad path fails open(), not the thread.
        self._write_conn = conn
        # The store holds only ciphertext, but its existence and sizes are still nobody's business.
        for suffix in ("", "-wal", "-shm"):
            candidate = Path(f"{self.path}{suffix}")
            if candidate.exists():
                candidate.chmod(0o600)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.join)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def ping(self) -> None:
        if self._writer is None or not self._writer.is_alive():
            raise StoreUnavailable()
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    # -- plumbing ---------------------------------------------------------------------------

    async def _write(self, fn: Callable[[_Tx], T]) -> T:
        if self._closed or self._loop is None:
            raise StoreUnavailable()
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Job(fn, future))
        return await future

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed or self._pool is None:
            raise StoreUnavailable()

        def run() -> T:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = _connect(self.path, readonly=True)
            try:
                return fn(conn)
            except RelayError:
                raise
            except sqlite3.Error as exc:
                log.error("store read failed: %s", exc.__class__.__name__)
                raise StoreUnavailable() from None

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def _writer_main(self) -> None:
        conn = self._write_conn
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < self.limits.group_commit_max:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                        break
                    batch.append(job)
                self._run_batch(conn, batch)
        finally:
            conn.close()
            # Fail anything queued after the stop sentinel instead of leaving it hanging.
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    self._resolve([(job, None, StoreUnavailable())], [])

    def _disk_low(self) -> bool:
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < self.limits.min_free_disk_bytes

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        tx = _Tx(conn, self.limits, self._totals, self._disk_low())
        results: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                before = (tx.delta.mailboxes, tx.delta.entries, tx.delta.bytes, len(tx.appended))
                conn.execute("SAVEPOINT job")
                try:
                    value = job.fn(tx)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    tx.delta = _Totals(*before[:3])
                    del tx.appended[before[3] :]
                    results.append((job, None, self._map_error(exc)))
                else:
                    conn.execute("RELEASE job")
                    results.append((job, value, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("store commit failed: %s", exc.__class__.__name__)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = self._map_error(exc)
            self._resolve([(job, None, error) for job in batch], [])
            return
        self._totals.mailboxes += tx.delta.mailboxes
        self._totals.entries += tx.delta.entries
        self._totals.bytes += tx.delta.bytes
        self._resolve(results, tx.appended)

    @staticmethod
    def _map_error(exc: BaseException) -> BaseException:
        if isinstance(exc, RelayError):
            return exc
        if isinstance(exc, sqlite3.Error):
            if "full" in str(exc).lower():
                return StoreFull()
            log.error("store write failed: %s", exc.__class__.__name__)
            return StoreUnavailable()
        log.exception("store bug", exc_info=exc)
        return InternalError()

    def _resolve(
        self, results: list[tuple[_Job, Any, BaseException | None]], appended: list[Appended]
    ) -> None:
        assert self._loop is not None

        def complete() -> None:
            # Listeners first: by the time a writer sees its ack, every subscriber's push
            # is already queued.
            if appended:
                self._notify(appended)
            for job, value, error in results:
                if job.future.done():
                    continue
                if error is not None:
                    job.future.set_exception(error)
                else:
                    job.future.set_result(value)

        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(complete)

    # -- operations ---------------------------------------------------------------------------

    async def create_mailbox(self, mailbox: bytes, keys: MailboxKeys, ttl: int, now: float) -> None:
        granularity = self.limits.expiry_granularity

        def tx_fn(tx: _Tx) -> None:
            if tx.disk_low or tx.totals.bytes + tx.delta.bytes >= tx.limits.store_max_bytes:
                raise StoreFull()
            old = tx.conn.execute(
                "SELECT expires_at FROM mailboxes WHERE id = ?", (mailbox,)
            ).fetchone()
            if old is not None:
                if old[0] > now:
                    raise MailboxExists()
                self._drop_mailbox(tx, mailbox)
            tx.conn.execute(
                "INSERT INTO mailboxes (id, read_key, write_key, admin_key, ttl, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    mailbox,
                    keys.read_key,
                    keys.write_key,
                    keys.admin_key,
                    ttl,
                    round_up(now + ttl, granularity),
                ),
            )
            tx.delta.mailboxes += 1

        await self._write(tx_fn)

    @staticmethod
    def _drop_mailbox(tx: _Tx, mailbox: bytes) -> None:
        count, size = tx.conn.execute(
            "SELECT entries, bytes FROM mailboxes WHERE id = ?", (mailbox,)
        ).fetchone()
        tx.conn.execute("DELETE FROM entries WHERE mailbox = ?", (mailbox,))
        tx.conn.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox,))
        tx.delta.mailboxes -= 1
        tx.delta.entries -= count
        tx.delta.bytes -= size

    async def get_keys(self, mailbox: bytes, now: float) -> MailboxKeys | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT read_key, write_key, admin_key FROM mailboxes WHERE id = ? AND expires_at > ?",
                (mailbox, now),
            ).fetchone()
        )
        return None if row is None else MailboxKeys(*row)

    async def touch(self, mailbox: bytes, now: float) -> None:
        granularity = self.limits.expiry_granularity

        def tx_fn(tx: _Tx) -> None:
            row = tx.load(mailbox, now)
            new = round_up(now + row.ttl, granularity)
            if new > row.expires_at:
                tx.conn.execute("UPDATE mailboxes SET expires_at = ? WHERE id = ?", (new, mailbox))

        await self._write(tx_fn)

    async def append(
        self, entries: Sequence[NewEntry], epoch: int | None, now: float
    ) -> list[Appended]:
        if not entries:
            raise ValueError("append needs at least one entry")
        return await self._write(lambda tx: self._append_tx(tx, entries, epoch, now))

    def _append_tx(
        self, tx: _Tx, entries: Sequence[NewEntry], epoch: int | None, now: float
    ) -> list[Appended]:
        conn, lim = tx.conn, tx.limits
        main = entries[0]
        rows: dict[bytes, _Row] = {main.mailbox: tx.load(main.mailbox, now)}
        main_row = rows[main.mailbox]

        def existing(entry: NewEntry) -> int | None:
            if entry.key is None:
                return None
            hit = conn.execute(
                "SELECT seq FROM entries WHERE mailbox = ? AND idem = ?", (entry.mailbox, entry.key)
            ).fetchone()
            return None if hit is None else int(hit[0])

        first = existing(main)
        if first is not None:
            # A retry of an append that already happened: report it, write nothing.
            out = [Appended(main.mailbox, first, True, main_row.epoch)]
            for extra in entries[1:]:
                out.append(Appended(extra.mailbox, existing(extra) or 0, True))
            return out
        if epoch is not None:
            if main_row.epoch != epoch:
                raise StaleEpoch(main_row.epoch)
            main_row.epoch += 1
            main_row.dirty = True

        out = []
        for entry in entries:
            row = rows.get(entry.mailbox)
            if row is None:
                row = rows[entry.mailbox] = tx.load(entry.mailbox, now)
            if entry is not main and (seq := existing(entry)) is not None:
                out.append(Appended(entry.mailbox, seq, True, row.epoch))
                continue
            size = len(entry.blob)
            if (
                row.entries + 1 > lim.mailbox_max_entries
                or row.bytes + size > lim.mailbox_max_bytes
            ):
                raise MailboxFull()
            if tx.disk_low or tx.totals.bytes + tx.delta.bytes + size > lim.store_max_bytes:
                raise StoreFull()
            ttl = min(entry.ttl or row.ttl, row.ttl)
            row.head += 1
            conn.execute(
                "INSERT INTO entries (mailbox, seq, blob, idem, expires_at) VALUES (?, ?, ?, ?, ?)",
                (
                    entry.mailbox,
                    row.head,
                    entry.blob,
                    entry.key,
                    round_up(now + ttl, lim.expiry_granularity),
                ),
            )
            row.entries += 1
            row.bytes += size
            row.expires_at = max(row.expires_at, round_up(now + row.ttl, lim.expiry_granularity))
            row.dirty = True
            tx.delta.entries += 1
            tx.delta.bytes += size
            out.append(Appended(entry.mailbox, row.head, False, row.epoch, entry.blob))
        for row in rows.values():
            if row.dirty:
                tx.save(row)
        tx.appended.extend(a for a in out if not a.duplicate)
        return out

    async def fetch(
        self, mailbox: bytes, after: int, limit: int, max_bytes: int, now: float
    ) -> Page:
        def run(conn: sqlite3.Connection) -> Page:
            conn.execute("BEGIN")  # one snapshot for the head and the entries
            try:
                row = conn.execute(
                    "SELECT head FROM mailboxes WHERE id = ? AND expires_at > ?", (mailbox, now)
                ).fetchone()
                if row is None:
                    raise CapabilityDenied()
                cursor = conn.execute(
                    "SELECT seq, blob FROM entries WHERE mailbox = ? AND seq > ? AND expires_at > ? "
                    "ORDER BY seq LIMIT ?",
                    (mailbox, after, now, limit + 1),
                )
                taken: list[tuple[int, bytes]] = []
                size, more = 0, False
                for seq, blob in cursor:
                    if len(taken) >= limit or (taken and size + len(blob) > max_bytes):
                        more = True
                        break
                    taken.append((seq, blob))
                    size += len(blob)
                return Page(taken, int(row[0]), more)
            finally:
                conn.execute("COMMIT")

        return await self._read(run)

    async def trim(self, mailbox: bytes, through: int) -> int:
        def tx_fn(tx: _Tx) -> int:
            count, size = tx.conn.execute(
                "SELECT count(*), coalesce(sum(length(blob)), 0) FROM entries WHERE mailbox = ? AND seq <= ?",
                (mailbox, through),
            ).fetchone()
            if count:
                tx.conn.execute(
                    "DELETE FROM entries WHERE mailbox = ? AND seq <= ?", (mailbox, through)
                )
                tx.conn.execute(
                    "UPDATE mailboxes SET entries = entries - ?, bytes = bytes - ? WHERE id = ?",
                    (count, size, mailbox),
                )
                tx.delta.entries -= count
                tx.delta.bytes -= size
            return int(count)

        return await self._write(tx_fn)

    async def rotate(self, mailbox: bytes, keys: MailboxKeys) -> None:
        def tx_fn(tx: _Tx) -> None:
            cur = tx.conn.execute(
                "UPDATE mailboxes SET read_key = ?, write_key = ?, admin_key = ? WHERE id = ?",
                (keys.read_key, keys.write_key, keys.admin_key, mailbox),
            )
            if cur.rowcount != 1:
                raise CapabilityDenied()

        await self._write(tx_fn)

    async def sweep(self, now: float) -> SweepResult:
        def tx_fn(tx: _Tx) -> tuple[int, bool]:
            rows = tx.conn.execute(
                "SELECT mailbox, seq, length(blob) FROM entries WHERE expires_at <= ? LIMIT ?",
                (now, _SWEEP_CHUNK),
            ).fetchall()
            per_mailbox: dict[bytes, list[int]] = {}
            for mailbox, seq, size in rows:
                tx.conn.execute("DELETE FROM entries WHERE mailbox = ? AND seq = ?", (mailbox, seq))
                counts = per_mailbox.setdefault(mailbox, [0, 0])
                counts[0] += 1
                counts[1] += size
            for mailbox, (count, size) in per_mailbox.items():
                tx.conn.execute(
                    "UPDATE mailboxes SET entries = entries - ?, bytes = bytes - ? WHERE id = ?",
                    (count, size, mailbox),
                )
                tx.delta.entries -= count
                tx.delta.bytes -= size
            return len(rows), len(rows) == _SWEEP_CHUNK

        def drop_mailboxes(tx: _Tx) -> int:
            gone = tx.conn.execute(
                "SELECT id FROM mailboxes WHERE expires_at <= ? LIMIT ?", (now, _SWEEP_CHUNK)
            ).fetchall()
            for (mailbox,) in gone:
                self._drop_mailbox(tx, mailbox)
            return len(gone)

        # Chunks keep each transaction short so appends are never stalled behind a sweep.
        entries = 0
        while True:
            count, again = await self._write(tx_fn)
            entries += count
            if not again:
                break
        mailboxes = 0
        while (count := await self._write(drop_mailboxes)) > 0:
            mailboxes += count
            if count < _SWEEP_CHUNK:
                break
        return SweepResult(entries, mailboxes)

    async def stats(self) -> StoreStats:
        t = self._totals
        return StoreStats(t.mailboxes, t.entries, t.bytes)
