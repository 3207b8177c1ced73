"""Room protocol error types: one root, split by whose fault it was.

Messages name the rule that failed. They never contain key material, invite
secrets, message bodies or input bytes, so they are safe to log and to show.
"""

from __future__ import annotations

__all__ = [
    "ContentDecodeError",
    "FileIntegrityError",
    "InviteError",
    "InviteExhausted",
    "InviteExpired",
    "InviteMalformed",
    "InviteRevoked",
    "InviteVersionUnsupported",
    "JoinRequestInvalid",
    "JoinRequestReplayed",
    "MessageRejected",
    "PaddingError",
    "PolicyDecodeError",
    "PolicyViolation",
    "RoomDecodeError",
    "RoomError",
    "RoomStateError",
    "SafetyNumberError",
]


class RoomError(Exception):
    """Root of every error ``backchannel.rooms`` raises on purpose."""


# --- Remote/payload errors: a peer, the relay or a link sent something bad ------------


class RoomDecodeError(RoomError):
    """Bytes from a peer are not a valid encoding of a room format."""


class PolicyDecodeError(RoomDecodeError):
    """Bytes are not the canonical encoding of a room policy (the only error ``decode_policy`` raises)."""


class ContentDecodeError(RoomDecodeError):
    """An application message is not valid room content (the only error ``decode_content`` raises)."""


class PaddingError(RoomDecodeError):
    """A padded plaintext has the wrong length or non-zero padding (the only error ``unpad`` raises)."""


class SafetyNumberError(RoomDecodeError):
    """Scanned safety-number bytes are not a valid scannable form."""


class FileIntegrityError(RoomError):
    """A file's chunks do not add up to the file its manifest describes."""


class PolicyViolation(RoomError):
    """A well-formed commit or post breaks the room policy; every member rejects it alike."""


class MessageRejected(RoomError):
    """An MLS message for the room could not be processed (forged, replayed, for an epoch
    this member does not have, or after this member left); the room state is unchanged."""


class RoomStateError(RoomError):
    """The room cannot do this now (a commit is pending, or this member is no longer in it)."""


# --- Invites ----------------------------------------------------------------------------


class InviteError(RoomError):
    """Root of the invite errors: the only type ``parse_invite`` and ``open_join_request`` raise."""


class InviteMalformed(InviteError):
    """The text is not an invite link (typo, truncated copy, or not a Backchannel link)."""


class InviteVersionUnsupported(InviteError):
    """The invite link was made by a newer (or unknown) version of Backchannel."""


class InviteExpired(InviteError):
    """The invite link's expiry time has passed."""


class InviteExhausted(InviteError):
    """The invite has been used as many times as the facilitator allowed."""


class InviteRevoked(InviteError):
    """The facilitator revoked the invite."""


class JoinRequestInvalid(InviteError):
    """A join request could not be opened: wrong invite, tampered, or malformed.

    Every failure to open a request is this one error with one message, so that
    whoever submits requests learns nothing about which check failed.
    """


class JoinRequestReplayed(InviteError):
    """A join request (or its key package) was already received for this invite."""
