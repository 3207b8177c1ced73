"""SOCKS5 through a tiny proxy written here (CONNECT, no auth) in front of the real relay."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from backchannel.transport.connection import (
    Backoff,
    ConnectionState,
    Entry,
    LinkState,
    RelayConnection,
)
from backchannel.transport.errors import InvalidProxyURL, Unreachable
from backchannel.transport.proxy import ProxySettings, parse_proxy_url
from backchannel.transport.session import MailboxCapability
from tests.conftest import RunningRelay, free_port

ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 3, 4


@pytest.fixture
def store_kind() -> str:
    """The transport does not care about the relay's storage: SQLite only."""
    return "sqlite"


@dataclass
class Socks5Server:
    """RFC 1928, the CONNECT command only, no authentication; records what it was asked."""

    requests: list[tuple[int, str, int]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for w in self._writers:
            w.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != 5 or 0 not in methods:
            writer.write(b"\x05\xff")
            writer.close()
            return
        writer.write(b"\x05\x00")
        version, command, _, atyp = await reader.readexactly(4)
        if atyp == ATYP_IPV4:
            host = socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
        elif atyp == ATYP_IPV6:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        else:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        port = int.from_bytes(await reader.readexactly(2), "big")
        self.requests.append((atyp, host, port))
        if command != 1:
            writer.write(b"\x05\x07\x00\x01" + bytes(6))  # command not supported
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01" + bytes(6))  # connection refused
            writer.close()
            return
        self._writers.append(up_writer)
        writer.write(b"\x05\x00\x00\x01" + bytes(6))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
async def socks() -> AsyncIterator[Socks5Server]:
    server = Socks5Server()
    await server.start()
    yield server
    await server.close()


async def round_trip(url: str, proxy: str) -> Entry:
    """Create, follow, append and receive once through ``proxy``."""
    conn = RelayConnection(
        url, proxy=proxy, backoff=Backoff(base=0.05, cap=0.3, rng=random.Random(2))
    )
    await conn.start()
    try:
        cap = MailboxCapability.generate()
        await conn.create_mailbox(cap, timeout=20)
        await conn.follow(cap)
        await conn.append(cap.mailbox, b"through the proxy", timeout=20)
        while True:
            event = await conn.next_event(20)
            if isinstance(event, Entry):
                return event
    finally:
        await conn.close()


async def test_socks5h_sends_the_host_name_to_the_proxy(
    relay: RunningRelay, socks: Socks5Server
) -> None:
    entry = await round_trip(
        f"ws://localhost:{relay.port}/v1/ws", f"socks5h://127.0.0.1:{socks.port}"
    )
    assert entry.blob == b"through the proxy"
    assert socks.requests  # the connection really went through the proxy
    assert set(socks.requests) == {(ATYP_DOMAIN, "localhost", relay.port)}  # no local DNS


async def test_socks5_resolves_locally_and_sends_an_address(
    relay: RunningRelay, socks: Socks5Server
) -> None:
    entry = await round_trip(
        f"ws://localhost:{relay.port}/v1/ws", f"socks5://127.0.0.1:{socks.port}"
    )
    assert entry.blob == b"through the proxy"
    assert socks.requests
    assert all(atyp in (ATYP_IPV4, ATYP_IPV6) for atyp, _, _ in socks.requests)
    assert all(port == relay.port for _, _, port in socks.requests)


async def test_an_unreachable_proxy_means_offline_not_a_crash() -> None:
    conn = RelayConnection(
        "ws://relay.invalid:8765/v1/ws",
        proxy=f"socks5h://127.0.0.1:{free_port()}",  # nothing listens there
        backoff=Backoff(base=0.05, cap=0.1, rng=random.Random(4)),
    )
    await conn.start()
    try:
        cap = MailboxCapability.generate()
        conn.register(cap)
        with pytest.raises(Unreachable):
            await conn.append(cap.mailbox, b"x", timeout=0.5)
        while True:
            event = await conn.next_event(20)
            if isinstance(event, ConnectionState) and event.state is LinkState.OFFLINE:
                assert event.detail.startswith("Cannot reach the relay")
                break
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8080", "Only SOCKS5"),
        ("socks4://127.0.0.1:9050", "Only SOCKS5"),
        ("127.0.0.1:9050", "Only SOCKS5"),
        ("socks5://127.0.0.1", "needs a port"),
        ("socks5h://:9050", "no host"),
        ("socks5h://127.0.0.1:99999", "port"),
        ("socks5h://127.0.0.1:nine", "port"),
        ("socks5h://127.0.0.1:9050/path", "only a host and a port"),
        ("socks5h://user@127.0.0.1:9050", "both a user name and a password"),
    ],
)
def test_a_bad_proxy_url_gets_a_clear_error(url: str, says: str) -> None:
    with pytest.raises(InvalidProxyURL, match=says) as info:
        parse_proxy_url(url)
    assert isinstance(info.value, ValueError)
    assert "socks5h://host:port" in str(info.value)  # and says what would work
    with pytest.raises(InvalidProxyURL):
        RelayConnection("ws://127.0.0.1:8765/v1/ws", proxy=url)


def test_proxy_credentials_never_show() -> None:
    settings = parse_proxy_url("socks5h://alice:hunter2@127.0.0.1:9050")
    assert settings == ProxySettings("127.0.0.1", 9050, True, "alice", "hunter2")
    assert "hunter2" not in repr(settings) and "alice" not in repr(settings)
    with pytest.raises(InvalidProxyURL) as info:
        parse_proxy_url("socks5h://alice:hunter2@127.0.0.1")
    assert "hunter2" not in str(info.value)
    assert parse_proxy_url("SOCKS5://[::1]:1080") == ProxySettings("::1", 1080, False)
