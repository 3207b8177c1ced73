"""MLS error types: one root, split by whose fault it was (RFC 9420 implementation)."""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "InternalError",
    "MLSError",
    "UsageError",
    "ValidationError",
    "VerificationError",
]


class MLSError(Exception):
    """Root of every error ``backchannel.mls`` raises on purpose.

    Messages name the rule that failed, never key material or input bytes.
    """


class DecodeError(MLSError):
    """Bytes from a peer are not a valid encoding (RFC 9420 §2.1)."""


class ValidationError(MLSError):
    """A well-formed object breaks a rule of the protocol."""


class VerificationError(MLSError):
    """A signature, MAC, AEAD tag or hash did not verify."""


class UsageError(MLSError):
    """The caller used the API wrongly (our caller's bug, not the peer's)."""


class InternalError(MLSError):
    """A bug in this library."""
