"""Tree math against RFC 9420 Appendix C and the tree-math.json vectors.

Vector schema (tree-math.json), one object per tree size::

    {
      "n_leaves": uint32,
      "n_nodes": uint32,
      "root": uint32,
      "left":    [optional<uint32>],   # per node index; null for leaves
      "right":   [optional<uint32>],   # null for leaves
      "parent":  [optional<uint32>],   # null for the root
      "sibling": [optional<uint32>]    # null for the root
    }
"""

from __future__ import annotations

from typing import Any

import pytest

from backchannel.mls import treemath
from backchannel.mls.errors import UsageError
from tests.vectors import load_vectors

VECTORS = load_vectors("tree-math")


def _or_none(fn: Any, *args: int) -> int | None:
    try:
        result: int = fn(*args)
    except UsageError:
        return None
    return result


@pytest.mark.parametrize(
    "vector", [pytest.param(v, id=f"n_leaves={v['n_leaves']}") for v in VECTORS]
)
def test_tree_math_vector(vector: dict[str, Any]) -> None:
    n = vector["n_leaves"]
    assert treemath.node_width(n) == vector["n_nodes"]
    assert treemath.root(n) == vector["root"]
    for x in range(vector["n_nodes"]):
        assert _or_none(treemath.left, x) == vector["left"][x]
        assert _or_none(treemath.right, x) == vector["right"][x]
        assert _or_none(treemath.parent, x, n) == vector["parent"][x]
        assert _or_none(treemath.sibling, x, n) == vector["sibling"][x]


def _naive_ancestors(x: int, n: int) -> list[int]:
    return [x, *treemath.direct_path(x, n)]


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32])
def test_paths_and_common_ancestor(n: int) -> None:
    width = treemath.node_width(n)
    r = treemath.root(n)
    for x in range(width):
        dp = treemath.direct_path(x, n)
        cp = treemath.copath(x, n)
        assert len(dp) == len(cp)
        assert (dp[-1] if dp else x) == r
        assert [treemath.level(p) for p in dp] == sorted(treemath.level(p) for p in dp)
        for a, s in zip([x, *dp][:-1], cp, strict=True):
            assert treemath.sibling(a, n) == s
        for y in range(width):
            ancestors_y = set(_naive_ancestors(y, n))
            common = [a for a in _naive_ancestors(x, n) if a in ancestors_y]
            assert treemath.common_ancestor(x, y) == min(common, key=treemath.level)


def test_examples_from_rfc() -> None:
    # RFC 9420 §4.1.2 (eight-leaf figure): leaf A (node 0) has direct path 1, 3, 7.
    assert treemath.direct_path(0, 8) == [1, 3, 7]
    assert treemath.copath(0, 8) == [2, 5, 11]
    assert treemath.direct_path(7, 8) == []
    assert treemath.level(7) == 3
    assert treemath.log2(0) == 0
    assert treemath.log2(9) == 3
    assert treemath.leaf_to_node(3) == 6
    assert treemath.node_to_leaf(6) == 3
    assert treemath.is_leaf(4)
    assert not treemath.is_leaf(5)
    assert treemath.node_width(0) == 0


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        (treemath.left, (0,)),
        (treemath.right, (2,)),
        (treemath.parent, (3, 4)),
        (treemath.sibling, (3, 4)),
        (treemath.parent, (7, 4)),
        (treemath.parent, (0, 3)),
        (treemath.root, (0,)),
        (treemath.root, (6,)),
        (treemath.direct_path, (-1, 4)),
        (treemath.level, (-2,)),
        (treemath.node_to_leaf, (1,)),
        (treemath.leaf_to_node, (-1,)),
        (treemath.node_width, (-1,)),
        (treemath.log2, (-1,)),
        (treemath.copath, (9, 4)),
    ],
    ids=lambda v: getattr(v, "__name__", repr(v)),
)
def test_invalid_input_is_usage_error(fn: Any, args: tuple[int, ...]) -> None:
    with pytest.raises(UsageError):
        fn(*args)
