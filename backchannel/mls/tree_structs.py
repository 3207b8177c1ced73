"""Ratchet tree wire structs: LeafNode, ParentNode, UpdatePath, Node and the tree vector (RFC 9420 §7)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, NewType, Self, TypeAlias

from .codec import Reader, Struct, Writer
from .credentials import Credential
from .errors import UsageError
from .extensions import Extension, ExtensionPayload, ExtensionType

__all__ = [
    "Capabilities",
    "HPKECiphertext",
    "HPKEPublicKeyBytes",
    "LeafNode",
    "LeafNodeHashInput",
    "LeafNodeSource",
    "LeafNodeTBS",
    "Lifetime",
    "Node",
    "NodeType",
    "ParentHashInput",
    "ParentNode",
    "ParentNodeHashInput",
    "RatchetTree",
    "SignaturePublicKeyBytes",
    "TreeHashInput",
    "UpdatePath",
    "UpdatePathNode",
    "decode_node",
    "encode_node",
]

#: The RFC's ``opaque HPKEPublicKey<V>`` (§5.1.1): a serialized HPKE public key as
#: it travels. A distinct type for mypy so encryption and signature keys cannot be
#: swapped silently; named apart from the key *objects* in ``crypto.hpke``.
HPKEPublicKeyBytes = NewType("HPKEPublicKeyBytes", bytes)

#: The RFC's ``opaque SignaturePublicKey<V>`` (§5.1.1): a serialized signature
#: public key (see ``crypto.signatures.SignaturePublicKey`` for the key object).
SignaturePublicKeyBytes = NewType("SignaturePublicKeyBytes", bytes)


class LeafNodeSource(IntEnum):
    """Where a LeafNode came from (§7.2); decides the source-specific fields."""

    #: In a KeyPackage; carries a :class:`Lifetime`.
    KEY_PACKAGE = 1
    #: In an Update proposal.
    UPDATE = 2
    #: In a Commit's UpdatePath; carries a ``parent_hash``.
    COMMIT = 3


class NodeType(IntEnum):
    """Tag of a :data:`Node` in a ratchet tree vector (§7.8, §12.4.3.3)."""

    LEAF = 1
    PARENT = 2


@dataclass(frozen=True, slots=True)
class Capabilities(Struct):
    """What a client supports (§7.2). Unknown and GREASE codes are kept, never rejected."""

    #: ``ProtocolVersion versions<V>``.
    versions: tuple[int, ...]
    #: ``CipherSuite cipher_suites<V>``.
    cipher_suites: tuple[int, ...]
    #: ``ExtensionType extensions<V>``.
    extensions: tuple[int, ...]
    #: ``ProposalType proposals<V>``.
    proposals: tuple[int, ...]
    #: ``CredentialType credentials<V>``.
    credentials: tuple[int, ...]

    def encode(self, w: Writer) -> None:
        for values in (
            self.versions,
            self.cipher_suites,
            self.extensions,
            self.proposals,
            self.credentials,
        ):
            w.vector(values, Writer.uint16)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(*(r.vector(Reader.uint16) for _ in range(5)))


@dataclass(frozen=True, slots=True)
class Lifetime(Struct):
    """Validity window of a KeyPackage leaf, in seconds since the Unix epoch (§7.2)."""

    #: ``uint64 not_before``.
    not_before: int
    #: ``uint64 not_after``.
    not_after: int

    def encode(self, w: Writer) -> None:
        w.uint64(self.not_before).uint64(self.not_after)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.uint64(), r.uint64())


@dataclass(frozen=True, slots=True)
class LeafNode(Struct):
    """A member's leaf in the ratchet tree (§7.2).

    ``lifetime`` is set exactly when ``leaf_node_source`` is ``KEY_PACKAGE`` and
    ``parent_hash`` exactly when it is ``COMMIT``; the constructor enforces this.
    """

    #: ``HPKEPublicKey encryption_key``.
    encryption_key: HPKEPublicKeyBytes
    #: ``SignaturePublicKey signature_key``.
    signature_key: SignaturePublicKeyBytes
    #: The member's credential.
    credential: Credential
    #: What the client supports.
    capabilities: Capabilities
    #: Which select branch follows.
    leaf_node_source: LeafNodeSource
    #: Only for ``KEY_PACKAGE`` leaves.
    lifetime: Lifetime | None
    #: Only for ``COMMIT`` leaves.
    parent_hash: bytes | None
    #: ``Extension extensions<V>``.
    extensions: tuple[Extension, ...]
    #: ``SignWithLabel(., "LeafNodeTBS", LeafNodeTBS)``.
    signature: bytes

    def __post_init__(self) -> None:
        source = self.leaf_node_source
        if (self.lifetime is not None) != (source is LeafNodeSource.KEY_PACKAGE):
            raise UsageError("lifetime is present exactly for key_package leaves")
        if (self.parent_hash is not None) != (source is LeafNodeSource.COMMIT):
            raise UsageError("parent_hash is present exactly for commit leaves")

    def _encode_content(self, w: Writer) -> None:
        w.opaque(self.encryption_key).opaque(self.signature_key)
        w.struct(self.credential).struct(self.capabilities)
        w.uint8(self.leaf_node_source)
        if self.lifetime is not None:
            w.struct(self.lifetime)
        if self.parent_hash is not None:
            w.opaque(self.parent_hash)
        w.struct_vector(self.extensions)

    @classmethod
    def _decode_content(cls, r: Reader, signature: bytes | None) -> Self:
        encryption_key = HPKEPublicKeyBytes(r.opaque())
        signature_key = SignaturePublicKeyBytes(r.opaque())
        credential = Credential.decode(r)
        capabilities = Capabilities.decode(r)
        source = r.enum8(LeafNodeSource)
        lifetime = Lifetime.decode(r) if source is LeafNodeSource.KEY_PACKAGE else None
        parent_hash = r.opaque() if source is LeafNodeSource.COMMIT else None
        extensions = r.vector(Extension.decode)
        return cls(
            encryption_key,
            signature_key,
            credential,
            capabilities,
            source,
            lifetime,
            parent_hash,
            extensions,
            r.opaque() if signature is None else signature,
        )

    def encode(self, w: Writer) -> None:
        self._encode_content(w)
        w.opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls._decode_content(r, None)

    def tbs(self, group_id: bytes | None = None, leaf_index: int | None = None) -> LeafNodeTBS:
        """The to-be-signed view of this leaf (§7.2).

        Args:
            group_id: the group's id. Required for ``UPDATE`` and ``COMMIT`` leaves;
                ignored for ``KEY_PACKAGE`` leaves, whose TBS has no group context,
                so callers may pass the context for any leaf.
            leaf_index: the leaf's index in the tree; same rule as ``group_id``.

        Raises:
            UsageError: an ``UPDATE`` or ``COMMIT`` leaf without its context.
        """
        if self.leaf_node_source is LeafNodeSource.KEY_PACKAGE:
            return LeafNodeTBS(self)
        return LeafNodeTBS(self, group_id, leaf_index)

    def tbs_bytes(self, group_id: bytes | None = None, leaf_index: int | None = None) -> bytes:
        """Encoded ``LeafNodeTBS``, the content of the ``"LeafNodeTBS"`` signature (§7.2).

        Args and errors are those of :meth:`tbs`.
        """
        return self.tbs(group_id, leaf_index).to_bytes()


@dataclass(frozen=True, slots=True)
class LeafNodeTBS(Struct):
    """``LeafNodeTBS`` (§7.2): a leaf without its signature, plus group context for
    ``UPDATE`` and ``COMMIT`` leaves so a signed leaf cannot move between groups or slots.

    ``leaf_node.signature`` is not part of the encoding; after decoding it is empty.
    """

    #: The leaf whose content is signed.
    leaf_node: LeafNode
    #: ``opaque group_id<V>`` (update and commit leaves only).
    group_id: bytes | None = None
    #: ``uint32 leaf_index`` (update and commit leaves only).
    leaf_index: int | None = None

    def __post_init__(self) -> None:
        needs_context = self.leaf_node.leaf_node_source is not LeafNodeSource.KEY_PACKAGE
        if (self.group_id is not None) != needs_context or (
            self.leaf_index is not None
        ) != needs_context:
            raise UsageError("group_id and leaf_index are given exactly for update/commit leaves")

    def encode(self, w: Writer) -> None:
        self.leaf_node._encode_content(w)
        if self.group_id is not None and self.leaf_index is not None:
            w.opaque(self.group_id).uint32(self.leaf_index)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        leaf_node = LeafNode._decode_content(r, b"")
        if leaf_node.leaf_node_source is LeafNodeSource.KEY_PACKAGE:
            return cls(leaf_node)
        return cls(leaf_node, r.opaque(), r.uint32())


@dataclass(frozen=True, slots=True)
class ParentNode(Struct):
    """A parent node of the ratchet tree (§7.1)."""

    #: ``HPKEPublicKey encryption_key``.
    encryption_key: HPKEPublicKeyBytes
    #: ``opaque parent_hash<V>`` (§7.9).
    parent_hash: bytes
    #: ``uint32 unmerged_leaves<V>``: leaf indices added below since the last update.
    unmerged_leaves: tuple[int, ...]

    def encode(self, w: Writer) -> None:
        w.opaque(self.encryption_key).opaque(self.parent_hash)
        w.vector(self.unmerged_leaves, Writer.uint32)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(HPKEPublicKeyBytes(r.opaque()), r.opaque(), r.vector(Reader.uint32))


@dataclass(frozen=True, slots=True)
class HPKECiphertext(Struct):
    """``HPKECiphertext`` (§7.6): an HPKE encapsulation and the sealed data."""

    #: ``opaque kem_output<V>``.
    kem_output: bytes
    #: ``opaque ciphertext<V>``.
    ciphertext: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.kem_output).opaque(self.ciphertext)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), r.opaque())


@dataclass(frozen=True, slots=True)
class UpdatePathNode(Struct):
    """``UpdatePathNode`` (§7.6): a new public key and its path secret for each resolution node."""

    #: The node's new ``HPKEPublicKey``.
    encryption_key: HPKEPublicKeyBytes
    #: ``HPKECiphertext encrypted_path_secret<V>``, one per copath resolution node.
    encrypted_path_secret: tuple[HPKECiphertext, ...]

    def encode(self, w: Writer) -> None:
        w.opaque(self.encryption_key).struct_vector(self.encrypted_path_secret)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(HPKEPublicKeyBytes(r.opaque()), r.vector(HPKECiphertext.decode))


@dataclass(frozen=True, slots=True)
class UpdatePath(Struct):
    """``UpdatePath`` (§7.6): the committer's new leaf and its filtered direct path."""

    #: The committer's new leaf (source ``COMMIT``).
    leaf_node: LeafNode
    #: ``UpdatePathNode nodes<V>``, leaf to root.
    nodes: tuple[UpdatePathNode, ...]

    def encode(self, w: Writer) -> None:
        w.struct(self.leaf_node).struct_vector(self.nodes)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(LeafNode.decode(r), r.vector(UpdatePathNode.decode))


