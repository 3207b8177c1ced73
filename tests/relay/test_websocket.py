"""The relay over a real loopback WebSocket: every operation, its guarantees and its limits."""

from __future__ import annotations

import asyncio
import logging
import os

import aiohttp
import msgpack
import pytest

from backchannel.transport.errors import Rejected
from backchannel.transport.session import MailboxCapability, RelaySession
from relay.appkeys import METRICS
from relay.protocol import ErrFrame, Push, Revoked, auth_message
from tests.conftest import FakeClock, RunningRelay


async def drain(session: RelaySession, count: int, timeout: float = 10.0) -> list[Push]:
    """Receive ``count`` pushes (failing on anything else)."""
    out = []
    for _ in range(count):
        event = await session.next_event(timeout)
        assert isinstance(event, Push), event
        out.append(event)
    return out


async def rejected(awaitable: object) -> Rejected:
    with pytest.raises(Rejected) as info:
        await awaitable  # type: ignore[misc]
    return info.value


# -- connection basics --------------------------------------------------------------------------


async def test_hello_carries_a_fresh_nonce_and_limits(relay: RunningRelay) -> None:
    a, b = await relay.session(), await relay.session()
    assert a.hello is not None and b.hello is not None
    assert len(a.nonce) == 32 and a.nonce != b.nonce
    assert a.hello.limits["max_blob_bytes"] == relay.config.limits.max_blob_bytes
    assert a.hello.server.startswith("backchannel-relay/")
    assert await a.call("ping") == {}


async def test_http_endpoints(relay: RunningRelay) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(relay.http + "/healthz") as r:
            assert r.status == 200
            assert r.headers["Server"] == "backchannel-relay"  # no stack versions
            assert (await r.json()) == {"status": "ok"}
        async with http.get(relay.http + "/v1/info") as r:
            info = await r.json()
            assert info["protocol"] == 1
            assert info["limits"]["default_ttl"] == 14 * 86400
        async with http.get(relay.http + "/nope") as r:
            assert r.status == 404


async def test_metrics_count_requests_and_name_no_mailbox(relay: RunningRelay) -> None:
    s = await relay.session()
    cap = await relay.mailbox(s)
    await s.call("append", mailbox=cap.mailbox, blob=b"x" * 100)
    await rejected(s.call("fetch", mailbox=os.urandom(16), after=0))
    async with aiohttp.ClientSession() as http, http.get(relay.http + "/metrics") as r:
        text = await r.text()
    assert 'backchannel_relay_requests_total{op="append",result="ok"} 1.0' in text
    assert 'backchannel_relay_requests_total{op="fetch",result="denied"} 1.0' in text
    assert "backchannel_relay_stored_messages 1.0" in text
    assert "backchannel_relay_stored_bytes 100.0" in text
    assert "backchannel_relay_connections 1.0" in text
    assert "backchannel_relay_store_latency_seconds_bucket" in text
    assert cap.mailbox.hex() not in text


