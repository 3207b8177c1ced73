"""The TUI's widgets: room list, conversation, composer, members, connection status."""

from __future__ import annotations
