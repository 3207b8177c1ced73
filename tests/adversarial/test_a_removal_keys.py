"""Removal takes effect: the removed member's kept state yields neither the room's new
mailbox nor its keys (docs/threat-model.md, "Removal takes effect"; room-protocol §11).

After Farida removes Ben, the room moves to a mailbox derived (rooms/access.py
``derive_access``) from the MLS exporter of the epoch the removal starts. Ben keeps
everything he had: his room state from before the removal, the same state after he
processed the commit that removed him, and what his store saved. Everything Ben knows
about the room *publicly* (its group id, the new epoch number, the old mailbox) he
still knows; so if the new mailbox depended on those alone, Ben could follow the room.
These tests derive, from each state Ben keeps, every access he could compute, and
check that none matches the new mailbox, and that a blob of the new epoch opens for
none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import pytest

from backchannel.mls.errors import MLSError
from backchannel.records import RoomMeta
from backchannel.rooms.access import RoomAccess, derive_access, open_room_blob, seal_room_blob
from backchannel.rooms.content import Text, new_message_id
from backchannel.rooms.errors import MessageRejected, RoomDecodeError, RoomError
from backchannel.rooms.events import MessageReceived, RemovedFromRoom
from backchannel.rooms.room import Room
from backchannel.views import NewMessage
from tests.e2e.harness import eventually

from .conftest import NOW, Net, Party, copy_room, room_group


def _secrets(a: RoomAccess) -> dict[str, bytes]:
    return {
        "mailbox": a.mailbox,
        "read_seed": a.read_seed,
        "write_seed": a.write_seed,
        "admin_seed": a.admin_seed,
        "wrap_key": a.wrap_key,
    }


def _derivable(states: Iterable[Room], epochs: Iterable[int]) -> list[RoomAccess]:
    """Every access the holder of ``states`` can compute the way members do, for any of
    ``epochs`` (the new one included)."""
    out = []
    for state in states:
        for epoch in epochs:
            with contextlib.suppress(MLSError, RoomError):  # a state that cannot export any more
                out.append(derive_access(state.export_secret, epoch))
    return out


def _assert_nothing_of(new: RoomAccess, derived: list[RoomAccess], kept: Iterable[bytes]) -> None:
    assert derived, "the removed member's states should still derive *some* access"
    secrets = _secrets(new)
    leaks = [  # names only: no key in a failure message
        f"derives the new {name}"
        for access in derived
        for name, value in secrets.items()
        if value in _secrets(access).values()
    ]
    leaks += [
        f"keeps the new {name}" for blob in kept for name, value in secrets.items() if value in blob
    ]
    assert not leaks, f"the removed member {sorted(set(leaks))}"


def _opens_nothing(data: bytes, blob: bytes, rooms: Iterable[Room], derived: list[RoomAccess]):
    """``blob`` (``data`` sealed for the new mailbox) opens under no derived access, and
    ``data`` itself, handed straight to each kept room, shows nothing."""
    for access in derived:
        with pytest.raises(RoomDecodeError):
            open_room_blob(access, blob)
    for room in rooms:
        before = room.to_bytes()
        try:
            events = room.receive(data, now=NOW)
        except MessageRejected:
            events = []
        assert not [e for e in events if isinstance(e, MessageReceived)]
        assert room.to_bytes() == before


def test_removed_members_kept_state_derives_no_new_mailbox_or_key() -> None:
    ids, rooms = room_group(3)  # Farida (facilitator), Ben, Chen
    farida, ben, chen = rooms
    before = copy_room(ben)  # Ben's state from before the removal, kept as is
    out = farida.remove_members([ids[1].identity_id], now=NOW)
    farida.confirm_pending()
    chen.receive(out.commit, now=NOW)
    events = ben.receive(out.commit, now=NOW)  # Ben processes his own removal
    assert any(isinstance(e, RemovedFromRoom) for e in events) and not ben.active
    assert farida.epoch == chen.epoch == before.epoch + 1
    new = derive_access(farida.export_secret, farida.epoch)  # as engine/core.py does
    assert derive_access(chen.export_secret, chen.epoch) == new  # members agree on it
    assert before.group_id == farida.group_id  # what Ben knows in public, he still knows

    kept = [before, ben, Room.from_bytes(ben.to_bytes())]
    epochs = {before.epoch, farida.epoch, farida.epoch + 1}
    derived = _derivable(kept, epochs)
    _assert_nothing_of(new, derived, [r.to_bytes() for r in kept])

    data = farida.send(Text(new_message_id(), NOW * 1000, "after Ben left"), now=NOW)
    blob = seal_room_blob(new, data)
    assert open_room_blob(new, blob) == data
    assert [e.content.body for e in chen.receive(data, now=NOW)] == ["after Ben left"]
    _opens_nothing(data, blob, kept, derived)


async def test_removed_client_cannot_reach_or_read_the_new_mailbox(net: Net) -> None:
    fac, ben, chen = [await net.party(n) for n in ("Farida", "Ben", "Chen")]
    room = await net.room(fac, "Removal keys", ben, chen)
    room_id = bytes.fromhex(room)
    old = fac.live(room).meta.access
    ben_live = ben.live(room)  # the engine's object; it keeps what Ben processes
    before = copy_room(ben_live.room)
    await fac.c.remove(room, "Ben")
    await eventually(lambda: not ben_live.room.active, 30)
    await eventually(lambda: room_id not in ben.c.engine._live, 30)
    await eventually(lambda: len(chen.state(room)[2]) == 2 and chen.state(room) == fac.state(room))
    new = fac.live(room).meta.access
    assert new.mailbox != old.mailbox and chen.live(room).meta.access == new

    record = await ben.c.store.room(room_id)
    assert record is not None and record.state is not None and record.mailbox is not None
    stored = Room.from_bytes(record.state)
    meta = RoomMeta.from_bytes(record.mailbox)
    kept = [before, ben_live.room, stored]
    epochs = {before.epoch, fac.live(room).room.epoch, fac.live(room).room.epoch + 1}
    derived = [*_derivable(kept, epochs), meta.access, ben_live.meta.access]
    _assert_nothing_of(new, derived, [record.state, record.mailbox, *(r.to_bytes() for r in kept)])

    text = "said after Ben was removed"
    await fac.c.send(room, text)
    await eventually(lambda: _has(chen, room, text), 30)
    blob = bytes(fac.proxy.append_frames(new.mailbox)[-1]["blob"])
    data = open_room_blob(new, blob)
    _opens_nothing(data, blob, [copy_room(r) for r in kept], derived)
    # and through the relay: pushed to Ben on the mailboxes he knows, it shows nothing
    for mailbox in {old.mailbox, meta.access.mailbox, new.mailbox}:
        await ben.proxy.link.inject_push(mailbox, blob)
    await asyncio.sleep(1)
    assert not [e for e in ben.seen if isinstance(e, NewMessage) and e.message.text == text]
    assert text not in await ben.texts(room)


async def _has(p: Party, room: str, text: str) -> bool:
    return text in await p.texts(room)
