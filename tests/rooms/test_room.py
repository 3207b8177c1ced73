"""Room end to end: N real members exchange bytes through an in-memory relay that accepts
exactly one commit per epoch; every member enforces the policy on every commit alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from backchannel.mls.credentials import BasicCredential
from backchannel.mls.crypto.signatures import SignaturePrivateKey
from backchannel.mls.crypto.suites import DEFAULT_CIPHER_SUITE, CipherSuite, get_cipher_suite
from backchannel.mls.group import Group
from backchannel.rooms import Delete, Edit, Role, Text, new_message_id
from backchannel.rooms.content import encode_content
from backchannel.rooms.errors import MessageRejected, PolicyViolation, RoomDecodeError
from backchannel.rooms.events import (
    CommitRejected,
    ContentDropped,
    MembersChanged,
    MessageReceived,
    PolicyChanged,
    ProposalQueued,
    RemovedFromRoom,
    RoomEvent,
)
from backchannel.rooms.policy import RemoveMember
from backchannel.rooms.room import OutgoingCommit, Room

NOW = 1_700_000_000
SUITE1 = CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519


@dataclass
class RoomHarness:
    """Members by name, and the relay: one mailbox, one commit per epoch."""

    suite: int
    rooms: dict[str, Room] = field(default_factory=dict)
    gone: dict[str, Room] = field(default_factory=dict)
    log: list[bytes] = field(default_factory=list)

    def key(self) -> SignaturePrivateKey:
        return SignaturePrivateKey.generate(get_cipher_suite(self.suite).signature_scheme)

    @classmethod
    def create(cls, suite: int, facilitator: str = "fac") -> RoomHarness:
        h = cls(suite)
        h.rooms[facilitator] = Room.create(
            suite, BasicCredential(facilitator.encode()), h.key(), title="Workshop", now=NOW
        )
        return h

    def others(self, name: str) -> list[str]:
        return [n for n in self.rooms if n != name]

    def relay_commit(self, committer: str, out: OutgoingCommit) -> bool:
        """The relay's CAS: accept iff the committer's epoch is the mailbox's epoch."""
        current = max(r.epoch for r in self.rooms.values())
        return out.epoch == current

    def deliver(self, sender: str, wire: bytes) -> dict[str, list[RoomEvent]]:
        self.log.append(wire)
        events = {}
        for name in self.others(sender):
            events[name] = self.rooms[name].receive(wire, now=NOW)
            if any(isinstance(e, RemovedFromRoom) for e in events[name]):
                self.gone[name] = self.rooms.pop(name)
        return events

    def commit(self, committer: str, out: OutgoingCommit) -> dict[str, list[RoomEvent]]:
        assert self.relay_commit(committer, out)
        events = self.deliver(committer, out.commit)
        events[committer] = self.rooms[committer].confirm_pending()
        return events

    def invite(self, committer: str, name: str) -> None:
        bundle = Room.key_package(self.suite, BasicCredential(name.encode()), self.key(), now=NOW)
        out = self.rooms[committer].add_members([bundle.key_package.to_bytes()], now=NOW)
        self.commit(committer, out)
        assert out.welcome is not None
        self.rooms[name] = Room.join(
            out.welcome, bundle, now=NOW, expected_inviter=committer.encode()
        )

    def say(self, sender: str, body: str) -> tuple[Text, dict[str, list[RoomEvent]]]:
        text = Text(new_message_id(), NOW * 1000, body)
        return text, self.deliver(sender, self.rooms[sender].send(text, now=NOW))

    def check(self) -> None:
        rooms = list(self.rooms.values())
        for room in rooms:
            assert room.epoch == rooms[0].epoch
            assert room.epoch_authenticator() == rooms[0].epoch_authenticator()
            assert room.policy == rooms[0].policy
            assert room.members() == rooms[0].members()


