"""An in-memory group of tree members for TreeKEM and tree-invariant tests (no Group object yet).

Each member holds its signature key and :class:`TreePrivateKeys`; the harness applies
Add/Update/Remove to the shared public tree and runs commits with an UpdatePath that
every other member merges and decrypts, checking they all agree on the commit secret.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from backchannel.mls import treemath
from backchannel.mls.credentials import BasicCredential
from backchannel.mls.crypto.hpke import HPKEPrivateKey
from backchannel.mls.crypto.signatures import SignaturePrivateKey
from backchannel.mls.crypto.suites import CipherSuiteImpl, get_cipher_suite
from backchannel.mls.key_package_ops import KeyPackageBundle, generate_key_package
from backchannel.mls.messages import GroupContext
from backchannel.mls.tree import RatchetTree
from backchannel.mls.tree_structs import HPKEPublicKeyBytes, LeafNodeSource, Lifetime
from backchannel.mls.tree_validation import sign_leaf_node, validate_ratchet_tree
from backchannel.mls.treekem import (
    TreePrivateKeys,
    decrypt_update_path,
    encrypt_update_path,
    generate_update_path,
    merge_update_path,
)

NOW = 1_700_000_000
LIFETIME = Lifetime(NOW - 3600, NOW + 86400)


@dataclass
class Member:
    """One simulated client: its signing key and its view of the tree's private keys."""

    signature_key: SignaturePrivateKey
    keys: TreePrivateKeys


class TreeHarness:
    """N members sharing one public tree; operations keep every view consistent."""

    def __init__(self, suite: int, group_id: bytes = b"harness-group") -> None:
        self.cs: CipherSuiteImpl = get_cipher_suite(suite)
        self.group_id = group_id
        self.epoch = 0
        self.counter = 0
        first = self.key_package()
        self.tree = RatchetTree.create(first.key_package.leaf_node)
        self.members: dict[int, Member] = {
            0: Member(
                first.signature_private_key,
                TreePrivateKeys.create(0, first.encryption_private_key),
            )
        }

    def key_package(self) -> KeyPackageBundle:
        self.counter += 1
        sig = SignaturePrivateKey.generate(self.cs.signature_scheme)
        credential = BasicCredential(f"member-{self.counter}".encode())
        return generate_key_package(self.cs, credential, sig, LIFETIME)

    def context(self, tree: RatchetTree) -> GroupContext:
        return GroupContext(
            1, self.cs.suite, self.group_id, self.epoch, tree.tree_hash(self.cs), b"", ()
        )

    def _prune_all(self) -> None:
        for member in self.members.values():
            member.keys = member.keys.prune(self.tree)

    def add(self) -> int:
        """Add a member from a fresh KeyPackage; returns its leaf index."""
        bundle = self.key_package()
        self.tree, index = self.tree.add_leaf(bundle.key_package.leaf_node)
        self.members[index] = Member(
            bundle.signature_private_key,
            TreePrivateKeys.create(index, bundle.encryption_private_key),
        )
        return index

    def remove(self, index: int) -> None:
        self.tree = self.tree.remove_leaf(index)
        del self.members[index]
        self._prune_all()

    def update(self, index: int) -> None:
        """Apply an Update proposal from ``index`` (new leaf key, source ``update``)."""
        old = self.tree.leaf_node(index)
        assert old is not None
        new_key = HPKEPrivateKey.generate(self.cs.kem_id)
        leaf = dataclasses.replace(
            old,
            encryption_key=HPKEPublicKeyBytes(new_key.public_key().to_bytes()),
            leaf_node_source=LeafNodeSource.UPDATE,
            lifetime=None,
            parent_hash=None,
        )
        member = self.members[index]
        leaf = sign_leaf_node(self.cs, leaf, member.signature_key, self.group_id, index)
        self.tree = self.tree.update_leaf(index, leaf)
        member.keys = member.keys.with_leaf_key(new_key)
        self._prune_all()

    def commit(self, committer: int, adds: int = 0) -> bytes:
        """Commit with a path from ``committer``, adding ``adds`` new members in the same commit.

        Every other existing member merges and decrypts the path, every new member
        derives its keys from its Welcome path secret; returns the commit secret.
        """
        new = [self.add() for _ in range(adds)]
        self.epoch += 1
        committer_sig = self.members[committer].signature_key
        prepared = generate_update_path(
            self.cs, self.tree, committer, os.urandom(self.cs.n_h), committer_sig, self.group_id
        )
        context = self.context(prepared.tree)
        path = encrypt_update_path(self.cs, prepared, context, exclude_leaves=new)
        for index, member in self.members.items():
            if index == committer:
                continue
            if index in new:
                leaf_key = member.keys.leaf_key
                member.keys = TreePrivateKeys.for_joiner(
                    self.cs,
                    prepared.tree,
                    index,
                    leaf_key,
                    committer,
                    prepared.path_secret_for(index),
                )
                continue
            merged = merge_update_path(self.cs, self.tree, committer, path)
            assert merged == prepared.tree
            assert merged.tree_hash(self.cs) == context.tree_hash
            result = decrypt_update_path(
                self.cs, merged, committer, path, context, member.keys, exclude_leaves=new
            )
            assert result.commit_secret == prepared.commit_secret
            member.keys = result.private_keys
        self.tree = prepared.tree
        self.members[committer].keys = prepared.private_keys
        return prepared.commit_secret

    def check(self) -> None:
        """Every invariant: valid tree, consistent private views, truncated, private keys known."""
        validate_ratchet_tree(self.tree, self.context(self.tree), now=NOW)
        assert sorted(i for i, _ in self.tree.members()) == sorted(self.members)
        n = self.tree.n_leaves
        if n > 1:
            assert any(self.tree.leaf_node(i) is not None for i in range(n // 2, n))
        for index, member in self.members.items():
            member.keys.check_consistent(self.tree)
            # Tree invariant (§4.2): keys only for nodes above the member's own leaf.
            above = {
                treemath.leaf_to_node(index),
                *self.tree.direct_path(index),
            }
            assert set(member.keys.keys) <= above
        assert RatchetTree.from_bytes(self.tree.to_bytes()) == self.tree
