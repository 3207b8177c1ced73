"""TreeKEM: path secrets, UpdatePath creation and processing, and a member's tree private keys (RFC 9420 §7.4-7.6).

Theory of operation. A committer's side runs in two steps because the provisional
GroupContext that encrypts the path secrets contains the hash of the tree *after*
the path is merged:

1. :func:`generate_update_path` derives the leaf key and the path secrets from one
   caller-supplied ``leaf_secret`` (so the API is randomness-free), merges the new
   keys into the tree, computes the parent hashes and signs the new leaf. The
   result, :class:`PreparedPath`, holds the new tree (whose hash goes into the
   provisional GroupContext), the new private keys, the commit secret and the path
   secrets (for Welcome).
2. :func:`encrypt_update_path` encrypts each path secret to the copath
   resolutions (leaving out members added in the same commit) and returns the
   wire ``UpdatePath``.

A receiver likewise calls :func:`merge_update_path` (new keys, parent-hash check;
the result's tree hash goes into the provisional GroupContext), then
:func:`decrypt_update_path` (find the resolution node it holds a key for, decrypt,
derive the rest of the path, check the public keys, return the commit secret).

Key derivation (§7.4)::

    path_secret[n+1] = DeriveSecret(path_secret[n], "path")
    node_priv[n]     = DeriveKeyPair(DeriveSecret(path_secret[n], "node"))
    commit_secret    = DeriveSecret(path_secret[last], "path")

The committer's leaf key is ``DeriveKeyPair(DeriveSecret(leaf_secret, "node"))``
and ``path_secret[0] = DeriveSecret(leaf_secret, "path")``; the RFC leaves both
choices to the implementation, and nobody else ever needs ``leaf_secret``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from . import treemath
from .crypto.hpke import HPKEPrivateKey
from .crypto.labels import decrypt_with_label, derive_secret, encrypt_with_label
from .crypto.signatures import SignaturePrivateKey
from .crypto.suites import CipherSuiteImpl
from .errors import UsageError, ValidationError, VerificationError
from .messages import GroupContext
from .tree import RatchetTree
from .tree_structs import (
    HPKECiphertext,
    HPKEPublicKeyBytes,
    LeafNode,
    LeafNodeSource,
    UpdatePath,
    UpdatePathNode,
)
from .tree_validation import sign_leaf_node

__all__ = [
    "NodeKeyPair",
    "PreparedPath",
    "ProcessedPath",
    "TreePrivateKeys",
    "decrypt_update_path",
    "derive_node_key_pair",
    "derive_path_secret",
    "encrypt_update_path",
    "generate_update_path",
    "merge_update_path",
]

_LABEL = "UpdatePathNode"


def derive_path_secret(cs: CipherSuiteImpl, path_secret: bytes) -> bytes:
    """The next path secret up the path: ``DeriveSecret(path_secret, "path")`` (§7.4)."""
    return derive_secret(cs, path_secret, "path")


@dataclass(frozen=True, slots=True, eq=False)
class NodeKeyPair:
    """An HPKE key pair held for one tree node; the private half never shows in a repr."""

    #: The private key.
    private_key: HPKEPrivateKey = field(repr=False)
    #: The serialized public key, as it appears in the tree.
    public_key: HPKEPublicKeyBytes

    @classmethod
    def from_private(cls, private_key: HPKEPrivateKey) -> NodeKeyPair:
        """Pair a private key with its public key."""
        return cls(private_key, HPKEPublicKeyBytes(private_key.public_key().to_bytes()))


def derive_node_key_pair(cs: CipherSuiteImpl, path_secret: bytes) -> NodeKeyPair:
    """``DeriveKeyPair(DeriveSecret(path_secret, "node"))`` (§7.4)."""
    node_secret = derive_secret(cs, path_secret, "node")
    return NodeKeyPair.from_private(HPKEPrivateKey.derive(cs.kem_id, node_secret))


def _context_bytes(group_context: GroupContext | bytes) -> bytes:
    return group_context.to_bytes() if isinstance(group_context, GroupContext) else group_context


@dataclass(frozen=True, slots=True, eq=False)
class TreePrivateKeys:
    """The private keys one member holds in the tree: its leaf and some ancestors (§4.2).

    Immutable: every change returns a new holder, so it stages and merges along
    with the :class:`RatchetTree` it belongs to. Path secrets are not kept; they
    are deleted once the keys are derived (§7.5).
    """

    #: The member's leaf index.
    leaf_index: int
    #: Node index -> key pair; always holds the leaf (node ``2 * leaf_index``).
    keys: Mapping[int, NodeKeyPair] = field(repr=False)

    def __post_init__(self) -> None:
        if treemath.leaf_to_node(self.leaf_index) not in self.keys:
            raise UsageError("private keys must include the member's own leaf")
        if not isinstance(self.keys, MappingProxyType):
            object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    def __repr__(self) -> str:
        return f"TreePrivateKeys(leaf_index={self.leaf_index}, nodes={sorted(self.keys)})"

    @classmethod
    def create(cls, leaf_index: int, leaf_key: HPKEPrivateKey) -> TreePrivateKeys:
        """A holder with only the leaf's private key."""
        return cls(
            leaf_index, {treemath.leaf_to_node(leaf_index): NodeKeyPair.from_private(leaf_key)}
        )

    @property
    def leaf_key(self) -> HPKEPrivateKey:
        """The private key of the member's own leaf."""
        return self.keys[treemath.leaf_to_node(self.leaf_index)].private_key

    def key_for(self, x: int) -> NodeKeyPair | None:
        """The key pair held for node ``x``, or None."""
        return self.keys.get(x)

    def replace(
        self, add: Mapping[int, NodeKeyPair], remove: Iterable[int] = ()
    ) -> TreePrivateKeys:
        """A copy without the nodes in ``remove`` and with the pairs in ``add``."""
        keys = dict(self.keys)
        for x in remove:
            keys.pop(x, None)
        keys.update(add)
        return TreePrivateKeys(self.leaf_index, keys)

    def with_path_secret(self, cs: CipherSuiteImpl, x: int, path_secret: bytes) -> TreePrivateKeys:
        """Set node ``x``'s key pair from its path secret (no other node changes)."""
        return self.replace({x: derive_node_key_pair(cs, path_secret)})

    def with_leaf_key(self, leaf_key: HPKEPrivateKey) -> TreePrivateKeys:
        """A copy with a new private key for the own leaf (after an own Update is committed).

        Keys for the blanked direct path are dropped by a following :meth:`prune`.
        """
        own = treemath.leaf_to_node(self.leaf_index)
        return self.replace({own: NodeKeyPair.from_private(leaf_key)})

    def prune(self, tree: RatchetTree) -> TreePrivateKeys:
        """Drop keys for nodes that are blank, outside, or re-keyed in ``tree`` (§7.5).

        Call it after applying proposals that blank or truncate. The own leaf is
        never dropped.

        Raises:
            ValidationError: the own leaf is blank or holds another key in ``tree``.
        """
        own = treemath.leaf_to_node(self.leaf_index)
        keys: dict[int, NodeKeyPair] = {}
        for x, pair in self.keys.items():
            node = tree.nodes[x] if x < len(tree.nodes) else None
            if node is not None and node.encryption_key == pair.public_key:
                keys[x] = pair
            elif x == own:
                raise ValidationError("own leaf does not match the private leaf key")
        return TreePrivateKeys(self.leaf_index, keys)

    def check_consistent(self, tree: RatchetTree) -> None:
        """Every held key's node is non-blank in ``tree`` and has the matching public key.

        Raises:
            ValidationError: some held key does not match the tree.
        """
        for x, pair in self.keys.items():
            node = tree.nodes[x] if x < len(tree.nodes) else None
            if node is None or node.encryption_key != pair.public_key:
                raise ValidationError("private key does not match the ratchet tree")

    @classmethod
    def for_joiner(
        cls,
        cs: CipherSuiteImpl,
        tree: RatchetTree,
        leaf_index: int,
        leaf_key: HPKEPrivateKey,
        committer: int,
        path_secret: bytes | None,
    ) -> TreePrivateKeys:
        """A new member's keys from a Welcome's ``path_secret`` (§12.4.3.1).

        The path secret belongs to the lowest common ancestor of the joiner's and the
        committer's leaves; each next non-blank node above it takes the next path
        secret.

        Raises:
            ValidationError: a derived public key does not match the tree, or the
                leaf key does not match the joiner's leaf.
        """
        keys = {treemath.leaf_to_node(leaf_index): NodeKeyPair.from_private(leaf_key)}
        if path_secret is not None:
            x = treemath.common_ancestor(
                treemath.leaf_to_node(leaf_index), treemath.leaf_to_node(committer)
            )
            for q in [x, *treemath.direct_path(x, tree.n_leaves)]:
                node = tree.nodes[q]
                if node is None:
                    continue
                pair = derive_node_key_pair(cs, path_secret)
                if pair.public_key != node.encryption_key:
                    raise ValidationError("path secret from Welcome does not match the tree")
                keys[q] = pair
                path_secret = derive_path_secret(cs, path_secret)
        holder = cls(leaf_index, keys)
        holder.check_consistent(tree)
        return holder


