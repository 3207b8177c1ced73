"""Relay nodes as processes on PostgreSQL: a node killed under load, the database going away."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from backchannel.transport.errors import Rejected, TransportError
from backchannel.transport.session import MailboxCapability, RelaySession
from relay.protocol import Push, Revoked
from tests.relayproc import RelayProcess

pytestmark = pytest.mark.slow


class CuttableProxy:
    """A TCP proxy to PostgreSQL that can be cut (every link dropped, new ones refused)
    and restored, which is what a relay sees when the database stops and comes back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = True
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links -= {writer, up_writer}

    def cut(self) -> None:
        self.up = False
        for link in list(self._links):
            link.transport.abort()
        self._links.clear()

    def restore(self) -> None:
        self.up = True

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _with_port(url: str, port: int) -> str:
    return url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")


@pytest.fixture
async def cluster_processes() -> AsyncIterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for p in started:
        p.stop()


class FollowingClient:
    """A subscriber that, when its node dies, reconnects to another and resumes from its cursor."""

    def __init__(self, urls: list[str], cap: MailboxCapability) -> None:
        self.urls = urls
        self.cap = cap
        self.received: list[Push] = []
        self.cursor = 0
        self.reconnects = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        index = 0
        while True:
            url = self.urls[index % len(self.urls)]
            try:
                session = await RelaySession.connect(url, timeout=3)
            except TransportError:
                index += 1
                await asyncio.sleep(0.05)
                continue
            try:
                await session.auth(self.cap, "read")
                await session.call("subscribe", mailbox=self.cap.mailbox, after=self.cursor)
                while True:
                    if session.closed and session.pending_events() == 0:
                        raise TransportError("closed")
                    try:
                        event = await session.next_event(0.2)
                    except TimeoutError:
                        continue
                    if isinstance(event, Push):
                        self.received.append(event)
                        self.cursor = event.seq
                    elif isinstance(event, Revoked):
                        # The relay ended the subscription (store trouble): start over.
                        raise TransportError(event.reason)
            except TransportError:
                self.reconnects += 1
                index += 1
            finally:
                await session.close()

    async def wait_for(self, seqs: set[int], timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not seqs <= {p.seq for p in self.received}:
            assert asyncio.get_running_loop().time() < deadline, (
                "not every acknowledged entry arrived"
            )
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_a_node_killed_under_load_loses_and_repeats_nothing(
    tmp_path: Path, postgres_url: str, cluster_processes: list[RelayProcess]
) -> None:
    env = {"BACKCHANNEL_RELAY_DATABASE_URL": postgres_url}
    for n in range(3):
        cluster_processes.append(RelayProcess(tmp_path / f"node{n}", env=env))
    for node in cluster_processes:
        await node.wait_ready()
    urls = [node.url for node in cluster_processes]
    owner = await RelaySession.connect(urls[1])
    cap = MailboxCapability.generate()
    await owner.create(cap)
    await owner.close()

    # Subscribers start on every node; the ones on node 0 must move when it dies.
    followers = [FollowingClient(urls[i:] + urls[:i], cap) for i in (0, 0, 1, 2)]
    acked: dict[int, bytes] = {}

    async def writer(url_order: list[str], tag: int) -> None:
        n = 0
        while n < 150:
            try:
                session = await RelaySession.connect(url_order[0], timeout=3)
            except TransportError:
                url_order.append(url_order.pop(0))
                continue
            try:
                await session.auth(cap, "write")
                while n < 150:
                    blob = b"w%d-%d" % (tag, n)
                    key = blob.ljust(16, b".")
                    # The idempotency key makes a retry after a lost ack safe.
                    answer = await session.call("append", mailbox=cap.mailbox, blob=blob, key=key)
                    acked[answer["seq"]] = blob
                    n += 1
                    await asyncio.sleep(0.005)
            except TransportError:
                url_order.append(url_order.pop(0))
            finally:
                await session.close()

    writers = [asyncio.create_task(writer(urls[i:] + urls[:i], i)) for i in range(3)]
    while len(acked) < 120:
        await asyncio.sleep(0.02)
    os.kill(cluster_processes[0].proc.pid, signal.SIGKILL)
    await asyncio.wait_for(asyncio.gather(*writers), 120)

    assert len(acked) == 450 and sorted(acked) == list(range(1, 451))
    for follower in followers:
        await follower.wait_for(set(acked))
        seqs = [p.seq for p in follower.received]
        assert seqs == sorted(set(seqs)), "an entry was delivered twice or out of order"
        assert all(p.blob == acked[p.seq] for p in follower.received)
        await follower.stop()
    assert followers[0].reconnects >= 1 and followers[1].reconnects >= 1


async def test_database_outage_fails_cleanly_then_recovers(
    tmp_path: Path, postgres_url: str, cluster_processes: list[RelayProcess]
) -> None:
    proxy = CuttableProxy(5432)
    await proxy.start()
    try:
        env = {"BACKCHANNEL_RELAY_DATABASE_URL": _with_port(postgres_url, proxy.port)}
        node = RelayProcess(tmp_path / "node", env=env)
        cluster_processes.append(node)
        await node.wait_ready()
        cap = MailboxCapability.generate()
        session = await RelaySession.connect(node.url)
        await session.create(cap)
        await session.auth(cap, "write")
        follower = FollowingClient([node.url], cap)

        acked: dict[int, bytes] = {}
        codes: list[str] = []

        async def append(n: int) -> None:
            blob = b"m%d" % n
            try:
                answer = await session.call("append", mailbox=cap.mailbox, blob=blob)
            except Rejected as exc:
                codes.append(exc.code)
            else:
                acked[answer["seq"]] = blob

        async def health() -> int:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{node.port}/healthz") as r,
            ):
                return r.status

        for n in range(20):
            await append(n)
        proxy.cut()
        for n in range(20, 40):
            await append(n)
        assert codes and set(codes) == {"unavailable"}, codes
        assert await health() == 503
        proxy.restore()
        deadline = asyncio.get_running_loop().time() + 30
        while await health() != 200:
            assert asyncio.get_running_loop().time() < deadline, "the node did not recover"
            await asyncio.sleep(0.1)
        for n in range(40, 60):
            await append(n)
        assert len(acked) >= 40 and sorted(acked) == list(range(1, len(acked) + 1))
        await follower.wait_for(set(acked))
        assert [p.seq for p in follower.received] == sorted(acked)
        await follower.stop()
        await session.close()
    finally:
        await proxy.stop()