async def test_default_log_level_names_no_mailbox(
    relay: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    s = await relay.session()
    cap = await relay.mailbox(s)
    await s.call("append", mailbox=cap.mailbox, blob=b"secret-ish")
    await rejected(s.call("append", mailbox=cap.mailbox, blob=b"x", epoch=7))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert cap.mailbox.hex() not in logged
    assert "secret-ish" not in logged
    assert "127.0.0.1" not in logged


# -- append, ordering, idempotency ------------------------------------------------------------


async def test_concurrent_appends_are_ordered_gapless_and_per_connection_fifo(
    relay: RunningRelay,
) -> None:
    reader = await relay.session()
    cap = await relay.mailbox(reader)
    await reader.call("subscribe", mailbox=cap.mailbox, after=0)
    writers = [await relay.session() for _ in range(5)]
    for w in writers:
        await w.auth(cap, "write")

    async def write(index: int, w: RelaySession) -> list[int]:
        # Pipelined: all requests are in flight at once on this connection.
        answers = await asyncio.gather(
            *(
                w.call("append", mailbox=cap.mailbox, blob=f"{index}:{n}".encode())
                for n in range(40)
            )
        )
        return [a["seq"] for a in answers]

    seqs = await asyncio.gather(*(write(i, w) for i, w in enumerate(writers)))
    everything = sorted(s for per in seqs for s in per)
    assert everything == list(range(1, 201))
    for per in seqs:  # one connection's requests take effect in the order sent
        assert per == sorted(per)
    pushes = await drain(reader, 200)
    assert [p.seq for p in pushes] == list(range(1, 201))
    by_seq = {seq: f"{i}:{n}".encode() for i, per in enumerate(seqs) for n, seq in enumerate(per)}
    assert all(p.blob == by_seq[p.seq] for p in pushes)


async def test_retried_append_with_same_key_is_stored_once(relay: RunningRelay) -> None:
    s = await relay.session()
    cap = await relay.mailbox(s)
    key = os.urandom(16)
    first = await s.call("append", mailbox=cap.mailbox, blob=b"once", key=key)
    again = await s.call("append", mailbox=cap.mailbox, blob=b"once", key=key)
    assert first == {"seq": 1}
    assert again == {"seq": 1, "duplicate": True}
    # A retry after a reconnect (the first ack was lost) is recognised too.
    other = await relay.session()
    await other.auth(cap, "write")
    assert await other.call("append", mailbox=cap.mailbox, blob=b"once", key=key) == {
        "seq": 1,
        "duplicate": True,
    }
    page = await s.call("fetch", mailbox=cap.mailbox, after=0)
    assert page["entries"] == [[1, b"once"]]


async def test_exactly_one_commit_wins_each_epoch(relay: RunningRelay) -> None:
    owner = await relay.session()
    cap = await relay.mailbox(owner)
    rivals = [await relay.session() for _ in range(8)]
    for r in rivals:
        await r.auth(cap, "write")
    results = await asyncio.gather(
        *(
            r.call("append", mailbox=cap.mailbox, blob=f"commit-{i}".encode(), epoch=0)
            for i, r in enumerate(rivals)
        ),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, dict)]
    losses = [r for r in results if isinstance(r, Rejected)]
    assert len(wins) == 1 and wins[0]["epoch"] == 1
    assert len(losses) == 7
    assert all(e.code == "stale_epoch" and e.epoch == 1 for e in losses)
    # The next epoch is open to the next commit, and a commit for a future epoch is stale too.
    assert (await owner.call("append", mailbox=cap.mailbox, blob=b"next", epoch=1))["epoch"] == 2
    assert (
        await rejected(owner.call("append", mailbox=cap.mailbox, blob=b"x", epoch=9))
    ).epoch == 2
    # Plain appends (application messages) ignore epochs.
    assert "epoch" not in await owner.call("append", mailbox=cap.mailbox, blob=b"chat")


async def test_welcomes_of_a_losing_commit_are_never_delivered(relay: RunningRelay) -> None:
    room_owner = await relay.session()
    room = await relay.mailbox(room_owner)
    inbox_owner = await relay.session()
    inbox = await relay.mailbox(inbox_owner)
    a, b = await relay.session(), await relay.session()
    for s in (a, b):
        await s.auth(room, "write")
        await s.auth(inbox, "write")
    win = await a.call(
        "append",
        mailbox=room.mailbox,
        blob=b"commit-a",
        epoch=0,
        also=[{"mailbox": inbox.mailbox, "blob": b"welcome-a"}],
    )
    assert win == {"seq": 1, "epoch": 1, "also": [1]}
    lost = await rejected(
        b.call(
            "append",
            mailbox=room.mailbox,
            blob=b"commit-b",
            epoch=0,
            also=[{"mailbox": inbox.mailbox, "blob": b"welcome-b"}],
        )
    )
    assert lost.code == "stale_epoch"
    page = await inbox_owner.call("fetch", mailbox=inbox.mailbox, after=0)
    assert page["entries"] == [[1, b"welcome-a"]]


async def test_also_entries_need_write_access_to_their_mailbox(relay: RunningRelay) -> None:
    s = await relay.session()
    room = await relay.mailbox(s)
    stranger = await relay.mailbox(await relay.session())  # s is not authorised on it
    err = await rejected(
        s.call(
            "append",
            mailbox=room.mailbox,
            blob=b"c",
            epoch=0,
            also=[{"mailbox": stranger.mailbox, "blob": b"w"}],
        )
    )
    assert err.code == "denied"
    assert (await s.call("fetch", mailbox=room.mailbox, after=0))["entries"] == []
    assert (await s.call("append", mailbox=room.mailbox, blob=b"c", epoch=0))["epoch"] == 1


# -- fetch, subscribe, trim ------------------------------------------------------------------


