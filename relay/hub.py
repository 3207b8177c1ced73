"""Live subscriptions: backlog then pushes, with no gap and no duplicate across the seam.

Theory of operation: a subscription has a cursor (the last sequence number it has
sent). The store tells the hub about every committed entry, in order per mailbox,
and the hub offers it to each subscription of that mailbox. While a subscription is
*catching up* (reading from the store) it only notes the highest sequence number it
was offered; otherwise an offer of exactly ``cursor + 1`` is pushed at once, an offer
at or below the cursor is a duplicate and ignored, and anything further ahead means
something was missed (a notification lost, or a page still in flight), so the
subscription catches up from the store again. Catching up ends only when a store
read finds nothing beyond the cursor and nothing newer was offered meanwhile; the
check and the switch back to live mode happen without an ``await`` in between, so
no entry can slip through the seam.

Entries written on other relay nodes arrive as *hints* (mailbox and sequence number,
no blob). The hub reads each hinted mailbox once per burst, from the lowest cursor of
its live subscriptions, and offers what it read to every subscription of the mailbox,
exactly as it offers this node's own entries: the same rules drop duplicates and turn
a gap into that subscription's own catch-up. So a burst of hints costs one store read
per mailbox, not one per subscription; subscriptions already catching up just note
the hint, and one the shared read could not bring up to date (its entries were trimmed
or expired meanwhile) falls back to catching up on its own.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import RelayError
from .protocol import encode
from .store.base import Appended, MailboxStore

if TYPE_CHECKING:
    from .connection import Connection
    from .metrics import RelayMetrics

__all__ = ["Hub", "Subscription", "push_frame"]

log = logging.getLogger(__name__)


def push_frame(mailbox: bytes, seq: int, blob: bytes) -> bytes:
    """The encoded ``push`` frame of one entry."""
    return encode({"t": "push", "mailbox": mailbox, "seq": seq, "blob": blob})


class Subscription:
    """One connection's subscription to one mailbox."""

    def __init__(
        self,
        hub: Hub,
        conn: Connection,
        mailbox: bytes,
        cursor: int,
    ) -> None:
        self.hub = hub
        self.conn = conn
        self.mailbox = mailbox
        self.cursor = cursor
        self._offered = cursor
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def catching_up(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        self._catch_up()

    def hint(self, seq: int) -> None:
        """Entry ``seq`` exists but its blob is not at hand: read it from the store."""
        if self.closed or seq <= self.cursor:
            return
        self._offered = max(self._offered, seq)
        if self._task is None:
            self._catch_up()

    @property
    def live(self) -> bool:
        """Pushing as entries are offered (not catching up, not closed or closing)."""
        return not self.closed and self._task is None and not self.conn.closing

    def resync(self) -> None:
        """Re-read from the cursor, in case notifications were lost."""
        if not self.closed and self._task is None:
            self._catch_up()

    def offer(self, seq: int, blob: bytes, frame: bytes | None = None) -> None:
        """A new entry was committed to this mailbox (``frame``: its push, pre-encoded)."""
        if self.closed:
            return
        if self._task is not None:
            self._offered = max(self._offered, seq)
            return
        if seq <= self.cursor:
            return
        if seq == self.cursor + 1:
            if self._push(seq, blob, live=True, frame=frame):
                self.cursor = seq
            return
        self._offered = max(self._offered, seq)
        self._catch_up()

    def _push(self, seq: int, blob: bytes, *, live: bool, frame: bytes | None = None) -> bool:
        data = frame if frame is not None else push_frame(self.mailbox, seq, blob)
        ok = self.conn.send_encoded(data, force=not live)
        if ok:
            self.hub.metrics.pushed += 1
        return ok

    def _catch_up(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run_catch_up(), name="relay-catch-up"
        )

    async def _run_catch_up(self) -> None:
        hub = self.hub
        try:
            while not self.closed:
                page = await hub.store.fetch(
                    self.mailbox, self.cursor, hub.page_entries, hub.page_bytes, hub.clock()
                )
                for seq, blob in page.entries:
                    await self.conn.wait_for_room()
                    if self.closed or self.conn.closing:
                        return
                    if seq > self.cursor:
                        self._push(seq, blob, live=False)
                        self.cursor = seq
                if page.more:
                    continue
                # Entries at or below the snapshot's head that did not come back were
                # trimmed or expired: skip them rather than wait for them forever.
                self.cursor = max(self.cursor, page.head)
                if self._offered <= self.cursor:
                    self._task = None  # live from here; no await since the check
                    return
        except RelayError as exc:
            # The mailbox vanished (expired) or the store is down: end the subscription
            # visibly rather than leave the client waiting on a silent stream.
            log.info("subscription ended: %s", exc.code)
            reason = "expired" if exc.code == "denied" else "unavailable"
            self.conn.send({"t": "revoked", "mailbox": self.mailbox, "reason": reason})
            self.conn.subscriptions.pop(self.mailbox, None)
            self.close()
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.hub.remove(self)
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()


class Hub:
    """Index of subscriptions and grants by mailbox; fans committed entries out.

    It is also the store's :class:`~relay.store.base.ClusterListener`: entries other
    relay nodes wrote arrive as hints (mailbox and sequence number), and rotations
    made elsewhere revoke this node's grants too.
    """

    def __init__(
        self,
        store: MailboxStore,
        metrics: RelayMetrics,
        clock: Callable[[], float],
        *,
        page_entries: int,
        page_bytes: int,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.page_entries = page_entries
        self.page_bytes = page_bytes
        self._subs: dict[bytes, set[Subscription]] = {}
        self._grants: dict[bytes, weakref.WeakSet[Connection]] = {}
        self._rotations: dict[bytes, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Per hinted mailbox, the highest sequence number hinted; present while its
        #: shared read (``_read_hinted``) runs.
        self._hinted: dict[bytes, int] = {}
        #: Store reads made for hints: shared reads, not per-subscription catch-ups.
        self.hint_reads = 0
        store.add_listener(self.publish)
        store.set_cluster_listener(self)

    def subscribe(self, conn: Connection, mailbox: bytes, after: int) -> Subscription:
        """Register first, then start the backlog read, so nothing committed in between is lost."""
        sub = Subscription(self, conn, mailbox, after)
        self._subs.setdefault(mailbox, set()).add(sub)
        sub.start()
        return sub

    def remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.mailbox)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.mailbox]

    def publish(self, appended: Sequence[Appended]) -> None:
        self._offer_all((entry.mailbox, entry.seq, entry.blob) for entry in appended)

    def _offer_all(self, entries: Iterable[tuple[bytes, int, bytes]]) -> None:
        held: dict[int, Connection] = {}
        try:
            for mailbox, seq, blob in entries:
                subs = self._subs.get(mailbox)
                if not subs:
                    continue
                # Every subscriber gets the same bytes: encode the push once.
                frame = push_frame(mailbox, seq, blob)
                for sub in tuple(subs):
                    conn = sub.conn
                    if id(conn) not in held:
                        conn.hold()
                        held[id(conn)] = conn
                    sub.offer(seq, blob, frame)
        finally:
            # One write per connection for the whole batch.
            for conn in held.values():
                conn.release_held()

    def hinted(self, mailbox: bytes, seq: int) -> None:
        """Another node committed entry ``seq``: one shared read for all subscriptions."""
        subs = self._subs.get(mailbox)
        if not subs:
            return
        behind = False
        for sub in tuple(subs):
            if sub.live:
                behind = behind or seq > sub.cursor
            else:
                sub.hint(seq)  # catching up already: it only notes how far to read
        if not behind:
            return
        if mailbox in self._hinted:
            self._hinted[mailbox] = max(self._hinted[mailbox], seq)
            return  # the running read picks it up before it ends
        self._hinted[mailbox] = seq
        task = asyncio.get_running_loop().create_task(
            self._read_hinted(mailbox), name="relay-hint-read"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_hinted(self, mailbox: bytes) -> None:
        try:
            while True:
                target = self._hinted[mailbox]
                behind = [
                    s for s in tuple(self._subs.get(mailbox, ())) if s.live and s.cursor < target
                ]
                if not behind:
                    # No await since the check: a hint arriving after this starts a new read.
                    del self._hinted[mailbox]
                    return
                self.hint_reads += 1
                try:
                    page = await self.store.fetch(
                        mailbox,
                        min(s.cursor for s in behind),
                        self.page_entries,
                        self.page_bytes,
                        self.clock(),
                    )
                except RelayError:
                    page = None
                if page is not None:
                    self._offer_all((mailbox, seq, blob) for seq, blob in page.entries)
                    if page.more:
                        continue
                # The shared read is done up to the snapshot's head (or failed): whoever is
                # still behind what it read was not helped by it (its entries were
                # trimmed or expired, or the read failed) and catches up on its own, which
                # also handles those cases. Hints newer than the snapshot mean another
                # read, unless this one found nothing at all (say, a stale hint from before
                # the mailbox expired and was created again): then everyone falls back.
                empty = page is None or not page.entries
                reached = target if page is None or empty else min(target, page.head)
                for sub in behind:
                    if sub.live and sub.cursor < reached:
                        sub.hint(reached)
        except BaseException:
            self._hinted.pop(mailbox, None)
            raise

    def rotated(self, mailbox: bytes) -> None:
        """Keys changed (on any node, this one included): check every grant held here."""
        self._rotations[mailbox] = self._rotations.get(mailbox, 0) + 1
        self._spawn(self._recheck([mailbox]))

    def resync(self) -> None:
        """Notifications may have been missed: re-read every subscription from its cursor,
        and re-check every grant, since a missed rotation must not leave old keys working."""
        for subs in tuple(self._subs.values()):
            for sub in tuple(subs):
                sub.resync()
        for mailbox in tuple(self._grants):
            self._rotations[mailbox] = self._rotations.get(mailbox, 0) + 1
        self._spawn(self._recheck(list(self._grants)))

    def recheck_soon(self, mailbox: bytes) -> None:
        """Check the grants on ``mailbox`` against the stored keys, in the background."""
        self._spawn(self._recheck([mailbox]))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="relay-grant-recheck")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recheck(self, mailboxes: list[bytes]) -> None:
        """Revoke every grant proven with a key the mailbox no longer has."""
        for mailbox in mailboxes:
            try:
                keys = await self.store.get_keys(mailbox, self.clock())
            except RelayError:
                keys = None  # cannot confirm the grant: fail closed
            current = {} if keys is None else {"read": keys.read_key, "write": keys.write_key}
            for conn in tuple(self._grants.get(mailbox, ())):
                held = conn.grants.get(mailbox, {})
                if any(current.get(role) != key for role, key in held.items()):
                    conn.revoke(mailbox)
                    conns = self._grants.get(mailbox)
                    if conns is not None:
                        conns.discard(conn)

    def note_grant(self, conn: Connection, mailbox: bytes) -> None:
        self._grants.setdefault(mailbox, weakref.WeakSet()).add(conn)

    def forget(self, conn: Connection) -> None:
        """Drop a closed connection from the grant index."""
        for mailbox in conn.grants:
            conns = self._grants.get(mailbox)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self._grants[mailbox]

    def rotations(self, mailbox: bytes) -> int:
        """How often this node saw the mailbox's keys rotated (to spot a racing auth)."""
        return self._rotations.get(mailbox, 0)

    def revoke(self, mailbox: bytes) -> None:
        """The mailbox's keys changed: every connection must authenticate again."""
        self._rotations[mailbox] = self._rotations.get(mailbox, 0) + 1
        self.drop_grants(mailbox)

    def drop_grants(self, mailbox: bytes) -> None:
        """End every connection's access to ``mailbox`` (it was rotated or re-created)."""
        for conn in tuple(self._grants.pop(mailbox, ())):
            conn.revoke(mailbox)
