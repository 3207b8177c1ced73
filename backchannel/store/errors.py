"""Store error types: one root, split by whose fault it was.

Messages are sentences for people (what happened, what to do). None of them
carries a passphrase, a key, a record's content or SQL parameters.
"""

from __future__ import annotations

__all__ = [
    "CorruptStore",
    "FingerprintMismatch",
    "NoProfile",
    "ProfileExists",
    "ProfileLocked",
    "StorageUnavailable",
    "StoreClosed",
    "StoreError",
    "StoreInternalError",
    "StoreUsageError",
    "UnknownRecord",
    "WrongPassphrase",
]


class StoreError(Exception):
    """Root of every error ``backchannel.store`` raises on purpose."""


# -- the person at the keyboard or the machine around us ---------------------------------


class WrongPassphrase(StoreError):
    """The passphrase does not unlock this profile.

    Deliberately says nothing more: a tampered header salt looks exactly like a
    mistyped passphrase, and telling them apart would need the key we lack.
    """

    def __init__(self) -> None:
        super().__init__("That passphrase does not unlock this profile. Check it and try again.")


class ProfileLocked(StoreError):
    """Another process (or another open in this one) holds the profile."""

    def __init__(self) -> None:
        super().__init__(
            "This profile is open in another Backchannel window or process. Close it and try again."
        )


class NoProfile(StoreError):
    """``open()`` found no store at the given place."""

    def __init__(self) -> None:
        super().__init__("There is no Backchannel profile here yet. Create one first.")


class ProfileExists(StoreError):
    """``create()`` found a store already there; it is never overwritten."""

    def __init__(self) -> None:
        super().__init__("A Backchannel profile already exists here; open it instead.")


class StorageUnavailable(StoreError):
    """The disk refused: full, read-only, missing permission or an I/O error."""


# -- the disk handed us something bad ----------------------------------------------------


class CorruptStore(StoreError):
    """The header or the database is damaged, tampered with, or from a newer version."""


# -- our caller's bug ----------------------------------------------------------------------


class StoreUsageError(StoreError):
    """The caller used the store API wrongly."""


class StoreClosed(StoreUsageError):
    """The store was used after ``close()``."""

    def __init__(self) -> None:
        super().__init__("The store is closed.")


class UnknownRecord(StoreUsageError):
    """The room, member or message named by the caller is not in the store."""


class FingerprintMismatch(StoreError):
    """``mark_verified`` was given a fingerprint that is not the member's current key.

    Usually the member's key changed between showing the safety number and the
    click that confirmed it; the person should compare again.
    """

    def __init__(self) -> None:
        super().__init__(
            "This member's key changed while you were verifying it. Compare the safety number again."
        )


# -- our bug -------------------------------------------------------------------------------


class StoreInternalError(StoreError):
    """SQLite reported something this code did not expect: a bug here."""
