"""One SQLCipher database per profile: unlock, PRAGMAs, migrations, transactions, re-keying.

Theory of operation: a profile is a folder holding ``store.db`` (SQLCipher 4,
whole-file AES-256 with per-page HMAC, WAL journal), ``store.header`` (the
plaintext KDF header, see ``keys.py``) and ``store.lock``. Opening takes an
exclusive ``flock`` on the lock file (``ProfileLocked`` otherwise), derives the
key with Argon2id, checks it against the header, and only then lets SQLCipher
decrypt page 1: a header check that fails is a ``WrongPassphrase``, a check that
passes on a database that will not decrypt is a ``CorruptStore``.

All SQLite work runs on one dedicated thread that owns the one connection, so
the event loop never blocks on disk or on Argon2id. Jobs reach that thread in
FIFO order; an ``asyncio.Lock`` hands the connection to one transaction at a
time. Single calls are a transaction of their own; ``transaction()`` groups
several. COMMIT or ROLLBACK is queued before the lock is released, so a
cancelled caller can never leave a transaction open for the next one.

Passphrase change (crash-safe): write ``store.header.new`` (durably), run
``PRAGMA rekey`` (one SQLite transaction: all pages or none), checkpoint, then
rename the new header over the old one. Opening tries ``store.header.new``
first and finishes or discards the change, depending on which key the
database actually accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from .errors import (
    CorruptStore,
    NoProfile,
    ProfileExists,
    ProfileLocked,
    StorageUnavailable,
    StoreClosed,
    StoreError,
    StoreInternalError,
    StoreUsageError,
    WrongPassphrase,
)
from .keys import (
    RFC9106_SECOND,
    Header,
    KdfParams,
    StorageKey,
    derive_key,
    fsync_dir,
    new_header,
    read_header,
    write_header,
)
from .records import message_ref

__all__ = ["Connection", "Database", "ProfilePaths", "Transaction"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# sqlcipher3 ships no type information; the Protocols below describe what we use.
_dbapi: Any = importlib.import_module("sqlcipher3.dbapi2")


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses."""

    @property
    def rowcount(self) -> int: ...
    @property
    def lastrowid(self) -> int | None: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The part of a sqlcipher3 connection the store uses."""

    @property
    def in_transaction(self) -> bool: ...
    def execute(
        self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ..., /
    ) -> Cursor: ...
    def executemany(self, sql: str, parameters: Sequence[Sequence[Any]], /) -> Cursor: ...
    def executescript(self, sql: str, /) -> Cursor: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ProfilePaths:
    """Where a profile's files live inside its folder."""

    directory: Path

    @property
    def db(self) -> Path:
        """The SQLCipher database."""
        return self.directory / "store.db"

    @property
    def header(self) -> Path:
        """The plaintext KDF header."""
        return self.directory / "store.header"

    @property
    def header_new(self) -> Path:
        """The next header while a passphrase change is in flight."""
        return self.directory / "store.header.new"

    @property
    def lock(self) -> Path:
        """The lock file that keeps a second process out."""
        return self.directory / "store.lock"


class _KeyRejected(Exception):
    """SQLCipher could not decrypt page 1 with the key."""


_CORRUPT = ("SQLITE_NOTADB", "SQLITE_CORRUPT")
_UNAVAILABLE = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM")


def map_error(exc: BaseException) -> StoreError:
    """Turn a sqlcipher3 error into a store error whose text names only the SQLite code."""
    name = str(getattr(exc, "sqlite_errorname", "") or type(exc).__name__)
    if name.startswith(_CORRUPT):
        return CorruptStore(f"The profile's database is damaged ({name}).")
    if name.startswith(_UNAVAILABLE):
        return StorageUnavailable(f"The disk refused a store operation ({name}).")
    if name.startswith("SQLITE_CONSTRAINT"):
        return StoreUsageError(f"A store write broke a constraint ({name}).")
    return StoreInternalError(f"Unexpected store failure ({name}).")


def _mapped(job: Callable[[], T]) -> Callable[[], T]:
    def run() -> T:
        try:
            return job()
        except _dbapi.Error as exc:
            raise map_error(exc) from None
        except OSError as exc:
            raise StorageUnavailable(
                f"The disk refused a store operation ({exc.strerror})."
            ) from None

    return run


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("backchannel.store").joinpath("migrations")
    found = [
        (int(item.name.split("_", 1)[0]), item.read_text(encoding="utf-8"))
        for item in folder.iterdir()
        if item.name.endswith(".sql")
    ]
    return sorted(found)


