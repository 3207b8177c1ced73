"""A room under a hostile relay, a hostile member and a removed member (security-attacks.md §3.3).

Sans-IO: real :class:`~backchannel.rooms.room.Room` objects exchange bytes through a
model relay that hypothesis drives. The relay keeps one ordered log (one commit per
epoch, like the real relay's compare-and-swap) and one delivery queue per member, and
may drop, duplicate, reorder, replay (any past message, or the whole log again, as
after a reconnect) and inject random bytes into any queue.

Members: ``fac`` (facilitator), ``ann``, ``bob`` (participants, honest), ``eve`` (a
participant who signs policy-breaking commits through MLS directly: Add, Remove,
policy change), ``rex`` (removed by ``fac`` at some point; keeps its old state, keeps
sending, keeps being fed everything), and ``cat`` (may be added later).

Invariants after every step (§3.3, numbers as there):

1. members in the same epoch have equal epoch authenticators, rosters and policies;
2. no member ever accepts a commit the policy forbids (eve's Add/Remove/policy commits,
   the removed member's re-Add: A01-A04); an epoch advances only through a commit the
   relay took from an honest member, or, for a member the relay forks (A05, within
   C04's window), through the removed member's allowed self-update of an epoch it still
   held; forked members are then left out of invariant 1;
3. the removed member decrypts nothing sent in an epoch after its removal (C04's
   window, before it was removed, is allowed);
4. no (sender, message id) is delivered twice to anyone, and each delivered message is
   attributed to the member that sent it (C01, C02, B05, B06);
8. every rejection is ``MessageRejected`` (or a ``CommitRejected`` event) and leaves
   the member's state byte-for-byte unchanged.

Covered elsewhere: ``tests/rooms/test_room.py`` (scripted versions of single attacks),
``tests/mls/test_group_stateful.py`` (the MLS layer alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from backchannel.mls.credentials import BasicCredential
from backchannel.mls.crypto.suites import DEFAULT_CIPHER_SUITE
from backchannel.mls.errors import MLSError
from backchannel.rooms import Role, Text, new_message_id
from backchannel.rooms.errors import MessageRejected, PolicyViolation, RoomStateError
from backchannel.rooms.events import (
    CommitRejected,
    EpochAhead,
    ForkDetected,
    MessageReceived,
    RemovedFromRoom,
    RoomEvent,
)
from backchannel.rooms.room import Room
from tests.rooms.test_room import NOW, SUITE1, RoomHarness

from . import FUZZ, PROFILE_NAME

HONEST = ("fac", "ann", "bob")
READERS = ("fac", "ann", "bob", "eve", "rex", "cat")


@dataclass
class Member:
    room: Room
    queue: list[bytes] = field(default_factory=list)
    #: (sender, message id) pairs delivered as MessageReceived.
    delivered: set[tuple[bytes, bytes]] = field(default_factory=set)


class HostileRoom(RuleBasedStateMachine):
    suite: int = SUITE1

    def __init__(self) -> None:
        super().__init__()
        self.m: dict[str, Member] = {}
        self.log: list[bytes] = []
        self.relay_epoch = 0
        #: Commits the relay took from honest members (the only ones that may advance an epoch).
        self.legit_commits: set[bytes] = set()
        #: Signed commits the policy forbids (eve's, rex's re-add): never accepted by anyone.
        self.forbidden: set[bytes] = set()
        #: Policy-allowed commits the relay did not take (rex's self-update from before it
        #: learnt of its removal): a hostile relay can still fork a lagging member with them.
        self.fork_commits: set[bytes] = set()
        #: Members that accepted a fork commit (left out of the agreement invariant).
        self.forked: set[str] = set()
        #: message id -> (sender, body) of everything sent through Room.send or hostile paths.
        self.sent: dict[bytes, tuple[bytes, str]] = {}
        #: The epoch that began with rex's removal (None while rex is a member).
        self.rex_removed_at: int | None = None
        self.counter = 0

    # --- setup -----------------------------------------------------------------------

    @initialize()
    def setup(self) -> None:
        h = RoomHarness.create(self.suite)
        self.harness = h
        for name in ("ann", "bob", "eve", "rex"):
            h.invite("fac", name)
        h.check()
        self.m = {name: Member(room) for name, room in h.rooms.items()}
        self.relay_epoch = h.rooms["fac"].epoch

    # --- helpers ---------------------------------------------------------------------

    def _broadcast(self, sender: str | None, wire: bytes) -> None:
        self.log.append(wire)
        for name, member in self.m.items():
            if name != sender:
                member.queue.append(wire)

    def _process(self, name: str, wire: bytes) -> list[RoomEvent]:
        member = self.m[name]
        before = member.room.to_bytes()
        epoch = member.room.epoch
        try:
            events = member.room.receive(wire, now=NOW)
        except MessageRejected:
            assert member.room.to_bytes() == before, f"{name}: a rejected message changed state"
            return []
        if any(isinstance(e, CommitRejected) for e in events):
            assert len(events) == 1
            assert member.room.to_bytes() == before, f"{name}: a rejected commit changed state"
        if events and all(isinstance(e, ForkDetected | EpochAhead) for e in events):
            # Warnings drawn from a message MLS could not open: no state change.
            assert member.room.to_bytes() == before, f"{name}: a warning changed state"
        if member.room.epoch != epoch:
            assert wire not in self.forbidden, f"{name} accepted a commit the policy forbids"
            if wire in self.fork_commits:
                # The relay showed this member a different (allowed) commit for the epoch
                # than the others: a fork (A05/C04 window). It now lives on another branch.
                self.forked.add(name)
            else:
                assert wire in self.legit_commits, f"{name} accepted an unknown commit"
        for e in events:
            if isinstance(e, MessageReceived):
                key = (e.sender, e.content.message_id)
                assert key not in member.delivered, f"{name}: {key} delivered twice"
                member.delivered.add(key)
                sender, body = self.sent[e.content.message_id]
                assert e.sender == sender, f"{name}: misattributed message"
                assert isinstance(e.content, Text) and e.content.body == body
                if name == "rex" and self.rex_removed_at is not None:
                    assert e.epoch < self.rex_removed_at, "rex read a message sent after removal"
        if name == "rex" and any(isinstance(e, RemovedFromRoom) for e in events):
            assert not member.room.active
        return events

    def _text(self, sender: str) -> Text:
        self.counter += 1
        body = f"{sender} #{self.counter}"
        text = Text(new_message_id(), NOW * 1000, body)
        self.sent[text.message_id] = (sender.encode(), body)
        return text

    def _honest_commit(self, name: str, make: str) -> None:
        """``name`` commits (``make``); the relay takes it iff it is for the current epoch."""
        room = self.m[name].room
        if not room.active or room.epoch != self.relay_epoch:
            return
        try:
            if make == "update":
                out = room.self_update(now=NOW)
            elif make == "remove_rex":
                out = room.remove_members([b"rex"], now=NOW)
            else:
                key = self.harness.key()
                self.cat_bundle = Room.key_package(
                    self.suite, BasicCredential(b"cat"), key, now=NOW
                )
                out = room.add_members([self.cat_bundle.key_package.to_bytes()], now=NOW)
        except (PolicyViolation, RoomStateError):
            return
        assert out.epoch == self.relay_epoch
        self.legit_commits.add(out.commit)
        room.confirm_pending()
        self.relay_epoch += 1
        self._broadcast(name, out.commit)
        if make == "remove_rex":
            self.rex_removed_at = self.relay_epoch
        if make == "add_cat":
            assert out.welcome is not None
            cat = Room.join(out.welcome, self.cat_bundle, now=NOW, expected_inviter=b"fac")
            self.m["cat"] = Member(cat)

    # --- honest members ----------------------------------------------------------------

    @rule(sender=st.sampled_from(("fac", "ann", "bob", "cat")))
    def send(self, sender: str) -> None:
        if sender not in self.m or not self.m[sender].room.active:
            return
        wire = self.m[sender].room.send(self._text(sender), now=NOW)
        self._broadcast(sender, wire)

    @rule(name=st.sampled_from(("fac", "ann", "bob")))
    def self_update(self, name: str) -> None:
        self._honest_commit(name, "update")

    @precondition(lambda self: self.rex_removed_at is None)
    @rule()
    def remove_rex(self) -> None:
        self._honest_commit("fac", "remove_rex")

    @precondition(lambda self: "cat" not in self.m)
    @rule()
    def add_cat(self) -> None:
        self._honest_commit("fac", "add_cat")

    # --- the relay -------------------------------------------------------------------------

    @rule()
    def deliver_everything(self) -> None:
        """A well-behaved relay for once: every queue is delivered in order."""
        for name in list(self.m):
            while self.m[name].queue:
                self._process(name, self.m[name].queue.pop(0))

    @rule(name=st.sampled_from(READERS), count=st.integers(min_value=1, max_value=20))
    def deliver(self, name: str, count: int) -> None:
        if name not in self.m:
            return
        queue = self.m[name].queue
        for _ in range(min(count, len(queue))):
            self._process(name, queue.pop(0))

    @rule(name=st.sampled_from(READERS))
    def drop(self, name: str) -> None:
        if name in self.m and self.m[name].queue:
            self.m[name].queue.pop(0)

    @rule(name=st.sampled_from(READERS))
    def duplicate(self, name: str) -> None:
        if name in self.m and self.m[name].queue:
            q = self.m[name].queue
            q.insert(1, q[0])

    @rule(name=st.sampled_from(READERS), i=st.integers(0, 8), j=st.integers(0, 8))
    def reorder(self, name: str, i: int, j: int) -> None:
        if name in self.m and len(q := self.m[name].queue) > max(i, j):
            q[i], q[j] = q[j], q[i]

    @rule(name=st.sampled_from(READERS), index=st.integers(min_value=0))
    def replay_old(self, name: str, index: int) -> None:
        if name in self.m and self.log:
            self.m[name].queue.insert(0, self.log[index % len(self.log)])

    @rule(name=st.sampled_from(READERS))
    def reconnect_replays_everything(self, name: str) -> None:
        """The whole log again, in order: missed commits catch up, the rest is refused."""
        if name in self.m:
            self.m[name].queue[:0] = list(self.log)

    @rule(name=st.sampled_from(READERS), junk=st.binary(max_size=120))
    def inject(self, name: str, junk: bytes) -> None:
        if name in self.m:
            self.m[name].queue.insert(0, junk)

    # --- the hostile member ------------------------------------------------------------------

    @rule(action=st.sampled_from(("add", "remove", "policy", "promote_self")))
    def eve_breaks_policy(self, action: str) -> None:
        """eve (a participant) signs a commit the policy forbids, bypassing the room layer."""
        eve = self.m["eve"].room
        if not eve.active:
            return
        group = eve._group
        try:
            if action == "add":
                kp = Room.key_package(
                    self.suite, BasicCredential(b"mallory"), self.harness.key(), now=NOW
                )
                result = group.commit(add=[kp.key_package.to_bytes()], now=NOW)
            elif action == "remove":
                victims = [m.leaf_index for m in eve.members() if m.member_id == b"fac"]
                result = group.commit(remove=victims, now=NOW)
            else:
                role = Role.FACILITATOR if action == "promote_self" else Role.OBSERVER
                who = b"eve" if action == "promote_self" else b"ann"
                result = group.commit(
                    extensions=eve._extensions_with(eve.policy.with_role(who, role)), now=NOW
                )
        except MLSError:
            return
        finally:
            if group.pending_commit is not None:
                group.discard_pending_commit()
        # The hostile relay takes it (it cannot read the policy) and delivers it to all.
        self.forbidden.add(result.commit)
        self._broadcast("eve", result.commit)

    # --- the removed member ------------------------------------------------------------------

    @precondition(lambda self: self.rex_removed_at is not None)
    @rule(kind=st.sampled_from(("text", "update", "readd")))
    def rex_keeps_sending(self, kind: str) -> None:
        rex = self.m["rex"].room
        try:
            if kind == "text":
                if not rex.active:
                    return
                wire = rex._group.encrypt(b"\x00" * 32)  # not valid content either
            elif kind == "update":
                wire = rex._group.commit(now=NOW).commit
                self.fork_commits.add(wire)
            else:
                kp = Room.key_package(
                    self.suite, BasicCredential(b"rex"), self.harness.key(), now=NOW
                )
                wire = rex._group.commit(add=[kp.key_package.to_bytes()], now=NOW).commit
                self.forbidden.add(wire)
        except MLSError:
            return
        finally:
            if rex._group.pending_commit is not None:
                rex._group.discard_pending_commit()
        self._broadcast("rex", wire)

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def same_epoch_same_view(self) -> None:
        by_epoch: dict[int, list[Room]] = {}
        for name, member in self.m.items():
            if name in self.forked or (name == "rex" and self.rex_removed_at is not None):
                continue
            if member.room.active:
                by_epoch.setdefault(member.room.epoch, []).append(member.room)
        for rooms in by_epoch.values():
            first = rooms[0]
            for room in rooms[1:]:
                assert room.epoch_authenticator() == first.epoch_authenticator()
                assert room.members() == first.members()
                assert room.policy == first.policy

    @invariant()
    def only_the_facilitator_is_facilitator(self) -> None:
        for name, member in self.m.items():
            if name == "rex" or name in self.forked or not member.room.active:
                continue
            ids = {m.member_id for m in member.room.members()}
            assert b"mallory" not in ids
            assert b"fac" in ids
            assert member.room.policy.role_of(b"eve") is Role.PARTICIPANT
            assert member.room.policy.role_of(b"ann") is Role.PARTICIPANT


def _run(suite: int, examples: int, steps: int) -> None:
    machine = type(f"HostileRoom_{suite:04x}", (HostileRoom,), {"suite": suite})
    if PROFILE_NAME == "ci":
        config = settings(FUZZ, max_examples=examples, stateful_step_count=steps)
    else:
        config = settings(FUZZ, max_examples=max(examples * 10, 100), stateful_step_count=80)
    run_state_machine_as_test(machine, settings=config)


def test_hostile_room_suite_1() -> None:
    _run(SUITE1, examples=40, steps=40)


def test_hostile_room_default_suite() -> None:
    _run(DEFAULT_CIPHER_SUITE, examples=5, steps=25)
