"""Safety numbers (a human-comparable fingerprint of two members' keys) and verification state.

Construction (docs/room-protocol.md §7), in the spirit of Signal's numeric
fingerprint: for each member, with ``u16`` a 2-byte big-endian length,

    h_1 = SHA-512(LABEL || u16(len(identity)) || identity || u16(len(key)) || key)
    h_i = SHA-512(h_(i-1) || key)        for i = 2 .. ITERATIONS (5200)

The member's fingerprint is the first 32 bytes of ``h_5200``. Its 30 digits come
from the first 30 bytes, read as six 5-byte big-endian integers, each reduced
mod 100000 and written as 5 zero-padded digits. The safety number is the digits
of the lower fingerprint (bytewise) followed by those of the higher one: 60
digits, shown as 12 groups of 5, the same on both sides. The iteration makes
finding a key whose digits collide with a target's expensive; the label keeps the
hash apart from every other use of SHA-512 in the project (B01).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import Enum
from typing import Final

from .errors import SafetyNumberError
from .padding import check_bytes, packb, unpack_map

__all__ = [
    "ITERATIONS",
    "SAFETY_NUMBER_VERSION",
    "SafetyNumber",
    "Verification",
    "VerificationState",
    "decode_scannable",
    "safety_number",
]

#: The ``v`` field of the scannable form.
SAFETY_NUMBER_VERSION: Final = 1
#: SHA-512 iterations per fingerprint (Signal uses 5200 too).
ITERATIONS: Final = 5200
#: Domain label of the first hash.
LABEL: Final = b"backchannel/rooms/v1 safety number\x00"
#: Fingerprint length, in bytes.
FINGERPRINT_BYTES: Final = 32
#: Largest identity, in bytes.
MAX_IDENTITY_BYTES: Final = 255
#: Largest public key, in bytes (room for post-quantum signature keys).
MAX_KEY_BYTES: Final = 4096


def _fingerprint(identity: bytes, key: bytes) -> bytes:
    check_bytes(identity, "identity", 1, MAX_IDENTITY_BYTES)
    check_bytes(key, "public key", 1, MAX_KEY_BYTES)
    digest = hashlib.sha512(
        LABEL + len(identity).to_bytes(2, "big") + identity + len(key).to_bytes(2, "big") + key
    ).digest()
    for _ in range(ITERATIONS - 1):
        digest = hashlib.sha512(digest + key).digest()
    return digest[:FINGERPRINT_BYTES]


def _digits(fingerprint: bytes) -> str:
    return "".join(
        f"{int.from_bytes(fingerprint[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


@dataclass(frozen=True, slots=True)
class SafetyNumber:
    """The safety number of two members: the same value whichever side computes it."""

    #: The two fingerprints, lower first.
    fingerprints: tuple[bytes, bytes]

    def __post_init__(self) -> None:
        low, high = self.fingerprints
        check_bytes(low, "fingerprint", FINGERPRINT_BYTES, FINGERPRINT_BYTES)
        check_bytes(high, "fingerprint", FINGERPRINT_BYTES, FINGERPRINT_BYTES)
        if low > high:
            raise ValueError("fingerprints must be in ascending order")

    @property
    def digits(self) -> str:
        """The 60 digits."""
        return _digits(self.fingerprints[0]) + _digits(self.fingerprints[1])

    @property
    def groups(self) -> tuple[str, ...]:
        """The 12 groups of 5 digits people read out to each other."""
        d = self.digits
        return tuple(d[i : i + 5] for i in range(0, 60, 5))

    def __str__(self) -> str:
        return " ".join(self.groups)

    def scannable(self) -> bytes:
        """The QR-code form: msgpack ``{"v": 1, "fp": [low, high]}`` (76 bytes)."""
        return packb({"v": SAFETY_NUMBER_VERSION, "fp": list(self.fingerprints)})

    def matches_scanned(self, scanned: bytes) -> bool:
        """True if ``scanned`` (the other side's QR code) is this safety number.

        Raises:
            SafetyNumberError: ``scanned`` is not a scannable safety number.
        """
        other = decode_scannable(scanned)
        return hmac.compare_digest(
            self.fingerprints[0] + self.fingerprints[1],
            other.fingerprints[0] + other.fingerprints[1],
        )


def safety_number(first: tuple[bytes, bytes], second: tuple[bytes, bytes]) -> SafetyNumber:
    """The safety number of two members, each given as ``(identity, public signature key)``.

    The order of the two members does not matter.

    Raises:
        ValueError, TypeError: an identity or key is empty, too long or not bytes.
    """
    a = _fingerprint(*first)
    b = _fingerprint(*second)
    return SafetyNumber((a, b) if a <= b else (b, a))


def decode_scannable(data: bytes) -> SafetyNumber:
    """Decode the QR-code form.

    Raises:
        SafetyNumberError: on any input that is not a scannable safety number.
    """
    f = unpack_map(data, SafetyNumberError, "scanned safety number", 1024)
    if f.get_int("v", 0, 2**64 - 1) != SAFETY_NUMBER_VERSION:
        f.fail("unsupported version")
    f.only(("v", "fp"))
    raw = f.raw("fp")
    if not isinstance(raw, list) or len(raw) != 2:
        f.fail("field 'fp' must hold two fingerprints")
    low = f.check_bytes(raw[0], "fp", FINGERPRINT_BYTES, FINGERPRINT_BYTES)
    high = f.check_bytes(raw[1], "fp", FINGERPRINT_BYTES, FINGERPRINT_BYTES)
    if low > high:
        f.fail("fingerprints are not in ascending order")
    return SafetyNumber((low, high))


class Verification(Enum):
    """What the UI shows next to a member."""

    #: Never verified: no stored key.
    UNVERIFIED = "unverified"
    #: The current key is the one the user verified.
    VERIFIED = "verified"
    #: The user verified a different key. Show loudly; only an explicit user action clears it.
    KEY_CHANGED = "key_changed"


@dataclass(frozen=True, slots=True)
class VerificationState:
    """The user's verification of one member's identity key.

    Nothing here updates itself: a changed key stays ``KEY_CHANGED`` until the user
    verifies the new key (:meth:`mark_verified`) or explicitly drops the old
    verification (:meth:`forget`).
    """

    #: The member's identity.
    identity: bytes
    #: The public signature key the user verified, or None.
    verified_key: bytes | None = None

    def __post_init__(self) -> None:
        check_bytes(self.identity, "identity", 1, MAX_IDENTITY_BYTES)
        if self.verified_key is not None:
            check_bytes(self.verified_key, "verified_key", 1, MAX_KEY_BYTES)

    def status(self, current_key: bytes) -> Verification:
        """Compare the member's current key with the verified one (in constant time)."""
        check_bytes(current_key, "current_key", 1, MAX_KEY_BYTES)
        if self.verified_key is None:
            return Verification.UNVERIFIED
        if hmac.compare_digest(self.verified_key, current_key):
            return Verification.VERIFIED
        return Verification.KEY_CHANGED

    def mark_verified(self, current_key: bytes) -> VerificationState:
        """The state after the user compared safety numbers for ``current_key``."""
        return VerificationState(self.identity, current_key)

    def forget(self) -> VerificationState:
        """The state after the user chose to drop the verification (back to unverified)."""
        return VerificationState(self.identity, None)
