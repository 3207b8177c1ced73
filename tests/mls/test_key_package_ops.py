"""KeyPackage generation and §10.1 validation for every suite, with pyca-style negative tests.

No official vector file covers KeyPackage generation; these are round trips (generate,
encode, decode as :class:`KeyPackageIn`, verify) and one test per validation rule.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backchannel.mls.credentials import BasicCredential
from backchannel.mls.crypto.hpke import HPKEPrivateKey
from backchannel.mls.crypto.labels import make_key_package_ref, sign_with_label
from backchannel.mls.crypto.signatures import SignaturePrivateKey
from backchannel.mls.crypto.suites import CipherSuite, CipherSuiteImpl, get_cipher_suite
from backchannel.mls.errors import (
    DecodeError,
    UsageError,
    ValidationError,
    VerificationError,
)
from backchannel.mls.extensions import Extension, RequiredCapabilities
from backchannel.mls.key_package_ops import (
    KeyPackageBundle,
    KeyPackageIn,
    VerifiedKeyPackage,
    generate_key_package,
    key_package_ref,
)
from backchannel.mls.key_packages import KeyPackage
from backchannel.mls.messages import GroupContext
from backchannel.mls.tree import RatchetTree
from backchannel.mls.tree_structs import (
    Capabilities,
    HPKEPublicKeyBytes,
    LeafNodeSource,
    Lifetime,
)
from backchannel.mls.tree_validation import sign_leaf_node

NOW = 1_700_000_000
LIFETIME = Lifetime(NOW - 60, NOW + 3600)
SUITES = [pytest.param(s, id=f"suite={s:#06x}") for s in CipherSuite]
X25519 = get_cipher_suite(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)


def make(cs: CipherSuiteImpl = X25519, **kwargs: object) -> KeyPackageBundle:
    sig = SignaturePrivateKey.generate(cs.signature_scheme)
    return generate_key_package(cs, BasicCredential(b"alice"), sig, LIFETIME, **kwargs)  # type: ignore[arg-type]


def resign(
    cs: CipherSuiteImpl, bundle: KeyPackageBundle, kp: KeyPackage, *, leaf: bool = False
) -> KeyPackage:
    """Re-sign a modified KeyPackage (and optionally its leaf) so only the rule under test fails."""
    key = bundle.signature_private_key
    if leaf:
        kp = dataclasses.replace(kp, leaf_node=sign_leaf_node(cs, kp.leaf_node, key))
    return dataclasses.replace(
        kp, signature=sign_with_label(cs, key, "KeyPackageTBS", kp.tbs_bytes())
    )


@pytest.mark.parametrize("suite", SUITES)
def test_generate_and_verify_round_trip(suite: CipherSuite) -> None:
    cs = get_cipher_suite(suite)
    bundle = make(cs)
    data = bundle.key_package.to_bytes()
    verified = KeyPackageIn.from_bytes(data).verify(suite, NOW)
    assert verified.key_package == bundle.key_package.key_package
    assert verified.reference == make_key_package_ref(cs, data)
    assert verified.reference == key_package_ref(verified.key_package)
    assert len(verified.reference) == cs.n_h
    assert verified.cipher_suite == suite
    assert verified.leaf_node.leaf_node_source is LeafNodeSource.KEY_PACKAGE
    assert bundle.init_private_key.public_key().to_bytes() == verified.init_key
    assert (
        bundle.encryption_private_key.public_key().to_bytes() == verified.leaf_node.encryption_key
    )
    assert verified.init_key != verified.leaf_node.encryption_key


def test_bad_signature_rejected() -> None:
    bundle = make()
    kp = bundle.key_package.key_package
    sig = bytearray(kp.signature)
    sig[5] ^= 0x40
    with pytest.raises(VerificationError):
        KeyPackageIn(dataclasses.replace(kp, signature=bytes(sig))).verify(X25519, NOW)
    # Signed by another key than the leaf's signature key.
    other = SignaturePrivateKey.generate(X25519.signature_scheme)
    forged = sign_with_label(X25519, other, "KeyPackageTBS", kp.tbs_bytes())
    with pytest.raises(VerificationError):
        KeyPackageIn(dataclasses.replace(kp, signature=forged)).verify(X25519, NOW)


def test_bad_leaf_signature_rejected() -> None:
    bundle = make()
    kp = bundle.key_package.key_package
    leaf = dataclasses.replace(kp.leaf_node, credential=BasicCredential(b"mallory"))
    bad = resign(X25519, bundle, dataclasses.replace(kp, leaf_node=leaf))  # outer sig fine
    with pytest.raises(VerificationError):
        KeyPackageIn(bad).verify(X25519, NOW)


@pytest.mark.parametrize("now", [NOW - 61, NOW + 3601], ids=["not-yet-valid", "expired"])
def test_lifetime_enforced(now: int) -> None:
    kp_in = KeyPackageIn.from_bytes(make().key_package.to_bytes())
    with pytest.raises(ValidationError, match="lifetime"):
        kp_in.verify(X25519, now)
    kp_in.verify(X25519, None)  # a received Add may skip the clock (§7.3)


def test_max_lifetime_enforced() -> None:
    kp_in = KeyPackageIn.from_bytes(make().key_package.to_bytes())
    kp_in.verify(X25519, NOW, max_lifetime=3660)
    with pytest.raises(ValidationError, match="lifetime"):
        kp_in.verify(X25519, NOW, max_lifetime=3600)


def test_wrong_suite_rejected() -> None:
    kp_in = KeyPackageIn.from_bytes(make().key_package.to_bytes())
    with pytest.raises(ValidationError, match="cipher suite"):
        kp_in.verify(CipherSuite.MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519, NOW)
    with pytest.raises(ValidationError):
        kp_in.verify(0x0A0A, NOW)  # unknown suite


def test_suite_missing_from_capabilities_rejected() -> None:
    caps = Capabilities((1,), (2,), (), (), (1,))
    with pytest.raises(ValidationError, match="cipher suite"):
        make(capabilities=caps)


def test_wrong_version_rejected() -> None:
    bundle = make()
    bad = resign(X25519, bundle, dataclasses.replace(bundle.key_package.key_package, version=2))
    with pytest.raises(ValidationError, match="version"):
        KeyPackageIn(bad).verify(X25519, NOW)


def test_init_key_equal_to_encryption_key_rejected() -> None:
    key = HPKEPrivateKey.generate(X25519.kem_id)
    with pytest.raises(ValidationError, match="init_key"):
        make(init_key=key, encryption_key=key)


def test_invalid_init_key_rejected() -> None:
    bundle = make()
    short_key = HPKEPublicKeyBytes(b"\x01" * 5)
    kp = dataclasses.replace(bundle.key_package.key_package, init_key=short_key)
    bad = resign(X25519, bundle, kp)
    with pytest.raises(ValidationError):
        KeyPackageIn(bad).verify(X25519, NOW)


def test_wrong_leaf_source_rejected() -> None:
    bundle = make()
    kp = bundle.key_package.key_package
    leaf = dataclasses.replace(kp.leaf_node, leaf_node_source=LeafNodeSource.UPDATE, lifetime=None)
    leaf = sign_leaf_node(X25519, leaf, bundle.signature_private_key, b"g", 0)
    bad = resign(X25519, bundle, dataclasses.replace(kp, leaf_node=leaf))
    with pytest.raises(ValidationError, match="leaf_node_source"):
        KeyPackageIn(bad).verify(X25519, NOW)


def test_duplicate_extension_types_rejected() -> None:
    bundle = make()
    ext = Extension(0x0A0A, b"")
    bad = resign(
        X25519, bundle, dataclasses.replace(bundle.key_package.key_package, extensions=(ext, ext))
    )
    with pytest.raises(ValidationError):
        KeyPackageIn(bad).verify(X25519, NOW)


def test_unlisted_leaf_extension_rejected() -> None:
    bundle = make()
    kp = bundle.key_package.key_package
    leaf = dataclasses.replace(kp.leaf_node, extensions=(Extension(0x0B0B, b"x"),))
    bad = resign(X25519, bundle, dataclasses.replace(kp, leaf_node=leaf), leaf=True)
    with pytest.raises(ValidationError, match="extension"):
        KeyPackageIn(bad).verify(X25519, NOW)
    # Listed in capabilities (as generate_key_package does by default), it is fine.
    make(leaf_extensions=(Extension(0x0B0B, b"x"),))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_tampered_bytes_never_verify(data: st.DataObject) -> None:
    encoded = TAMPER_BASE
    position = data.draw(st.integers(0, len(encoded) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = bytearray(encoded)
    tampered[position] ^= flip
    try:
        kp_in = KeyPackageIn.from_bytes(bytes(tampered))
        kp_in.verify(X25519, NOW)
    except (DecodeError, ValidationError, VerificationError):
        return
    pytest.fail("a tampered KeyPackage verified")


TAMPER_BASE = make().key_package.to_bytes()


def test_truncated_and_padded_bytes_rejected() -> None:
    for cut in (0, 1, len(TAMPER_BASE) // 2, len(TAMPER_BASE) - 1):
        with pytest.raises(DecodeError):
            KeyPackageIn.from_bytes(TAMPER_BASE[:cut])
    with pytest.raises(DecodeError):
        KeyPackageIn.from_bytes(TAMPER_BASE + b"\x00")


def test_verified_type_cannot_be_forged() -> None:
    kp = make().key_package.key_package
    with pytest.raises(UsageError):
        VerifiedKeyPackage(kp, b"ref", object())


def test_reprs_hold_no_private_keys() -> None:
    bundle = make()
    text = repr(bundle)
    for secret in (
        bundle.init_private_key.to_bytes(),
        bundle.encryption_private_key.to_bytes(),
        bundle.signature_private_key.to_bytes(),
    ):
        assert secret.hex() not in text
        assert repr(secret) not in text
    assert "VerifiedKeyPackage(cipher_suite=0x0001" in text


def test_validate_for_group() -> None:
    creator = make()
    tree = RatchetTree.create(creator.key_package.leaf_node)
    context = GroupContext(1, 1, b"group", 0, tree.tree_hash(X25519), b"", ())
    joiner = make()
    joiner.key_package.validate_for_group(context, tree)
    # Same keys as a member: refused.
    with pytest.raises(ValidationError):
        creator.key_package.validate_for_group(context, tree)
    required = RequiredCapabilities((0x0C0C,), (), ()).to_extension()
    with pytest.raises(ValidationError):
        joiner.key_package.validate_for_group(
            dataclasses.replace(context, extensions=(required,)), tree
        )
    with pytest.raises(ValidationError):
        joiner.key_package.validate_for_group(dataclasses.replace(context, cipher_suite=3), tree)
