"""The multi-node store: PostgreSQL through asyncpg, with LISTEN/NOTIFY between relay nodes.

Theory of operation: every write is one call of a server-side function (see
``migrations/postgres``) that locks the mailbox rows involved in id order, checks
epoch and quotas, writes, and queues a ``NOTIFY`` that PostgreSQL delivers at commit.
Row locks make sequence numbers gapless across nodes.

Appends use group commit, as the SQLite store does: they queue on the event loop, and
a writer task takes everything queued (up to ``group_commit_max``, and at most
:data:`_BATCH_MAX`) and sends it as one call of ``relay_append_batch`` on one pooled
connection, inside one transaction: one round trip and one commit (one WAL flush) for
the whole batch. Each append runs in its own exception block, a savepoint, so a
refused append (stale epoch, mailbox full, denied…) rolls back alone and comes back
as its own error row. The batch locks all its mailbox rows up front in id order and
the store-wide counters last in shard order, so concurrent batches, on this node or
another, cannot deadlock each other (nor the sweep, which takes its counters last in
the same order). Sorting the appends instead would not do: an append's 'also'
mailboxes and the counter rows would still interleave. Should PostgreSQL still pick
the batch as a deadlock victim (say, against a store import), nothing was committed
and the batch runs again, up to :data:`_BATCH_RETRIES` times.
Only after COMMIT returns are the futures resolved and the listeners told; if the
COMMIT itself fails, every append of the batch fails with ``unavailable``, since
it may or may not have committed. A few writers (:data:`_WRITERS`) run at once, so
one batch is filled while another waits for its commit.

Each node keeps one extra connection that LISTENs. A notification carries the node
that wrote, the mailbox and the sequence number, never the blob. Entries this node
wrote reach its subscribers straight away; the other nodes' are handed to the
:class:`ClusterListener` (the hub), which reads the blobs. When the listening
connection drops, the node reconnects with backoff and asks the hub to resync every
subscription from its cursor, so a lost notification delays delivery but never
drops it.

The store's generation (see :mod:`.base`) is one row, ``relay_generation``. The first
node to open a store marked restored starts the new generation, under that row's lock,
so nodes starting together agree; every node re-reads the id at each expiry sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import asyncpg

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
    migration_scripts,
    new_generation_id,
    restore_floor,
)

__all__ = ["PostgresStore", "apply_migrations", "mark_restored", "open_generation"]

log = logging.getLogger(__name__)
T = TypeVar("T")

CHANNEL_PREFIX: Final = (
    "backchannel_relay:"  # + the schema, so deployments sharing a database stay apart
)
_SWEEP_CHUNK: Final = 2000
_MIGRATION_LOCK: Final = 0x6263_7265_6C61_79  # "bcrelay": serialises schema changes across nodes
_CONNECT_TIMEOUT: Final = 5.0
_COMMAND_TIMEOUT: Final = 30.0
#: Appends per transaction. Each append is a subtransaction; beyond 64 with writes in
#: one transaction, PostgreSQL's per-backend subtransaction cache overflows and every
#: other session's snapshots get slower until the transaction ends.
_BATCH_MAX: Final = 64
#: Batches in flight per node: one filling or running while another waits for COMMIT.
_WRITERS: Final = 2
#: Whole-batch retries after a deadlock or serialization failure (nothing committed).
_BATCH_RETRIES: Final = 3
_RETRY_STATES: Final = frozenset({"40P01", "40001"})
_SQLSTATE_ERRORS: Final[dict[str, type[RelayError]]] = {
    "BC401": CapabilityDenied,
    "BC410": MailboxExists,
    "BC413": MailboxFull,
    "BC507": StoreFull,
    "53100": StoreFull,  # disk_full
    "57014": StoreUnavailable,  # query_canceled: a server-side statement_timeout
}


async def apply_migrations(conn: asyncpg.Connection) -> int:
    """Apply the numbered migrations not yet recorded; safe with several nodes starting at once."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS relay_schema_migrations (version int PRIMARY KEY)"
        )
        done = {
            r["version"] for r in await conn.fetch("SELECT version FROM relay_schema_migrations")
        }
        for number, script in migration_scripts("postgres"):
            if number not in done:
                await conn.execute(script)
                await conn.execute(
                    "INSERT INTO relay_schema_migrations (version) VALUES ($1)", number
                )
                done.add(number)
    return max(done, default=0)


