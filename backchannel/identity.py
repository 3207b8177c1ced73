"""A device's identity: its MLS signature key, credential id and display name."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import msgpack

from .errors import ProfileError
from .mls.credentials import BasicCredential
from .mls.crypto.signatures import SignaturePrivateKey, SignatureScheme
from .mls.crypto.suites import DEFAULT_CIPHER_SUITE, get_cipher_suite

__all__ = ["IDENTITY_ID_BYTES", "DeviceIdentity"]

#: Length of the random credential identity that names a member in every room.
IDENTITY_ID_BYTES = 16
_VERSION = 1


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """This device's long-term identity. Keys never appear in its repr."""

    #: Random bytes carried in the MLS BasicCredential: the member id in every room.
    identity_id: bytes
    display_name: str
    cipher_suite: int
    signature_key: bytes = field(repr=False)

    @classmethod
    def generate(
        cls, display_name: str, cipher_suite: int = int(DEFAULT_CIPHER_SUITE)
    ) -> DeviceIdentity:
        """A fresh identity for a new profile."""
        scheme = SignatureScheme(get_cipher_suite(cipher_suite).signature_scheme)
        key = SignaturePrivateKey.generate(scheme)
        return cls(os.urandom(IDENTITY_ID_BYTES), display_name, cipher_suite, key.to_bytes())

    def private_key(self) -> SignaturePrivateKey:
        scheme = SignatureScheme(get_cipher_suite(self.cipher_suite).signature_scheme)
        return SignaturePrivateKey.from_bytes(scheme, self.signature_key)

    def public_key(self) -> bytes:
        """The signature public key others see (and compare in safety numbers)."""
        return self.private_key().public_key().to_bytes()

    def credential(self) -> BasicCredential:
        return BasicCredential(self.identity_id)

    def to_bytes(self) -> bytes:
        """Versioned msgpack, for the encrypted store."""
        packed: bytes = msgpack.packb(
            {
                "v": _VERSION,
                "id": self.identity_id,
                "name": self.display_name,
                "suite": self.cipher_suite,
                "sig": self.signature_key,
            },
            use_bin_type=True,
        )
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceIdentity:
        """Raises ProfileError if the stored identity is unreadable."""
        try:
            m = msgpack.unpackb(data, raw=False)
            if m["v"] != _VERSION:
                raise ValueError
            identity = cls(bytes(m["id"]), str(m["name"]), int(m["suite"]), bytes(m["sig"]))
            identity.private_key()
        except Exception:  # any malformed record is one problem for the user
            raise ProfileError(
                "The profile's identity record is damaged; restore the profile from a backup."
            ) from None
        return identity
