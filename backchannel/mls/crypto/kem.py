"""HPKE KEMs: DHKEM incl. X448, ML-KEM and ML-KEM hybrids (RFC 9180 §4.1; draft-ietf-hpke-pq).

Each KEM is a small object with ``derive``/``encap``/``decap`` over byte strings in the
RFC 9180 ``Serialize*``/``Deserialize*`` formats (the formats the MLS vectors use):

* DHKEM(P-256/P-384/P-521, X25519, X448) per RFC 9180 §4.1 and §7.1. DHKEM(X448,
  HKDF-SHA512) (0x0021) is built here from ``cryptography``'s X448 and HMAC because
  ``cryptography``'s HPKE lacks it.
* ML-KEM-768/1024 (0x0041/0x0042) and the hybrids MLKEM768-X25519 (0x647a, "X-Wing"),
  MLKEM768-P256 (0x0050) and MLKEM1024-P384 (0x0051) per draft-ietf-hpke-pq-03 with the
  QSF combiner of draft-irtf-cfrg-hybrid-kems / concrete-hybrid-kems:
  ``ss = SHA3-256(ss_PQ || ss_T || ct_T || ek_T || Label)``. Their private key is the
  seed (64 bytes for ML-KEM, 32 for the hybrids, expanded with SHAKE256) and
  ``DeriveKeyPair(ikm)`` is ``SHAKE256.LabeledDerive(ikm, "DeriveKeyPair", "", Nsk)``.
  The NIST-curve scalar of a hybrid seed is chosen by rejection sampling over
  ``Nscalar``-byte chunks (concrete-hybrid-kems-02); earlier drafts reduced a
  48-byte string modulo the order instead, which gives other P-256 keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from abc import ABC, abstractmethod
from enum import IntEnum
from typing import Any

from cryptography.hazmat.primitives import hpke as _chpke
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x448, x25519

from ..errors import ValidationError, VerificationError

__all__ = [
    "KdfId",
    "Kem",
    "KemId",
    "get_kem",
    "hkdf_expand",
    "hkdf_extract",
    "labeled_expand",
    "labeled_extract",
]

_VERSION = b"HPKE-v1"


class KemId(IntEnum):
    """HPKE KEM identifiers (RFC 9180 §7.1, draft-ietf-hpke-pq)."""

    DHKEM_P256_HKDF_SHA256 = 0x0010
    DHKEM_P384_HKDF_SHA384 = 0x0011
    DHKEM_P521_HKDF_SHA512 = 0x0012
    DHKEM_X25519_HKDF_SHA256 = 0x0020
    DHKEM_X448_HKDF_SHA512 = 0x0021
    MLKEM768 = 0x0041
    MLKEM1024 = 0x0042
    MLKEM768_P256 = 0x0050
    MLKEM1024_P384 = 0x0051
    MLKEM768_X25519 = 0x647A  #: X-Wing


class KdfId(IntEnum):
    """HPKE KDF identifiers (RFC 9180 §7.2); each is HKDF over a SHA-2 hash."""

    HKDF_SHA256 = 0x0001
    HKDF_SHA384 = 0x0002
    HKDF_SHA512 = 0x0003

    @property
    def hash_name(self) -> str:
        """The hashlib name of the underlying hash."""
        return {1: "sha256", 2: "sha384", 3: "sha512"}[self.value]

    @property
    def n_h(self) -> int:
        """Nh: the output length of Extract, in bytes."""
        return {1: 32, 2: 48, 3: 64}[self.value]


def hkdf_extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869 §2.2): ``HMAC-Hash(salt, ikm)``; an empty salt acts as zeros."""
    return hmac.digest(salt, ikm, hash_name)


_DIGEST_SIZES: dict[str, int] = {"sha256": 32, "sha384": 48, "sha512": 64}


def _digest_size(hash_name: str) -> int:
    size = _DIGEST_SIZES.get(hash_name)
    if size is None:
        size = _DIGEST_SIZES[hash_name] = hashlib.new(hash_name).digest_size
    return size