async def open_generation(conn: asyncpg.Connection, now: float) -> bytes:
    """The store's generation id, written on first use; a new generation if the store
    is marked restored (every head and epoch raised to the new floor, in one transaction).
    """
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO relay_generation (one, id) VALUES (1, $1) ON CONFLICT (one) DO NOTHING",
            new_generation_id(),
        )
        row = await conn.fetchrow("SELECT id, floor, restored FROM relay_generation FOR UPDATE")
        if not row["restored"]:
            return bytes(row["id"])
        head, epoch = await conn.fetchrow(
            "SELECT coalesce(max(head), 0), coalesce(max(epoch), 0) FROM relay_mailboxes"
        )
        floor = restore_floor(now, int(head), int(epoch), int(row["floor"]))
        await conn.execute(
            "UPDATE relay_mailboxes SET head = greatest(head, $1), epoch = greatest(epoch, $1)",
            floor,
        )
        generation = new_generation_id()
        await conn.execute(
            "UPDATE relay_generation SET id = $1, floor = $2, restored = false", generation, floor
        )
    log.warning(
        "this store is a restored copy: a new generation starts; sequence numbers and "
        "epochs continue above the restore floor"
    )
    return generation


async def mark_restored(conn: asyncpg.Connection) -> None:
    """Flag the store as a restored copy: the next node to open it starts a new generation."""
    await apply_migrations(conn)
    await conn.execute(
        "INSERT INTO relay_generation (one, id, restored) VALUES (1, $1, true) "
        "ON CONFLICT (one) DO UPDATE SET restored = true",
        new_generation_id(),
    )


def _state_error(state: str, detail: str | None) -> RelayError:
    """The relay error for a SQLSTATE (and its DETAIL) raised by the store's SQL."""
    if state == "BC409":
        try:
            return StaleEpoch(int(detail or 0))
        except ValueError:
            return StaleEpoch(0)
    error = _SQLSTATE_ERRORS.get(state)
    if error is not None:
        return error()
    if state.startswith(("08", "57P", "53", "40")):  # connection, shutdown, resources, retry
        return StoreUnavailable()
    log.error("store error %s", state)
    return InternalError()


