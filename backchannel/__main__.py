"""``python -m backchannel``: same as the ``backchannel`` command."""

from __future__ import annotations

from .cli import main

main()