@dataclass(frozen=True, slots=True, eq=False)
class PreparedPath:
    """A committer's new path before encryption (§7.4, §7.5); see :func:`generate_update_path`."""

    #: The committer's leaf index.
    leaf_index: int
    #: The tree with the new leaf and path merged (its hash goes in the provisional GroupContext).
    tree: RatchetTree
    #: The committer's new signed leaf (source ``commit``).
    leaf_node: LeafNode
    #: The committer's private keys after the commit.
    private_keys: TreePrivateKeys
    #: Node index -> path secret for the filtered direct path (for Welcome, §12.4.3.1).
    path_secrets: Mapping[int, bytes] = field(repr=False)
    #: ``commit_secret`` (§8).
    commit_secret: bytes = field(repr=False)

    def path_secret_for(self, new_member: int) -> bytes:
        """The path secret of the common ancestor of the committer and ``new_member`` (§12.4.3.1).

        Raises:
            UsageError: that ancestor is not on the committer's filtered direct path.
        """
        x = treemath.common_ancestor(
            treemath.leaf_to_node(self.leaf_index), treemath.leaf_to_node(new_member)
        )
        secret = self.path_secrets.get(x)
        if secret is None:
            raise UsageError("common ancestor is not on the committer's filtered direct path")
        return secret


