"""Proposals, Commit, UpdatePath, PSK ids, GroupContext, GroupInfo and Welcome (RFC 9420 §8, §12)."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, Self, TypeAlias

from .codec import Reader, Struct, Writer
from .errors import DecodeError, UsageError
from .extensions import Extension
from .key_packages import KeyPackage
from .tree_structs import HPKECiphertext, LeafNode, UpdatePath

__all__ = [
    "Add",
    "Commit",
    "EncryptedGroupSecrets",
    "ExternalInit",
    "GroupContext",
    "GroupContextExtensions",
    "GroupInfo",
    "GroupInfoTBS",
    "GroupSecrets",
    "PSKLabel",
    "PSKType",
    "PathSecret",
    "PreSharedKey",
    "PreSharedKeyID",
    "Proposal",
    "ProposalOrRef",
    "ProposalOrRefType",
    "ProposalRef",
    "ProposalType",
    "ReInit",
    "Remove",
    "ResumptionPSKUsage",
    "UnknownProposal",
    "Update",
    "Welcome",
    "decode_proposal_or_ref",
    "encode_proposal_or_ref",
]


# --- Pre-shared key identifiers (§8.4) ------------------------------------------------


class PSKType(IntEnum):
    """Kind of pre-shared key (§8.4)."""

    EXTERNAL = 1
    RESUMPTION = 2


class ResumptionPSKUsage(IntEnum):
    """Why a resumption PSK is injected (§8.4, §8.6)."""

    APPLICATION = 1
    REINIT = 2
    BRANCH = 3


@dataclass(frozen=True, slots=True)
class PreSharedKeyID(Struct):
    """``PreSharedKeyID`` (§8.4): names an external or a resumption PSK, plus a nonce.

    External ids set ``psk_id``; resumption ids set ``usage``, ``psk_group_id`` and
    ``psk_epoch``. Use :meth:`external` and :meth:`resumption` to build them.
    """

    #: Which select branch follows.
    psktype: PSKType
    #: ``opaque psk_nonce<V>``: fresh per use, ``KDF.Nh`` bytes.
    psk_nonce: bytes
    #: External only: ``opaque psk_id<V>``.
    psk_id: bytes | None = None
    #: Resumption only.
    usage: ResumptionPSKUsage | None = None
    #: Resumption only: ``opaque psk_group_id<V>``.
    psk_group_id: bytes | None = None
    #: Resumption only: ``uint64 psk_epoch``.
    psk_epoch: int | None = None

    def __post_init__(self) -> None:
        external = self.psktype is PSKType.EXTERNAL
        resumption = (self.usage, self.psk_group_id, self.psk_epoch)
        if external != (self.psk_id is not None) or any(
            (v is None) == (not external) for v in resumption
        ):
            raise UsageError("PreSharedKeyID fields do not match its psktype")

    @classmethod
    def external(cls, psk_id: bytes, psk_nonce: bytes) -> PreSharedKeyID:
        """An id for an externally agreed PSK."""
        return cls(PSKType.EXTERNAL, psk_nonce, psk_id=psk_id)

    @classmethod
    def resumption(
        cls, usage: ResumptionPSKUsage, psk_group_id: bytes, psk_epoch: int, psk_nonce: bytes
    ) -> PreSharedKeyID:
        """An id for the resumption PSK of ``psk_group_id`` at ``psk_epoch``."""
        return cls(PSKType.RESUMPTION, psk_nonce, None, usage, psk_group_id, psk_epoch)

    def encode(self, w: Writer) -> None:
        w.uint8(self.psktype)
        if self.psk_id is not None:
            w.opaque(self.psk_id)
        if self.usage is not None and self.psk_group_id is not None and self.psk_epoch is not None:
            w.uint8(self.usage).opaque(self.psk_group_id).uint64(self.psk_epoch)
        w.opaque(self.psk_nonce)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        if r.enum8(PSKType) is PSKType.EXTERNAL:
            psk_id = r.opaque()
            return cls(PSKType.EXTERNAL, r.opaque(), psk_id=psk_id)
        usage = r.enum8(ResumptionPSKUsage)
        group_id = r.opaque()
        epoch = r.uint64()
        return cls(PSKType.RESUMPTION, r.opaque(), None, usage, group_id, epoch)


@dataclass(frozen=True, slots=True)
class PSKLabel(Struct):
    """``PSKLabel`` (§8.4): context for extracting the ``index``-th of ``count`` PSKs."""

    #: The PSK being mixed in.
    id: PreSharedKeyID
    #: ``uint16 index``.
    index: int
    #: ``uint16 count``.
    count: int

    def encode(self, w: Writer) -> None:
        w.struct(self.id).uint16(self.index).uint16(self.count)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(PreSharedKeyID.decode(r), r.uint16(), r.uint16())


# --- Proposals (§12.1) ---------------------------------------------------------------


class ProposalType(IntEnum):
    """Registered proposal types (§17.4); the wire field is an open ``uint16``."""

    ADD = 1
    UPDATE = 2
    REMOVE = 3
    PSK = 4
    REINIT = 5
    EXTERNAL_INIT = 6
    GROUP_CONTEXT_EXTENSIONS = 7


class Proposal(Struct):
    """Base of the proposal family (§12.1): ``ProposalType proposal_type`` then the body.

    ``Proposal.decode`` reads the type and returns the matching subclass. Each
    subclass's :meth:`body_bytes` / :meth:`from_body_bytes` handle the bare RFC
    struct (``Add``, ``Remove``, ...) without the type.
    """

    __slots__ = ()

    #: The ``ProposalType`` code on the wire.
    proposal_type: int

    @abstractmethod
    def encode_body(self, w: Writer) -> None:
        """Append the body struct, without the proposal type."""

    @classmethod
    @abstractmethod
    def decode_body(cls, r: Reader) -> Self:
        """Read the body struct of this variant (only concrete variants can)."""
        raise UsageError("decode_body needs a concrete proposal class")

    def body_bytes(self) -> bytes:
        """The body struct alone, e.g. the RFC's ``Add`` for an :class:`Add`."""
        w = Writer()
        self.encode_body(w)
        return w.to_bytes()

    @classmethod
    def from_body_bytes(cls, data: bytes) -> Self:
        """Decode exactly one body struct of this variant.

        Raises:
            DecodeError: malformed body or trailing bytes.
        """
        r = Reader(data)
        value = cls.decode_body(r)
        r.finish()
        return value

    def encode(self, w: Writer) -> None:
        w.uint16(self.proposal_type)
        self.encode_body(w)

    @classmethod
    def decode(cls, r: Reader) -> Proposal:
        proposal_type = r.uint16()
        variant = _PROPOSAL_CLASSES.get(proposal_type)
        if variant is None:
            return UnknownProposal(proposal_type, r.opaque())
        return variant.decode_body(r)


