"""The client's error root: every error a person can meet says what happened and what to do."""

from __future__ import annotations

__all__ = ["BackchannelError", "ProfileError"]


class BackchannelError(Exception):
    """Root of the errors the client façade raises on purpose.

    ``str(error)`` is a sentence for a person: what happened and what to do. It never
    contains a key, a passphrase or message content.
    """

    def user_message(self) -> str:
        """The sentence to show."""
        return str(self)


class ProfileError(BackchannelError):
    """The profile cannot be created or opened as asked (exists, missing, locked, wrong passphrase)."""
