"""Backchannel: an end-to-end encrypted messenger for confidential dialogue."""

from __future__ import annotations

__version__ = "0.1.0"
