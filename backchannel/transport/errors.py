"""Transport error types: one root, split by whose fault it was.

* The network's or the relay's state: :class:`Unreachable` (retry later),
  :class:`ConnectionClosed` (this object was closed by its owner).
* The relay refused a request: :class:`Rejected` and one subclass per error code
  family (``docs/relay-protocol.md`` §9). :func:`rejected` picks the subclass.
* The relay spoke nonsense: :class:`ProtocolMismatch`.
* The caller's mistake: :class:`InvalidProxyURL` (also a :class:`ValueError`).

No message here ever contains a key, a blob, a mailbox id or proxy credentials.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "TRANSIENT_CODES",
    "ConnectionClosed",
    "Denied",
    "InvalidProxyURL",
    "InvalidRequest",
    "MailboxExists",
    "MailboxFull",
    "ProtocolMismatch",
    "RateLimited",
    "Rejected",
    "RelayUnavailable",
    "StaleEpoch",
    "StoreFull",
    "TooLarge",
    "TooManySubscriptions",
    "TransportError",
    "Unreachable",
    "rejected",
]


class TransportError(Exception):
    """Root of every error ``backchannel.transport`` raises on purpose."""


class Unreachable(TransportError):
    """The relay could not be reached, or the connection dropped."""


class ConnectionClosed(Unreachable):
    """The connection was closed by its owner; nothing more will be sent or received."""


class ProtocolMismatch(TransportError):
    """The relay sent something this client does not understand."""


class InvalidProxyURL(TransportError, ValueError):
    """A ``--proxy`` URL that is not ``socks5://host:port`` or ``socks5h://host:port``."""


class Rejected(TransportError):
    """The relay refused a request with an ``err`` frame.

    Attributes:
        code: the stable error code (``docs/relay-protocol.md``).
        message: the relay's sentence for people (never parsed).
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

    @property
    def transient(self) -> bool:
        """Whether retrying the same request later (same idempotency key) may succeed."""
        return self.code in TRANSIENT_CODES


class Denied(Rejected):
    """``denied``: no valid grant, wrong or rotated keys, or the mailbox does not exist."""


class StaleEpoch(Rejected):
    """``stale_epoch``: another commit won this epoch; :attr:`epoch` is the current one."""


class TooLarge(Rejected):
    """``too_large``: a blob is over the relay's ``max_blob_bytes``."""


class MailboxFull(Rejected):
    """``mailbox_full``: the mailbox is at its quota until its readers trim it."""


class StoreFull(Rejected):
    """``store_full``: the relay's storage is full."""


class MailboxExists(Rejected):
    """``exists``: ``create`` named the id of a live mailbox."""


class RateLimited(Rejected):
    """``rate_limited``: wait :attr:`retry_after` seconds, then retry the same request."""


class TooManySubscriptions(Rejected):
    """``too_many_subscriptions``: the connection holds as many as the relay allows."""


class InvalidRequest(Rejected):
    """``bad_frame``, ``invalid_field``, ``unknown_op``, ``unsupported_version``: a client bug."""


class RelayUnavailable(Rejected):
    """``unavailable``, ``shutting_down`` or ``internal``: transient; retry with backoff."""


#: Codes after which the same request (same idempotency key) may be retried later.
TRANSIENT_CODES: Final = frozenset({"unavailable", "shutting_down", "internal"})

_BY_CODE: Final[dict[str, type[Rejected]]] = {
    "denied": Denied,
    "stale_epoch": StaleEpoch,
    "too_large": TooLarge,
    "mailbox_full": MailboxFull,
    "store_full": StoreFull,
    "exists": MailboxExists,
    "rate_limited": RateLimited,
    "too_many_subscriptions": TooManySubscriptions,
    "bad_frame": InvalidRequest,
    "invalid_field": InvalidRequest,
    "unknown_op": InvalidRequest,
    "unsupported_version": InvalidRequest,
    "unavailable": RelayUnavailable,
    "shutting_down": RelayUnavailable,
    "internal": RelayUnavailable,
}


def rejected(
    code: str, message: str, *, epoch: int | None = None, retry_after: float | None = None
) -> Rejected:
    """The :class:`Rejected` subclass for an ``err`` frame's code (plain ``Rejected`` if unknown).

    Args:
        code: the frame's ``code``.
        message: the frame's ``message``.
        epoch: the frame's ``epoch`` (``stale_epoch`` only).
        retry_after: the frame's ``retry_after`` (``rate_limited`` only).

    Returns:
        The exception to raise.
    """
    cls = _BY_CODE.get(code, Rejected)
    return cls(code, message, epoch=epoch, retry_after=retry_after)