def _workshop(suite: int = SUITE1) -> RoomHarness:
    """fac (facilitator), fac2 (second facilitator), ann, bob (participants), obs (observer)."""
    h = RoomHarness.create(suite)
    fac = h.rooms["fac"]
    for name in ("fac2", "ann", "bob", "obs"):
        h.invite("fac", name)
    # Roles are given to members (an entry without a leaf could be claimed by anyone).
    policy = fac.policy.with_role(b"fac2", Role.FACILITATOR).with_role(b"obs", Role.OBSERVER)
    h.commit("fac", fac.change_policy(policy, now=NOW))
    h.check()
    return h


def test_create_invite_join_and_talk_default_suite() -> None:
    assert get_cipher_suite(DEFAULT_CIPHER_SUITE).kem_id != get_cipher_suite(SUITE1).kem_id
    h = RoomHarness.create(DEFAULT_CIPHER_SUITE)
    fac = h.rooms["fac"]
    assert [(m.member_id, m.role) for m in fac.members()] == [(b"fac", Role.FACILITATOR)]
    bundle = Room.key_package(h.suite, BasicCredential(b"ann"), h.key(), now=NOW)
    out = fac.add_members([bundle.key_package.to_bytes()], now=NOW)
    assert out.epoch == 0 and out.welcome is not None
    events = h.commit("fac", out)
    assert events["fac"] == [MembersChanged(1, b"fac", (b"ann",), ())]
    h.rooms["ann"] = Room.join(out.welcome, bundle, now=NOW)
    h.check()
    assert h.rooms["ann"].policy.title == "Workshop"
    text, got = h.say("ann", "hello")
    (event,) = got["fac"]
    assert isinstance(event, MessageReceived)
    assert (event.sender, event.content, event.sent_at_ms) == (b"ann", text, NOW * 1000)
    assert "hello" not in repr(event)


def test_key_package_without_policy_capability_is_refused() -> None:
    h = RoomHarness.create(SUITE1)
    plain = Group.make_key_package(SUITE1, BasicCredential(b"old"), h.key(), now=NOW)
    with pytest.raises(PolicyViolation):
        h.rooms["fac"].add_members([plain.key_package.to_bytes()], now=NOW)
    assert h.rooms["fac"].pending is None


def test_joiner_refuses_welcome_from_non_facilitator_and_plain_groups() -> None:
    h = _workshop()
    # A plain MLS group (no policy) invites: the joiner refuses it.
    plain = Group.create(SUITE1, BasicCredential(b"x"), h.key(), now=NOW)
    bundle = Room.key_package(SUITE1, BasicCredential(b"zed"), h.key(), now=NOW)
    result = plain.commit(add=[bundle.key_package.to_bytes()], now=NOW)
    assert result.welcome is not None
    with pytest.raises(PolicyViolation):
        Room.join(result.welcome, bundle, now=NOW)
    # The expected inviter does not match.
    bundle2 = Room.key_package(SUITE1, BasicCredential(b"yan"), h.key(), now=NOW)
    out = h.rooms["fac"].add_members([bundle2.key_package.to_bytes()], now=NOW)
    h.commit("fac", out)
    assert out.welcome is not None
    with pytest.raises(PolicyViolation):
        Room.join(out.welcome, bundle2, now=NOW, expected_inviter=b"fac2")