def generate_update_path(
    cs: CipherSuiteImpl,
    tree: RatchetTree,
    leaf_index: int,
    leaf_secret: bytes,
    signature_key: SignaturePrivateKey,
    group_id: bytes,
    *,
    leaf_node: LeafNode | None = None,
) -> PreparedPath:
    """Create new keys for a leaf's path and merge them into ``tree`` (§7.4, §7.5, §7.9).

    Args:
        cs: the group's cipher suite.
        tree: the tree after the commit's proposals (for an external commit, with
            the joiner's blank leaf reserved).
        leaf_index: the committer's leaf.
        leaf_secret: ``KDF.Nh`` fresh random bytes; the leaf key and every path
            secret derive from it.
        signature_key: signs the new leaf.
        group_id: the group id (part of the leaf's signed content).
        leaf_node: template for the new leaf (credential, capabilities,
            extensions, signature key); defaults to the current leaf. Its
            encryption key, source, parent hash and signature are replaced.

    Raises:
        UsageError: no template and the leaf is blank.
    """
    template = leaf_node if leaf_node is not None else tree.leaf_node(leaf_index)
    if template is None:
        raise UsageError("a blank leaf needs a leaf_node template")
    leaf_pair = derive_node_key_pair(cs, leaf_secret)
    path_secret = derive_path_secret(cs, leaf_secret)
    secrets: dict[int, bytes] = {}
    pairs: dict[int, NodeKeyPair] = {}
    for p in tree.filtered_direct_path(leaf_index):
        secrets[p] = path_secret
        pairs[p] = derive_node_key_pair(cs, path_secret)
        path_secret = derive_path_secret(cs, path_secret)
    merged, parent_hash = tree.merge_path(cs, leaf_index, [k.public_key for k in pairs.values()])
    new_leaf = dataclasses.replace(
        template,
        encryption_key=leaf_pair.public_key,
        leaf_node_source=LeafNodeSource.COMMIT,
        lifetime=None,
        parent_hash=parent_hash,
        signature=b"",
    )
    new_leaf = sign_leaf_node(cs, new_leaf, signature_key, group_id, leaf_index)
    pairs[treemath.leaf_to_node(leaf_index)] = leaf_pair
    return PreparedPath(
        leaf_index=leaf_index,
        tree=merged.with_leaf(leaf_index, new_leaf),
        leaf_node=new_leaf,
        private_keys=TreePrivateKeys(leaf_index, pairs),
        path_secrets=MappingProxyType(secrets),
        commit_secret=path_secret,
    )


