"""Property tests: random Add/Remove/Update/Commit sequences keep every tree invariant.

After each step the tree must validate as a joiner would check it (§12.4.3.1: tree
hash, parent hashes, leaf signatures, unmerged leaves, unique keys), be truncated
(§7.7), round-trip through the ``ratchet_tree`` encoding, and every member's private
keys must match the public tree and sit only on its own direct path (§4.2). Commits
check that all members derive the same commit secret.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backchannel.mls.crypto.suites import CipherSuite
from backchannel.mls.tree import RatchetTree
from tests.mls.tree_harness import TreeHarness

SUITE = CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519

OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "update", "commit", "commit_add"]), st.integers(0, 10**6)
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_random_operations_keep_invariants(ops: list[tuple[str, int]]) -> None:
    h = TreeHarness(SUITE)
    h.check()
    for op, pick in ops:
        members = sorted(h.members)
        chosen = members[pick % len(members)]
        if op == "add":
            h.add()
        elif op == "remove":
            if len(members) == 1:
                continue
            h.remove(chosen)
        elif op == "update":
            h.update(chosen)
        elif op == "commit":
            h.commit(chosen)
        else:
            h.commit(chosen, adds=1 + pick % 3)
        h.check()
    # Whatever happened, one more commit by anyone re-keys everything consistently.
    h.commit(sorted(h.members)[0])
    h.check()


@settings(max_examples=20, deadline=None)
@given(ops=OPS)
def test_tree_hash_is_a_function_of_the_nodes(ops: list[tuple[str, int]]) -> None:
    h = TreeHarness(SUITE)
    for op, pick in ops:
        members = sorted(h.members)
        if op in ("add", "commit_add"):
            h.add()
        elif op == "remove" and len(members) > 1:
            h.remove(members[pick % len(members)])
        else:
            h.update(members[pick % len(members)])
    copy = RatchetTree.from_bytes(h.tree.to_bytes())
    assert copy.tree_hash(h.cs) == h.tree.tree_hash(h.cs)
    assert copy.tree_hashes(h.cs) == h.tree.tree_hashes(h.cs)
