"""The public ratchet tree: nodes, resolution, tree and parent hashes, add/update/remove (RFC 9420 §4, §7).

Theory of operation: a :class:`RatchetTree` is an immutable array of optional nodes
laid out as in Appendix C (leaf ``i`` at node ``2i``), always a perfect tree of
``2**d`` leaves. Every operation (:meth:`~RatchetTree.add_leaf`,
:meth:`~RatchetTree.update_leaf`, :meth:`~RatchetTree.remove_leaf`,
:meth:`~RatchetTree.merge_path`, ...) returns a *new* tree and leaves the receiver
untouched, so a Group can stage a commit on a copy and merge it by swapping one
reference. Copies are shallow (nodes are frozen values), so they are cheap.

Tree hashes (§7.8) are cached per tree and cipher suite; because a tree never
changes, the cache never goes stale. Parent hashes (§7.9) are computed from the
cache, recomputing only subtrees whose unmerged leaves must be blanked.

Validation of an imported tree (§7.9.2, §7.10, §12.4.3.1) lives in
:mod:`.tree_validation`; TreeKEM (path secrets and encryption) in :mod:`.treekem`.

Note: :class:`RatchetTree` here is the in-memory tree; the wire form of the
``ratchet_tree`` extension is :class:`.tree_structs.RatchetTree`, imported below as
``RatchetTreeExtension``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Sequence

from . import treemath
from .crypto.suites import CipherSuite, CipherSuiteImpl
from .errors import UsageError, ValidationError
from .extensions import Extension
from .tree_structs import (
    HPKEPublicKeyBytes,
    LeafNode,
    LeafNodeHashInput,
    LeafNodeSource,
    Node,
    ParentHashInput,
    ParentNode,
    ParentNodeHashInput,
    TreeHashInput,
)
from .tree_structs import RatchetTree as RatchetTreeExtension

__all__ = ["RatchetTree", "RatchetTreeExtension"]


def _subtree_leaves(x: int) -> range:
    """The leaf indices under node ``x`` (pure index math, Appendix C)."""
    k = treemath.level(x)
    first = (x >> (k + 1)) << k
    return range(first, first + (1 << k))


class RatchetTree:
    """An immutable ratchet tree of ``2**d`` leaves (RFC 9420 §4.1, §7).

    Build one with :meth:`from_nodes`, :meth:`from_bytes`, :meth:`from_extension`
    or :meth:`create` (one-member group); every mutator returns a new tree.
    """

    __slots__ = ("_hashes", "_n_leaves", "_nodes")

    _nodes: tuple[Node | None, ...]
    _n_leaves: int
    _hashes: dict[CipherSuite, list[bytes]]

    def __init__(self, nodes: tuple[Node | None, ...]) -> None:
        """Internal: wrap an already-checked, full-width node array. Use the factories."""
        n_leaves = (len(nodes) + 1) // 2
        if not nodes or treemath.node_width(n_leaves) != len(nodes) or n_leaves & (n_leaves - 1):
            raise UsageError("node array must have 2**(d+1) - 1 entries")
        self._nodes = nodes
        self._n_leaves = n_leaves
        self._hashes = {}

    # --- construction and encoding ---------------------------------------------------

    @classmethod
    def create(cls, leaf_node: LeafNode) -> RatchetTree:
        """The tree of a new one-member group (§11): a single leaf."""
        return cls((leaf_node,))

    @classmethod
    def from_nodes(cls, nodes: Sequence[Node | None]) -> RatchetTree:
        """Import a ``ratchet_tree`` node vector (§12.4.3.3).

        Checks the shape only: a non-empty vector whose last node is non-blank,
        leaves at even and parents at odd indices; the vector is then padded with
        blanks to ``2**(d+1) - 1`` entries. Semantic checks (hashes, signatures,
        unmerged leaves) are :func:`.tree_validation.validate_ratchet_tree`'s job.

        Raises:
            ValidationError: the vector is empty, ends in a blank, or has a leaf
                where a parent belongs (or the reverse).
        """
        if not nodes:
            raise ValidationError("ratchet tree is empty")
        if nodes[-1] is None:
            raise ValidationError("ratchet tree ends with a blank node")
        for x, node in enumerate(nodes):
            if node is None:
                continue
            if isinstance(node, LeafNode) != treemath.is_leaf(x):
                raise ValidationError("ratchet tree has a node of the wrong type for its slot")
        n_leaves = 1
        while treemath.node_width(n_leaves) < len(nodes):
            n_leaves *= 2
        padded = tuple(nodes) + (None,) * (treemath.node_width(n_leaves) - len(nodes))
        return cls(padded)

    @classmethod
    def from_extension(cls, extension: RatchetTreeExtension | Extension) -> RatchetTree:
        """Import a ``ratchet_tree`` extension (§12.4.3.3); see :meth:`from_nodes`.

        Raises:
            DecodeError: an :class:`Extension` whose data is not a ratchet tree.
            ValidationError: as for :meth:`from_nodes`.
        """
        if isinstance(extension, Extension):
            extension = RatchetTreeExtension.from_extension(extension)
        return cls.from_nodes(extension.nodes)

    @classmethod
    def from_bytes(cls, data: bytes) -> RatchetTree:
        """Decode and import an encoded ``optional<Node> ratchet_tree<V>``.

        Raises:
            DecodeError: malformed encoding.
            ValidationError: as for :meth:`from_nodes`.
        """
        return cls.from_nodes(RatchetTreeExtension.from_bytes(data).nodes)

    def to_extension(self) -> RatchetTreeExtension:
        """The ``ratchet_tree`` wire value, without trailing blanks (§12.4.3.3)."""
        end = len(self._nodes)
        while end > 1 and self._nodes[end - 1] is None:
            end -= 1
        return RatchetTreeExtension(self._nodes[:end])

    def to_bytes(self) -> bytes:
        """Encoded ``ratchet_tree`` (trailing blanks left out)."""
        return self.to_extension().to_bytes()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RatchetTree) and self._nodes == other._nodes

    def __hash__(self) -> int:
        return hash(self._nodes)

    def __repr__(self) -> str:
        members = sum(1 for _ in self.members())
        return f"RatchetTree(n_leaves={self._n_leaves}, members={members})"

    # --- access ----------------------------------------------------------------------

    @property
    def n_leaves(self) -> int:
        """Number of leaf slots (a power of two), blank or not."""
        return self._n_leaves

    @property
    def nodes(self) -> tuple[Node | None, ...]:
        """All ``2 * n_leaves - 1`` slots in array order, None where blank."""
        return self._nodes

    @property
    def root(self) -> int:
        """Node index of the root."""
        return treemath.root(self._n_leaves)

    def node(self, x: int) -> Node | None:
        """Node ``x``, or None if blank.

        Raises:
            UsageError: ``x`` is outside the tree.
        """
        if not 0 <= x < len(self._nodes):
            raise UsageError("node index is outside the tree")
        return self._nodes[x]

    def leaf_node(self, leaf_index: int) -> LeafNode | None:
        """The LeafNode at ``leaf_index``, or None if blank.

        Raises:
            UsageError: ``leaf_index`` is outside the tree.
        """
        if not 0 <= leaf_index < self._n_leaves:
            raise UsageError("leaf index is outside the tree")
        node = self._nodes[2 * leaf_index]
        assert node is None or isinstance(node, LeafNode)
        return node

    def parent_node(self, x: int) -> ParentNode | None:
        """The ParentNode at node index ``x`` (odd), or None if blank."""
        node = self.node(x)
        if treemath.is_leaf(x):
            raise UsageError("node index is a leaf")
        assert node is None or isinstance(node, ParentNode)
        return node

    def members(self) -> Iterator[tuple[int, LeafNode]]:
        """``(leaf_index, leaf_node)`` for every non-blank leaf, left to right."""
        for i in range(self._n_leaves):
            node = self._nodes[2 * i]
            if isinstance(node, LeafNode):
                yield i, node

    def leftmost_blank_leaf(self) -> int | None:
        """The leftmost blank leaf index, or None if every leaf is occupied (§12.1.1)."""
        for i in range(self._n_leaves):
            if self._nodes[2 * i] is None:
                return i
        return None

    def find_leaf(self, leaf_node: LeafNode) -> int | None:
        """The index of the leaf equal to ``leaf_node``, or None (§12.4.3.1 ``my_leaf``)."""
        for i, node in self.members():
            if node == leaf_node:
                return i
        return None

    def direct_path(self, leaf_index: int) -> list[int]:
        """Node indices from the leaf's parent to the root (§4.1.2)."""
        return treemath.direct_path(treemath.leaf_to_node(leaf_index), self._n_leaves)

    # --- resolution and filtered direct path (§4.1.1, §4.1.2) -----------------------

    def resolution(self, x: int, exclude_leaves: Collection[int] = ()) -> list[int]:
        """The resolution of node ``x`` as node indices (§4.1.1).

        Args:
            x: the node index.
            exclude_leaves: leaf indices to leave out, e.g. members added in the
                same commit when encrypting an UpdatePath (§7.6).
        """
        node = self.node(x)
        if treemath.is_leaf(x):
            if node is None or treemath.node_to_leaf(x) in exclude_leaves:
                return []
            return [x]
        if node is None:
            return self.resolution(treemath.left(x), exclude_leaves) + self.resolution(
                treemath.right(x), exclude_leaves
            )
        assert isinstance(node, ParentNode)
        return [x] + [2 * leaf for leaf in node.unmerged_leaves if leaf not in exclude_leaves]

    def filtered_direct_path_with_copath(self, leaf_index: int) -> list[tuple[int, int]]:
        """``(parent, copath_child)`` for each node of the filtered direct path (§4.1.2)."""
        x = treemath.leaf_to_node(leaf_index)
        out: list[tuple[int, int]] = []
        for p in self.direct_path(leaf_index):
            s = treemath.right(p) if x < p else treemath.left(p)
            if self.resolution(s):
                out.append((p, s))
            x = p
        return out

    def filtered_direct_path(self, leaf_index: int) -> list[int]:
        """The leaf's direct path without nodes whose copath child resolves to nothing (§4.1.2)."""
        return [p for p, _ in self.filtered_direct_path_with_copath(leaf_index)]

    # --- tree hash (§7.8) -----------------------------------------------------------

    def _all_tree_hashes(self, cs: CipherSuiteImpl) -> list[bytes]:
        cached = self._hashes.get(cs.suite)
        if cached is not None:
            return cached
        out = [b""] * len(self._nodes)
        for k in range(treemath.level(self.root) + 1):
            step = 1 << (k + 1)
            for x in range((1 << k) - 1, len(self._nodes), step):
                if treemath.is_leaf(x):
                    out[x] = self._hash_node(cs, x, b"", b"", frozenset())
                else:
                    left, right = out[treemath.left(x)], out[treemath.right(x)]
                    out[x] = self._hash_node(cs, x, left, right, frozenset())
        self._hashes[cs.suite] = out
        return out

    def _hash_node(
        self, cs: CipherSuiteImpl, x: int, left: bytes, right: bytes, exclude: frozenset[int]
    ) -> bytes:
        """Hash of ``TreeHashInput`` for ``x`` given its children's hashes (§7.8)."""
        node = self._nodes[x]
        if treemath.is_leaf(x):
            leaf_index = x >> 1
            assert node is None or isinstance(node, LeafNode)
            leaf = None if leaf_index in exclude else node
            return cs.hash(TreeHashInput(LeafNodeHashInput(leaf_index, leaf)).to_bytes())
        assert node is None or isinstance(node, ParentNode)
        if node is not None and exclude:
            unmerged = tuple(i for i in node.unmerged_leaves if i not in exclude)
            node = dataclasses.replace(node, unmerged_leaves=unmerged)
        return cs.hash(TreeHashInput(ParentNodeHashInput(node, left, right)).to_bytes())

    def tree_hash(self, cs: CipherSuiteImpl, x: int | None = None) -> bytes:
        """The tree hash of node ``x``, by default of the root (§7.8)."""
        return self._all_tree_hashes(cs)[self.root if x is None else x]

    def tree_hashes(self, cs: CipherSuiteImpl) -> list[bytes]:
        """The tree hash of every node, in array order (§7.8)."""
        return list(self._all_tree_hashes(cs))

    def _tree_hash_excluding(self, cs: CipherSuiteImpl, x: int, exclude: frozenset[int]) -> bytes:
        leaves = _subtree_leaves(x)
        if not any(i in leaves for i in exclude):
            return self._all_tree_hashes(cs)[x]
        if treemath.is_leaf(x):
            return self._hash_node(cs, x, b"", b"", exclude)
        left = self._tree_hash_excluding(cs, treemath.left(x), exclude)
        right = self._tree_hash_excluding(cs, treemath.right(x), exclude)
        return self._hash_node(cs, x, left, right, exclude)

    # --- parent hash (§7.9) ---------------------------------------------------------

    def original_sibling_tree_hash(self, cs: CipherSuiteImpl, p: int, s: int) -> bytes:
        """Tree hash of ``s`` with ``p``'s unmerged leaves blanked and unlisted (§7.9)."""
        parent = self.parent_node(p)
        if parent is None:
            raise UsageError("parent hash of a blank node")
        return self._tree_hash_excluding(cs, s, frozenset(parent.unmerged_leaves))

    def parent_hash(self, cs: CipherSuiteImpl, p: int, s: int) -> bytes:
        """The parent hash of non-blank parent ``p`` with copath child ``s`` (§7.9)."""
        parent = self.parent_node(p)
        if parent is None:
            raise UsageError("parent hash of a blank node")
        data = ParentHashInput(
            parent.encryption_key,
            parent.parent_hash,
            self.original_sibling_tree_hash(cs, p, s),
        ).to_bytes()
        return cs.hash(data)

    def parent_hash_valid_children(self, cs: CipherSuiteImpl, p: int) -> list[int]:
        """The nodes D below ``p`` whose parent hash is valid with respect to ``p`` (§7.9.2).

        D qualifies when it is in the resolution of a child C of ``p``, its
        ``parent_hash`` is the parent hash of ``p`` with the other child as copath
        child, and ``p``'s unmerged leaves under C are exactly C's resolution
        without D.
        """
        parent = self.parent_node(p)
        if parent is None:
            return []
        found: list[int] = []
        for c, s in ((treemath.left(p), treemath.right(p)), (treemath.right(p), treemath.left(p))):
            expected = self.parent_hash(cs, p, s)
            res_c = self.resolution(c)
            under_c = _subtree_leaves(c)
            unmerged = {2 * i for i in parent.unmerged_leaves if i in under_c}
            for d in res_c:
                if _node_parent_hash(self._nodes[d]) == expected and set(res_c) - {d} == unmerged:
                    found.append(d)
        return found

    # --- operations (§7.7, §7.5, §12.1) --------------------------------------------

    def _with(self, changes: dict[int, Node | None]) -> RatchetTree:
        nodes = list(self._nodes)
        for x, node in changes.items():
            nodes[x] = node
        return RatchetTree(tuple(nodes))

    def extend(self) -> RatchetTree:
        """Double the leaf count: new blank root, all-blank right subtree (§7.7)."""
        return RatchetTree(self._nodes + (None,) * (len(self._nodes) + 1))

    def truncate(self) -> RatchetTree:
        """Drop the root and right subtree while that subtree has no member (§7.7, §12.1.3).

        A tree always keeps at least one leaf slot.
        """
        nodes = self._nodes
        n = self._n_leaves
        while n > 1 and all(nodes[2 * i] is None for i in range(n // 2, n)):
            n //= 2
            nodes = nodes[: treemath.node_width(n)]
        return self if n == self._n_leaves else RatchetTree(nodes)

    def blank_direct_path(self, leaf_index: int) -> RatchetTree:
        """Blank every parent on the leaf's direct path (§12.1.2, §12.1.3, §7.5)."""
        return self._with(dict.fromkeys(self.direct_path(leaf_index)))

    def with_leaf(self, leaf_index: int, leaf_node: LeafNode | None) -> RatchetTree:
        """Set (or blank) one leaf, changing nothing else.

        Raises:
            UsageError: ``leaf_index`` is outside the tree.
        """
        if not 0 <= leaf_index < self._n_leaves:
            raise UsageError("leaf index is outside the tree")
        return self._with({2 * leaf_index: leaf_node})

    def add_leaf(self, leaf_node: LeafNode) -> tuple[RatchetTree, int]:
        """Add a member (§12.1.1): leftmost blank leaf (extending if none), unmerged above.

        Returns:
            The new tree and the new member's leaf index.
        """
        tree = self
        leaf_index = tree.leftmost_blank_leaf()
        if leaf_index is None:
            leaf_index = tree._n_leaves
            tree = tree.extend()
        changes: dict[int, Node | None] = {2 * leaf_index: leaf_node}
        for p in tree.direct_path(leaf_index):
            node = tree._nodes[p]
            if isinstance(node, ParentNode):
                unmerged = tuple(sorted({*node.unmerged_leaves, leaf_index}))
                changes[p] = dataclasses.replace(node, unmerged_leaves=unmerged)
        return tree._with(changes), leaf_index

    def add_blank_leaf(self) -> tuple[RatchetTree, int]:
        """Reserve the leftmost blank leaf (extending if none) for an external joiner (§12.4)."""
        leaf_index = self.leftmost_blank_leaf()
        if leaf_index is None:
            return self.extend(), self._n_leaves
        return self, leaf_index

    def update_leaf(self, leaf_index: int, leaf_node: LeafNode) -> RatchetTree:
        """Apply an Update (§12.1.2): replace the sender's leaf, blank its direct path.

        Raises:
            ValidationError: the leaf is blank.
        """
        if self.leaf_node(leaf_index) is None:
            raise ValidationError("update of a blank leaf")
        return self.blank_direct_path(leaf_index).with_leaf(leaf_index, leaf_node)

    def remove_leaf(self, leaf_index: int) -> RatchetTree:
        """Apply a Remove (§12.1.3): blank the leaf and its direct path, then truncate.

        Raises:
            ValidationError: ``removed`` is outside the tree or a blank leaf.
        """
        if not 0 <= leaf_index < self._n_leaves or self.leaf_node(leaf_index) is None:
            raise ValidationError("remove of a blank or nonexistent leaf")
        return self.blank_direct_path(leaf_index).with_leaf(leaf_index, None).truncate()

    def merge_path(
        self,
        cs: CipherSuiteImpl,
        leaf_index: int,
        public_keys: Sequence[HPKEPublicKeyBytes],
    ) -> tuple[RatchetTree, bytes]:
        """Put new path keys on a leaf's filtered direct path (§7.5, §7.9).

        Blanks the direct path, sets each filtered-direct-path node to its new key
        with no unmerged leaves, and computes the parent hashes root to leaf. The
        leaf itself is not touched: the committer signs a new leaf carrying the
        returned parent hash, a receiver checks the UpdatePath's leaf against it.

        Args:
            cs: the group's cipher suite.
            leaf_index: the committer's leaf.
            public_keys: one key per filtered-direct-path node, leaf to root.

        Returns:
            The new tree (old leaf still in place) and the parent hash the
            committer's new leaf must carry (empty for a one-leaf tree).

        Raises:
            ValidationError: the number of keys is not the filtered direct path's length.
        """
        fdp = self.filtered_direct_path_with_copath(leaf_index)
        if len(public_keys) != len(fdp):
            raise ValidationError("update path length does not match the filtered direct path")
        # Copath subtrees are untouched by the merge, so their tree hashes can come
        # from this tree's cache.
        sibling_hashes = [self.tree_hash(cs, s) for _, s in fdp]
        changes: dict[int, Node | None] = dict.fromkeys(self.direct_path(leaf_index))
        parent_hash = b""
        for (p, _), key, sibling_hash in reversed(
            list(zip(fdp, public_keys, sibling_hashes, strict=True))
        ):
            changes[p] = ParentNode(key, parent_hash, ())
            parent_hash = cs.hash(ParentHashInput(key, parent_hash, sibling_hash).to_bytes())
        return self._with(changes), parent_hash

    def encryption_keys(self) -> Iterator[tuple[int, HPKEPublicKeyBytes]]:
        """``(node_index, encryption_key)`` for every non-blank node."""
        for x, node in enumerate(self._nodes):
            if node is not None:
                yield x, node.encryption_key


def _node_parent_hash(node: Node | None) -> bytes | None:
    if isinstance(node, ParentNode):
        return node.parent_hash
    if isinstance(node, LeafNode) and node.leaf_node_source is LeafNodeSource.COMMIT:
        return node.parent_hash
    return None
