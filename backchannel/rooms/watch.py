"""What a member watches for that MLS alone cannot prevent: forks and missing messages.

Theory of operation (docs/room-protocol.md §13): a relay can show different members
different commits (a *fork*, RFC 9750 "Delivery of Messages") or silently drop a
sender's messages. Neither can be prevented, both can be detected:

* **Fork check.** Every application message carries, in its MLS
  ``authenticated_data`` (cleartext, authenticated), a 16-byte *fork check*:
  SHA-256 of a label and the epoch authenticator of the epoch it was sent in. A
  receiver that holds that epoch compares it with its own. Members on two sides of a
  fork hold different epoch authenticators for the same epoch number, so the first
  message from the other side shows the fork, even though it cannot be decrypted.
  The check reveals nothing about the keys (the authenticator is one-way from the
  epoch secret, and is hashed again here).
* **Generations.** MLS numbers each sender's application messages per epoch from 0
  (§9). A receiver that has held an epoch since it began expects them contiguous; a
  jump means the messages in between were not delivered.

Sans-IO: :class:`RoomWatch` holds the per-epoch fork checks and per-sender
generations, bounded to the last :data:`KEPT_EPOCHS` epochs, and is saved with the
room.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Final

from .errors import RoomDecodeError

__all__ = ["FORK_CHECK_BYTES", "KEPT_EPOCHS", "RoomWatch", "fork_check", "parse_fork_check"]

#: Label hashed with the epoch authenticator.
FORK_CHECK_LABEL: Final = b"backchannel/rooms/v1 fork check"
#: Version byte that starts the authenticated data of a room message.
_AAD_VERSION: Final = 1
#: Length of the fork check.
FORK_CHECK_BYTES: Final = 16
#: How many recent epochs' checks and generations a member keeps.
KEPT_EPOCHS: Final = 16
_MAX_EPOCH: Final = 2**63 - 1


def fork_check(epoch_authenticator: bytes) -> bytes:
    """The ``authenticated_data`` of a room application message in that epoch."""
    digest = hashlib.sha256(FORK_CHECK_LABEL + epoch_authenticator).digest()
    return bytes([_AAD_VERSION]) + digest[:FORK_CHECK_BYTES]


def parse_fork_check(authenticated_data: bytes) -> bytes | None:
    """The fork check in a message's authenticated data, or None if it carries none."""
    if len(authenticated_data) == 1 + FORK_CHECK_BYTES and authenticated_data[0] == _AAD_VERSION:
        return authenticated_data
    return None


class RoomWatch:
    """Fork checks of the epochs this member held, and the generations seen in them."""

    __slots__ = ("_checks", "_gens")

    def __init__(
        self,
        checks: dict[int, bytes] | None = None,
        gens: dict[tuple[int, int], int] | None = None,
    ) -> None:
        #: epoch -> fork check, for epochs this member held from their start.
        self._checks: dict[int, bytes] = dict(checks or {})
        #: (epoch, sender leaf) -> the next generation expected.
        self._gens: dict[tuple[int, int], int] = dict(gens or {})

    def enter_epoch(self, epoch: int, epoch_authenticator: bytes) -> None:
        """This member now holds ``epoch`` from its start."""
        self._checks[epoch] = fork_check(epoch_authenticator)
        kept = sorted(self._checks)[-KEPT_EPOCHS:]
        self._checks = {e: self._checks[e] for e in kept}
        self._gens = {k: v for k, v in self._gens.items() if k[0] in self._checks}

    def check_for(self, epoch: int) -> bytes | None:
        """This member's fork check for ``epoch``, if it held that epoch from its start."""
        return self._checks.get(epoch)

    def forked(self, epoch: int, authenticated_data: bytes) -> bool:
        """True if a message of ``epoch`` carries a fork check that is not this member's."""
        mine = self._checks.get(epoch)
        theirs = parse_fork_check(authenticated_data)
        return mine is not None and theirs is not None and not hmac.compare_digest(mine, theirs)

    def observe(self, epoch: int, leaf: int, generation: int) -> int:
        """Note a delivered message; returns how many of that sender's came before it unseen."""
        if epoch not in self._checks:
            return 0  # joined or restored mid-epoch: nothing to compare with
        expected = self._gens.get((epoch, leaf), 0)
        if generation >= expected:
            self._gens[(epoch, leaf)] = generation + 1
            return generation - expected
        return 0  # a late one (MLS accepts it within its window); counted missing before

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-ready map for the saved room."""
        return {
            "checks": [[e, c] for e, c in sorted(self._checks.items())],
            "gens": [[e, leaf, g] for (e, leaf), g in sorted(self._gens.items())],
        }

    @classmethod
    def from_wire(cls, obj: object) -> RoomWatch:
        """Read :meth:`to_wire` output.

        Raises:
            RoomDecodeError: malformed.
        """
        if not isinstance(obj, dict) or set(obj) != {"checks", "gens"}:
            raise RoomDecodeError("saved room: malformed watch")
        checks: dict[int, bytes] = {}
        gens: dict[tuple[int, int], int] = {}
        try:
            for e, c in obj["checks"]:
                if not _uint(e) or not isinstance(c, bytes) or len(c) != 1 + FORK_CHECK_BYTES:
                    raise ValueError
                checks[e] = c
            for e, leaf, g in obj["gens"]:
                if not (_uint(e) and _uint(leaf) and _uint(g)):
                    raise ValueError
                gens[(e, leaf)] = g
        except (TypeError, ValueError):
            raise RoomDecodeError("saved room: malformed watch") from None
        if len(checks) > KEPT_EPOCHS or len(gens) > KEPT_EPOCHS * 4096:
            raise RoomDecodeError("saved room: malformed watch")
        return cls(checks, gens)


def _uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_EPOCH