def hkdf_expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869 §2.3).

    Raises:
        ValueError: ``length`` is above 255 hash lengths.
    """
    size = _digest_size(hash_name)
    if 0 < length <= size:
        # The common case (every MLS key, nonce and secret): a single block.
        return hmac.digest(prk, info + b"\x01", hash_name)[:length]
    if length > 255 * size:
        raise ValueError("HKDF-Expand length must be at most 255 * Nh")
    blocks = []
    block = b""
    for counter in range(1, -(-length // size) + 1):
        block = hmac.digest(prk, block + info + bytes((counter,)), hash_name)
        blocks.append(block)
    return b"".join(blocks)[:length]


def labeled_extract(
    hash_name: str, suite_id: bytes, salt: bytes, label: bytes, ikm: bytes
) -> bytes:
    return hkdf_extract(hash_name, salt, _VERSION + suite_id + label + ikm)


def labeled_expand(
    hash_name: str, suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int
) -> bytes:
    labeled_info = length.to_bytes(2, "big") + _VERSION + suite_id + label + info
    return hkdf_expand(hash_name, prk, labeled_info, length)


def _shake256_labeled_derive(suite_id: bytes, ikm: bytes, label: bytes, length: int) -> bytes:
    """``SHAKE256.LabeledDerive(ikm, label, "", L)`` (draft-ietf-hpke-pq-03 §5)."""
    labeled = (
        ikm
        + _VERSION
        + suite_id
        + len(label).to_bytes(2, "big")
        + label
        + length.to_bytes(2, "big")
    )
    return hashlib.shake_256(labeled).digest(length)


# --- groups: X25519, X448 and the NIST curves, as byte-string operations ----------------


class _Group:
    """A Diffie-Hellman group with the RFC 9180 key encodings."""

    def __init__(self, name: str, n_elem: int, n_scalar: int) -> None:
        self.name = name
        self.n_elem = n_elem
        self.n_scalar = n_scalar
        self.curve: ec.EllipticCurve | None = {
            "P-256": ec.SECP256R1(),
            "P-384": ec.SECP384R1(),
            "P-521": ec.SECP521R1(),
        }.get(name)
        self.order = {
            "P-256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
            "P-384": int(
                "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
                "581a0db248b0a77aecec196accc52973",
                16,
            ),
            "P-521": (1 << 521)
            - 0x5AE79787C40D069948033FEB708F65A2FC44A36477663B851449048E16EC79BF7,
        }.get(name, 0)

    def private_key(self, sk: bytes) -> Any:
        """Load a serialized private key (RFC 9180 §7.1.2) into a ``cryptography`` key."""
        # NIST scalars with leading zero bytes dropped are accepted (some encoders do).
        short_ok = self.curve is not None and 0 < len(sk) < self.n_scalar
        if len(sk) != self.n_scalar and not short_ok:
            raise ValidationError(f"{self.name} private key must be {self.n_scalar} bytes")
        if self.name == "X25519":
            return x25519.X25519PrivateKey.from_private_bytes(sk)
        if self.name == "X448":
            return x448.X448PrivateKey.from_private_bytes(sk)
        assert self.curve is not None
        value = int.from_bytes(sk, "big")
        if not 0 < value < self.order:
            raise ValidationError(f"{self.name} private key is out of range")
        return ec.derive_private_key(value, self.curve)

    def generate(self) -> Any:
        if self.name == "X25519":
            return x25519.X25519PrivateKey.generate()
        if self.name == "X448":
            return x448.X448PrivateKey.generate()
        assert self.curve is not None
        return ec.generate_private_key(self.curve)

    def private_bytes(self, key: Any) -> bytes:
        if self.curve is None:
            raw: bytes = key.private_bytes_raw()
            return raw
        value: int = key.private_numbers().private_value
        return value.to_bytes(self.n_scalar, "big")

    def public_bytes(self, key: Any) -> bytes:
        """SerializePublicKey of the private key's public key."""
        pub = key.public_key()
        if self.curve is None:
            raw: bytes = pub.public_bytes_raw()
            return raw
        point: bytes = pub.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return point

    def public_key(self, pk: bytes) -> Any:
        """DeserializePublicKey; rejects bytes that are not a valid point."""
        if len(pk) != self.n_elem:
            raise ValidationError(f"{self.name} public key must be {self.n_elem} bytes")
        try:
            if self.name == "X25519":
                return x25519.X25519PublicKey.from_public_bytes(pk)
            if self.name == "X448":
                return x448.X448PublicKey.from_public_bytes(pk)
            assert self.curve is not None
            return ec.EllipticCurvePublicKey.from_encoded_point(self.curve, pk)
        except ValueError:
            raise ValidationError(f"invalid {self.name} public key") from None

    def dh(self, key: Any, pk: bytes) -> bytes:
        """DH(skX, pkY); the all-zero X25519/X448 output is an error (RFC 9180 §7.1.4)."""
        peer = self.public_key(pk)
        try:
            if self.curve is None:
                shared: bytes = key.exchange(peer)
            else:
                shared = key.exchange(ec.ECDH(), peer)
        except ValueError:
            raise VerificationError("Diffie-Hellman failed") from None
        if not any(shared):
            raise VerificationError("Diffie-Hellman failed")
        return shared

    def random_scalar(self, seed: bytes) -> bytes:
        """``Group.RandomScalar`` of draft-irtf-cfrg-concrete-hybrid-kems (rejection sampling)."""
        if self.curve is None:
            return seed[: self.n_scalar]
        for start in range(0, len(seed) - self.n_scalar + 1, self.n_scalar):
            candidate = seed[start : start + self.n_scalar]
            if 0 < int.from_bytes(candidate, "big") < self.order:
                return candidate
        raise VerificationError("rejection sampling failed")  # probability < 2^-128


