"""Group end to end: every message kind a Group creates is processed by the others.

The rejection paths are in ``test_group_rejections.py``.
"""

from __future__ import annotations

import pytest

from backchannel.mls.credentials import BasicCredential
from backchannel.mls.crypto.suites import CipherSuite, get_cipher_suite
from backchannel.mls.errors import (
    DecodeError,
    UsageError,
    ValidationError,
    VerificationError,
)
from backchannel.mls.events import (
    ApplicationMessage,
    OwnMessage,
    ProposalReceived,
    StagedCommit,
)
from backchannel.mls.extensions import ExternalSender, ExternalSenders
from backchannel.mls.framing import (
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PublicMessage,
    Sender,
    WireFormat,
)
from backchannel.mls.group import Group, GroupConfig
from backchannel.mls.messages import (
    Add,
    Proposal,
    Remove,
)
from backchannel.mls.protection import sign_framed_content
from tests.mls.group_harness import NOW, Harness, assert_rejected

SUITES = [
    pytest.param(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519, id="suite1"),
    pytest.param(
        CipherSuite.MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519, id="suite-0xF001-hybrid"
    ),
]
PUBLIC = GroupConfig(encrypt_handshake=False)
SUITE1 = CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519


# --- happy paths -------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("with_tree", [True, False], ids=["tree-in-welcome", "tree-apart"])
def test_add_welcome_and_application_messages(suite: int, with_tree: bool) -> None:
    h = Harness.create(suite, 2)
    h.add("m1", with_tree=with_tree)
    h.check()
    for sender in list(h.members):
        h.send(sender, f"hello from {sender}".encode())
    assert len(h.members) == 3


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("config", [GroupConfig(), PUBLIC], ids=["private", "public"])
def test_every_proposal_kind_by_reference(suite: int, config: GroupConfig) -> None:
    h = Harness.create(suite, 4, config)
    a, b, c, d = list(h.members)
    h.members[a].add_external_psk(b"psk-1", b"secret")
    h.members[b].add_external_psk(b"psk-1", b"secret")
    h.members[c].add_external_psk(b"psk-1", b"secret")
    h.members[d].add_external_psk(b"psk-1", b"secret")
    new = h.key_package("joiner")
    h.propose(b, h.members[b].propose_add(new.key_package.to_bytes()))
    h.propose(c, h.members[c].propose_update())
    h.propose(b, h.members[b].propose_remove(h.members[d].own_leaf_index))
    h.propose(c, h.members[c].propose_psk(b"psk-1"))
    ext = ExternalSenders(
        (ExternalSender(h.signature_key().public_key().to_bytes(), BasicCredential(b"x")),)
    ).to_extension()
    h.propose(b, h.members[b].propose_group_context_extensions([ext]))
    result = h.members[a].commit(now=NOW)
    applied = h.accept(a, result)
    assert [m.credential for m in applied.added] == [BasicCredential(b"joiner")]
    assert [m.leaf_index for m in applied.updated] == [h.members[c].own_leaf_index]
    assert len(applied.removed) == 1 and len(applied.psks) == 1
    assert applied.extensions == (ext,)
    assert result.welcome is not None
    h.members["joiner"] = Group.join(
        result.welcome, new, now=NOW, psks={b"psk-1": b"secret"}, config=config
    )
    h.check()
    assert h.members[a].extensions == (ext,)
    for sender in h.members:
        h.send(sender, b"after")
    assert not h.removed[d].active


@pytest.mark.parametrize("suite", SUITES)
def test_inline_commits_and_self_update(suite: int) -> None:
    h = Harness.create(suite, 3)
    a, b, c = list(h.members)
    before = h.members[a].epoch_authenticator
    h.accept(b, h.members[b].commit())  # empty commit: self-update with a path
    assert h.members[a].epoch_authenticator != before
    for g in h.members.values():
        g.add_external_psk(b"k", b"v")
    ext = ExternalSenders(
        (ExternalSender(h.signature_key().public_key().to_bytes(), BasicCredential(b"x")),)
    ).to_extension()
    applied = h.accept(a, h.members[a].commit(psks=[b"k"], extensions=[ext]))
    assert applied.extensions == (ext,) and len(applied.psks) == 1
    assert h.members[c].extensions == (ext,)
    h.remove(c, b)
    h.check()
    h.send(a, b"two left")


