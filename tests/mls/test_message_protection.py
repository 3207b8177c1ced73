"""Message-protection vectors (RFC 9420 §6) and negative tests for Public/PrivateMessage.

Schema of ``message-protection.json`` (one object per cipher suite; sender is leaf 1 of
a 2-leaf tree; the GroupContext has empty extensions)::

    {
      "cipher_suite": uint16,
      "group_id": hex, "epoch": uint64, "tree_hash": hex, "confirmed_transcript_hash": hex,
      "signature_priv": hex, "signature_pub": hex,
      "encryption_secret": hex, "sender_data_secret": hex, "membership_key": hex,
      "proposal": hex,          # Proposal
      "proposal_pub": hex,      # MLSMessage(PublicMessage)
      "proposal_priv": hex,     # MLSMessage(PrivateMessage)
      "commit": hex, "commit_pub": hex, "commit_priv": hex,
      "application": hex,       # raw application data
      "application_priv": hex   # MLSMessage(PrivateMessage)
    }
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from backchannel.mls.crypto.signatures import SignaturePrivateKey, SignaturePublicKey
from backchannel.mls.crypto.suites import CipherSuiteImpl, get_cipher_suite
from backchannel.mls.errors import DecodeError, UsageError, ValidationError, VerificationError
from backchannel.mls.framing import (
    AuthenticatedContent,
    Content,
    FramedContent,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    WireFormat,
)
from backchannel.mls.messages import Commit, GroupContext, Proposal
from backchannel.mls.protection import (
    authenticate,
    protect_private_message,
    protect_public_message,
    unprotect_private_message,
    unprotect_public_message,
)
from backchannel.mls.secret_tree import SecretTree
from tests.vectors import load_vectors

VECTORS = [
    pytest.param(v, id=f"suite={v['cipher_suite']}") for v in load_vectors("message-protection")
]
KINDS = ["proposal", "commit", "application"]
SENDER = 1


def h(value: str) -> bytes:
    return bytes.fromhex(value)


class Fixture:
    """The parsed parameters of one vector."""

    def __init__(self, v: dict[str, Any]) -> None:
        self.v = v
        self.cs: CipherSuiteImpl = get_cipher_suite(v["cipher_suite"])
        self.context = GroupContext(
            1,
            v["cipher_suite"],
            h(v["group_id"]),
            v["epoch"],
            h(v["tree_hash"]),
            h(v["confirmed_transcript_hash"]),
            (),
        )
        scheme = self.cs.signature_scheme
        self.priv = SignaturePrivateKey.from_bytes(scheme, h(v["signature_priv"]))
        self.pub = SignaturePublicKey.from_bytes(scheme, h(v["signature_pub"]))
        self.membership_key = h(v["membership_key"])
        self.sender_data_secret = h(v["sender_data_secret"])

    def tree(self) -> SecretTree:
        return SecretTree(self.cs, h(self.v["encryption_secret"]), 2)

    def keys(self, leaf: int) -> SignaturePublicKey:
        if leaf != SENDER:
            raise ValidationError("no member at that leaf")
        return self.pub

    def raw(self, kind: str) -> bytes:
        return h(self.v[kind])

    def content(self, kind: str) -> Content:
        raw = self.raw(kind)
        if kind == "proposal":
            return Proposal.from_bytes(raw)
        if kind == "commit":
            return Commit.from_bytes(raw)
        return raw

    def authenticated(self, kind: str, wire_format: WireFormat) -> AuthenticatedContent:
        framed = FramedContent(
            self.context.group_id,
            self.context.epoch,
            Sender.member(SENDER),
            b"",
            self.content(kind),
        )
        tag = bytes(self.cs.n_h) if kind == "commit" else None
        return authenticate(self.cs, self.priv, wire_format, framed, self.context, tag)

    def unprotect_private(self, message: PrivateMessage, tree: SecretTree) -> AuthenticatedContent:
        return unprotect_private_message(
            self.cs, message, self.context, tree, self.sender_data_secret, self.keys
        )


def encoded(content: Content) -> bytes:
    return content if isinstance(content, bytes) else content.to_bytes()


def body(data: str) -> Any:
    return MLSMessage.from_bytes(h(data)).body


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("vector", VECTORS)
def test_public_message(vector: dict[str, Any], kind: str) -> None:
    f = Fixture(vector)
    if kind != "application":
        message = body(vector[f"{kind}_pub"])
        assert isinstance(message, PublicMessage)
        out = unprotect_public_message(f.cs, message, f.context, f.membership_key, f.pub)
        assert encoded(out.content.content) == f.raw(kind)
        mine = protect_public_message(
            f.cs, f.authenticated(kind, WireFormat.PUBLIC_MESSAGE), f.context, f.membership_key
        )
        mine = PublicMessage.from_bytes(mine.to_bytes())
        out = unprotect_public_message(f.cs, mine, f.context, f.membership_key, f.pub)
        assert encoded(out.content.content) == f.raw(kind)
    else:
        with pytest.raises(UsageError):
            protect_public_message(
                f.cs, f.authenticated(kind, WireFormat.PUBLIC_MESSAGE), f.context, f.membership_key
            )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("vector", VECTORS)
def test_private_message(vector: dict[str, Any], kind: str) -> None:
    f = Fixture(vector)
    message = body(vector[f"{kind}_priv"])
    assert isinstance(message, PrivateMessage)
    out = f.unprotect_private(message, f.tree())
    assert out.content.sender == Sender.member(SENDER)
    assert encoded(out.content.content) == f.raw(kind)

    sender_tree, receiver_tree = f.tree(), f.tree()
    for padding_block in (0, 64):
        mine = protect_private_message(
            f.cs,
            f.authenticated(kind, WireFormat.PRIVATE_MESSAGE),
            sender_tree,
            f.sender_data_secret,
            padding_block=padding_block,
        )
        mine = PrivateMessage.from_bytes(mine.to_bytes())
        out = f.unprotect_private(mine, receiver_tree)
        assert encoded(out.content.content) == f.raw(kind)
        # The key was consumed: a replay is refused.
        with pytest.raises(ValidationError):
            f.unprotect_private(mine, receiver_tree)


@pytest.fixture
def fx() -> Fixture:
    return Fixture(load_vectors("message-protection")[0])


def test_padding_hides_length(fx: Fixture) -> None:
    tree = fx.tree()
    sizes = set()
    for data in (b"a", b"a" * 40):
        framed = FramedContent(fx.context.group_id, fx.context.epoch, Sender.member(1), b"", data)
        content = authenticate(fx.cs, fx.priv, WireFormat.PRIVATE_MESSAGE, framed, fx.context)
        message = protect_private_message(
            fx.cs, content, tree, fx.sender_data_secret, padding_block=256
        )
        sizes.add(len(message.ciphertext))
    assert len(sizes) == 1


def test_private_message_tampering(fx: Fixture) -> None:
    content = fx.authenticated("application", WireFormat.PRIVATE_MESSAGE)
    message = protect_private_message(fx.cs, content, fx.tree(), fx.sender_data_secret)
    ciphertext = bytearray(message.ciphertext)
    ciphertext[-1] ^= 1
    cases = [
        replace(message, ciphertext=bytes(ciphertext)),
        replace(message, authenticated_data=b"x"),
        replace(message, encrypted_sender_data=message.encrypted_sender_data[:-1]),
    ]
    for bad in cases:
        tree = fx.tree()
        with pytest.raises(VerificationError):
            fx.unprotect_private(bad, tree)
        # A failed attempt leaves the key in place for the genuine message.
        fx.unprotect_private(message, tree)
    with pytest.raises(VerificationError):
        unprotect_private_message(fx.cs, message, fx.context, fx.tree(), bytes(fx.cs.n_h), fx.keys)
    with pytest.raises(ValidationError):
        fx.unprotect_private(replace(message, epoch=message.epoch + 1), fx.tree())


def test_private_message_bad_signature_keeps_key(fx: Fixture) -> None:
    content = fx.authenticated("application", WireFormat.PRIVATE_MESSAGE)
    message = protect_private_message(fx.cs, content, fx.tree(), fx.sender_data_secret)
    other = SignaturePrivateKey.generate(fx.cs.signature_scheme).public_key()
    tree = fx.tree()
    with pytest.raises(VerificationError):
        unprotect_private_message(
            fx.cs, message, fx.context, tree, fx.sender_data_secret, lambda _: other
        )
    fx.unprotect_private(message, tree)


def test_private_message_bad_reuse_guard_and_wire_format(fx: Fixture) -> None:
    with pytest.raises(ValueError, match="reuse_guard"):
        protect_private_message(
            fx.cs,
            fx.authenticated("application", WireFormat.PRIVATE_MESSAGE),
            fx.tree(),
            fx.sender_data_secret,
            reuse_guard=b"abc",
        )
    with pytest.raises(UsageError):
        protect_private_message(
            fx.cs,
            fx.authenticated("application", WireFormat.PUBLIC_MESSAGE),
            fx.tree(),
            fx.sender_data_secret,
        )


def test_public_message_tampering(fx: Fixture) -> None:
    message = protect_public_message(
        fx.cs,
        fx.authenticated("proposal", WireFormat.PUBLIC_MESSAGE),
        fx.context,
        fx.membership_key,
    )
    assert message.membership_tag is not None
    with pytest.raises(VerificationError):
        unprotect_public_message(fx.cs, message, fx.context, bytes(fx.cs.n_h), fx.pub)
    bad_tag = replace(message, membership_tag=bytes(len(message.membership_tag)))
    with pytest.raises(VerificationError):
        unprotect_public_message(fx.cs, bad_tag, fx.context, fx.membership_key, fx.pub)
    other = SignaturePrivateKey.generate(fx.cs.signature_scheme).public_key()
    with pytest.raises(VerificationError):
        unprotect_public_message(fx.cs, message, fx.context, fx.membership_key, other)
    moved = replace(fx.context, epoch=fx.context.epoch + 1)
    with pytest.raises(ValidationError):
        unprotect_public_message(fx.cs, message, moved, fx.membership_key, fx.pub)
    # The signature covers the wire format: a PrivateMessage signature fails here.
    private_signed = fx.authenticated("proposal", WireFormat.PRIVATE_MESSAGE)
    forged = PublicMessage(private_signed.content, private_signed.auth, message.membership_tag)
    with pytest.raises(VerificationError):
        unprotect_public_message(fx.cs, forged, fx.context, fx.membership_key, fx.pub)


def test_malformed_private_plaintext_is_a_decode_error(fx: Fixture) -> None:
    """Non-zero padding inside a valid AEAD ciphertext is a decode error (§6.3.1)."""
    tree = fx.tree()
    content = fx.authenticated("application", WireFormat.PRIVATE_MESSAGE)
    message = protect_private_message(fx.cs, content, tree, fx.sender_data_secret)
    receiver = fx.tree()
    key = receiver.get(SENDER, tree_type(), 0)
    plaintext = fx.cs.aead_open(
        key.key, nonce_of(fx, message, key.nonce), aad_of(message), message.ciphertext
    )
    resealed = fx.cs.aead_seal(
        key.key, nonce_of(fx, message, key.nonce), aad_of(message), plaintext + b"\x01"
    )
    with pytest.raises(DecodeError):
        fx.unprotect_private(replace(message, ciphertext=resealed), receiver)


def tree_type() -> Any:
    from backchannel.mls.secret_tree import RatchetType

    return RatchetType.APPLICATION


def aad_of(message: PrivateMessage) -> bytes:
    from backchannel.mls.framing import PrivateContentAAD

    return PrivateContentAAD(
        message.group_id, message.epoch, message.content_type, message.authenticated_data
    ).to_bytes()


def nonce_of(fx: Fixture, message: PrivateMessage, nonce: bytes) -> bytes:
    from backchannel.mls.framing import SenderData, SenderDataAAD
    from backchannel.mls.secret_tree import sender_data_key_nonce

    key, sd_nonce = sender_data_key_nonce(fx.cs, fx.sender_data_secret, message.ciphertext)
    aad = SenderDataAAD(message.group_id, message.epoch, message.content_type).to_bytes()
    guard = SenderData.from_bytes(
        fx.cs.aead_open(key, sd_nonce, aad, message.encrypted_sender_data)
    ).reuse_guard
    return bytes(a ^ b for a, b in zip(nonce[:4], guard, strict=True)) + nonce[4:]
