"""Extensions and the typed payloads of the extension types RFC 9420 defines (§13, §17.3)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Self

from .codec import Reader, Struct, Writer
from .credentials import Credential
from .errors import DecodeError, ValidationError

__all__ = [
    "GREASE_VALUES",
    "ApplicationId",
    "Extension",
    "ExtensionPayload",
    "ExtensionType",
    "ExternalPub",
    "ExternalSender",
    "ExternalSenders",
    "RequiredCapabilities",
    "check_unique_types",
    "find_extension",
    "is_grease",
]

#: Code points reserved for GREASE in every MLS registry (§13.5). Receivers treat
#: them like any other unknown value; this set exists for senders and tests.
GREASE_VALUES: frozenset[int] = frozenset(0x0A0A + 0x1010 * i for i in range(15))


def is_grease(value: int) -> bool:
    """True for a GREASE code point (§13.5), e.g. ``0x0A0A`` or ``0xEAEA``."""
    return value in GREASE_VALUES


class ExtensionType(IntEnum):
    """Registered extension types (§17.3); the wire field is an open ``uint16``."""

    #: §5.3.3: an application-defined identifier for a leaf (LeafNode).
    APPLICATION_ID = 1
    #: §12.4.3.3: the ratchet tree, for joiners (GroupInfo).
    RATCHET_TREE = 2
    #: §11.1: capabilities every member must support (GroupContext).
    REQUIRED_CAPABILITIES = 3
    #: §12.4.3.2: the HPKE key for external commits (GroupInfo).
    EXTERNAL_PUB = 4
    #: §12.1.8.1: who may send external proposals (GroupContext).
    EXTERNAL_SENDERS = 5


@dataclass(frozen=True, slots=True)
class Extension(Struct):
    """``struct { ExtensionType extension_type; opaque extension_data<V>; }`` (§13.4).

    Any type code is accepted, including unknown and GREASE ones, which receivers
    must ignore (§13.4, §13.5).
    """

    #: The ``uint16`` extension type code.
    extension_type: int
    #: The payload; its layout is defined by the extension type.
    extension_data: bytes

    def encode(self, w: Writer) -> None:
        w.uint16(self.extension_type).opaque(self.extension_data)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.uint16(), r.opaque())


def find_extension(extensions: Iterable[Extension], extension_type: int) -> Extension | None:
    """The first extension of ``extension_type`` in ``extensions``, or None."""
    for extension in extensions:
        if extension.extension_type == extension_type:
            return extension
    return None


def check_unique_types(extensions: Iterable[Extension]) -> None:
    """Enforce that no extension type appears twice in one list (§13.4).

    Raises:
        ValidationError: a type code is repeated.
    """
    seen: set[int] = set()
    for extension in extensions:
        if extension.extension_type in seen:
            raise ValidationError("extension list repeats an extension type")
        seen.add(extension.extension_type)


class ExtensionPayload(Struct):
    """Base of the typed ``extension_data`` layouts, tied to one extension type."""

    __slots__ = ()

    #: The extension type whose ``extension_data`` this struct decodes.
    EXTENSION_TYPE: ClassVar[int]

    def to_extension(self) -> Extension:
        """Wrap this payload as an :class:`Extension`."""
        return Extension(self.EXTENSION_TYPE, self.to_bytes())

    @classmethod
    def from_extension(cls, extension: Extension) -> Self:
        """Decode ``extension.extension_data`` as this payload.

        Raises:
            DecodeError: the type code differs or the data is malformed.
        """
        if extension.extension_type != cls.EXTENSION_TYPE:
            raise DecodeError(f"extension is not a {cls.__name__}")
        return cls.from_bytes(extension.extension_data)


@dataclass(frozen=True, slots=True)
class ApplicationId(ExtensionPayload):
    """``opaque application_id<V>`` (§5.3.3): an application-level leaf identifier."""

    EXTENSION_TYPE: ClassVar[int] = ExtensionType.APPLICATION_ID

    #: The identifier, opaque to MLS.
    application_id: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.application_id)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class RequiredCapabilities(ExtensionPayload):
    """Capabilities every member must advertise (§11.1)."""

    EXTENSION_TYPE: ClassVar[int] = ExtensionType.REQUIRED_CAPABILITIES

    #: ``ExtensionType extension_types<V>``.
    extension_types: tuple[int, ...]
    #: ``ProposalType proposal_types<V>``.
    proposal_types: tuple[int, ...]
    #: ``CredentialType credential_types<V>``.
    credential_types: tuple[int, ...]

    def encode(self, w: Writer) -> None:
        w.vector(self.extension_types, Writer.uint16)
        w.vector(self.proposal_types, Writer.uint16)
        w.vector(self.credential_types, Writer.uint16)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.vector(Reader.uint16), r.vector(Reader.uint16), r.vector(Reader.uint16))


@dataclass(frozen=True, slots=True)
class ExternalPub(ExtensionPayload):
    """``struct { HPKEPublicKey external_pub; } ExternalPub`` (§12.4.3.2)."""

    EXTENSION_TYPE: ClassVar[int] = ExtensionType.EXTERNAL_PUB

    #: The serialized HPKE public key for external commits.
    external_pub: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.external_pub)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class ExternalSender(Struct):
    """One external sender: its signature key and credential (§12.1.8.1)."""

    #: ``SignaturePublicKey signature_key``.
    signature_key: bytes
    #: The sender's credential.
    credential: Credential

    def encode(self, w: Writer) -> None:
        w.opaque(self.signature_key).struct(self.credential)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), Credential.decode(r))


@dataclass(frozen=True, slots=True)
class ExternalSenders(ExtensionPayload):
    """``ExternalSender external_senders<V>`` (§12.1.8.1), indexed by ``sender_index``."""

    EXTENSION_TYPE: ClassVar[int] = ExtensionType.EXTERNAL_SENDERS

    #: The senders, in index order.
    senders: tuple[ExternalSender, ...]

    def encode(self, w: Writer) -> None:
        w.struct_vector(self.senders)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.vector(ExternalSender.decode))
