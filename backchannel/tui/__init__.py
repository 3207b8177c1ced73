"""The Backchannel terminal app (Textual); it talks only to :mod:`backchannel.client`."""

from __future__ import annotations

from .app import BackchannelApp, make_app

__all__ = ["BackchannelApp", "make_app"]
