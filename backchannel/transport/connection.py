"""One logical connection to one relay that survives disconnects: :class:`RelayConnection`.

Theory of operation
-------------------
A :class:`RelayConnection` owns at most one live :class:`~.session.RelaySession` at a
time. A runner task connects, serves the session until it closes, then waits a
full-jitter exponential backoff (:class:`Backoff`) and connects again, forever,
until :meth:`RelayConnection.close`. Every change is reported as a
:class:`ConnectionState` event.

The caller registers capabilities (:meth:`~RelayConnection.register`) and follows
mailboxes (:meth:`~RelayConnection.follow`). On every new session, each followed
mailbox is set up again: ``auth`` read, a one-entry ``fetch`` to learn the head,
then ``subscribe`` from the highest sequence number already delivered to the
consumer. A head below that cursor means the relay lost entries (restored from a
backup): a :class:`Reset` event says so and the cursor moves down to the head, so
the entries the relay numbers next are not mistaken for old ones.

Ordering. Pushes become :class:`Entry` events, per mailbox strictly in sequence
order, each number at most once, across reconnects; the sequence numbers are the
relay's, and nothing the relay or a proxy does to the order of frames loses an
entry. A push at or below the delivered cursor is dropped (a duplicate, a replay,
a replaced subscription). A push above the next number is *held* (at most
:data:`HOLD_ENTRIES` per mailbox and :data:`HOLD_BYTES` in all, keeping the lowest
numbers; a relay cannot make the client hold more) while the gap before it stays
open: when the missing push arrives, it and the held ones that follow are
delivered. If it has not come :data:`GAP_WAIT` seconds later, a ``fetch`` from the
cursor fills the gap: the entries it returns are delivered, in order, merged with
the held ones, and numbers the relay's own answer says it no longer has (trimmed,
expired) are skipped, as the protocol defines, with a :class:`Skipped` event; a
head above the last entry is asked for twice before the cursor moves to it. A push
that later comes for a skipped number proves the relay withheld it: it is delivered
late (below the cursor, once) after a :class:`LateEntry` event. Pushed numbers that
the relay's fetches still do not know after :data:`FILL_ATTEMPTS` tries are
dropped: a relay that made them up gains nothing. A fill the relay refuses is
retried with backoff while the session lasts, and after :data:`FILL_ATTEMPTS`
refusals a :class:`GapOpen` event says so. Held entries end with their session:
the next one subscribes from the cursor again.

Bounds. Entries wait for the consumer in a queue of at most :data:`QUEUE_ENTRIES`
entries and :data:`QUEUE_BYTES` bytes (a page more while one is handed on):
reading a backlog stops at a page's end when it is full and goes on once the
consumer has taken some; a push it has no room for is held or fetched later. The
pump never waits for the consumer, so the session's own bounded queue drains and
answers to requests are read. A ``revoked`` frame starts at most one recovery per
mailbox; frames meanwhile make it run once more.

Generations. The relay's ``hello`` names its store's generation; a relay restored
from a backup starts a new one (``docs/relay-protocol.md`` §6) and numbers every
mailbox on above all it handed out before, so cursors stay valid. A session whose
generation differs from the last one seen is announced with a
:class:`GenerationChanged` event before its mailboxes are set up again (heads
checked, subscriptions from the cursors); the consumer tells its user that entries
may have been lost, and keeps :attr:`RelayConnection.generation` to hand back with
:meth:`~RelayConnection.expect_generation` after a restart.

The consumer calls :meth:`~RelayConnection.ack` once it
has processed an entry; that moves the acknowledged cursor and calls the
``on_ack`` callback, where the consumer persists it. Cursors survive only in the
consumer's storage: after a restart it follows again with ``after=`` its cursor.

Requests (``append``, ``create``, ``fetch``, ``trim``, ``rotate``) wait for a
session, authenticate what they need on it (once per session and role), and are
retried on connection loss, timeouts and transient refusals (``unavailable``,
``shutting_down``, ``internal``) with backoff, and after ``rate_limited`` once
``retry_after`` has passed. Appends always carry an idempotency key, so a retry
whose first attempt was stored gets ``duplicate`` instead of a second copy. Any
other refusal raises its :class:`~.errors.Rejected` subclass at once.

A ``revoked`` frame drops the mailbox's grants on that session and sets the mailbox
up again with the capability now registered (after :meth:`~RelayConnection.rotate`,
the new one). Only if that is refused for good does the consumer get a
:class:`Revoked` event, and the mailbox is no longer followed: ``rate_limited``
waits ``retry_after`` and tries again, transient refusals back off and try again,
and a lost answer (a timeout) closes the session so the next one sets every
mailbox up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl as ssl_module
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from relay.protocol import Push
from relay.protocol import Revoked as RevokedFrame

from .backoff import Backoff, full_jitter
from .capability import MailboxCapability, public_key_bytes
from .errors import (
    ConnectionClosed,
    Denied,
    MailboxExists,
    ProtocolMismatch,
    RateLimited,
    Rejected,
    TransportError,
    Unreachable,
)
from .events import (
    AlsoEntry,
    AppendResult,
    ConnectionState,
    Entry,
    FetchPage,
    GapOpen,
    GenerationChanged,
    LateEntry,
    LinkState,
    Reset,
    Revoked,
    Skipped,
    TransportEvent,
)
from .proxy import ProxySettings, parse_proxy_url, proxy_errors

if TYPE_CHECKING:
    import aiohttp
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from .session import RelaySession

# The WebSocket stack (aiohttp, and .session over it) loads when the connection starts,
# not with this module: the app reads and paints a profile's rooms before it connects,
# and importing aiohttp is about a fifth of a second of that.

__all__ = [
    "AlsoEntry",
    "AppendResult",
    "Backoff",
    "ConnectionState",
    "Entry",
    "FetchPage",
    "GapOpen",
    "GenerationChanged",
    "LateEntry",
    "LinkState",
    "RelayConnection",
    "Reset",
    "Revoked",
    "Skipped",
    "TransportEvent",
    "full_jitter",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
#: Idempotency keys are 8 to 32 bytes (docs/relay-protocol.md §7 append); ours are 16.
KEY_BYTES: Final = 16
#: Seconds a push that came ahead of a missing one waits for it before a fetch fills the gap.
GAP_WAIT: Final = 0.25
#: Fetches of a gap before pushed numbers the relay's own answers do not show are dropped.
FILL_ATTEMPTS: Final = 3
#: Early entries held per followed mailbox, and their bytes over all mailboxes.
HOLD_ENTRIES: Final = 256
HOLD_BYTES: Final = 8 * 1024 * 1024
#: Entries, and their bytes, queued for the consumer before reading more waits for it.
QUEUE_ENTRIES: Final = 2048
QUEUE_BYTES: Final = 16 * 1024 * 1024
#: Ranges of skipped numbers remembered per mailbox (to recognise a late push for one).
SKIPS_KEPT: Final = 64
#: The ``reason`` values of a ``revoked`` frame (docs/relay-protocol.md §8).
REVOKED_REASONS: Final = frozenset({"rotated", "expired", "unavailable"})


# -- the connection ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Follow:
    delivered: int  # highest seq queued for the consumer (none below it is still to come)
    acked: int  # highest seq the consumer acknowledged
    #: Pushes that came ahead of a missing one: seq -> blob (see the module docstring).
    held: dict[int, bytes] = field(default_factory=dict)
    held_bytes: int = 0
    #: The highest seq pushed on this session (the fill reads up to it).
    pushed: int = 0
    #: The task filling a gap, if one is open.
    filler: asyncio.Task[None] | None = None
    #: (a, b): no entry is numbered above a up to b, so once the consumer has
    #: acknowledged a, the cursor moves on to b (numbers trimmed, expired, or skipped by
    #: a restored relay: docs/relay-protocol.md §6).
    jump: tuple[int, int] | None = None
    #: The backlog was not read to its end: the consumer's queue was full (the filler
    #: reads on once it has room).
    behind: bool = False
    #: [first, last] ranges of numbers the cursor moved past without an entry (the
    #: latest SKIPS_KEPT): a push for one of them later proves the relay withheld it.
    skips: list[tuple[int, int]] = field(default_factory=list)

    def hold(self, seq: int, blob: bytes, room: int) -> None:
        """Keep an early entry, the lowest numbers first, within the limits."""
        if seq in self.held:
            return  # a duplicate of a held push: the first is kept (a fill's fetch wins)
        while self.held and (len(self.held) >= HOLD_ENTRIES or len(blob) > room):
            top = max(self.held)
            if top < seq:
                return  # full of lower numbers: this one is fetched when its turn comes
            room += len(self.held[top])
            self.release(top)
        if len(blob) <= room:
            self.held[seq] = blob
            self.held_bytes += len(blob)

    def release(self, seq: int) -> bytes:
        blob = self.held.pop(seq)
        self.held_bytes -= len(blob)
        return blob

    def clear(self) -> None:
        self.held.clear()
        self.held_bytes = 0
        self.pushed = self.delivered
        self.behind = False

    def skipped(self, first: int, last: int) -> None:
        self.skips.append((first, last))
        del self.skips[:-SKIPS_KEPT]

    def unskip(self, seq: int) -> bool:
        """Whether ``seq`` was skipped (and is no longer: it is delivered late, once)."""
        for i, (first, last) in enumerate(self.skips):
            if first <= seq <= last:
                parts = [(first, seq - 1), (seq + 1, last)]
                self.skips[i : i + 1] = [(a, b) for a, b in parts if a <= b]
                del self.skips[:-SKIPS_KEPT]
                return True
        return False


AckCallback = Callable[[bytes, int], Awaitable[None]]


class RelayConnection:
    """One relay URL, kept connected; see the module docstring.

    Use as ``async with RelayConnection(url) as conn:`` or :meth:`start` / :meth:`close`.

    Args:
        url: ``ws://`` or ``wss://host:port/v1/ws``.
        proxy: ``socks5h://host:port`` (Tor), ``socks5://…``, or parsed settings.
        ssl: an ``SSLContext`` for a ``wss://`` relay with a private CA.
        backoff: the reconnect policy (a default :class:`Backoff` otherwise).
        on_ack: awaited with ``(mailbox, seq)`` whenever the acknowledged cursor moves;
            persist it there.
        connect_timeout: seconds for one connection attempt, hello included.
        request_timeout: seconds for one request before the session is dropped.

    Raises:
        ValueError: the URL is not ``ws://`` or ``wss://``.
        InvalidProxyURL: the proxy URL is not a SOCKS5 URL.
    """

    def __init__(
        self,
        url: str,
        *,
        proxy: str | ProxySettings | None = None,
        ssl: ssl_module.SSLContext | None = None,
        backoff: Backoff | None = None,
        on_ack: AckCallback | None = None,
        connect_timeout: float = 10.0,
        request_timeout: float = 30.0,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError("the relay URL must start with ws:// or wss://")
        self.url = url
        self._proxy = parse_proxy_url(proxy) if isinstance(proxy, str) else proxy
        self._ssl = ssl
        self._backoff = backoff or Backoff()
        self._rng = random.Random()
        self._on_ack = on_ack
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._caps: dict[bytes, MailboxCapability] = {}
        self._follows: dict[bytes, _Follow] = {}
        self._locks: dict[bytes, asyncio.Lock] = {}
        self._events: asyncio.Queue[TransportEvent | None] = asyncio.Queue()
        #: Entries in ``_events`` (and ``_held``) and their bytes; see QUEUE_ENTRIES.
        self._queued_entries = 0
        self._queued_bytes = 0
        self._room = asyncio.Event()
        #: Per mailbox: the task setting it up again after a ``revoked`` frame, and the
        #: reason of a further frame that came meanwhile (one more round, not one more task).
        self._recovering: dict[bytes, asyncio.Task[None]] = {}
        self._recover_again: dict[bytes, str] = {}
        #: At most one event taken by ready_entries and not yet given out (None = closed).
        self._held: list[TransportEvent | None] = []
        self._session: RelaySession | None = None
        self._grants: dict[tuple[bytes, str], asyncio.Future[None]] = {}
        self._session_tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._state = ConnectionState(LinkState.OFFLINE)
        self._runner: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._closed = False
        self._generation: bytes | None = None

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background (returns at once)."""
        if self._runner is not None or self._closed:
            raise RuntimeError("a RelayConnection starts once")
        from .session import http_session

        connector = self._proxy.connector() if self._proxy is not None else None
        self._http = http_session(connector)
        self._runner = asyncio.create_task(self._run(), name="relay-connection")

    async def close(self) -> None:
        """Stop: close the session, end :meth:`events`, fail waiting requests."""
        if self._closed:
            return
        self._closed = True
        self._notify()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        self._set_state(LinkState.CLOSED)
        self._events.put_nowait(None)
        self._room.set()

    async def __aenter__(self) -> RelayConnection:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def state(self) -> ConnectionState:
        """The latest connection state."""
        return self._state

    async def wait_connected(self) -> None:
        """Return once the state is ``CONNECTED`` (followed mailboxes set up)."""
        while self._state.state is not LinkState.CONNECTED:
            if self._closed:
                raise ConnectionClosed("This relay connection was closed.")
            await self._wait_changed()

    # -- events -------------------------------------------------------------------------------

    async def next_event(self, timeout: float | None = None) -> TransportEvent:
        """The next event, in order.

        Raises:
            ConnectionClosed: the connection was closed and every event was read.
            TimeoutError: none came within ``timeout`` seconds.
        """
        if self._held:
            event = self._held.pop()
        else:
            async with asyncio.timeout(timeout):
                event = await self._events.get()
        if event is None:
            self._events.put_nowait(None)  # every later reader sees the end too
            raise ConnectionClosed("This relay connection was closed.")
        if isinstance(event, Entry):
            self._taken(event)
        if isinstance(event, Reset):
            follow = self._follows.get(event.mailbox)
            if follow is not None and follow.acked > event.head:
                follow.acked = event.head
                follow.jump = None
                if self._on_ack is not None:
                    await self._on_ack(event.mailbox, event.head)
        return event

    def ready_entries(self, limit: int) -> list[Entry]:
        """Up to ``limit`` entries that are already waiting, without waiting (may be empty).

        Lets a consumer handle a burst of entries in one go (one store transaction).
        Stops at the first event that is not an :class:`Entry`; :meth:`next_event`
        returns that one next.
        """
        out: list[Entry] = []
        while len(out) < limit and not self._held and not self._events.empty():
            event = self._events.get_nowait()
            if not isinstance(event, Entry):
                self._held.append(event)  # given out first by next_event
                break
            self._taken(event)
            out.append(event)
        return out

    def _taken(self, entry: Entry) -> None:
        self._queued_entries -= 1
        self._queued_bytes -= len(entry.blob)
        if not self._full():
            self._room.set()

    def _full(self) -> bool:
        return self._queued_entries >= QUEUE_ENTRIES or self._queued_bytes >= QUEUE_BYTES

    async def _wait_room(self) -> None:
        """Wait until the consumer's queue has room (never from the pump)."""
        while self._full() and not self._closed:
            self._room.clear()
            await self._room.wait()

    async def events(self) -> AsyncIterator[TransportEvent]:
        """Every event until the connection is closed."""
        while True:
            try:
                yield await self.next_event()
            except ConnectionClosed:
                return

    async def ack(self, mailbox: bytes, seq: int) -> None:
        """The consumer has processed ``mailbox`` up to ``seq``: move the cursor, call ``on_ack``."""
        follow = self._follows.get(mailbox)
        if follow is not None:
            if seq <= follow.acked:
                return
            if follow.jump is not None and seq >= follow.jump[0]:
                seq, follow.jump = max(seq, follow.jump[1]), None
            follow.acked = seq
        if self._on_ack is not None:
            await self._on_ack(mailbox, seq)

    def cursor(self, mailbox: bytes) -> int | None:
        """The acknowledged cursor of a followed mailbox (None if not followed)."""
        follow = self._follows.get(mailbox)
        return follow.acked if follow is not None else None

    @property
    def generation(self) -> bytes | None:
        """The relay store's generation id, from the latest ``hello`` (None: not yet seen,
        or a relay without generations)."""
        return self._generation

    def expect_generation(self, generation: bytes | None) -> None:
        """Compare the next session's generation with ``generation`` (one kept from an
        earlier run): a different one is a :class:`GenerationChanged` event."""
        if generation is not None:
            self._generation = generation

    # -- mailboxes ----------------------------------------------------------------------------

    def register(self, cap: MailboxCapability) -> bool:
        """Hold ``cap``'s keys for requests on its mailbox, next to the keys already held.

        Keys are added, never replaced: a mailbox's read, write and admin keys may
        come from different places (a room's own keys, a write key handed over for a
        reply), and none may displace another. Only :meth:`rotate` changes a key.

        Returns:
            False, changing nothing, if a key of ``cap`` differs from the one held for
            the same role (the conflict is logged, without ids); True otherwise.
        """
        return self._hold(cap, own=False)

    def holds(self, mailbox: bytes) -> bool:
        """Whether any key of ``mailbox`` is registered."""
        return mailbox in self._caps

    def unregister(self, cap: MailboxCapability) -> None:
        """Forget those of ``cap``'s keys that are the ones held (e.g. a reply's write key,
        once the reply is sent); the mailbox's other keys stay."""
        held = self._caps.get(cap.mailbox)
        if held is None:
            return
        keys: dict[str, Ed25519PrivateKey | None] = {}
        for role in _ROLES:
            mine, theirs = getattr(held, role), getattr(cap, role)
            same = mine is not None and theirs is not None and _same_key(mine, theirs)
            keys[role] = None if same else mine
        if all(k is None for k in keys.values()):
            del self._caps[cap.mailbox]
        else:
            self._caps[cap.mailbox] = MailboxCapability(cap.mailbox, **keys)

    def _hold(self, cap: MailboxCapability, *, own: bool) -> bool:
        """Merge ``cap`` into the keys held for its mailbox (see :meth:`register`).

        With ``own`` (the mailbox's own keys: :meth:`follow`, :meth:`create_mailbox`),
        a conflicting key held for another purpose is dropped and ``cap``'s kept: a
        write key handed over by someone else never outranks the keys a mailbox was
        made or followed with.
        """
        held = self._caps.get(cap.mailbox)
        if held is None:
            self._caps[cap.mailbox] = cap
            return True
        keys: dict[str, Ed25519PrivateKey | None] = {}
        for role in _ROLES:
            mine, theirs = getattr(held, role), getattr(cap, role)
            if mine is not None and theirs is not None and not _same_key(mine, theirs):
                if not own:
                    _log.warning("a %s key for a mailbox already held was refused", role)
                    return False
                _log.warning("a conflicting %s key was replaced by the mailbox's own", role)
                self._grants.pop((cap.mailbox, role), None)
                mine = None
            keys[role] = theirs if mine is None else mine
        self._caps[cap.mailbox] = MailboxCapability(cap.mailbox, **keys)
        return True

    async def follow(self, cap: MailboxCapability, after: int = 0) -> None:
        """Receive ``cap``'s mailbox entries after ``after``, now and after every reconnect.

        Following a mailbox already followed only adds ``cap``'s keys. ``cap`` holds the
        mailbox's own keys: a conflicting key registered for another purpose gives way.

        Raises:
            ValueError: ``cap`` has no read key.
            Rejected: while connected, the relay refused (``Denied``, …); not followed.
                While offline this returns at once and a refusal later is a
                :class:`Revoked` event.
        """
        if cap.read is None:
            raise ValueError("following a mailbox needs its read key")
        self._hold(cap, own=True)
        if cap.mailbox in self._follows:
            return
        self._follows[cap.mailbox] = _Follow(after, after)
        session = self._session
        if session is not None and not session.closed:
            await self._setup_follow(session, cap.mailbox, reason=None, raise_refusal=True)

    async def unfollow(self, mailbox: bytes) -> None:
        """Stop receiving a mailbox (entries already queued are still delivered)."""
        if self._follows.pop(mailbox, None) is None:
            return
        session = self._session
        if session is not None:
            # If this fails, the next session does not subscribe it; pushes are dropped.
            with contextlib.suppress(TransportError, TimeoutError):
                await session.call("unsubscribe", mailbox=mailbox, timeout=self._request_timeout)

    async def create_mailbox(
        self, cap: MailboxCapability, *, ttl: int | None = None, timeout: float | None = None
    ) -> int | None:
        """Create ``cap``'s mailbox on the relay and register ``cap``.

        Returns:
            The TTL the mailbox got, or None when a lost answer was recovered (the
            retry said ``exists`` and ``cap``'s write key authenticates).

        Raises:
            MailboxExists: the id is taken. Other :class:`Rejected` as the relay says.
        """

        async def attempt(session: RelaySession, lost: bool) -> int | None:
            try:
                fields = await session.create(cap, ttl=ttl)
            except MailboxExists as exists:
                if not lost or cap.write is None:
                    raise
                try:
                    await session.auth(cap, "write")  # our lost attempt created it?
                except Denied:
                    raise exists from None  # no: someone else's mailbox
                return None
            return int(fields["ttl"]) if "ttl" in fields else None

        result = await self._request((), attempt, timeout)
        self._hold(cap, own=True)
        return result

    async def rotate(
        self, cap: MailboxCapability, new: MailboxCapability, *, timeout: float | None = None
    ) -> None:
        """Replace the mailbox's keys with ``new``'s, signed by ``cap.admin``; then use ``new``.

        Raises:
            ValueError: ``new`` names another mailbox, or ``cap`` has no admin key.
            Rejected: as the relay says (``Denied``: ``cap`` is not current).
        """
        if new.mailbox != cap.mailbox or new.write is None or new.read is None:
            raise ValueError("the new capability needs the same mailbox and a read and write key")
        if cap.admin is None:
            raise ValueError("rotating needs the current admin key")

        async def attempt(session: RelaySession, lost: bool) -> None:
            try:
                await session.rotate(cap, new)
            except Denied:
                if not lost:
                    raise
                await session.auth(new, "write")  # the lost attempt did rotate

        async with self._lock(cap.mailbox):  # a revoked frame's recovery waits for the new keys
            await self._request((), attempt, timeout)
            self._caps[cap.mailbox] = new  # the one place a mailbox's keys are replaced
            for role in ("read", "write"):
                self._grants.pop((cap.mailbox, role), None)

    async def append(
        self,
        mailbox: bytes,
        blob: bytes,
        key: bytes | None = None,
        *,
        epoch: int | None = None,
        also: Sequence[AlsoEntry] = (),
        ttl: int | None = None,
        timeout: float | None = None,
    ) -> AppendResult:
        """Append ``blob``, waiting for the relay and retrying transient failures.

        Args:
            mailbox: a registered mailbox with a write key.
            blob: the content.
            key: the idempotency key (8 to 32 bytes); a random one if None. Retries reuse it.
            epoch: compare-and-set epoch.
            also: further entries written atomically (their mailboxes registered too).
            ttl: the entry's own TTL in seconds.
            timeout: give up after this many seconds (None: wait for the relay forever).

        Returns:
            The relay's answer.

        Raises:
            StaleEpoch, TooLarge, MailboxFull, Denied, …: refused; do not retry unchanged.
            Unreachable: ``timeout`` passed first. ConnectionClosed: closed meanwhile.
        """
        key = os.urandom(KEY_BYTES) if key is None else key
        if not 8 <= len(key) <= 32:
            raise ValueError("an idempotency key is 8 to 32 bytes")
        fields: dict[str, Any] = {"mailbox": mailbox, "blob": blob, "key": key}
        if epoch is not None:
            fields["epoch"] = epoch
        if ttl is not None:
            fields["ttl"] = ttl
        if also:
            fields["also"] = [e.wire() for e in also]
        targets = {mailbox, *(e.mailbox for e in also)}

        async def attempt(session: RelaySession, lost: bool) -> AppendResult:
            answer = await session.call("append", timeout=self._request_timeout, **fields)
            return AppendResult(
                int(answer["seq"]),
                key,
                bool(answer.get("duplicate", False)),
                answer.get("epoch"),
                tuple(int(s) for s in answer.get("also", ())),
            )

        return await self._request([(m, "write") for m in targets], attempt, timeout)

    async def fetch(
        self,
        mailbox: bytes,
        after: int = 0,
        *,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> FetchPage:
        """Read one page of a registered mailbox after ``after`` (no cursor changes)."""
        extra = {} if limit is None else {"limit": limit}

        async def attempt(session: RelaySession, lost: bool) -> FetchPage:
            page = await session.call(
                "fetch", mailbox=mailbox, after=after, timeout=self._request_timeout, **extra
            )
            entries = tuple((int(s), bytes(b)) for s, b in page["entries"])
            return FetchPage(entries, int(page["head"]), bool(page["more"]))

        return await self._request([(mailbox, "read")], attempt, timeout)

    async def trim(self, mailbox: bytes, through: int, *, timeout: float | None = None) -> int:
        """Delete the mailbox's entries up to ``through``; returns how many were deleted."""

        async def attempt(session: RelaySession, lost: bool) -> int:
            answer = await session.call(
                "trim", mailbox=mailbox, through=through, timeout=self._request_timeout
            )
            return int(answer["deleted"])

        return await self._request([(mailbox, "read")], attempt, timeout)

    # -- requests -----------------------------------------------------------------------------

    async def _request(
        self,
        needs: Sequence[tuple[bytes, str]],
        attempt: Callable[[RelaySession, bool], Awaitable[_T]],
        timeout: float | None,
    ) -> _T:
        for mailbox, role in needs:
            self._key_for(mailbox, role)  # a usage error surfaces before any waiting
        if timeout is None:
            return await self._retrying(needs, attempt)
        try:
            async with asyncio.timeout(timeout):
                return await self._retrying(needs, attempt)
        except TimeoutError:
            raise Unreachable(f"The relay did not answer within {timeout:g} s.") from None

    async def _retrying(
        self,
        needs: Sequence[tuple[bytes, str]],
        attempt: Callable[[RelaySession, bool], Awaitable[_T]],
    ) -> _T:
        stale: RelaySession | None = None
        lost = reauthenticated = False
        failures = 0
        while True:
            session = await self._wait_session(stale)
            try:
                for mailbox, role in needs:
                    await self._ensure_auth(session, mailbox, role)
                return await attempt(session, lost)
            except RateLimited as exc:
                await asyncio.sleep(exc.retry_after if exc.retry_after is not None else 1.0)
            except Denied:
                if reauthenticated or not needs:
                    raise
                reauthenticated = True  # the grant may have been revoked under us: once more
                for mailbox, role in needs:
                    self._grants.pop((mailbox, role), None)
            except Rejected as exc:
                if not exc.transient:
                    raise
                failures += 1
                await asyncio.sleep(self._jitter(failures))
            except TimeoutError:  # a request hung: drop the session, retry on the next
                lost, stale = True, session
                await session.close()
            except (Unreachable, ProtocolMismatch):  # the session is gone: the next one
                lost, stale = True, session

    def _jitter(self, failures: int) -> float:
        return full_jitter(failures, base=self._backoff.base, cap=self._backoff.cap, rng=self._rng)

    def _key_for(self, mailbox: bytes, role: str) -> MailboxCapability:
        cap = self._caps.get(mailbox)
        if cap is None or (cap.read if role == "read" else cap.write) is None:
            raise ValueError(f"no {role} capability is registered for this mailbox")
        return cap

    async def _ensure_auth(self, session: RelaySession, mailbox: bytes, role: str) -> None:
        if session is not self._session:
            raise Unreachable("The relay connection closed.")
        grant = self._grants.get((mailbox, role))
        if grant is None:
            cap = self._key_for(mailbox, role)
            grant = asyncio.ensure_future(session.auth(cap, role))
            self._grants[(mailbox, role)] = grant

            def done(fut: asyncio.Future[None], slot: tuple[bytes, str] = (mailbox, role)) -> None:
                failed = fut.cancelled() or fut.exception() is not None
                if failed and self._grants.get(slot) is fut:
                    del self._grants[slot]

            grant.add_done_callback(done)
        await asyncio.shield(grant)

    async def _wait_session(self, stale: RelaySession | None) -> RelaySession:
        if self._runner is None:
            raise RuntimeError("start the RelayConnection first")
        while True:
            if self._closed:
                raise ConnectionClosed("This relay connection was closed.")
            session = self._session
            if session is not None and session is not stale and not session.closed:
                return session
            await self._wait_changed()

    async def _wait_changed(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _lock(self, mailbox: bytes) -> asyncio.Lock:
        return self._locks.setdefault(mailbox, asyncio.Lock())

    def _set_state(
        self, state: LinkState, attempt: int = 0, retry_in: float | None = None, detail: str = ""
    ) -> None:
        self._state = ConnectionState(state, attempt, retry_in, detail)
        self._events.put_nowait(self._state)
        self._notify()
        _log.info("relay connection %s (attempt %d)", state.value, attempt)

    # -- the runner ---------------------------------------------------------------------------

    async def _run(self) -> None:
        from .session import RelaySession

        assert self._http is not None
        proxy_failures = proxy_errors()
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            self._set_state(LinkState.CONNECTING, attempt)
            try:
                session = await RelaySession.connect(
                    self.url, http=self._http, timeout=self._connect_timeout, ssl=self._ssl
                )
            except TransportError as exc:
                detail = str(exc)
            except proxy_failures as exc:
                detail = f"Cannot reach the relay through the proxy: {exc.__class__.__name__}."
            except Exception as exc:  # the reconnect loop must outlive anything one attempt does
                _log.error("relay connection attempt failed: %s", exc.__class__.__name__)
                detail = f"Cannot reach the relay: {exc.__class__.__name__}."
            else:
                if self._closed:  # close() ran while this attempt was connecting
                    await session.close()
                    return
                self._backoff.connected(loop.time())
                await self._serve(session)
                attempt, detail = 0, "The connection to the relay was lost."
            delay = self._backoff.next_delay(loop.time())
            self._set_state(LinkState.OFFLINE, attempt, delay, detail)
            await asyncio.sleep(delay)

    async def _serve(self, session: RelaySession) -> None:
        self._grants = {}
        self._recovering, self._recover_again = {}, {}
        self._session = session
        self._notify()
        generation = session.hello.generation if session.hello is not None else None
        if generation is not None:
            if self._generation is not None and generation != self._generation:
                _log.warning("the relay's store is in a new generation (restored from a backup)")
                self._events.put_nowait(GenerationChanged(self._generation, generation))
            self._generation = generation
        pump = asyncio.create_task(self._pump(session), name="relay-connection-pump")
        try:
            writable = [m for m, cap in self._caps.items() if cap.write is not None]
            await asyncio.gather(
                *(self._setup_follow(session, m, reason=None) for m in list(self._follows)),
                *(self._ensure_auth(session, m, "write") for m in writable),
                return_exceptions=True,  # a refused write grant is the appender's to report
            )
            if not session.closed:
                self._set_state(LinkState.CONNECTED)
            await pump
        finally:
            self._session = None
            self._notify()
            tasks = [pump, *self._session_tasks]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for grant in self._grants.values():
                grant.cancel()
            self._grants = {}
            await session.close()

    async def _pump(self, session: RelaySession) -> None:
        # Never waits on anything but the session: frames are handled at once (a push
        # the consumer has no room for is held or fetched later), so the session's
        # bounded queue drains and answers behind the pushes are read.
        while (frame := await session.next_frame()) is not None:
            self._on_frame(session, frame)

    def _on_frame(self, session: RelaySession, frame: object) -> None:
        if isinstance(frame, Push):
            self._on_push(session, frame)
        elif isinstance(frame, RevokedFrame):
            # The reason is the relay's text: only the documented ones pass (§8), and
            # anything else reads as "rotated", so no relay string reaches an event or a log.
            reason = frame.reason if frame.reason in REVOKED_REASONS else "rotated"
            if reason != "unavailable":
                for role in ("read", "write"):
                    self._grants.pop((frame.mailbox, role), None)
            if frame.mailbox not in self._follows:
                return
            running = self._recovering.get(frame.mailbox)
            if running is not None and not running.done():
                # One recovery per mailbox: it runs once more when done, whatever the
                # number of frames meanwhile.
                self._recover_again[frame.mailbox] = reason
                return
            task = asyncio.create_task(self._recover(session, frame.mailbox, reason))
            self._recovering[frame.mailbox] = task
            self._session_tasks.add(task)
            task.add_done_callback(self._session_tasks.discard)

    # -- ordering (see the module docstring) --------------------------------------------------

    def _on_push(self, session: RelaySession, push: Push) -> None:
        follow = self._follows.get(push.mailbox)
        if follow is None:
            return
        if push.seq <= follow.delivered:
            if follow.unskip(push.seq):
                # A fetch answer said no entry has this number: the relay withheld it.
                _log.warning("the relay pushed an entry its fetch answer had left out")
                self._events.put_nowait(LateEntry(push.mailbox, push.seq))
                self._deliver(push.mailbox, follow, push.seq, push.blob, late=True)
            return  # delivered already (a duplicate, a replaced subscription)
        follow.pushed = max(follow.pushed, push.seq)
        if push.seq == follow.delivered + 1 and not self._full():
            self._deliver(push.mailbox, follow, push.seq, push.blob)
            self._drain(push.mailbox, follow)
        else:  # early, or the consumer's queue is full: held, or fetched later
            held = sum(f.held_bytes for f in self._follows.values())
            follow.hold(push.seq, push.blob, HOLD_BYTES - held)
        if follow.pushed > follow.delivered:
            self._start_fill(session, push.mailbox, follow)

    def _start_fill(self, session: RelaySession, mailbox: bytes, follow: _Follow) -> None:
        if follow.filler is None:
            task = asyncio.create_task(self._fill(session, mailbox, follow))
            follow.filler = task
            self._session_tasks.add(task)
            task.add_done_callback(self._session_tasks.discard)

    def _deliver(
        self, mailbox: bytes, follow: _Follow, seq: int, blob: bytes, *, late: bool = False
    ) -> None:
        if not late:
            follow.delivered = seq
        self._queued_entries += 1
        self._queued_bytes += len(blob)
        self._events.put_nowait(Entry(mailbox, seq, blob))

    def _drain(self, mailbox: bytes, follow: _Follow) -> None:
        """Deliver the held entries that now follow the cursor without a gap."""
        while follow.delivered + 1 in follow.held:
            seq = follow.delivered + 1
            self._deliver(mailbox, follow, seq, follow.release(seq))
        for seq in [s for s in follow.held if s <= follow.delivered]:
            follow.release(seq)

    async def _fill(self, session: RelaySession, mailbox: bytes, follow: _Follow) -> None:
        """Close the gap before ``follow``'s held pushes (wait for the late ones, then
        fetch), or read on a backlog left for want of room in the consumer's queue.

        Refused fetches are retried with backoff for as long as the session lasts (the
        next one sets the mailbox up again); after FILL_ATTEMPTS of them in a row, a
        :class:`GapOpen` event says the gap stays open.
        """
        failures = strikes = 0
        suspects: set[int] = set()
        delay = GAP_WAIT
        told = False
        try:
            while True:
                await asyncio.sleep(delay)
                delay = GAP_WAIT
                await self._wait_room()
                async with self._lock(mailbox):
                    if self._follows.get(mailbox) is not follow or session is not self._session:
                        return
                    if follow.pushed <= follow.delivered and not follow.behind:
                        return  # the missing pushes came
                    try:
                        await self._catch_up(session, mailbox, follow)
                    except Rejected as exc:
                        failures += 1
                        if failures >= FILL_ATTEMPTS and not told:
                            told = True
                            _log.warning("the relay refuses to fill a gap (%s)", exc.code)
                            self._events.put_nowait(
                                GapOpen(mailbox, follow.delivered, follow.pushed)
                            )
                        if isinstance(exc, RateLimited) and exc.retry_after is not None:
                            delay = max(exc.retry_after, GAP_WAIT)
                        else:
                            delay = self._jitter(failures) + GAP_WAIT
                        continue
                    failures = 0
                    if follow.behind or follow.pushed <= follow.delivered:
                        continue  # read on once there is room / done
                    # Read to the relay's head, and still pushes above it are held: a
                    # push may have overtaken its entry's commit in that read, so only
                    # those held through FILL_ATTEMPTS reads in a row are dropped.
                    suspects = set(follow.held) if not strikes else suspects & set(follow.held)
                    strikes += 1
                    if strikes >= FILL_ATTEMPTS:
                        _log.info("dropped pushes above the relay's head")
                        for seq in suspects:
                            follow.release(seq)
                        follow.pushed = max(follow.held, default=follow.delivered)
                        strikes = 0
        except (Unreachable, ProtocolMismatch):
            return  # the session is gone; the next one subscribes from the cursor
        except TimeoutError:
            await session.close()  # an answer was lost: the next session reads on
        finally:
            if follow.filler is asyncio.current_task():
                follow.filler = None

    async def _catch_up(
        self, session: RelaySession, mailbox: bytes, follow: _Follow, *, setup: bool = False
    ) -> None:
        """Fetch from the cursor to the end of the mailbox, delivering in order.

        With ``setup`` (a new subscription follows), a head behind the cursor is a
        :class:`Reset` first. The cursor moves past the numbers a page covers without
        an entry (a :class:`Skipped` event): below its last entry, and up to the head
        once a second answer has confirmed that head (one lying answer moves nothing).
        When the consumer's queue is full, reading stops at a page's end and the filler
        reads on once it has room.
        """
        while True:
            after = follow.delivered
            page = _fetch_page(
                await session.call(
                    "fetch", mailbox=mailbox, after=after, timeout=self._request_timeout
                )
            )
            if setup and page.head < after:
                # The relay rolled back and numbers on from where it was then, so the
                # entries it has numbered since cannot be told from the ones read
                # before: read all it still has again. The consumer's own checks
                # (MLS generations, (sender, id)) drop what it already had.
                self._events.put_nowait(Reset(mailbox, after, page.head))
                follow.delivered = follow.pushed = follow.acked = 0
                follow.jump = None
                follow.skips.clear()
                setup = False
                continue
            setup = False
            # The page covers (after, top], and (top, head] when it is the last: a number
            # in there that it does not hold was trimmed, has expired or lies below a
            # restore floor, as the relay says (a lie shows when it is pushed later).
            top = page.entries[-1][0] if page.entries else after
            confirm: FetchPage | None = None
            if not page.more and page.head > top:
                # A head no entry confirms: asked once more before anything is skipped
                # to it, so that one lying answer moves nothing.
                confirm = _fetch_page(
                    await session.call(
                        "fetch", mailbox=mailbox, after=top, timeout=self._request_timeout
                    )
                )
            fetched = dict(page.entries)
            for seq in sorted(fetched.keys() | {s for s in follow.held if s <= top}):
                if seq > follow.delivered:
                    if seq > follow.delivered + 1:
                        follow.skipped(follow.delivered + 1, seq - 1)
                        self._events.put_nowait(Skipped(mailbox, follow.delivered + 1, seq - 1))
                    # The relay's answer wins over a held push with the same number.
                    blob = fetched[seq] if seq in fetched else follow.held[seq]
                    self._deliver(mailbox, follow, seq, blob)
            self._drain(mailbox, follow)
            if confirm is not None and confirm.entries:
                continue  # entries came meanwhile: read on from the cursor
            if not page.more:
                head = min(page.head, confirm.head) if confirm is not None else page.head
                last = follow.delivered
                if head > last:
                    follow.skipped(last + 1, head)
                    self._events.put_nowait(Skipped(mailbox, last + 1, head))
                    follow.delivered = head
                    if follow.acked >= last:
                        await self.ack(mailbox, head)
                    else:
                        follow.jump = (last, head)
                    self._drain(mailbox, follow)
                follow.behind = False
                return
            if self._full():
                follow.behind = True
                self._start_fill(session, mailbox, follow)
                return

    async def _recover(self, session: RelaySession, mailbox: bytes, reason: str) -> None:
        while True:
            if reason == "unavailable":  # the store failed while catching up: later, same cursor
                await asyncio.sleep(self._jitter(1))
            await self._setup_follow(session, mailbox, reason=reason)
            again = self._recover_again.pop(mailbox, None)
            if again is None or session is not self._session:
                return
            reason = again

    async def _setup_follow(
        self,
        session: RelaySession,
        mailbox: bytes,
        reason: str | None,
        *,
        raise_refusal: bool = False,
    ) -> None:
        """Authenticate, check the head against the cursor, read on to the head, subscribe.

        ``rate_limited`` waits its ``retry_after`` and tries again, as do transient
        refusals (with backoff). A lost answer closes the session: the next one sets
        every mailbox up again. A permanent refusal unfollows the mailbox and raises
        (``raise_refusal``, for :meth:`follow`) or becomes a :class:`Revoked` event
        with ``reason`` (the relay's ``revoked`` reason) or else the refusal's code.
        """
        failures = 0
        async with self._lock(mailbox):
            while mailbox in self._follows and session is self._session:
                follow = self._follows[mailbox]
                try:
                    await self._ensure_auth(session, mailbox, "read")
                    # The backlog is read with fetch, to its last entry (so the cursor
                    # moves past numbers no entry has below it); the subscription pushes
                    # the rest.
                    follow.clear()
                    await self._catch_up(session, mailbox, follow, setup=True)
                    await session.call(
                        "subscribe",
                        mailbox=mailbox,
                        after=follow.delivered,
                        timeout=self._request_timeout,
                    )
                    return
                except (Unreachable, ProtocolMismatch):
                    return  # the next session sets it up again
                except TimeoutError:
                    # The answer was lost (or never sent): this session would say
                    # connected and deliver nothing of the mailbox. Drop it, as a
                    # request does; the next session sets every mailbox up again.
                    _log.info("a relay request timed out while following a mailbox")
                    await session.close()
                    return
                except RateLimited as exc:
                    failures += 1
                    wait = exc.retry_after if exc.retry_after is not None else 0.0
                    await asyncio.sleep(max(wait, self._jitter(failures)))
                    continue
                except Rejected as exc:
                    if exc.transient:
                        failures += 1
                        await asyncio.sleep(self._jitter(failures))
                        continue
                    del self._follows[mailbox]
                    if raise_refusal:
                        raise
                    self._events.put_nowait(Revoked(mailbox, reason or exc.code))
                    return


_ROLES: Final = ("read", "write", "admin")


def _same_key(a: Ed25519PrivateKey, b: Ed25519PrivateKey) -> bool:
    return public_key_bytes(a) == public_key_bytes(b)


def _fetch_page(answer: dict[str, Any]) -> FetchPage:
    """A ``fetch`` answer as a page. The session checked it (``relay.protocol.decode_answer``):
    numbers increasing from the request's ``after`` up to ``head``, and entries when
    ``more`` is set; a bad answer closed the session instead."""
    entries = tuple((int(seq), bytes(blob)) for seq, blob in answer["entries"])
    return FetchPage(entries, int(answer["head"]), bool(answer["more"]))
