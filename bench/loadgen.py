"""Load generator of the relay benchmark: lean WebSocket clients, sending members, load processes.

Everything here runs inside the load processes that ``bench/relay_throughput.py``
forks; the parent talks to them through one pipe each (see :class:`LoadProcesses`).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import functools
import multiprocessing
import multiprocessing.connection
import signal
import struct
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgpack

from backchannel.transport.session import MailboxCapability
from relay.protocol import auth_message

__all__ = ["HEADER", "BenchError", "LoadProcesses", "load_processes"]

#: Send time (time.time()) and sender number at the start of every blob.
HEADER = struct.Struct("<dI")
CONNECT_CONCURRENCY = 64


class BenchError(Exception):
    """Something kept the benchmark from running; the message says what."""


# -- load-side clients (run inside the load processes) ----------------------------------------


class Client:
    """One load-generator WebSocket: a reader task and a blob callback."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.on_blob: Callable[[bytes], None] = lambda blob: None
        self.on_append_error: Callable[[str], None] = lambda code: None
        self.reader: asyncio.Task[None] | None = None

    async def send_blob(self, blob: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


class BaselineClient(Client):
    """A member of one baseline room: sends and receives raw blobs."""

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, url: str, room: str) -> BaselineClient:
        ws = await http.ws_connect(url, params={"room": room}, max_msg_size=0)
        client = cls(ws)
        client.reader = asyncio.create_task(client._read())
        return client

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.on_blob(msg.data)

    async def send_blob(self, blob: bytes) -> None:
        await self.ws.send_bytes(blob)


