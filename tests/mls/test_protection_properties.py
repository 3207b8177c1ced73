"""Tamper properties of message protection (RFC 9420 §6) and HPKE of the post-quantum suites.

For suites 1, 3 and the default hybrid suite (0xF001):

* a PrivateMessage with any one byte changed (every position, and hypothesis-drawn
  positions and XOR values) fails to unprotect with an :class:`MLSError` subclass and
  nothing else, and the receiver's secret tree still decrypts the original afterwards
  (a forged message must not burn or skip a key, §9.2);
* the same for a member's PublicMessage, whose membership tag and signature cover
  every byte.

For every post-quantum suite (0xF001-0xF008): HPKE seal/open and EncryptWithLabel round
trips with the suite's own KDF and AEAD, wrong-key failures, and, for the hybrid KEMs,
a check that each of the two components (ML-KEM and the ECDH group) is needed; and an
X-Wing known answer (draft-connolly-cfrg-xwing-kem-08) for the default suite's KEM.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backchannel.mls.crypto.hpke import HPKEPrivateKey, HPKEPublicKey, KemId
from backchannel.mls.crypto.kem import get_kem
from backchannel.mls.crypto.labels import decrypt_with_label, encrypt_with_label
from backchannel.mls.crypto.signatures import SignaturePrivateKey, SignaturePublicKey
from backchannel.mls.crypto.suites import (
    DEFAULT_CIPHER_SUITE,
    PRIVATE_USE_BASE,
    CipherSuite,
    CipherSuiteImpl,
    get_cipher_suite,
)
from backchannel.mls.errors import MLSError, ValidationError, VerificationError
from backchannel.mls.framing import (
    AuthenticatedContent,
    Content,
    FramedContent,
    FramedContentAuthData,
    PrivateMessage,
    PublicMessage,
    Sender,
    WireFormat,
)
from backchannel.mls.key_schedule import EpochSecrets
from backchannel.mls.messages import Commit, GroupContext, Remove
from backchannel.mls.protection import (
    authenticate,
    protect_private_message,
    protect_public_message,
    sign_framed_content,
    unprotect_private_message,
    unprotect_public_message,
)
from backchannel.mls.secret_tree import SecretTree

SUITES = [
    pytest.param(CipherSuite(1), id="suite=1"),
    pytest.param(CipherSuite(3), id="suite=3"),
    pytest.param(DEFAULT_CIPHER_SUITE, id=f"suite={DEFAULT_CIPHER_SUITE.value:#x}"),
]
PQ_SUITES = [
    pytest.param(s, id=f"suite={s.value:#x}") for s in CipherSuite if s >= PRIVATE_USE_BASE
]
HYBRID_KEMS = {KemId.MLKEM768_X25519, KemId.MLKEM768_P256, KemId.MLKEM1024_P384}
HYBRID_SUITES = [p for p in PQ_SUITES if get_cipher_suite(p.values[0]).kem_id in HYBRID_KEMS]

N_LEAVES = 4
SENDER = 2
PRIVATE_KINDS = ["application", "proposal", "commit"]
PUBLIC_KINDS = ["proposal", "commit"]
#: A few XOR values for the every-position sweep: low bit, high bit, all bits.
SWEEP_XORS = (0x01, 0x80, 0xFF)

FLIPS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)


@dataclass(frozen=True)
class Epoch:
    """One epoch of a 4-member group in which leaf 2 sends."""

    cs: CipherSuiteImpl
    context: GroupContext
    secrets: EpochSecrets
    signer: SignaturePrivateKey
    verifier: SignaturePublicKey

    def tree(self) -> SecretTree:
        return SecretTree(self.cs, self.secrets.encryption_secret, N_LEAVES)

    def signature_key(self, leaf: int) -> SignaturePublicKey:
        if leaf != SENDER:
            raise ValidationError("no member at that leaf")
        return self.verifier

    def framed(self, kind: str) -> FramedContent:
        content: Content
        if kind == "application":
            content = bytes(range(256)) * 4  # 1 KiB
        elif kind == "proposal":
            content = Remove(1)
        else:
            content = Commit((Remove(3),), None)
        ctx = self.context
        return FramedContent(ctx.group_id, ctx.epoch, Sender.member(SENDER), b"aad", content)

    def authenticated(self, kind: str, wire_format: WireFormat) -> AuthenticatedContent:
        framed = self.framed(kind)
        if kind != "commit":
            return authenticate(self.cs, self.signer, wire_format, framed, self.context)
        # A committer signs first, then derives the confirmation tag (§6.1, §8.2); any
        # tag of the right length is enough here.
        signature = sign_framed_content(self.cs, self.signer, wire_format, framed, self.context)
        tag = self.secrets.confirmation_tag(self.cs.hash(signature))
        return AuthenticatedContent(wire_format, framed, FramedContentAuthData(signature, tag))

    def unprotect_private(self, data: bytes, tree: SecretTree) -> AuthenticatedContent:
        return unprotect_private_message(
            self.cs,
            PrivateMessage.from_bytes(data),
            self.context,
            tree,
            self.secrets.sender_data_secret,
            self.signature_key,
        )

    def unprotect_public(self, data: bytes) -> AuthenticatedContent:
        return unprotect_public_message(
            self.cs,
            PublicMessage.from_bytes(data),
            self.context,
            self.secrets.membership_key,
            self.verifier,
        )


@cache
def epoch(suite: CipherSuite) -> Epoch:
    cs = get_cipher_suite(suite)
    context = GroupContext(1, suite, b"room-7f3a", 42, cs.hash(b"tree"), cs.hash(b"transcript"), ())
    secrets = EpochSecrets.derive(
        cs, cs.hash(b"init"), cs.hash(b"commit"), None, context.to_bytes()
    )
    signer = SignaturePrivateKey.generate(cs.signature_scheme)
    return Epoch(cs, context, secrets, signer, signer.public_key())


@cache
def private_wire(suite: CipherSuite, kind: str) -> tuple[bytes, AuthenticatedContent]:
    """A PrivateMessage (encoded) of ``kind`` from leaf 2, and what it must decrypt to."""
    ep = epoch(suite)
    content = ep.authenticated(kind, WireFormat.PRIVATE_MESSAGE)
    message = protect_private_message(
        ep.cs, content, ep.tree(), ep.secrets.sender_data_secret, padding_block=64
    )
    return message.to_bytes(), content


@cache
def public_wire(suite: CipherSuite, kind: str) -> tuple[bytes, AuthenticatedContent]:
    """A member's PublicMessage (encoded, with membership tag) and its content."""
    ep = epoch(suite)
    content = ep.authenticated(kind, WireFormat.PUBLIC_MESSAGE)
    message = protect_public_message(ep.cs, content, ep.context, ep.secrets.membership_key)
    assert message.membership_tag is not None
    return message.to_bytes(), content


