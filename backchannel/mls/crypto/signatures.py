"""Signature key pairs for MLS: Ed25519, Ed448 and ECDSA P-256/P-384/P-521 (RFC 9420 §5.1.2).

Encodings are the ones MLS and its test vectors use: EdDSA keys and signatures are the
raw RFC 8032 byte strings; ECDSA public keys are uncompressed SEC1 points, private keys
are the big-endian scalar padded to the field size (``Field-Element-to-Octet-String``)
and signatures are DER ``ECDSA-Sig-Value`` as in TLS 1.3.

Ed25519 signs and verifies through libsodium (PyNaCl), about twice as fast here as
OpenSSL for the per-message signatures. Signing is deterministic (RFC 8032), so the
output is byte-identical. libsodium's verification accepts a subset of what OpenSSL
accepts (both are cofactorless and require a canonical S; libsodium also refuses
small-order and non-canonical points), so a libsodium rejection is re-checked with
OpenSSL and the accepted set stays exactly the one OpenSSL defines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from nacl import bindings as _sodium
from nacl.exceptions import BadSignatureError as _BadSignatureError

from ..errors import ValidationError, VerificationError

__all__ = ["SignaturePrivateKey", "SignaturePublicKey", "SignatureScheme"]


class SignatureScheme(IntEnum):
    """TLS SignatureScheme values used by MLS ciphersuites (RFC 8446 §4.2.3)."""

    ECDSA_SECP256R1_SHA256 = 0x0403
    ECDSA_SECP384R1_SHA384 = 0x0503
    ECDSA_SECP521R1_SHA512 = 0x0603
    ED25519 = 0x0807
    ED448 = 0x0808


_EC: dict[SignatureScheme, tuple[ec.EllipticCurve, hashes.HashAlgorithm, int]] = {
    SignatureScheme.ECDSA_SECP256R1_SHA256: (ec.SECP256R1(), hashes.SHA256(), 32),
    SignatureScheme.ECDSA_SECP384R1_SHA384: (ec.SECP384R1(), hashes.SHA384(), 48),
    SignatureScheme.ECDSA_SECP521R1_SHA512: (ec.SECP521R1(), hashes.SHA512(), 66),
}

_ED_SIZES = {SignatureScheme.ED25519: 32, SignatureScheme.ED448: 57}


def _load_public(scheme: SignatureScheme, data: bytes) -> Any:
    try:
        if scheme is SignatureScheme.ED25519:
            return ed25519.Ed25519PublicKey.from_public_bytes(data)
        if scheme is SignatureScheme.ED448:
            return ed448.Ed448PublicKey.from_public_bytes(data)
        curve, _, size = _EC[scheme]
        if len(data) != 2 * size + 1 or data[:1] != b"\x04":
            raise ValueError("not an uncompressed point")
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, data)
    except ValueError:
        raise ValidationError(f"invalid {scheme.name} public key") from None


def _load_private(scheme: SignatureScheme, data: bytes) -> Any:
    try:
        if scheme is SignatureScheme.ED25519:
            return ed25519.Ed25519PrivateKey.from_private_bytes(data)
        if scheme is SignatureScheme.ED448:
            return ed448.Ed448PrivateKey.from_private_bytes(data)
        curve, _, size = _EC[scheme]
        # Some encoders drop leading zero bytes of the scalar (seen in the P-521
        # message-protection vector), so accept up to the field size.
        if not 0 < len(data) <= size:
            raise ValueError("wrong length")
        return ec.derive_private_key(int.from_bytes(data, "big"), curve)
    except ValueError:
        raise ValidationError(f"invalid {scheme.name} private key") from None


def _public_bytes(scheme: SignatureScheme, key: Any) -> bytes:
    if scheme in _ED_SIZES:
        raw: bytes = key.public_bytes_raw()
        return raw
    point: bytes = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point


@dataclass(frozen=True, slots=True)
class SignaturePublicKey:
    """A signature verification key (MLS ``SignaturePublicKey`` content, §5.1.2)."""

    #: The scheme this key verifies for.
    scheme: SignatureScheme
    #: The encoded key (raw EdDSA key, or uncompressed SEC1 point).
    data: bytes
    _key: Any = field(repr=False, compare=False)

    @classmethod
    def from_bytes(cls, scheme: SignatureScheme, data: bytes) -> SignaturePublicKey:
        """Load an encoded public key.

        Raises:
            ValidationError: the bytes are not a valid key for ``scheme``.
        """
        scheme = SignatureScheme(scheme)
        data = bytes(data)
        return cls(scheme, data, _load_public(scheme, data))

    def to_bytes(self) -> bytes:
        """The encoded key."""
        return self.data

    def verify(self, signature: bytes, data: bytes) -> None:
        """Check ``signature`` over ``data``; returns None or raises.

        Raises:
            VerificationError: the signature is invalid or malformed.
        """
        if self.scheme is SignatureScheme.ED25519:
            signature = bytes(signature)
            if len(signature) == 64:
                try:
                    _sodium.crypto_sign_open(signature + bytes(data), self.data)
                    return
                except _BadSignatureError:
                    pass  # libsodium is stricter: let OpenSSL give the final answer
        try:
            if self.scheme in _ED_SIZES:
                self._key.verify(bytes(signature), bytes(data))
            else:
                self._key.verify(bytes(signature), bytes(data), ec.ECDSA(_EC[self.scheme][1]))
        except (InvalidSignature, ValueError):
            raise VerificationError("signature verification failed") from None


@dataclass(frozen=True, slots=True, eq=False)
class SignaturePrivateKey:
    """A signing key; its repr never shows key material."""

    #: The scheme this key signs with.
    scheme: SignatureScheme
    _key: Any = field(repr=False)
    #: Ed25519 only: libsodium's 64-byte secret key (seed || public key), made on first use.
    _sodium_sk: bytes | None = field(default=None, repr=False, init=False)

    @classmethod
    def generate(cls, scheme: SignatureScheme) -> SignaturePrivateKey:
        """A fresh random key for ``scheme``."""
        scheme = SignatureScheme(scheme)
        if scheme is SignatureScheme.ED25519:
            return cls(scheme, ed25519.Ed25519PrivateKey.generate())
        if scheme is SignatureScheme.ED448:
            return cls(scheme, ed448.Ed448PrivateKey.generate())
        return cls(scheme, ec.generate_private_key(_EC[scheme][0]))

    @classmethod
    def from_bytes(cls, scheme: SignatureScheme, data: bytes) -> SignaturePrivateKey:
        """Load an encoded private key (raw EdDSA seed, or big-endian ECDSA scalar).

        ECDSA scalars shorter than the field size (leading zeros dropped) are accepted;
        :meth:`to_bytes` always writes the full size.

        Raises:
            ValidationError: the bytes are not a valid key for ``scheme``.
        """
        scheme = SignatureScheme(scheme)
        return cls(scheme, _load_private(scheme, bytes(data)))

    def to_bytes(self) -> bytes:
        """The encoded private key."""
        if self.scheme in _ED_SIZES:
            raw: bytes = self._key.private_bytes_raw()
            return raw
        value: int = self._key.private_numbers().private_value
        return value.to_bytes(_EC[self.scheme][2], "big")

    def public_key(self) -> SignaturePublicKey:
        """The matching verification key."""
        pub = self._key.public_key()
        return SignaturePublicKey(self.scheme, _public_bytes(self.scheme, pub), pub)

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` (EdDSA is deterministic; ECDSA uses fresh randomness)."""
        if self.scheme is SignatureScheme.ED25519:
            sk = self._sodium_sk
            if sk is None:
                sk = self._key.private_bytes_raw() + self._key.public_key().public_bytes_raw()
                object.__setattr__(self, "_sodium_sk", sk)
            signed: bytes = _sodium.crypto_sign(bytes(data), sk)
            return signed[:64]
        if self.scheme in _ED_SIZES:
            sig: bytes = self._key.sign(bytes(data))
        else:
            sig = self._key.sign(bytes(data), ec.ECDSA(_EC[self.scheme][1]))
        return sig
