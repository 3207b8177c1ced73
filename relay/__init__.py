"""The Backchannel blind relay: ordered mailboxes of opaque blobs, opened by capability."""

from __future__ import annotations

__all__ = ["PROTOCOL_VERSION"]

#: Version of the relay wire protocol (``docs/relay-protocol.md``).
PROTOCOL_VERSION = 1
