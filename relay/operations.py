"""What each request does: capability checks, limits, then one store call.

Every function here either returns the answer's fields or raises a
:class:`~relay.errors.RelayError`; none of them writes anything before all checks pass.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from .capabilities import check_public_key, signature_valid
from .config import Admission, RelayConfig
from .connection import Connection
from .errors import (
    CapabilityDenied,
    FieldInvalid,
    MailboxExists,
    RateLimited,
    ShuttingDown,
    StoreFull,
    TooLarge,
    TooManySubscriptions,
)
from .hub import Hub
from .metrics import RelayMetrics
from .protocol import (
    Append,
    Auth,
    Create,
    Entry,
    Fetch,
    Ping,
    Request,
    Role,
    Rotate,
    Subscribe,
    Trim,
    Unsubscribe,
    auth_message,
    rotate_message,
)
from .store.base import MailboxKeys, MailboxStore, NewEntry

__all__ = ["Operations"]

Result = dict[str, Any]


class Operations:
    """The relay's request handlers, shared by every connection of one app."""

    def __init__(
        self,
        config: RelayConfig,
        store: MailboxStore,
        hub: Hub,
        metrics: RelayMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.limits = config.limits
        self.store = store
        self.hub = hub
        self.metrics = metrics
        self.clock = clock
        self.shutting_down = False
        #: Mailboxes created so far under each admission token (see ``RelayConfig.admission``).
        self.admitted: Counter[str] = Counter()
        self._table: dict[type[Any], Callable[[Connection, Any], Awaitable[Result]]] = {
            Create: self.create,
            Auth: self.auth,
            Append: self.append,
            Fetch: self.fetch,
            Subscribe: self.subscribe,
            Unsubscribe: self.unsubscribe,
            Trim: self.trim,
            Rotate: self.rotate,
            Ping: self.ping,
        }

    async def handle(self, conn: Connection, request: Request) -> Result:
        """Run one decoded request for ``conn``; raises ``RelayError`` to refuse it."""
        if self.shutting_down and not isinstance(request, Ping):
            raise ShuttingDown()
        if isinstance(request, Auth | Fetch | Subscribe | Trim | Rotate):
            self._request_rate(conn)
        return await self._table[type(request)](conn, request)

    # -- helpers ------------------------------------------------------------------------------

    def _require(self, conn: Connection, mailbox: bytes, role: Role) -> None:
        if not conn.granted(mailbox, role):
            raise CapabilityDenied()

    def _ttl(self, ttl: int | None) -> int | None:
        if ttl is not None and ttl > self.config.max_ttl:
            raise FieldInvalid(
                f"The ttl exceeds this relay's maximum of {self.config.max_ttl} seconds."
            )
        return ttl

    def _rate(self, conn: Connection, count: int = 1) -> None:
        wait = conn.bucket.take(time.monotonic(), count)
        if wait:
            raise RateLimited(wait)

    def _request_rate(self, conn: Connection) -> None:
        wait = conn.request_bucket.take(time.monotonic())
        if wait:
            raise RateLimited(wait, "Too many requests on this connection; slow down and retry.")

    async def _timed(self, op: str, awaitable: Awaitable[Any]) -> Any:
        start = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.metrics.latency(op).observe(time.perf_counter() - start)

    # -- operations ---------------------------------------------------------------------------

    async def _admit(self, conn: Connection, mailbox: bytes) -> Admission | None:
        """The admission this creation counts against; raises if it may not create.

        Returns None when the relay admits anyone, or the token has no quota. A
        mailbox that exists reads ``exists`` to everyone, as on a relay that admits
        anyone (a room's next mailbox, opened by another member first); its id is
        random, so this tells a stranger nothing.
        """
        if not self.config.admission:
            return None
        admission = conn.admission
        if admission is not None and (
            admission.creates is None or self.admitted[admission.token] < admission.creates
        ):
            return None if admission.creates is None else admission
        if await self.store.get_keys(mailbox, self.clock()) is not None:
            raise MailboxExists()
        if admission is None:
            raise CapabilityDenied(
                "This relay opens mailboxes only for the people invited to it; use the "
                "relay address of your invite link."
            )
        raise StoreFull(
            "This relay has opened as many mailboxes for its invited guests as it allows."
        )

    async def create(self, conn: Connection, req: Create) -> Result:
        check_public_key(req.read_key, "read_key")
        check_public_key(req.write_key, "write_key")
        if req.admin_key is not None:
            check_public_key(req.admin_key, "admin_key")
        ttl = self._ttl(req.ttl) or self.config.default_ttl
        self._rate(conn)
        counted = await self._admit(conn, req.mailbox)
        keys = MailboxKeys(req.read_key, req.write_key, req.admin_key or req.write_key)
        if counted is not None:
            self.admitted[counted.token] += 1  # before the await: concurrent creates count
        try:
            await self._timed(
                "create", self.store.create_mailbox(req.mailbox, keys, ttl, self.clock())
            )
        except BaseException:
            if counted is not None:
                self.admitted[counted.token] -= 1
            raise
        # The id may have belonged to an expired mailbox: its old grants must not carry over.
        self.hub.drop_grants(req.mailbox)
        return {"ttl": ttl}

    async def auth(self, conn: Connection, req: Auth) -> Result:
        if req.mailbox not in conn.grants and len(conn.grants) >= 2 * self.limits.max_subscriptions:
            raise TooManySubscriptions(
                "This connection has authenticated to as many mailboxes as allowed."
            )
        now = self.clock()
        rotations = self.hub.rotations(req.mailbox)
        keys = await self._timed("get_keys", self.store.get_keys(req.mailbox, now))
        key = None if keys is None else keys.read_key if req.role == "read" else keys.write_key
        if key is None or not signature_valid(
            key, req.sig, auth_message(conn.nonce, req.role, req.mailbox)
        ):
            raise CapabilityDenied()
        conn.grant(req.mailbox, req.role, key)
        self.hub.note_grant(conn, req.mailbox)
        if self.hub.rotations(req.mailbox) != rotations:
            # The keys may have changed while we read them (possibly our own rotation's
            # notice coming back): check this grant against the stored keys again.
            self.hub.recheck_soon(req.mailbox)
        # Use keeps a mailbox alive; the write is skipped when the rounded expiry is unchanged.
        await self._timed("touch", self.store.touch(req.mailbox, now))
        return {}

    def _entry(self, entry: Entry) -> NewEntry:
        if len(entry.blob) > self.limits.max_blob_bytes:
            raise TooLarge(f"A blob may be at most {self.limits.max_blob_bytes} bytes.")
        return NewEntry(entry.mailbox, entry.blob, entry.key, self._ttl(entry.ttl))

    async def append(self, conn: Connection, req: Append) -> Result:
        if len(req.also) > self.limits.max_also:
            raise FieldInvalid(f"An append may carry at most {self.limits.max_also} extra entries.")
        entries = [self._entry(req.entry), *(self._entry(e) for e in req.also)]
        for entry in entries:
            self._require(conn, entry.mailbox, "write")
        self._rate(conn, len(entries))
        results = await self._timed("append", self.store.append(entries, req.epoch, self.clock()))
        main = results[0]
        answer: Result = {"seq": main.seq}
        if main.duplicate:
            answer["duplicate"] = True
        if req.epoch is not None:
            answer["epoch"] = main.epoch
        if req.also:
            answer["also"] = [r.seq for r in results[1:]]
        return answer

    async def fetch(self, conn: Connection, req: Fetch) -> Result:
        self._require(conn, req.mailbox, "read")
        limit = min(req.limit or self.limits.max_fetch, self.limits.max_fetch)
        page = await self._timed(
            "fetch",
            self.store.fetch(
                req.mailbox, req.after, limit, self.limits.max_fetch_bytes, self.clock()
            ),
        )
        return {
            "entries": [[seq, blob] for seq, blob in page.entries],
            "head": page.head,
            "more": page.more,
        }

    async def subscribe(self, conn: Connection, req: Subscribe) -> Result:
        self._require(conn, req.mailbox, "read")
        old = conn.subscriptions.pop(req.mailbox, None)
        if old is not None:
            old.close()
        elif len(conn.subscriptions) >= self.limits.max_subscriptions:
            raise TooManySubscriptions()
        conn.subscriptions[req.mailbox] = self.hub.subscribe(conn, req.mailbox, req.after)
        return {}

    async def unsubscribe(self, conn: Connection, req: Unsubscribe) -> Result:
        sub = conn.subscriptions.pop(req.mailbox, None)
        if sub is not None:
            sub.close()
        return {}

    async def trim(self, conn: Connection, req: Trim) -> Result:
        self._require(conn, req.mailbox, "read")
        deleted = await self._timed("trim", self.store.trim(req.mailbox, req.through))
        return {"deleted": deleted}

    async def rotate(self, conn: Connection, req: Rotate) -> Result:
        check_public_key(req.read_key, "read_key")
        check_public_key(req.write_key, "write_key")
        if req.admin_key is not None:
            check_public_key(req.admin_key, "admin_key")
        new = MailboxKeys(req.read_key, req.write_key, req.admin_key or req.write_key)
        keys = await self._timed("get_keys", self.store.get_keys(req.mailbox, self.clock()))
        message = rotate_message(
            conn.nonce, req.mailbox, new.read_key, new.write_key, new.admin_key
        )
        if keys is None or not signature_valid(keys.admin_key, req.sig, message):
            raise CapabilityDenied()
        await self._timed("rotate", self.store.rotate(req.mailbox, new))
        # Everyone, this connection included, must prove the new keys from now on.
        self.hub.revoke(req.mailbox)
        conn.grants.pop(req.mailbox, None)
        return {}

    async def ping(self, conn: Connection, req: Ping) -> Result:
        return {}
