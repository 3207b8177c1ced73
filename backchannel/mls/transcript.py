"""Confirmed and interim transcript hashes (RFC 9420 §8.2).

::

    confirmed_transcript_hash_[n] = Hash(interim_transcript_hash_[n-1] ||
                                         ConfirmedTranscriptHashInput_[n])
    interim_transcript_hash_[n]   = Hash(confirmed_transcript_hash_[n] ||
                                         InterimTranscriptHashInput_[n])

A new group starts with an empty confirmed transcript hash; its first interim hash uses
the confirmation tag computed over that empty hash.
"""

from __future__ import annotations

from .crypto.suites import CipherSuiteImpl
from .errors import UsageError
from .framing import (
    AuthenticatedContent,
    ConfirmedTranscriptHashInput,
    ContentType,
    FramedContent,
    InterimTranscriptHashInput,
    WireFormat,
)

__all__ = [
    "confirmed_transcript_hash",
    "interim_transcript_hash",
    "update_transcript_hashes",
]


def confirmed_transcript_hash(
    cs: CipherSuiteImpl,
    interim_transcript_hash: bytes,
    wire_format: WireFormat,
    content: FramedContent,
    signature: bytes,
) -> bytes:
    """The confirmed transcript hash after a commit (RFC 9420 §8.2).

    Takes the pieces of ``ConfirmedTranscriptHashInput`` rather than an
    AuthenticatedContent because a committer needs this hash before it has the
    confirmation tag.

    Args:
        cs: the group's ciphersuite.
        interim_transcript_hash: the interim hash of the previous epoch.
        wire_format: the wire format the commit travels in.
        content: the commit's FramedContent.
        signature: the commit's FramedContentTBS signature.

    Raises:
        UsageError: ``content`` does not carry a Commit.
    """
    if content.content_type is not ContentType.COMMIT:
        raise UsageError("transcript hashes are updated only by commits")
    data = ConfirmedTranscriptHashInput(wire_format, content, signature).to_bytes()
    return cs.hash(interim_transcript_hash + data)


def interim_transcript_hash(
    cs: CipherSuiteImpl, confirmed_transcript_hash: bytes, confirmation_tag: bytes
) -> bytes:
    """The interim transcript hash from a confirmed hash and confirmation tag (§8.2)."""
    data = InterimTranscriptHashInput(confirmation_tag).to_bytes()
    return cs.hash(confirmed_transcript_hash + data)


def update_transcript_hashes(
    cs: CipherSuiteImpl, interim_transcript_hash_before: bytes, commit: AuthenticatedContent
) -> tuple[bytes, bytes]:
    """Both transcript hashes after ``commit``: ``(confirmed, interim)`` (§8.2).

    The interim hash uses ``commit.auth.confirmation_tag``; checking that tag against
    the new epoch's ``confirmation_key`` is the caller's job (it needs the new key
    schedule, which needs the confirmed hash).

    Raises:
        UsageError: ``commit`` does not carry a Commit (and so has no confirmation tag).
    """
    confirmed = confirmed_transcript_hash(
        cs,
        interim_transcript_hash_before,
        commit.wire_format,
        commit.content,
        commit.auth.signature,
    )
    tag = commit.auth.confirmation_tag
    if tag is None:
        raise UsageError("a commit's auth data must carry a confirmation tag")
    return confirmed, interim_transcript_hash(cs, confirmed, tag)
