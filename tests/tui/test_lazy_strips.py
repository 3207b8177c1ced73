"""Textual's strips with caches made on first use (backchannel/tui/lazy_strips.py)."""

from __future__ import annotations

import pytest
from rich.segment import Segment
from rich.style import Style
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


def test_other_attributes_still_fail_as_usual() -> None:
    assert lazy_strips.install()
    with pytest.raises(AttributeError, match="no attribute 'colour'"):
        Strip([Segment("x")]).colour  # type: ignore[attr-defined]  # noqa: B018


def test_a_different_strip_is_left_alone() -> None:
    class Other(Strip):
        __slots__ = ("_extra",)

    assert not lazy_strips._fits(Other)