def encrypt_update_path(
    cs: CipherSuiteImpl,
    prepared: PreparedPath,
    group_context: GroupContext | bytes,
    exclude_leaves: Collection[int] = (),
) -> UpdatePath:
    """Encrypt each path secret to its copath resolution; the wire UpdatePath (§7.6).

    Args:
        cs: the group's cipher suite.
        prepared: from :func:`generate_update_path`.
        group_context: the provisional GroupContext (or its encoding).
        exclude_leaves: leaves added by the same commit; they get the path secret
            via Welcome instead.
    """
    context = _context_bytes(group_context)
    tree = prepared.tree
    nodes: list[UpdatePathNode] = []
    for p, s in tree.filtered_direct_path_with_copath(prepared.leaf_index):
        secret = prepared.path_secrets[p]
        ciphertexts: list[HPKECiphertext] = []
        for r in tree.resolution(s, exclude_leaves):
            target = tree.nodes[r]
            assert target is not None
            kem_output, ct = encrypt_with_label(cs, target.encryption_key, _LABEL, context, secret)
            ciphertexts.append(HPKECiphertext(kem_output, ct))
        parent = tree.nodes[p]
        assert parent is not None
        nodes.append(UpdatePathNode(parent.encryption_key, tuple(ciphertexts)))
    return UpdatePath(prepared.leaf_node, tuple(nodes))


def merge_update_path(
    cs: CipherSuiteImpl, tree: RatchetTree, sender: int, update_path: UpdatePath
) -> RatchetTree:
    """Merge a received UpdatePath into the tree and check its parent hash (§7.5, §7.9.2, §12.4.2).

    Checks that the path has one node per filtered-direct-path node, that none of
    its public keys is already in the tree (which includes the sender's current
    leaf) or repeated, and that the new leaf's ``parent_hash`` is the recomputed
    one. The leaf's own §7.3 validation (signature, source ``commit``,
    capabilities) is the caller's, with :func:`.tree_validation.validate_leaf_node`.

    Args:
        cs: the group's cipher suite.
        tree: the tree after the commit's proposals.
        sender: the committer's leaf index.
        update_path: the commit's path.

    Returns:
        The new tree; its root hash goes into the provisional GroupContext.

    Raises:
        ValidationError: wrong length or a reused public key.
        VerificationError: the leaf's parent hash does not match.
    """
    leaf = update_path.leaf_node
    if leaf.leaf_node_source is not LeafNodeSource.COMMIT:
        raise ValidationError("UpdatePath leaf node source is not commit")
    new_keys = [leaf.encryption_key, *(n.encryption_key for n in update_path.nodes)]
    existing = {key for _, key in tree.encryption_keys()}
    if len(set(new_keys)) != len(new_keys) or existing.intersection(new_keys):
        raise ValidationError("UpdatePath reuses an encryption key")
    merged, parent_hash = tree.merge_path(cs, sender, [n.encryption_key for n in update_path.nodes])
    if leaf.parent_hash != parent_hash:
        raise VerificationError("UpdatePath leaf node has the wrong parent hash")
    return merged.with_leaf(sender, leaf)


