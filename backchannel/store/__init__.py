"""The client's encrypted local store: one SQLCipher database per profile.

Start with ``Store.create(folder, passphrase)`` or ``Store.open(folder, passphrase)``;
see ``docs/store.md`` for the format and the safety argument.
"""

from __future__ import annotations

from .database import Database, ProfilePaths, Transaction
from .errors import (
    CorruptStore,
    FingerprintMismatch,
    NoProfile,
    ProfileExists,
    ProfileLocked,
    StorageUnavailable,
    StoreClosed,
    StoreError,
    StoreInternalError,
    StoreUsageError,
    UnknownRecord,
    WrongPassphrase,
)
from .keys import RFC9106_SECOND, Header, KdfParams, StorageKey
from .records import Member, Message, OutboxEntry, Room
from .repository import Store, StoreTransaction

__all__ = [
    "RFC9106_SECOND",
    "CorruptStore",
    "Database",
    "FingerprintMismatch",
    "Header",
    "KdfParams",
    "Member",
    "Message",
    "NoProfile",
    "OutboxEntry",
    "ProfileExists",
    "ProfileLocked",
    "ProfilePaths",
    "Room",
    "StorageKey",
    "StorageUnavailable",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreInternalError",
    "StoreTransaction",
    "StoreUsageError",
    "Transaction",
    "UnknownRecord",
    "WrongPassphrase",
]
