"""C01-C06: ordering, replay and suppression (the relay's own powers).

Detection rows (C03 gaps, C05 unsequenced commits, C06 Welcome of a losing commit)
assert the client's ``Alert`` contract: "missing" (C03), "not sequenced" (C05),
"forked" (A05/C06). Where a row has an irreducible residual risk (C04: a relay that
hides *everything* from a member), the test asserts what the design does guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from backchannel.engine import commits as engine_commits
from backchannel.engine import core as engine_core
from backchannel.errors import BackchannelError
from backchannel.rooms.content import Text, encode_content, new_message_id
from backchannel.rooms.errors import MessageRejected
from backchannel.rooms.events import ContentDropped, MessageReceived
from backchannel.views import NewMessage
from tests.e2e.harness import eventually

from .conftest import NOW, Net, Party, room_group
from .hostile_relay import Frame, Link


async def _has(p: Party, room: str, text: str) -> bool:
    return text in await p.texts(room)


async def _settle(*ps: Party) -> None:
    for p in ps:
        with contextlib.suppress(BackchannelError):  # a hostile relay may withhold it
            await p.c.sync(timeout=3)
    await asyncio.sleep(0.5)


async def _alert(phrase: str, *ps: Party, timeout: float = 20) -> None:
    """One of ``ps`` is warned with an Alert containing ``phrase``."""
    await eventually(lambda: any(p.alerts(phrase) for p in ps), timeout)


async def test_C01_replays_after_restart_show_nothing_twice(net: Net) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Replay", ben)
    texts = ["one", "two", "three"]
    for t in texts:
        await fac.c.send(room, t)
    await fac.c.self_update(room)  # an old commit to replay later
    await fac.c.send(room, "four")
    await eventually(lambda: _has(ben, room, "four"), 20)
    mailbox = ben.mailbox(room)
    history = [bytes(f["blob"]) for f in ben.proxy.push_frames(mailbox)]
    original = [dict(f) for f in ben.proxy.push_frames(mailbox)]
    assert len(history) >= 5
    await ben.person.stop()
    await ben.person.start()
    await _settle(ben)
    before = ben.state(room)
    shown = len([e for e in ben.seen if isinstance(e, NewMessage)])
    link = ben.proxy.link
    for f in original:  # the same numbers again: below the cursor
        await link.to_client(f)
    for blob in history:  # and under fresh numbers
        await link.inject_push(mailbox, blob)
    await _settle(ben)
    assert ben.state(room) == before  # the old commit was refused (wrong epoch)
    assert len([e for e in ben.seen if isinstance(e, NewMessage)]) == shown
    got = await ben.texts(room)
    for t in [*texts, "four"]:
        assert got.count(t) == 1, (t, got)
    await fac.c.send(room, "five")
    await eventually(lambda: _has(ben, room, "five"), 20)


def test_C02_insider_replay_under_a_new_generation_is_dropped() -> None:
    """Room layer: the same signed content re-sent at a later generation is dropped by the
    (sender, message id) rule; a replayed proposal changes nothing."""
    _, (fac, ben, chen) = room_group(3)
    content = Text(new_message_id(), NOW * 1000, "the offer stands")
    first = fac.send(content, now=NOW)
    again = fac._group.encrypt(encode_content(content))  # same content, next generation
    assert first != again
    events = ben.receive(first, now=NOW)
    assert isinstance(events[0], MessageReceived)
    replayed = ben.receive(again, now=NOW)
    assert len(replayed) == 1 and isinstance(replayed[0], ContentDropped)
    # a proposal replayed by the relay or an insider: queued once in effect
    proposal = chen.leave()
    for r in (fac, ben):
        r.receive(proposal, now=NOW)
        with contextlib.suppress(MessageRejected):  # a refusal or a harmless duplicate
            r.receive(proposal, now=NOW)
    out = fac.commit_proposals(now=NOW)
    fac.confirm_pending()
    ben.receive(out.commit, now=NOW)
    assert len(fac.members()) == len(ben.members()) == 2
    assert fac.epoch_authenticator() == ben.epoch_authenticator()


async def test_C03_dropped_messages_are_shown_as_missing(net: Net) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Gaps", ben)
    await ben.c.send(room, "first")
    await eventually(lambda: _has(fac, room, "first"), 20)
    mailbox = fac.mailbox(room)
    count = {"n": 0}
    dropped: set[int] = set()

    async def drop_second(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("t") == "push" and f["mailbox"] == mailbox:
            count["n"] += 1
            if count["n"] in (1, 2):
                dropped.add(int(f["seq"]))
                return []  # "who added X?" never arrives
        if f.get("t") == "ok" and link.requests.get(int(f["id"])) == ("fetch", mailbox):
            # Nor when the client fetches the gap (a relay that only drops pushes hides
            # nothing: the client fills gaps from a fetch, docs/relay-protocol.md §8).
            f["entries"] = [e for e in f["entries"] if int(e[0]) not in dropped]
        return None

    fac.proxy.on_down = drop_second
    for t in ("who added X?", "are you sure?", "fine, go on"):
        await ben.c.send(room, t)
    await eventually(lambda: _has(fac, room, "fine, go on"), 20)
    assert not await _has(fac, room, "who added X?")
    await _alert("missing", fac)


async def test_C04_withheld_remove_does_not_let_the_removed_member_read_on(net: Net) -> None:
    fac, ben, chen = [await net.party(n) for n in ("Farida", "Ben", "Chen")]
    room = await net.room(fac, "Withheld", ben, chen)
    old = ben.mailbox(room)

    async def withhold(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("t") == "push" and f["mailbox"] == old:
            return []
        if f.get("t") == "ok" and link.requests.get(int(f["id"])) == ("fetch", old):
            f["entries"], f["more"] = [], False  # nor what Ben fetches from there
        return None

    ben.proxy.on_down = withhold  # Ben never sees the Remove of Chen
    await fac.c.remove(room, "Chen")
    await eventually(lambda: len(fac.state(room)[2]) == 2)
    assert ben.mailbox(room) == old  # Ben is still in the old epoch
    await ben.c.send(room, "said after Chen left")
    # The remover sealed the old mailbox: the relay refuses Ben's old-epoch post, so
    # Chen (removed) cannot read it, and Ben's view shows it as not delivered. (A relay
    # colluding with Chen could accept it: the residual risk of RFC 9420 section 16.9.)
    await asyncio.sleep(3)
    await _settle(chen)
    assert "said after Chen left" not in await chen.texts(room)
    assert "said after Chen left" not in await fac.texts(room)
    mine = [m for m in await ben.c.history(room) if m.text == "said after Chen left"]
    assert len(mine) == 1 and not mine[0].delivered
    # detection: the relay revoked Ben's write key (the room was sealed) and the relay's
    # head is past Ben's cursor, yet Ben's post stays queued: Ben is told
    await eventually(lambda: bool(ben.alerts("not reached you")), 15)


async def test_C05_suppressed_commits_are_reported_not_sequenced(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in (engine_core, engine_commits):  # create/rotate, and the commit append
        monkeypatch.setattr(module, "REQUEST_SECONDS", 2.0)
    monkeypatch.setattr(engine_commits, "CATCH_UP_SECONDS", 0.5)
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Suppressed", ben)
    before = fac.state(room)

    async def drop_commits(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("op") == "append" and f.get("epoch") is not None:
            return []  # never reaches the relay, never answered
        return None

    ben.proxy.on_up = drop_commits
    ben.c.engine._self_update_seconds = 0  # the scheduled key update is due
    await ben.c.engine.run_due_updates()
    await _alert("not sequenced", ben)
    assert fac.state(room) == before


async def test_C06_welcome_for_a_losing_commit_is_noticed(net: Net) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Losing", ben)
    mailbox = fac.mailbox(room)
    lost: list[bytes] = []

    async def lose(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("op") == "append" and f.get("epoch") is not None and f["mailbox"] == mailbox:
            lost.append(bytes(f["blob"]))
            seq = link.delivered.get(mailbox, 0) + 1
            await link.to_client({"t": "ok", "id": f["id"], "seq": seq, "epoch": f["epoch"] + 1})
            return []  # the Add never reaches the relay; the Welcome will
        return None

    fac.proxy.on_up = lose
    dana = await net.party("Dana")
    from backchannel.views import JoinRequested

    from .conftest import readdress

    link = readdress(await fac.c.invite(room), dana.proxy.url)
    rid = await dana.c.join(link)
    request = await eventually_event(fac, JoinRequested)
    await fac.c.approve(room, request.request.id)
    answer = await dana.c.wait_join(rid, 20)
    assert answer is not None and answer.approved and lost
    fac.proxy.on_up = None
    await ben.c.self_update(room)  # the commit the relay really sequenced
    await ben.c.send(room, "in the real history")
    await _alert("forked", dana, fac)


async def eventually_event(p: Party, kind: type) -> object:
    found: list[object] = []

    def check() -> bool:
        found[:] = [e for e in p.seen if isinstance(e, kind)]
        return bool(found)

    await eventually(check, 20)
    return found[0]


_ = time
