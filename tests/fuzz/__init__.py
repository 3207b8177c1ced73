"""Fuzz and hostile-state tests: shared hypothesis profiles and mutation strategies.

Profiles (the project had no hypothesis profile setup before this package):

* ``ci`` (default): derandomised, modest ``max_examples``, so CI is repeatable and fast;
* ``long``: random, many more examples, for a local or nightly campaign.

Choose with ``HYPOTHESIS_PROFILE=long python -m pytest tests/fuzz``. The profiles are
registered here but *not* loaded globally (that would change every other module's
hypothesis defaults); the tests in this package decorate with :data:`FUZZ` /
:func:`fuzz_settings`, which read the chosen profile.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "ci",
    max_examples=60,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SUPPRESS,
)
settings.register_profile(
    "long",
    max_examples=5_000,
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SUPPRESS,
)

PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE_NAME not in ("ci", "long"):
    PROFILE_NAME = "ci"
FUZZ = settings.get_profile(PROFILE_NAME)


def fuzz_settings(ci_examples: int) -> settings:
    """The chosen profile, with ``ci_examples`` examples under ``ci`` (``long`` keeps its own)."""
    if PROFILE_NAME == "ci":
        return settings(FUZZ, max_examples=ci_examples)
    return FUZZ


MUTATIONS = ("flip", "set", "cut", "insert", "delete", "extend", "splice", "dup")


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes] | tuple[bytes, ...]) -> bytes:
    """A valid encoding from ``seeds`` with 1-4 mutations: bit flips, truncation,
    extension, insertion, deletion, interesting byte values, splices of two seeds."""
    data = bytearray(draw(st.sampled_from(list(seeds))))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(MUTATIONS))
        pos = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "set" and data:
            data[pos] = draw(
                st.sampled_from([0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xC1, 0xDB, 0xFF])
            )
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(min_value=1, max_value=8))]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=8))
        elif op == "splice":
            other = draw(st.sampled_from(list(seeds)))
            cut = draw(st.integers(min_value=0, max_value=len(other)))
            data[pos:] = other[cut:]
        elif op == "dup" and data:
            data[pos:pos] = data[pos : pos + draw(st.integers(min_value=1, max_value=16))]
    return bytes(data)
