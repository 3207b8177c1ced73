"""welcome.json (RFC 9420 §12.4.3.1): open each Welcome, verify its GroupInfo and confirmation tag."""

from __future__ import annotations

from typing import Any

import pytest

from backchannel.mls.crypto.hpke import HPKEPrivateKey
from backchannel.mls.crypto.suites import get_cipher_suite
from backchannel.mls.errors import ValidationError, VerificationError
from backchannel.mls.framing import MLSMessage
from backchannel.mls.key_package_ops import key_package_ref
from backchannel.mls.key_packages import KeyPackage
from backchannel.mls.messages import PreSharedKeyID, Welcome
from backchannel.mls.welcome import decrypt_welcome, verify_group_info_signature
from tests.vectors import load_vectors

VECTORS = [
    pytest.param(v, id=f"suite={v['cipher_suite']}-case={i}")
    for i, v in enumerate(load_vectors("welcome"))
]


def _no_psk(psk_id: PreSharedKeyID) -> bytes:
    raise ValidationError("no PSKs in this vector")


def _open(vector: dict[str, Any]) -> tuple[Any, Any, Welcome, Any]:
    cs = get_cipher_suite(vector["cipher_suite"])
    kp_msg = MLSMessage.from_bytes(bytes.fromhex(vector["key_package"]))
    assert isinstance(kp_msg.body, KeyPackage)
    # The procedure does not validate the KeyPackage (the suite-7 one does not even
    # list suite 7 in its capabilities); only its reference is needed.
    reference = key_package_ref(kp_msg.body, cs)
    welcome_msg = MLSMessage.from_bytes(bytes.fromhex(vector["welcome"]))
    assert isinstance(welcome_msg.body, Welcome)
    init_priv = HPKEPrivateKey.from_bytes(cs.kem_id, bytes.fromhex(vector["init_priv"]))
    return cs, reference, welcome_msg.body, init_priv


@pytest.mark.parametrize("vector", VECTORS)
def test_welcome_vector(vector: dict[str, Any]) -> None:
    cs, reference, welcome, init_priv = _open(vector)
    opened = decrypt_welcome(welcome, reference, init_priv, _no_psk)
    verify_group_info_signature(cs, opened.group_info, bytes.fromhex(vector["signer_pub"]))
    secrets = opened.epoch_secrets(cs)  # checks the confirmation tag
    context = opened.group_info.group_context
    assert secrets.confirmation_tag(context.confirmed_transcript_hash) == (
        opened.group_info.confirmation_tag
    )


@pytest.mark.parametrize("vector", VECTORS[:2])
def test_welcome_vector_tampering_rejected(vector: dict[str, Any]) -> None:
    cs, reference, welcome, init_priv = _open(vector)
    with pytest.raises(ValidationError):
        decrypt_welcome(welcome, b"\x00" * len(reference), init_priv, _no_psk)
    broken = Welcome(
        welcome.cipher_suite,
        welcome.secrets,
        welcome.encrypted_group_info[:-1] + bytes([welcome.encrypted_group_info[-1] ^ 1]),
    )
    with pytest.raises(VerificationError):
        decrypt_welcome(broken, reference, init_priv, _no_psk)
    opened = decrypt_welcome(welcome, reference, init_priv, _no_psk)
    with pytest.raises(VerificationError):
        verify_group_info_signature(
            cs, opened.group_info, bytes.fromhex(vector["key_package"])[-32:]
        )