def flipped(data: bytes, position: int, xor: int) -> bytes:
    out = bytearray(data)
    out[position] ^= xor
    return bytes(out)


# --- PrivateMessage -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", PRIVATE_KINDS)
@pytest.mark.parametrize("suite", SUITES)
def test_private_message_opens_untampered(suite: CipherSuite, kind: str) -> None:
    """The baseline the tamper tests rely on: the original opens, once."""
    ep = epoch(suite)
    wire, content = private_wire(suite, kind)
    tree = ep.tree()
    assert ep.unprotect_private(wire, tree) == content
    with pytest.raises(ValidationError):
        ep.unprotect_private(wire, tree)


@pytest.mark.parametrize("kind", PRIVATE_KINDS)
@pytest.mark.parametrize("suite", SUITES)
def test_private_message_every_byte_flipped_fails(suite: CipherSuite, kind: str) -> None:
    ep = epoch(suite)
    wire, content = private_wire(suite, kind)
    tree = ep.tree()
    for position in range(len(wire)):
        for xor in SWEEP_XORS:
            with pytest.raises(MLSError):
                ep.unprotect_private(flipped(wire, position, xor), tree)
    # Hundreds of forgeries later, the tree still holds the key of the real message.
    assert ep.unprotect_private(wire, tree) == content