def test_roles_observer_and_content_rules() -> None:
    h = _workshop()
    roles = {m.member_id: m.role for m in h.rooms["ann"].members()}
    assert roles == {
        b"fac": Role.FACILITATOR,
        b"fac2": Role.FACILITATOR,
        b"ann": Role.PARTICIPANT,
        b"bob": Role.PARTICIPANT,
        b"obs": Role.OBSERVER,
    }
    # Observers are refused locally.
    with pytest.raises(PolicyViolation):
        h.rooms["obs"].send(Text(new_message_id(), NOW * 1000, "hi"), now=NOW)
    text, _ = h.say("ann", "draft")
    # The sender may edit and delete its own message.
    edit = Edit(new_message_id(), NOW * 1000, text.message_id, "final")
    got = h.deliver("ann", h.rooms["ann"].send(edit, now=NOW))
    assert all(isinstance(e, MessageReceived) and e.content == edit for (e,) in got.values())
    # Someone else's delete of that id is a delete of *their own* message with that id:
    # receivers get it with its real sender and apply it to (bob, id), never to ann's
    # (the store and engine hold that: tests/adversarial/test_i_message_identity.py).
    forged = Delete(new_message_id(), NOW * 1000, text.message_id)
    got = h.deliver("bob", h.rooms["bob"].send(forged, now=NOW))
    assert all(isinstance(e, MessageReceived) and e.sender == b"bob" for (e,) in got.values())
    # Duplicates (sender, id) are dropped: bob re-sends a new message with ann's id as his own.
    dup = Text(text.message_id, NOW * 1000, "same id, other sender")
    got = h.deliver("bob", h.rooms["bob"].send(dup, now=NOW))
    assert isinstance(got["fac"][0], MessageReceived)  # ids are per sender
    again = h.rooms["bob"]._group.encrypt(encode_content(dup))
    got = h.deliver("bob", again)
    assert all(isinstance(e, ContentDropped) for (e,) in got.values())
    # An observer's content (sent around the local check) is dropped by everyone.
    sneaky = h.rooms["obs"]._group.encrypt(encode_content(Text(new_message_id(), 1, "x")))
    got = h.deliver("obs", sneaky)
    assert all(isinstance(e, ContentDropped) for (e,) in got.values())
    # Whether ann's message is still in a receiver's window of seen ids does not matter
    # (another member could flood that window): her edit is passed on all the same.
    h.rooms["fac"]._seen.clear()
    late = Edit(new_message_id(), NOW * 1000, text.message_id, "later still")
    got = h.deliver("ann", h.rooms["ann"].send(late, now=NOW))
    assert isinstance(got["fac"][0], MessageReceived) and got["fac"][0].content == late
    # ann's delete of her own message is fine.
    delete = Delete(new_message_id(), NOW * 1000, text.message_id)
    got = h.deliver("ann", h.rooms["ann"].send(delete, now=NOW))
    assert all(isinstance(e, MessageReceived) for (e,) in got.values())
    h.check()


@pytest.mark.parametrize("action", ["add", "remove", "policy"])
def test_non_facilitator_commit_rejected_by_all_with_state_unchanged(action: str) -> None:
    h = _workshop()
    ann = h.rooms["ann"]
    # ann's client refuses locally ...
    kp0 = Room.key_package(SUITE1, BasicCredential(b"eve"), h.key(), now=NOW)
    local = {
        "add": lambda: ann.add_members([kp0.key_package.to_bytes()], now=NOW),
        "remove": lambda: ann.remove_members([b"bob"], now=NOW),
        "policy": lambda: ann.change_policy(
            ann.policy.with_role(b"ann", Role.FACILITATOR), now=NOW
        ),
    }[action]
    with pytest.raises(PolicyViolation):
        local()
    # ... so a hostile client bypasses the room layer and commits through MLS directly.
    group = ann._group
    if action == "add":
        kp = Room.key_package(SUITE1, BasicCredential(b"eve"), h.key(), now=NOW)
        result = group.commit(add=[kp.key_package.to_bytes()], now=NOW)
    elif action == "remove":
        bob_leaf = next(m.leaf_index for m in ann.members() if m.member_id == b"bob")
        result = group.commit(remove=[bob_leaf], now=NOW)
    else:
        new = ann.policy.with_role(b"ann", Role.FACILITATOR)
        result = group.commit(extensions=ann._extensions_with(new), now=NOW)
    before = {n: r.to_bytes() for n, r in h.rooms.items() if n != "ann"}
    got = h.deliver("ann", result.commit)
    for name, events in got.items():
        assert len(events) == 1 and isinstance(events[0], CommitRejected), name
        assert events[0].committer == b"ann" and events[0].epoch == ann.epoch
        assert h.rooms[name].to_bytes() == before[name]
    assert len({e[0].reason for e in got.values()}) == 1  # same verdict everywhere
    # The room goes on in the old epoch.
    group.discard_pending_commit()
    h.say("bob", "still here")
    h.check()