async def test_fetch_pages_from_a_cursor(start_relay: object) -> None:
    relay = await start_relay(max_fetch=10)  # type: ignore[operator]
    s = await relay.session()
    cap = await relay.mailbox(s)
    for n in range(25):
        await s.call("append", mailbox=cap.mailbox, blob=bytes([n]))
    seen, cursor = [], 0
    while True:
        page = await s.call("fetch", mailbox=cap.mailbox, after=cursor, limit=100)
        assert len(page["entries"]) <= 10 and page["head"] == 25
        seen += page["entries"]
        if not page["more"]:
            break
        cursor = page["entries"][-1][0]
    assert [e[0] for e in seen] == list(range(1, 26))
    assert [e[1] for e in seen] == [bytes([n]) for n in range(25)]


async def test_subscribe_backlog_then_live_without_gap_or_duplicate(relay: RunningRelay) -> None:
    writer = await relay.session()
    cap = await relay.mailbox(writer)
    for n in range(300):
        await writer.call("append", mailbox=cap.mailbox, blob=b"old-%d" % n)
    reader = await relay.session()
    await reader.auth(cap, "read")

    async def keep_writing() -> None:
        for n in range(300):
            await writer.call("append", mailbox=cap.mailbox, blob=b"new-%d" % n)

    # Subscribe while appends keep arriving, so the backlog/live seam is crossed under load.
    task = asyncio.create_task(keep_writing())
    await asyncio.sleep(0.01)
    await reader.call("subscribe", mailbox=cap.mailbox, after=0)
    pushes = await drain(reader, 600)
    await task
    assert [p.seq for p in pushes] == list(range(1, 601))
    with pytest.raises(TimeoutError):
        await reader.next_event(0.3)


async def test_subscribe_from_a_cursor_and_resubscribe(relay: RunningRelay) -> None:
    s = await relay.session()
    cap = await relay.mailbox(s)
    for n in range(5):
        await s.call("append", mailbox=cap.mailbox, blob=bytes([n]))
    await s.call("subscribe", mailbox=cap.mailbox, after=3)
    assert [p.seq for p in await drain(s, 2)] == [4, 5]
    await s.call("unsubscribe", mailbox=cap.mailbox)
    await s.call("append", mailbox=cap.mailbox, blob=b"while away")
    with pytest.raises(TimeoutError):
        await s.next_event(0.3)
    await s.call("subscribe", mailbox=cap.mailbox, after=5)
    assert [p.blob for p in await drain(s, 1)] == [b"while away"]


async def test_trim_deletes_up_to_a_sequence_number(relay: RunningRelay) -> None:
    s = await relay.session()
    cap = await relay.mailbox(s)
    for n in range(6):
        await s.call("append", mailbox=cap.mailbox, blob=bytes([n]))
    assert await s.call("trim", mailbox=cap.mailbox, through=4) == {"deleted": 4}
    assert await s.call("trim", mailbox=cap.mailbox, through=4) == {"deleted": 0}
    page = await s.call("fetch", mailbox=cap.mailbox, after=0)
    assert [e[0] for e in page["entries"]] == [5, 6] and page["head"] == 6
    await s.call("subscribe", mailbox=cap.mailbox, after=0)
    assert [p.seq for p in await drain(s, 2)] == [5, 6]
    assert (await s.call("append", mailbox=cap.mailbox, blob=b"7"))["seq"] == 7
    assert [p.seq for p in await drain(s, 1)] == [7]


async def test_trim_needs_read_access(relay: RunningRelay) -> None:
    owner = await relay.session()
    cap = await relay.mailbox(owner)
    await owner.call("append", mailbox=cap.mailbox, blob=b"keep")
    writer_only = await relay.session()
    await writer_only.auth(cap, "write")
    assert (
        await rejected(writer_only.call("trim", mailbox=cap.mailbox, through=1))
    ).code == "denied"
    assert (
        await rejected(writer_only.call("fetch", mailbox=cap.mailbox, after=0))
    ).code == "denied"
    assert len((await owner.call("fetch", mailbox=cap.mailbox, after=0))["entries"]) == 1


# -- capabilities ------------------------------------------------------------------------------


