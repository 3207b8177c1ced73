"""Garbage collection timed for a person at a keyboard: full passes wait for idle moments.

Why: CPython's full (generation 2) collection walks every object the collector
tracks. After start-up that is some 100,000 objects (code, themes, the app's
widgets), and on a 2-core machine one pass took 45-100 ms: a dropped frame, or a
key that waits, whenever it fell in the middle of scrolling. So, once the app has
started, :meth:`HeapKeeper.settle` collects once and freezes what survived (those
objects live as long as the app; reference counting still frees them, only a
cycle among them would wait for exit). A full pass then walks only what was
made since: 10-20 ms instead of 45-100. Full passes also run whenever nobody has
touched a key for a second, so fewer of the automatic ones fall while someone is
scrolling. (Making the automatic ones rarer instead was tried and was worse: Textual
left most drawn lines as cyclic garbage, a ``Strip`` that caches itself, so a rarer
pass had more to free and took up to 175 ms. ``lazy_strips`` now breaks that cycle, so
little is left for a full pass to free while someone scrolls.)

Only the real app uses this (the CLI starts it with ``tune_gc=True``): it changes
process-wide settings, which a test process running many apps must not inherit.
"""

from __future__ import annotations

import gc

__all__ = ["HeapKeeper"]

#: Seconds without input after which a full collection may run.
IDLE_SECONDS = 1.0


class HeapKeeper:
    """Freezes the start-up heap, then runs full collections while the person is idle."""

    def __init__(self) -> None:
        self.settled = False
        """Whether :meth:`settle` ran."""
        self.idle_collections = 0
        """Full collections run by :meth:`tick` (for tests and benchmarks)."""

    def settle(self) -> None:
        """Collect once and freeze the survivors (once; later calls do nothing)."""
        if self.settled:
            return
        gc.collect()
        gc.freeze()
        self.settled = True

    def tick(self, idle_for: float) -> bool:
        """Run a full collection if settled, idle long enough, and anything is pending.

        Args:
            idle_for: seconds since the last key or mouse event.

        Returns:
            Whether a collection ran.
        """
        if not self.settled or idle_for < IDLE_SECONDS or gc.get_count()[2] == 0:
            return False
        gc.collect()
        self.idle_collections += 1
        return True
