"""The relay as an operator runs it: a real process, killed with -9 or stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from backchannel.transport.errors import Rejected, TransportError
from backchannel.transport.session import MailboxCapability, RelaySession
from tests.relayproc import RelayProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def processes() -> Iterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for p in started:
        p.stop()


async def _fetch_all(session: RelaySession, cap: MailboxCapability) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    cursor = 0
    while True:
        page = await session.call("fetch", mailbox=cap.mailbox, after=cursor)
        out += [(seq, blob) for seq, blob in page["entries"]]
        if not page["more"]:
            return out
        cursor = out[-1][0]


async def test_every_acknowledged_append_survives_kill_9(
    tmp_path: Path, processes: list[RelayProcess]
) -> None:
    first = RelayProcess(tmp_path / "data")
    processes.append(first)
    await first.wait_ready()
    owner = await RelaySession.connect(first.url)
    caps = [MailboxCapability.generate() for _ in range(2)]
    for cap in caps:
        await owner.create(cap)
    await owner.close()

    acked: dict[bytes, list[tuple[int, bytes]]] = {cap.mailbox: [] for cap in caps}
    enough = asyncio.Event()

    async def writer(index: int) -> None:
        session = await RelaySession.connect(first.url)
        for cap in caps:
            await session.auth(cap, "write")
        n = 0
        try:
            while True:
                cap = caps[n % 2]
                blob = f"writer{index}-{n}".encode() * 8
                # Several appends in flight per connection, as a busy client would have.
                answers = await asyncio.gather(
                    *(
                        session.call("append", mailbox=cap.mailbox, blob=blob + bytes([k]))
                        for k in range(4)
                    )
                )
                for k, answer in enumerate(answers):
                    acked[cap.mailbox].append((answer["seq"], blob + bytes([k])))
                n += 1
                if sum(map(len, acked.values())) > 2000:
                    enough.set()
        except (TransportError, ConnectionError):
            pass  # the relay died under us, as planned
        finally:
            await session.close()

    writers = [asyncio.create_task(writer(i)) for i in range(6)]
    await asyncio.wait_for(enough.wait(), 60)
    os.kill(first.proc.pid, signal.SIGKILL)  # mid-stream, with appends in flight
    await asyncio.gather(*writers)
    first.proc.wait(10)

    second = RelayProcess(tmp_path / "data")
    processes.append(second)
    await second.wait_ready()
    reader = await RelaySession.connect(second.url)
    try:
        for cap in caps:
            await reader.auth(cap, "read")
            stored = await _fetch_all(reader, cap)
            seqs = [seq for seq, _ in stored]
            assert seqs == list(range(1, len(seqs) + 1)), (
                "sequence numbers must stay gapless and ordered"
            )
            as_dict = dict(stored)
            missing = [(seq, blob) for seq, blob in acked[cap.mailbox] if as_dict.get(seq) != blob]
            assert not missing, f"{len(missing)} acknowledged appends lost"
            assert len(acked[cap.mailbox]) > 500
        # The restarted relay carries on numbering after the survivors.
        await reader.auth(caps[0], "write")
        head = len(await _fetch_all(reader, caps[0]))
        assert (await reader.call("append", mailbox=caps[0].mailbox, blob=b"after"))[
            "seq"
        ] == head + 1
    finally:
        await reader.close()


async def test_sigterm_finishes_in_flight_writes_and_exits_cleanly(
    tmp_path: Path, processes: list[RelayProcess]
) -> None:
    relay = RelayProcess(tmp_path / "data")
    processes.append(relay)
    await relay.wait_ready()
    cap = MailboxCapability.generate()
    listener = await RelaySession.connect(relay.url)
    await listener.create(cap)
    await listener.auth(cap, "read")
    await listener.call("subscribe", mailbox=cap.mailbox, after=0)
    writer = await RelaySession.connect(relay.url)
    await writer.auth(cap, "write")

    acked: list[tuple[int, bytes]] = []
    refused: list[str] = []

    async def one(n: int) -> None:
        blob = b"m%d" % n
        try:
            acked.append(
                ((await writer.call("append", mailbox=cap.mailbox, blob=blob))["seq"], blob)
            )
        except Rejected as exc:
            refused.append(exc.code)
        except TransportError:
            refused.append("closed")

    burst = [asyncio.create_task(one(n)) for n in range(300)]
    await asyncio.sleep(0.05)
    relay.proc.send_signal(signal.SIGTERM)
    await asyncio.gather(*burst)
    assert relay.proc.wait(20) == 0
    assert set(refused) <= {"shutting_down", "closed"}
    for s in (listener, writer):
        for _ in range(100):
            if s.closed:
                break
            await asyncio.sleep(0.02)
        assert s.closed and s.close_code == 1001
        await s.close()

    again = RelayProcess(tmp_path / "data")
    processes.append(again)
    await again.wait_ready()
    reader = await RelaySession.connect(again.url)
    try:
        await reader.auth(cap, "read")
        stored = dict(await _fetch_all(reader, cap))
        assert all(stored.get(seq) == blob for seq, blob in acked)
        assert acked, "some appends should have completed before the signal"
    finally:
        await reader.close()


def test_serve_refuses_a_bad_configuration(tmp_path: Path) -> None:
    bad = tmp_path / "relay.toml"
    bad.write_text("port = 'eighty'\n")
    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "port" in result.stderr and "Traceback" not in result.stderr


def test_backup_copies_a_consistent_store(tmp_path: Path) -> None:
    async def fill() -> MailboxCapability:
        relay = RelayProcess(tmp_path / "data")
        try:
            await relay.wait_ready()
            s = await RelaySession.connect(relay.url)
            cap = MailboxCapability.generate()
            await s.create(cap)
            await s.auth(cap, "write")
            for n in range(20):
                await s.call("append", mailbox=cap.mailbox, blob=b"%d" % n)
            # Back up while the relay runs (in a thread: this event loop must stay free).
            result = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "relay",
                    "backup",
                    str(tmp_path / "copy.sqlite3"),
                    "--data-dir",
                    str(tmp_path / "data"),
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            await s.close()
            return cap
        finally:
            relay.stop()

    cap = asyncio.run(fill())
    restored = tmp_path / "restored"
    restored.mkdir()
    (tmp_path / "copy.sqlite3").rename(restored / "relay.sqlite3")

    async def check() -> None:
        relay = RelayProcess(restored)
        try:
            await relay.wait_ready()
            s = await RelaySession.connect(relay.url)
            await s.auth(cap, "read")
            assert [blob for _, blob in await _fetch_all(s, cap)] == [b"%d" % n for n in range(20)]
            await s.close()
        finally:
            relay.stop()

    asyncio.run(check())


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_native_tls(tmp_path: Path, processes: list[RelayProcess]) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    relay = RelayProcess(
        tmp_path / "data",
        env={"BACKCHANNEL_RELAY_TLS_CERT": str(cert), "BACKCHANNEL_RELAY_TLS_KEY": str(key)},
    )
    processes.append(relay)
    context = ssl.create_default_context(cafile=str(cert))
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 20
        while True:
            try:
                async with http.get(f"https://localhost:{relay.port}/healthz", ssl=context) as r:
                    assert r.status == 200
                    break
            except aiohttp.ClientConnectorError:
                assert time.monotonic() < deadline and relay.proc.poll() is None
                await asyncio.sleep(0.05)
        session = await RelaySession.connect(f"wss://localhost:{relay.port}/v1/ws", ssl=context)
        assert await session.call("ping") == {}
        await session.close()
        # Plain ws:// is not served on a TLS port.
        with pytest.raises(TransportError):
            await RelaySession.connect(f"ws://127.0.0.1:{relay.port}/v1/ws", timeout=3)
