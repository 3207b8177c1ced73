"""Transcript-hash vectors (RFC 9420 §8.2).

Schema of ``transcript-hashes.json`` (one object per cipher suite)::

    {
      "cipher_suite": uint16,
      "confirmation_key": hex,
      "authenticated_content": hex,          # TLS-encoded AuthenticatedContent (a Commit)
      "interim_transcript_hash_before": hex,
      "confirmed_transcript_hash_after": hex,
      "interim_transcript_hash_after": hex
    }
"""

from __future__ import annotations

from typing import Any

import pytest

from backchannel.mls.crypto.suites import get_cipher_suite
from backchannel.mls.errors import UsageError, VerificationError
from backchannel.mls.framing import (
    AuthenticatedContent,
    FramedContent,
    FramedContentAuthData,
    Sender,
    WireFormat,
)
from backchannel.mls.transcript import (
    confirmed_transcript_hash,
    interim_transcript_hash,
    update_transcript_hashes,
)
from tests.vectors import load_vectors

VECTORS = [
    pytest.param(v, id=f"suite={v['cipher_suite']}") for v in load_vectors("transcript-hashes")
]


def h(value: str) -> bytes:
    return bytes.fromhex(value)


@pytest.mark.parametrize("vector", VECTORS)
def test_transcript_hashes(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    content = AuthenticatedContent.from_bytes(h(vector["authenticated_content"]))
    confirmed, interim = update_transcript_hashes(
        cs, h(vector["interim_transcript_hash_before"]), content
    )
    assert confirmed == h(vector["confirmed_transcript_hash_after"])
    assert interim == h(vector["interim_transcript_hash_after"])
    tag = content.auth.confirmation_tag
    assert tag is not None
    cs.verify_mac(h(vector["confirmation_key"]), confirmed, tag)
    with pytest.raises(VerificationError):
        cs.verify_mac(h(vector["confirmation_key"]), interim, tag)
    assert interim_transcript_hash(cs, confirmed, tag) == interim


@pytest.mark.parametrize("vector", VECTORS[:1])
def test_only_commits_update_the_transcript(vector: dict[str, Any]) -> None:
    cs = get_cipher_suite(vector["cipher_suite"])
    application = AuthenticatedContent(
        WireFormat.PRIVATE_MESSAGE,
        FramedContent(b"g", 1, Sender.member(0), b"", b"hello"),
        FramedContentAuthData(b"sig"),
    )
    with pytest.raises(UsageError):
        confirmed_transcript_hash(
            cs, b"", application.wire_format, application.content, application.auth.signature
        )
    with pytest.raises(UsageError):
        update_transcript_hashes(cs, b"", application)
