"""Tree-validation vectors (RFC 9420 §4.1.1, §7.8, §7.9.2, §12.4.3.1) and hostile-tree tests.

Schema of ``tree-validation.json`` (one object per tree, per cipher suite)::

    {
      "cipher_suite": uint16,
      "tree": hex,                  # TLS-serialized optional<Node> ratchet_tree<V>
      "group_id": hex,              # context of the leaf signatures
      "resolutions": [[uint32, ...], ...],  # resolution of node i, for every node
      "tree_hashes": [hex, ...]     # tree hash of node i, for every node
    }

Each tree must also be parent-hash valid and every leaf signature must verify with
``group_id`` as context, as when joining.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from backchannel.mls.crypto.suites import CipherSuite, get_cipher_suite
from backchannel.mls.errors import ValidationError, VerificationError
from backchannel.mls.extensions import RequiredCapabilities
from backchannel.mls.messages import GroupContext
from backchannel.mls.tree import RatchetTree
from backchannel.mls.tree_structs import LeafNode, ParentNode
from backchannel.mls.tree_validation import (
    validate_leaf_node,
    validate_ratchet_tree,
    verify_parent_hashes,
)
from tests.mls.tree_harness import NOW, TreeHarness
from tests.vectors import load_vectors

VECTORS = [
    pytest.param(v, id=f"suite={v['cipher_suite']}-case={i}")
    for i, v in enumerate(load_vectors("tree-validation"))
]
SUITE = CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519
CS = get_cipher_suite(SUITE)


def context_for(vector: dict[str, Any], tree: RatchetTree) -> GroupContext:
    cs = get_cipher_suite(vector["cipher_suite"])
    return GroupContext(
        1, cs.suite, bytes.fromhex(vector["group_id"]), 0, tree.tree_hash(cs), b"", ()
    )


@pytest.mark.parametrize("vector", VECTORS)
def test_tree_validation_vector(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    tree = RatchetTree.from_bytes(bytes.fromhex(vector["tree"]))
    assert len(tree.nodes) == len(vector["resolutions"]) == len(vector["tree_hashes"])
    for x, expected in enumerate(vector["resolutions"]):
        assert tree.resolution(x) == expected, f"resolution of node {x}"
    assert [h.hex() for h in tree.tree_hashes(cs)] == vector["tree_hashes"]
    verify_parent_hashes(cs, tree)
    validate_ratchet_tree(tree, context_for(vector, tree))
    assert tree.to_bytes().hex() == vector["tree"]


def _populated() -> TreeHarness:
    """A tree with parents, blanks and unmerged leaves."""
    h = TreeHarness(SUITE)
    for _ in range(5):
        h.add()
    h.commit(0)
    h.commit(4)
    h.add()
    h.remove(2)
    h.commit(1)
    h.add()
    h.check()
    return h


def _replace_node(tree: RatchetTree, x: int, node: Any) -> RatchetTree:
    nodes = list(tree.nodes)
    nodes[x] = node
    return RatchetTree(tuple(nodes))


def _first_parent(tree: RatchetTree) -> int:
    return next(x for x, n in enumerate(tree.nodes) if isinstance(n, ParentNode))


def test_wrong_tree_hash_rejected() -> None:
    h = _populated()
    context = dataclasses.replace(h.context(h.tree), tree_hash=bytes(32))
    with pytest.raises(VerificationError):
        validate_ratchet_tree(h.tree, context)


def test_tampered_parent_hash_rejected() -> None:
    h = _populated()
    x = _first_parent(h.tree)
    node = h.tree.nodes[x]
    assert isinstance(node, ParentNode)
    bad = _replace_node(h.tree, x, dataclasses.replace(node, parent_hash=bytes(32)))
    with pytest.raises(VerificationError):
        verify_parent_hashes(CS, bad)
    with pytest.raises(VerificationError):
        validate_ratchet_tree(bad, h.context(bad))


def test_injected_parent_key_rejected() -> None:
    """An insider cannot swap a parent's key: the parent-hash chain breaks (§7.9)."""
    h = _populated()
    x = _first_parent(h.tree)
    node = h.tree.nodes[x]
    assert isinstance(node, ParentNode)
    other = TreeHarness(SUITE).key_package().key_package.leaf_node.encryption_key
    bad = _replace_node(h.tree, x, dataclasses.replace(node, encryption_key=other))
    with pytest.raises(VerificationError):
        validate_ratchet_tree(bad, h.context(bad))


