"""Honest and hostile members interleaved: what a device stores is keyed by (author, id).

Sans-IO senders, a real receiving device: ``fac`` and ``ben`` (honest) and ``mal``
(a modified client that encrypts whatever it likes through its own MLS group) send
through real :class:`~backchannel.rooms.room.Room` objects; a fourth member's device
receives everything through the real engine (``Engine._room_entries``) into a real
encrypted store, as the client does with entries from the relay.

The relay may serve entries in any order (an edit or delete before its message).
Mallory reuses ids of honest messages, past and future (as if she predicted them, or
the relay put her copy first), for texts, files, edits, deletes, file chunks,
reactions and replies, naming right and wrong authors. A model applies the rules of
``docs/room-protocol.md`` §5 to the same deliveries, keyed by (author, id); after
every step the device's store must equal the model exactly, and its counts of
dropped content must equal the model's. So no honest message is ever changed by
anyone but its author, whatever the interleaving.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from backchannel.engine.core import Engine
from backchannel.engine.state import Live
from backchannel.records import RoomMeta
from backchannel.rooms.access import derive_access, seal_room_blob
from backchannel.rooms.content import (
    Content,
    Delete,
    Edit,
    FileChunk,
    FileManifest,
    Reaction,
    Text,
    encode_content,
)
from backchannel.rooms.watch import fork_check
from backchannel.store import Store
from backchannel.store.records import Room as RoomRecord
from backchannel.store.records import message_ref
from backchannel.transport.connection import RelayConnection
from backchannel.transport.events import Entry
from tests.adversarial.conftest import NOW, room_group
from tests.store import FAST_KDF

SENDERS = ("fac", "ben", "mal")
HONEST = ("fac", "ben")
CHUNK = 1024
# The reasons the room layer and the engine give (docs/room-protocol.md §5).
SAME_ID = "A message with this id was already received from this sender."
CHUNK_FILE = "A file chunk named a message of its sender that is no file."
REACTION = "A reaction named a message its author never sent here."
REPLY = "A reply named the wrong author for the message it answers."


@dataclass
class Expected:
    kind: str
    body: str
    reply: tuple[bytes, bytes] | None = None
    edited: bool = False
    deleted: bool = False
    reactions: set[tuple[bytes, str]] = field(default_factory=set)
    chunks: dict[int, bytes] = field(default_factory=dict)


class Model:
    """The rules of §5, keyed by (author, id), applied in delivery order."""

    def __init__(self) -> None:
        self.seen: set[tuple[bytes, bytes]] = set()
        self.messages: dict[tuple[bytes, bytes], Expected] = {}
        self.held: dict[tuple[bytes, bytes], list[Content]] = {}
        self.dropped: Counter[str] = Counter()

    def deliver(self, s: bytes, c: Content) -> None:
        if (s, c.message_id) in self.seen:
            self.dropped[SAME_ID] += 1
            return
        self.seen.add((s, c.message_id))
        self._apply(s, c)

    def _apply(self, s: bytes, c: Content) -> None:
        if isinstance(c, Edit | Delete | FileChunk):
            target = (s, c.file_id if isinstance(c, FileChunk) else c.target)
            if target not in self.messages:  # held until its message comes
                self.held.setdefault(target, []).append(c)
                return
        if isinstance(c, Text):
            reply = None
            if c.reply_to is not None and c.reply_author is not None:
                reply = (c.reply_author, c.reply_to)
                if reply not in self.messages and any(i == c.reply_to for _, i in self.messages):
                    reply = None
                    self.dropped[REPLY] += 1
            self.messages[(s, c.message_id)] = Expected("text", c.body, reply)
            for change in self.held.pop((s, c.message_id), []):
                self._apply(s, change)
        elif isinstance(c, FileManifest):
            self.messages[(s, c.message_id)] = Expected("file", c.name)
            for change in self.held.pop((s, c.message_id), []):
                self._apply(s, change)
        elif isinstance(c, Edit):
            m = self.messages.get((s, c.target))
            if m is not None and m.kind == "text" and not m.deleted:
                m.body, m.edited = c.body, True
        elif isinstance(c, Delete):
            m = self.messages.get((s, c.target))
            if m is not None:
                m.body, m.deleted = "", True
                m.reactions.clear()
                m.chunks.clear()
        elif isinstance(c, Reaction):
            m = self.messages.get((c.target_author, c.target))
            if m is None or m.deleted:
                self.dropped[REACTION] += 1
            elif c.remove:
                m.reactions.discard((s, c.emoji))
            else:
                m.reactions.add((s, c.emoji))
        elif isinstance(c, FileChunk):
            m = self.messages.get((s, c.file_id))
            if m is None or m.kind != "file" or m.deleted:
                self.dropped[CHUNK_FILE] += 1
            else:
                m.chunks[c.index] = c.data


ids = st.integers(min_value=0, max_value=10_000)
emoji = st.sampled_from(["👍", "👎", "🔥"])


class MessageIdentity(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = TemporaryDirectory()
        idents, rooms = room_group(4, NOW)
        self.rooms = dict(zip((*SENDERS, "wit"), rooms, strict=True))
        self.member = {n: i.identity_id for n, i in zip((*SENDERS, "wit"), idents, strict=True)}
        self.room_id = rooms[3].group_id
        self.model = Model()
        self.pending: list[tuple[bytes, Content, bytes]] = []
        self.seq = 0
        self.counter = 0
        # Ids honest members will use, in order; Mallory may pick any of them, used or not.
        self.pool = [os.urandom(16) for _ in range(64)]
        self.used = 0
        self.own: dict[str, list[tuple[bytes, str]]] = {n: [] for n in SENDERS}
        self.engine, self.live = self.run(self._device(idents[3]))

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    async def _device(self, ident):  # type: ignore[no-untyped-def]
        store = await Store.create(Path(self.tmp.name) / "wit", "passphrase", kdf=FAST_KDF)
        room = self.rooms["wit"]
        meta = RoomMeta(access=derive_access(room.export_secret, room.epoch))
        record = RoomRecord(
            self.room_id, "Room", 1.0, state=room.to_bytes(), mailbox=meta.to_bytes()
        )
        await store.put_room(record)
        connection = RelayConnection("ws://127.0.0.1:9/v1/ws")
        engine = Engine(
            store, ident, connection, asyncio.Queue(), relay_url="ws://127.0.0.1:9/v1/ws",
            clock=lambda: float(NOW),
        )  # fmt: skip
        live = Live(record, room, meta)
        engine._live[self.room_id] = live
        return engine, live

    def teardown(self) -> None:
        self.run(self.engine.store.close())
        self.loop.close()
        self.tmp.cleanup()

    # -- sending ------------------------------------------------------------------------

    def _fresh(self) -> bytes:
        self.counter += 1
        return hashlib.sha256(b"fresh %d" % self.counter).digest()[:16]

    def _honest_id(self) -> bytes:
        if self.used < len(self.pool):
            self.used += 1
            return self.pool[self.used - 1]
        return self._fresh()

    def _send(self, name: str, content: Content) -> None:
        room = self.rooms[name]
        if name == "mal":  # no local checks: straight into MLS, as a modified client
            group = room._group
            wire = group.encrypt(
                encode_content(content), authenticated_data=fork_check(group.epoch_authenticator)
            )
        else:
            wire = room.send(content, now=NOW)
        self.pending.append((self.member[name], content, wire))

    def _ts(self) -> int:
        return NOW * 1000 + self.counter

    @rule(name=st.sampled_from(HONEST), reply=st.none() | ids)
    def honest_text(self, name: str, reply: int | None) -> None:
        mid = self._honest_id()
        target = self._any_message(reply)
        content = Text(mid, self._ts(), f"{name} says {mid.hex()[:6]}", *target)
        self._send(name, content)
        self.own[name].append((mid, "text"))

    @rule(name=st.sampled_from(HONEST), size=st.integers(1, 2 * CHUNK + 5))
    def honest_file(self, name: str, size: int) -> None:
        mid = self._honest_id()
        data = os.urandom(size)
        manifest = FileManifest(
            mid, self._ts(), "report.pdf", size, hashlib.sha256(data).digest(), CHUNK
        )
        self._send(name, manifest)
        for i in range(manifest.chunk_count):
            part = data[i * CHUNK : (i + 1) * CHUNK]
            self._send(name, FileChunk(self._fresh(), self._ts(), mid, i, part))
        self.own[name].append((mid, "file"))

    @precondition(lambda self: any(self.own[n] for n in HONEST))
    @rule(name=st.sampled_from(HONEST), pick=ids, delete=st.booleans())
    def honest_change(self, name: str, pick: int, delete: bool) -> None:
        own = self.own[name] or self.own["ben" if name == "fac" else "fac"]
        name = name if self.own[name] else ("ben" if name == "fac" else "fac")
        mid, kind = own[pick % len(own)]
        if delete:
            self._send(name, Delete(self._fresh(), self._ts(), mid))
        elif kind == "text":
            self._send(name, Edit(self._fresh(), self._ts(), mid, f"{name} edits {pick}"))

    @rule(name=st.sampled_from(SENDERS), pick=ids, e=emoji, remove=st.booleans())
    def react(self, name: str, pick: int, e: str, remove: bool) -> None:
        target = self._any_message(pick)
        if target == (None, None):
            return
        self._send(name, Reaction(self._fresh(), self._ts(), target[0], target[1], e, remove))

    def _any_message(self, pick: int | None) -> tuple[bytes, bytes] | tuple[None, None]:
        everything = [(mid, self.member[n]) for n in SENDERS for mid, _ in self.own[n]]
        if pick is None or not everything:
            return None, None
        return everything[pick % len(everything)]

    # -- Mallory ------------------------------------------------------------------------

    def _pool_id(self, pick: int) -> bytes:
        return self.pool[pick % len(self.pool)]

    @rule(pick=ids, as_file=st.booleans())
    def mal_reuses_an_honest_id(self, pick: int, as_file: bool) -> None:
        mid = self._pool_id(pick)
        if as_file:
            self._send("mal", FileManifest(mid, self._ts(), "evil.exe", 10, bytes(32), CHUNK))
            self.own["mal"].append((mid, "file"))
        else:
            self._send("mal", Text(mid, self._ts(), "We REJECT everything and walk out."))
            self.own["mal"].append((mid, "text"))

    @rule(pick=ids, kind=st.sampled_from(["edit", "delete", "chunk"]))
    def mal_aims_at_an_honest_id(self, pick: int, kind: str) -> None:
        mid = self._pool_id(pick)
        if kind == "edit":
            self._send("mal", Edit(self._fresh(), self._ts(), mid, "REWRITTEN"))
        elif kind == "delete":
            self._send("mal", Delete(self._fresh(), self._ts(), mid))
        else:
            self._send("mal", FileChunk(self._fresh(), self._ts(), mid, 0, b"EVIL" * 4))

    @rule(pick=ids, author=st.sampled_from(SENDERS), e=emoji, reply=st.booleans())
    def mal_names_any_author(self, pick: int, author: str, e: str, reply: bool) -> None:
        mid, who = self._pool_id(pick), self.member[author]
        if reply:
            self._send("mal", Text(self._fresh(), self._ts(), "As you said:", mid, who))
        else:
            self._send("mal", Reaction(self._fresh(), self._ts(), mid, who, e))

    @rule(pick=ids)
    def mal_replays_her_own_id(self, pick: int) -> None:
        if self.own["mal"]:
            mid, _ = self.own["mal"][pick % len(self.own["mal"])]
            self._send("mal", Text(mid, self._ts(), "a second message under one id"))

    # -- delivery -----------------------------------------------------------------------

    @precondition(lambda self: len(self.pending) >= 2)
    @rule(i=ids, j=ids)
    def relay_reorders(self, i: int, j: int) -> None:
        """The relay serves two entries in the other order (a change before its message)."""
        i, j = i % len(self.pending), j % len(self.pending)
        self.pending[i], self.pending[j] = self.pending[j], self.pending[i]

    @precondition(lambda self: self.pending)
    @rule(count=st.integers(1, 8))
    def deliver(self, count: int) -> None:
        batch, self.pending = self.pending[:count], self.pending[count:]
        entries = []
        for sender, content, wire in batch:
            self.seq += 1
            blob = seal_room_blob(self.live.meta.access, wire)
            entries.append(Entry(self.live.meta.access.mailbox, self.seq, blob))
            self.model.deliver(sender, content)
        self.run(self.engine._room_entries(self.live, entries))

    # -- the device equals the model ----------------------------------------------------

    @invariant()
    def device_matches_the_model(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        store = self.engine.store
        assert await store.message_count(self.room_id) == len(self.model.messages)
        refs = [message_ref(a, i) for a, i in self.model.messages]
        reactions = await store.reactions(self.room_id, refs)
        for (author, mid), want in self.model.messages.items():
            ref = message_ref(author, mid)
            got = await store.message(self.room_id, ref)
            assert got is not None and got.sender_id == author and got.message_id == mid
            assert (got.kind, got.body, got.deleted) == (want.kind, want.body, want.deleted)
            assert (got.edited_at is not None) == want.edited
            assert got.reply_ref == (message_ref(*want.reply) if want.reply else None)
            have = {(s, e) for e, s in reactions.get(ref, [])}
            assert have == want.reactions
            chunks = b"".join(want.chunks[i] for i in sorted(want.chunks))
            assert await store.attachment(self.room_id, ref) == chunks
        assert Counter(self.engine.dropped_content(self.room_id)) == +self.model.dropped


def test_honest_and_hostile_members_interleaved() -> None:
    run_state_machine_as_test(
        MessageIdentity,
        settings=settings(
            max_examples=12,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
