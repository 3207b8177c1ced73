"""Group end to end: every message kind a Group creates is processed by the others, and
every way a peer's message can be rejected leaves the receiver's state byte-for-byte unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backchannel.mls.credentials import BasicCredential
from backchannel.mls.crypto.suites import CipherSuite, get_cipher_suite
from backchannel.mls.errors import (
    DecodeError,
    MLSError,
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
    AuthenticatedContent,
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    WireFormat,
)
from backchannel.mls.group import Group, GroupConfig
from backchannel.mls.messages import (
    Add,
    Commit,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalRef,
    ReInit,
    Remove,
    Update,
)
from backchannel.mls.protection import protect_public_message, sign_framed_content
from tests.mls.group_harness import NOW, Harness

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


# --- rejections leave the state unchanged ------------------------------------------------


def assert_rejected(group: Group, message: bytes, error: type[MLSError] = MLSError) -> None:
    before = group.to_bytes()
    with pytest.raises(error):
        group.process(message)
    assert group.to_bytes() == before


def forge_commit(
    group: Group, commit: Commit, *, tag: bytes | None = None, sender: Sender | None = None
) -> bytes:
    """A PublicMessage commit signed by ``group``'s member, with any content."""
    st = group._state
    e = st.epoch
    cs = e.suite
    framed = FramedContent(
        e.context.group_id,
        e.context.epoch,
        sender or Sender.member(group.own_leaf_index),
        b"",
        commit,
    )
    sig = sign_framed_content(cs, st.signature_key, WireFormat.PUBLIC_MESSAGE, framed, e.context)
    auth = FramedContentAuthData(sig, tag if tag is not None else bytes(cs.n_h))
    content = AuthenticatedContent(WireFormat.PUBLIC_MESSAGE, framed, auth)
    message = protect_public_message(cs, content, e.context, e.secrets.membership_key)
    return MLSMessage(message).to_bytes()


def forge_proposal(group: Group, proposal: Proposal) -> bytes:
    st = group._state
    e = st.epoch
    cs = e.suite
    framed = FramedContent(
        e.context.group_id, e.context.epoch, Sender.member(group.own_leaf_index), b"", proposal
    )
    sig = sign_framed_content(cs, st.signature_key, WireFormat.PUBLIC_MESSAGE, framed, e.context)
    content = AuthenticatedContent(WireFormat.PUBLIC_MESSAGE, framed, FramedContentAuthData(sig))
    message = protect_public_message(cs, content, e.context, e.secrets.membership_key)
    return MLSMessage(message).to_bytes()


@pytest.fixture
def trio() -> Harness:
    h = Harness.create(SUITE1, 3)
    return h


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def test_reject_malformed_and_foreign_messages(trio: Harness) -> None:
    a, b, _ = (trio.members[n] for n in list(trio.members))
    wire = a.encrypt(b"x")
    assert_rejected(b, b"", DecodeError)
    assert_rejected(b, b"\x00\x01\x00\x02garbage", DecodeError)
    assert_rejected(b, wire[:-3], DecodeError)
    other = Harness.create(SUITE1, 2)
    assert_rejected(b, other.members["m1"].encrypt(b"x"), ValidationError)
    assert_rejected(b, MLSMessage.from_bytes(a.group_info()).to_bytes(), ValidationError)


def test_reject_tampered_and_replayed_private_messages(trio: Harness) -> None:
    a, b, _ = (trio.members[n] for n in list(trio.members))
    wire = a.encrypt(b"payload")
    msg = MLSMessage.from_bytes(wire).body
    assert isinstance(msg, PrivateMessage)
    for field_name in ("ciphertext", "encrypted_sender_data", "authenticated_data"):
        value = getattr(msg, field_name)
        tampered = dataclasses.replace(msg, **{field_name: _flip(value, 0) if value else b"x"})
        assert_rejected(b, MLSMessage(tampered).to_bytes(), VerificationError)
    future = dataclasses.replace(msg, epoch=msg.epoch + 1)
    assert_rejected(b, MLSMessage(future).to_bytes(), ValidationError)
    assert isinstance(b.process(wire), ApplicationMessage)
    assert_rejected(b, wire, ValidationError)  # replay


