"""Relay capabilities from the 32-byte seeds that rooms, invites and inboxes carry."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from .rooms.access import RoomAccess
from .transport.capability import MailboxCapability

__all__ = ["access_capability", "capability", "new_seed", "seed_of"]


def _key(seed: bytes | None) -> Ed25519PrivateKey | None:
    return None if seed is None else Ed25519PrivateKey.from_private_bytes(seed)


def capability(
    mailbox: bytes,
    *,
    read: bytes | None = None,
    write: bytes | None = None,
    admin: bytes | None = None,
) -> MailboxCapability:
    """A capability holding the keys whose seeds are given."""
    return MailboxCapability(mailbox, _key(read), _key(write), _key(admin))


def access_capability(access: RoomAccess) -> MailboxCapability:
    """The full capability of a room mailbox."""
    return capability(
        access.mailbox, read=access.read_seed, write=access.write_seed, admin=access.admin_seed
    )


def seed_of(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte seed of an Ed25519 private key."""
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def new_seed() -> bytes:
    """A fresh random key seed."""
    return seed_of(Ed25519PrivateKey.generate())
