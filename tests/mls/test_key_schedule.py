"""Key-schedule vectors (RFC 9420 §8) and key-schedule properties.

Schema of ``key-schedule.json`` (one object per cipher suite)::

    {
      "cipher_suite": uint16,
      "group_id": hex,
      "initial_init_secret": hex,
      "epochs": [
        {
          "tree_hash": hex, "commit_secret": hex, "psk_secret": hex,
          "confirmed_transcript_hash": hex,
          "group_context": hex,
          "joiner_secret": hex, "welcome_secret": hex, "init_secret": hex,
          "sender_data_secret": hex, "encryption_secret": hex, "exporter_secret": hex,
          "epoch_authenticator": hex, "external_secret": hex, "confirmation_key": hex,
          "membership_key": hex, "resumption_psk": hex,
          "external_pub": hex,
          "exporter": {"label": str (used as text), "context": hex, "length": uint32, "secret": hex}
        },
        ...
      ]
    }
"""

from __future__ import annotations

from typing import Any

import pytest

from backchannel.mls.crypto.suites import CipherSuite, get_cipher_suite
from backchannel.mls.errors import VerificationError
from backchannel.mls.key_schedule import (
    EpochSecrets,
    external_init_decap,
    external_init_encap,
    welcome_secret,
    zero_secret,
)
from backchannel.mls.messages import GroupContext
from tests.vectors import load_vectors

VECTORS = [pytest.param(v, id=f"suite={v['cipher_suite']}") for v in load_vectors("key-schedule")]

SECRET_FIELDS = (
    "joiner_secret",
    "welcome_secret",
    "init_secret",
    "sender_data_secret",
    "encryption_secret",
    "exporter_secret",
    "epoch_authenticator",
    "external_secret",
    "confirmation_key",
    "membership_key",
    "resumption_psk",
)


def h(value: str) -> bytes:
    return bytes.fromhex(value)


@pytest.mark.parametrize("vector", VECTORS)
def test_key_schedule(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    group_id = h(vector["group_id"])
    init_secret = h(vector["initial_init_secret"])
    for epoch, ep in enumerate(vector["epochs"]):
        context = GroupContext(
            1,
            vector["cipher_suite"],
            group_id,
            epoch,
            h(ep["tree_hash"]),
            h(ep["confirmed_transcript_hash"]),
            (),
        ).to_bytes()
        assert context == h(ep["group_context"]), f"epoch {epoch}"
        secrets = EpochSecrets.derive(
            cs, init_secret, h(ep["commit_secret"]), h(ep["psk_secret"]), context
        )
        for name in SECRET_FIELDS:
            assert getattr(secrets, name) == h(ep[name]), f"epoch {epoch}: {name}"
        assert welcome_secret(cs, secrets.joiner_secret, h(ep["psk_secret"])) == h(
            ep["welcome_secret"]
        )
        assert secrets.external_key_pair().public_key().to_bytes() == h(ep["external_pub"])
        exp = ep["exporter"]
        out = secrets.exporter(exp["label"], h(exp["context"]), exp["length"])
        assert out == h(exp["secret"]), f"epoch {epoch}: exporter"
        init_secret = secrets.init_secret


def test_absent_commit_and_psk_secrets_are_zero() -> None:
    cs = get_cipher_suite(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)
    zero = zero_secret(cs)
    assert zero == bytes(32)
    a = EpochSecrets.derive(cs, b"i" * 32, None, None, b"ctx")
    b = EpochSecrets.derive(cs, b"i" * 32, zero, zero, b"ctx")
    assert a.epoch_secret == b.epoch_secret
    assert EpochSecrets.derive(cs, b"i" * 32, None, None, b"ctx2").epoch_secret != a.epoch_secret


def test_repr_hides_secrets() -> None:
    cs = get_cipher_suite(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)
    secrets = EpochSecrets.derive(cs, b"i" * 32, None, None, b"ctx")
    text = repr(secrets)
    for name in SECRET_FIELDS:
        assert getattr(secrets, name).hex() not in text
        assert repr(getattr(secrets, name)) not in text


@pytest.mark.parametrize(
    "suite", list(CipherSuite), ids=lambda s: f"suite={s.value:#x}" if s > 7 else f"suite={s.value}"
)
def test_external_init_round_trip(suite: CipherSuite) -> None:
    cs = get_cipher_suite(suite)
    secrets = EpochSecrets.derive(cs, b"i" * cs.n_h, None, None, b"ctx")
    external_priv = secrets.external_key_pair()
    kem_output, init_secret = external_init_encap(cs, external_priv.public_key())
    assert len(init_secret) == cs.n_h
    assert external_init_decap(cs, external_priv, kem_output) == init_secret
    with pytest.raises(VerificationError):
        external_init_decap(cs, external_priv, kem_output[:-1])


def test_confirmation_tag() -> None:
    cs = get_cipher_suite(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)
    secrets = EpochSecrets.derive(cs, b"i" * 32, None, None, b"ctx")
    tag = secrets.confirmation_tag(b"hash")
    secrets.verify_confirmation_tag(b"hash", tag)
    with pytest.raises(VerificationError):
        secrets.verify_confirmation_tag(b"hash", bytes(len(tag)))
    key, nonce = secrets.welcome_key_nonce()
    assert (len(key), len(nonce)) == (cs.n_k, cs.n_n)
