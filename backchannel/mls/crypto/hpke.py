"""HPKE base mode: key schedule and single-shot seal/open for every MLS KEM (RFC 9180 §5-6).

Theory of operation: the KEMs live in :mod:`.kem`. The HPKE key schedule (RFC 9180
§5.1) and single-shot ``seal``/``open`` (§6.1) are written out here once, on HMAC and
the AEADs of ``cryptography``. Where ``cryptography.hazmat.primitives.hpke`` supports
the KEM and the call has the plain single-shot shape MLS uses (empty AAD, fresh
randomness), ``seal``/``open`` go through it; otherwise (DHKEM(X448), MLKEM768-P256, a
non-empty AAD, the exporter, or derandomised encapsulation in tests) the hand-written
path runs. Tests check the two paths against each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke as _chpke
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ..errors import ValidationError, VerificationError
from .kem import KdfId, KemId, get_kem, hkdf_expand, hkdf_extract, labeled_expand, labeled_extract

__all__ = [
    "AeadId",
    "HPKEContext",
    "HPKEPrivateKey",
    "HPKEPublicKey",
    "HPKESuite",
    "KdfId",
    "KemId",
    "aead_open",
    "aead_seal",
    "hkdf_expand",
    "hkdf_extract",
]


class AeadId(IntEnum):
    """HPKE AEAD identifiers (RFC 9180 §7.3)."""

    AES_128_GCM = 0x0001
    AES_256_GCM = 0x0002
    CHACHA20_POLY1305 = 0x0003

    @property
    def n_k(self) -> int:
        """Nk: key length in bytes."""
        return 16 if self is AeadId.AES_128_GCM else 32

    @property
    def n_n(self) -> int:
        """Nn: nonce length in bytes."""
        return 12


def _aead(aead_id: AeadId, key: bytes) -> AESGCM | ChaCha20Poly1305:
    if len(key) != aead_id.n_k:
        raise ValueError(f"AEAD key must be {aead_id.n_k} bytes")
    if aead_id is AeadId.CHACHA20_POLY1305:
        return ChaCha20Poly1305(key)
    return AESGCM(key)


def aead_seal(aead_id: AeadId, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """AEAD.Seal: encrypt and authenticate (RFC 5116); returns ciphertext || tag.

    Raises:
        ValueError: the key or nonce has the wrong length.
    """
    if len(nonce) != aead_id.n_n:
        raise ValueError(f"AEAD nonce must be {aead_id.n_n} bytes")
    return _aead(aead_id, key).encrypt(nonce, plaintext, aad)


def aead_open(aead_id: AeadId, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
    """AEAD.Open: check the tag and decrypt (RFC 5116).

    Raises:
        ValueError: the key or nonce has the wrong length.
        VerificationError: the tag does not verify (wrong key, nonce, AAD or data).
    """
    if len(nonce) != aead_id.n_n:
        raise ValueError(f"AEAD nonce must be {aead_id.n_n} bytes")
    cipher = _aead(aead_id, key)
    try:
        return cipher.decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise VerificationError("AEAD decryption failed") from None


# --- keys ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HPKEPublicKey:
    """A KEM public key in its ``SerializePublicKey`` encoding (RFC 9180 §4)."""

    #: The KEM this key belongs to.
    kem_id: KemId
    #: The serialized public key (raw for X25519/X448, uncompressed SEC1 for P curves,
    #: ``ek_PQ || ek_T`` for hybrids).
    data: bytes

    @classmethod
    def from_bytes(cls, kem_id: KemId, data: bytes) -> HPKEPublicKey:
        """DeserializePublicKey, with validation.

        Raises:
            ValidationError: the bytes are not a valid public key of ``kem_id``.
        """
        get_kem(kem_id).check_public(bytes(data))
        return cls(KemId(kem_id), bytes(data))

    def to_bytes(self) -> bytes:
        """SerializePublicKey."""
        return self.data


@dataclass(frozen=True, slots=True, eq=False)
class HPKEPrivateKey:
    """A KEM private key in its ``SerializePrivateKey`` encoding (RFC 9180 §7.1.2)."""

    #: The KEM this key belongs to.
    kem_id: KemId
    _data: bytes = field(repr=False)

    @classmethod
    def generate(cls, kem_id: KemId) -> HPKEPrivateKey:
        """GenerateKeyPair() (RFC 9180 §4)."""
        return cls(KemId(kem_id), get_kem(kem_id).generate())

    @classmethod
    def derive(cls, kem_id: KemId, ikm: bytes) -> HPKEPrivateKey:
        """DeriveKeyPair(ikm) (RFC 9180 §7.1.3; draft-ietf-hpke-pq-03 for ML-KEM KEMs)."""
        return cls(KemId(kem_id), get_kem(kem_id).derive(bytes(ikm)))

    @classmethod
    def from_bytes(cls, kem_id: KemId, data: bytes) -> HPKEPrivateKey:
        """DeserializePrivateKey (NIST-curve scalars may omit leading zero bytes).

        Raises:
            ValidationError: the bytes are not a valid private key of ``kem_id``.
        """
        kem = get_kem(kem_id)
        kem.check_private(bytes(data))
        # A NIST-curve scalar may arrive without its leading zero bytes; store it padded.
        return cls(KemId(kem_id), bytes(data).rjust(kem.n_sk, b"\x00"))

    def to_bytes(self) -> bytes:
        """SerializePrivateKey."""
        return self._data

    def public_key(self) -> HPKEPublicKey:
        """The matching public key."""
        return HPKEPublicKey(self.kem_id, get_kem(self.kem_id).public_from_private(self._data))


# --- HPKE ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HPKEContext:
    """The secrets of an HPKE base-mode context (RFC 9180 §5.1), for single-shot use."""

    suite: HPKESuite
    key: bytes = field(repr=False)
    base_nonce: bytes = field(repr=False)
    exporter_secret: bytes = field(repr=False)

    def export(self, exporter_context: bytes, length: int) -> bytes:
        """Context.Export(exporter_context, L) (RFC 9180 §5.3)."""
        return self.suite.labeled_expand(self.exporter_secret, b"sec", exporter_context, length)

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        """Seal with sequence number 0 (the only one single-shot HPKE uses)."""
        return aead_seal(self.suite.aead_id, self.key, self.base_nonce, aad, plaintext)

    def open(self, aad: bytes, ciphertext: bytes) -> bytes:
        """Open with sequence number 0.

        Raises:
            VerificationError: the ciphertext does not authenticate.
        """
        return aead_open(self.suite.aead_id, self.key, self.base_nonce, aad, ciphertext)


@dataclass(frozen=True, slots=True)
class HPKESuite:
    """An HPKE ciphersuite (KEM, KDF, AEAD) in base mode (RFC 9180 §5-6)."""

    kem_id: KemId
    kdf_id: KdfId
    aead_id: AeadId

    @property
    def suite_id(self) -> bytes:
        """``"HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2)``."""
        return (
            b"HPKE"
            + self.kem_id.to_bytes(2, "big")
            + self.kdf_id.to_bytes(2, "big")
            + self.aead_id.to_bytes(2, "big")
        )

    @property
    def n_enc(self) -> int:
        """Nenc: the length of the encapsulated key."""
        return get_kem(self.kem_id).n_enc

    def labeled_extract(self, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        """LabeledExtract (RFC 9180 §4) under this suite's id."""
        return labeled_extract(self.kdf_id.hash_name, self.suite_id, salt, label, ikm)

    def labeled_expand(self, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        """LabeledExpand (RFC 9180 §4) under this suite's id."""
        return labeled_expand(self.kdf_id.hash_name, self.suite_id, prk, label, info, length)

    def _key_schedule(self, shared_secret: bytes, info: bytes) -> HPKEContext:
        psk_id_hash = self.labeled_extract(b"", b"psk_id_hash", b"")
        info_hash = self.labeled_extract(b"", b"info_hash", info)
        context = b"\x00" + psk_id_hash + info_hash
        secret = self.labeled_extract(shared_secret, b"secret", b"")
        return HPKEContext(
            self,
            self.labeled_expand(secret, b"key", context, self.aead_id.n_k),
            self.labeled_expand(secret, b"base_nonce", context, self.aead_id.n_n),
            self.labeled_expand(secret, b"exp", context, self.kdf_id.n_h),
        )

    def setup_base_s(
        self, public_key: HPKEPublicKey, info: bytes, *, ikm_e: bytes | None = None
    ) -> tuple[bytes, HPKEContext]:
        """SetupBaseS(pkR, info) -> (enc, context) (RFC 9180 §5.1.1).

        Args:
            public_key: the recipient's key; must belong to this suite's KEM.
            info: application-supplied information.
            ikm_e: testing only: derive the ephemeral key from this (DHKEMs only).

        Raises:
            ValidationError: the key is for another KEM or is invalid.
        """
        self._checkget_kem(public_key.kem_id)
        shared_secret, enc = get_kem(self.kem_id).encap(public_key.data, ikm_e)
        return enc, self._key_schedule(shared_secret, info)

    def setup_base_r(self, enc: bytes, private_key: HPKEPrivateKey, info: bytes) -> HPKEContext:
        """SetupBaseR(enc, skR, info) -> context (RFC 9180 §5.1.1).

        Raises:
            VerificationError: decapsulation failed (e.g. a malformed ``enc``).
        """
        self._checkget_kem(private_key.kem_id)
        kem = get_kem(self.kem_id)
        if len(enc) != kem.n_enc:
            raise VerificationError("HPKE decryption failed")
        try:
            shared_secret = kem.decap(bytes(enc), private_key.to_bytes())
        except (ValidationError, ValueError):
            raise VerificationError("HPKE decryption failed") from None
        return self._key_schedule(shared_secret, info)

    def _crypto_suite(self) -> Any:
        kem = get_kem(self.kem_id)
        if kem.crypto_kem is None:
            return None
        kdf = {1: _chpke.KDF.HKDF_SHA256, 2: _chpke.KDF.HKDF_SHA384, 3: _chpke.KDF.HKDF_SHA512}
        aead = {
            1: _chpke.AEAD.AES_128_GCM,
            2: _chpke.AEAD.AES_256_GCM,
            3: _chpke.AEAD.CHACHA20_POLY1305,
        }
        return _chpke.Suite(kem.crypto_kem, kdf[self.kdf_id], aead[self.aead_id])

    def seal(
        self,
        public_key: HPKEPublicKey,
        info: bytes,
        aad: bytes,
        plaintext: bytes,
        *,
        ikm_e: bytes | None = None,
    ) -> tuple[bytes, bytes]:
        """SealBase(pkR, info, aad, pt) -> (enc, ct) (RFC 9180 §6.1).

        Raises:
            ValidationError: the key is for another KEM or is invalid.
            VerificationError: the key is a low-order point (all-zero DH output).
        """
        self._checkget_kem(public_key.kem_id)
        suite = self._crypto_suite() if not aad and ikm_e is None else None
        if suite is not None:
            kem = get_kem(self.kem_id)
            recipient = kem.crypto_public(public_key.data)
            try:
                out: bytes = suite.encrypt(plaintext, recipient, info=info)
            except ValueError:  # e.g. an all-zero X25519 shared secret
                raise VerificationError("Diffie-Hellman failed") from None
            return out[: kem.n_enc], out[kem.n_enc :]
        enc, ctx = self.setup_base_s(public_key, info, ikm_e=ikm_e)
        return enc, ctx.seal(aad, plaintext)

    def open(
        self, private_key: HPKEPrivateKey, enc: bytes, info: bytes, aad: bytes, ciphertext: bytes
    ) -> bytes:
        """OpenBase(enc, skR, info, aad, ct) -> pt (RFC 9180 §6.1).

        Raises:
            VerificationError: decapsulation or decryption failed; the message does not
                say which.
        """
        self._checkget_kem(private_key.kem_id)
        kem = get_kem(self.kem_id)
        if len(enc) != kem.n_enc:
            raise VerificationError("HPKE decryption failed")
        suite = self._crypto_suite() if not aad else None
        if suite is not None:
            try:
                result: bytes = suite.decrypt(
                    bytes(enc) + bytes(ciphertext),
                    kem.crypto_private(private_key.to_bytes()),
                    info=info,
                )
            except (InvalidTag, ValueError):
                raise VerificationError("HPKE decryption failed") from None
            return result
        try:
            return self.setup_base_r(enc, private_key, info).open(aad, ciphertext)
        except VerificationError:
            raise VerificationError("HPKE decryption failed") from None

    def _checkget_kem(self, kem_id: KemId) -> None:
        if kem_id != self.kem_id:
            raise ValidationError("HPKE key belongs to another KEM")
