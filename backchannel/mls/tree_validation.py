"""Leaf node signing and validation, and full validation of an imported ratchet tree (RFC 9420 §7.3, §7.9.2, §12.4.3.1).

Theory of operation: :func:`validate_leaf_node` is the one place the §7.3 rules are
written down; callers say where the leaf came from (``expected_source``) and what
it must fit (the group's cipher suite, id and GroupContext extensions, and the
current tree for credential-type support and key uniqueness).
:func:`validate_ratchet_tree` runs every check a joiner must run on a tree it did
not build (§12.4.3.1): tree hash, parent-hash validity of every parent, every
leaf's §7.3 rules, unmerged-leaf consistency and key uniqueness.

Credential validation against an authentication service (§5.3.1) is the
application's policy and is not done here.
"""

from __future__ import annotations

import dataclasses
import hmac
import itertools

from . import treemath
from .crypto.labels import sign_with_label, verify_with_label
from .crypto.signatures import SignaturePrivateKey
from .crypto.suites import CipherSuiteImpl, get_cipher_suite
from .errors import DecodeError, ValidationError, VerificationError
from .extensions import (
    Extension,
    ExtensionType,
    RequiredCapabilities,
    check_unique_types,
    find_extension,
)
from .messages import GroupContext, ProposalType
from .tree import RatchetTree
from .tree_structs import LeafNode, LeafNodeSource, ParentNode

__all__ = [
    "DEFAULT_EXTENSION_TYPES",
    "DEFAULT_PROPOSAL_TYPES",
    "PROTOCOL_VERSION_MLS10",
    "sign_leaf_node",
    "validate_leaf_node",
    "validate_ratchet_tree",
    "verify_leaf_node_signature",
    "verify_parent_hashes",
]

#: ``ProtocolVersion mls10`` (§6).
PROTOCOL_VERSION_MLS10 = 1

#: Extension types every client supports and none lists in capabilities (§7.2).
DEFAULT_EXTENSION_TYPES: frozenset[int] = frozenset(ExtensionType)

#: Proposal types every client supports and none lists in capabilities (§7.2).
DEFAULT_PROPOSAL_TYPES: frozenset[int] = frozenset(ProposalType)

_SIGN_LABEL = "LeafNodeTBS"


def sign_leaf_node(
    cs: CipherSuiteImpl,
    leaf_node: LeafNode,
    signature_key: SignaturePrivateKey,
    group_id: bytes | None = None,
    leaf_index: int | None = None,
) -> LeafNode:
    """Return ``leaf_node`` with a fresh ``SignWithLabel(., "LeafNodeTBS", .)`` (§7.2).

    Args:
        cs: the suite whose signature scheme signs.
        leaf_node: the leaf; its current ``signature`` is ignored.
        signature_key: the private key matching ``leaf_node.signature_key``.
        group_id: required for ``update`` and ``commit`` leaves.
        leaf_index: required for ``update`` and ``commit`` leaves.

    Raises:
        UsageError: group context missing for an update/commit leaf.
        ValueError: the key's scheme is not the suite's.
    """
    tbs = leaf_node.tbs_bytes(group_id, leaf_index)
    return dataclasses.replace(
        leaf_node, signature=sign_with_label(cs, signature_key, _SIGN_LABEL, tbs)
    )


def verify_leaf_node_signature(
    cs: CipherSuiteImpl,
    leaf_node: LeafNode,
    group_id: bytes | None = None,
    leaf_index: int | None = None,
) -> None:
    """Verify the leaf's signature with its own ``signature_key`` (§7.2, §7.3).

    Raises:
        VerificationError: bad signature, or a signature key that does not load.
        UsageError: group context missing for an update/commit leaf.
    """
    tbs = leaf_node.tbs_bytes(group_id, leaf_index)
    try:
        verify_with_label(cs, leaf_node.signature_key, _SIGN_LABEL, tbs, leaf_node.signature)
    except ValidationError:
        raise VerificationError("leaf node signature key is invalid") from None


def _required_capabilities(extensions: tuple[Extension, ...]) -> RequiredCapabilities | None:
    ext = find_extension(extensions, ExtensionType.REQUIRED_CAPABILITIES)
    if ext is None:
        return None
    try:
        return RequiredCapabilities.from_extension(ext)
    except DecodeError:
        raise ValidationError("required_capabilities extension is malformed") from None