@dataclass(frozen=True, slots=True)
class Add(Proposal):
    """``Add`` (§12.1.1): add the client of ``key_package``."""

    #: The new member's KeyPackage.
    key_package: KeyPackage
    proposal_type: int = field(default=ProposalType.ADD, init=False)

    def encode_body(self, w: Writer) -> None:
        w.struct(self.key_package)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        return cls(KeyPackage.decode(r))


@dataclass(frozen=True, slots=True)
class Update(Proposal):
    """``Update`` (§12.1.2): replace the sender's leaf."""

    #: The sender's new leaf (source ``UPDATE``).
    leaf_node: LeafNode
    proposal_type: int = field(default=ProposalType.UPDATE, init=False)

    def encode_body(self, w: Writer) -> None:
        w.struct(self.leaf_node)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        return cls(LeafNode.decode(r))


@dataclass(frozen=True, slots=True)
class Remove(Proposal):
    """``Remove`` (§12.1.3): remove the member at leaf index ``removed``."""

    #: ``uint32 removed``: a leaf index.
    removed: int
    proposal_type: int = field(default=ProposalType.REMOVE, init=False)

    def encode_body(self, w: Writer) -> None:
        w.uint32(self.removed)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        return cls(r.uint32())


@dataclass(frozen=True, slots=True)
class PreSharedKey(Proposal):
    """``PreSharedKey`` (§12.1.4): inject a PSK into the next epoch."""

    #: The PSK to inject.
    psk: PreSharedKeyID
    proposal_type: int = field(default=ProposalType.PSK, init=False)

    def encode_body(self, w: Writer) -> None:
        w.struct(self.psk)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        return cls(PreSharedKeyID.decode(r))