def apply_migrations(conn: Connection) -> int:
    """Apply the numbered migrations newer than ``PRAGMA user_version``; returns the version.

    Raises:
        CorruptStore: the database is newer than every migration this code knows.
    """
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    known = _migrations()
    if known and current > known[-1][0]:
        raise CorruptStore("This profile was written by a newer Backchannel; upgrade to open it.")
    pending = [(number, script) for number, script in known if number > current]
    if not pending:
        return current
    # SQLite's table-rebuild procedure: foreign keys off (a no-op inside a transaction,
    # so around it), the rebuild, then foreign_key_check before anything is committed.
    # Dropping a referenced table with them on would cascade into the rows it was copied
    # from. Migrations may call bc_message_ref() to compute a message's ref.
    conn.create_function("bc_message_ref", 2, message_ref, deterministic=True)
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        for number, script in pending:
            try:
                conn.executescript(f"BEGIN IMMEDIATE;\n{script}")
                if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
                    raise CorruptStore(
                        "This profile could not be upgraded: its records do not fit together."
                    )
                conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            current = number
    finally:
        conn.execute("PRAGMA foreign_keys = ON")
    return current


def _connect(path: Path, key: StorageKey) -> Connection:
    """Open ``path`` under ``key`` with the store's settings; raises _KeyRejected on a bad key."""
    conn = cast(
        Connection, _dbapi.connect(str(path), isolation_level=None, check_same_thread=False)
    )
    conn.row_factory = _dbapi.Row  # type: ignore[attr-defined]  # records read columns by name
    try:
        # SQLCipher logs decryption failures to stderr, which would scribble over a TUI.
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = {key.sqlcipher_pragma_value()}")
        # Pin the SQLCipher 4 format so a future library default cannot change it under us.
        conn.execute("PRAGMA cipher_compatibility = 4")
        # cipher_memory_security stays OFF (SQLCipher's default): it made FTS-indexed inserts
        # about ten times slower, and this process's Python heap holds the same plaintext
        # anyway, beyond any wiping. SQLCipher still wipes its key material. See docs/store.md.
        # One connection, so no shared-memory wal-index (-shm) file is ever made.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except _dbapi.DatabaseError as exc:
            if str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_NOTADB"):
                raise _KeyRejected from None
            raise
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageUnavailable("The store could not switch to WAL journaling.")
        # FULL in WAL mode syncs the WAL at every commit: a returned commit is durable.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA fullfsync = ON")
        # Deleted records (old group states, erased messages) are zeroed, not left in free space.
        conn.execute("PRAGMA secure_delete = ON")
        # After each checkpoint the WAL is cut back to nothing, so stale frames do not linger.
        conn.execute("PRAGMA journal_size_limit = 0")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA temp_store = MEMORY")
    except BaseException:
        conn.close()
        raise
    return conn


def _take_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        import fcntl
    except ImportError:  # not POSIX: SQLite's EXCLUSIVE locking mode still keeps others out
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ProfileLocked from None
    return fd


def _unlock_files(paths: ProfilePaths, passphrase: str | bytes) -> tuple[Connection, Header]:
    """Find the header the passphrase fits, open the database, settle any passphrase change."""
    has_new = paths.header_new.exists()
    if not paths.db.exists() or not (paths.header.exists() or has_new):
        raise NoProfile
    candidates: list[tuple[bool, Header]] = []
    if has_new:
        try:
            candidates.append((True, read_header(paths.header_new)))
        except CorruptStore:
            log.warning("ignoring a damaged pending store header")
    try:
        candidates.append((False, read_header(paths.header)))
    except FileNotFoundError:
        if not candidates:
            raise CorruptStore("The profile's header file is missing.") from None
    for is_new, header in candidates:
        keys = derive_key(passphrase, header.salt, header.kdf, header.cipher)
        if not header.matches(keys):
            continue
        try:
            conn = _connect(paths.db, keys.database)
        except _KeyRejected:
            if is_new:
                continue  # the interrupted rekey never committed: the old key still rules
            if has_new:
                break  # the interrupted rekey did commit: this is the old passphrase
            raise CorruptStore(
                "The passphrase is right but the database does not decrypt: it is damaged or was replaced."
            ) from None
        if is_new:
            os.replace(paths.header_new, paths.header)
            fsync_dir(paths.directory)
        elif has_new:
            paths.header_new.unlink()
            fsync_dir(paths.directory)
        return conn, header
    raise WrongPassphrase