def validate_leaf_node(
    cs: CipherSuiteImpl,
    leaf_node: LeafNode,
    *,
    expected_source: LeafNodeSource | None,
    group_id: bytes | None = None,
    leaf_index: int | None = None,
    group_extensions: tuple[Extension, ...] = (),
    tree: RatchetTree | None = None,
    now: int | None = None,
    max_lifetime: int | None = None,
) -> None:
    """Run the LeafNode validation of RFC 9420 §7.3 (credential validation excepted).

    Args:
        cs: the group's (or KeyPackage's) cipher suite; the leaf must support it.
        leaf_node: the leaf to check.
        expected_source: the ``leaf_node_source`` the context demands
            (``KEY_PACKAGE`` in a KeyPackage, ``UPDATE`` in an Update, ``COMMIT`` in
            an UpdatePath); None accepts any (a leaf already in a tree).
        group_id: the group's id; required for ``update``/``commit`` leaves.
        leaf_index: the leaf's slot; required for ``update``/``commit`` leaves.
        group_extensions: the GroupContext extensions; ``required_capabilities``
            there must be met.
        tree: the group's tree, if the leaf joins or stays in one: the leaf's
            credential type must be supported by every other member and the leaf
            must support theirs, and its keys must be unique among other members
            (the slot ``leaf_index`` itself is skipped, so a replaced leaf may keep
            its signature key).
        now: seconds since the Unix epoch; when given, a ``key_package`` leaf's
            lifetime must contain it. None skips the check (allowed for received
            leaves, §7.3).
        max_lifetime: if given, the longest ``not_after - not_before`` accepted.

    Raises:
        ValidationError: a rule of §7.3 is broken.
        VerificationError: the signature does not verify.
    """
    source = leaf_node.leaf_node_source
    if expected_source is not None and source is not expected_source:
        raise ValidationError("leaf node has the wrong leaf_node_source")
    if source is not LeafNodeSource.KEY_PACKAGE and (group_id is None or leaf_index is None):
        raise ValidationError("update or commit leaf node outside a group context")
    verify_leaf_node_signature(cs, leaf_node, group_id, leaf_index)

    caps = leaf_node.capabilities
    if PROTOCOL_VERSION_MLS10 not in caps.versions:
        raise ValidationError("leaf node does not support protocol version mls10")
    if cs.suite not in caps.cipher_suites:
        raise ValidationError("leaf node does not support the group's cipher suite")
    credential_type = leaf_node.credential.credential_type
    if credential_type not in caps.credentials:
        raise ValidationError("leaf node's credential type is not in its capabilities")
    check_unique_types(leaf_node.extensions)
    for ext in leaf_node.extensions:
        if ext.extension_type not in DEFAULT_EXTENSION_TYPES and (
            ext.extension_type not in caps.extensions
        ):
            raise ValidationError("leaf node uses an extension its capabilities do not list")

    required = _required_capabilities(group_extensions)
    if required is not None:
        if any(
            t not in DEFAULT_EXTENSION_TYPES and t not in caps.extensions
            for t in required.extension_types
        ):
            raise ValidationError("leaf node lacks a required extension type")
        if any(
            t not in DEFAULT_PROPOSAL_TYPES and t not in caps.proposals
            for t in required.proposal_types
        ):
            raise ValidationError("leaf node lacks a required proposal type")
        if any(t not in caps.credentials for t in required.credential_types):
            raise ValidationError("leaf node lacks a required credential type")

    if source is LeafNodeSource.KEY_PACKAGE:
        assert leaf_node.lifetime is not None
        lifetime = leaf_node.lifetime
        if lifetime.not_before > lifetime.not_after:
            raise ValidationError("leaf node lifetime is empty")
        if now is not None and not lifetime.not_before <= now <= lifetime.not_after:
            raise ValidationError("leaf node lifetime does not cover the current time")
        if max_lifetime is not None and lifetime.not_after - lifetime.not_before > max_lifetime:
            raise ValidationError("leaf node lifetime is longer than allowed")

    if tree is not None:
        for i, other in tree.members():
            if i == leaf_index:
                continue
            if credential_type not in other.capabilities.credentials:
                raise ValidationError("a member does not support the leaf's credential type")
            if other.credential.credential_type not in caps.credentials:
                raise ValidationError("leaf node does not support a member's credential type")
            if other.signature_key == leaf_node.signature_key:
                raise ValidationError("leaf node's signature key is already in the group")
        own = None if leaf_index is None else treemath.leaf_to_node(leaf_index)
        for x, key in tree.encryption_keys():
            if x != own and key == leaf_node.encryption_key:
                raise ValidationError("leaf node's encryption key is already in the group")


