"""Capability checks: Ed25519 signatures over connection-bound messages, failing closed."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import FieldInvalid

__all__ = ["check_public_key", "signature_valid"]


def check_public_key(key: bytes, name: str) -> None:
    """Raise ``FieldInvalid`` unless ``key`` is an Ed25519 public key encoding."""
    try:
        Ed25519PublicKey.from_public_bytes(key)
    except ValueError:
        raise FieldInvalid(f"The field '{name}' is not an Ed25519 public key.") from None


def signature_valid(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True only if ``signature`` is ``public_key``'s Ed25519 signature of ``message``.

    Every failure (malformed key, malformed or wrong signature) is just False, so the
    caller answers all of them with one ``denied``.
    """
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