@dataclass(frozen=True, slots=True)
class ReInit(Proposal):
    """``ReInit`` (§12.1.5): close this group and restart it with new parameters."""

    #: ``opaque group_id<V>`` of the new group.
    group_id: bytes
    #: ``ProtocolVersion version``.
    version: int
    #: ``CipherSuite cipher_suite`` code.
    cipher_suite: int
    #: ``Extension extensions<V>`` of the new group.
    extensions: tuple[Extension, ...]
    proposal_type: int = field(default=ProposalType.REINIT, init=False)

    def encode_body(self, w: Writer) -> None:
        w.opaque(self.group_id).uint16(self.version).uint16(self.cipher_suite)
        w.struct_vector(self.extensions)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        return cls(r.opaque(), r.uint16(), r.uint16(), r.vector(Extension.decode))


@dataclass(frozen=True, slots=True)
class ExternalInit(Proposal):
    """``ExternalInit`` (§12.1.6): the KEM output of an external joiner."""

    #: ``opaque kem_output<V>``.
    kem_output: bytes
    proposal_type: int = field(default=ProposalType.EXTERNAL_INIT, init=False)

    def encode_body(self, w: Writer) -> None:
        w.opaque(self.kem_output)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class GroupContextExtensions(Proposal):
    """``GroupContextExtensions`` (§12.1.7): replace the GroupContext extensions."""

    #: ``Extension extensions<V>``: the complete new list.
    extensions: tuple[Extension, ...]
    proposal_type: int = field(default=ProposalType.GROUP_CONTEXT_EXTENSIONS, init=False)

    def encode_body(self, w: Writer) -> None:
        w.struct_vector(self.extensions)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        return cls(r.vector(Extension.decode))


@dataclass(frozen=True, slots=True)
class UnknownProposal(Proposal):
    """A proposal of a type this library does not implement, body kept as ``opaque<V>``.

    §17.4 lets new proposal types be registered, and a commit must be rejected only
    when a member does not support the type (§12.2, §13.2), which is a validation
    step. The RFC fixes no framing for such bodies; ``opaque<V>`` is the convention
    of openmls and mls-rs for custom proposals.
    """

    _KNOWN: ClassVar[frozenset[int]] = frozenset(ProposalType)

    #: The ``ProposalType`` code (never a known one).
    proposal_type: int
    #: The raw body.
    data: bytes

    def __post_init__(self) -> None:
        if self.proposal_type in self._KNOWN or not 0 <= self.proposal_type <= 0xFFFF:
            raise UsageError("proposal_type must be an unknown uint16 code")

    def encode_body(self, w: Writer) -> None:
        w.opaque(self.data)

    @classmethod
    def decode_body(cls, r: Reader) -> Self:
        raise DecodeError("an unknown proposal body needs its type")


_PROPOSAL_CLASSES: dict[int, type[Proposal]] = {
    ProposalType.ADD: Add,
    ProposalType.UPDATE: Update,
    ProposalType.REMOVE: Remove,
    ProposalType.PSK: PreSharedKey,
    ProposalType.REINIT: ReInit,
    ProposalType.EXTERNAL_INIT: ExternalInit,
    ProposalType.GROUP_CONTEXT_EXTENSIONS: GroupContextExtensions,
}


# --- Commit (§12.4) and UpdatePath (§7.6) --------------------------------------------


