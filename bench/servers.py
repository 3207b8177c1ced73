"""Server subprocesses of the relay benchmark: the relay (SQLite or PostgreSQL) and the baseline.

Each server runs on a free port of 127.0.0.1 and is ready once it answers ``/healthz``.
The relay is the real one (``python -m relay serve``) with its append rate limit raised
(its limiter is not under test); the baseline is ``bench/baseline_server.py``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import BenchError

__all__ = ["HOST", "RELAY_RATE_LIMIT", "Server", "start_server", "stop_server"]

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
#: Appends per second and burst the relay is started with (its limiter is not under test).
RELAY_RATE_LIMIT = 1_000_000


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server subprocess and where it listens."""

    kind: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    #: Of the relay: "sqlite" or "postgres".
    store: str = "sqlite"

    @property
    def url(self) -> str:
        return (
            f"ws://{HOST}:{self.port}/v1/ws"
            if self.kind == "relay"
            else f"ws://{HOST}:{self.port}/ws"
        )

    def http(self, path: str) -> bytes:
        # No proxy: every request goes to 127.0.0.1 directly.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{HOST}:{self.port}{path}", timeout=5) as response:
            body: bytes = response.read()
            return body

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _relay_env(database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_RELAY_")}
    env["BACKCHANNEL_RELAY_APPENDS_PER_SECOND"] = str(RELAY_RATE_LIMIT)
    env["BACKCHANNEL_RELAY_APPEND_BURST"] = str(RELAY_RATE_LIMIT)
    if database_url is not None:
        # Through the environment, not --database-url: a password stays out of `ps`.
        env["BACKCHANNEL_RELAY_DATABASE_URL"] = database_url
    return env


def start_server(
    kind: str,
    workdir: Path,
    servers: list[Server],
    *,
    data_parent: Path | None,
    profile: Path | None,
    database_url: str | None = None,
) -> Server:
    """Start the relay or the baseline on a free port and wait until it answers /healthz.

    ``database_url``: the relay's store (PostgreSQL); by default SQLite in a fresh
    directory.
    """
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between the probe and the bind
        port = free_port()
        log = workdir / f"{kind}-{port}.log"
        if kind == "relay":
            data_dir = Path(tempfile.mkdtemp(prefix="relay-store-", dir=data_parent or workdir))
            prefix = [sys.executable]
            if profile is not None:
                prefix += ["-m", "cProfile", "-o", str(profile)]
            command = [
                *prefix,
                "-m",
                "relay",
                "serve",
                "--host",
                HOST,
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--log-level",
                "warning",
            ]
            env = _relay_env(database_url)
        else:
            command = [
                sys.executable,
                str(REPO / "bench" / "baseline_server.py"),
                "--port",
                str(port),
            ]
            env = dict(os.environ)
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        server = Server(kind, process, port, log, "sqlite" if database_url is None else "postgres")
        servers.append(server)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if server.http("/healthz"):
                    return server
            time.sleep(0.05)
        last_error = server.log_tail()
        stop_server(server)
        servers.remove(server)
    raise BenchError(
        f"The {kind} server did not start on 127.0.0.1 (tried 3 free ports). Its output:\n"
        f"{last_error or '(nothing)'}"
    )


def stop_server(server: Server, timeout: float = 15.0) -> None:
    """SIGTERM (graceful: lets cProfile write its file), then SIGKILL if it lingers."""
    process = server.process
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