#: ``Node`` (§12.4.3.3): a leaf or a parent, tagged by :class:`NodeType` on the wire.
Node: TypeAlias = LeafNode | ParentNode


def encode_node(w: Writer, node: Node) -> None:
    """Append a ``Node``: its :class:`NodeType` then the leaf or parent (§12.4.3.3)."""
    if isinstance(node, LeafNode):
        w.uint8(NodeType.LEAF)
    else:
        w.uint8(NodeType.PARENT)
    node.encode(w)


def decode_node(r: Reader) -> Node:
    """Read a ``Node`` (§12.4.3.3).

    Raises:
        DecodeError: unknown node type or malformed body.
    """
    if r.enum8(NodeType) is NodeType.LEAF:
        return LeafNode.decode(r)
    return ParentNode.decode(r)


def _encode_optional_node(w: Writer, node: Node | None) -> None:
    if node is None:
        w.uint8(0)
    else:
        encode_node(w.uint8(1), node)


def _decode_optional_node(r: Reader) -> Node | None:
    return r.optional(decode_node)


@dataclass(frozen=True, slots=True)
class RatchetTree(ExtensionPayload):
    """``optional<Node> ratchet_tree<V>`` (§12.4.3.3): the tree in array order, blanks as None.

    Decoding checks only the syntax; which slots may hold leaves or parents, and
    the rule against trailing blanks, belong to tree validation.
    """

    EXTENSION_TYPE: ClassVar[int] = ExtensionType.RATCHET_TREE

    #: Node ``i`` of the array-based tree (Appendix C), None where blank.
    nodes: tuple[Node | None, ...]

    def encode(self, w: Writer) -> None:
        w.vector(self.nodes, _encode_optional_node)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.vector(_decode_optional_node))


