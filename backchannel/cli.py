"""``backchannel``: the client command (the messenger itself arrives in a later release)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``backchannel`` command."""
    print(
        "The Backchannel client is not built yet. This release ships the blind relay:\n"
        "run `backchannel-relay serve` (or `python3 dev.py run`) to start one.",
        file=sys.stderr,
    )
    sys.exit(1)