class RelayClient(Client):
    """A lean relay protocol client: requests by id, pushes to ``on_blob``.

    Lean on purpose (msgpack straight off the socket, no per-push queue) so that the
    load generator spends about as much CPU per delivery as the baseline's client does;
    both share two cores with the server.
    """

    mailbox: bytes = b""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, nonce: bytes) -> None:
        super().__init__(ws)
        self.nonce = nonce
        self._ids = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: Counter[str] = Counter()

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, url: str) -> RelayClient:
        ws = await http.ws_connect(url, max_msg_size=0)
        msg = await ws.receive(timeout=10)
        hello = msgpack.unpackb(msg.data) if msg.type == aiohttp.WSMsgType.BINARY else {}
        if hello.get("t") != "hello":
            await ws.close()
            raise BenchError("The relay did not send hello first.")
        client = cls(ws, hello["nonce"])
        client.reader = asyncio.create_task(client._read())
        return client

    async def _read(self) -> None:
        pending = self._pending
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            frame = msgpack.unpackb(msg.data)
            kind = frame.get("t")
            if kind == "push":
                self.on_blob(frame["blob"])
            elif kind == "ok":
                fut = pending.pop(frame["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)
            elif kind == "err":
                code = str(frame.get("code"))
                fut = pending.pop(frame.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_exception(BenchError(f"The relay refused a request: {code}."))
                else:
                    self.errors[code] += 1
                    self.on_append_error(code)
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(BenchError("The relay closed the connection."))

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        request_id = self._next_id()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        frame = {"v": 1, "t": "req", "id": request_id, "op": op, **fields}
        await self.ws.send_bytes(msgpack.packb(frame, use_bin_type=True))
        return await asyncio.wait_for(fut, 30)

    async def auth(self, cap: MailboxCapability, role: str) -> None:
        key = cap.read if role == "read" else cap.write
        assert key is not None
        sig = key.sign(auth_message(self.nonce, "read" if role == "read" else "write", cap.mailbox))
        await self.call("auth", mailbox=cap.mailbox, role=role, sig=sig)

    async def send_blob(self, blob: bytes) -> None:
        # Acks are not awaited: the member's window counts its own push coming back,
        # which the relay queues before the ack. Refusals come back via on_append_error.
        frame = {
            "v": 1,
            "t": "req",
            "id": self._next_id(),
            "op": "append",
            "mailbox": self.mailbox,
            "blob": blob,
        }
        await self.ws.send_bytes(msgpack.packb(frame, use_bin_type=True))


async def open_room(
    kind: str,
    http: aiohttp.ClientSession,
    urls: list[str],
    room: str,
    members: int,
    roles: tuple[str, ...],
    limit: asyncio.Semaphore,
) -> list[Client]:
    """Connect ``members`` clients to one room (relay: a new mailbox, auth, subscribe from 0).

    Member ``i`` connects to ``urls[i % len(urls)]``: with several relay nodes the
    members of one room are spread over them, so deliveries cross nodes.
    """

    async def one(make: Callable[[], Awaitable[Client]]) -> Client:
        async with limit:
            return await make()

    if kind == "baseline":
        return list(
            await asyncio.gather(
                *(one(lambda: BaselineClient.connect(http, urls[0], room)) for _ in range(members))
            )
        )
    cap = MailboxCapability.generate()

    async def member(create: bool, url: str) -> Client:
        client = await RelayClient.connect(http, url)
        client.mailbox = cap.mailbox
        if create:
            await client.call("create", mailbox=cap.mailbox, **cap.public_keys())
        for role in roles:
            await client.auth(cap, role)
        await client.call("subscribe", mailbox=cap.mailbox, after=0)
        return client

    first = await one(lambda: member(True, urls[0]))
    rest = await asyncio.gather(
        *(one(functools.partial(member, False, urls[i % len(urls)])) for i in range(1, members))
    )
    return [first, *rest]


@dataclass
class Window:
    """What one load process saw: inside the measurement window, and in all."""

    start: float
    end: float
    delivered: int = 0
    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    #: With several relay nodes: the latencies of deliveries whose sender was connected
    #: to another node, and to the same node.
    cross_latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    same_latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    #: Every delivery, in the window or not (to check that none was lost).
    total: int = 0

    def record(self, now: float, latency: float, cross: bool | None) -> None:
        """One delivery; ``cross``: None with one node, else whether the sender's differs."""
        self.total += 1
        if self.start <= now < self.end:
            self.delivered += 1
            self.latencies.append(latency)
            if cross is not None:
                (self.cross_latencies if cross else self.same_latencies).append(latency)


class Member:
    """One sending member: keeps at most ``window`` of its own messages in flight.

    Member numbers run room by room (``ident % room_size`` is the place in the room),
    so the node a sender is connected to is ``(sender % room_size) % nodes``.
    """

    def __init__(
        self,
        client: Client,
        ident: int,
        window: int,
        blob_bytes: int,
        stats: Window,
        room_size: int = 1,
        nodes: int = 1,
    ):
        self.client = client
        self.ident = ident
        self.room_size = room_size
        self.nodes = nodes
        self.node = (ident % room_size) % nodes
        self.window = window
        self.pad = bytes(blob_bytes - HEADER.size)
        self.stats = stats
        self.in_flight = 0
        self.sent = 0
        self.wake = asyncio.Event()
        self.stopping = False
        client.on_blob = self.on_blob
        client.on_append_error = self.on_append_error

    def on_blob(self, blob: bytes) -> None:
        now = time.time()
        sent_at, sender = HEADER.unpack_from(blob)
        cross = (sender % self.room_size) % self.nodes != self.node if self.nodes > 1 else None
        self.stats.record(now, now - sent_at, cross)
        if sender == self.ident:
            self.in_flight -= 1
            self.wake.set()

    def on_append_error(self, code: str) -> None:
        self.in_flight -= 1  # no push will come back for a refused append
        self.wake.set()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()

    async def run(self, start: float, rate: float) -> None:
        interval = 1.0 / rate if rate > 0 else 0.0
        # Members start spread over one interval so open-loop sends do not arrive in waves.
        next_at = start + (self.ident % 97) / 97 * interval
        await asyncio.sleep(max(0.0, start - time.time()))
        while not self.stopping:
            if self.in_flight >= self.window:
                self.wake.clear()
                await self.wake.wait()
                continue
            if interval:
                delay = next_at - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                next_at += interval
            self.in_flight += 1
            self.sent += 1
            await self.client.send_blob(HEADER.pack(time.time(), self.ident) + self.pad)


# -- load processes -------------------------------------------------------------------------


def _load_process(pipe: multiprocessing.connection.Connection, job: dict[str, Any]) -> None:
    """Entry point of one load process: run ``job`` and report through ``pipe``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            body = _idle_job if job["type"] == "idle" else _throughput_job
            runner.run(body(pipe, job))
    except BaseException:
        pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


async def _receive(pipe: multiprocessing.connection.Connection) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, pipe.recv)


def _http_session() -> aiohttp.ClientSession:
    # limit=0: no cap on connections; trust_env=False: never a proxy, only 127.0.0.1.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=False)


async def _idle_job(pipe: multiprocessing.connection.Connection, job: dict[str, Any]) -> None:
    kind, urls, members = job["kind"], job["urls"], job["members"]
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
    clients: list[Client] = []
    async with _http_session() as http:

        async def open_many(count: int, tag: str) -> None:
            rooms = [min(members, count - i) for i in range(0, count, members)]
            opened = await asyncio.gather(
                *(
                    open_room(kind, http, urls, f"{tag}-{n}", size, ("read",), limit)
                    for n, size in enumerate(rooms)
                )
            )
            clients.extend(c for room in opened for c in room)

        await open_many(job["warm"], f"warm-{job['index']}")
        pipe.send(("warm", len(clients)))
        await _receive(pipe)
        await open_many(job["count"], f"idle-{job['index']}")
        pipe.send(("ready", len(clients)))
        await _receive(pipe)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    pipe.send(("done", None))


async def _throughput_job(pipe: multiprocessing.connection.Connection, job: dict[str, Any]) -> None:
    kind, urls = job["kind"], job["urls"]
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
    roles = ("read", "write")
    async with _http_session() as http:
        rooms = await asyncio.gather(
            *(
                open_room(kind, http, urls, f"room-{r}", job["members"], roles, limit)
                for r in job["rooms"]
            )
        )
        pipe.send(("ready", sum(len(r) for r in rooms)))
        start, window_start, window_end = await _receive(pipe)
        stats = Window(window_start, window_end)
        members = [
            Member(
                client,
                job["first_ident"] + i,
                job["window"],
                job["blob_bytes"],
                stats,
                room_size=job["members"],
                nodes=len(urls),
            )
            for i, client in enumerate(c for room in rooms for c in room)
        ]
        loop = asyncio.get_running_loop()
        cpu: dict[str, float] = {}
        # time.time() deadlines converted to the loop's clock once.
        offset = loop.time() - time.time()
        loop.call_at(window_start + offset, lambda: cpu.__setitem__("start", time.process_time()))
        loop.call_at(window_end + offset, lambda: cpu.__setitem__("end", time.process_time()))
        tasks = [asyncio.create_task(m.run(start, job["rate"])) for m in members]
        await asyncio.sleep(max(0.0, window_end - time.time()))
        for m in members:
            m.stop()
        await asyncio.gather(*tasks)

        # Let in-flight messages land before closing (they are outside the window
        # anyway): every accepted send must reach every member of its room, once.
        def errors_now() -> Counter[str]:
            errors: Counter[str] = Counter()
            for room in rooms:
                for c in room:
                    if isinstance(c, RelayClient):
                        errors.update(c.errors)
            return errors

        def expected() -> int:
            refused = sum(errors_now().values())
            return (sum(m.sent for m in members) - refused) * job["members"]

        drain_until = time.time() + 3.0
        # Polling is fine here: it runs once per phase, for at most three seconds.
        while time.time() < drain_until and (  # noqa: ASYNC110
            any(m.in_flight > 0 for m in members) or stats.total < expected()
        ):
            await asyncio.sleep(0.05)
        errors = errors_now()
        await asyncio.gather(*(c.close() for room in rooms for c in room), return_exceptions=True)
    pipe.send(
        (
            "result",
            {
                "delivered": stats.delivered,
                "latencies": stats.latencies.tobytes(),
                "cross_latencies": stats.cross_latencies.tobytes(),
                "same_latencies": stats.same_latencies.tobytes(),
                "sent": sum(m.sent for m in members),
                "delivered_total": stats.total,
                "expected_total": expected(),
                "errors": dict(errors),
                "cpu": cpu.get("end", 0.0) - cpu.get("start", 0.0),
            },
        )
    )


class LoadProcesses:
    """The load processes of one phase; always terminated on exit."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for job in jobs:
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_load_process, args=(child, job), daemon=True)
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)

    def expect(self, tag: str, timeout: float) -> list[Any]:
        """Wait for message ``tag`` from every load process."""
        out = []
        deadline = time.monotonic() + timeout
        for pipe, process in zip(self.pipes, self.processes, strict=True):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise BenchError(f"A load process sent no '{tag}' within {timeout:.0f} s.")
            try:
                got, value = pipe.recv()
            except EOFError:
                raise BenchError(f"A load process died (exit code {process.exitcode}).") from None
            if got == "error":
                raise BenchError(f"A load process failed:\n{value}")
            if got != tag:
                raise BenchError(f"A load process sent '{got}', expected '{tag}'.")
            out.append(value)
        return out

    def send(self, message: Any) -> None:
        for pipe in self.pipes:
            pipe.send(message)

    def close(self) -> None:
        for process in self.processes:
            process.join(2)
            if process.is_alive():
                process.terminate()
                process.join(2)
            if process.is_alive():
                process.kill()
        for pipe in self.pipes:
            pipe.close()


@contextlib.contextmanager
def load_processes(jobs: list[dict[str, Any]]) -> Iterator[LoadProcesses]:
    procs = LoadProcesses(jobs)
    try:
        yield procs
    finally:
        procs.close()
