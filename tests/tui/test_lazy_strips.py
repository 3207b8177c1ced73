"""Textual's strips with caches made on first use (backchannel/tui/lazy_strips.py)."""

from __future__ import annotations

import gc

import pytest
from rich.segment import Segment
from rich.style import Style
from textual.cache import FIFOCache
from textual.strip import Strip

from backchannel.tui import lazy_strips


def _has(strip: Strip, slot: str) -> bool:
    try:
        getattr(Strip, slot).__get__(strip, Strip)  # the slot itself, not __getattr__
    except AttributeError:
        return False
    return True


def test_it_applies_to_the_pinned_textual() -> None:
    # Failing here means Textual's Strip changed: read lazy_strips.py against it again.
    assert lazy_strips.install()
    assert lazy_strips.install()  # idempotent


def test_a_strip_makes_a_cache_only_when_it_is_used() -> None:
    assert lazy_strips.install()
    strip = Strip([Segment("hello "), Segment("world", Style(bold=True))])
    assert not any(_has(strip, slot) for slot in lazy_strips._CACHE_SIZES)
    cut = strip.crop(1, 8)
    assert cut.text == "ello wo"
    assert strip.crop(1, 8) is cut  # the cache made on first use is the one used next
    assert _has(strip, "_crop_cache") and not _has(strip, "_style_cache")
    assert strip.crop_extend(0, 14, None).cell_length == 14
    assert [part.text for part in strip.divide([3, 11])] == ["hel", "lo world"]
    assert strip.apply_style(Style(italic=True)).text == "hello world"
    assert strip.cell_length == 11 and strip.text == "hello world"


def test_a_strip_that_answers_with_itself_does_not_keep_itself() -> None:
    """No strip refers to itself through its caches, so reference counting frees it."""
    assert lazy_strips.install()
    strip = Strip([Segment("hello "), Segment("world", Style(bold=True))])
    same_length = strip.extend_cell_length(11)
    one_cut = strip.divide([11])
    whole = strip.crop_extend(0, 11, None)
    assert same_length is strip and whole is strip and one_cut == [strip]
    del one_cut
    holders = [ref for ref in gc.get_referrers(strip) if isinstance(ref, (dict, list))]
    assert holders == []  # Textual's own FIFOCache would hold it: a cycle through itself
    # Answers that are other strips are still cached.
    part = strip.crop(2, 5)
    assert part.text == "llo" and strip.crop(2, 5) is part
    wider = strip.crop_extend(0, 14, None)
    assert wider.cell_length == 14 and strip.crop_extend(0, 14, None) is wider


def test_other_attributes_still_fail_as_usual() -> None:
    assert lazy_strips.install()
    with pytest.raises(AttributeError, match="no attribute 'colour'"):
        Strip([Segment("x")]).colour  # type: ignore[attr-defined]  # noqa: B018


def test_only_the_strip_it_was_written_for_is_changed() -> None:
    """The guard tells Textual 8.2.8's constructor from one that differs in a cache size."""

    class Twin:  # the slots and constructor of the Strip lazy_strips replaces
        __slots__ = tuple(sorted(lazy_strips._EXPECTED_SLOTS))

        def __init__(self, segments: list[Segment], cell_length: int | None = None) -> None:
            self._segments = list(segments)
            self._cell_length = cell_length
            self._divide_cache = FIFOCache(4)
            self._crop_cache = FIFOCache(16)
            self._style_cache = FIFOCache(16)
            self._filter_cache = FIFOCache(4)
            self._line_length_cache = FIFOCache(4)
            self._crop_extend_cache = FIFOCache(4)
            self._offsets_cache = FIFOCache(4)
            self._render_cache = None
            self._link_ids = None
            self._cell_count = None

    class Resized(Twin):
        __slots__ = ()

        def __init__(self, segments: list[Segment], cell_length: int | None = None) -> None:
            self._segments = list(segments)
            self._cell_length = cell_length
            self._divide_cache = FIFOCache(8)
            self._crop_cache = FIFOCache(16)
            self._style_cache = FIFOCache(16)
            self._filter_cache = FIFOCache(4)
            self._line_length_cache = FIFOCache(4)
            self._crop_extend_cache = FIFOCache(4)
            self._offsets_cache = FIFOCache(4)
            self._render_cache = None
            self._link_ids = None
            self._cell_count = None

    assert lazy_strips._fits(Twin)  # type: ignore[arg-type]
    Resized.__slots__ = Twin.__slots__  # compared by name, as on Strip
    assert not lazy_strips._fits(Resized)  # type: ignore[arg-type]
