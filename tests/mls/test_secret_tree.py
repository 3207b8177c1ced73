"""Secret-tree vectors (RFC 9420 §9, §6.3.2) and ratchet behaviour: out-of-order, reuse, deletion.

Schema of ``secret-tree.json`` (per cipher suite, trees of 1, 8 and 32 leaves)::

    {
      "cipher_suite": uint16,
      "sender_data": {"sender_data_secret": hex, "ciphertext": hex,
                      "key": hex, "nonce": hex},
      "encryption_secret": hex,
      "leaves": [            # one list per leaf index
        [{"generation": uint32,
          "handshake_key": hex, "handshake_nonce": hex,
          "application_key": hex, "application_nonce": hex}, ...],
        ...
      ]
    }
"""

from __future__ import annotations

from typing import Any

import pytest

from backchannel.mls.crypto.suites import CipherSuite, get_cipher_suite
from backchannel.mls.errors import ValidationError
from backchannel.mls.secret_tree import (
    RatchetType,
    SecretTree,
    SenderRatchetConfiguration,
    sender_data_key_nonce,
)
from tests.vectors import load_vectors

VECTORS = [
    pytest.param(v, id=f"suite={v['cipher_suite']}-leaves={len(v['leaves'])}")
    for v in load_vectors("secret-tree")
]
SUITE = get_cipher_suite(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)


def h(value: str) -> bytes:
    return bytes.fromhex(value)


@pytest.mark.parametrize("vector", VECTORS)
def test_sender_data(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    sd = vector["sender_data"]
    key, nonce = sender_data_key_nonce(cs, h(sd["sender_data_secret"]), h(sd["ciphertext"]))
    assert (key, nonce) == (h(sd["key"]), h(sd["nonce"]))


@pytest.mark.parametrize("vector", VECTORS)
def test_secret_tree(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    leaves = vector["leaves"]
    peeking = SecretTree(cs, h(vector["encryption_secret"]), len(leaves))
    consuming = SecretTree(cs, h(vector["encryption_secret"]), len(leaves))
    for leaf, entries in enumerate(leaves):
        for entry in entries:
            generation = entry["generation"]
            for kind, prefix in (
                (RatchetType.HANDSHAKE, "handshake"),
                (RatchetType.APPLICATION, "application"),
            ):
                expected = (h(entry[f"{prefix}_key"]), h(entry[f"{prefix}_nonce"]))
                got = peeking.get(leaf, kind, generation)
                assert (got.key, got.nonce) == expected, f"leaf {leaf} gen {generation} {prefix}"
                used = consuming.consume(leaf, kind, generation)
                assert (used.key, used.nonce) == expected


def test_get_does_not_mutate_and_consume_deletes() -> None:
    tree = SecretTree(SUITE, b"s" * 32, 4)
    first = tree.get(2, RatchetType.APPLICATION, 3)
    assert tree.get(2, RatchetType.APPLICATION, 3) == first
    assert tree.consume(2, RatchetType.APPLICATION, 3) == first
    with pytest.raises(ValidationError):
        tree.consume(2, RatchetType.APPLICATION, 3)
    with pytest.raises(ValidationError):
        tree.get(2, RatchetType.APPLICATION, 3)


def test_out_of_order_within_window() -> None:
    config = SenderRatchetConfiguration(out_of_order_tolerance=3, maximum_forward_distance=10)
    tree = SecretTree(SUITE, b"s" * 32, 2, config)
    expected = {g: tree.get(1, RatchetType.APPLICATION, g) for g in range(8)}
    assert tree.consume(1, RatchetType.APPLICATION, 5) == expected[5]
    # 2, 3 and 4 are within the window of 3 behind 5; 0 and 1 are not.
    assert tree.consume(1, RatchetType.APPLICATION, 3) == expected[3]
    assert tree.consume(1, RatchetType.APPLICATION, 2) == expected[2]
    for gone in (0, 1, 2, 3, 5):
        with pytest.raises(ValidationError):
            tree.consume(1, RatchetType.APPLICATION, gone)
    assert tree.consume(1, RatchetType.APPLICATION, 4) == expected[4]
    assert tree.consume(1, RatchetType.APPLICATION, 6) == expected[6]


def test_maximum_forward_distance() -> None:
    config = SenderRatchetConfiguration(maximum_forward_distance=10)
    tree = SecretTree(SUITE, b"s" * 32, 2, config)
    tree.consume(0, RatchetType.HANDSHAKE, 10)
    with pytest.raises(ValidationError):
        tree.get(0, RatchetType.HANDSHAKE, 22)
    tree.consume(0, RatchetType.HANDSHAKE, 21)


def test_sending_and_receiving_agree_and_ratchets_are_independent() -> None:
    sender = SecretTree(SUITE, b"s" * 32, 8)
    receiver = SecretTree(SUITE, b"s" * 32, 8)
    sent = [sender.next(5, RatchetType.APPLICATION) for _ in range(3)]
    assert [k.generation for k in sent] == [0, 1, 2]
    for key in reversed(sent):
        assert receiver.consume(5, RatchetType.APPLICATION, key.generation) == key
    handshake = sender.next(5, RatchetType.HANDSHAKE)
    assert handshake.generation == 0 and handshake.key != sent[0].key
    assert sender.next(4, RatchetType.APPLICATION).key != sent[0].key


def test_bad_leaf_and_generation() -> None:
    tree = SecretTree(SUITE, b"s" * 32, 4)
    for leaf in (-1, 4):
        with pytest.raises(ValidationError):
            tree.get(leaf, RatchetType.APPLICATION, 0)
    with pytest.raises(ValidationError):
        tree.get(0, RatchetType.APPLICATION, -1)
    with pytest.raises(ValidationError):
        tree.get(0, RatchetType.APPLICATION, 1 << 32)


def test_single_leaf_tree_and_repr() -> None:
    tree = SecretTree(SUITE, b"s" * 32, 1)
    key = tree.next(0, RatchetType.APPLICATION)
    assert key.key.hex() not in repr(key)
    assert "s" * 8 not in repr(tree)


def test_sender_data_short_ciphertext_uses_all_of_it() -> None:
    short = sender_data_key_nonce(SUITE, b"k" * 32, b"abc")
    assert short == sender_data_key_nonce(SUITE, b"k" * 32, b"abc")
    assert short != sender_data_key_nonce(SUITE, b"k" * 32, b"abcd")
    assert sender_data_key_nonce(SUITE, b"k" * 32, b"a" * 32 + b"x") == sender_data_key_nonce(
        SUITE, b"k" * 32, b"a" * 32 + b"y"
    )


def test_node_secrets_are_deleted_once_used() -> None:
    """§9.2: after every leaf's ratchets exist, no tree-node secret is left."""
    tree = SecretTree(SUITE, b"s" * 32, 8)
    tree.get(3, RatchetType.HANDSHAKE, 0)
    assert len(tree._nodes) == 1  # get() derives without storing or deleting
    tree.next(3, RatchetType.HANDSHAKE)
    assert 6 not in tree._nodes  # leaf 3 is node 6
    for leaf in range(8):
        tree.ratchet(leaf, RatchetType.APPLICATION)
    assert tree._nodes == {}
