"""The relay connection: protocol sessions over WebSocket (I/O lives here, not in the cores)."""

from __future__ import annotations