@pytest.mark.parametrize("kind", PRIVATE_KINDS)
@pytest.mark.parametrize("suite", SUITES)
@FLIPS
@given(data=st.data())
def test_private_message_any_flip_fails_and_keeps_the_key(
    suite: CipherSuite, kind: str, data: st.DataObject
) -> None:
    ep = epoch(suite)
    wire, content = private_wire(suite, kind)
    tree = ep.tree()
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(wire) - 1), st.integers(1, 255)), min_size=1, max_size=4
        ),
        label="flips",
    )
    for position, xor in flips:
        with pytest.raises(MLSError):
            ep.unprotect_private(flipped(wire, position, xor), tree)
    assert ep.unprotect_private(wire, tree) == content


# --- PublicMessage ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PUBLIC_KINDS)
@pytest.mark.parametrize("suite", SUITES)
def test_public_message_every_byte_flipped_fails(suite: CipherSuite, kind: str) -> None:
    ep = epoch(suite)
    wire, content = public_wire(suite, kind)
    assert ep.unprotect_public(wire) == content
    for position in range(len(wire)):
        for xor in SWEEP_XORS:
            with pytest.raises(MLSError):
                ep.unprotect_public(flipped(wire, position, xor))


@pytest.mark.parametrize("kind", PUBLIC_KINDS)
@pytest.mark.parametrize("suite", SUITES)
@FLIPS
@given(data=st.data())
def test_public_message_any_flip_fails(suite: CipherSuite, kind: str, data: st.DataObject) -> None:
    ep = epoch(suite)
    wire, content = public_wire(suite, kind)
    position = data.draw(st.integers(0, len(wire) - 1), label="position")
    xor = data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(MLSError):
        ep.unprotect_public(flipped(wire, position, xor))
    assert ep.unprotect_public(wire) == content


@pytest.mark.parametrize("suite", SUITES)
def test_public_message_needs_this_epochs_membership_key(suite: CipherSuite) -> None:
    ep = epoch(suite)
    wire, _ = public_wire(suite, "proposal")
    with pytest.raises(VerificationError):
        unprotect_public_message(
            ep.cs,
            PublicMessage.from_bytes(wire),
            ep.context,
            ep.secrets.confirmation_key,  # a key of the right length, but not this one
            ep.verifier,
        )


# --- HPKE of the post-quantum suites ------------------------------------------------------

PLAINTEXT = b"path secret " * 8


@pytest.mark.parametrize("suite", PQ_SUITES)
def test_pq_suite_hpke_round_trip_and_wrong_key(suite: CipherSuite) -> None:
    cs = get_cipher_suite(suite)
    hpke = cs.hpke
    sk = HPKEPrivateKey.generate(cs.kem_id)
    pk = HPKEPublicKey.from_bytes(cs.kem_id, sk.public_key().to_bytes())
    other = HPKEPrivateKey.generate(cs.kem_id)
    for aad in (b"", b"aad"):  # both the cryptography path and the hand-written one
        enc, ct = hpke.seal(pk, b"info", aad, PLAINTEXT)
        assert len(enc) == hpke.n_enc
        assert len(ct) == len(PLAINTEXT) + 16
        assert hpke.open(sk, enc, b"info", aad, ct) == PLAINTEXT
        with pytest.raises(VerificationError):
            hpke.open(other, enc, b"info", aad, ct)

    # EncryptWithLabel is how MLS uses HPKE (UpdatePath, Welcome: RFC 9420 §5.1.3).
    kem_output, ciphertext = encrypt_with_label(cs, pk, "UpdatePathNode", b"ctx", PLAINTEXT)
    assert decrypt_with_label(cs, sk, "UpdatePathNode", b"ctx", kem_output, ciphertext) == (
        PLAINTEXT
    )
    for key, label, context in (
        (other, "UpdatePathNode", b"ctx"),
        (sk, "Welcome", b"ctx"),
        (sk, "UpdatePathNode", b"ctx2"),
    ):
        with pytest.raises(VerificationError):
            decrypt_with_label(cs, key, label, context, kem_output, ciphertext)

    # DeriveKeyPair keys (as for path secrets and the external key) work the same way.
    derived = HPKEPrivateKey.derive(cs.kem_id, cs.hash(b"node secret"))
    kem_output, ciphertext = encrypt_with_label(
        cs, derived.public_key(), "UpdatePathNode", b"", PLAINTEXT
    )
    again = HPKEPrivateKey.derive(cs.kem_id, cs.hash(b"node secret"))
    assert decrypt_with_label(cs, again, "UpdatePathNode", b"", kem_output, ciphertext) == (
        PLAINTEXT
    )
    stranger = HPKEPrivateKey.derive(cs.kem_id, cs.hash(b"another node secret"))
    with pytest.raises(VerificationError):
        decrypt_with_label(cs, stranger, "UpdatePathNode", b"", kem_output, ciphertext)


