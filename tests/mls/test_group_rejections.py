"""Every way a peer's message can be rejected leaves the receiver's state byte-for-byte
unchanged: forged, tampered, replayed, stale and mutated messages raise only MLS errors.
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
    ProposalReceived,
    StagedCommit,
)
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
from tests.mls.group_harness import NOW, Harness, assert_rejected

SUITES = [
    pytest.param(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519, id="suite1"),
    pytest.param(
        CipherSuite.MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519, id="suite-0xF001-hybrid"
    ),
]
PUBLIC = GroupConfig(encrypt_handshake=False)
SUITE1 = CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519


# --- rejections leave the state unchanged ------------------------------------------------


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
