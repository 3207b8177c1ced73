"""Stateful property test: N real members through random group histories (RFC 9420 end to end).

Hypothesis drives adds (Welcome with and without the tree), removes, Update proposals
committed by another member, empty commits, external joins, commits that lose a race,
save/restore, and application messages that are delivered late, reordered or lost
(within the past-epoch window). After every step:

* every member in the group has the same epoch and epoch authenticator;
* every delivered application message was read by exactly the members present in
  the epoch it was sent in (later joiners fail to read it);
* removed members read nothing sent after their removal.

Both the classic suite 1 and the default post-quantum hybrid (0xF001) run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from backchannel.mls.crypto.suites import CipherSuite
from backchannel.mls.errors import MLSError
from backchannel.mls.events import ApplicationMessage, ProposalReceived
from backchannel.mls.group import Group, GroupConfig
from tests.mls.group_harness import Harness

CONFIG = GroupConfig(max_past_epochs=3)
MAX_MEMBERS = 5


@dataclass
class InFlight:
    """An application message the relay still holds for some recipients."""

    wire: bytes
    epoch: int
    data: bytes
    #: Members present in the epoch it was sent in who have not got it yet.
    pending: set[str] = field(default_factory=set)
    #: The sender and every member present in its epoch.
    present: frozenset[str] = frozenset()


def _assert_unreadable(group: Group, wire: bytes) -> None:
    before = group.to_bytes()
    with pytest.raises(MLSError):
        group.process(wire)
    assert group.to_bytes() == before


class GroupMachine(RuleBasedStateMachine):
    suite: int = CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519

    def __init__(self) -> None:
        super().__init__()
        self.h = Harness.create(self.suite, 2, CONFIG)
        self.in_flight: list[InFlight] = []

    # --- helpers ---------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return next(iter(self.h.members.values())).epoch

    def _deliver(self, message: InFlight, name: str) -> None:
        group = self.h.members.get(name) or self.h.removed[name]
        event = group.process(message.wire)
        assert isinstance(event, ApplicationMessage)
        assert event.data == message.data and event.epoch == message.epoch
        message.pending.discard(name)

    def _flush(self, names: set[str] | None = None, older_than: int | None = None) -> None:
        """Deliver what would otherwise fall out of a window before the next commit."""
        for message in self.in_flight:
            if older_than is not None and message.epoch >= older_than:
                continue
            for name in sorted(message.pending if names is None else message.pending & names):
                self._deliver(message, name)
        self.in_flight = [m for m in self.in_flight if m.pending]

    def _before_commit(self) -> None:
        # After this commit the epoch is self.epoch + 1; keep every queued message
        # inside every receiver's window of CONFIG.max_past_epochs past epochs.
        self._flush(older_than=self.epoch + 1 - CONFIG.max_past_epochs)

    # --- rules -----------------------------------------------------------------------

    @precondition(lambda self: len(self.h.members) < MAX_MEMBERS)
    @rule(data=st.data(), with_tree=st.booleans())
    def add(self, data: st.DataObject, with_tree: bool) -> None:
        self._before_commit()
        committer = data.draw(st.sampled_from(sorted(self.h.members)))
        self.h.add(committer, with_tree=with_tree)

    @precondition(lambda self: len(self.h.members) < MAX_MEMBERS)
    @rule(data=st.data())
    def external_join(self, data: st.DataObject) -> None:
        self._before_commit()
        self.h.external_join(data.draw(st.sampled_from(sorted(self.h.members))))

    @precondition(lambda self: len(self.h.members) >= 3)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        self._before_commit()
        names = sorted(self.h.members)
        committer = data.draw(st.sampled_from(names))
        victim = data.draw(st.sampled_from([n for n in names if n != committer]))
        self._flush(names={victim})  # the victim keeps only its last epochs
        self.h.remove(committer, victim)

    @rule(data=st.data())
    def update_by_proposal(self, data: st.DataObject) -> None:
        self._before_commit()
        names = sorted(self.h.members)
        proposer = data.draw(st.sampled_from(names))
        committer = data.draw(st.sampled_from([n for n in names if n != proposer]))
        proposal = self.h.members[proposer].propose_update()
        for name in self.h.others(proposer):
            assert isinstance(self.h.members[name].process(proposal), ProposalReceived)
        applied = self.h.accept(committer, self.h.members[committer].commit())
        assert [m.leaf_index for m in applied.updated] == [self.h.members[proposer].own_leaf_index]

    @rule(data=st.data())
    def empty_commit(self, data: st.DataObject) -> None:
        self._before_commit()
        committer = data.draw(st.sampled_from(sorted(self.h.members)))
        self.h.accept(committer, self.h.members[committer].commit())

    @rule(data=st.data(), discard_first=st.booleans())
    def commit_race(self, data: st.DataObject, discard_first: bool) -> None:
        self._before_commit()
        names = sorted(self.h.members)
        winner = data.draw(st.sampled_from(names))
        loser = data.draw(st.sampled_from([n for n in names if n != winner]))
        won = self.h.members[winner].commit()
        lost = self.h.members[loser].commit()
        assert lost.commit != won.commit
        if discard_first:
            self.h.members[loser].discard_pending_commit()
        # The relay refuses `lost`; merging `won` also drops the loser's pending commit.
        self.h.accept(winner, won)
        assert self.h.members[loser].pending_commit is None

    @rule(data=st.data(), payload=st.binary(max_size=40))
    def send(self, data: st.DataObject, payload: bytes) -> None:
        sender = data.draw(st.sampled_from(sorted(self.h.members)))
        wire = self.h.members[sender].encrypt(payload)
        recipients = set(self.h.others(sender))
        present = frozenset(self.h.members)
        self.in_flight.append(InFlight(wire, self.epoch, payload, recipients, present))
        for gone in self.h.removed.values():  # sent after their removal
            _assert_unreadable(gone, wire)

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data())
    def deliver_some(self, data: st.DataObject) -> None:
        order = data.draw(st.permutations(range(len(self.in_flight))))
        for i in order[: data.draw(st.integers(1, len(order)))]:
            message = self.in_flight[i]
            names = sorted(message.pending)
            for name in data.draw(st.lists(st.sampled_from(names), unique=True)) if names else []:
                self._deliver(message, name)
            # Members who joined after the message's epoch cannot read it.
            for name in sorted(set(self.h.members) - message.present):
                _assert_unreadable(self.h.members[name], message.wire)
        self.in_flight = [m for m in self.in_flight if m.pending]

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data())
    def lose_one(self, data: st.DataObject) -> None:
        self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))

    @rule(data=st.data())
    def save_and_restore(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.h.members)))
        saved = self.h.members[name].to_bytes()
        self.h.members[name] = Group.from_bytes(saved)
        assert self.h.members[name].to_bytes() == saved

    @invariant()
    def members_agree(self) -> None:
        self.h.check()

    def teardown(self) -> None:
        self._flush()  # everything not lost is read by exactly its epoch's members
        assert not self.in_flight


class PostQuantumGroupMachine(GroupMachine):
    suite = CipherSuite.MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519


_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TestGroupSuite1 = GroupMachine.TestCase
TestGroupSuite1.settings = _SETTINGS
TestGroupPostQuantum = PostQuantumGroupMachine.TestCase
TestGroupPostQuantum.settings = _SETTINGS