def _split(kem_id: KemId) -> tuple[int, int]:
    """(length of the ML-KEM public key, of the ML-KEM ciphertext) inside a hybrid's."""
    kem: Any = get_kem(kem_id)
    return kem.n_ek, kem.n_ct


@pytest.mark.parametrize("suite", HYBRID_SUITES)
def test_hybrid_needs_both_components(suite: CipherSuite) -> None:
    """A hybrid stays secret while either component holds, so each must count."""
    cs = get_cipher_suite(suite)
    hpke = cs.hpke
    n_ek, n_ct = _split(cs.kem_id)
    alice = HPKEPrivateKey.generate(cs.kem_id)
    mallory = HPKEPrivateKey.generate(cs.kem_id)
    a, m = alice.public_key().to_bytes(), mallory.public_key().to_bytes()

    # A public key whose ML-KEM or ECDH half belongs to someone else is not Alice's.
    for mixed in (a[:n_ek] + m[n_ek:], m[:n_ek] + a[n_ek:]):
        enc, ct = hpke.seal(HPKEPublicKey.from_bytes(cs.kem_id, mixed), b"", b"", PLAINTEXT)
        with pytest.raises(VerificationError):
            hpke.open(alice, enc, b"", b"", ct)

    # Swapping either half of the encapsulation for another one's breaks decryption.
    enc, ct = hpke.seal(alice.public_key(), b"", b"", PLAINTEXT)
    other_enc, _ = hpke.seal(alice.public_key(), b"", b"", PLAINTEXT)
    for bad_enc in (enc[:n_ct] + other_enc[n_ct:], other_enc[:n_ct] + enc[n_ct:]):
        with pytest.raises(VerificationError):
            hpke.open(alice, bad_enc, b"", b"", ct)
    # And a single flipped bit in either half does too (ML-KEM rejects implicitly).
    for position in (0, n_ct - 1, n_ct, len(enc) - 1):
        with pytest.raises(VerificationError):
            hpke.open(alice, flipped(enc, position, 0x01), b"", b"", ct)
    assert hpke.open(alice, enc, b"", b"", ct) == PLAINTEXT


