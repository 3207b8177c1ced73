"""Own appends are checked at their position (engine/watching.py ``expect_echo`` and
``_check_echo``; docs/threat-model.md, "Fork and suppression detection").

The relay acknowledges each append with a sequence number. A member who then reads a
different blob at that number is being shown another history than the one the relay
stored for the others (a fork); a member whose stream passes that number without it
is having its own message hidden from it, and quite possibly from the others. Both
are invisible to MLS: the substitute below is a genuine, earlier message of the room
(a replay MLS refuses quietly), and the gap is one the relay's own fetch answers say
is empty. Only the comparison with the acknowledged position catches them.
"""

from __future__ import annotations

import asyncio

import pytest

from backchannel.engine import watching
from backchannel.engine.watching import FORK_TEXT, WITHHELD_TEXT
from tests.e2e.harness import eventually

from .conftest import Net, Party
from .hostile_relay import Frame, Link


async def _has(p: Party, room: str, text: str) -> bool:
    return text in await p.texts(room)


def _own_appends(p: Party, mailbox: bytes) -> list[bytes]:
    """Blobs ``p`` appended to ``mailbox`` (commits excluded: they carry an epoch)."""
    return [bytes(f["blob"]) for f in p.proxy.append_frames(mailbox) if f.get("epoch") is None]


