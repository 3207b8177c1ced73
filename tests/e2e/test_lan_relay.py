"""The built-in relay on a workshop LAN (``init --listen``), reached from other addresses.

Issue #16, item 8: with ``--listen 0.0.0.0`` links carried ``ws://127.0.0.1``, so
nobody on the LAN could join; the relay let anyone who reached it create mailboxes
(64 MiB into the facilitator's profile directory in half a second) and read
``/metrics``. Here the facilitator's relay listens on a wildcard or on 127.0.0.2, and
the others come from other loopback addresses (127.0.0.0/8 is all loopback on Linux):
a stranger at 127.0.0.3 plays the LAN neighbour. Only loopback addresses are dialled.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from backchannel.client import Client
from backchannel.embedded import GUEST_MAILBOXES, free_port
from backchannel.errors import BackchannelError
from backchannel.rooms.invites import parse_invite
from backchannel.transport.errors import Denied, MailboxExists, Rejected, StoreFull
from backchannel.transport.session import MailboxCapability, RelaySession
from backchannel.views import JoinRequested

from .harness import PASSPHRASE, Person, eventually, false_alarms, wait_event

STRANGER = "127.0.0.3"


def _loopback_aliases_work() -> bool:
    try:
        with socket.socket() as s:
            s.bind((STRANGER, 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _loopback_aliases_work(), reason="127.0.0.3 is not a loopback address here (not Linux)"
)


def _machine_address() -> str | None:
    """This machine's address towards its default route, if it has one (nothing is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("203.0.113.7", 9))
            address = str(s.getsockname()[0])
    except OSError:
        return None
    return None if ipaddress.ip_address(address).is_loopback else address


async def _facilitator(tmp_path: Path, listen_host: str) -> tuple[Person, int]:
    port = free_port(listen_host if listen_host != "0.0.0.0" else "127.0.0.1")
    fac = Person("Farida", tmp_path / "farida", "unused")
    fac.client = await Client.create(
        fac.home, name="Farida", passphrase=PASSPHRASE, listen=f"{listen_host}:{port}"
    )
    await fac.client.close()
    await fac.start()
    return fac, port


