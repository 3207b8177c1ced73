"""Textual's ``Strip`` with its caches made when first used, not with every strip.

Every line Textual draws is a :class:`~textual.strip.Strip`, and every frame makes new
ones: each cut, style and crop of each visible line. Each strip made seven
``FIFOCache`` objects (each with a dict) as it was created: about 15 objects the
garbage collector tracks, for caches most strips never use. While someone scrolls,
those objects are what keep CPython's young generation collecting and, once
promoted, what the slow full collections walk. Made on first use instead, the
scroll's frames went from p50 10, p99 17-24, max 18-25 ms to p50 8, p99 13-15,
max 15-16 ms (``bench/tui.py --quick``, runs alternating on one machine).

Textual's methods reach each cache as a plain attribute, and ``__getattr__`` runs only
for an attribute not yet set, so the first use makes the cache and later ones find it.

The caches made here also refuse to keep the strip they belong to (``_StripCache``).
Textual caches a strip's answer even when the answer is the strip itself, which made
most drawn lines reference cycles: garbage only the cycle collector could free. In a
scroll through 10,000 messages that was about 9,000 objects for each full collection,
5-10 ms of every frame it fell in; without the cycles, the strips go as soon as they
are dropped, and the young collections that fell inside frames went from ~620 to ~95.

This reaches into Textual, so it is guarded: it applies only to the ``Strip`` it was
written against (the same slots and the same constructor). Any other Textual is left
alone, and ``tests/tui/test_lazy_strips.py`` fails so that someone looks again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.segment import Segment
from textual.cache import FIFOCache
from textual.strip import Strip

__all__ = ["install"]

#: Each cache's size, as Textual's constructor makes them.
_CACHE_SIZES = {
    "_divide_cache": 4,
    "_crop_cache": 16,
    "_style_cache": 16,
    "_filter_cache": 4,
    "_line_length_cache": 4,
    "_crop_extend_cache": 4,
    "_offsets_cache": 4,
}
#: What the constructor this replaces sets, and with which constants (Textual 8.2.8).
_EXPECTED_SLOTS = frozenset(
    {"_segments", "_cell_length", "_render_cache", "_link_ids", "_cell_count", *_CACHE_SIZES}
)
_EXPECTED_NAMES = (
    "list",
    "_segments",
    "_cell_length",
    "FIFOCache",
    "_divide_cache",
    "_crop_cache",
    "_style_cache",
    "_filter_cache",
    "_line_length_cache",
    "_crop_extend_cache",
    "_offsets_cache",
    "_render_cache",
    "_link_ids",
    "_cell_count",
)
_EXPECTED_CONSTS = (None, 4, 16)


def _init(self: Strip, segments: Iterable[Segment], cell_length: int | None = None) -> None:
    self._segments = list(segments)
    self._cell_length = cell_length
    self._render_cache = None
    self._link_ids = None
    self._cell_count = None


class _StripCache(FIFOCache[Any, Any]):
    """A strip's cache that will not keep the strip itself.

    Asked for what it already is (its own length, one cut at its end, a crop of all of
    it), a ``Strip`` answers with itself and caches that answer. Each such strip
    then refers to itself through its cache: a cycle, which reference counting cannot
    free, so every strip drawn that way waited as garbage for the cycle collector, and
    a full collection in the middle of a scroll freed thousands of them in one go.
    Those answers cost nothing to recompute, so they are simply not kept.
    """

    __slots__ = ("_owner",)

    def __init__(self, maxsize: int, owner: Strip) -> None:
        super().__init__(maxsize)
        self._owner = id(owner)  # an id, not a reference: the point is to hold none

    def set(self, key: Any, value: Any) -> None:
        owner = self._owner
        if id(value) == owner or (
            type(value) is list and len(value) == 1 and id(value[0]) == owner
        ):
            return
        FIFOCache.set(self, key, value)

    __setitem__ = set


def _getattr(self: Strip, name: str) -> Any:
    size = _CACHE_SIZES.get(name)
    if size is None:
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
    cache = _StripCache(size, self)
    setattr(self, name, cache)
    return cache


def _fits(strip: type[Strip]) -> bool:
    code = strip.__init__.__code__
    return (
        frozenset(strip.__slots__) == _EXPECTED_SLOTS
        and code.co_names == _EXPECTED_NAMES
        and code.co_consts == _EXPECTED_CONSTS
        and "__getattr__" not in vars(strip)
    )


def install() -> bool:
    """Make ``Strip`` caches lazy for this process (idempotent).

    Returns:
        Whether lazy caches are in effect: False on a Textual whose ``Strip`` differs
        from the one this was written for (it is then left as it is).
    """
    if Strip.__init__ is _init:
        return True
    if not _fits(Strip):
        return False
    Strip.__init__ = _init  # type: ignore[method-assign]
    Strip.__getattr__ = _getattr  # type: ignore[attr-defined]
    return True
