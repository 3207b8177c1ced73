"""The private keys of one relay mailbox: what authorises reading, writing and rotating it.

Kept apart from :mod:`.session` (the WebSocket) so that code which only holds and
stores capabilities does not load the network stack.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from relay.protocol import MAILBOX_ID_BYTES

__all__ = ["MailboxCapability", "new_mailbox_id", "public_key_bytes"]


def new_mailbox_id() -> bytes:
    """A fresh random mailbox id."""
    return os.urandom(MAILBOX_ID_BYTES)


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``key``."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class MailboxCapability:
    """The private capability keys of one mailbox (any of them may be absent)."""

    mailbox: bytes
    read: Ed25519PrivateKey | None = field(default=None, repr=False)
    write: Ed25519PrivateKey | None = field(default=None, repr=False)
    admin: Ed25519PrivateKey | None = field(default=None, repr=False)

    @classmethod
    def generate(cls, mailbox: bytes | None = None) -> MailboxCapability:
        """New random keys for a new (or given) mailbox id."""
        return cls(
            mailbox or new_mailbox_id(),
            Ed25519PrivateKey.generate(),
            Ed25519PrivateKey.generate(),
            Ed25519PrivateKey.generate(),
        )

    def public_keys(self) -> dict[str, bytes]:
        """The public keys, as the ``create`` and ``rotate`` requests carry them."""
        out = {}
        for name, key in (
            ("read_key", self.read),
            ("write_key", self.write),
            ("admin_key", self.admin),
        ):
            if key is not None:
                out[name] = public_key_bytes(key)
        return out
