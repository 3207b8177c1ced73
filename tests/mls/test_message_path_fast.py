"""Guards for the per-message fast paths: libsodium Ed25519, HKDF shortcuts, ratchet caching."""

from __future__ import annotations

import hmac

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from backchannel.mls.crypto.kem import hkdf_expand
from backchannel.mls.crypto.signatures import (
    SignaturePrivateKey,
    SignaturePublicKey,
    SignatureScheme,
)
from backchannel.mls.crypto.suites import CipherSuite, get_cipher_suite
from backchannel.mls.errors import VerificationError
from backchannel.mls.secret_tree import RatchetType, SecretTree

SUITE = get_cipher_suite(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)


def _reference_expand(name: str, prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), name)
        out += block
        counter += 1
    return out[:length]


@pytest.mark.parametrize("name", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("length", [0, 1, 12, 16, 32, 33, 48, 64, 65, 200])
def test_hkdf_expand_matches_the_rfc_loop(name: str, length: int) -> None:
    prk, info = b"p" * 32, b"info"
    assert hkdf_expand(name, prk, info, length) == _reference_expand(name, prk, info, length)


def test_kdf_expand_matches_hkdf_expand() -> None:
    for length in (0, 12, 16, 32, 33, 100):
        assert SUITE.kdf_expand(b"k" * 32, b"x", length) == hkdf_expand(
            "sha256", b"k" * 32, b"x", length
        )


def test_ed25519_signatures_match_openssl() -> None:
    key = SignaturePrivateKey.generate(SignatureScheme.ED25519)
    for message in (b"", b"m", b"x" * 5000):
        signature = key.sign(message)
        assert signature == key._key.sign(message)  # deterministic, byte-identical
        key.public_key().verify(signature, message)
        with pytest.raises(VerificationError):
            key.public_key().verify(signature, message + b"!")
        with pytest.raises(VerificationError):
            key.public_key().verify(signature[:63], message)


def test_ed25519_accepts_what_openssl_accepts() -> None:
    """libsodium refuses small-order points; OpenSSL, the reference here, does not."""
    identity = b"\x01" + bytes(31)
    signature = identity + bytes(32)  # R = identity, S = 0: valid cofactorless for A = identity
    ed25519.Ed25519PublicKey.from_public_bytes(identity).verify(signature, b"hello")
    SignaturePublicKey.from_bytes(SignatureScheme.ED25519, identity).verify(signature, b"hello")


def test_secret_tree_copies_are_independent() -> None:
    tree = SecretTree(SUITE, b"s" * 32, 8)
    first = tree.next(2, RatchetType.APPLICATION)
    twin = tree.copy()
    peeked = twin.get(2, RatchetType.APPLICATION, 1)
    assert twin.consume(2, RatchetType.APPLICATION, 1) == peeked
    # The original still holds generation 1; the twin has moved on.
    assert tree.get(2, RatchetType.APPLICATION, 1) == peeked
    assert tree.next(2, RatchetType.APPLICATION) == peeked
    assert twin.next(2, RatchetType.APPLICATION).generation == 2
    again = tree.copy()
    assert again.next(2, RatchetType.APPLICATION) == tree.next(2, RatchetType.APPLICATION)
    assert first.generation == 0


def test_get_then_consume_gives_the_same_key_as_consume_alone() -> None:
    a = SecretTree(SUITE, b"s" * 32, 4)
    b = SecretTree(SUITE, b"s" * 32, 4)
    for generation in (0, 1, 5, 3, 6):
        peeked = a.get(1, RatchetType.HANDSHAKE, generation)
        assert a.consume(1, RatchetType.HANDSHAKE, generation) == peeked
        assert b.consume(1, RatchetType.HANDSHAKE, generation) == peeked