def verify_parent_hashes(cs: CipherSuiteImpl, tree: RatchetTree) -> None:
    """Check that every non-blank parent is parent-hash valid (§7.9.2), top down.

    Each non-blank parent must have exactly one node below it whose parent hash is
    valid with respect to it; by induction every parent then chains down to a leaf.

    Raises:
        VerificationError: some parent is not parent-hash valid.
    """
    for p in range(1, len(tree.nodes), 2):
        if tree.nodes[p] is not None and len(tree.parent_hash_valid_children(cs, p)) != 1:
            raise VerificationError("ratchet tree has a parent node that is not parent-hash valid")


def _check_unmerged_leaves(tree: RatchetTree) -> None:
    """§12.4.3.1 and §7.1: unmerged leaves are sorted, below, non-blank, and listed all the way."""
    for p in range(1, len(tree.nodes), 2):
        node = tree.nodes[p]
        if node is None:
            continue
        assert isinstance(node, ParentNode)
        unmerged = node.unmerged_leaves
        if any(a >= b for a, b in itertools.pairwise(unmerged)):
            raise ValidationError("unmerged_leaves is not strictly increasing")
        for leaf in unmerged:
            x = treemath.leaf_to_node(leaf)
            if leaf >= tree.n_leaves or p not in tree.direct_path(leaf):
                raise ValidationError("unmerged leaf is not below its parent node")
            if tree.nodes[x] is None:
                raise ValidationError("unmerged leaf is blank")
            for q in tree.direct_path(leaf):
                if q == p:
                    break
                between = tree.nodes[q]
                if isinstance(between, ParentNode) and leaf not in between.unmerged_leaves:
                    raise ValidationError("unmerged leaf missing from an intermediate node")


def _check_unique_keys(tree: RatchetTree) -> None:
    seen_encryption: set[bytes] = set()
    for _, key in tree.encryption_keys():
        if key in seen_encryption:
            raise ValidationError("ratchet tree repeats an encryption key")
        seen_encryption.add(key)
    seen_signature: set[bytes] = set()
    for _, leaf in tree.members():
        if leaf.signature_key in seen_signature:
            raise ValidationError("ratchet tree repeats a signature key")
        seen_signature.add(leaf.signature_key)


def validate_ratchet_tree(
    tree: RatchetTree,
    group_context: GroupContext,
    *,
    now: int | None = None,
    check_tree_hash: bool = True,
) -> None:
    """Validate a tree received from elsewhere, as a joiner must (§12.4.3.1, §7.9.2, §7.3).

    Args:
        tree: the imported tree.
        group_context: the group's context: cipher suite, group id, extensions and
            the ``tree_hash`` the tree must have.
        now: seconds since the Unix epoch for ``key_package`` leaf lifetimes; None
            skips that check (it is only recommended for received leaves).
        check_tree_hash: compare the root hash with ``group_context.tree_hash``.

    Raises:
        ValidationError: a structural or §7.3 rule is broken, or the suite is unknown.
        VerificationError: the tree hash, a parent hash or a signature is wrong.
    """
    cs = get_cipher_suite(group_context.cipher_suite)
    if check_tree_hash and not hmac.compare_digest(tree.tree_hash(cs), group_context.tree_hash):
        raise VerificationError("ratchet tree does not match the group's tree hash")
    if next(tree.members(), None) is None:
        raise ValidationError("ratchet tree has no members")
    verify_parent_hashes(cs, tree)
    _check_unmerged_leaves(tree)
    _check_unique_keys(tree)
    credential_types = {leaf.credential.credential_type for _, leaf in tree.members()}
    for i, leaf in tree.members():
        validate_leaf_node(
            cs,
            leaf,
            expected_source=None,
            group_id=group_context.group_id,
            leaf_index=i,
            group_extensions=group_context.extensions,
            now=now,
        )
        if not credential_types <= set(leaf.capabilities.credentials):
            raise ValidationError("a member does not support every credential type in use")
