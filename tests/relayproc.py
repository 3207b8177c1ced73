"""A relay as its operator runs it: a real process to start, kill -9 and restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.conftest import free_port

__all__ = ["RelayProcess"]


class RelayProcess:
    def __init__(
        self, data_dir: Path, *, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        environ = dict(os.environ)
        environ.update(
            BACKCHANNEL_RELAY_APPENDS_PER_SECOND="100000",
            BACKCHANNEL_RELAY_APPEND_BURST="100000",
            BACKCHANNEL_RELAY_LOG_LEVEL="warning",
        )
        environ.update(env or {})
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "relay",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
            ],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"relay exited early: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("relay did not become ready")

    def stop(self) -> None:
        """SIGKILL (if still running) and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    kill = stop
