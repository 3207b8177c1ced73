"""A relay that admits new mailboxes only with a token (the built-in relay of a client).

``RelayConfig.admission``: creating a mailbox needs ``/v1/ws?admit=TOKEN`` with a known
token, within that token's quota; everything else works by capability, as on any
relay. Issue #16, item 8 (a LAN neighbour filled the facilitator's disk).
"""

from __future__ import annotations

import pytest

from backchannel.transport.errors import Denied, MailboxExists, StoreFull
from backchannel.transport.session import MailboxCapability, RelaySession
from relay.config import Admission
from relay.errors import ConfigError
from tests.conftest import RelayFactory, RunningRelay

OWNER = "o" * 32
GUEST = "g" * 32


@pytest.fixture
async def gated(start_relay: RelayFactory) -> RunningRelay:
    relay: RunningRelay = await start_relay(
        admission=(Admission(OWNER, None), Admission(GUEST, 3)),
        request_burst=1000,
    )
    return relay


async def _session(relay: RunningRelay, token: str | None) -> RelaySession:
    url = relay.url if token is None else f"{relay.url}?admit={token}"
    session = await RelaySession.connect(url)
    relay.sessions.append(session)
    return session


async def test_without_a_known_token_nothing_is_created(gated: RunningRelay) -> None:
    for token in (None, "x" * 32, GUEST[:-1], GUEST + "g"):
        session = await _session(gated, token)
        cap = MailboxCapability.generate()
        with pytest.raises(Denied):
            await session.create(cap)
        with pytest.raises(Denied):  # and so nothing to authenticate to
            await session.auth(cap, "write")


async def test_guests_share_one_quota_the_owner_has_none(gated: RunningRelay) -> None:
    first, second = await _session(gated, GUEST), await _session(gated, GUEST)
    await first.create(MailboxCapability.generate())
    taken = MailboxCapability.generate()
    await second.create(taken)
    with pytest.raises(MailboxExists):  # a refused create uses none of the quota
        await first.create(taken)
    await second.create(MailboxCapability.generate())
    for session in (first, second, await _session(gated, GUEST)):  # a new connection too
        with pytest.raises(StoreFull):
            await session.create(MailboxCapability.generate())
    owner = await _session(gated, OWNER)
    caps = [MailboxCapability.generate() for _ in range(10)]
    for cap in caps:
        await owner.create(cap)
    # Everything but creating works by capability, token or not.
    stranger = await _session(gated, None)
    await stranger.auth(caps[0], "write")
    await stranger.auth(caps[0], "read")
    await stranger.call("append", mailbox=caps[0].mailbox, blob=b"sealed", key=b"k" * 16)


async def test_an_existing_mailbox_reads_exists_to_everyone(gated: RunningRelay) -> None:
    owner = await _session(gated, OWNER)
    cap = MailboxCapability.generate()
    await owner.create(cap)
    for token in (None, GUEST):
        with pytest.raises(MailboxExists):
            await (await _session(gated, token)).create(cap)


async def test_a_relay_without_tokens_admits_anyone(relay: RunningRelay) -> None:
    session = await _session(relay, "whatever-is-ignored")
    await session.create(MailboxCapability.generate())


def test_tokens_are_checked() -> None:
    for bad in ("short", "x" * 129, "no spaces here at all!!", "é" * 20):
        with pytest.raises(ConfigError):
            Admission(bad)
    with pytest.raises(ConfigError):
        Admission("x" * 16, -1)
    assert "x" * 16 not in repr(Admission("x" * 16))