# X-Wing (MLKEM768-X25519, KEM 0x647a, the default suite's KEM) known answer: test
# vector 1 of draft-connolly-cfrg-xwing-kem-08, Appendix C. The private key is the
# 32-byte seed; it checks the SHAKE256 seed expansion, ML-KEM-768, X25519 and the
# SHA3-256 combiner together, which the interop test against ``cryptography`` cannot
# (that one builds keys from already expanded components).
XWING_SK = "7f9c2ba4e88f827d616045507605853ed73b8093f6efbc88eb1a6eacfa66ef26"
XWING_PK = (
    "e2236b35a8c24b39b10aa1323a96a919a2ced88400633a7b07131713fc14b2b5b19cfc3d"
    "a5fa1a92c49f25513e0fd30d6b1611c9ab9635d7086727a4b7d21d34244e66969cf15b3b"
    "2a785329f61b096b277ea037383479a6b556de7231fe4b7fa9c9ac24c0699a0018a52534"
    "01bacfa905ca816573e56a2d2e067e9b7287533ba13a937dedb31fa44baced4076992361"
    "0034ae31e619a170245199b3c5c39864859fe1b4c9717a07c30495bdfb98a0a002ccf56c"
    "1286cef5041dede3c44cf16bf562c7448518026b3d8b9940680abd38a1575fd27b58da06"
    "3bfac32c39c30869374c05c1aeb1898b6b303cc68be455346ee0af699636224a148ca2ae"
    "a10463111c709f69b69c70ce8538746698c4c60a9aef0030c7924ceec42a5d36816f545e"
    "ae13293460b3acb37ea0e13d70e4aa78686da398a8397c08eaf96882113fe4f7bad4da40"
    "b0501e1c753efe73053c87014e8661c33099afe8bede414a5b1aa27d8392b3e131e9a70c"
    "1055878240cad0f40d5fe3cdf85236ead97e2a97448363b2808caafd516cd25052c5c362"
    "543c2517e4acd0e60ec07163009b6425fc32277acee71c24bab53ed9f29e74c66a0a3564"
    "955998d76b96a9a8b50d1635a4d7a67eb42df5644d330457293a8042f53cc7a69288f17e"
    "d55827e82b28e82665a86a14fbd96645eca8172c044f83bc0d8c0b4c8626985631ca87af"
    "829068f1358963cb333664ca482763ba3b3bb208577f9ba6ac62c25f76592743b64be519"
    "317714cb4102cb7b2f9a25b2b4f0615de31decd9ca55026d6da0b65111b16fe52feed8a4"
    "87e144462a6dba93728f500b6ffc49e515569ef25fed17aff520507368253525860f58be"
    "3be61c964604a6ac814e6935596402a520a4670b3d284318866593d15a4bb01c35e3e587"
    "ee0c67d2880d6f2407fb7a70712b838deb96c5d7bf2b44bcf6038ccbe33fbcf51a54a584"
    "fe90083c91c7a6d43d4fb15f48c60c2fd66e0a8aad4ad64e5c42bb8877c0ebec2b5e387c"
    "8a988fdc23beb9e16c8757781e0a1499c61e138c21f216c29d076979871caa6942bafc09"
    "0544bee99b54b16cb9a9a364d6246d9f42cce53c66b59c45c8f9ae9299a75d15180c3c95"
    "2151a91b7a10772429dc4cbae6fcc622fa8018c63439f890630b9928db6bb7f9438ae406"
    "5ed34d73d486f3f52f90f0807dc88dfdd8c728e954f1ac35c06c000ce41a0582580e3bb5"
    "7b672972890ac5e7988e7850657116f1b57d0809aaedec0bede1ae148148311c6f7e3173"
    "46e5189fb8cd635b986f8c0bdd27641c584b778b3a911a80be1c9692ab8e1bbb12839573"
    "cce19df183b45835bbb55052f9fc66a1678ef2a36dea78411e6c8d60501b4e60592d1369"
    "8a943b509185db912e2ea10be06171236b327c71716094c964a68b03377f513a05bcd99c"
    "1f346583bb052977a10a12adfc758034e5617da4c1276585e5774e1f3b9978b09d0e9c44"
    "d3bc86151c43aad185712717340223ac381d21150a04294e97bb13bbda21b5a182b6da96"
    "9e19a7fd072737fa8e880a53c2428e3d049b7d2197405296ddb361912a7bcf4827ced611"
    "d0c7a7da104dde4322095339f64a61d5bb108ff0bf4d780cae509fb22c256914193ff734"
    "9042581237d522828824ee3bdfd07fb03f1f942d2ea179fe722f06cc03de5b69859edb06"
    "eff389b27dce59844570216223593d4ba32d9abac8cd049040ef6534"
)
XWING_CT = (
    "b83aa828d4d62b9a83ceffe1d3d3bb1ef31264643c070c5798927e41fb07914a273f8f96"
    "e7826cd5375a283d7da885304c5de0516a0f0654243dc5b97f8bfeb831f68251219aabdd"
    "723bc6512041acbaef8af44265524942b902e68ffd23221cda70b1b55d776a92d1143ea3"
    "a0c475f63ee6890157c7116dae3f62bf72f60acd2bb8cc31ce2ba0de364f52b8ed38c79d"
    "719715963a5dd3842d8e8b43ab704e4759b5327bf027c63c8fa857c4908d5a8a7b88ac7f"
    "2be394d93c3706ddd4e698cc6ce370101f4d0213254238b4a2e8821b6e414a1cf20f6c12"
    "44b699046f5a01caa0a1a55516300b40d2048c77cc73afba79afeea9d2c0118bdf2adb88"
    "70dc328c5516cc45b1a2058141039e2c90a110a9e16b318dfb53bd49a126d6b73f215787"
    "517b8917cc01cabd107d06859854ee8b4f9861c226d3764c87339ab16c3667d2f49384e5"
    "5456dd40414b70a6af841585f4c90c68725d57704ee8ee7ce6e2f9be582dbee985e038ff"
    "c346ebfb4e22158b6c84374a9ab4a44e1f91de5aac5197f89bc5e5442f51f9a5937b102b"
    "a3beaebf6e1c58380a4a5fedce4a4e5026f88f528f59ffd2db41752b3a3d90efabe46389"
    "9b7d40870c530c8841e8712b733668ed033adbfafb2d49d37a44d4064e5863eb0af0a08d"
    "47b3cc888373bc05f7a33b841bc2587c57eb69554e8a3767b7506917b6b70498727f16ea"
    "c1a36ec8d8cfaf751549f2277db277e8a55a9a5106b23a0206b4721fa9b3048552c5bd5b"
    "594d6e247f38c18c591aea7f56249c72ce7b117afcc3a8621582f9cf71787e183dee0936"
    "7976e98409ad9217a497df888042384d7707a6b78f5f7fb8409e3b535175373461b77600"
    "2d799cbad62860be70573ecbe13b246e0da7e93a52168e0fb6a9756b895ef7f0147a0dc8"
    "1bfa644b088a9228160c0f9acf1379a2941cd28c06ebc80e44e17aa2f8177010afd78a97"
    "ce0868d1629ebb294c5151812c583daeb88685220f4da9118112e07041fcc24d5564a99f"
    "dbde28869fe0722387d7a9a4d16e1cc8555917e09944aa5ebaaaec2cf62693afad42a3f5"
    "18fce67d273cc6c9fb5472b380e8573ec7de06a3ba2fd5f931d725b493026cb0acbd3fe6"
    "2d00e4c790d965d7a03a3c0b4222ba8c2a9a16e2ac658f572ae0e746eafc4feba023576f"
    "08942278a041fb82a70a595d5bacbf297ce2029898a71e5c3b0d1c6228b485b1ade509b3"
    "5fbca7eca97b2132e7cb6bc465375146b7dceac969308ac0c2ac89e7863eb8943015b243"
    "14cafb9c7c0e85fe543d56658c213632599efabfc1ec49dd8c88547bb2cc40c9d38cbd30"
    "99b4547840560531d0188cd1e9c23a0ebee0a03d5577d66b1d2bcb4baaf21cc7fef1e038"
    "06ca96299df0dfbc56e1b2b43e4fc20c37f834c4af62127e7dae86c3c25a2f696ac8b589"
    "dec71d595bfbe94b5ed4bc07d800b330796fda89edb77be0294136139354eb8cd3759157"
    "8f9c600dd9be8ec6219fdd507adf3397ed4d68707b8d13b24ce4cd8fb22851bfe9d63240"
    "7f31ed6f7cb1600de56f17576740ce2a32fc5145030145cfb97e63e0e41d354274a079d3"
    "e6fb2e15"
)
XWING_SS = "d2df0522128f09dd8e2c92b1e905c793d8f57a54c3da25861f10bf4ca613e384"


def test_xwing_known_answer() -> None:
    kem_id = KemId.MLKEM768_X25519
    sk = HPKEPrivateKey.from_bytes(kem_id, bytes.fromhex(XWING_SK))
    assert sk.public_key().to_bytes() == bytes.fromhex(XWING_PK)
    assert get_kem(kem_id).decap(bytes.fromhex(XWING_CT), sk.to_bytes()) == bytes.fromhex(XWING_SS)
    cs = get_cipher_suite(DEFAULT_CIPHER_SUITE)
    assert cs.kem_id is kem_id
    pk = HPKEPublicKey.from_bytes(kem_id, bytes.fromhex(XWING_PK))
    enc, ct = cs.hpke.seal(pk, b"info", b"", PLAINTEXT)
    assert cs.hpke.open(sk, enc, b"info", b"", ct) == PLAINTEXT
