"""Ciphersuite registry and negative tests per primitive: AEAD, MAC, KDF, hash, signatures."""

from __future__ import annotations

import pytest

from backchannel.mls.crypto.hpke import AeadId, KdfId, KemId
from backchannel.mls.crypto.signatures import (
    SignaturePrivateKey,
    SignaturePublicKey,
    SignatureScheme,
)
from backchannel.mls.crypto.suites import (
    DEFAULT_CIPHER_SUITE,
    PRIVATE_USE_BASE,
    CipherSuite,
    get_cipher_suite,
)
from backchannel.mls.errors import ValidationError, VerificationError

SUITES = [
    pytest.param(s, id=f"suite={s.value:#x}" if s > 7 else f"suite={s.value}") for s in CipherSuite
]
SCHEMES = [pytest.param(s, id=s.name) for s in SignatureScheme]
LARGE = b"\xa5" * (1 << 20)


def test_registry_matches_rfc9420_and_pq_draft() -> None:
    expected = {
        1: (KemId.DHKEM_X25519_HKDF_SHA256, KdfId.HKDF_SHA256, AeadId.AES_128_GCM, "ED25519"),
        2: (
            KemId.DHKEM_P256_HKDF_SHA256,
            KdfId.HKDF_SHA256,
            AeadId.AES_128_GCM,
            "ECDSA_SECP256R1_SHA256",
        ),
        3: (KemId.DHKEM_X25519_HKDF_SHA256, KdfId.HKDF_SHA256, AeadId.CHACHA20_POLY1305, "ED25519"),
        4: (KemId.DHKEM_X448_HKDF_SHA512, KdfId.HKDF_SHA512, AeadId.AES_256_GCM, "ED448"),
        5: (
            KemId.DHKEM_P521_HKDF_SHA512,
            KdfId.HKDF_SHA512,
            AeadId.AES_256_GCM,
            "ECDSA_SECP521R1_SHA512",
        ),
        6: (KemId.DHKEM_X448_HKDF_SHA512, KdfId.HKDF_SHA512, AeadId.CHACHA20_POLY1305, "ED448"),
        7: (
            KemId.DHKEM_P384_HKDF_SHA384,
            KdfId.HKDF_SHA384,
            AeadId.AES_256_GCM,
            "ECDSA_SECP384R1_SHA384",
        ),
        0xF001: (KemId.MLKEM768_X25519, KdfId.HKDF_SHA256, AeadId.AES_128_GCM, "ED25519"),
        0xF002: (KemId.MLKEM768_X25519, KdfId.HKDF_SHA384, AeadId.AES_256_GCM, "ED25519"),
        0xF003: (
            KemId.MLKEM768_P256,
            KdfId.HKDF_SHA256,
            AeadId.AES_128_GCM,
            "ECDSA_SECP256R1_SHA256",
        ),
        0xF004: (
            KemId.MLKEM768_P256,
            KdfId.HKDF_SHA384,
            AeadId.AES_256_GCM,
            "ECDSA_SECP256R1_SHA256",
        ),
        0xF005: (
            KemId.MLKEM1024_P384,
            KdfId.HKDF_SHA384,
            AeadId.AES_256_GCM,
            "ECDSA_SECP384R1_SHA384",
        ),
        0xF006: (KemId.MLKEM768, KdfId.HKDF_SHA384, AeadId.AES_256_GCM, "ED25519"),
        0xF007: (KemId.MLKEM768, KdfId.HKDF_SHA384, AeadId.AES_256_GCM, "ECDSA_SECP256R1_SHA256"),
        0xF008: (KemId.MLKEM1024, KdfId.HKDF_SHA384, AeadId.AES_256_GCM, "ECDSA_SECP384R1_SHA384"),
    }
    assert {s.value for s in CipherSuite} == set(expected)
    for value, (kem, kdf, aead, sig) in expected.items():
        cs = get_cipher_suite(value)
        assert (cs.kem_id, cs.kdf_id, cs.aead_id, cs.signature_scheme.name) == (kem, kdf, aead, sig)
    assert PRIVATE_USE_BASE == 0xF000
    assert DEFAULT_CIPHER_SUITE == 0xF001
    assert get_cipher_suite(DEFAULT_CIPHER_SUITE).kem_id == KemId.MLKEM768_X25519


@pytest.mark.parametrize("value", [0, 8, 0xEFFF, 0xF000, 0xF009, 0xFFFF])
def test_unknown_suites_are_rejected(value: int) -> None:
    with pytest.raises(ValidationError):
        get_cipher_suite(value)