def test_reject_too_far_ahead_generation() -> None:
    h = Harness.create(SUITE1, 2, GroupConfig(maximum_forward_distance=3))
    a, b = (h.members[n] for n in list(h.members))
    wires = [a.encrypt(b"%d" % i) for i in range(6)]
    assert_rejected(b, wires[5], ValidationError)
    assert b.process(wires[3]).data == b"3"  # type: ignore[attr-defined]


def test_reject_bad_public_messages() -> None:
    h = Harness.create(SUITE1, 3, PUBLIC)
    a, b, c = (h.members[n] for n in list(h.members))
    proposal = a.propose_update()
    msg = MLSMessage.from_bytes(proposal).body
    assert isinstance(msg, PublicMessage) and msg.membership_tag is not None
    bad_tag = dataclasses.replace(msg, membership_tag=_flip(msg.membership_tag, 0))
    assert_rejected(b, MLSMessage(bad_tag).to_bytes(), VerificationError)
    bad_sig = dataclasses.replace(msg, auth=FramedContentAuthData(_flip(msg.auth.signature, 3)))
    assert_rejected(b, MLSMessage(bad_sig).to_bytes(), VerificationError)
    ghost = dataclasses.replace(
        msg, content=dataclasses.replace(msg.content, sender=Sender.member(7))
    )
    assert_rejected(b, MLSMessage(ghost).to_bytes(), ValidationError)
    assert isinstance(b.process(proposal), ProposalReceived)
    assert_rejected(b, proposal, ValidationError)  # the same proposal twice
    # An honest commit with a wrong confirmation tag (membership tag recomputed).
    result = c.commit()
    body = MLSMessage.from_bytes(result.commit).body
    assert isinstance(body, PublicMessage)
    auth = FramedContentAuthData(body.auth.signature, bytes(32))
    e = c._state.epoch
    forged = protect_public_message(
        e.suite,
        AuthenticatedContent(WireFormat.PUBLIC_MESSAGE, body.content, auth),
        e.context,
        e.secrets.membership_key,
    )
    assert_rejected(b, MLSMessage(forged).to_bytes(), VerificationError)


def test_reject_commit_with_unknown_reference(trio: Harness) -> None:
    a, b, c = list(trio.members)
    proposal = trio.members[b].propose_update()
    assert isinstance(trio.members[a].process(proposal), ProposalReceived)
    result = trio.members[a].commit()  # refers to b's Update, which c never got
    assert_rejected(trio.members[c], result.commit, ValidationError)


