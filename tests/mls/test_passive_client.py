"""Passive-client vectors: join by Welcome, follow every commit, compare epoch authenticators.

One test case per entry of passive-client-welcome.json, passive-client-handling-commit.json
and passive-client-random.json (all seven suites). The client is a real :class:`Group`:
proposals go through ``process`` (by-reference proposals), commits are staged and merged.
"""

from __future__ import annotations

from typing import Any

import pytest

from backchannel.mls.crypto.hpke import HPKEPrivateKey
from backchannel.mls.crypto.signatures import SignaturePrivateKey
from backchannel.mls.crypto.suites import get_cipher_suite
from backchannel.mls.events import ProposalReceived, StagedCommit
from backchannel.mls.framing import MLSMessage
from backchannel.mls.group import Group
from backchannel.mls.key_package_ops import KeyPackageBundle, KeyPackageIn
from backchannel.mls.key_packages import KeyPackage
from tests.vectors import load_vectors


def _params(name: str) -> list[Any]:
    return [
        pytest.param(v, id=f"suite={v['cipher_suite']}-case={i}")
        for i, v in enumerate(load_vectors(name))
    ]


def _bundle(vector: dict[str, Any]) -> KeyPackageBundle:
    cs = get_cipher_suite(vector["cipher_suite"])
    msg = MLSMessage.from_bytes(bytes.fromhex(vector["key_package"]))
    assert isinstance(msg.body, KeyPackage)
    verified = KeyPackageIn(msg.body).verify(cs, None)
    init_priv = HPKEPrivateKey.from_bytes(cs.kem_id, bytes.fromhex(vector["init_priv"]))
    enc_priv = HPKEPrivateKey.from_bytes(cs.kem_id, bytes.fromhex(vector["encryption_priv"]))
    sig_priv = SignaturePrivateKey.from_bytes(
        cs.signature_scheme, bytes.fromhex(vector["signature_priv"])
    )
    # The private keys must match the KeyPackage's public keys.
    assert init_priv.public_key().to_bytes() == verified.init_key
    assert enc_priv.public_key().to_bytes() == verified.leaf_node.encryption_key
    assert sig_priv.public_key().to_bytes() == verified.leaf_node.signature_key
    return KeyPackageBundle(verified, init_priv, enc_priv, sig_priv)


def run_passive_client(vector: dict[str, Any]) -> None:
    psks = {bytes.fromhex(p["psk_id"]): bytes.fromhex(p["psk"]) for p in vector["external_psks"]}
    tree = bytes.fromhex(vector["ratchet_tree"]) if vector["ratchet_tree"] else None
    group = Group.join(
        bytes.fromhex(vector["welcome"]), _bundle(vector), ratchet_tree=tree, psks=psks
    )
    assert group.epoch_authenticator.hex() == vector["initial_epoch_authenticator"]
    for epoch in vector["epochs"]:
        for proposal in epoch["proposals"]:
            assert isinstance(group.process(bytes.fromhex(proposal)), ProposalReceived)
        staged = group.process(bytes.fromhex(epoch["commit"]))
        assert isinstance(staged, StagedCommit)
        group.merge_staged_commit(staged)
        assert group.epoch_authenticator.hex() == epoch["epoch_authenticator"]
    restored = Group.from_bytes(group.to_bytes())
    assert restored.epoch_authenticator == group.epoch_authenticator


@pytest.mark.parametrize("vector", _params("passive-client-welcome"))
def test_passive_client_welcome(vector: dict[str, Any]) -> None:
    run_passive_client(vector)


@pytest.mark.parametrize("vector", _params("passive-client-handling-commit"))
def test_passive_client_handling_commit(vector: dict[str, Any]) -> None:
    run_passive_client(vector)


@pytest.mark.parametrize("vector", _params("passive-client-random"))
def test_passive_client_random(vector: dict[str, Any]) -> None:
    run_passive_client(vector)