async def test_own_append_served_with_another_blob_at_its_position_is_a_fork(
    net: Net,
) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Echo", ben)
    mb = fac.mailbox(room)
    await ben.c.send(room, "Ben's earlier message")
    await eventually(lambda: _has(fac, room, "Ben's earlier message"), 20)
    other = _own_appends(ben, mb)[-1]  # a real blob of this mailbox
    mine: set[bytes] = set()
    served: list[int] = []

    async def record(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("op") == "append" and f.get("mailbox") == mb:
            mine.add(bytes(f["blob"]))
        return None

    async def substitute(link: Link, f: Frame) -> list[Frame] | None:
        # At the position the relay acknowledged for Farida's message, Farida is shown
        # Ben's earlier message instead, in pushes and in fetch answers alike.
        if f.get("t") == "push" and f["mailbox"] == mb and bytes(f["blob"]) in mine:
            served.append(int(f["seq"]))
            return [{**f, "blob": other}]
        if f.get("t") == "ok" and f.get("entries"):
            entries = [[s, other if bytes(b) in mine else b] for s, b in f["entries"]]
            if entries != f["entries"]:
                served.extend(s for s, b in f["entries"] if bytes(b) in mine)
                return [{**f, "entries": entries}]
        return None

    fac.proxy.on_up, fac.proxy.on_down = record, substitute
    assert not fac.alerts(FORK_TEXT[:30])
    await fac.c.send(room, "Farida's message")
    await eventually(lambda: _has(ben, room, "Farida's message"), 20)  # stored as sent
    await eventually(lambda: served, 20)
    await eventually(lambda: fac.alerts(FORK_TEXT[:30]), 20)
    assert fac.state(room) == ben.state(room)  # MLS saw nothing wrong: only the echo did


async def test_own_append_withheld_while_later_entries_arrive_is_reported(net: Net) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Withheld echo", ben)
    mb = fac.mailbox(room)
    mine: set[bytes] = set()
    dropped: list[int] = []

    async def record(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("op") == "append" and f.get("mailbox") == mb:
            mine.add(bytes(f["blob"]))
        return None

    async def withhold(link: Link, f: Frame) -> list[Frame] | None:
        # Farida's own message never comes back to her: not pushed, and absent from
        # every fetch answer (so her transport's gap filling skips its number).
        if f.get("t") == "push" and f["mailbox"] == mb and bytes(f["blob"]) in mine:
            dropped.append(int(f["seq"]))
            return []
        if f.get("t") == "ok" and f.get("entries"):
            kept = [e for e in f["entries"] if bytes(e[1]) not in mine]
            if len(kept) != len(f["entries"]):
                dropped.extend(int(e[0]) for e in f["entries"] if bytes(e[1]) in mine)
                return [{**f, "entries": kept}]
        return None

    fac.proxy.on_up, fac.proxy.on_down = record, withhold
    await fac.c.send(room, "hidden from its author")
    await eventually(lambda: _has(ben, room, "hidden from its author"), 20)
    await eventually(lambda: dropped, 20)
    assert not fac.alerts(WITHHELD_TEXT[:30])  # nothing to compare with yet
    await ben.c.send(room, "a later message")  # the stream moves past Farida's position
    await eventually(lambda: _has(fac, room, "a later message"), 20)
    await eventually(lambda: fac.alerts(WITHHELD_TEXT[:30]), 20)
    assert not fac.alerts(FORK_TEXT[:30])


def _hide_own_appends(fac: Party, ben: Party, mb: bytes) -> tuple[set[bytes], set[int]]:
    """The relay stores Farida's messages and shows them to nobody: not pushed, absent
    from every fetch answer, for her and for Ben. Returns (her blobs, her append ids)."""
    mine: set[bytes] = set()
    append_ids: set[int] = set()

    async def record(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("op") == "append" and f.get("mailbox") == mb and f.get("epoch") is None:
            mine.add(bytes(f["blob"]))
            append_ids.add(int(f["id"]))
        return None

    async def strip(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("t") == "push" and f["mailbox"] == mb and bytes(f["blob"]) in mine:
            return []
        if f.get("t") == "ok" and f.get("entries"):
            kept = [e for e in f["entries"] if bytes(e[1]) not in mine]
            if len(kept) != len(f["entries"]):
                return [{**f, "entries": kept}]
        return None

    fac.proxy.on_up, fac.proxy.on_down, ben.proxy.on_down = record, strip, strip
    return mine, append_ids


async def test_own_append_acknowledged_after_the_stream_passed_it_is_reported(
    net: Net,
) -> None:
    """Before: the relay answered Farida's append only once her cursor had passed its
    number (skipped: "no entry there", said the fetch), and ``expect_echo`` took it
    for a number read before this run: nobody was told."""
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Late answer", ben)
    mb = fac.mailbox(room)
    _, append_ids = _hide_own_appends(fac, ben, mb)
    strip = fac.proxy.on_down
    assert strip is not None
    stash: list[tuple[Link, Frame]] = []

    async def fac_down(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("t") == "ok" and f.get("id") in append_ids and not stash:
            stash.append((link, f))  # the append's answer comes later
            return []
        return await strip(link, f)

    fac.proxy.on_down = fac_down
    await fac.c.send(room, "I accept clause four")
    await eventually(lambda: stash, 20)
    await ben.c.send(room, "later message")
    await eventually(lambda: _has(fac, room, "later message"), 20)
    assert not fac.alerts(WITHHELD_TEXT[:30])
    link, answer = stash[0]
    await link.to_client(answer)  # now the relay acknowledges Farida's append
    await eventually(lambda: fac.alerts(WITHHELD_TEXT[:30]), 20)
    assert not await _has(ben, room, "I accept clause four")
    assert not fac.alerts(FORK_TEXT[:30])


async def test_own_append_acknowledged_beyond_the_head_is_reported(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the relay acknowledged the append at 2**63-1, a number the stream never
    reaches, and ``expect_echo`` waited for it there forever. Now the relay is asked for
    that entry directly when it has not come back after a while."""
    monkeypatch.setattr(watching, "ECHO_CHECK_SECONDS", 0.5, raising=False)
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Far answer", ben)
    mb = fac.mailbox(room)
    mine, append_ids = _hide_own_appends(fac, ben, mb)
    strip = fac.proxy.on_down
    assert strip is not None

    async def fac_down(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("t") == "ok" and f.get("id") in append_ids:
            return [{**f, "seq": 2**63 - 1}]
        return await strip(link, f)

    fac.proxy.on_down = fac_down
    await fac.c.send(room, "I accept clause four")
    await eventually(lambda: mine, 20)
    await eventually(lambda: fac.alerts(WITHHELD_TEXT[:30]), 20)
    assert not await _has(ben, room, "I accept clause four")
    assert not fac.alerts(FORK_TEXT[:30])


async def test_own_appends_on_an_honest_relay_raise_nothing(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct look-up of an own message finds it where the relay said: no alarm,
    also when the echo comes late (pushes delayed past the look-up)."""
    monkeypatch.setattr(watching, "ECHO_CHECK_SECONDS", 0.2, raising=False)
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Honest", ben)
    mb = fac.mailbox(room)

    async def slow(link: Link, f: Frame) -> list[Frame] | None:
        if f.get("t") == "push" and f["mailbox"] == mb:
            await asyncio.sleep(0.5)
        return None

    fac.proxy.on_down = slow
    for i in range(3):
        await fac.c.send(room, f"mine {i}")
    await eventually(lambda: _has(ben, room, "mine 2"), 20)
    await eventually(lambda: _has(fac, room, "mine 2"), 20)
    await asyncio.sleep(1)
    assert not fac.alerts(WITHHELD_TEXT[:30]) and not fac.alerts(FORK_TEXT[:30])
