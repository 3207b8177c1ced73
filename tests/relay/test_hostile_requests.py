"""Hostile requests over a live socket: only typed answers, no state change, no stuck connection."""

from __future__ import annotations

import asyncio

import aiohttp
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backchannel.transport.errors import Rejected
from relay.appkeys import CONNECTIONS, OPERATIONS, STORE
from relay.protocol import OPS, ErrFrame, Hello, OkFrame, decode_server_frame
from tests.conftest import RunningRelay

FIELDS = [
    "mailbox",
    "read_key",
    "write_key",
    "admin_key",
    "ttl",
    "role",
    "sig",
    "blob",
    "key",
    "epoch",
    "also",
    "after",
    "limit",
    "through",
]
KNOWN_CODES = {
    "bad_frame",
    "unsupported_version",
    "unknown_op",
    "invalid_field",
    "too_large",
    "denied",
    "exists",
    "stale_epoch",
    "rate_limited",
    "too_many_subscriptions",
    "mailbox_full",
    "store_full",
}
# Without a capability only these can succeed (they need none).
OPEN_OPS = {"ping", "unsubscribe", "create"}

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=80)
    | st.sampled_from([b"\0" * 16, b"\1" * 32, b"\2" * 64]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS), children, max_size=4)
    ),
    max_leaves=10,
)
requests = st.builds(
    lambda op, fields, rid: {"v": 1, "t": "req", "id": rid, "op": op, **fields},
    st.sampled_from([*OPS, "nope"]),
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=6),
    st.integers(min_value=0, max_value=2**32 - 1),
)


async def test_random_requests_get_typed_answers_and_write_nothing(relay: RunningRelay) -> None:
    examples: list[dict[str, object]] = []

    @settings(
        max_examples=400, suppress_health_check=list(HealthCheck), deadline=None, database=None
    )
    @given(requests)
    def collect(request: dict[str, object]) -> None:
        examples.append(request)

    collect()
    async with aiohttp.ClientSession() as http, http.ws_connect(relay.url, max_msg_size=0) as ws:
        assert isinstance(decode_server_frame((await ws.receive()).data), Hello)
        for request in examples:
            await ws.send_bytes(msgpack.packb(request, use_bin_type=True))
            answer = decode_server_frame((await ws.receive(timeout=5)).data)
            if isinstance(answer, OkFrame):
                assert request["op"] in OPEN_OPS, request
            else:
                assert isinstance(answer, ErrFrame), answer
                assert answer.code in KNOWN_CODES, (request, answer)
                assert answer.message
        await ws.send_bytes(msgpack.packb({"v": 1, "t": "req", "id": 1, "op": "ping"}))
        assert isinstance(decode_server_frame((await ws.receive(timeout=5)).data), OkFrame)
    # No capability was ever proven, so no entry can have been written.
    stats = await relay.app[STORE].stats()
    assert (stats.entries, stats.bytes) == (0, 0)


async def test_unreachable_store_fails_requests_and_health_then_nothing_is_acked(
    relay: RunningRelay,
) -> None:
    session = await relay.session()
    cap = await relay.mailbox(session)
    await relay.app[STORE].close()
    # An append must never be acknowledged while the store cannot make it durable.
    with pytest.raises(Rejected) as refused:
        await session.call("append", mailbox=cap.mailbox, blob=b"x")
    assert refused.value.code == "unavailable"
    async with aiohttp.ClientSession() as http, http.get(relay.http + "/healthz") as r:
        assert r.status == 503
        assert (await r.json()) == {"status": "unavailable"}
    assert await session.call("ping") == {}


async def test_connection_cap_refuses_with_503(start_relay: object) -> None:
    relay = await start_relay(max_connections=2)  # type: ignore[operator]
    await relay.session()
    await relay.session()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(relay.url)
        assert refused.value.status == 503


async def test_many_connections_come_and_go_without_leaking(relay: RunningRelay) -> None:
    owner = await relay.session()
    cap = await relay.mailbox(owner)
    for _ in range(3):
        sessions = [await relay.session() for _ in range(30)]
        for s in sessions:
            await s.auth(cap, "read")
            await s.call("subscribe", mailbox=cap.mailbox, after=0)
        for s in sessions:
            await s.close()
    for _ in range(100):
        if len(relay.app[CONNECTIONS]) == 1:
            break
        await asyncio.sleep(0.02)
    assert len(relay.app[CONNECTIONS]) == 1  # the owner's
    hub = relay.app[OPERATIONS].hub
    assert hub._subs == {}
    assert len(hub._grants.get(cap.mailbox, ())) == 1
