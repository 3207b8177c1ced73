"""Tree-operations vectors (RFC 9420 §7.7, §7.8, §12.1.1-12.1.3) and unit tests of tree edits.

Schema of ``tree-operations.json`` (one object per case)::

    {
      "cipher_suite": uint16,
      "tree_before": hex,        # TLS-serialized optional<Node> ratchet_tree<V>
      "proposal": hex,           # TLS-serialized Proposal (add, update or remove)
      "proposal_sender": uint32, # leaf index of the sender
      "tree_hash_before": hex,   # root tree hash of tree_before
      "tree_after": hex,         # TLS-serialized tree after applying the proposal
      "tree_hash_after": hex     # root tree hash of tree_after
    }
"""

from __future__ import annotations

from typing import Any

import pytest

from backchannel.mls.crypto.suites import CipherSuite, get_cipher_suite
from backchannel.mls.errors import UsageError, ValidationError
from backchannel.mls.messages import Add, Proposal, Remove, Update
from backchannel.mls.tree import RatchetTree
from backchannel.mls.tree_structs import ParentNode
from tests.mls.tree_harness import TreeHarness
from tests.vectors import load_vectors

VECTORS = [
    pytest.param(
        v,
        id=f"suite={v['cipher_suite']}-case={i}-{Proposal.from_bytes(bytes.fromhex(v['proposal'])).__class__.__name__.lower()}",
    )
    for i, v in enumerate(load_vectors("tree-operations"))
]
SUITE = CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519


def apply_proposal(tree: RatchetTree, proposal: Proposal, sender: int) -> RatchetTree:
    if isinstance(proposal, Add):
        return tree.add_leaf(proposal.key_package.leaf_node)[0]
    if isinstance(proposal, Update):
        return tree.update_leaf(sender, proposal.leaf_node)
    assert isinstance(proposal, Remove)
    return tree.remove_leaf(proposal.removed)


@pytest.mark.parametrize("vector", VECTORS)
def test_tree_operations_vector(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    before = RatchetTree.from_bytes(bytes.fromhex(vector["tree_before"]))
    assert before.tree_hash(cs).hex() == vector["tree_hash_before"]
    assert before.to_bytes().hex() == vector["tree_before"]
    proposal = Proposal.from_bytes(bytes.fromhex(vector["proposal"]))
    after = apply_proposal(before, proposal, vector["proposal_sender"])
    assert after.to_bytes().hex() == vector["tree_after"]
    assert after.tree_hash(cs).hex() == vector["tree_hash_after"]
    # The input tree is untouched: operations return new trees.
    assert before.to_bytes().hex() == vector["tree_before"]


def test_add_fills_leftmost_blank_then_extends() -> None:
    h = TreeHarness(SUITE)
    for _ in range(4):
        h.add()
    assert h.tree.n_leaves == 8  # 5 members
    h.remove(1)
    index = h.add()
    assert index == 1
    assert h.tree.n_leaves == 8


def test_add_marks_unmerged_on_non_blank_ancestors() -> None:
    h = TreeHarness(SUITE)
    h.add()
    h.add()
    h.commit(0)  # fills the path of leaf 0: nodes 1 and 3
    tree, index = h.tree.add_leaf(h.key_package().key_package.leaf_node)
    assert index == 3
    root = tree.parent_node(3)
    assert isinstance(root, ParentNode)
    assert root.unmerged_leaves == (3,)
    assert tree.resolution(5) == [4, 6]
    assert tree.resolution(3) == [3, 6]


def test_remove_truncates_to_smallest_tree() -> None:
    h = TreeHarness(SUITE)
    for _ in range(8):
        h.add()
    assert h.tree.n_leaves == 16
    h.remove(8)
    assert h.tree.n_leaves == 8
    for i in (7, 6, 5):
        h.remove(i)
    assert h.tree.n_leaves == 8
    h.remove(4)
    assert h.tree.n_leaves == 4
    h.check()


def test_truncate_keeps_one_leaf() -> None:
    h = TreeHarness(SUITE)
    h.add()
    h.remove(1)
    assert h.tree.n_leaves == 1
    assert len(h.tree.nodes) == 1


def test_extend_adds_blank_right_subtree() -> None:
    h = TreeHarness(SUITE)
    h.add()
    bigger = h.tree.extend()
    assert bigger.n_leaves == 4
    assert bigger.nodes[:3] == h.tree.nodes
    assert bigger.nodes[3:] == (None,) * 4
    assert bigger.truncate() == h.tree
    # Trailing blanks are not sent (§12.4.3.3) and come back on import.
    assert RatchetTree.from_bytes(bigger.to_bytes()) == h.tree


def test_invalid_removes_and_updates() -> None:
    h = TreeHarness(SUITE)
    h.add()
    with pytest.raises(ValidationError):
        h.tree.remove_leaf(5)
    h.add()
    h.remove(1)
    with pytest.raises(ValidationError):
        h.tree.remove_leaf(1)
    leaf = h.tree.leaf_node(0)
    assert leaf is not None
    with pytest.raises(ValidationError):
        h.tree.update_leaf(1, leaf)
    with pytest.raises(UsageError):
        h.tree.leaf_node(4)


def test_import_rejects_bad_shapes() -> None:
    h = TreeHarness(SUITE)
    h.add()
    leaf = h.tree.leaf_node(0)
    assert leaf is not None
    with pytest.raises(ValidationError):
        RatchetTree.from_nodes([])
    with pytest.raises(ValidationError):
        RatchetTree.from_nodes([leaf, None])  # ends in a blank
    with pytest.raises(ValidationError):
        RatchetTree.from_nodes([None, leaf])  # a leaf in a parent slot


def test_repr_is_short() -> None:
    h = TreeHarness(SUITE)
    h.add()
    assert repr(h.tree) == "RatchetTree(n_leaves=2, members=2)"
