"""Shared fixtures: a real relay on a loopback port, sessions against it, PostgreSQL gating."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from backchannel.transport.session import MailboxCapability, RelaySession
from relay.app import create_app
from relay.config import Limits, RelayConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeClock:
    """A settable wall clock for expiry tests."""

    def __init__(self, start: float = 1_900_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RunningRelay:
    """A relay app served on 127.0.0.1 by an AppRunner inside the test's event loop."""

    config: RelayConfig
    runner: web.AppRunner
    port: int
    sessions: list[RelaySession] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app(self) -> web.Application:
        return self.runner.app

    async def session(self) -> RelaySession:
        s = await RelaySession.connect(self.url)
        self.sessions.append(s)
        return s

    async def mailbox(
        self,
        session: RelaySession | None = None,
        *,
        ttl: int | None = None,
        roles: tuple[str, ...] = ("read", "write"),
    ) -> MailboxCapability:
        """Create a fresh mailbox and authenticate ``session`` (a new one if None) for ``roles``."""
        s = session or await self.session()
        cap = MailboxCapability.generate()
        await s.create(cap, ttl=ttl)
        for role in roles:
            await s.auth(cap, role)
        return cap

    async def stop(self) -> None:
        for s in self.sessions:
            await s.close()
        if self.runner.server is not None:  # a test may have shut it down already
            await self.runner.cleanup()


RelayFactory = Callable[..., Any]


def relay_config(tmp_path: Path, **overrides: Any) -> RelayConfig:
    limit_names = {f.name for f in dataclasses.fields(Limits)}
    # Generous rate limits by default, so tests that write a lot measure what they mean to;
    # the rate-limit tests set their own.
    limits: dict[str, Any] = {"appends_per_second": 100_000.0, "append_burst": 100_000}
    limits |= {k: v for k, v in overrides.items() if k in limit_names}
    top = {k: v for k, v in overrides.items() if k not in limit_names}
    top.setdefault("sweep_interval", 3600.0)
    return RelayConfig(
        host="127.0.0.1", port=0, data_dir=tmp_path / "relay", limits=Limits(**limits), **top
    )


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every relay integration test runs once per storage backend."""
    kind: str = request.param
    return kind


@pytest.fixture
def database_url(store_kind: str, request: pytest.FixtureRequest) -> str | None:
    """None for the SQLite default in the relay's data dir, else a private PostgreSQL schema."""
    if store_kind == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def start_relay(tmp_path: Path, database_url: str | None) -> AsyncIterator[RelayFactory]:
    """Start relays with config overrides: ``relay = await start_relay(max_blob_bytes=...)``.

    Relays started by one test share its store, so several of them form one cluster
    when the store is PostgreSQL.
    """
    running: list[RunningRelay] = []

    async def start(
        *, clock: Callable[[], float] | None = None, store: Any = None, **overrides: Any
    ) -> RunningRelay:
        if database_url is not None:
            overrides.setdefault("database_url", database_url)
        config = relay_config(tmp_path, **overrides)
        kwargs: dict[str, Any] = {}
        if clock is not None:
            kwargs["clock"] = clock
        app = create_app(config, store=store, **kwargs)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        relay = RunningRelay(config, runner, port)
        running.append(relay)
        return relay

    yield start
    for relay in running:
        await relay.stop()


@pytest.fixture
async def relay(start_relay: RelayFactory) -> RunningRelay:
    """A relay with default settings."""
    result: RunningRelay = await start_relay()
    return result


POSTGRES_URL = os.environ.get(
    "BACKCHANNEL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
_postgres_checked: list[str | None] = []


async def _postgres_problem() -> str | None:
    if not _postgres_checked:
        try:
            conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            _postgres_checked.append(f"{exc.__class__.__name__}: {exc}")
        else:
            await conn.close()
            _postgres_checked.append(None)
    return _postgres_checked[0]


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards.

    Skips with the reason when no server is reachable, or fails instead when
    BACKCHANNEL_REQUIRE_POSTGRES=1 (as CI sets it).
    """
    problem = await _postgres_problem()
    if problem is not None:
        message = f"PostgreSQL at {POSTGRES_URL} is not reachable ({problem}); set BACKCHANNEL_TEST_POSTGRES"
        if os.environ.get("BACKCHANNEL_REQUIRE_POSTGRES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    schema = "bc_test_" + os.urandom(6).hex()
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        separator = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{separator}search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