_GROUPS = {
    "X25519": _Group("X25519", 32, 32),
    "X448": _Group("X448", 56, 56),
    "P-256": _Group("P-256", 65, 32),
    "P-384": _Group("P-384", 97, 48),
    "P-521": _Group("P-521", 133, 66),
}


# --- KEMs ---------------------------------------------------------------------------------


class Kem(ABC):
    """One HPKE KEM over serialized keys (RFC 9180 §4)."""

    kem_id: KemId
    n_secret: int
    n_enc: int
    n_pk: int
    n_sk: int
    crypto_kem: Any = None  # the matching cryptography.hpke.KEM, if it has one

    @property
    def suite_id(self) -> bytes:
        return b"KEM" + self.kem_id.to_bytes(2, "big")

    @abstractmethod
    def generate(self) -> bytes:
        """GenerateKeyPair, returning the serialized private key."""

    @abstractmethod
    def derive(self, ikm: bytes) -> bytes:
        """DeriveKeyPair(ikm), returning the serialized private key."""

    @abstractmethod
    def check_private(self, sk: bytes) -> None:
        """Raise ValidationError unless ``sk`` is a valid serialized private key."""

    @abstractmethod
    def public_from_private(self, sk: bytes) -> bytes:
        """The serialized public key of a serialized private key."""

    @abstractmethod
    def check_public(self, pk: bytes) -> None:
        """Raise ValidationError unless ``pk`` is a valid serialized public key."""

    @abstractmethod
    def encap(self, pk: bytes, ikm_e: bytes | None) -> tuple[bytes, bytes]:
        """Encap(pkR) -> (shared_secret, enc); ``ikm_e`` derandomises it (tests only)."""

    @abstractmethod
    def decap(self, enc: bytes, sk: bytes) -> bytes:
        """Decap(enc, skR) -> shared_secret."""

    def crypto_private(self, sk: bytes) -> Any:
        """The private key as ``cryptography``'s HPKE expects it."""
        raise NotImplementedError

    def crypto_public(self, pk: bytes) -> Any:
        """The public key as ``cryptography``'s HPKE expects it."""
        raise NotImplementedError


