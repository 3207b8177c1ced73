"""Transport error types: one root, split by whose fault it was."""

from __future__ import annotations

__all__ = ["ProtocolMismatch", "Rejected", "TransportError", "Unreachable"]


class TransportError(Exception):
    """Root of every error ``backchannel.transport`` raises on purpose."""


class Unreachable(TransportError):
    """The relay could not be reached, or the connection dropped."""


class ProtocolMismatch(TransportError):
    """The relay sent something this client does not understand."""


class Rejected(TransportError):
    """The relay refused a request with an ``err`` frame.

    Attributes:
        code: the stable error code (``docs/relay-protocol.md``).
        epoch: for ``stale_epoch``, the mailbox's current epoch.
        retry_after: for ``rate_limited``, seconds to wait.
    """

    def __init__(
        self, code: str, message: str, *, epoch: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.epoch = epoch
        self.retry_after = retry_after