async def test_every_mailbox_operation_needs_its_capability(relay: RunningRelay) -> None:
    owner = await relay.session()
    cap = await relay.mailbox(owner)
    s = await relay.session()
    for op, fields in [
        ("append", {"blob": b"x"}),
        ("fetch", {"after": 0}),
        ("subscribe", {"after": 0}),
        ("trim", {"through": 1}),
    ]:
        assert (await rejected(s.call(op, mailbox=cap.mailbox, **fields))).code == "denied"
    # A read key does not grant writing.
    await s.auth(cap, "read")
    assert (await rejected(s.call("append", mailbox=cap.mailbox, blob=b"x"))).code == "denied"


async def test_auth_failures_are_indistinguishable(relay: RunningRelay) -> None:
    s = await relay.session()
    cap = await relay.mailbox(s)
    wrong_key = MailboxCapability.generate(cap.mailbox)
    unknown = MailboxCapability.generate()
    # The relay's own frames, as sent: the client keeps no relay text to compare.
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(relay.url)
        nonce = msgpack.unpackb((await ws.receive()).data)["nonce"]
        answers = []
        for n, (key, mailbox, role) in enumerate(
            [(wrong_key, cap.mailbox, "read"), (unknown, unknown.mailbox, "read")], 1
        ):
            assert key.read is not None
            sig = key.read.sign(auth_message(nonce, role, mailbox))
            request = {"v": 1, "t": "req", "id": n, "op": "auth", "mailbox": mailbox}
            await ws.send_bytes(msgpack.packb(request | {"role": role, "sig": sig}))
            answers.append(msgpack.unpackb((await ws.receive()).data))
        bad = {"v": 1, "t": "req", "id": 3, "op": "auth", "mailbox": cap.mailbox}
        await ws.send_bytes(msgpack.packb(bad | {"role": "write", "sig": b"\0" * 64}))
        answers.append(msgpack.unpackb((await ws.receive()).data))
        await ws.close()
    assert len({(a["t"], a["code"], a.get("message")) for a in answers}) == 1, answers
    assert answers[0]["code"] == "denied"
    # And through the client: the same refusal, in the client's own words.
    e1 = await rejected(s.auth(wrong_key, "read"))
    e2 = await rejected(s.auth(unknown, "read"))
    assert (e1.code, str(e1)) == (e2.code, str(e2)) == ("denied", str(e1))


async def test_a_signature_captured_on_one_connection_is_worthless_on_another(
    relay: RunningRelay,
) -> None:
    victim = await relay.session()
    cap = await relay.mailbox(victim, roles=())
    assert cap.read is not None
    sig = cap.read.sign(auth_message(victim.nonce, "read", cap.mailbox))
    await victim.call("auth", mailbox=cap.mailbox, role="read", sig=sig)
    attacker = await relay.session()
    err = await rejected(attacker.call("auth", mailbox=cap.mailbox, role="read", sig=sig))
    assert err.code == "denied"
    assert (await rejected(attacker.call("fetch", mailbox=cap.mailbox, after=0))).code == "denied"


async def test_rotate_locks_out_the_old_keys(relay: RunningRelay) -> None:
    facilitator = await relay.session()
    cap = await relay.mailbox(facilitator)
    removed = await relay.session()
    await removed.auth(cap, "read")
    await removed.auth(cap, "write")
    await removed.call("subscribe", mailbox=cap.mailbox, after=0)

    new = MailboxCapability.generate(cap.mailbox)
    await facilitator.rotate(cap, new)

    revoked = await removed.next_event(5)
    assert isinstance(revoked, Revoked) and revoked.mailbox == cap.mailbox
    assert revoked.reason == "rotated"
    # Existing grants are gone: no posting, no reading, no new subscription.
    assert (await rejected(removed.call("append", mailbox=cap.mailbox, blob=b"x"))).code == "denied"
    assert (await rejected(removed.call("fetch", mailbox=cap.mailbox, after=0))).code == "denied"
    assert (await rejected(removed.auth(cap, "read"))).code == "denied"
    assert (await rejected(removed.auth(cap, "write"))).code == "denied"
    # The rotator must prove the new keys too; then everything works with them.
    assert (
        await rejected(facilitator.call("append", mailbox=cap.mailbox, blob=b"x"))
    ).code == "denied"
    await facilitator.auth(new, "write")
    await facilitator.auth(new, "read")
    await facilitator.call("append", mailbox=cap.mailbox, blob=b"after rotation")
    with pytest.raises(TimeoutError):
        await removed.next_event(0.3)