class ProposalOrRefType(IntEnum):
    """Tag of a ``ProposalOrRef`` (§12.4)."""

    PROPOSAL = 1
    REFERENCE = 2


@dataclass(frozen=True, slots=True)
class ProposalRef(Struct):
    """``ProposalRef`` (§5.2): ``RefHash("MLS 1.0 Proposal Reference", AuthenticatedContent)``."""

    #: ``opaque HashReference<V>``.
    value: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.value)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque())


#: ``ProposalOrRef`` (§12.4): a proposal inline, or a reference to one sent earlier.
ProposalOrRef: TypeAlias = Proposal | ProposalRef


def encode_proposal_or_ref(w: Writer, item: ProposalOrRef) -> None:
    """Append a ``ProposalOrRef``: its :class:`ProposalOrRefType` then the value (§12.4)."""
    if isinstance(item, ProposalRef):
        w.uint8(ProposalOrRefType.REFERENCE)
    else:
        w.uint8(ProposalOrRefType.PROPOSAL)
    item.encode(w)


def decode_proposal_or_ref(r: Reader) -> ProposalOrRef:
    """Read a ``ProposalOrRef`` (§12.4).

    Raises:
        DecodeError: unknown tag or malformed value.
    """
    if r.enum8(ProposalOrRefType) is ProposalOrRefType.PROPOSAL:
        return Proposal.decode(r)
    return ProposalRef.decode(r)


@dataclass(frozen=True, slots=True)
class Commit(Struct):
    """``Commit`` (§12.4): the proposals to apply and an optional path update."""

    #: ``ProposalOrRef proposals<V>``.
    proposals: tuple[ProposalOrRef, ...]
    #: ``optional<UpdatePath> path``.
    path: UpdatePath | None

    def encode(self, w: Writer) -> None:
        w.vector(self.proposals, encode_proposal_or_ref).optional_struct(self.path)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.vector(decode_proposal_or_ref), r.optional(UpdatePath.decode))


# --- GroupContext (§8.1) and GroupInfo (§12.4.3) -------------------------------------