@pytest.mark.parametrize("suite", SUITES)
def test_commits_without_path(suite: int) -> None:
    config = GroupConfig(always_commit_path=False)
    h = Harness.create(suite, 2, config)
    a = "m1"
    bundle = h.key_package("late")
    result = h.members[a].commit(add=[bundle.key_package.to_bytes()], now=NOW)
    h.accept(a, result)
    assert result.welcome is not None
    h.members["late"] = Group.join(result.welcome, bundle, now=NOW, config=config)
    h.check()
    with pytest.raises(UsageError):  # a Remove needs a path
        h.members[a].commit(remove=[1], path=False)
    h.members[a].add_external_psk(b"p", b"q")
    for name in h.others(a):
        h.members[name].add_external_psk(b"p", b"q")
    h.accept(a, h.members[a].commit(psks=[b"p"], path=False))
    h.check()


@pytest.mark.parametrize("suite", SUITES)
def test_reinit_closes_the_group(suite: int) -> None:
    h = Harness.create(suite, 2)
    a, b = list(h.members)
    h.propose(a, h.members[a].propose_reinit(b"next-group", suite))
    applied = h.accept(b, h.members[b].commit(path=False))
    assert applied.reinit is not None and applied.reinit.group_id == b"next-group"
    assert not h.members[a].active and not h.members[b].active
    with pytest.raises(UsageError):
        h.members[a].encrypt(b"no")


@pytest.mark.parametrize("suite", SUITES)
def test_external_join_and_resync(suite: int) -> None:
    h = Harness.create(suite, 2)
    joined = h.external_join("m2")
    h.check()
    h.send(joined, b"I joined by myself")
    # Resync: the same client rejoins, removing its old leaf.
    old = h.members[joined]
    key = h.signature_key()
    group, commit = Group.join_external(
        h.members["m1"].group_info(),
        BasicCredential(joined.encode()),
        key,
        now=NOW,
        resync_leaf=old.own_leaf_index,
    )
    for name in h.others(joined):
        staged = h.members[name].process(commit)
        assert isinstance(staged, StagedCommit)
        assert [m.credential for m in staged.removed] == [BasicCredential(joined.encode())]
        h.members[name].merge_staged_commit(staged)
    h.members[joined] = group
    h.check()


def test_external_join_without_tree_in_group_info() -> None:
    h = Harness.create(SUITE1, 2)
    info = h.members["m1"].group_info(with_tree=False)
    with pytest.raises(ValidationError):
        Group.join_external(info, BasicCredential(b"x"), h.signature_key(), now=NOW)
    group, commit = Group.join_external(
        info,
        BasicCredential(b"x"),
        h.signature_key(),
        now=NOW,
        ratchet_tree=h.members["m1"].ratchet_tree(),
    )
    for name in list(h.members):
        h.members[name].merge_staged_commit(h.members[name].process(commit))  # type: ignore[arg-type]
    h.members["x"] = group
    h.check()


def test_commit_that_loses_the_race_is_discarded() -> None:
    h = Harness.create(SUITE1, 3)
    a, b, c = list(h.members)
    win = h.members[a].commit()
    lose = h.members[b].commit(remove=[h.members[c].own_leaf_index])
    assert h.members[b].pending_commit is not None
    h.members[b].discard_pending_commit()
    h.accept(a, win)
    h.check()
    # Merging another commit while one is pending discards the pending one.
    pending = h.members[c].commit()
    assert pending.commit != lose.commit
    h.accept(b, h.members[b].commit())
    assert h.members[c].pending_commit is None
    h.check()


def test_own_echo_and_veto_leave_state_unchanged() -> None:
    h = Harness.create(SUITE1, 2)
    a, b = list(h.members)
    wire = h.members[a].encrypt(b"x")
    saved = h.members[a].to_bytes()
    assert isinstance(h.members[a].process(wire), OwnMessage)
    assert h.members[a].to_bytes() == saved
    result = h.members[a].commit()
    before = h.members[b].to_bytes()
    staged = h.members[b].process(result.commit)
    assert isinstance(staged, StagedCommit)
    assert h.members[b].to_bytes() == before  # staged, vetoed: nothing changed


def test_late_messages_within_the_past_epoch_window() -> None:
    config = GroupConfig(max_past_epochs=2)
    h = Harness.create(SUITE1, 2, config)
    a, b = list(h.members)
    late = [h.members[a].encrypt(f"late {i}".encode()) for i in range(3)]
    h.accept(a, h.members[a].commit())
    event = h.members[b].process(late[2])  # reordered, one epoch late
    assert isinstance(event, ApplicationMessage) and event.data == b"late 2"
    h.accept(b, h.members[b].commit())
    assert h.members[b].process(late[0]).data == b"late 0"  # type: ignore[attr-defined]
    h.accept(a, h.members[a].commit())
    before = h.members[b].to_bytes()
    with pytest.raises(ValidationError):  # three epochs late: out of the window
        h.members[b].process(late[1])
    assert h.members[b].to_bytes() == before


