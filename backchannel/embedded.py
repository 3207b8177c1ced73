"""The relay a profile runs inside the client when it has no relay of its own."""

from __future__ import annotations

import socket
from pathlib import Path

from aiohttp import web

from relay.app import create_app
from relay.config import RelayConfig

__all__ = ["EmbeddedRelay", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedRelay:
    """A full relay (SQLite, durable) served from this process on ``host:port``.

    It is the same relay operators run, so a workshop facilitator can host the room
    for a LAN (``--listen 0.0.0.0:8765``) and later move to a dedicated relay.
    """

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 8765) -> None:
        self.config = RelayConfig(host=host, port=port, data_dir=data_dir)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.host in {"0.0.0.0", "::", ""} else self.config.host  # noqa: S104
        return f"ws://{host}:{self.config.port}/v1/ws"

    async def start(self) -> None:
        runner = web.AppRunner(create_app(self.config), access_log=None, shutdown_timeout=5)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.config.host, self.config.port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