def _invalid_commits(h: Harness) -> list[tuple[str, Callable[[], bytes], type[MLSError]]]:
    a, b, c = (h.members[n] for n in list(h.members))
    cs = get_cipher_suite(SUITE1)
    leaf_b, leaf_c = b.own_leaf_index, c.own_leaf_index
    update_a = MLSMessage.from_bytes(a.propose_update()).body
    del update_a
    kp = h.key_package("x").key_package.key_package
    twin = h.key_package("y").key_package.key_package
    bad_kp = dataclasses.replace(kp, signature=_flip(kp.signature, 0))
    nonce = bytes(cs.n_h)
    psk = PreSharedKey(PreSharedKeyID.external(b"unknown", nonce))
    gce = GroupContextExtensions(())
    reinit = ReInit(b"g", 1, SUITE1, ())
    used = h.members["m1"]._state.used_key_packages
    assert used
    return [
        (
            "removes the committer",
            lambda: forge_commit(a, Commit((Remove(a.own_leaf_index),), None)),
            ValidationError,
        ),
        (
            "remove without path",
            lambda: forge_commit(a, Commit((Remove(leaf_b),), None)),
            ValidationError,
        ),
        ("empty without path", lambda: forge_commit(a, Commit((), None)), ValidationError),
        (
            "two removes of one leaf",
            lambda: forge_commit(a, Commit((Remove(leaf_b), Remove(leaf_b)), None)),
            ValidationError,
        ),
        (
            "remove of a blank leaf",
            lambda: forge_commit(a, Commit((Remove(9),), None)),
            ValidationError,
        ),
        ("two GCEs", lambda: forge_commit(a, Commit((gce, gce), None)), ValidationError),
        (
            "ReInit with others",
            lambda: forge_commit(a, Commit((reinit, Remove(leaf_c)), None)),
            ValidationError,
        ),
        (
            "ExternalInit from a member",
            lambda: forge_commit(a, Commit((ExternalInit(b"k"),), None)),
            ValidationError,
        ),
        (
            "inline own Update",
            lambda: forge_commit(a, Commit((Update(a._state.epoch.tree.leaf_node(0)),), None)),
            ValidationError,
        ),  # type: ignore[arg-type]
        (
            "Add with a bad signature",
            lambda: forge_commit(a, Commit((Add(bad_kp),), None)),
            VerificationError,
        ),
        (
            "Add of an existing member",
            lambda: forge_commit(
                a,
                Commit(
                    (
                        Add(twin),
                        Add(twin),
                    ),
                    None,
                ),
            ),
            ValidationError,
        ),
        ("unknown PSK", lambda: forge_commit(a, Commit((psk,), None)), ValidationError),
        (
            "unknown reference",
            lambda: forge_commit(a, Commit((ProposalRef(bytes(32)),), None)),
            ValidationError,
        ),
        (
            "bad confirmation tag",
            lambda: forge_commit(a, Commit((Add(kp),), None)),
            VerificationError,
        ),
        (
            "external sender commit",
            lambda: forge_commit(a, Commit((), None), sender=Sender.external(0)),
            ValidationError,
        ),
    ]


def test_every_invalid_commit_is_rejected_without_change() -> None:
    h = Harness.create(SUITE1, 3)
    for name, make, error in _invalid_commits(h):
        message = make()
        for receiver in ("m2", "m3"):
            try:
                assert_rejected(h.members[receiver], message, error)
            except AssertionError as exc:  # pragma: no cover - names the failing case
                raise AssertionError(f"{name}: {exc}") from exc
    h.accept("m1", h.members["m1"].commit())
    h.check()


def test_reject_reused_key_package() -> None:
    h = Harness.create(SUITE1, 2)
    bundle = h.key_package("x")
    h.accept("m1", h.members["m1"].commit(add=[bundle.key_package.to_bytes()], now=NOW))
    # The same KeyPackage again (after its member left) is refused by committer and receivers.
    h.accept("m2", h.members["m2"].commit(remove=[2]))
    with pytest.raises(ValidationError):
        h.members["m1"].commit(add=[bundle.key_package.to_bytes()], now=NOW)
    forged = forge_commit(h.members["m1"], Commit((Add(bundle.key_package.key_package),), None))
    assert_rejected(h.members["m2"], forged, ValidationError)


def test_removed_member_reads_nothing_new() -> None:
    h = Harness.create(SUITE1, 3)
    h.remove("m1", "m3")
    gone = h.removed["m3"]
    assert not gone.active
    with pytest.raises(UsageError):
        gone.commit()
    assert_rejected(gone, h.members["m1"].encrypt(b"secret"), ValidationError)
    h.accept("m2", h.members["m2"].commit())
    assert_rejected(gone, h.members["m2"].encrypt(b"secret"), ValidationError)


def test_reject_messages_from_removed_member() -> None:
    h = Harness.create(SUITE1, 3)
    stale = h.members["m3"].encrypt(b"before")
    late_proposal = h.members["m3"].propose_update()
    h.remove("m1", "m3")
    assert h.members["m2"].process(stale).data == b"before"  # type: ignore[attr-defined]
    assert_rejected(h.members["m2"], late_proposal, ValidationError)