class _DHKem(Kem):
    """DHKEM(Group, HKDF) — RFC 9180 §4.1."""

    def __init__(self, kem_id: KemId, group: str, kdf: KdfId, crypto_kem: Any) -> None:
        self.kem_id = kem_id
        self.group = _GROUPS[group]
        self.hash_name = kdf.hash_name
        self.n_secret = kdf.n_h
        self.n_enc = self.n_pk = self.group.n_elem
        self.n_sk = self.group.n_scalar
        self.crypto_kem = crypto_kem

    def generate(self) -> bytes:
        return self.group.private_bytes(self.group.generate())

    def derive(self, ikm: bytes) -> bytes:
        """DeriveKeyPair (RFC 9180 §7.1.3), incl. the bitmask rejection loop for P curves."""
        prk = labeled_extract(self.hash_name, self.suite_id, b"", b"dkp_prk", ikm)
        if self.group.curve is None:
            return labeled_expand(self.hash_name, self.suite_id, prk, b"sk", b"", self.n_sk)
        bitmask = 0x01 if self.group.name == "P-521" else 0xFF
        for counter in range(256):
            candidate = bytearray(
                labeled_expand(
                    self.hash_name, self.suite_id, prk, b"candidate", bytes([counter]), self.n_sk
                )
            )
            candidate[0] &= bitmask
            if 0 < int.from_bytes(candidate, "big") < self.group.order:
                return bytes(candidate)
        raise VerificationError("DeriveKeyPair failed")  # probability < 2^-256

    def check_private(self, sk: bytes) -> None:
        self.group.private_key(sk)

    def public_from_private(self, sk: bytes) -> bytes:
        return self.group.public_bytes(self.group.private_key(sk))

    def check_public(self, pk: bytes) -> None:
        self.group.public_key(pk)

    def _extract_and_expand(self, dh: bytes, kem_context: bytes) -> bytes:
        prk = labeled_extract(self.hash_name, self.suite_id, b"", b"eae_prk", dh)
        return labeled_expand(
            self.hash_name, self.suite_id, prk, b"shared_secret", kem_context, self.n_secret
        )

    def encap(self, pk: bytes, ikm_e: bytes | None) -> tuple[bytes, bytes]:
        sk_e = (
            self.group.generate() if ikm_e is None else self.group.private_key(self.derive(ikm_e))
        )
        enc = self.group.public_bytes(sk_e)
        dh = self.group.dh(sk_e, pk)
        return self._extract_and_expand(dh, enc + pk), enc

    def decap(self, enc: bytes, sk: bytes) -> bytes:
        key = self.group.private_key(sk)
        dh = self.group.dh(key, enc)
        return self._extract_and_expand(dh, enc + self.group.public_bytes(key))

    def crypto_private(self, sk: bytes) -> Any:
        return self.group.private_key(sk)

    def crypto_public(self, pk: bytes) -> Any:
        return self.group.public_key(pk)


_MLKEM: dict[int, tuple[Any, Any, int, int]] = {
    768: (mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey, 1184, 1088),
    1024: (mlkem.MLKEM1024PrivateKey, mlkem.MLKEM1024PublicKey, 1568, 1568),
}


def _mlkem_private(level: int, seed: bytes) -> Any:
    return _MLKEM[level][0].from_seed_bytes(seed)


def _mlkem_public(level: int, ek: bytes) -> Any:
    _, pub_cls, n_ek, _ = _MLKEM[level]
    if len(ek) != n_ek:
        raise ValidationError(f"ML-KEM-{level} public key must be {n_ek} bytes")
    try:
        return pub_cls.from_public_bytes(ek)
    except ValueError:
        raise ValidationError(f"invalid ML-KEM-{level} public key") from None


