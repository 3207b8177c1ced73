"""MLS (RFC 9420), sans-IO: codec, ciphersuites, key schedule, secret tree and framing."""

from __future__ import annotations
