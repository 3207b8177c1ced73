"""Reconnect delays: full-jitter exponential backoff, with time and randomness passed in."""

from __future__ import annotations

import random

__all__ = ["Backoff", "full_jitter"]


def full_jitter(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """A "full jitter" backoff delay: uniform in ``[0, min(cap, base * 2**attempt)]``.

    Args:
        attempt: failures so far, from 0.
        base: the ceiling of the first delay, in seconds (> 0).
        cap: the largest ceiling, in seconds (>= base).
        rng: the random source (seed it for reproducible tests).

    Returns:
        The delay in seconds.
    """
    if attempt < 0 or base <= 0 or cap < base:
        raise ValueError("need attempt >= 0 and 0 < base <= cap")
    return rng.uniform(0.0, min(cap, base * 2 ** min(attempt, 64)))


class Backoff:
    """Reconnect delays: full jitter, capped, reset once a connection stayed up long enough.

    Time is passed in, so the policy is tested without clocks.
    """

    def __init__(
        self,
        *,
        base: float = 0.5,
        cap: float = 60.0,
        stable_after: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        full_jitter(0, base=base, cap=cap, rng=random.Random(0))  # validates base and cap
        self.base, self.cap, self.stable_after = base, cap, stable_after
        self._rng = rng or random.Random()
        self._attempt = 0
        self._up_since: float | None = None

    @property
    def attempt(self) -> int:
        """Failures counted since the last reset."""
        return self._attempt

    def connected(self, now: float) -> None:
        """A connection came up at ``now`` (seconds, any monotonic clock)."""
        self._up_since = now

    def next_delay(self, now: float) -> float:
        """The wait before the next attempt, after a failure or a drop at ``now``."""
        if self._up_since is not None and now - self._up_since >= self.stable_after:
            self._attempt = 0
        self._up_since = None
        delay = full_jitter(self._attempt, base=self.base, cap=self.cap, rng=self._rng)
        self._attempt += 1
        return delay
