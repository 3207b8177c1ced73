"""Relay error types: one root, split by whose fault it was, each with a stable wire code."""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadFrame",
    "CapabilityDenied",
    "ConfigError",
    "FieldInvalid",
    "InternalError",
    "LimitExceeded",
    "MailboxExists",
    "MailboxFull",
    "ProtocolViolation",
    "RateLimited",
    "RelayError",
    "ShuttingDown",
    "StaleEpoch",
    "StoreFull",
    "StoreUnavailable",
    "TooLarge",
    "TooManySubscriptions",
    "UnknownOp",
    "UnsupportedVersion",
]


class RelayError(Exception):
    """Root of every error the relay raises on purpose.

    ``code`` is the stable string sent in ``err`` frames; ``message`` is a sentence a
    person can act on. Neither ever contains key material, blobs or mailbox ids.
    """

    code: ClassVar[str] = "internal"
    default_message: ClassVar[str] = "The relay failed to handle the request."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    def extra(self) -> dict[str, Any]:
        """Fields beyond ``code`` and ``message`` that the ``err`` frame carries."""
        return {}


# -- the peer's fault: malformed or disallowed requests ------------------------------------


class ProtocolViolation(RelayError):
    """The request could not be understood or broke the protocol's rules."""

    code = "bad_frame"
    default_message = "The frame is not a valid relay request."


class BadFrame(ProtocolViolation):
    """Not a binary msgpack map, or not decodable."""


class UnsupportedVersion(ProtocolViolation):
    code = "unsupported_version"
    default_message = "This relay speaks protocol version 1 only."


class UnknownOp(ProtocolViolation):
    code = "unknown_op"
    default_message = "The relay does not know this operation."


class FieldInvalid(ProtocolViolation):
    code = "invalid_field"
    default_message = "A field of the request is missing or invalid."


class TooLarge(ProtocolViolation):
    code = "too_large"
    default_message = "The blob is larger than this relay accepts."


class CapabilityDenied(RelayError):
    """Any failed capability check: unknown mailbox, wrong key, bad or missing signature.

    All of these collapse into one error so that an observer learns nothing about which
    check failed.
    """

    code = "denied"
    default_message = "Access denied: authenticate to this mailbox with a valid key first."


class MailboxExists(RelayError):
    code = "exists"
    default_message = "A mailbox with this id already exists; choose another random id."


class StaleEpoch(RelayError):
    """A compare-and-set append named an epoch the mailbox has moved past (or not reached)."""

    code = "stale_epoch"
    default_message = "Another commit won this epoch; process it and retry."

    def __init__(self, current: int, message: str | None = None) -> None:
        self.current = current
        super().__init__(message)

    def extra(self) -> dict[str, Any]:
        return {"epoch": self.current}


# -- limits ---------------------------------------------------------------------------------


class LimitExceeded(RelayError):
    """A configured limit refused the request; nothing was written."""


class RateLimited(LimitExceeded):
    code = "rate_limited"
    default_message = "Too many appends on this connection; slow down and retry."

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)

    def extra(self) -> dict[str, Any]:
        return {"retry_after": round(self.retry_after, 3)}


class TooManySubscriptions(LimitExceeded):
    code = "too_many_subscriptions"
    default_message = "This connection has as many subscriptions as the relay allows."


class MailboxFull(LimitExceeded):
    code = "mailbox_full"
    default_message = "The mailbox is at its quota; readers must trim it before more is added."


class StoreFull(LimitExceeded):
    code = "store_full"
    default_message = "The relay's storage is full; try again later or use another relay."


# -- the relay's own state ------------------------------------------------------------------


class StoreUnavailable(RelayError):
    code = "unavailable"
    default_message = (
        "The relay's storage is not answering, so the request may not have been stored; "
        "retry later (with the same idempotency key for appends)."
    )


class ShuttingDown(RelayError):
    code = "shutting_down"
    default_message = "The relay is shutting down; reconnect shortly."


class InternalError(RelayError):
    """Our bug. The request may be retried; the details go to the operator's log."""


class ConfigError(RelayError):
    """The operator's configuration is invalid (raised at start-up, never on the wire)."""

    code = "config"
    default_message = "The relay configuration is invalid."