def _create_files(
    paths: ProfilePaths, passphrase: str | bytes, kdf: KdfParams
) -> tuple[Connection, Header]:
    if paths.db.exists() and paths.db.stat().st_size > 0:
        raise ProfileExists
    # A header without a database is what an interrupted create() leaves: start over.
    paths.header_new.unlink(missing_ok=True)
    header, keys = new_header(passphrase, kdf)
    write_header(paths.header, header)
    os.close(os.open(paths.db, os.O_WRONLY | os.O_CREAT, 0o600))  # SQLite keeps this mode for -wal
    conn = _connect(paths.db, keys.database)
    return conn, header


_current: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
    "backchannel_store_transaction", default=None
)


class Database:
    """An open, unlocked profile database. Build with ``create()`` or ``open()``."""

    def __init__(
        self,
        paths: ProfilePaths,
        conn: Connection,
        header: Header,
        executor: ThreadPoolExecutor,
        lock_fd: int,
    ) -> None:
        self.paths = paths
        self._conn = conn
        self._header = header
        self._executor = executor
        self._lock_fd: int | None = lock_fd
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"Database({str(self.paths.directory)!r}, closed={self._closed})"

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    async def create(
        cls, directory: Path, passphrase: str | bytes, *, kdf: KdfParams = RFC9106_SECOND
    ) -> Database:
        """Create a new profile in ``directory`` (made if missing) and open it.

        Raises:
            ProfileExists: a database is already there.
            ProfileLocked: another process holds the folder.
            StorageUnavailable: the disk refused.
        """
        paths = ProfilePaths(Path(directory))
        try:
            paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(
                f"Cannot create the profile folder ({exc.strerror})."
            ) from None

        return await cls._start(paths, lambda: _create_files(paths, passphrase, kdf))

    @classmethod
    async def open(cls, directory: Path, passphrase: str | bytes) -> Database:
        """Unlock an existing profile.

        Raises:
            NoProfile: nothing to open there.
            WrongPassphrase: the passphrase does not fit (or the header salt was altered).
            CorruptStore: the header or database is damaged, or from a newer version.
            ProfileLocked: another process has the profile open.
            StorageUnavailable: the disk refused.
        """
        paths = ProfilePaths(Path(directory))
        if not paths.directory.is_dir():
            raise NoProfile

        return await cls._start(paths, lambda: _unlock_files(paths, passphrase))

    @classmethod
    async def _start(
        cls, paths: ProfilePaths, open_files: Callable[[], tuple[Connection, Header]]
    ) -> Database:
        """Take the profile lock, then open (or create) and migrate the database on the
        store's own thread."""

        def job() -> tuple[Connection, Header]:
            conn, header = open_files()
            try:
                apply_migrations(conn)
            except BaseException:
                conn.close()
                raise
            return conn, header

        try:
            lock_fd = _take_lock(paths.lock)
        except OSError as exc:
            raise StorageUnavailable(f"Cannot open the profile lock ({exc.strerror}).") from None
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backchannel-store")
        try:
            conn, header = await asyncio.wrap_future(executor.submit(_mapped(job)))
        except BaseException:
            executor.shutdown(wait=True)
            os.close(lock_fd)
            raise
        return cls(paths, conn, header, executor, lock_fd)

    async def close(self) -> None:
        """Checkpoint the WAL away, close the connection and release the profile. Idempotent."""
        if self._closed:
            return
        self._refuse_nested()
        self._closed = True
        async with self._lock:
            try:
                await self._submit(_mapped(self._close_sync))
            finally:
                self._executor.shutdown(wait=True)
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # closing the descriptor releases the flock
                    self._lock_fd = None

    def _close_sync(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._conn.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    @property
    def kdf(self) -> KdfParams:
        """The Argon2id parameters of the current header."""
        return self._header.kdf

    # -- running work -----------------------------------------------------------------------

    async def _submit(self, job: Callable[[], T]) -> T:
        future = self._executor.submit(job)
        # Shielded: a cancelled caller stops waiting, but the job (a COMMIT, say) still runs.
        return await asyncio.shield(asyncio.wrap_future(future))

    def _refuse_nested(self) -> None:
        tx = _current.get()
        if tx is not None and tx.database is self and tx.active:
            raise StoreUsageError(
                "Inside store.transaction(), call the methods on the transaction object."
            )

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed
        self._refuse_nested()

    async def run(self, fn: Callable[[Connection], T], *, scrub: bool = False) -> T:
        """Run ``fn(conn)`` on the store thread in a transaction of its own.

        Args:
            fn: the work; it must not block on anything but SQLite.
            scrub: after the commit, checkpoint and truncate the WAL, so the old page
                images of what ``fn`` erased or overwrote leave the disk at once.

        Raises:
            StoreClosed: after ``close()``.
            StoreUsageError: called from inside ``transaction()`` (use the transaction).
        """
        self._check_open()
        async with self._lock:
            self._check_open()
            return await self._submit(_mapped(lambda: self._one_shot(fn, scrub)))

    def _one_shot(self, fn: Callable[[Connection], T], scrub: bool) -> T:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self._conn)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        if scrub:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return result

    def _finish_sync(self, commit: bool, scrub: bool) -> None:
        if not self._conn.in_transaction:
            return
        if not commit:
            self._conn.execute("ROLLBACK")
            return
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        if scrub:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Group several operations into one atomic transaction.

        Commits when the block ends normally, rolls back when it raises (or is
        cancelled). The transaction belongs to the task that opened it; keep it
        short and do no network I/O inside, since it holds the store.

        Raises:
            StoreClosed: after ``close()``.
            StoreUsageError: nested inside another transaction of this store.
        """
        self._check_open()
        await self._lock.acquire()
        released = False
        tx = Transaction(self)
        token = _current.set(tx)
        try:
            try:
                if self._closed:
                    raise StoreClosed
                await self._submit(_mapped(lambda: self._conn.execute("BEGIN IMMEDIATE")))
                yield tx
            except BaseException:
                tx.active = False
                # Queued before the lock goes: whatever runs next finds no open transaction.
                future = self._executor.submit(_mapped(lambda: self._finish_sync(False, False)))
                self._lock.release()
                released = True
                with contextlib.suppress(StoreError):
                    await asyncio.shield(asyncio.wrap_future(future))
                raise
            tx.active = False
            future = self._executor.submit(_mapped(lambda: self._finish_sync(True, tx.scrub)))
            self._lock.release()
            released = True
            await asyncio.shield(asyncio.wrap_future(future))
        finally:
            _current.reset(token)
            if not released:
                self._lock.release()

    async def checkpoint(self) -> None:
        """Move the WAL into the database file and truncate the WAL to zero bytes."""
        self._check_open()
        async with self._lock:
            await self._submit(
                _mapped(lambda: self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
            )

    # -- passphrase ---------------------------------------------------------------------------

    async def check_passphrase(self, passphrase: str | bytes) -> bool:
        """Whether ``passphrase`` is this profile's (Argon2id, compared in constant time).

        Used to unlock a locked screen without closing the store.
        """
        self._check_open()
        header = self._header
        keys = await asyncio.to_thread(
            derive_key, passphrase, header.salt, header.kdf, header.cipher
        )
        return header.matches(keys)

    async def change_passphrase(
        self, old: str | bytes, new: str | bytes, *, kdf: KdfParams | None = None
    ) -> None:
        """Re-encrypt the whole database under a key from ``new`` and a fresh salt.

        Args:
            old: the current passphrase (checked first).
            new: the next passphrase.
            kdf: Argon2id parameters for the new header; the current ones if None.

        Raises:
            WrongPassphrase: ``old`` is not the current passphrase; nothing changed.
            StorageUnavailable: the disk refused; the old passphrase still works.
        """
        self._check_open()
        params = kdf or self._header.kdf
        async with self._lock:
            self._check_open()
            await self._submit(_mapped(lambda: self._change_sync(old, new, params)))

    def _change_sync(self, old: str | bytes, new: str | bytes, kdf: KdfParams) -> None:
        current = self._header
        if not current.matches(derive_key(old, current.salt, current.kdf, current.cipher)):
            raise WrongPassphrase
        header, keys = new_header(new, kdf)
        paths = self.paths
        write_header(paths.header_new, header)
        try:
            self._conn.execute(f"PRAGMA rekey = {keys.database.sqlcipher_pragma_value()}")
        except BaseException:
            paths.header_new.unlink(missing_ok=True)
            raise
        # Old-key page images must not outlive the change in the WAL or the main file.
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os.replace(paths.header_new, paths.header)
        fsync_dir(paths.directory)
        self._header = header


class Transaction:
    """An open transaction; ``Database.transaction()`` yields one."""

    __slots__ = ("active", "database", "scrub")

    def __init__(self, database: Database) -> None:
        self.database = database
        self.active = True
        #: Checkpoint and truncate the WAL after the commit (set by erasing operations).
        self.scrub = False

    async def run(self, fn: Callable[[Connection], T], *, scrub: bool = False) -> T:
        """Run ``fn(conn)`` inside this transaction.

        Raises:
            StoreUsageError: the transaction already ended.
        """
        if not self.active:
            raise StoreUsageError("The transaction has already ended.")
        self.scrub = self.scrub or scrub
        db = self.database
        return await db._submit(_mapped(lambda: fn(db._conn)))
