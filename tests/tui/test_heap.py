"""The app's garbage-collection timing: freeze once settled, full passes only when idle."""

from __future__ import annotations

import gc

import pytest

from backchannel.tui.heap import IDLE_SECONDS, HeapKeeper


@pytest.fixture
def keeper() -> object:
    keeper = HeapKeeper()
    yield keeper
    gc.unfreeze()  # settle() freezes process-wide; give the test process its heap back


def _pending_full_pass() -> None:
    # Enough young-generation passes that the oldest generation has work waiting.
    for _ in range(3):
        gc.collect(1)


def test_nothing_happens_before_the_app_settles(keeper: HeapKeeper) -> None:
    _pending_full_pass()
    assert not keeper.tick(idle_for=60.0)
    assert keeper.idle_collections == 0
    assert gc.get_freeze_count() == 0


def test_settle_freezes_what_survives_once(keeper: HeapKeeper) -> None:
    keeper.settle()
    frozen = gc.get_freeze_count()
    assert keeper.settled and frozen > 0
    keeper.settle()  # a second call changes nothing
    assert gc.get_freeze_count() == frozen


def test_full_passes_wait_for_an_idle_moment(keeper: HeapKeeper) -> None:
    keeper.settle()
    _pending_full_pass()
    assert not keeper.tick(idle_for=IDLE_SECONDS / 2)  # someone is typing
    assert gc.get_count()[2] > 0
    assert keeper.tick(idle_for=IDLE_SECONDS)
    assert keeper.idle_collections == 1
    assert gc.get_count()[2] == 0
    assert not keeper.tick(idle_for=IDLE_SECONDS * 5)  # nothing pending: no pass
