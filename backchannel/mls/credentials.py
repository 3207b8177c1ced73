"""Credentials binding a member's identity to its signature key (RFC 9420 §5.3)."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

from .codec import Reader, Struct, Writer
from .errors import UsageError

__all__ = [
    "BasicCredential",
    "Certificate",
    "Credential",
    "CredentialType",
    "UnknownCredential",
    "X509Credential",
]


class CredentialType(IntEnum):
    """Registered credential types (§17.5); the wire field is an open ``uint16``."""

    #: §5.3: an opaque identity the application authenticates by other means.
    BASIC = 1
    #: §5.3: an X.509 certificate chain, end-entity first.
    X509 = 2


@dataclass(frozen=True, slots=True)
class Certificate(Struct):
    """``struct { opaque cert_data<V>; } Certificate`` (§5.3): one DER certificate."""

    #: The DER encoding of the certificate.
    cert_data: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.cert_data)

    @classmethod
    def decode(cls, r: Reader) -> Certificate:
        return cls(r.opaque())


class Credential(Struct):
    """Base of the credential family (§5.3): ``credential_type`` then a typed body.

    ``Credential.decode`` reads the type and returns the matching subclass:
    :class:`BasicCredential`, :class:`X509Credential`, or for any other type code an
    :class:`UnknownCredential`. An unknown type is kept so that capabilities can be
    checked against it later (§13.3); the RFC gives no body layout for those, so it
    is taken as ``opaque<V>``, as openmls and mls-rs do for custom credentials.
    """

    __slots__ = ()

    #: The ``CredentialType`` code on the wire.
    credential_type: int

    @abstractmethod
    def _encode_body(self, w: Writer) -> None: ...

    def encode(self, w: Writer) -> None:
        w.uint16(self.credential_type)
        self._encode_body(w)

    @classmethod
    def decode(cls, r: Reader) -> Credential:
        credential_type = r.uint16()
        if credential_type == CredentialType.BASIC:
            return BasicCredential(r.opaque())
        if credential_type == CredentialType.X509:
            return X509Credential(r.vector(Certificate.decode))
        return UnknownCredential(credential_type, r.opaque())


@dataclass(frozen=True, slots=True)
class BasicCredential(Credential):
    """A ``basic`` credential: an application-defined identity (§5.3)."""

    #: The identity bytes, opaque to MLS.
    identity: bytes
    credential_type: int = field(default=CredentialType.BASIC, init=False)

    def _encode_body(self, w: Writer) -> None:
        w.opaque(self.identity)


@dataclass(frozen=True, slots=True)
class X509Credential(Credential):
    """An ``x509`` credential: a certificate chain, end-entity first (§5.3)."""

    #: The chain; each certificate signs the one before it.
    certificates: tuple[Certificate, ...]
    credential_type: int = field(default=CredentialType.X509, init=False)

    def _encode_body(self, w: Writer) -> None:
        w.struct_vector(self.certificates)


@dataclass(frozen=True, slots=True)
class UnknownCredential(Credential):
    """A credential of a type this library does not know, body kept as ``opaque<V>``."""

    _KNOWN: ClassVar[frozenset[int]] = frozenset(CredentialType)

    #: The ``CredentialType`` code (never a known one).
    credential_type: int
    #: The raw body.
    data: bytes

    def __post_init__(self) -> None:
        # Known types have their own classes, so that each value has one spelling.
        if self.credential_type in self._KNOWN or not 0 <= self.credential_type <= 0xFFFF:
            raise UsageError("credential_type must be an unknown uint16 code")

    def _encode_body(self, w: Writer) -> None:
        w.opaque(self.data)