async def test_rotate_needs_the_admin_key_and_a_fresh_signature(relay: RunningRelay) -> None:
    owner = await relay.session()
    cap = await relay.mailbox(owner)
    member = MailboxCapability(cap.mailbox, read=cap.read, write=cap.write, admin=cap.write)
    new = MailboxCapability.generate(cap.mailbox)
    # A member holding only the read and write keys cannot rotate when an admin key is set.
    assert (await rejected(owner.rotate(member, new))).code == "denied"
    # A rotate signed for another connection's nonce is refused.
    other = await relay.session()
    assert cap.admin is not None
    await other.rotate(cap, new)
    newer = MailboxCapability.generate(cap.mailbox)
    assert (
        await rejected(owner.rotate(cap, newer))
    ).code == "denied"  # old admin key no longer valid


# -- limits ----------------------------------------------------------------------------------


async def test_blob_size_limit(start_relay: object) -> None:
    relay = await start_relay(max_blob_bytes=1000, max_frame_bytes=8192)  # type: ignore[operator]
    s = await relay.session()
    cap = await relay.mailbox(s)
    assert (
        await rejected(s.call("append", mailbox=cap.mailbox, blob=b"x" * 1001))
    ).code == "too_large"
    assert (await s.call("append", mailbox=cap.mailbox, blob=b"x" * 1000))["seq"] == 1


async def test_oversize_frame_closes_with_1009(start_relay: object) -> None:
    relay = await start_relay(max_blob_bytes=1000, max_frame_bytes=8192)  # type: ignore[operator]
    s = await relay.session()
    await s.send_raw(b"\x00" * 10_000)
    for _ in range(100):
        if s.closed:
            break
        await asyncio.sleep(0.02)
    assert s.closed
    await asyncio.sleep(0.05)
    assert s.close_code == 1009


async def test_mailbox_quota_refuses_without_partial_write(start_relay: object) -> None:
    relay = await start_relay(mailbox_max_entries=3)  # type: ignore[operator]
    s = await relay.session()
    room, inbox = await relay.mailbox(s), await relay.mailbox(s)
    for n in range(3):
        await s.call("append", mailbox=inbox.mailbox, blob=bytes([n]))
    err = await rejected(
        s.call(
            "append",
            mailbox=room.mailbox,
            blob=b"c",
            epoch=0,
            also=[{"mailbox": inbox.mailbox, "blob": b"w"}],
        )
    )
    assert err.code == "mailbox_full"
    # Neither the main entry nor the epoch moved.
    assert (await s.call("fetch", mailbox=room.mailbox, after=0))["entries"] == []
    assert (await s.call("append", mailbox=room.mailbox, blob=b"c", epoch=0))["epoch"] == 1
    await s.call("trim", mailbox=inbox.mailbox, through=3)
    assert (await s.call("append", mailbox=inbox.mailbox, blob=b"room again"))["seq"] == 4


async def test_store_quota(start_relay: object) -> None:
    relay = await start_relay(store_max_bytes=1000)  # type: ignore[operator]
    s = await relay.session()
    cap = await relay.mailbox(s)
    await s.call("append", mailbox=cap.mailbox, blob=b"x" * 900)
    assert (
        await rejected(s.call("append", mailbox=cap.mailbox, blob=b"x" * 200))
    ).code == "store_full"
    assert (await s.call("append", mailbox=cap.mailbox, blob=b"x" * 100))["seq"] == 2


async def test_append_rate_limit_per_connection(start_relay: object) -> None:
    relay = await start_relay(appends_per_second=2.0, append_burst=3)  # type: ignore[operator]
    s = await relay.session()
    cap = await relay.mailbox(s)
    for _ in range(2):  # the create took one token
        await s.call("append", mailbox=cap.mailbox, blob=b"x")
    err = await rejected(s.call("append", mailbox=cap.mailbox, blob=b"x"))
    assert err.code == "rate_limited" and err.retry_after is not None and 0 < err.retry_after <= 0.5
    # Another connection has its own bucket.
    other = await relay.session()
    await other.auth(cap, "write")
    assert (await other.call("append", mailbox=cap.mailbox, blob=b"y"))["seq"] == 3
    await asyncio.sleep(err.retry_after + 0.05)
    assert (await s.call("append", mailbox=cap.mailbox, blob=b"x"))["seq"] == 4