def test_padding_hides_short_lengths() -> None:
    h = Harness.create(SUITE1, 2)
    sizes = {len(h.members["m1"].encrypt(b"x" * n)) for n in (1, 5, 20)}
    assert len(sizes) == 1


@pytest.mark.parametrize("suite", SUITES)
def test_state_round_trips_with_pending_commit_and_proposals(suite: int) -> None:
    h = Harness.create(suite, 3)
    a, b, c = list(h.members)
    h.propose(b, h.members[b].propose_update())
    h.members[a].commit()
    for name in list(h.members):
        data = h.members[name].to_bytes()
        h.members[name] = Group.from_bytes(data)
        assert h.members[name].to_bytes() == data
    pending = h.members[a].pending_commit
    assert pending is not None
    h.accept(a, pending)
    h.check()
    h.send(c, b"restored")
    with pytest.raises(DecodeError):
        Group.from_bytes(b"\x09" + h.members[a].to_bytes()[1:])


def test_exporter_and_epoch_authenticator_differ_per_epoch() -> None:
    h = Harness.create(SUITE1, 2)
    first = h.members["m1"].export_secret("label", b"ctx", 32)
    h.accept("m2", h.members["m2"].commit())
    assert h.members["m1"].export_secret("label", b"ctx", 32) != first
    h.check()


# --- proposals from outside the group (§12.1.8) ------------------------------------------


def _outside_proposal(group: Group, sender: Sender, proposal: Proposal, key: object) -> bytes:
    ctx = group.group_context
    cs = get_cipher_suite(ctx.cipher_suite)
    framed = FramedContent(ctx.group_id, ctx.epoch, sender, b"", proposal)
    sig = sign_framed_content(cs, key, WireFormat.PUBLIC_MESSAGE, framed, None)  # type: ignore[arg-type]
    return MLSMessage(PublicMessage(framed, FramedContentAuthData(sig))).to_bytes()


def test_external_sender_and_new_member_proposals() -> None:
    h = Harness.create(SUITE1, 3)
    outsider = h.signature_key()
    ext = ExternalSenders(
        (ExternalSender(outsider.public_key().to_bytes(), BasicCredential(b"server")),)
    ).to_extension()
    h.accept("m1", h.members["m1"].commit(extensions=[ext]))
    remove = _outside_proposal(
        h.members["m1"], Sender.external(0), Remove(h.members["m3"].own_leaf_index), outsider
    )
    forged = _outside_proposal(h.members["m1"], Sender.external(0), Remove(1), h.signature_key())
    assert_rejected(h.members["m2"], forged, VerificationError)
    unknown = _outside_proposal(h.members["m1"], Sender.external(5), Remove(1), outsider)
    assert_rejected(h.members["m2"], unknown, ValidationError)
    bundle = h.key_package("newcomer")
    add = _outside_proposal(
        h.members["m1"],
        Sender.new_member_proposal(),
        Add(bundle.key_package.key_package),
        bundle.signature_private_key,
    )
    not_add = _outside_proposal(
        h.members["m1"], Sender.new_member_proposal(), Remove(1), bundle.signature_private_key
    )
    assert_rejected(h.members["m2"], not_add, ValidationError)
    for name in list(h.members):
        for message in (remove, add):
            event = h.members[name].process(message)
            assert isinstance(event, ProposalReceived) and event.sender_member is None
    result = h.members["m2"].commit(now=NOW)
    applied = h.accept("m2", result)
    assert [m.credential for m in applied.removed] == [BasicCredential(b"m3")]
    assert result.welcome is not None
    h.members["newcomer"] = Group.join(result.welcome, bundle, now=NOW)
    h.check()


def test_no_secret_in_reprs() -> None:
    h = Harness.create(SUITE1, 2)
    group = h.members["m1"]
    pending = group.commit()
    staged = h.members["m2"].process(pending.commit)
    state = group._state
    secrets = state.epoch.secrets
    texts = [repr(group), repr(state), repr(staged), repr(state.pending), repr(secrets)]
    for secret in (
        secrets.exporter_secret,
        secrets.init_secret,
        secrets.membership_key,
        secrets.sender_data_secret,
        state.signature_key.to_bytes(),
        state.epoch.private_keys.leaf_key.to_bytes(),
    ):
        for text in texts:
            assert repr(secret) not in text and secret.hex() not in text
    assert "b'secret'" not in repr(h.members["m2"].process(group.encrypt(b"secret")))
