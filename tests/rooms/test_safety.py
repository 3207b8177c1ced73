"""Safety numbers and verification state."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backchannel.rooms.errors import SafetyNumberError
from backchannel.rooms.safety import (
    ITERATIONS,
    LABEL,
    SafetyNumber,
    Verification,
    VerificationState,
    decode_scannable,
    safety_number,
)

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ALICE = (b"alice", bytes(range(32)))
BOB = (b"bob", bytes(range(32, 64)))


def reference_fingerprint(identity: bytes, key: bytes) -> bytes:
    """The construction of docs/room-protocol.md §7, written out independently."""
    h = hashlib.sha512(
        LABEL + len(identity).to_bytes(2, "big") + identity + len(key).to_bytes(2, "big") + key
    ).digest()
    for _ in range(ITERATIONS - 1):
        h = hashlib.sha512(h + key).digest()
    return h[:32]


def test_known_answer() -> None:
    # Pinned so that a change to the construction is noticed (second implementations
    # can check themselves against it: docs/room-protocol.md §7).
    number = safety_number(ALICE, BOB)
    fa, fb = reference_fingerprint(*ALICE), reference_fingerprint(*BOB)
    assert number.fingerprints == tuple(sorted([fa, fb]))
    digits = "".join(
        f"{int.from_bytes(fp[i : i + 5], 'big') % 100000:05d}"
        for fp in sorted([fa, fb])
        for i in range(0, 30, 5)
    )
    assert number.digits == digits
    assert str(number) == KNOWN


KNOWN = "45642 58969 88483 37396 59106 06483 32814 81286 23571 82697 55078 90277"


def test_format() -> None:
    number = safety_number(ALICE, BOB)
    assert len(number.digits) == 60 and number.digits.isdigit()
    assert len(number.groups) == 12 and all(len(g) == 5 for g in number.groups)
    assert str(number) == " ".join(number.groups)


def test_order_independent_and_key_sensitive() -> None:
    assert safety_number(ALICE, BOB) == safety_number(BOB, ALICE)
    assert safety_number(ALICE, BOB) != safety_number(ALICE, (b"bob", bytes(32)))
    # The identity is bound too, and lengths keep (identity, key) splits apart.
    assert safety_number(ALICE, BOB) != safety_number(ALICE, (b"bob2", BOB[1]))
    assert safety_number((b"ab", b"c"), BOB) != safety_number((b"a", b"bc"), BOB)


@given(
    st.tuples(st.binary(min_size=1, max_size=20), st.binary(min_size=1, max_size=40)),
    st.tuples(st.binary(min_size=1, max_size=20), st.binary(min_size=1, max_size=40)),
)
@settings(max_examples=25, deadline=None)
def test_symmetry_and_scannable_round_trip(a: tuple[bytes, bytes], b: tuple[bytes, bytes]) -> None:
    number = safety_number(a, b)
    assert number == safety_number(b, a)
    scanned = number.scannable()
    assert decode_scannable(scanned) == number
    assert number.matches_scanned(safety_number(b, a).scannable())


def test_scannable_comparison() -> None:
    number = safety_number(ALICE, BOB)
    assert len(number.scannable()) == 76
    assert number.matches_scanned(number.scannable())
    assert not number.matches_scanned(safety_number(ALICE, (b"mallory", BOB[1])).scannable())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb({"v": 2, "fp": [bytes(32), bytes(32)]}),
        msgpack.packb({"v": 1, "fp": [bytes(32)]}),
        msgpack.packb({"v": 1, "fp": [bytes(31), bytes(32)]}),
        msgpack.packb({"v": 1, "fp": [b"\x01" * 32, bytes(32)]}),
        msgpack.packb({"v": 1, "fp": [bytes(32), bytes(32)], "x": 1}),
        msgpack.packb({"v": 1, "fp": ["a" * 32, "a" * 32]}),
        msgpack.packb([1, 2]),
    ],
)
def test_bad_scannables_are_refused(data: bytes) -> None:
    with pytest.raises(SafetyNumberError):
        decode_scannable(data)
    with pytest.raises(SafetyNumberError):
        safety_number(ALICE, BOB).matches_scanned(data)


@given(st.binary(max_size=120))
@FUZZ
def test_scannable_decoder_raises_only_its_error(data: bytes) -> None:
    try:
        number = decode_scannable(data)
    except SafetyNumberError:
        return
    assert number.scannable() == data or len(data) != 76


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError):
        safety_number((b"", b"k"), BOB)
    with pytest.raises(ValueError):
        safety_number((b"a", b""), BOB)
    with pytest.raises(TypeError):
        safety_number(("a", b"k"), BOB)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SafetyNumber((b"\x01" * 32, bytes(32)))


def test_verification_state_never_re_trusts_silently() -> None:
    key, new_key = BOB[1], bytes(32)
    state = VerificationState(b"bob")
    assert state.status(key) is Verification.UNVERIFIED
    state = state.mark_verified(key)
    assert state.status(key) is Verification.VERIFIED
    assert state.status(new_key) is Verification.KEY_CHANGED
    assert state.status(key[:-1]) is Verification.KEY_CHANGED  # a truncated key is not a match
    # Seeing the new key again and again changes nothing until the user acts.
    assert state.status(new_key) is Verification.KEY_CHANGED
    assert state.mark_verified(new_key).status(new_key) is Verification.VERIFIED
    assert state.forget().status(new_key) is Verification.UNVERIFIED
    with pytest.raises(ValueError):
        state.status(b"")