def test_reject_bad_external_commits() -> None:
    h = Harness.create(SUITE1, 2)
    info = h.members["m1"].group_info()
    _, commit = Group.join_external(info, BasicCredential(b"x"), h.signature_key(), now=NOW)
    body = MLSMessage.from_bytes(commit).body
    assert isinstance(body, PublicMessage)
    bad_sig = dataclasses.replace(
        body, auth=dataclasses.replace(body.auth, signature=_flip(body.auth.signature, 1))
    )
    assert_rejected(h.members["m2"], MLSMessage(bad_sig).to_bytes(), VerificationError)
    content = body.content.content
    assert isinstance(content, Commit)
    no_init = dataclasses.replace(content, proposals=())
    no_init_msg = dataclasses.replace(
        body, content=dataclasses.replace(body.content, content=no_init)
    )
    assert_rejected(h.members["m2"], MLSMessage(no_init_msg).to_bytes(), ValidationError)
    # A GroupInfo with a broken signature cannot be used to join.
    gi = MLSMessage.from_bytes(info).body
    broken = dataclasses.replace(gi, signature=_flip(gi.signature, 2))  # type: ignore[type-var]
    with pytest.raises(VerificationError):
        Group.join_external(MLSMessage(broken).to_bytes(), BasicCredential(b"y"), h.signature_key())
    assert isinstance(h.members["m2"].process(commit), StagedCommit)


def test_reject_bad_welcome() -> None:
    h = Harness.create(SUITE1, 1)
    mine, other = h.key_package("a"), h.key_package("b")
    result = h.members["m1"].commit(add=[mine.key_package.to_bytes()], now=NOW)
    assert result.welcome is not None
    with pytest.raises(ValidationError):
        Group.join(result.welcome, other)
    with pytest.raises(ValidationError):
        Group.join(result.commit, mine)
    body = MLSMessage.from_bytes(result.welcome).body
    broken = dataclasses.replace(body, encrypted_group_info=_flip(body.encrypted_group_info, 5))  # type: ignore[type-var]
    with pytest.raises(VerificationError):
        Group.join(MLSMessage(broken).to_bytes(), mine)


def test_stale_staged_commit_cannot_be_merged() -> None:
    h = Harness.create(SUITE1, 3)
    a, b, c = (h.members[n] for n in list(h.members))
    first = a.commit()
    second = b.commit()
    staged_second = c.process(second.commit)
    h.members["m2"].discard_pending_commit()
    h.accept("m1", first)
    before = c.to_bytes()
    with pytest.raises(UsageError):
        c.merge_staged_commit(staged_second)  # type: ignore[arg-type]
    assert c.to_bytes() == before
    assert_rejected(c, second.commit, ValidationError)  # an old epoch's handshake


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


# --- mutated messages: only typed errors, never a change ---------------------------------

_MUTATION_CASES: dict[str, tuple[Group, list[bytes]]] = {}


def _mutation_fixture(public: bool) -> tuple[Group, list[bytes]]:
    key = "public" if public else "private"
    if key not in _MUTATION_CASES:
        h = Harness.create(SUITE1, 3, PUBLIC if public else GroupConfig())
        a, b = h.members["m1"], h.members["m2"]
        messages = [
            a.encrypt(b"application"),
            a.commit(add=[h.key_package("z").key_package.to_bytes()], now=NOW).commit,
            a.propose_update(),
            a.propose_remove(2),
            Group.join_external(b.group_info(), BasicCredential(b"e"), h.signature_key())[1],
        ]
        for message in messages:  # each original is valid on its own
            Group.from_bytes(b.to_bytes()).process(message)
        _MUTATION_CASES[key] = (b, messages)
    return _MUTATION_CASES[key]


@settings(max_examples=150, deadline=None)
@given(
    public=st.booleans(),
    which=st.integers(0, 4),
    position=st.integers(0, 10_000),
    flip=st.integers(1, 255),
    cut=st.booleans(),
)
def test_mutated_messages_raise_typed_errors_only(
    public: bool, which: int, position: int, flip: int, cut: bool
) -> None:
    group, messages = _mutation_fixture(public)
    original = messages[which]
    at = position % len(original)
    mutated = (
        original[:at] if cut else original[:at] + bytes([original[at] ^ flip]) + original[at + 1 :]
    )
    before = group.to_bytes()
    try:
        group.process(mutated)
    except MLSError:
        assert group.to_bytes() == before
    else:  # a mutation the protocol does not authenticate must not change anything either
        raise AssertionError("a mutated message was accepted")
