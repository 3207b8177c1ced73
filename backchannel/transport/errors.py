"""Transport error types: one root, split by whose fault it was.

* The network's or the relay's state: :class:`Unreachable` (retry later),
  :class:`ConnectionClosed` (this object was closed by its owner).
* The relay refused a request: :class:`Rejected` and one subclass per error code
  family (``docs/relay-protocol.md`` §9). :func:`rejected` picks the subclass. The
  codes are a closed set, each with this client's sentence; nothing the relay wrote
  reaches ``str()`` (an unknown code is shown escaped and shortened).
* The relay spoke nonsense: :class:`ProtocolMismatch`.
* The caller's mistake: :class:`InvalidProxyURL` (also a :class:`ValueError`).

No message here ever contains a key, a blob, a mailbox id or proxy credentials.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CODES",
    "MAX_SHOWN_CODE",
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
    "escape_code",
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

    The relay's words never reach a person or a log: its ``code`` is one of a closed
    set (:data:`CODES`, ``docs/relay-protocol.md`` §9), each with a sentence this
    client writes, and its free-text ``message`` is dropped. ``str(error)`` is that
    sentence; a code outside the set reads "The relay refused the request (unknown
    reason; …)"
    with at most :data:`MAX_SHOWN_CODE` characters of the code, escaped.

    Attributes:
        code: the error code if it is one of :data:`CODES`, else ``"unknown"``.
        reason: this client's clause for the code ("it is larger than …").
        unknown_code: for an unknown code, the code escaped (``ascii()``, shortened);
            else None.
        epoch: for ``stale_epoch``, the mailbox's current epoch.
        retry_after: for ``rate_limited``, seconds to wait.
    """

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        epoch: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        del message  # the relay's sentence is never shown, logged or kept
        if code in CODES:
            self.code: str = code
            self.unknown_code: str | None = None
        else:
            self.code = "unknown"
            self.unknown_code = escape_code(code)
        self.reason = _REASONS.get(self.code, "unknown reason")
        self.epoch = epoch
        self.retry_after = retry_after
        super().__init__(self.sentence())

    def sentence(self, what: str = "the request") -> str:
        """This client's sentence for the refusal, e.g. ``sentence("a message")``.

        Args:
            what: what was refused.
        """
        refused = f"The relay refused {what}"
        if self.unknown_code is not None:
            return f"{refused} (unknown reason; the code it sent was {self.unknown_code})."
        return f"{refused}: {self.reason}."

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

#: This client's clause for each code the relay may send (``docs/relay-protocol.md`` §9).
_REASONS: Final[dict[str, str]] = {
    "bad_frame": "it could not read what this client sent (a bug in Backchannel: please report it)",
    "unsupported_version": (
        "it speaks another version of the protocol; use another relay or update Backchannel"
    ),
    "unknown_op": "it does not know this operation (the relay is older than this client)",
    "invalid_field": "it found the request invalid (a bug in Backchannel: please report it)",
    "too_large": "it is larger than this relay accepts; send something smaller",
    "denied": "access was denied (the keys changed, or the mailbox no longer exists)",
    "exists": "a mailbox with this id exists already",
    "stale_epoch": "another change to the room reached it first",
    "rate_limited": "too many requests at once; slow down and try again",
    "too_many_subscriptions": "this connection follows as many mailboxes as the relay allows",
    "mailbox_full": "the mailbox is full until its readers catch up; try again later",
    "store_full": "the relay's storage is full; try again later or use another relay",
    "unavailable": "the relay's storage did not answer; try again later",
    "shutting_down": "the relay is shutting down; try again once it is back",
    "internal": (
        "the relay failed (an internal error); try again later, and tell its operator "
        "if it persists"
    ),
}

#: Every code of ``docs/relay-protocol.md`` §9; any other reads as an unknown reason.
CODES: Final = frozenset(_REASONS)

#: How much of an unknown code a sentence shows (escaped).
MAX_SHOWN_CODE: Final = 32


def escape_code(code: str) -> str:
    """An unknown code the relay sent, safe for any terminal or log.

    At most :data:`MAX_SHOWN_CODE` characters of it, as a quoted ASCII literal:
    controls, escape sequences, bidi overrides and every other non-ASCII character
    appear as ``\\x1b``-style escapes, never as themselves.
    """
    shown = ascii(code[:MAX_SHOWN_CODE])
    return shown + "..." if len(code) > MAX_SHOWN_CODE else shown


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
    code: str, message: str = "", *, epoch: int | None = None, retry_after: float | None = None
) -> Rejected:
    """The :class:`Rejected` subclass for an ``err`` frame's code (plain ``Rejected`` if unknown).

    Args:
        code: the frame's ``code``.
        message: the frame's ``message``: dropped (see :class:`Rejected`).
        epoch: the frame's ``epoch`` (``stale_epoch`` only).
        retry_after: the frame's ``retry_after`` (``rate_limited`` only).

    Returns:
        The exception to raise.
    """
    cls = _BY_CODE.get(code, Rejected)
    return cls(code, message, epoch=epoch, retry_after=retry_after)
