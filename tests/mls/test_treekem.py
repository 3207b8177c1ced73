"""TreeKEM vectors (RFC 9420 §7.4-7.6, §7.9) plus our own UpdatePaths and hostile-path tests.

Schema of ``treekem.json`` (one object per tree shape, per cipher suite)::

    {
      "cipher_suite": uint16,
      "group_id": hex,
      "epoch": uint64,
      "confirmed_transcript_hash": hex,
      "ratchet_tree": hex,          # TLS-serialized optional<Node> ratchet_tree<V>
      "leaves_private": [{
        "index": uint32,            # leaf index
        "encryption_priv": hex,     # HPKE private key of the leaf
        "signature_priv": hex,      # signature private key of the leaf
        "path_secrets": [{"node": uint32, "path_secret": hex}, ...]
      }, ...],
      "update_paths": [{
        "sender": uint32,           # leaf index of the committer
        "update_path": hex,         # TLS-serialized UpdatePath
        "path_secrets": [hex | null, ...],  # per leaf: the path secret it decrypts
        "commit_secret": hex,
        "tree_hash_after": hex
      }, ...]
    }

The provisional GroupContext has the given suite, group id, epoch and confirmed
transcript hash, the tree hash after merging the path, and no extensions. For each
update path every other private leaf processes it; then the sender makes a new path
of its own that every other leaf processes.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from backchannel.mls.crypto.hpke import HPKEPrivateKey
from backchannel.mls.crypto.signatures import SignaturePrivateKey
from backchannel.mls.crypto.suites import CipherSuite, CipherSuiteImpl, get_cipher_suite
from backchannel.mls.errors import UsageError, ValidationError, VerificationError
from backchannel.mls.messages import GroupContext
from backchannel.mls.tree import RatchetTree
from backchannel.mls.tree_structs import HPKECiphertext, UpdatePath
from backchannel.mls.tree_validation import verify_leaf_node_signature
from backchannel.mls.treekem import (
    TreePrivateKeys,
    decrypt_update_path,
    encrypt_update_path,
    generate_update_path,
    merge_update_path,
)
from tests.mls.tree_harness import TreeHarness
from tests.vectors import load_vectors

VECTORS = [
    pytest.param(v, id=f"suite={v['cipher_suite']}-case={i}")
    for i, v in enumerate(load_vectors("treekem"))
]
SUITE = CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519
CS = get_cipher_suite(SUITE)


def _context(vector: dict[str, Any], cs: CipherSuiteImpl, tree: RatchetTree) -> GroupContext:
    return GroupContext(
        1,
        cs.suite,
        bytes.fromhex(vector["group_id"]),
        vector["epoch"],
        tree.tree_hash(cs),
        bytes.fromhex(vector["confirmed_transcript_hash"]),
        (),
    )


def _private_leaves(
    vector: dict[str, Any], cs: CipherSuiteImpl, tree: RatchetTree
) -> dict[int, tuple[TreePrivateKeys, SignaturePrivateKey]]:
    out = {}
    for entry in vector["leaves_private"]:
        leaf_key = HPKEPrivateKey.from_bytes(cs.kem_id, bytes.fromhex(entry["encryption_priv"]))
        keys = TreePrivateKeys.create(entry["index"], leaf_key)
        for ps in entry["path_secrets"]:
            keys = keys.with_path_secret(cs, ps["node"], bytes.fromhex(ps["path_secret"]))
        keys.check_consistent(tree)
        sig = SignaturePrivateKey.from_bytes(
            cs.signature_scheme, bytes.fromhex(entry["signature_priv"])
        )
        out[entry["index"]] = (keys, sig)
    return out


@pytest.mark.parametrize("vector", VECTORS)
def test_treekem_vector(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    tree = RatchetTree.from_bytes(bytes.fromhex(vector["ratchet_tree"]))
    private = _private_leaves(vector, cs, tree)
    assert private, "vector has private leaves"
    for entry in vector["update_paths"]:
        sender = entry["sender"]
        path = UpdatePath.from_bytes(bytes.fromhex(entry["update_path"]))
        merged = merge_update_path(cs, tree, sender, path)  # parent-hash valid
        assert merged.tree_hash(cs).hex() == entry["tree_hash_after"]
        group_id = bytes.fromhex(vector["group_id"])
        # Only the signature: the suite-7 trees of this file do not list suite 7
        # in their capabilities, which full §7.3 validation would refuse.
        verify_leaf_node_signature(cs, path.leaf_node, group_id, sender)
        context = _context(vector, cs, merged)
        processed = 0
        for j, (keys, _) in private.items():
            if j == sender or tree.leaf_node(j) is None:
                continue
            result = decrypt_update_path(cs, merged, sender, path, context, keys)
            assert result.path_secret.hex() == entry["path_secrets"][j], f"leaf {j}"
            assert result.commit_secret.hex() == entry["commit_secret"], f"leaf {j}"
            result.private_keys.check_consistent(merged)
            processed += 1
        assert processed == sum(1 for j, _ in tree.members() if j != sender)
        # Now the sender makes a path of its own; everyone else must agree on it.
        prepared = generate_update_path(
            cs, tree, sender, os.urandom(cs.n_h), private[sender][1], group_id
        )
        new_context = _context(vector, cs, prepared.tree)
        new_path = encrypt_update_path(cs, prepared, new_context)
        assert UpdatePath.from_bytes(new_path.to_bytes()) == new_path
        new_merged = merge_update_path(cs, tree, sender, new_path)
        assert new_merged == prepared.tree
        prepared.private_keys.check_consistent(new_merged)
        for j, (keys, _) in private.items():
            if j == sender or tree.leaf_node(j) is None:
                continue
            result = decrypt_update_path(cs, new_merged, sender, new_path, new_context, keys)
            assert result.commit_secret == prepared.commit_secret, f"leaf {j}"


@pytest.mark.parametrize(
    "suite",
    [
        CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
        CipherSuite.MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448,
        CipherSuite.MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519,
    ],
    ids=lambda s: f"suite={s:#06x}",
)
def test_commits_with_adds_removes_and_updates(suite: CipherSuite) -> None:
    h = TreeHarness(suite)
    h.commit(0, adds=4)
    h.check()
    h.update(2)
    h.remove(3)
    h.commit(1, adds=2)
    h.check()
    h.commit(4)
    h.check()


def _setup() -> tuple[TreeHarness, UpdatePath, GroupContext, RatchetTree]:
    h = TreeHarness(SUITE)
    h.commit(0, adds=4)
    prepared = generate_update_path(
        CS, h.tree, 0, os.urandom(CS.n_h), h.members[0].signature_key, h.group_id
    )
    context = h.context(prepared.tree)
    return h, encrypt_update_path(CS, prepared, context), context, prepared.tree


def test_wrong_parent_hash_rejected() -> None:
    h, path, _, _ = _setup()
    leaf = dataclasses.replace(path.leaf_node, parent_hash=bytes(32))
    with pytest.raises(VerificationError):
        merge_update_path(CS, h.tree, 0, dataclasses.replace(path, leaf_node=leaf))


def test_swapped_path_key_rejected() -> None:
    h, path, _, _ = _setup()
    other = h.tree.leaf_node(1)
    assert other is not None
    fresh = HPKEPrivateKey.generate(CS.kem_id).public_key().to_bytes()
    node = dataclasses.replace(path.nodes[-1], encryption_key=fresh)  # type: ignore[arg-type]
    bad = dataclasses.replace(path, nodes=(*path.nodes[:-1], node))
    with pytest.raises(VerificationError):
        merge_update_path(CS, h.tree, 0, bad)
    # Reusing a key already in the tree is refused outright.
    node = dataclasses.replace(path.nodes[-1], encryption_key=other.encryption_key)
    with pytest.raises(ValidationError):
        merge_update_path(CS, h.tree, 0, dataclasses.replace(path, nodes=(*path.nodes[:-1], node)))


def test_wrong_length_rejected() -> None:
    h, path, _, _ = _setup()
    with pytest.raises(ValidationError):
        merge_update_path(CS, h.tree, 0, dataclasses.replace(path, nodes=path.nodes[:-1]))


def test_tampered_ciphertext_and_context_rejected() -> None:
    h, path, context, merged = _setup()
    keys = h.members[4].keys
    # Leaf 4 decrypts at the root (node 7), whose copath child resolves to leaf 4 only.
    node = path.nodes[-1]
    ct = node.encrypted_path_secret[0]
    flipped = HPKECiphertext(ct.kem_output, ct.ciphertext[:-1] + bytes([ct.ciphertext[-1] ^ 1]))
    bad = dataclasses.replace(
        path,
        nodes=(*path.nodes[:-1], dataclasses.replace(node, encrypted_path_secret=(flipped,))),
    )
    with pytest.raises(VerificationError):
        decrypt_update_path(CS, merged, 0, bad, context, keys)
    other_context = dataclasses.replace(context, epoch=context.epoch + 1)
    with pytest.raises(VerificationError):
        decrypt_update_path(CS, merged, 0, path, other_context, keys)
    missing = dataclasses.replace(
        path, nodes=(*path.nodes[:-1], dataclasses.replace(node, encrypted_path_secret=()))
    )
    with pytest.raises(ValidationError):
        decrypt_update_path(CS, merged, 0, missing, context, keys)


def test_committer_cannot_process_own_path() -> None:
    h, path, context, merged = _setup()
    with pytest.raises(UsageError):
        decrypt_update_path(CS, merged, 0, path, context, h.members[0].keys)


def test_new_members_are_excluded_from_encryption() -> None:
    h = TreeHarness(SUITE)
    h.commit(0, adds=2)
    tree, new = h.tree.add_leaf(h.key_package().key_package.leaf_node)
    prepared = generate_update_path(
        CS, tree, 0, os.urandom(CS.n_h), h.members[0].signature_key, h.group_id
    )
    path = encrypt_update_path(CS, prepared, h.context(prepared.tree), exclude_leaves=[new])
    # Leaf 3 (new) is alone under the root's right child next to leaf 2: one ciphertext.
    assert [len(n.encrypted_path_secret) for n in path.nodes] == [1, 1]
    full = encrypt_update_path(CS, prepared, h.context(prepared.tree))
    assert [len(n.encrypted_path_secret) for n in full.nodes] == [1, 2]


def test_secrets_stay_out_of_reprs() -> None:
    h = TreeHarness(SUITE)
    h.add()
    prepared = generate_update_path(
        CS, h.tree, 0, b"\x42" * CS.n_h, h.members[0].signature_key, h.group_id
    )
    text = repr(prepared) + repr(prepared.private_keys)
    assert prepared.commit_secret.hex() not in text
    assert repr(prepared.commit_secret) not in text
    for secret in prepared.path_secrets.values():
        assert repr(secret) not in text
    assert "TreePrivateKeys(leaf_index=0" in repr(prepared.private_keys)


def test_generation_is_deterministic_in_leaf_secret() -> None:
    h = TreeHarness(SUITE)
    h.commit(0, adds=3)
    sig = h.members[1].signature_key
    a = generate_update_path(CS, h.tree, 1, b"\x01" * CS.n_h, sig, h.group_id)
    b = generate_update_path(CS, h.tree, 1, b"\x01" * CS.n_h, sig, h.group_id)
    assert a.tree == b.tree
    assert a.commit_secret == b.commit_secret
