"""Where profiles live: per-user data directories and the files inside a profile."""

from __future__ import annotations

from pathlib import Path

import platformdirs

__all__ = ["default_home", "embedded_relay_dir"]


def default_home() -> Path:
    """The default profile directory (not created here)."""
    return platformdirs.user_data_path("backchannel") / "default"


def embedded_relay_dir(home: Path) -> Path:
    """Where a profile's embedded relay keeps its SQLite store (not created here)."""
    return home / "relay"