class _MLKem(Kem):
    """Pure ML-KEM as an HPKE KEM (draft-ietf-hpke-pq); the private key is the 64-byte seed."""

    def __init__(self, kem_id: KemId, level: int, crypto_kem: Any) -> None:
        self.kem_id = kem_id
        self.level = level
        self.n_secret = 32
        self.n_pk = _MLKEM[level][2]
        self.n_enc = _MLKEM[level][3]
        self.n_sk = 64
        self.crypto_kem = crypto_kem

    def generate(self) -> bytes:
        return _random(self.n_sk)

    def derive(self, ikm: bytes) -> bytes:
        return _shake256_labeled_derive(self.suite_id, ikm, b"DeriveKeyPair", self.n_sk)

    def check_private(self, sk: bytes) -> None:
        if len(sk) != self.n_sk:
            raise ValidationError(f"ML-KEM private key must be {self.n_sk} bytes")

    def public_from_private(self, sk: bytes) -> bytes:
        self.check_private(sk)
        raw: bytes = _mlkem_private(self.level, sk).public_key().public_bytes_raw()
        return raw

    def check_public(self, pk: bytes) -> None:
        _mlkem_public(self.level, pk)

    def encap(self, pk: bytes, ikm_e: bytes | None) -> tuple[bytes, bytes]:
        if ikm_e is not None:
            raise ValueError("derandomised encapsulation is not available for ML-KEM")
        ss, ct = _mlkem_public(self.level, pk).encapsulate()
        return ss, ct

    def decap(self, enc: bytes, sk: bytes) -> bytes:
        self.check_private(sk)
        if len(enc) != self.n_enc:
            raise VerificationError("KEM decapsulation failed")
        ss: bytes = _mlkem_private(self.level, sk).decapsulate(enc)
        return ss

    def crypto_private(self, sk: bytes) -> Any:
        self.check_private(sk)
        return _mlkem_private(self.level, sk)

    def crypto_public(self, pk: bytes) -> Any:
        return _mlkem_public(self.level, pk)


class _HybridKem(Kem):
    """ML-KEM + ECDH hybrid KEM of draft-ietf-hpke-pq-03 (X-Wing when the group is X25519).

    The private key is a 32-byte seed, expanded with SHAKE256 into the ML-KEM seed and
    the group scalar; the shared secret is
    ``SHA3-256(ss_PQ || ss_T || ct_T || ek_T || Label)``.
    """

    def __init__(
        self, kem_id: KemId, level: int, group: str, seed_size: int, label: bytes, crypto: Any
    ) -> None:
        self.kem_id = kem_id
        self.level = level
        self.group = _GROUPS[group]
        self.group_seed = seed_size
        self.label = label
        self.n_ek = _MLKEM[level][2]
        self.n_ct = _MLKEM[level][3]
        self.n_secret = 32
        self.n_sk = 32
        self.n_pk = self.n_ek + self.group.n_elem
        self.n_enc = self.n_ct + self.group.n_elem
        self.crypto_kem = crypto

    def _expand(self, seed: bytes) -> tuple[Any, Any]:
        if len(seed) != self.n_sk:
            raise ValidationError(f"hybrid KEM private key must be {self.n_sk} bytes")
        full = hashlib.shake_256(seed).digest(64 + self.group_seed)
        dk_t = self.group.private_key(self.group.random_scalar(full[64:]))
        return _mlkem_private(self.level, full[:64]), dk_t

    def generate(self) -> bytes:
        return _random(self.n_sk)

    def derive(self, ikm: bytes) -> bytes:
        return _shake256_labeled_derive(self.suite_id, ikm, b"DeriveKeyPair", self.n_sk)

    def check_private(self, sk: bytes) -> None:
        self._expand(sk)

    def public_from_private(self, sk: bytes) -> bytes:
        dk_pq, dk_t = self._expand(sk)
        ek_pq: bytes = dk_pq.public_key().public_bytes_raw()
        return ek_pq + self.group.public_bytes(dk_t)

    def check_public(self, pk: bytes) -> None:
        if len(pk) != self.n_pk:
            raise ValidationError(f"hybrid KEM public key must be {self.n_pk} bytes")
        _mlkem_public(self.level, pk[: self.n_ek])
        self.group.public_key(pk[self.n_ek :])

    def _combine(self, ss_pq: bytes, ss_t: bytes, ct_t: bytes, ek_t: bytes) -> bytes:
        return hashlib.sha3_256(ss_pq + ss_t + ct_t + ek_t + self.label).digest()

    def encap(self, pk: bytes, ikm_e: bytes | None) -> tuple[bytes, bytes]:
        if ikm_e is not None:
            raise ValueError("derandomised encapsulation is not available for ML-KEM hybrids")
        self.check_public(pk)
        ek_pq, ek_t = pk[: self.n_ek], pk[self.n_ek :]
        ss_pq, ct_pq = _mlkem_public(self.level, ek_pq).encapsulate()
        sk_e = self.group.generate()
        ct_t = self.group.public_bytes(sk_e)
        ss_t = self.group.dh(sk_e, ek_t)
        return self._combine(ss_pq, ss_t, ct_t, ek_t), ct_pq + ct_t

    def decap(self, enc: bytes, sk: bytes) -> bytes:
        if len(enc) != self.n_enc:
            raise VerificationError("KEM decapsulation failed")
        dk_pq, dk_t = self._expand(sk)
        ct_pq, ct_t = enc[: self.n_ct], enc[self.n_ct :]
        ss_pq = dk_pq.decapsulate(ct_pq)
        ss_t = self.group.dh(dk_t, ct_t)
        return self._combine(ss_pq, ss_t, ct_t, self.group.public_bytes(dk_t))

    def crypto_private(self, sk: bytes) -> Any:
        dk_pq, dk_t = self._expand(sk)
        if self.kem_id is KemId.MLKEM768_X25519:
            return _chpke.MLKEM768X25519PrivateKey(dk_pq, dk_t)
        return _chpke.MLKEM1024P384PrivateKey(dk_pq, dk_t)

    def crypto_public(self, pk: bytes) -> Any:
        self.check_public(pk)
        ek_pq = _mlkem_public(self.level, pk[: self.n_ek])
        ek_t = self.group.public_key(pk[self.n_ek :])
        if self.kem_id is KemId.MLKEM768_X25519:
            return _chpke.MLKEM768X25519PublicKey(ek_pq, ek_t)
        return _chpke.MLKEM1024P384PublicKey(ek_pq, ek_t)