async def test_subscription_limit(start_relay: object) -> None:
    relay = await start_relay(max_subscriptions=2)  # type: ignore[operator]
    s = await relay.session()
    caps = [await relay.mailbox(s) for _ in range(3)]
    await s.call("subscribe", mailbox=caps[0].mailbox, after=0)
    await s.call("subscribe", mailbox=caps[1].mailbox, after=0)
    await s.call("subscribe", mailbox=caps[1].mailbox, after=0)  # re-subscribing is not another one
    assert (
        await rejected(s.call("subscribe", mailbox=caps[2].mailbox, after=0))
    ).code == "too_many_subscriptions"
    await s.call("unsubscribe", mailbox=caps[0].mailbox)
    await s.call("subscribe", mailbox=caps[2].mailbox, after=0)


async def test_ttl_above_the_maximum_is_refused(relay: RunningRelay) -> None:
    s = await relay.session()
    cap = MailboxCapability.generate()
    err = await rejected(s.create(cap, ttl=relay.config.max_ttl + 1))
    assert err.code == "invalid_field"
    assert (await s.create(cap, ttl=3600)) == {"ttl": 3600}
    assert (await rejected(s.create(cap))).code == "exists"


async def test_slow_consumer_is_disconnected_not_buffered(start_relay: object) -> None:
    relay = await start_relay(
        send_queue_bytes=256 * 1024, appends_per_second=10_000.0, append_burst=10_000
    )  # type: ignore[operator]
    writer = await relay.session()
    cap = await relay.mailbox(writer)
    assert cap.read is not None
    async with aiohttp.ClientSession() as http:
        # A raw client that subscribes and then never reads its socket.
        ws = await http.ws_connect(relay.url, max_msg_size=0)
        hello = msgpack.unpackb((await ws.receive()).data)
        sig = cap.read.sign(auth_message(hello["nonce"], "read", cap.mailbox))
        for request in (
            {
                "v": 1,
                "t": "req",
                "id": 1,
                "op": "auth",
                "mailbox": cap.mailbox,
                "role": "read",
                "sig": sig,
            },
            {"v": 1, "t": "req", "id": 2, "op": "subscribe", "mailbox": cap.mailbox, "after": 0},
        ):
            await ws.send_bytes(msgpack.packb(request))
            assert msgpack.unpackb((await ws.receive()).data)["t"] == "ok"
        blob = os.urandom(200 * 1024)
        for _ in range(200):  # 40 MB: far more than socket buffers plus the send queue
            await writer.call("append", mailbox=cap.mailbox, blob=blob)
            if relay.app[METRICS].disconnects["slow_consumer"]:
                break
        # Now read: after the queued pushes, the close frame says why.
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        assert ws.close_code == 4008
        await ws.close()
    # The writer was not disturbed.
    assert (await writer.call("ping")) == {}


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xc1", "bad_frame"),
        (msgpack.packb([1, 2, 3]), "bad_frame"),
        (msgpack.packb({"v": 2, "t": "req", "id": 1, "op": "ping"}), "unsupported_version"),
        (msgpack.packb({"v": 1, "t": "req", "id": 1, "op": "launch"}), "unknown_op"),
        (msgpack.packb({"v": 1, "t": "req", "op": "ping"}), "invalid_field"),
        (
            msgpack.packb(
                {"v": 1, "t": "req", "id": 1, "op": "fetch", "mailbox": b"short", "after": 0}
            ),
            "invalid_field",
        ),
        (
            msgpack.packb(
                {"v": 1, "t": "req", "id": 1, "op": "fetch", "mailbox": b"m" * 16, "after": -1}
            ),
            "invalid_field",
        ),
        (
            msgpack.packb(
                {"v": 1, "t": "req", "id": 1, "op": "append", "mailbox": b"m" * 16, "blob": "text"}
            ),
            "invalid_field",
        ),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "t": "req",
                    "id": 1,
                    "op": "create",
                    "mailbox": b"m" * 16,
                    "read_key": b"k" * 32,
                    "write_key": b"\xff" * 31,
                }
            ),
            "invalid_field",
        ),
        (msgpack.packb({"v": 1, "t": "ok", "id": 1}), "bad_frame"),
    ],
)
async def test_malformed_frames_get_an_error_and_change_nothing(
    relay: RunningRelay, frame: bytes, code: str
) -> None:
    s = await relay.session()
    await s.send_raw(frame)
    event = await s.next_event(5)
    assert isinstance(event, ErrFrame) and event.code == code
    assert event.message and "Traceback" not in event.message
    assert await s.call("ping") == {}
    async with aiohttp.ClientSession() as http, http.get(relay.http + "/metrics") as r:
        assert "backchannel_relay_stored_messages 0.0" in await r.text()


