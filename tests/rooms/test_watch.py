"""What members watch for (docs/room-protocol.md §13): forks, missing messages, withheld
changes. The relay here is the in-memory one of test_room.py, made hostile by hand."""

from __future__ import annotations

import pytest

from backchannel.rooms import Text, new_message_id
from backchannel.rooms.errors import RoomDecodeError
from backchannel.rooms.events import EpochAhead, ForkDetected, MessageReceived, MessagesMissing
from backchannel.rooms.room import Room
from backchannel.rooms.watch import KEPT_EPOCHS, RoomWatch, fork_check, parse_fork_check

from .test_room import NOW, RoomHarness, _workshop


def _wire(h: RoomHarness, sender: str, body: str) -> bytes:
    return h.rooms[sender].send(Text(new_message_id(), NOW * 1000, body), now=NOW)


def test_a_fork_is_seen_in_the_first_message_from_the_other_side() -> None:
    h = _workshop()
    fac, fac2, ann = h.rooms["fac"], h.rooms["fac2"], h.rooms["ann"]
    # The relay accepts two commits for one epoch and shows each side its own.
    one = fac.self_update(now=NOW)
    fac2.self_update(now=NOW)  # the other side of the fork
    fac.confirm_pending()
    fac2.confirm_pending()
    ann.receive(one.commit, now=NOW)  # ann is on fac's side
    assert fac.epoch == fac2.epoch and fac.epoch_authenticator() != fac2.epoch_authenticator()
    before = fac2.to_bytes()
    events = fac2.receive(_wire(h, "ann", "from the other side"), now=NOW)
    assert events == [ForkDetected(fac.epoch)]
    assert fac2.to_bytes() == before  # nothing changed
    assert ForkDetected(fac.epoch) in fac.receive(_wire(h, "fac2", "hello?"), now=NOW)


def test_a_gap_in_a_senders_generations_is_reported_with_its_size() -> None:
    h = _workshop()
    bob = h.rooms["bob"]
    _wire(h, "ann", "dropped 1")  # never delivered
    _wire(h, "ann", "dropped 2")
    events = bob.receive(_wire(h, "ann", "delivered"), now=NOW)
    assert events[0] == MessagesMissing(bob.epoch, b"ann", 2)
    assert isinstance(events[1], MessageReceived)
    # the next one follows on: nothing more is missing
    assert [type(e) for e in bob.receive(_wire(h, "ann", "next"), now=NOW)] == [MessageReceived]


def test_a_message_from_a_later_epoch_says_changes_were_withheld() -> None:
    h = _workshop()
    fac, bob = h.rooms["fac"], h.rooms["bob"]
    out = fac.self_update(now=NOW)
    fac.confirm_pending()
    h.rooms["ann"].receive(out.commit, now=NOW)  # everyone but bob gets the commit
    before = bob.to_bytes()
    assert bob.receive(_wire(h, "ann", "in the new epoch"), now=NOW) == [
        EpochAhead(fac.epoch, bob.epoch)
    ]
    assert bob.to_bytes() == before


def test_honest_traffic_raises_nothing_and_survives_save_and_restore() -> None:
    h = _workshop()
    for i in range(3):
        for name in ("ann", "bob", "fac"):
            _, got = h.say(name, f"{name} {i}")
            for events in got.values():
                assert all(isinstance(e, MessageReceived) for e in events), events
    h.commit("fac", h.rooms["fac"].self_update(now=NOW))
    restored = Room.from_bytes(h.rooms["bob"].to_bytes())
    h.rooms["bob"] = restored
    _wire(h, "ann", "lost after the restore")
    events = restored.receive(_wire(h, "ann", "after"), now=NOW)
    assert MessagesMissing(restored.epoch, b"ann", 1) in events


def test_the_fork_check_format_and_the_watch_bounds() -> None:
    check = fork_check(b"\x01" * 32)
    assert len(check) == 17 and parse_fork_check(check) == check
    assert parse_fork_check(b"") is None and parse_fork_check(b"\x02" + check[1:]) is None
    watch = RoomWatch()
    for epoch in range(KEPT_EPOCHS + 5):
        watch.enter_epoch(epoch, epoch.to_bytes(32, "big"))
    assert watch.check_for(0) is None and watch.check_for(KEPT_EPOCHS + 4) is not None
    assert RoomWatch.from_wire(watch.to_wire()).to_wire() == watch.to_wire()
    for bad in ({}, {"checks": [[1, b"x"]], "gens": []}, {"checks": [], "gens": [[1, 2]]}):
        with pytest.raises(RoomDecodeError):
            RoomWatch.from_wire(bad)
