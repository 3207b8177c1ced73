"""Crypto-basics vectors: RefHash and the labeled KDF, signature and HPKE helpers (RFC 9420 §5).

Schema of ``crypto-basics.json`` (one object per cipher suite)::

    {
      "cipher_suite": uint16,
      "ref_hash": {"label": str, "value": hex, "out": hex},
      "expand_with_label": {"secret": hex, "label": str, "context": hex,
                            "length": uint16, "out": hex},
      "derive_secret": {"secret": hex, "label": str, "out": hex},
      "derive_tree_secret": {"secret": hex, "label": str, "generation": uint32,
                             "length": uint16, "out": hex},
      "sign_with_label": {"priv": hex, "pub": hex, "content": hex, "label": str,
                          "signature": hex},
      "encrypt_with_label": {"priv": hex, "pub": hex, "label": str, "context": hex,
                             "plaintext": hex, "kem_output": hex, "ciphertext": hex}
    }
"""

from __future__ import annotations

from typing import Any

import pytest

from backchannel.mls.crypto.hpke import HPKEPrivateKey
from backchannel.mls.crypto.labels import (
    decrypt_with_label,
    derive_secret,
    derive_tree_secret,
    encrypt_with_label,
    expand_with_label,
    ref_hash,
    sign_with_label,
    verify_with_label,
)
from backchannel.mls.crypto.signatures import SignaturePrivateKey, SignaturePublicKey
from backchannel.mls.crypto.suites import get_cipher_suite
from backchannel.mls.errors import VerificationError
from tests.vectors import load_vectors

VECTORS = [pytest.param(v, id=f"suite={v['cipher_suite']}") for v in load_vectors("crypto-basics")]


def h(value: str) -> bytes:
    return bytes.fromhex(value)


@pytest.mark.parametrize("vector", VECTORS)
def test_ref_hash(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    v = vector["ref_hash"]
    assert ref_hash(cs, v["label"], h(v["value"])) == h(v["out"])


@pytest.mark.parametrize("vector", VECTORS)
def test_expand_with_label(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    v = vector["expand_with_label"]
    out = expand_with_label(cs, h(v["secret"]), v["label"], h(v["context"]), v["length"])
    assert out == h(v["out"])


@pytest.mark.parametrize("vector", VECTORS)
def test_derive_secret(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    v = vector["derive_secret"]
    assert derive_secret(cs, h(v["secret"]), v["label"]) == h(v["out"])


@pytest.mark.parametrize("vector", VECTORS)
def test_derive_tree_secret(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    v = vector["derive_tree_secret"]
    out = derive_tree_secret(cs, h(v["secret"]), v["label"], v["generation"], v["length"])
    assert out == h(v["out"])


@pytest.mark.parametrize("vector", VECTORS)
def test_sign_with_label(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    v = vector["sign_with_label"]
    priv = SignaturePrivateKey.from_bytes(cs.signature_scheme, h(v["priv"]))
    pub = SignaturePublicKey.from_bytes(cs.signature_scheme, h(v["pub"]))
    assert priv.public_key().to_bytes() == h(v["pub"])
    assert priv.to_bytes() == h(v["priv"])
    content = h(v["content"])
    verify_with_label(cs, pub, v["label"], content, h(v["signature"]))
    verify_with_label(cs, h(v["pub"]), v["label"], content, h(v["signature"]))
    verify_with_label(cs, pub, v["label"], content, sign_with_label(cs, priv, v["label"], content))
    with pytest.raises(VerificationError):
        verify_with_label(cs, pub, v["label"] + "x", content, h(v["signature"]))
    with pytest.raises(VerificationError):
        verify_with_label(cs, pub, v["label"], content + b"x", h(v["signature"]))


@pytest.mark.parametrize("vector", VECTORS)
def test_encrypt_with_label(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    v = vector["encrypt_with_label"]
    priv = HPKEPrivateKey.from_bytes(cs.kem_id, h(v["priv"]))
    assert priv.public_key().to_bytes() == h(v["pub"])
    label, context = v["label"], h(v["context"])
    plaintext = decrypt_with_label(cs, priv, label, context, h(v["kem_output"]), h(v["ciphertext"]))
    assert plaintext == h(v["plaintext"])
    kem_output, ciphertext = encrypt_with_label(cs, h(v["pub"]), label, context, plaintext)
    assert decrypt_with_label(cs, priv, label, context, kem_output, ciphertext) == plaintext
    with pytest.raises(VerificationError):
        decrypt_with_label(cs, priv, label, context + b"x", kem_output, ciphertext)
