"""Array-based tree index arithmetic for MLS ratchet trees, pure ints (RFC 9420 Appendix C).

Every ratchet tree is a perfect binary tree with ``n_leaves = 2**d`` leaves (§4.1)
stored as an array of ``2 * n_leaves - 1`` nodes: leaf ``i`` sits at node index
``2 * i`` and parents at odd indices. Functions that take ``n_leaves`` check that it
is a positive power of two and that node indices lie inside the tree, raising
:class:`~backchannel.mls.errors.UsageError` otherwise (a caller bug, never a peer's).
"""

from __future__ import annotations

from .errors import UsageError

__all__ = [
    "common_ancestor",
    "copath",
    "direct_path",
    "is_leaf",
    "leaf_to_node",
    "left",
    "level",
    "log2",
    "node_to_leaf",
    "node_width",
    "parent",
    "right",
    "root",
    "sibling",
]


def _check_index(x: int) -> None:
    if x < 0:
        raise UsageError("node index must not be negative")


def _check_leaves(n_leaves: int) -> None:
    if n_leaves < 1 or n_leaves & (n_leaves - 1):
        raise UsageError("n_leaves must be a positive power of two")


def _check_in_tree(x: int, n_leaves: int) -> None:
    _check_index(x)
    _check_leaves(n_leaves)
    if x >= node_width(n_leaves):
        raise UsageError("node index is outside the tree")


def log2(x: int) -> int:
    """The exponent of the largest power of 2 not above ``x`` (0 for ``x == 0``)."""
    if x < 0:
        raise UsageError("log2 of a negative number")
    return max(x.bit_length() - 1, 0)


def level(x: int) -> int:
    """The level of node ``x``: 0 for leaves, one more than its children otherwise.

    Equals the number of trailing one bits of ``x`` (Appendix C).
    """
    _check_index(x)
    return ((x ^ (x + 1)).bit_length()) - 1


def is_leaf(x: int) -> bool:
    """True when node index ``x`` is a leaf (even index)."""
    _check_index(x)
    return x & 1 == 0


def leaf_to_node(leaf_index: int) -> int:
    """Node index of leaf number ``leaf_index`` (§4.1.1: leaf ``i`` is node ``2i``)."""
    if leaf_index < 0:
        raise UsageError("leaf index must not be negative")
    return 2 * leaf_index


def node_to_leaf(x: int) -> int:
    """Leaf number of node index ``x``, which must be a leaf."""
    if not is_leaf(x):
        raise UsageError("node is not a leaf")
    return x >> 1


def node_width(n_leaves: int) -> int:
    """Number of array slots for a tree with ``n_leaves`` leaves: ``2n - 1`` (0 if empty)."""
    if n_leaves < 0:
        raise UsageError("n_leaves must not be negative")
    return 0 if n_leaves == 0 else 2 * (n_leaves - 1) + 1


def root(n_leaves: int) -> int:
    """Index of the root node of a tree with ``n_leaves`` leaves."""
    _check_leaves(n_leaves)
    return (1 << log2(node_width(n_leaves))) - 1


def left(x: int) -> int:
    """Left child of parent node ``x``.

    Raises:
        UsageError: ``x`` is a leaf.
    """
    k = level(x)
    if k == 0:
        raise UsageError("leaf node has no children")
    return x ^ (0x01 << (k - 1))


def right(x: int) -> int:
    """Right child of parent node ``x``.

    Raises:
        UsageError: ``x`` is a leaf.
    """
    k = level(x)
    if k == 0:
        raise UsageError("leaf node has no children")
    return x ^ (0x03 << (k - 1))


def parent(x: int, n_leaves: int) -> int:
    """Parent of node ``x`` in a tree with ``n_leaves`` leaves.

    Raises:
        UsageError: ``x`` is the root or outside the tree.
    """
    _check_in_tree(x, n_leaves)
    if x == root(n_leaves):
        raise UsageError("root node has no parent")
    k = level(x)
    b = (x >> (k + 1)) & 0x01
    return (x | (1 << k)) ^ (b << (k + 1))


def sibling(x: int, n_leaves: int) -> int:
    """The other child of ``x``'s parent.

    Raises:
        UsageError: ``x`` is the root or outside the tree.
    """
    p = parent(x, n_leaves)
    return right(p) if x < p else left(p)


def direct_path(x: int, n_leaves: int) -> list[int]:
    """Ancestors of ``x`` from its parent up to and including the root (§4.1.2)."""
    _check_in_tree(x, n_leaves)
    r = root(n_leaves)
    path: list[int] = []
    while x != r:
        x = parent(x, n_leaves)
        path.append(x)
    return path


def copath(x: int, n_leaves: int) -> list[int]:
    """Siblings of ``x`` and of its ancestors below the root, leaf to root (§4.1.2)."""
    _check_in_tree(x, n_leaves)
    path = [x, *direct_path(x, n_leaves)]
    path.pop()
    return [sibling(y, n_leaves) for y in path]


def common_ancestor(x: int, y: int) -> int:
    """The lowest node whose subtree contains both ``x`` and ``y`` (Appendix C).

    If one node is an ancestor of the other, that node is returned.
    """
    _check_index(x)
    _check_index(y)
    lx, ly = level(x) + 1, level(y) + 1
    if lx <= ly and x >> ly == y >> ly:
        return y
    if ly <= lx and x >> lx == y >> lx:
        return x
    xn, yn, k = x, y, 0
    while xn != yn:
        xn, yn = xn >> 1, yn >> 1
        k += 1
    return (xn << k) + (1 << (k - 1)) - 1
