"""The default single-node store: SQLite in WAL mode with full sync and group commit.

Theory of operation: writes are small transaction functions queued on the event
loop. While no commit is in flight, the store takes everything queued (up to
``group_commit_max``) and runs the functions right there on the loop thread, inside
one ``BEGIN IMMEDIATE`` transaction: each statement takes microseconds, and running
them on the loop avoids handing the GIL to and from a writer thread at every
statement, which under load cost far more than the statements themselves. Then the
one slow step, ``COMMIT`` with its fsync (``synchronous=FULL`` in WAL mode), runs on
a thread while the loop goes on and new writes queue up for the next batch: that is
the group commit, many appends sharing one fsync. Only after COMMIT returns are the
callers' futures resolved and the listeners told about the new entries, so an
acknowledged append survives ``kill -9``.

A function that raises a relay error fails alone: appends check everything before
they write (no savepoint needed), other jobs run inside a SAVEPOINT. Reads run on a
small pool of read-only connections, which WAL lets proceed alongside the writer. A
lock file keeps a second relay process off the same store.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import (
    CapabilityDenied,
    ConfigError,
    FieldInvalid,
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
from .sqlite_tx import (
    Job,
    MailboxRow,
    Totals,
    Transaction,
    apply_migrations,
    connect,
    mark_restored,
    open_generation,
)

__all__ = ["SQLiteStore", "apply_migrations", "backup_store", "mark_store_restored"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_SWEEP_CHUNK = 500  # rows per sweep transaction: keeps each one short on the loop


def backup_store(source: Path, destination: Path) -> None:
    """Copy the store at ``source`` to the new file ``destination``, marked as restored.

    Uses SQLite's online backup (a consistent snapshot while the relay keeps writing).
    The copy is flagged restored, so a relay that opens it in place of the store starts
    a new generation (see :mod:`.base`). The copy gets mode 0600.

    Raises:
        FileExistsError: ``destination`` exists.
    """
    os.close(os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(destination, isolation_level=None)
        try:
            src.backup(dst)
            mark_restored(dst)
        finally:
            dst.close()
    finally:
        src.close()


def mark_store_restored(path: Path) -> None:
    """Flag the (stopped) store at ``path`` as a restored copy.

    Raises:
        ConfigError: no store there, or a relay is using it.
    """
    if not path.is_file():
        raise ConfigError(f"There is no SQLite store at {path}.")
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX
            pass
        except OSError:
            raise ConfigError(
                f"A relay is still using {path}; stop it before marking the store."
            ) from None
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                raise ConfigError(f"{path} is not a Backchannel relay store.")
            mark_restored(conn)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"Cannot mark {path}: {exc.__class__.__name__}.") from None
        finally:
            conn.close()
    finally:
        os.close(fd)


class SQLiteStore(MailboxStore):
    """Mailboxes in one SQLite file. Open with :meth:`open`, release with :meth:`close`."""

    def __init__(self, path: Path, limits: StoreLimits | None = None, *, readers: int = 2) -> None:
        super().__init__()
        self.path = Path(path)
        self.limits = limits or StoreLimits()
        self._readers = readers
        self._pending: collections.deque[Job] = collections.deque()
        self._committing = False  # a batch is between BEGIN and the end of its COMMIT
        self._idle = asyncio.Event()
        self._totals = Totals()
        self._rows: dict[bytes, MailboxRow] = {}  # the writer's row cache (see Transaction)
        self._commit_pool: ThreadPoolExecutor | None = None
        self._lock_file: int | None = None
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
        self._commit_pool = ThreadPoolExecutor(1, thread_name_prefix="relay-sqlite-commit")
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    def _lock(self) -> None:
        """Take the store's lock file, so two relay processes never share one store."""
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no advisory locks, nothing to guard with
            pass
        except OSError:
            os.close(fd)
            raise ConfigError(
                f"Another relay is already using the store at {self.path}; stop it first."
            ) from None
        self._lock_file = fd

    def _prepare(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock()
        conn = connect(self.path)
        try:
            apply_migrations(conn)
            self.generation = open_generation(conn, time.time())
            mailboxes, entries, size = conn.execute(
                "SELECT count(*), coalesce(sum(entries), 0), coalesce(sum(bytes), 0) FROM mailboxes"
            ).fetchone()
            self._totals = Totals(mailboxes, entries, size)
        except BaseException:
            conn.close()
            self._unlock()
            raise
        self._write_conn = conn
        # The store holds only ciphertext, but its existence and sizes are still nobody's business.
        for suffix in ("", "-wal", "-shm"):
            candidate = Path(f"{self.path}{suffix}")
            if candidate.exists():
                candidate.chmod(0o600)

    def _unlock(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)  # closing the descriptor releases the flock
            self._lock_file = None

    async def close(self) -> None:
        """Refuse new writes, commit the queued ones, then release everything."""
        if self._closed:
            return
        self._closed = True
        await self._idle.wait()
        if self._commit_pool is not None:
            self._commit_pool.shutdown(wait=True)
        self._write_conn.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._unlock()

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    # -- plumbing ---------------------------------------------------------------------------

    async def _write(self, fn: Callable[[Transaction], T], *, savepoint: bool = True) -> T:
        if self._closed or self._loop is None:
            raise StoreUnavailable()
        future: asyncio.Future[T] = self._loop.create_future()
        self._pending.append(Job(fn, future, savepoint))
        if not self._committing:
            self._committing = True
            self._idle.clear()
            # On the next loop turn, so writes made in this turn join the same batch.
            self._loop.call_soon(self._next_batch)
        return await future

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed or self._pool is None:
            raise StoreUnavailable()

        def run() -> T:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = connect(self.path, readonly=True)
            try:
                return fn(conn)
            except RelayError:
                raise
            except sqlite3.Error as exc:
                log.error("store read failed: %s", exc.__class__.__name__)
                raise StoreUnavailable() from None

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def _next_batch(self) -> None:
        """Run queued jobs as one transaction on the loop, then commit on a thread."""
        assert self._loop is not None
        assert self._commit_pool is not None
        if not self._pending:
            self._committing = False
            self._idle.set()
            return
        count = min(len(self._pending), self.limits.group_commit_max)
        batch = [self._pending.popleft() for _ in range(count)]
        try:
            outcome = self._run_batch(self._write_conn, batch)
            if outcome is None:  # nothing left to commit (the batch failed as a whole)
                self._loop.call_soon(self._next_batch)
                return
            commit = self._loop.run_in_executor(self._commit_pool, self._commit)
        except Exception as exc:
            # Our bug, or the pool is gone: fail this batch, never leave the writer stuck.
            log.exception("store batch failed", exc_info=exc)
            if self._write_conn.in_transaction:
                self._write_conn.execute("ROLLBACK")
            self._rows.clear()
            self._resolve([(job, None, InternalError()) for job in batch], [])
            self._loop.call_soon(self._next_batch)
            return
        commit.add_done_callback(lambda done: self._after_commit(done, *outcome))

    def _commit(self) -> None:
        """The fsync: the only write step that leaves the loop thread."""
        self._write_conn.execute("COMMIT")

    def _after_commit(
        self,
        done: asyncio.Future[None],
        results: list[tuple[Job, Any, BaseException | None]],
        tx: Transaction,
    ) -> None:
        exc = done.exception()
        if exc is not None:
            log.error("store commit failed: %s", exc.__class__.__name__)
            if self._write_conn.in_transaction:
                self._write_conn.execute("ROLLBACK")
            self._rows.clear()
            error = self._map_error(exc)
            self._resolve([(job, None, error) for job, _, _ in results], [])
        else:
            self._totals.mailboxes += tx.delta.mailboxes
            self._totals.entries += tx.delta.entries
            self._totals.bytes += tx.delta.bytes
            self._resolve(results, tx.appended)
        self._next_batch()

    def _disk_low(self) -> bool:
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < self.limits.min_free_disk_bytes

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[Job]
    ) -> tuple[list[tuple[Job, Any, BaseException | None]], Transaction] | None:
        """Run ``batch`` up to (not including) COMMIT; None if nothing is left to commit."""
        pending = batch
        while pending:
            outcome = self._run_transaction(conn, pending)
            if isinstance(outcome, tuple):
                return outcome
            pending = outcome
        return None

    def _run_transaction(
        self, conn: sqlite3.Connection, batch: list[Job]
    ) -> list[Job] | tuple[list[tuple[Job, Any, BaseException | None]], Transaction]:
        """Run ``batch`` in one open transaction and return its results, ready to commit;
        or, if the transaction had to be abandoned, the jobs to run again in a new one."""
        tx = Transaction(conn, self.limits, self._totals, self._disk_low(), self._rows)
        results: list[tuple[Job, Any, BaseException | None]] = []

        def abandon(job: Job, exc: BaseException) -> list[Job]:
            # The transaction is lost (SQLite rolled it back, or a job failed halfway
            # without a savepoint): this job fails alone, the others start over.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._rows.clear()
            self._resolve([(job, None, self._map_error(exc))], [])
            return [other for other in batch if other is not job]

        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                if not job.savepoint:
                    try:
                        value = job.fn(tx)
                    except RelayError as exc:  # raised before any write, by contract
                        results.append((job, None, exc))
                    except Exception as exc:
                        return abandon(job, exc)
                    else:
                        results.append((job, value, None))
                    continue
                tx.flush()
                before = (tx.delta.mailboxes, tx.delta.entries, tx.delta.bytes, len(tx.appended))
                conn.execute("SAVEPOINT job")
                try:
                    value = job.fn(tx)
                except Exception as exc:
                    if not conn.in_transaction:
                        return abandon(job, exc)
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    self._rows.clear()
                    tx.delta = Totals(*before[:3])
                    del tx.appended[before[3] :]
                    results.append((job, None, self._map_error(exc)))
                else:
                    conn.execute("RELEASE job")
                    results.append((job, value, None))
            tx.flush()
        except sqlite3.Error as exc:
            log.error("store transaction failed: %s", exc.__class__.__name__)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._rows.clear()
            error = self._map_error(exc)
            self._resolve([(job, None, error) for job in batch], [])
            return []
        return results, tx

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
        self, results: list[tuple[Job, Any, BaseException | None]], appended: list[Appended]
    ) -> None:
        # Listeners first: by the time a writer sees its ack, every subscriber's push is
        # already queued.
        if appended:
            self._notify(appended)
        for job, value, error in results:
            if job.future.done():
                continue
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(value)

    # -- operations ---------------------------------------------------------------------------

    async def create_mailbox(self, mailbox: bytes, keys: MailboxKeys, ttl: int, now: float) -> None:
        granularity = self.limits.expiry_granularity

        def tx_fn(tx: Transaction) -> None:
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
    def _drop_mailbox(tx: Transaction, mailbox: bytes) -> None:
        count, size = tx.conn.execute(
            "SELECT entries, bytes FROM mailboxes WHERE id = ?", (mailbox,)
        ).fetchone()
        tx.conn.execute("DELETE FROM entries WHERE mailbox = ?", (mailbox,))
        tx.conn.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox,))
        tx.forget(mailbox)
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

        def tx_fn(tx: Transaction) -> None:
            row = tx.load(mailbox, now)
            new = round_up(now + row.ttl, granularity)
            if new > row.expires_at:
                row.expires_at = new
                tx.save(row)

        # Checks before it writes, like an append: no savepoint needed.
        await self._write(tx_fn, savepoint=False)

    async def append(
        self, entries: Sequence[NewEntry], epoch: int | None, now: float
    ) -> list[Appended]:
        if not entries:
            raise ValueError("append needs at least one entry")
        return await self._write(
            lambda tx: self._append_tx(tx, entries, epoch, now), savepoint=False
        )

    def _append_tx(
        self, tx: Transaction, entries: Sequence[NewEntry], epoch: int | None, now: float
    ) -> list[Appended]:
        """Check everything first, then write: this job runs without a savepoint, so any
        refusal must come before the first write (see ``Job.savepoint``)."""
        conn, lim = tx.conn, tx.limits
        main = entries[0]
        main_row = tx.load(main.mailbox, now)

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
                out.append(Appended(extra.mailbox, existing(extra) or 0, True, main_row.epoch))
            return out
        if epoch is not None and main_row.epoch != epoch:
            raise StaleEpoch(main_row.epoch)

        # Plan: sequence numbers and quotas on shadow counters, nothing written yet.
        shadow: dict[bytes, tuple[int, int, int]] = {}
        keys_seen: set[tuple[bytes, bytes]] = set()
        plan: list[tuple[NewEntry, MailboxRow, int, bool]] = []
        extra_bytes = 0
        for entry in entries:
            row = main_row if entry.mailbox == main.mailbox else tx.load(entry.mailbox, now)
            if entry.key is not None:
                if (entry.mailbox, entry.key) in keys_seen:
                    raise FieldInvalid("Idempotency keys within one append must differ.")
                keys_seen.add((entry.mailbox, entry.key))
                if entry is not main and (seq := existing(entry)) is not None:
                    plan.append((entry, row, seq, True))
                    continue
            head, count, size = shadow.get(entry.mailbox, (row.head, row.entries, row.bytes))
            blob_size = len(entry.blob)
            if count + 1 > lim.mailbox_max_entries or size + blob_size > lim.mailbox_max_bytes:
                raise MailboxFull()
            if (
                tx.disk_low
                or tx.totals.bytes + tx.delta.bytes + extra_bytes + blob_size > lim.store_max_bytes
            ):
                raise StoreFull()
            extra_bytes += blob_size
            shadow[entry.mailbox] = (head + 1, count + 1, size + blob_size)
            plan.append((entry, row, head + 1, False))

        # Apply: from here on only SQLite itself can fail, and that abandons the transaction.
        if epoch is not None:
            main_row.epoch += 1
            tx.save(main_row)
        out = []
        for entry, row, seq, duplicate in plan:
            if duplicate:
                out.append(Appended(entry.mailbox, seq, True, main_row.epoch))
                continue
            ttl = min(entry.ttl or row.ttl, row.ttl)
            conn.execute(
                "INSERT INTO entries (mailbox, seq, blob, idem, expires_at) VALUES (?, ?, ?, ?, ?)",
                (
                    entry.mailbox,
                    seq,
                    entry.blob,
                    entry.key,
                    round_up(now + ttl, lim.expiry_granularity),
                ),
            )
            row.head = seq
            row.entries += 1
            row.bytes += len(entry.blob)
            row.expires_at = max(row.expires_at, round_up(now + row.ttl, lim.expiry_granularity))
            tx.save(row)
            tx.delta.entries += 1
            tx.delta.bytes += len(entry.blob)
            appended = Appended(entry.mailbox, seq, False, main_row.epoch, entry.blob)
            out.append(appended)
            tx.appended.append(appended)
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
        def tx_fn(tx: Transaction) -> int:
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
                tx.forget(mailbox)
                tx.delta.entries -= count
                tx.delta.bytes -= size
            return int(count)

        return await self._write(tx_fn)

    async def rotate(self, mailbox: bytes, keys: MailboxKeys) -> None:
        def tx_fn(tx: Transaction) -> None:
            cur = tx.conn.execute(
                "UPDATE mailboxes SET read_key = ?, write_key = ?, admin_key = ? WHERE id = ?",
                (keys.read_key, keys.write_key, keys.admin_key, mailbox),
            )
            if cur.rowcount != 1:
                raise CapabilityDenied()

        await self._write(tx_fn)

    async def sweep(self, now: float) -> SweepResult:
        def tx_fn(tx: Transaction) -> tuple[int, bool]:
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
                tx.forget(mailbox)
                tx.delta.entries -= count
                tx.delta.bytes -= size
            return len(rows), len(rows) == _SWEEP_CHUNK

        def drop_mailboxes(tx: Transaction) -> int:
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
