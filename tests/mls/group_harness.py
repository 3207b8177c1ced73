"""An in-memory MLS delivery service and N real :class:`Group` members (h11 ``ConnectionPair`` style).

The harness plays the relay: it accepts exactly one commit per epoch (the first one
offered), hands every member every handshake message in order, and lets tests hold
back, reorder or drop application messages. Members are addressed by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from backchannel.mls.credentials import BasicCredential
from backchannel.mls.crypto.signatures import SignaturePrivateKey
from backchannel.mls.crypto.suites import get_cipher_suite
from backchannel.mls.errors import MLSError
from backchannel.mls.events import (
    CommitApplied,
    OwnMessage,
    ProposalReceived,
    StagedCommit,
)
from backchannel.mls.group import CommitResult, Group, GroupConfig
from backchannel.mls.key_package_ops import KeyPackageBundle

NOW = 1_700_000_000


@dataclass
class Harness:
    """N members of one group plus the relay's view of it."""

    suite: int
    config: GroupConfig = field(default_factory=GroupConfig)
    members: dict[str, Group] = field(default_factory=dict)
    #: Members that were removed, kept to check they read nothing new.
    removed: dict[str, Group] = field(default_factory=dict)
    counter: int = 0

    # --- identities ------------------------------------------------------------------

    def signature_key(self) -> SignaturePrivateKey:
        return SignaturePrivateKey.generate(get_cipher_suite(self.suite).signature_scheme)

    def key_package(self, name: str) -> KeyPackageBundle:
        return Group.make_key_package(
            self.suite, BasicCredential(name.encode()), self.signature_key(), now=NOW
        )

    def new_name(self) -> str:
        self.counter += 1
        return f"m{self.counter}"

    # --- group life ------------------------------------------------------------------

    @classmethod
    def create(cls, suite: int, n: int = 1, config: GroupConfig | None = None) -> Harness:
        """A group of ``n`` members built by Add commits from the first."""
        h = cls(suite, config or GroupConfig())
        first = h.new_name()
        h.members[first] = Group.create(
            suite, BasicCredential(first.encode()), h.signature_key(), now=NOW, config=h.config
        )
        for _ in range(n - 1):
            h.add(first)
        return h

    def others(self, name: str) -> list[str]:
        return [m for m in self.members if m != name]

    def name_of(self, leaf_index: int) -> str:
        for name, group in self.members.items():
            if group.own_leaf_index == leaf_index:
                return name
        raise KeyError(leaf_index)

    def broadcast(self, sender: str, message: bytes) -> dict[str, object]:
        """Give a handshake message to every other member; returns their events."""
        return {name: self.members[name].process(message) for name in self.others(sender)}

    def propose(self, sender: str, message: bytes) -> None:
        for event in self.broadcast(sender, message).values():
            assert isinstance(event, ProposalReceived)

    def accept(self, committer: str, result: CommitResult) -> CommitApplied:
        """The relay accepted ``result``: the committer merges, everyone else stages and merges."""
        applied = self.members[committer].merge_pending_commit()
        for name in self.others(committer):
            group = self.members[name]
            staged = group.process(result.commit)
            assert isinstance(staged, StagedCommit)
            merged = group.merge_staged_commit(staged)
            if merged.self_removed:
                self.removed[name] = self.members.pop(name)
        return applied

    def add(self, committer: str, *, with_tree: bool = True) -> str:
        """Commit an Add of a fresh client and let it join; returns its name."""
        name = self.new_name()
        bundle = self.key_package(name)
        result = self.members[committer].commit(add=[bundle.key_package.to_bytes()], now=NOW)
        self.accept(committer, result)
        assert result.welcome is not None
        tree = None if with_tree else result.ratchet_tree
        self.members[name] = Group.join(
            result.welcome, bundle, now=NOW, ratchet_tree=tree, config=self.config
        )
        return name

    def remove(self, committer: str, victim: str) -> None:
        leaf = self.members[victim].own_leaf_index
        self.accept(committer, self.members[committer].commit(remove=[leaf]))

    def external_join(self, via: str) -> str:
        """A new client joins by external commit using ``via``'s GroupInfo."""
        name = self.new_name()
        group, commit = Group.join_external(
            self.members[via].group_info(),
            BasicCredential(name.encode()),
            self.signature_key(),
            now=NOW,
            config=self.config,
        )
        for other in list(self.members):
            staged = self.members[other].process(commit)
            assert isinstance(staged, StagedCommit) and staged.external
            self.members[other].merge_staged_commit(staged)
        self.members[name] = group
        return name

    # --- checks ----------------------------------------------------------------------

    def check(self) -> None:
        """All members agree on epoch, authenticator, exporter and membership."""
        groups = list(self.members.values())
        first = groups[0]
        for group in groups:
            assert group.active
            assert group.epoch == first.epoch
            assert group.epoch_authenticator == first.epoch_authenticator
            assert group.export_secret("check", b"", 16) == first.export_secret("check", b"", 16)
            assert [m.leaf_index for m in group.members()] == [
                m.leaf_index for m in first.members()
            ]
        assert sorted(g.own_leaf_index for g in groups) == [m.leaf_index for m in first.members()]

    def send(self, sender: str, data: bytes, to: Iterable[str] | None = None) -> None:
        """Encrypt ``data`` from ``sender`` and check each recipient reads it (own echo skipped)."""
        wire = self.members[sender].encrypt(data)
        assert isinstance(self.members[sender].process(wire), OwnMessage)
        for name in self.others(sender) if to is None else to:
            event = self.members[name].process(wire)
            assert getattr(event, "data", None) == data


def assert_rejected(group: Group, message: bytes, error: type[MLSError] = MLSError) -> None:
    """``group`` refuses ``message`` with ``error`` and its state is byte-for-byte unchanged."""
    before = group.to_bytes()
    with pytest.raises(error):
        group.process(message)
    assert group.to_bytes() == before