def test_participant_leaves_by_proposal_committed_by_facilitator() -> None:
    h = _workshop()
    proposal = h.rooms["bob"].leave()
    got = h.deliver("bob", proposal)
    queued = got["fac"][0]
    assert isinstance(queued, ProposalQueued) and queued.change == RemoveMember(b"bob", b"bob")
    out = h.rooms["fac"].commit_proposals(now=NOW)
    events = h.commit("fac", out)
    assert "bob" in h.gone and not h.gone["bob"].active
    assert MembersChanged(out.epoch + 1, b"fac", (), (b"bob",)) in events["ann"]
    h.check()
    assert b"bob" not in {m.member_id for m in h.rooms["fac"].members()}


def test_participant_proposal_cannot_be_laundered_by_facilitator() -> None:
    h = _workshop()
    # ann proposes removing bob; fac's commit would carry ann's authority: refused locally.
    ann = h.rooms["ann"]
    bob_leaf = next(m.leaf_index for m in ann.members() if m.member_id == b"bob")
    h.deliver("ann", ann._group.propose_remove(bob_leaf))
    with pytest.raises(PolicyViolation):
        h.rooms["fac"].commit_proposals(now=NOW)
    # Other commits by fac leave the bad proposal out and go through.
    h.commit("fac", h.rooms["fac"].self_update(now=NOW))
    h.check()
    assert b"bob" in {m.member_id for m in h.rooms["fac"].members()}


def test_removed_member_cannot_read_later_messages() -> None:
    h = _workshop()
    out = h.rooms["fac"].remove_members([b"obs"], now=NOW)
    events = h.commit("fac", out)
    assert isinstance(events["ann"][0], MembersChanged)
    # The observer's role entry was dropped in the same commit.
    assert any(isinstance(e, PolicyChanged) for e in events["ann"])
    assert all(m != b"obs" for m, _ in h.rooms["ann"].policy.roles)
    assert "obs" in h.gone
    _, _ = h.say("ann", "after removal")
    with pytest.raises(MessageRejected):
        h.gone["obs"].receive(h.log[-1], now=NOW)
    h.check()


def test_commit_race_one_wins_other_discards_and_retries() -> None:
    h = _workshop()
    kp = Room.key_package(SUITE1, BasicCredential(b"cat"), h.key(), now=NOW)
    a = h.rooms["fac"].self_update(now=NOW)
    b = h.rooms["fac2"].add_members([kp.key_package.to_bytes()], now=NOW)
    assert a.epoch == b.epoch
    h.commit("fac", a)  # the relay took fac's commit first
    assert not h.relay_commit("fac2", b)  # fac2's is stale now
    h.rooms["fac2"].discard_pending()
    assert h.rooms["fac2"].pending is None
    h.check()
    retry = h.rooms["fac2"].add_members([kp.key_package.to_bytes()], now=NOW)
    assert retry.epoch == b.epoch + 1
    h.commit("fac2", retry)
    assert retry.welcome is not None
    h.rooms["cat"] = Room.join(retry.welcome, kp, now=NOW)
    h.check()
    h.say("cat", "made it")


def test_policy_change_and_save_restore_round_trip() -> None:
    h = _workshop()
    text, _ = h.say("ann", "before save")
    saved = h.rooms["ann"].to_bytes()
    restored = Room.from_bytes(saved)
    assert restored.to_bytes() == saved
    h.rooms["ann"] = restored
    # The dedupe window survived: ann may still edit her message after restore.
    edit = Edit(new_message_id(), NOW * 1000, text.message_id, "edited")
    h.deliver("ann", restored.send(edit, now=NOW))
    new = restored.policy.with_role(b"bob", Role.OBSERVER)
    events = h.commit("fac", h.rooms["fac"].change_policy(new, now=NOW))
    change = next(e for e in events["ann"] if isinstance(e, PolicyChanged))
    assert change.new.role_of(b"bob") is Role.OBSERVER
    assert change.old.role_of(b"bob") is Role.PARTICIPANT
    h.check()
    with pytest.raises(PolicyViolation):
        h.rooms["bob"].send(Text(new_message_id(), 1, "no"), now=NOW)
    for bad in (b"", b"\x80", saved[:-3], b"\x81\xa1v\x02"):
        with pytest.raises(RoomDecodeError):
            Room.from_bytes(bad)