@dataclass(frozen=True, slots=True, eq=False)
class ProcessedPath:
    """What a receiver learns from an UpdatePath (§7.5); see :func:`decrypt_update_path`."""

    #: The receiver's private keys after the commit.
    private_keys: TreePrivateKeys
    #: ``commit_secret`` (§8).
    commit_secret: bytes = field(repr=False)
    #: The node whose path secret was decrypted.
    path_secret_node: int
    #: The decrypted path secret (for tests and diagnostics; delete after use).
    path_secret: bytes = field(repr=False)


def decrypt_update_path(
    cs: CipherSuiteImpl,
    tree: RatchetTree,
    sender: int,
    update_path: UpdatePath,
    group_context: GroupContext | bytes,
    private_keys: TreePrivateKeys,
    exclude_leaves: Collection[int] = (),
) -> ProcessedPath:
    """Decrypt the receiver's path secret and derive the rest of the path (§7.5).

    Args:
        cs: the group's cipher suite.
        tree: the tree *after* :func:`merge_update_path`.
        sender: the committer's leaf index.
        update_path: the commit's path.
        group_context: the provisional GroupContext (or its encoding).
        private_keys: the receiver's keys, valid for ``tree`` off the sender's path.
        exclude_leaves: leaves added by the same commit.

    Raises:
        UsageError: the receiver is the sender.
        ValidationError: ciphertext counts do not match the resolutions, or the
            receiver holds no key for its resolution.
        VerificationError: decryption failed or a derived public key differs
            from the UpdatePath's.
    """
    me = private_keys.leaf_index
    if me == sender:
        raise UsageError("the committer does not process its own UpdatePath")
    context = _context_bytes(group_context)
    fdp = tree.filtered_direct_path_with_copath(sender)
    if len(fdp) != len(update_path.nodes):
        raise ValidationError("update path length does not match the filtered direct path")
    my_node = treemath.leaf_to_node(me)
    start: int | None = None
    secret = b""
    for i, ((p, s), path_node) in enumerate(zip(fdp, update_path.nodes, strict=True)):
        resolution = tree.resolution(s, exclude_leaves)
        if len(path_node.encrypted_path_secret) != len(resolution):
            raise ValidationError("UpdatePath node has the wrong number of ciphertexts")
        if start is not None or p not in treemath.direct_path(my_node, tree.n_leaves):
            continue
        start = i
        for r, ct in zip(resolution, path_node.encrypted_path_secret, strict=True):
            pair = private_keys.key_for(r)
            target = tree.nodes[r]
            if pair is not None and target is not None and pair.public_key == target.encryption_key:
                secret = decrypt_with_label(
                    cs, pair.private_key, _LABEL, context, ct.kem_output, ct.ciphertext
                )
                break
        else:
            raise ValidationError("no private key for any node of the copath resolution")
    if start is None:
        raise ValidationError("receiver is not below the sender's filtered direct path")
    decrypted, decrypted_node = secret, fdp[start][0]
    new_pairs: dict[int, NodeKeyPair] = {}
    for (p, _), path_node in zip(fdp[start:], update_path.nodes[start:], strict=True):
        pair = derive_node_key_pair(cs, secret)
        if pair.public_key != path_node.encryption_key:
            raise VerificationError("derived path key does not match the UpdatePath")
        new_pairs[p] = pair
        secret = derive_path_secret(cs, secret)
    remove = treemath.direct_path(treemath.leaf_to_node(sender), tree.n_leaves)
    return ProcessedPath(
        private_keys=private_keys.replace(new_pairs, remove),
        commit_secret=secret,
        path_secret_node=decrypted_node,
        path_secret=decrypted,
    )