@pytest.mark.parametrize("suite", SUITES)
def test_aead(suite: CipherSuite) -> None:
    cs = get_cipher_suite(suite)
    key, nonce = b"k" * cs.n_k, b"n" * cs.n_n
    for plaintext in (b"", b"x", LARGE):
        ct = cs.aead_seal(key, nonce, b"aad", plaintext)
        assert len(ct) == len(plaintext) + 16
        assert cs.aead_open(key, nonce, b"aad", ct) == plaintext
    ct = cs.aead_seal(key, nonce, b"aad", b"message")
    with pytest.raises(VerificationError):
        cs.aead_open(key, nonce, b"aae", ct)
    with pytest.raises(VerificationError):
        cs.aead_open(key, nonce, b"", ct)
    with pytest.raises(VerificationError):
        cs.aead_open(key, nonce, b"aad", ct[:-1] + bytes([ct[-1] ^ 1]))  # corrupted tag
    with pytest.raises(VerificationError):
        cs.aead_open(key, nonce, b"aad", bytes([ct[0] ^ 1]) + ct[1:])
    with pytest.raises(VerificationError):
        cs.aead_open(b"K" * cs.n_k, nonce, b"aad", ct)
    with pytest.raises(VerificationError):
        cs.aead_open(key, b"N" * cs.n_n, b"aad", ct)
    for short in (b"", ct[:15]):
        with pytest.raises(VerificationError):
            cs.aead_open(key, nonce, b"aad", short)
    for bad_key in (b"", key[:-1], key + b"k"):
        with pytest.raises(ValueError, match="key must be"):
            cs.aead_seal(bad_key, nonce, b"", b"x")
        with pytest.raises(ValueError, match="key must be"):
            cs.aead_open(bad_key, nonce, b"", ct)
    for bad_nonce in (b"", nonce[:-1], nonce + b"n"):
        with pytest.raises(ValueError, match="nonce must be"):
            cs.aead_seal(key, bad_nonce, b"", b"x")


@pytest.mark.parametrize("suite", SUITES)
def test_mac_hash_and_kdf(suite: CipherSuite) -> None:
    cs = get_cipher_suite(suite)
    for data in (b"", LARGE):
        assert len(cs.hash(data)) == cs.n_h
        tag = cs.mac(b"key", data)
        assert len(tag) == cs.n_h
        cs.verify_mac(b"key", data, tag)
    tag = cs.mac(b"key", b"data")
    for bad in (tag[:-1], tag + b"\x00", bytes(len(tag)), b""):
        with pytest.raises(VerificationError):
            cs.verify_mac(b"key", b"data", bad)
    with pytest.raises(VerificationError):
        cs.verify_mac(b"other", b"data", tag)
    prk = cs.kdf_extract(b"", b"ikm")
    assert prk == cs.kdf_extract(bytes(cs.n_h), b"ikm")  # empty salt acts as zeros
    assert len(cs.kdf_expand(prk, b"info", 255 * cs.n_h)) == 255 * cs.n_h
    assert cs.kdf_expand(prk, b"info", 0) == b""
    with pytest.raises(ValueError, match="255"):
        cs.kdf_expand(prk, b"info", 255 * cs.n_h + 1)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_signatures(scheme: SignatureScheme) -> None:
    key = SignaturePrivateKey.generate(scheme)
    pub = key.public_key()
    assert SignaturePublicKey.from_bytes(scheme, pub.to_bytes()) == pub
    again = SignaturePrivateKey.from_bytes(scheme, key.to_bytes())
    assert again.public_key() == pub
    assert key.to_bytes().hex() not in repr(key)
    for data in (b"", LARGE):
        pub.verify(key.sign(data), data)
    sig = key.sign(b"message")
    bad_signatures = [
        b"",
        sig[:-1],
        sig + b"\x00",
        bytes([sig[0] ^ 1]) + sig[1:],
        sig[:-1] + bytes([sig[-1] ^ 1]),
        b"\x30\x00",
        b"\xff" * len(sig),
    ]
    for bad in bad_signatures:
        with pytest.raises(VerificationError):
            pub.verify(bad, b"message")
    with pytest.raises(VerificationError):
        pub.verify(sig, b"messagE")
    other = SignaturePrivateKey.generate(scheme).public_key()
    with pytest.raises(VerificationError):
        other.verify(sig, b"message")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_bad_signature_keys(scheme: SignatureScheme) -> None:
    good = SignaturePrivateKey.generate(scheme).public_key().to_bytes()
    for bad in (b"", good[:-1], good + b"\x00"):
        with pytest.raises(ValidationError):
            SignaturePublicKey.from_bytes(scheme, bad)
    if scheme.name.startswith("ECDSA"):
        off_curve = good[:-1] + bytes([good[-1] ^ 1])
        with pytest.raises(ValidationError):
            SignaturePublicKey.from_bytes(scheme, off_curve)
        compressed = bytes([2 + good[-1] % 2]) + good[1 : 1 + (len(good) - 1) // 2]
        with pytest.raises(ValidationError):
            SignaturePublicKey.from_bytes(scheme, compressed)
    size = len(SignaturePrivateKey.generate(scheme).to_bytes())
    for bad in (b"", b"\x01" * (size + 1)):
        with pytest.raises(ValidationError):
            SignaturePrivateKey.from_bytes(scheme, bad)
    if scheme.name.startswith("ECDSA"):
        with pytest.raises(ValidationError):
            SignaturePrivateKey.from_bytes(scheme, b"\xff" * size)  # above the group order
        with pytest.raises(ValidationError):
            SignaturePrivateKey.from_bytes(scheme, bytes(size))  # zero


def test_sign_with_label_checks_the_scheme() -> None:
    from backchannel.mls.crypto.labels import sign_with_label, verify_with_label

    cs = get_cipher_suite(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)
    ed448_key = SignaturePrivateKey.generate(SignatureScheme.ED448)
    with pytest.raises(ValueError, match="scheme"):
        sign_with_label(cs, ed448_key, "L", b"c")
    with pytest.raises(ValueError, match="scheme"):
        verify_with_label(cs, ed448_key.public_key(), "L", b"c", b"sig")
    with pytest.raises(ValidationError):
        verify_with_label(cs, b"\x00" * 5, "L", b"c", b"sig")