def _translate(exc: BaseException) -> BaseException:
    """Turn a database or connection failure into the relay error a client should see."""
    if isinstance(exc, RelayError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        return _state_error(getattr(exc, "sqlstate", "") or "", getattr(exc, "detail", None))
    # Lost connections, refused connections, pool closing and timeouts.
    return StoreUnavailable()


@dataclass(slots=True)
class _Append:
    """One queued append, waiting for a batch."""

    entries: Sequence[NewEntry]
    epoch: int | None
    now: int
    future: asyncio.Future[list[Appended]]
    result: list[Appended] | None = None
    error: BaseException | None = field(default=None)


class PostgresStore(MailboxStore):
    """Mailboxes in PostgreSQL, shared by any number of relay nodes."""

    def __init__(self, url: str, limits: StoreLimits | None = None, *, pool_size: int = 10) -> None:
        super().__init__()
        self.url = url
        self.limits = limits or StoreLimits()
        self.pool_size = pool_size
        #: Tells this node's notifications apart from the other nodes'.
        self.node = os.urandom(8).hex()
        self._pool: asyncpg.Pool | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._listen_conn: asyncpg.Connection | None = None
        self._closed = True
        self._queue: deque[_Append] = deque()
        self._writers: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        #: Transactions committed by the batch writer, and appends they carried (tests,
        #: diagnostics): appends / batches is the group-commit factor.
        self.batches = 0
        self.batched_appends = 0
        self.batch_retries = 0

    def __repr__(self) -> str:  # the URL may hold a password
        return f"PostgresStore(node={self.node})"

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            conn = await asyncpg.connect(self.url, timeout=_CONNECT_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # refused, timed out, bad URL, wrong server attributes…
            raise StoreUnavailable(
                f"Cannot reach PostgreSQL ({exc.__class__.__name__}); check --database-url."
            ) from None
        try:
            await apply_migrations(conn)
            self.generation = await open_generation(conn, time.time())
        finally:
            await conn.close()
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=1,
            max_size=self.pool_size,
            timeout=_CONNECT_TIMEOUT,
            command_timeout=_COMMAND_TIMEOUT,
            max_inactive_connection_lifetime=60.0,
        )
        self._closed = False
        self._listener_task = asyncio.create_task(self._listen_forever(), name="relay-pg-listen")

    async def close(self) -> None:
        """Refuse new writes, finish the queued ones, then release everything."""
        if self._closed:
            return
        self._closed = True
        await self._idle.wait()
        if self._listener_task is not None:
            self._listener_task.cancel()
            await asyncio.gather(self._listener_task, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()

    async def ping(self) -> None:
        await self._run(lambda c: c.fetchval("SELECT 1"))

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        if self._closed or self._pool is None:
            raise StoreUnavailable()
        try:
            async with self._pool.acquire() as conn:
                return await fn(conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _translate(exc) from None

    async def _listen_forever(self) -> None:
        delay = 0.1
        first = True
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.url, timeout=_CONNECT_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot LISTEN (%s); retrying", exc.__class__.__name__)
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 5.0)
                continue
            self._listen_conn = conn
            conn.add_termination_listener(lambda _c, ev=lost: ev.set())
            try:
                schema = await conn.fetchval("SELECT current_schema()")
                await conn.add_listener(CHANNEL_PREFIX + schema, self._on_notify)
                delay = 0.1
                if not first and self._cluster is not None:
                    self._cluster.resync()  # anything said while we were deaf is re-read
                first = False
                while not conn.is_closed() and not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 5.0)
                    if not lost.is_set():
                        # Also notices a silently dead link; a failure here means reconnect.
                        await conn.fetchval("SELECT 1", timeout=_CONNECT_TIMEOUT)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=1)
                raise
            except Exception as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", exc.__class__.__name__)
            finally:
                self._listen_conn = None
            with contextlib.suppress(Exception):
                await conn.close(timeout=1)
            first = False
            await asyncio.sleep(delay)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        parts = payload.split(" ")
        if len(parts) < 3 or self._cluster is None:
            return
        try:
            mailbox = bytes.fromhex(parts[2])
            if parts[0] == "a" and len(parts) == 4 and parts[1] != self.node:
                self._cluster.hinted(mailbox, int(parts[3]))
            elif parts[0] == "r":
                # Our own rotations too: if the rotate's answer was lost after it
                # committed, this is what revokes the old grants here. Re-checking against
                # the stored keys keeps grants already proven with the new keys.
                self._cluster.rotated(mailbox)
        except ValueError:
            log.warning("ignored a malformed notification")

    # -- operations ---------------------------------------------------------------------------

    async def create_mailbox(self, mailbox: bytes, keys: MailboxKeys, ttl: int, now: float) -> None:
        lim = self.limits
        await self._run(
            lambda c: c.execute(
                "SELECT relay_create($1, $2, $3, $4, $5, $6, $7, $8)",
                mailbox,
                keys.read_key,
                keys.write_key,
                keys.admin_key,
                ttl,
                int(now),
                lim.expiry_granularity,
                lim.store_max_bytes,
            )
        )

    async def get_keys(self, mailbox: bytes, now: float) -> MailboxKeys | None:
        row = await self._run(
            lambda c: c.fetchrow(
                "SELECT read_key, write_key, admin_key FROM relay_mailboxes WHERE id = $1 AND expires_at > $2",
                mailbox,
                int(now),
            )
        )
        return None if row is None else MailboxKeys(row[0], row[1], row[2])

    async def touch(self, mailbox: bytes, now: float) -> None:
        found = await self._run(
            lambda c: c.fetchval(
                "WITH m AS (SELECT id FROM relay_mailboxes WHERE id = $1 AND expires_at > $2), "
                "u AS (UPDATE relay_mailboxes SET expires_at = relay_round_up($2 + ttl, $3) "
                "WHERE id IN (SELECT id FROM m) AND relay_round_up($2 + ttl, $3) > expires_at) "
                "SELECT count(*) FROM m",
                mailbox,
                int(now),
                self.limits.expiry_granularity,
            )
        )
        if not found:
            raise CapabilityDenied()

    async def append(
        self, entries: Sequence[NewEntry], epoch: int | None, now: float
    ) -> list[Appended]:
        if not entries:
            raise ValueError("append needs at least one entry")
        if self._closed or self._pool is None:
            raise StoreUnavailable()
        job = _Append(entries, epoch, int(now), asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._wake_writers()
        return await job.future

    # -- group commit ---------------------------------------------------------------------------

    def _wake_writers(self) -> None:
        # A second writer starts as soon as appends queue behind a running batch, so the
        # next batch runs its statements while the previous one waits for its commit.
        wanted = min(_WRITERS, self.pool_size, len(self._queue) + len(self._writers))
        while len(self._writers) < wanted:
            self._idle.clear()
            task = asyncio.get_running_loop().create_task(
                self._write_batches(), name="relay-pg-writer"
            )
            self._writers.add(task)
            task.add_done_callback(self._writer_done)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        self._writers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("store writer failed", exc_info=task.exception())
        if self._queue:
            self._wake_writers()  # a writer died with work queued: never leave it stuck
        elif not self._writers:
            self._idle.set()

    async def _write_batches(self) -> None:
        """Take queued appends in batches until the queue is empty."""
        max_batch = max(1, min(self.limits.group_commit_max, _BATCH_MAX))
        while self._queue:
            count = min(len(self._queue), max_batch)
            batch = [self._queue.popleft() for _ in range(count)]
            try:
                await self._commit_batch(batch)
            except Exception as exc:  # our bug: fail this batch, keep the writer going
                log.exception("store batch failed", exc_info=exc)
                for job in batch:
                    job.result, job.error = None, InternalError()
            except BaseException:  # cancelled (the loop is going away): nobody waits forever
                for job in batch:
                    job.result, job.error = None, StoreUnavailable()
                self._resolve(batch)
                raise
            self._resolve(batch)

    async def _commit_batch(self, batch: list[_Append]) -> None:
        """Run ``batch`` in one transaction; fill in each job's result or error."""
        if self._pool is None:
            for job in batch:
                job.error = StoreUnavailable()
            return
        lim = self.limits
        flat = [e for job in batch for e in job.entries]
        args = (
            [len(job.entries) for job in batch],
            [e.mailbox for e in flat],
            [e.blob for e in flat],
            [e.key for e in flat],
            [e.ttl for e in flat],
            [job.epoch for job in batch],
            [job.now for job in batch],
            lim.expiry_granularity,
            lim.mailbox_max_entries,
            lim.mailbox_max_bytes,
            lim.store_max_bytes,
            self.node,
        )
        attempt = 0
        while True:
            attempt += 1
            committing = committed = False
            try:
                async with self._pool.acquire() as conn:
                    tx = conn.transaction()
                    await tx.start()
                    try:
                        rows = await conn.fetch(
                            "SELECT * FROM relay_append_batch("
                            "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                            *args,
                        )
                    except BaseException:
                        await tx.rollback()
                        raise
                    committing = True
                    await tx.commit()
                    committed = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if committed:  # only handing the connection back failed: the batch stands
                    log.warning("store connection release failed: %s", exc.__class__.__name__)
                    break
                state = getattr(exc, "sqlstate", "") or ""
                if not committing and state in _RETRY_STATES and attempt <= _BATCH_RETRIES:
                    # Chosen as a deadlock victim: nothing was committed, run it again.
                    self.batch_retries += 1
                    continue
                if committing:
                    # The COMMIT's outcome is unknown: never acknowledge, never claim
                    # a definite refusal either.
                    log.error("store commit failed: %s", exc.__class__.__name__)
                    error: BaseException = StoreUnavailable()
                else:
                    error = _translate(exc)
                for job in batch:
                    job.error = error
                return
            break
        self.batches += 1
        self.batched_appends += len(batch)
        by_job: dict[int, list[Any]] = {}
        for row in rows:
            by_job.setdefault(row["o_job"], []).append(row)
        for number, job in enumerate(batch, start=1):
            got = by_job.get(number, [])
            if len(got) == 1 and got[0]["o_error"] is not None:
                job.error = _state_error(got[0]["o_error"], got[0]["o_detail"])
                continue
            job.result = [
                Appended(
                    e.mailbox,
                    r["o_seq"],
                    r["o_duplicate"],
                    r["o_epoch"],
                    b"" if r["o_duplicate"] else e.blob,
                )
                for e, r in zip(job.entries, got, strict=True)
            ]

    def _resolve(self, batch: list[_Append]) -> None:
        # Listeners first: by the time a writer sees its ack, every local subscriber's
        # push is already queued.
        fresh = [
            a for job in batch if job.result is not None for a in job.result if not a.duplicate
        ]
        if fresh:
            self._notify(fresh)
        for job in batch:
            if job.future.done():
                continue
            if job.result is not None:
                job.future.set_result(job.result)
            else:
                job.future.set_exception(job.error or InternalError())

    async def fetch(
        self, mailbox: bytes, after: int, limit: int, max_bytes: int, now: float
    ) -> Page:
        async def run(conn: asyncpg.Connection) -> Page:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                head = await conn.fetchval(
                    "SELECT head FROM relay_mailboxes WHERE id = $1 AND expires_at > $2",
                    mailbox,
                    int(now),
                )
                if head is None:
                    raise CapabilityDenied()
                rows = await conn.fetch(
                    "SELECT seq, blob FROM relay_entries WHERE mailbox = $1 AND seq > $2 AND expires_at > $3 "
                    "ORDER BY seq LIMIT $4",
                    mailbox,
                    after,
                    int(now),
                    limit + 1,
                )
            taken: list[tuple[int, bytes]] = []
            size, more = 0, False
            for seq, blob in rows:
                if len(taken) >= limit or (taken and size + len(blob) > max_bytes):
                    more = True
                    break
                taken.append((seq, blob))
                size += len(blob)
            return Page(taken, int(head), more)

        return await self._run(run)

    async def trim(self, mailbox: bytes, through: int) -> int:
        removed = await self._run(
            lambda c: c.fetchval("SELECT relay_trim($1, $2)", mailbox, through)
        )
        return int(removed)

    async def rotate(self, mailbox: bytes, keys: MailboxKeys) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                updated = await conn.fetchval(
                    "UPDATE relay_mailboxes SET read_key = $2, write_key = $3, admin_key = $4 "
                    "WHERE id = $1 RETURNING 1",
                    mailbox,
                    keys.read_key,
                    keys.write_key,
                    keys.admin_key,
                )
                if updated is None:
                    raise CapabilityDenied()
                await conn.execute(
                    "SELECT pg_notify($1 || current_schema(), $2)",
                    CHANNEL_PREFIX,
                    f"r {self.node} {mailbox.hex()}",
                )

        await self._run(run)

    async def sweep(self, now: float) -> SweepResult:
        # Another node may have started a new generation since this one opened the store.
        generation = await self._run(lambda c: c.fetchval("SELECT id FROM relay_generation"))
        if generation is not None:
            self.generation = bytes(generation)
        entries = mailboxes = 0
        while True:
            row = await self._run(
                lambda c: c.fetchrow("SELECT * FROM relay_sweep($1, $2)", int(now), _SWEEP_CHUNK)
            )
            entries += row[0]
            mailboxes += row[1]
            if not row[2] or (row[0] < _SWEEP_CHUNK and row[1] < _SWEEP_CHUNK):
                return SweepResult(entries, mailboxes)

    async def stats(self) -> StoreStats:
        row = await self._run(
            lambda c: c.fetchrow(
                "SELECT coalesce(sum(mailboxes), 0), coalesce(sum(entries), 0), coalesce(sum(bytes), 0) "
                "FROM relay_totals"
            )
        )
        return StoreStats(int(row[0]), int(row[1]), int(row[2]))

    # -- copying a SQLite store in ------------------------------------------------------------

    async def import_rows(
        self,
        mailboxes: Sequence[tuple[Any, ...]],
        entries: Sequence[tuple[Any, ...]],
        generation: tuple[bytes, int, bool] | None = None,
    ) -> None:
        """Insert mailbox and entry rows copied from another store, in one transaction.

        ``generation`` is the source's (id, floor, restored): this store takes it over
        if it held no mailbox yet, so the clients of a moved store see the same
        generation (and a restored copy still starts a new one at the next open).

        Raises:
            MailboxExists: a mailbox id is already present; nothing was written.
        """

        async def run(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                if generation is not None and not await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM relay_mailboxes)"
                ):
                    await conn.execute(
                        "UPDATE relay_generation SET id = $1, floor = $2, restored = $3",
                        *generation,
                    )
                ids = [m[0] for m in mailboxes]
                clash = await conn.fetchval(
                    "SELECT 1 FROM relay_mailboxes WHERE id = ANY($1) LIMIT 1", ids
                )
                if clash:
                    raise MailboxExists(
                        "The target database already holds some of these mailboxes."
                    )
                await conn.copy_records_to_table(
                    "relay_mailboxes",
                    records=mailboxes,
                    columns=[
                        "id",
                        "read_key",
                        "write_key",
                        "admin_key",
                        "ttl",
                        "epoch",
                        "head",
                        "entries",
                        "bytes",
                        "expires_at",
                    ],
                )
                await conn.copy_records_to_table(
                    "relay_entries",
                    records=entries,
                    columns=["mailbox", "seq", "blob", "idem", "expires_at"],
                )
                await conn.execute(
                    "UPDATE relay_totals t SET mailboxes = t.mailboxes + s.m, entries = t.entries + s.e, "
                    "bytes = t.bytes + s.b FROM (SELECT relay_shard(id) AS shard, count(*) AS m, "
                    "sum(entries) AS e, sum(bytes) AS b FROM relay_mailboxes WHERE id = ANY($1) "
                    "GROUP BY 1) s WHERE t.shard = s.shard",
                    ids,
                )

        await self._run(run)