# --- Hash inputs (§7.8, §7.9) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeafNodeHashInput(Struct):
    """``LeafNodeHashInput`` (§7.8): a leaf slot's contribution to the tree hash."""

    #: ``uint32 leaf_index``.
    leaf_index: int
    #: ``optional<LeafNode> leaf_node``: None for a blank leaf.
    leaf_node: LeafNode | None

    def encode(self, w: Writer) -> None:
        w.uint32(self.leaf_index).optional_struct(self.leaf_node)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.uint32(), r.optional(LeafNode.decode))


@dataclass(frozen=True, slots=True)
class ParentNodeHashInput(Struct):
    """``ParentNodeHashInput`` (§7.8): a parent slot's contribution to the tree hash."""

    #: ``optional<ParentNode> parent_node``: None for a blank parent.
    parent_node: ParentNode | None
    #: ``opaque left_hash<V>``: tree hash of the left subtree.
    left_hash: bytes
    #: ``opaque right_hash<V>``: tree hash of the right subtree.
    right_hash: bytes

    def encode(self, w: Writer) -> None:
        w.optional_struct(self.parent_node).opaque(self.left_hash).opaque(self.right_hash)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.optional(ParentNode.decode), r.opaque(), r.opaque())


@dataclass(frozen=True, slots=True)
class TreeHashInput(Struct):
    """``TreeHashInput`` (§7.8): what is hashed for each node of the tree hash."""

    #: The leaf or parent input; its class decides the ``NodeType`` on the wire.
    node: LeafNodeHashInput | ParentNodeHashInput

    def encode(self, w: Writer) -> None:
        if isinstance(self.node, LeafNodeHashInput):
            w.uint8(NodeType.LEAF)
        else:
            w.uint8(NodeType.PARENT)
        self.node.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        if r.enum8(NodeType) is NodeType.LEAF:
            return cls(LeafNodeHashInput.decode(r))
        return cls(ParentNodeHashInput.decode(r))


@dataclass(frozen=True, slots=True)
class ParentHashInput(Struct):
    """``ParentHashInput`` (§7.9): what a parent hash covers."""

    #: ``HPKEPublicKey encryption_key`` of the parent.
    encryption_key: HPKEPublicKeyBytes
    #: ``opaque parent_hash<V>`` of the parent.
    parent_hash: bytes
    #: ``opaque original_sibling_tree_hash<V>``.
    original_sibling_tree_hash: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.encryption_key).opaque(self.parent_hash)
        w.opaque(self.original_sibling_tree_hash)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(HPKEPublicKeyBytes(r.opaque()), r.opaque(), r.opaque())
