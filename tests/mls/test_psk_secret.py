"""PSK-secret vectors (RFC 9420 §8.4).

Schema of ``psk_secret.json`` (several objects per cipher suite, 0..n PSKs each)::

    {
      "cipher_suite": uint16,
      "psks": [{"psk_id": hex, "psk": hex, "psk_nonce": hex}, ...],
      "psk_secret": hex
    }

Each PSK is an external one: ``PreSharedKeyID{psktype=external, psk_id, psk_nonce}``.
"""

from __future__ import annotations

from typing import Any

import pytest

from backchannel.mls.crypto.suites import CipherSuite, get_cipher_suite
from backchannel.mls.errors import ValidationError
from backchannel.mls.messages import PreSharedKeyID, ResumptionPSKUsage
from backchannel.mls.psk import check_psk_nonce, psk_secret
from tests.vectors import load_vectors


def _params() -> list[Any]:
    params = []
    seen: dict[tuple[int, int], int] = {}
    for v in load_vectors("psk_secret"):
        key = (v["cipher_suite"], len(v["psks"]))
        seen[key] = seen.get(key, 0) + 1
        ident = f"suite={key[0]}-psks={key[1]}-{seen[key]}"
        params.append(pytest.param(v, id=ident))
    return params


def h(value: str) -> bytes:
    return bytes.fromhex(value)


@pytest.mark.parametrize("vector", _params())
def test_psk_secret(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    psks = [
        (PreSharedKeyID.external(h(p["psk_id"]), h(p["psk_nonce"])), h(p["psk"]))
        for p in vector["psks"]
    ]
    assert psk_secret(cs, psks) == h(vector["psk_secret"])


def test_order_matters_and_resumption_ids_work() -> None:
    cs = get_cipher_suite(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)
    a = (PreSharedKeyID.external(b"a", bytes(32)), b"psk-a")
    b = (
        PreSharedKeyID.resumption(ResumptionPSKUsage.APPLICATION, b"group", 7, bytes(32)),
        b"psk-b",
    )
    assert psk_secret(cs, [a, b]) != psk_secret(cs, [b, a])
    assert psk_secret(cs, []) == bytes(32)


def test_nonce_length() -> None:
    cs = get_cipher_suite(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)
    check_psk_nonce(cs, PreSharedKeyID.external(b"a", bytes(32)))
    with pytest.raises(ValidationError):
        check_psk_nonce(cs, PreSharedKeyID.external(b"a", bytes(31)))