def test_bad_leaf_signature_rejected() -> None:
    h = _populated()
    leaf = h.tree.leaf_node(0)
    assert leaf is not None
    sig = bytearray(leaf.signature)
    sig[0] ^= 1
    bad = _replace_node(h.tree, 0, dataclasses.replace(leaf, signature=bytes(sig)))
    with pytest.raises(VerificationError):
        validate_ratchet_tree(bad, h.context(bad))


def test_wrong_group_id_rejected() -> None:
    h = _populated()
    context = dataclasses.replace(h.context(h.tree), group_id=b"another group")
    with pytest.raises(VerificationError):
        validate_ratchet_tree(h.tree, context)


def test_unmerged_leaf_inconsistencies_rejected() -> None:
    h = TreeHarness(SUITE)
    h.add()
    h.add()
    h.commit(0)
    h.add()  # leaf 3 unmerged at the root (node 3)
    root = h.tree.parent_node(3)
    assert isinstance(root, ParentNode)
    assert root.unmerged_leaves == (3,)
    for unmerged in [(3, 3), (2, 3), ()]:  # repeated, blank leaf, missing
        bad = _replace_node(h.tree, 3, dataclasses.replace(root, unmerged_leaves=unmerged))
        with pytest.raises((ValidationError, VerificationError)):
            validate_ratchet_tree(bad, h.context(bad))


def test_unmerged_leaf_outside_subtree_rejected() -> None:
    h = TreeHarness(SUITE)
    for _ in range(3):
        h.add()
    h.commit(0)
    node = h.tree.parent_node(1)
    assert isinstance(node, ParentNode)
    bad = _replace_node(h.tree, 1, dataclasses.replace(node, unmerged_leaves=(2,)))
    with pytest.raises((ValidationError, VerificationError)):
        validate_ratchet_tree(bad, h.context(bad))


def test_duplicate_keys_rejected() -> None:
    h = TreeHarness(SUITE)
    h.add()
    h.add()
    h.check()
    first = h.tree.leaf_node(0)
    assert first is not None
    leaf1 = h.tree.leaf_node(1)
    assert leaf1 is not None
    # Same signature key on two leaves: re-use leaf 0 itself at leaf 2 (key_package
    # leaves carry no group context, so the signature still verifies).
    bad = _replace_node(h.tree, 4, first)
    with pytest.raises(ValidationError, match="repeats"):
        validate_ratchet_tree(bad, h.context(bad))
    with pytest.raises(ValidationError, match="already in the group"):
        validate_leaf_node(
            CS, first, expected_source=None, group_id=h.group_id, leaf_index=2, tree=h.tree
        )


def test_leaf_validation_rules() -> None:
    h = TreeHarness(SUITE)
    h.add()
    leaf = h.tree.leaf_node(1)
    assert isinstance(leaf, LeafNode)
    validate_leaf_node(CS, leaf, expected_source=None, now=NOW)
    with pytest.raises(ValidationError, match="leaf_node_source"):
        validate_leaf_node(CS, leaf, expected_source=leaf.leaf_node_source.UPDATE)
    with pytest.raises(ValidationError, match="lifetime"):
        validate_leaf_node(CS, leaf, expected_source=None, now=NOW + 10**7)
    with pytest.raises(ValidationError, match="lifetime"):
        validate_leaf_node(CS, leaf, expected_source=None, max_lifetime=60)
    other = get_cipher_suite(CipherSuite.MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519)
    with pytest.raises(ValidationError, match="cipher suite"):
        validate_leaf_node(other, leaf, expected_source=None)
    required = RequiredCapabilities((0x0F0F,), (), ()).to_extension()
    with pytest.raises(ValidationError, match="required extension"):
        validate_leaf_node(CS, leaf, expected_source=None, group_extensions=(required,))
    required = RequiredCapabilities((), (), (2,)).to_extension()
    with pytest.raises(ValidationError, match="required credential"):
        validate_leaf_node(CS, leaf, expected_source=None, group_extensions=(required,))


def test_tree_with_no_members_rejected() -> None:
    h = TreeHarness(SUITE)
    h.add()
    leaf = h.tree.leaf_node(1)
    assert leaf is not None
    # A lone parent with no leaves is not a tree anyone can be in.
    empty = RatchetTree.from_nodes([None, ParentNode(leaf.encryption_key, b"", ())])
    with pytest.raises((ValidationError, VerificationError)):
        validate_ratchet_tree(empty, h.context(empty))