def _random(size: int) -> bytes:
    return secrets.token_bytes(size)


_KEMS: dict[KemId, Kem] = {
    KemId.DHKEM_P256_HKDF_SHA256: _DHKem(
        KemId.DHKEM_P256_HKDF_SHA256, "P-256", KdfId.HKDF_SHA256, _chpke.KEM.P256
    ),
    KemId.DHKEM_P384_HKDF_SHA384: _DHKem(
        KemId.DHKEM_P384_HKDF_SHA384, "P-384", KdfId.HKDF_SHA384, _chpke.KEM.P384
    ),
    KemId.DHKEM_P521_HKDF_SHA512: _DHKem(
        KemId.DHKEM_P521_HKDF_SHA512, "P-521", KdfId.HKDF_SHA512, _chpke.KEM.P521
    ),
    KemId.DHKEM_X25519_HKDF_SHA256: _DHKem(
        KemId.DHKEM_X25519_HKDF_SHA256, "X25519", KdfId.HKDF_SHA256, _chpke.KEM.X25519
    ),
    KemId.DHKEM_X448_HKDF_SHA512: _DHKem(
        KemId.DHKEM_X448_HKDF_SHA512, "X448", KdfId.HKDF_SHA512, None
    ),
    KemId.MLKEM768: _MLKem(KemId.MLKEM768, 768, _chpke.KEM.MLKEM768),
    KemId.MLKEM1024: _MLKem(KemId.MLKEM1024, 1024, _chpke.KEM.MLKEM1024),
    KemId.MLKEM768_P256: _HybridKem(KemId.MLKEM768_P256, 768, "P-256", 128, b"MLKEM768-P256", None),
    KemId.MLKEM1024_P384: _HybridKem(
        KemId.MLKEM1024_P384, 1024, "P-384", 48, b"MLKEM1024-P384", _chpke.KEM.MLKEM1024_P384
    ),
    KemId.MLKEM768_X25519: _HybridKem(
        KemId.MLKEM768_X25519, 768, "X25519", 32, b"\\.//^\\", _chpke.KEM.MLKEM768_X25519
    ),
}


def get_kem(kem_id: KemId) -> Kem:
    return _KEMS[KemId(kem_id)]
