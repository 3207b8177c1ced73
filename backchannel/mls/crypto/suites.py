"""MLS ciphersuites: the CipherSuite enum and its primitive registry (RFC 9420 §5.1, §17.1).

Suites 1-7 are the RFC 9420 registry. The post-quantum suites of
draft-ietf-mls-pq-ciphersuites have no IANA values yet ("TBD1".."TBD11"); until they
are assigned, this library numbers them from the private-use range 0xF000-0xFFFF
(RFC 9420 §17.1) as ``0xF000 + n`` for ``TBDn``. These values are local to
Backchannel: they interoperate only with peers that use the same mapping, and they
will be renumbered (with a migration) once IANA assigns the real code points. The
ML-DSA suites (TBD9-TBD11) are not offered yet.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from enum import IntEnum

from ..errors import ValidationError, VerificationError
from .hpke import AeadId, HPKESuite, KdfId, KemId, aead_open, aead_seal, hkdf_expand, hkdf_extract
from .signatures import SignatureScheme

__all__ = [
    "DEFAULT_CIPHER_SUITE",
    "PRIVATE_USE_BASE",
    "CipherSuite",
    "CipherSuiteImpl",
    "get_cipher_suite",
]

#: First value of the private-use range the PQ suites are numbered from (``TBDn`` →
#: ``PRIVATE_USE_BASE + n``).
PRIVATE_USE_BASE = 0xF000


class CipherSuite(IntEnum):
    """MLS ciphersuite identifiers (RFC 9420 §17.1; PQ suites: see the module docstring)."""

    MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 = 0x0001
    MLS_128_DHKEMP256_AES128GCM_SHA256_P256 = 0x0002
    MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519 = 0x0003
    MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448 = 0x0004
    MLS_256_DHKEMP521_AES256GCM_SHA512_P521 = 0x0005
    MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448 = 0x0006
    MLS_256_DHKEMP384_AES256GCM_SHA384_P384 = 0x0007
    #: draft-ietf-mls-pq-ciphersuites TBD1 (X-Wing KEM); Backchannel's default.
    MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519 = PRIVATE_USE_BASE + 1
    #: TBD2.
    MLS_128_MLKEM768X25519_AES256GCM_SHA384_Ed25519 = PRIVATE_USE_BASE + 2
    #: TBD3.
    MLS_128_MLKEM768P256_AES128GCM_SHA256_P256 = PRIVATE_USE_BASE + 3
    #: TBD4.
    MLS_128_MLKEM768P256_AES256GCM_SHA384_P256 = PRIVATE_USE_BASE + 4
    #: TBD5.
    MLS_192_MLKEM1024P384_AES256GCM_SHA384_P384 = PRIVATE_USE_BASE + 5
    #: TBD6.
    MLS_128_MLKEM768_AES256GCM_SHA384_Ed25519 = PRIVATE_USE_BASE + 6
    #: TBD7.
    MLS_128_MLKEM768_AES256GCM_SHA384_P256 = PRIVATE_USE_BASE + 7
    #: TBD8.
    MLS_192_MLKEM1024_AES256GCM_SHA384_P384 = PRIVATE_USE_BASE + 8


#: The suite new Backchannel rooms use: PQ/T hybrid confidentiality.
DEFAULT_CIPHER_SUITE = CipherSuite.MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519


@dataclass(frozen=True, slots=True)
class CipherSuiteImpl:
    """The primitives of one MLS ciphersuite (RFC 9420 §5.1).

    The MLS KDF is HKDF over the suite's hash, MAC is HMAC over it, and the AEAD is the
    HPKE AEAD of the suite.
    """

    #: The suite identifier.
    suite: CipherSuite
    #: HPKE KEM, KDF and AEAD (also the MLS KDF and AEAD).
    hpke: HPKESuite
    #: Signature algorithm for credentials, leaves and framing.
    signature_scheme: SignatureScheme
    # Looked up once: these sit on the per-message path (every ExpandWithLabel).
    _hash_name: str = field(init=False, repr=False, compare=False)
    _n_h: int = field(init=False, repr=False, compare=False)
    _n_k: int = field(init=False, repr=False, compare=False)
    _n_n: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash_name", self.hpke.kdf_id.hash_name)
        object.__setattr__(self, "_n_h", self.hpke.kdf_id.n_h)
        object.__setattr__(self, "_n_k", self.hpke.aead_id.n_k)
        object.__setattr__(self, "_n_n", self.hpke.aead_id.n_n)

    @property
    def kem_id(self) -> KemId:
        """The HPKE KEM of this suite."""
        return self.hpke.kem_id

    @property
    def kdf_id(self) -> KdfId:
        """The HPKE/MLS KDF of this suite."""
        return self.hpke.kdf_id

    @property
    def aead_id(self) -> AeadId:
        """The AEAD of this suite."""
        return self.hpke.aead_id

    @property
    def hash_name(self) -> str:
        """The hashlib name of the suite's hash (also HKDF's and HMAC's)."""
        return self._hash_name

    @property
    def n_h(self) -> int:
        """KDF.Nh: hash/extract output length in bytes (also the MAC length)."""
        return self._n_h

    @property
    def n_k(self) -> int:
        """AEAD.Nk: AEAD key length in bytes."""
        return self._n_k

    @property
    def n_n(self) -> int:
        """AEAD.Nn: AEAD nonce length in bytes."""
        return self._n_n

    def hash(self, data: bytes) -> bytes:
        """Hash(data) with the suite's hash function."""
        return hashlib.new(self._hash_name, data).digest()

    def mac(self, key: bytes, data: bytes) -> bytes:
        """MAC(key, data): HMAC with the suite's hash (RFC 9420 §5.1)."""
        return hmac.digest(key, data, self._hash_name)

    def verify_mac(self, key: bytes, data: bytes, tag: bytes) -> None:
        """Check a MAC in constant time.

        Raises:
            VerificationError: the tag does not match.
        """
        if not hmac.compare_digest(self.mac(key, data), tag):
            raise VerificationError("MAC verification failed")

    def kdf_extract(self, salt: bytes, ikm: bytes) -> bytes:
        """KDF.Extract(salt, ikm) (HKDF-Extract, RFC 5869 §2.2)."""
        return hkdf_extract(self._hash_name, salt, ikm)

    def kdf_expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        """KDF.Expand(prk, info, length) (HKDF-Expand, RFC 5869 §2.3)."""
        if 0 < length <= self._n_h:
            # One HKDF block, T(1) = HMAC(prk, info || 0x01): every MLS key and secret.
            return hmac.digest(prk, info + b"\x01", self._hash_name)[:length]
        return hkdf_expand(self._hash_name, prk, info, length)

    def aead_seal(self, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        """AEAD.Seal(key, nonce, aad, plaintext) -> ciphertext || tag.

        Raises:
            ValueError: the key or nonce has the wrong length.
        """
        return aead_seal(self.aead_id, key, nonce, aad, plaintext)

    def aead_open(self, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        """AEAD.Open(key, nonce, aad, ciphertext) -> plaintext.

        Raises:
            ValueError: the key or nonce has the wrong length.
            VerificationError: the ciphertext does not authenticate.
        """
        return aead_open(self.aead_id, key, nonce, aad, ciphertext)


def _impl(
    suite: CipherSuite, kem: KemId, kdf: KdfId, aead: AeadId, sig: SignatureScheme
) -> CipherSuiteImpl:
    return CipherSuiteImpl(suite, HPKESuite(kem, kdf, aead), sig)


_S = CipherSuite
_X25519, _X448 = KemId.DHKEM_X25519_HKDF_SHA256, KemId.DHKEM_X448_HKDF_SHA512
_SHA256, _SHA384, _SHA512 = KdfId.HKDF_SHA256, KdfId.HKDF_SHA384, KdfId.HKDF_SHA512
_A128, _A256, _CHACHA = AeadId.AES_128_GCM, AeadId.AES_256_GCM, AeadId.CHACHA20_POLY1305
_ED25519, _ED448 = SignatureScheme.ED25519, SignatureScheme.ED448
_P256 = SignatureScheme.ECDSA_SECP256R1_SHA256
_P384 = SignatureScheme.ECDSA_SECP384R1_SHA384
_P521 = SignatureScheme.ECDSA_SECP521R1_SHA512

_REGISTRY: dict[CipherSuite, CipherSuiteImpl] = {
    impl.suite: impl
    for impl in (
        _impl(_S.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519, _X25519, _SHA256, _A128, _ED25519),
        _impl(
            _S.MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
            KemId.DHKEM_P256_HKDF_SHA256,
            _SHA256,
            _A128,
            _P256,
        ),
        _impl(
            _S.MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
            _X25519,
            _SHA256,
            _CHACHA,
            _ED25519,
        ),
        _impl(_S.MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448, _X448, _SHA512, _A256, _ED448),
        _impl(
            _S.MLS_256_DHKEMP521_AES256GCM_SHA512_P521,
            KemId.DHKEM_P521_HKDF_SHA512,
            _SHA512,
            _A256,
            _P521,
        ),
        _impl(_S.MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448, _X448, _SHA512, _CHACHA, _ED448),
        _impl(
            _S.MLS_256_DHKEMP384_AES256GCM_SHA384_P384,
            KemId.DHKEM_P384_HKDF_SHA384,
            _SHA384,
            _A256,
            _P384,
        ),
        _impl(
            _S.MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519,
            KemId.MLKEM768_X25519,
            _SHA256,
            _A128,
            _ED25519,
        ),
        _impl(
            _S.MLS_128_MLKEM768X25519_AES256GCM_SHA384_Ed25519,
            KemId.MLKEM768_X25519,
            _SHA384,
            _A256,
            _ED25519,
        ),
        _impl(
            _S.MLS_128_MLKEM768P256_AES128GCM_SHA256_P256,
            KemId.MLKEM768_P256,
            _SHA256,
            _A128,
            _P256,
        ),
        _impl(
            _S.MLS_128_MLKEM768P256_AES256GCM_SHA384_P256,
            KemId.MLKEM768_P256,
            _SHA384,
            _A256,
            _P256,
        ),
        _impl(
            _S.MLS_192_MLKEM1024P384_AES256GCM_SHA384_P384,
            KemId.MLKEM1024_P384,
            _SHA384,
            _A256,
            _P384,
        ),
        _impl(
            _S.MLS_128_MLKEM768_AES256GCM_SHA384_Ed25519, KemId.MLKEM768, _SHA384, _A256, _ED25519
        ),
        _impl(_S.MLS_128_MLKEM768_AES256GCM_SHA384_P256, KemId.MLKEM768, _SHA384, _A256, _P256),
        _impl(_S.MLS_192_MLKEM1024_AES256GCM_SHA384_P384, KemId.MLKEM1024, _SHA384, _A256, _P384),
    )
}


def get_cipher_suite(suite: int) -> CipherSuiteImpl:
    """The primitives of ciphersuite ``suite``.

    Raises:
        ValidationError: ``suite`` is not a ciphersuite this library implements.
    """
    try:
        return _REGISTRY[CipherSuite(suite)]
    except ValueError:
        raise ValidationError("unsupported cipher suite") from None
