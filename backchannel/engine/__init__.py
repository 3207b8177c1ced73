"""The room engine behind :class:`~backchannel.client.Client` (see :mod:`.core`)."""

from __future__ import annotations

from .core import Engine
from .state import DEFAULT_SELF_UPDATE_SECONDS

__all__ = ["DEFAULT_SELF_UPDATE_SECONDS", "Engine"]