@pytest.fixture
async def stranger_http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that dials from 127.0.0.3: the LAN neighbour."""
    connector = aiohttp.TCPConnector(local_addr=(STRANGER, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        yield http


def _with_host(url: str, host: str) -> str:
    """``url`` on ``host``: another address of the same relay (the link's query kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{host}:{parts.port}", parts.path, parts.query, ""))


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def test_links_from_a_wildcard_listen_carry_this_machines_address(tmp_path: Path) -> None:
    machine = _machine_address()
    if machine is None:
        pytest.skip("this machine has no address but loopback: no LAN to advertise")
    fac, port = await _facilitator(tmp_path, "0.0.0.0")
    try:
        room = (await fac.c.create_room("Workshop")).id
        link = await fac.c.invite(room)
        relay = parse_invite(link, now=0).relay_url
        host = urlsplit(relay).hostname
        assert host is not None and urlsplit(relay).port == port
        assert not ipaddress.ip_address(host).is_loopback, relay
        assert not ipaddress.ip_address(host).is_unspecified, relay
        assert host == machine
        with socket.socket() as s:  # an address of this machine: it can be bound here
            s.bind((host, 0))
        # A joiner on another relay is told to use the link's relay, not 127.0.0.1.
        other = Person("Ben", tmp_path / "ben", "ws://127.0.0.1:9/v1/ws")
        await other.start(create=True)
        try:
            with pytest.raises(BackchannelError, match=host.replace(".", r"\.")):
                await other.c.join(link)
        finally:
            await other.stop()
    finally:
        await fac.stop()


async def test_an_invited_person_joins_and_a_stranger_creates_nothing(
    tmp_path: Path, stranger_http: aiohttp.ClientSession
) -> None:
    fac, port = await _facilitator(tmp_path, "127.0.0.2")
    ben: Person | None = None
    try:
        room = (await fac.c.create_room("Workshop")).id
        link = await fac.c.invite(room)
        relay = Client.invite_relay(link)
        assert urlsplit(relay).hostname == "127.0.0.2"
        # The invited person: a profile on the link's relay, joining through it.
        ben = Person("Ben", tmp_path / "ben", relay)
        await ben.start(create=True)
        rid = await ben.c.join(link)
        request = await wait_event(fac, JoinRequested)
        await fac.c.approve(room, request.request.id)
        assert (await ben.c.wait_join(rid, 30)) is not None
        await ben.c.send(room, "hello from the second row")

        async def arrived() -> bool:
            return "hello from the second row" in {m.text for m in await fac.c.history(room)}

        await eventually(arrived, timeout=30)
        # The stranger reaches the same relay from 127.0.0.3, without the link.
        base = f"ws://127.0.0.2:{port}/v1/ws"
        for url in (base, base + "?admit=" + "A" * 32):
            session = await RelaySession.connect(url, http=stranger_http)
            try:
                with pytest.raises(Denied):
                    await session.create(MailboxCapability.generate())
            finally:
                await session.close()
        for p in (fac, ben):
            assert false_alarms(p) == [], (p.name, false_alarms(p))
    finally:
        if ben is not None:
            await ben.stop()
        await fac.stop()


async def test_a_stranger_on_the_lan_cannot_fill_the_facilitators_disk(
    tmp_path: Path, stranger_http: aiohttp.ClientSession
) -> None:
    fac, port = await _facilitator(tmp_path, "0.0.0.0")
    try:
        await fac.c.create_room("Workshop")
        await fac.c.sync()
        before = _tree_bytes(fac.home / "relay")
        # The reported attack: create mailboxes, then write as much as they hold.
        session = await RelaySession.connect(f"ws://127.0.0.2:{port}/v1/ws", http=stranger_http)
        refused = 0
        try:
            blob = os.urandom(256 * 1024)
            for _ in range(64):  # 16 MiB if it got in
                cap = MailboxCapability.generate()
                with pytest.raises(Denied):
                    await session.create(cap)
                refused += 1
                with pytest.raises(Denied):
                    await session.auth(cap, "write")
                with pytest.raises(Rejected):
                    await session.call("append", mailbox=cap.mailbox, blob=blob, key=os.urandom(16))
        finally:
            await session.close()
        assert refused == 64
        await fac.c.sync()
        assert _tree_bytes(fac.home / "relay") - before < 1024 * 1024
    finally:
        await fac.stop()


async def test_metrics_are_not_served_to_the_lan(
    tmp_path: Path, stranger_http: aiohttp.ClientSession
) -> None:
    fac, port = await _facilitator(tmp_path, "0.0.0.0")
    try:
        async with stranger_http.get(f"http://127.0.0.2:{port}/healthz") as r:
            assert r.status == 200  # the stranger does reach the relay...
        async with stranger_http.get(f"http://127.0.0.2:{port}/metrics") as r:
            assert r.status == 404  # ...but not its metrics
            assert "relay_" not in await r.text()
    finally:
        await fac.stop()


async def test_guests_have_a_small_quota_and_the_facilitator_keeps_working(
    tmp_path: Path, stranger_http: aiohttp.ClientSession
) -> None:
    fac, _ = await _facilitator(tmp_path, "0.0.0.0")
    try:
        room = (await fac.c.create_room("Workshop")).id
        link = await fac.c.invite(room)
        guest_url = _with_host(parse_invite(link, now=0).relay_url, "127.0.0.2")
        assert "admit=" in guest_url
        # One connection may create 200 at once (its rate limit): the quota is the
        # token's, across connections, so a guest cannot reset it by reconnecting.
        created, full = 0, False
        for _ in range(GUEST_MAILBOXES // 100 + 2):  # bounded: a few connections
            session = await RelaySession.connect(guest_url, http=stranger_http)
            try:
                for _ in range(100):
                    try:
                        await session.create(MailboxCapability.generate())
                    except StoreFull:
                        full = True
                        break
                    created += 1
            finally:
                await session.close()
            if full:
                break
        assert full and created == GUEST_MAILBOXES
        # A mailbox that exists still reads "exists" (a room's next mailbox, opened by
        # another member), and the facilitator's own client is not held to the quota.
        session = await RelaySession.connect(guest_url, http=stranger_http)
        try:
            cap = MailboxCapability.generate()
            owner = await RelaySession.connect(fac.c.connection.url)  # type: ignore[union-attr]
            try:
                await owner.create(cap)
            finally:
                await owner.close()
            with pytest.raises(MailboxExists):
                await session.create(cap)
        finally:
            await session.close()
        await asyncio.wait_for(fac.c.create_room("After the guests"), 30)
        assert len(await fac.c.rooms()) == 2
    finally:
        await fac.stop()