async def test_text_frames_and_random_garbage_never_break_the_connection(
    relay: RunningRelay,
) -> None:
    s = await relay.session()
    cap = await relay.mailbox(s)
    await s.send_raw("hello?")
    assert (await s.next_event(5)).code == "bad_frame"  # type: ignore[union-attr]
    rng = __import__("random").Random(7)
    for _ in range(300):
        await s.send_raw(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
    for _ in range(300):
        event = await s.next_event(5)
        assert isinstance(event, ErrFrame)
        assert event.code in {"bad_frame", "unsupported_version", "invalid_field", "unknown_op"}
    assert await s.call("ping") == {}
    assert (await s.call("fetch", mailbox=cap.mailbox, after=0))["entries"] == []


# -- expiry -----------------------------------------------------------------------------------


async def test_entries_expire_and_are_swept(start_relay: object) -> None:
    clock = FakeClock()
    relay = await start_relay(clock=clock, expiry_granularity=1, sweep_interval=0.05)  # type: ignore[operator]
    s = await relay.session()
    cap = await relay.mailbox(s, ttl=3600)
    await s.call("append", mailbox=cap.mailbox, blob=b"short", ttl=60)
    await s.call("append", mailbox=cap.mailbox, blob=b"long")
    clock.advance(61)
    page = await s.call("fetch", mailbox=cap.mailbox, after=0)
    assert page["entries"] == [[2, b"long"]]
    metrics = relay.app[METRICS]
    for _ in range(100):
        if metrics.expired >= 1:
            break
        await asyncio.sleep(0.02)
    assert metrics.expired == 1
    # The whole mailbox goes once its TTL passes without use.
    clock.advance(3600)
    for _ in range(100):
        if metrics.expired_mailboxes >= 1:
            break
        await asyncio.sleep(0.02)
    assert metrics.expired_mailboxes == 1
    assert (await rejected(s.call("fetch", mailbox=cap.mailbox, after=0))).code == "denied"


# -- shutdown ----------------------------------------------------------------------------------


async def test_shutdown_closes_sockets_with_going_away(start_relay: object) -> None:
    relay = await start_relay()  # type: ignore[operator]
    s = await relay.session()
    cap = await relay.mailbox(s)
    acked = await s.call("append", mailbox=cap.mailbox, blob=b"before")
    await relay.runner.cleanup()
    for _ in range(100):
        if s.closed:
            break
        await asyncio.sleep(0.02)
    assert s.closed and s.close_code == 1001
    assert acked == {"seq": 1}


async def test_a_backlog_larger_than_the_send_queue_arrives_whole(start_relay: object) -> None:
    # Backlog delivery waits for room in the send queue instead of overflowing it, so a
    # reader catching up on far more than the queue holds is not taken for a slow one.
    relay = await start_relay(send_queue_bytes=256 * 1024)  # type: ignore[operator]
    writer = await relay.session()
    cap = await relay.mailbox(writer)
    blob = os.urandom(60_000)
    for n in range(300):  # 18 MB
        await writer.call("append", mailbox=cap.mailbox, blob=blob + bytes([n % 256]))
    reader = await relay.session()
    await reader.auth(cap, "read")
    await reader.call("subscribe", mailbox=cap.mailbox, after=0)
    pushes = await drain(reader, 300, timeout=20)
    assert [p.seq for p in pushes] == list(range(1, 301))
    assert all(p.blob[-1] == (p.seq - 1) % 256 for p in pushes)
    assert not reader.closed
    assert relay.app[METRICS].disconnects["slow_consumer"] == 0


async def test_cursor_bounds_are_those_of_a_signed_64_bit_integer(relay: RunningRelay) -> None:
    s = await relay.session()
    cap = await relay.mailbox(s)
    page = await s.call("fetch", mailbox=cap.mailbox, after=2**63 - 1)
    assert page == {"entries": [], "head": 0, "more": False}
    for op, field in (("fetch", "after"), ("subscribe", "after"), ("trim", "through")):
        assert (
            await rejected(s.call(op, mailbox=cap.mailbox, **{field: 2**63}))
        ).code == "invalid_field"
    assert (
        await rejected(s.call("append", mailbox=cap.mailbox, blob=b"x", epoch=2**63))
    ).code == "invalid_field"
