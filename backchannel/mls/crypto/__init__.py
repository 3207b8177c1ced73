"""Ciphersuite primitives for MLS (RFC 9420 §5)."""

from __future__ import annotations
