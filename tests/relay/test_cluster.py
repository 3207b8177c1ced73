"""Several relay nodes on one PostgreSQL: one order, one epoch winner, delivery across nodes."""

from __future__ import annotations

import asyncio

import pytest

from backchannel.transport.errors import Rejected
from backchannel.transport.session import MailboxCapability
from relay.protocol import Push, Revoked
from tests.conftest import RelayFactory, RunningRelay


@pytest.fixture
def store_kind() -> str:
    """A cluster needs a shared store: PostgreSQL only."""
    return "postgres"


@pytest.fixture
async def nodes(start_relay: RelayFactory) -> list[RunningRelay]:
    return [await start_relay() for _ in range(3)]


async def test_appends_on_three_nodes_form_one_gapless_order(nodes: list[RunningRelay]) -> None:
    owner = await nodes[0].session()
    cap = await nodes[0].mailbox(owner)
    readers = []
    for node in nodes:
        reader = await node.session()
        await reader.auth(cap, "read")
        await reader.call("subscribe", mailbox=cap.mailbox, after=0)
        readers.append(reader)
    writers = []
    for node in nodes:
        for _ in range(2):
            w = await node.session()
            await w.auth(cap, "write")
            writers.append(w)

    async def write(index: int, w: object) -> list[int]:
        answers = await asyncio.gather(
            *(w.call("append", mailbox=cap.mailbox, blob=b"%d:%d" % (index, n)) for n in range(30))  # type: ignore[attr-defined]
        )
        return [a["seq"] for a in answers]

    per_writer = await asyncio.gather(*(write(i, w) for i, w in enumerate(writers)))
    assert sorted(s for seqs in per_writer for s in seqs) == list(range(1, 181))
    expected = {
        seq: b"%d:%d" % (i, n) for i, seqs in enumerate(per_writer) for n, seq in enumerate(seqs)
    }
    for reader in readers:
        got = []
        while len(got) < 180:
            event = await reader.next_event(15)
            assert isinstance(event, Push)
            got.append(event)
        assert [p.seq for p in got] == list(range(1, 181))
        assert all(p.blob == expected[p.seq] for p in got)
        with pytest.raises(TimeoutError):
            await reader.next_event(0.3)


async def test_the_epoch_race_across_nodes_has_one_winner(nodes: list[RunningRelay]) -> None:
    cap = await nodes[0].mailbox()
    rivals = []
    for node in nodes:
        for _ in range(3):
            s = await node.session()
            await s.auth(cap, "write")
            rivals.append(s)
    for epoch in range(3):
        results = await asyncio.gather(
            *(r.call("append", mailbox=cap.mailbox, blob=b"c", epoch=epoch) for r in rivals),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, dict)]
        assert len(wins) == 1 and wins[0]["epoch"] == epoch + 1
        assert all(
            isinstance(r, Rejected) and r.code == "stale_epoch"
            for r in results
            if not isinstance(r, dict)
        )


async def test_rotation_on_one_node_revokes_grants_on_the_others(nodes: list[RunningRelay]) -> None:
    facilitator = await nodes[0].session()
    cap = await nodes[0].mailbox(facilitator)
    removed = await nodes[2].session()
    await removed.auth(cap, "read")
    await removed.auth(cap, "write")
    await removed.call("subscribe", mailbox=cap.mailbox, after=0)
    await facilitator.rotate(cap, MailboxCapability.generate(cap.mailbox))
    event = await removed.next_event(10)
    assert isinstance(event, Revoked) and event.reason == "rotated"
    assert (
        await _rejected(removed.call("append", mailbox=cap.mailbox, blob=b"x"))
    ).code == "denied"


async def test_subscriber_resumes_on_another_node_without_loss_or_duplicate(
    nodes: list[RunningRelay],
) -> None:
    writer = await nodes[0].session()
    cap = await nodes[0].mailbox(writer)
    first = await nodes[1].session()
    await first.auth(cap, "read")
    await first.call("subscribe", mailbox=cap.mailbox, after=0)
    for n in range(20):
        await writer.call("append", mailbox=cap.mailbox, blob=b"%d" % n)
    seen = [(await first.next_event(10)) for _ in range(10)]
    cursor = seen[-1].seq  # type: ignore[union-attr]
    await first.close()
    for n in range(20, 30):
        await writer.call("append", mailbox=cap.mailbox, blob=b"%d" % n)
    second = await nodes[2].session()
    await second.auth(cap, "read")
    await second.call("subscribe", mailbox=cap.mailbox, after=cursor)
    rest = [(await second.next_event(10)) for _ in range(30 - cursor)]
    assert [e.seq for e in seen + rest] == list(range(1, 31))  # type: ignore[union-attr]
    with pytest.raises(TimeoutError):
        await second.next_event(0.3)


async def _rejected(awaitable: object) -> Rejected:
    with pytest.raises(Rejected) as info:
        await awaitable  # type: ignore[misc]
    return info.value


async def test_a_rotation_missed_while_deaf_is_enforced_after_resync(
    nodes: list[RunningRelay],
) -> None:
    from relay.appkeys import OPERATIONS, STORE

    cap = await nodes[0].mailbox()
    stale = await nodes[1].session()
    await stale.auth(cap, "write")
    await stale.call("append", mailbox=cap.mailbox, blob=b"before")
    # The keys change without node 1 hearing of it (its notification lost while its
    # LISTEN connection was down): write the new keys straight into the database.
    new = MailboxCapability.generate(cap.mailbox)
    pg = nodes[1].app[STORE]
    keys = new.public_keys()
    await pg._run(  # type: ignore[attr-defined]
        lambda c: c.execute(
            "UPDATE relay_mailboxes SET read_key = $2, write_key = $3, admin_key = $4 WHERE id = $1",
            cap.mailbox,
            keys["read_key"],
            keys["write_key"],
            keys["admin_key"],
        )
    )
    # What the node does when its LISTEN connection comes back:
    nodes[1].app[OPERATIONS].hub.resync()
    event = await stale.next_event(10)
    assert isinstance(event, Revoked) and event.reason == "rotated"
    assert (
        await _rejected(stale.call("append", mailbox=cap.mailbox, blob=b"after"))
    ).code == "denied"


async def test_own_rotation_notice_keeps_grants_proven_with_the_new_keys(
    nodes: list[RunningRelay],
) -> None:
    facilitator = await nodes[0].session()
    cap = await nodes[0].mailbox(facilitator)
    new = MailboxCapability.generate(cap.mailbox)
    await facilitator.rotate(cap, new)
    await facilitator.auth(new, "write")  # re-proven at once, before the notice comes back
    await asyncio.sleep(0.5)  # let this node's own rotation notice arrive and be checked
    assert (await facilitator.call("append", mailbox=cap.mailbox, blob=b"still allowed"))[
        "seq"
    ] == 1
