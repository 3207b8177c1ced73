"""The TUI's screens: first run, unlock, main, lock and help."""

from __future__ import annotations