@dataclass(frozen=True, slots=True)
class GroupContext(Struct):
    """``GroupContext`` (§8.1): the state all members agree on in an epoch."""

    #: ``ProtocolVersion version`` (``1``, mls10).
    version: int
    #: ``CipherSuite cipher_suite`` code.
    cipher_suite: int
    #: ``opaque group_id<V>``.
    group_id: bytes
    #: ``uint64 epoch``.
    epoch: int
    #: ``opaque tree_hash<V>``: hash of the ratchet tree's root (§7.8).
    tree_hash: bytes
    #: ``opaque confirmed_transcript_hash<V>`` (§8.2).
    confirmed_transcript_hash: bytes
    #: ``Extension extensions<V>``: all mandatory for members (§13.4).
    extensions: tuple[Extension, ...]

    def encode(self, w: Writer) -> None:
        w.uint16(self.version).uint16(self.cipher_suite).opaque(self.group_id)
        w.uint64(self.epoch).opaque(self.tree_hash).opaque(self.confirmed_transcript_hash)
        w.struct_vector(self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(
            r.uint16(),
            r.uint16(),
            r.opaque(),
            r.uint64(),
            r.opaque(),
            r.opaque(),
            r.vector(Extension.decode),
        )


@dataclass(frozen=True, slots=True)
class GroupInfoTBS(Struct):
    """``GroupInfoTBS`` (§12.4.3): the content of the ``"GroupInfoTBS"`` signature."""

    #: The group's context in the new epoch.
    group_context: GroupContext
    #: ``Extension extensions<V>`` for joiners (unknown ones are ignored, §13.4).
    extensions: tuple[Extension, ...]
    #: ``MAC confirmation_tag`` of the epoch.
    confirmation_tag: bytes
    #: ``uint32 signer``: leaf index of the signer.
    signer: int

    def encode(self, w: Writer) -> None:
        w.struct(self.group_context).struct_vector(self.extensions)
        w.opaque(self.confirmation_tag).uint32(self.signer)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(GroupContext.decode(r), r.vector(Extension.decode), r.opaque(), r.uint32())


@dataclass(frozen=True, slots=True)
class GroupInfo(Struct):
    """``GroupInfo`` (§12.4.3): what a joiner needs, signed by a member.

    Decoding checks syntax only; the signature is verified later over :meth:`tbs_bytes`.
    """

    #: The group's context in the new epoch.
    group_context: GroupContext
    #: ``Extension extensions<V>``.
    extensions: tuple[Extension, ...]
    #: ``MAC confirmation_tag``.
    confirmation_tag: bytes
    #: ``uint32 signer``.
    signer: int
    #: ``SignWithLabel(., "GroupInfoTBS", GroupInfoTBS)``.
    signature: bytes

    def tbs(self) -> GroupInfoTBS:
        """The signed part of this GroupInfo."""
        return GroupInfoTBS(self.group_context, self.extensions, self.confirmation_tag, self.signer)

    def tbs_bytes(self) -> bytes:
        """Encoded :class:`GroupInfoTBS`, the content to verify ``signature`` over."""
        return self.tbs().to_bytes()

    def encode(self, w: Writer) -> None:
        self.tbs().encode(w)
        w.opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        tbs = GroupInfoTBS.decode(r)
        return cls(tbs.group_context, tbs.extensions, tbs.confirmation_tag, tbs.signer, r.opaque())


# --- Welcome (§12.4.3.1) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathSecret(Struct):
    """``PathSecret`` (§12.4.3.1): the path secret of the joiner's common ancestor."""

    #: ``opaque path_secret<V>``. Secret: left out of the repr.
    path_secret: bytes = field(repr=False)

    def encode(self, w: Writer) -> None:
        w.opaque(self.path_secret)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class GroupSecrets(Struct):
    """``GroupSecrets`` (§12.4.3.1): the secrets sealed to each new member."""

    #: ``opaque joiner_secret<V>``. Secret: left out of the repr.
    joiner_secret: bytes = field(repr=False)
    #: ``optional<PathSecret> path_secret``.
    path_secret: PathSecret | None
    #: ``PreSharedKeyID psks<V>``: PSKs the joiner must also hold.
    psks: tuple[PreSharedKeyID, ...]

    def encode(self, w: Writer) -> None:
        w.opaque(self.joiner_secret).optional_struct(self.path_secret)
        w.struct_vector(self.psks)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), r.optional(PathSecret.decode), r.vector(PreSharedKeyID.decode))


@dataclass(frozen=True, slots=True)
class EncryptedGroupSecrets(Struct):
    """``EncryptedGroupSecrets`` (§12.4.3.1): GroupSecrets sealed to one KeyPackage."""

    #: ``KeyPackageRef new_member``: which KeyPackage the secrets are for.
    new_member: bytes
    #: ``HPKECiphertext encrypted_group_secrets``.
    encrypted_group_secrets: HPKECiphertext

    def encode(self, w: Writer) -> None:
        w.opaque(self.new_member).struct(self.encrypted_group_secrets)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), HPKECiphertext.decode(r))


@dataclass(frozen=True, slots=True)
class Welcome(Struct):
    """``Welcome`` (§12.4.3.1): invites new members with sealed secrets and GroupInfo."""

    #: ``CipherSuite cipher_suite`` code.
    cipher_suite: int
    #: ``EncryptedGroupSecrets secrets<V>``, one per new member.
    secrets: tuple[EncryptedGroupSecrets, ...]
    #: ``opaque encrypted_group_info<V>``: GroupInfo under the welcome key.
    encrypted_group_info: bytes

    def encode(self, w: Writer) -> None:
        w.uint16(self.cipher_suite).struct_vector(self.secrets)
        w.opaque(self.encrypted_group_info)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.uint16(), r.vector(EncryptedGroupSecrets.decode), r.opaque())
