"""How room plaintexts are framed: size-bucket padding, and the strict msgpack reader.

Padding (docs/room-protocol.md §6). A padded plaintext is::

    uint32 big-endian length L || L bytes of data || zero bytes up to the bucket size

where the total length is the smallest entry of :data:`BUCKETS` that fits ``4 + L``.
Padding sits inside the plaintext, so an MLS ciphertext's length reveals only
the bucket. :func:`unpad` accepts exactly what :func:`pad` produces: a length that
is a bucket, a declared length that fits, and all-zero padding.

The msgpack reader is shared by every format this package defines. It refuses
extension types, non-str and duplicate map keys, invalid UTF-8 and trailing bytes,
and turns every failure into the caller's one decode error type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable
from typing import Any, Final, NoReturn

import msgpack

from .errors import PaddingError, RoomDecodeError

__all__ = ["BUCKETS", "MAX_PADDED_BYTES", "bucket_for", "pad", "unpad"]

#: Padded plaintext sizes, in bytes: powers of two from 256 B to 128 KiB. Short
#: texts, reactions, deletes and edits all become 256 bytes; a full file chunk
#: becomes exactly 128 KiB, which with MLS framing stays under the relay's
#: default 256 KiB blob limit.
BUCKETS: Final[tuple[int, ...]] = tuple(256 << i for i in range(10))
#: The largest padded plaintext (the last bucket).
MAX_PADDED_BYTES: Final = BUCKETS[-1]
_LENGTH_BYTES: Final = 4


def bucket_for(length: int) -> int:
    """The padded size for ``length`` bytes of data.

    Raises:
        ValueError: ``length`` is negative or does not fit the largest bucket.
    """
    if length < 0:
        raise ValueError("length must not be negative")
    needed = length + _LENGTH_BYTES
    for bucket in BUCKETS:
        if needed <= bucket:
            return bucket
    raise ValueError(f"data must be at most {MAX_PADDED_BYTES - _LENGTH_BYTES} bytes to pad")


def pad(data: bytes) -> bytes:
    """``data`` framed with its length and zero-padded to its bucket.

    Raises:
        ValueError: ``data`` does not fit the largest bucket.
    """
    bucket = bucket_for(len(data))
    return (
        len(data).to_bytes(_LENGTH_BYTES, "big") + data + bytes(bucket - _LENGTH_BYTES - len(data))
    )


def unpad(padded: bytes) -> bytes:
    """The data inside a plaintext made by :func:`pad`.

    Raises:
        PaddingError: the length is not a bucket, the declared length does not fit,
            or a padding byte is not zero. Nothing else, on any input.
    """
    if not isinstance(padded, bytes | bytearray | memoryview):
        raise PaddingError("padded plaintext must be bytes")
    padded = bytes(padded)
    if len(padded) not in BUCKETS:
        raise PaddingError("padded plaintext length is not one of the size buckets")
    length = int.from_bytes(padded[:_LENGTH_BYTES], "big")
    end = _LENGTH_BYTES + length
    if end > len(padded):
        raise PaddingError("declared length exceeds the padded plaintext")
    if bucket_for(length) != len(padded):
        # One padded form per length: a larger bucket than needed is refused too.
        raise PaddingError("padded plaintext is not in the smallest bucket that fits")
    if padded[end:].count(0) != len(padded) - end:
        raise PaddingError("padding bytes are not zero")
    return padded[_LENGTH_BYTES:end]


# --- Strict msgpack reading (internal to backchannel.rooms) ------------------------------


def _no_ext(code: int, data: bytes) -> NoReturn:
    raise ValueError("msgpack extension types are not allowed")


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if not isinstance(key, str):
            raise ValueError("map keys must be str")
        if key in result:
            raise ValueError("duplicate map key")
        result[key] = value
    return result


def packb(obj: object) -> bytes:
    """msgpack encoding as every room format uses it (bin type for bytes)."""
    data = msgpack.packb(obj, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def unpack_map(
    data: object,
    error: type[RoomDecodeError] | Callable[[str], Exception],
    what: str,
    max_bytes: int,
) -> Fields:
    """Decode one msgpack map from ``data`` and wrap it for typed field access.

    Every failure raises ``error(message)``; nothing else escapes on any input.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise error(f"{what} must be bytes")
    if len(data) > max_bytes:
        raise error(f"{what} is longer than {max_bytes} bytes")
    try:
        obj = msgpack.unpackb(
            bytes(data),
            raw=False,
            strict_map_key=True,
            use_list=True,
            object_pairs_hook=_pairs,
            ext_hook=_no_ext,
        )
    except Exception:  # a C parser on hostile bytes: every failure is "not msgpack"
        raise error(f"{what} is not valid msgpack") from None
    if not isinstance(obj, dict):
        raise error(f"{what} is not a msgpack map")
    return Fields(obj, error, what)


class Fields:
    """Typed, bounded access to the fields of a decoded msgpack map.

    A field that is absent or nil is "missing": required readers refuse it and the
    optional ones return None. Integers never accept booleans; str and bin are
    never confused.
    """

    __slots__ = ("_error", "_map", "_what")

    def __init__(
        self,
        mapping: dict[str, Any],
        error: type[RoomDecodeError] | Callable[[str], Exception],
        what: str,
    ) -> None:
        self._map = mapping
        self._error = error
        self._what = what

    def fail(self, message: str) -> NoReturn:
        """Raise the decode error with ``message`` about this map."""
        raise self._error(f"{self._what}: {message}")

    def keys(self) -> Collection[str]:
        """The keys present in the map."""
        return self._map.keys()

    def only(self, allowed: Iterable[str]) -> None:
        """Refuse any key outside ``allowed`` (strict formats)."""
        extra = set(self._map) - set(allowed)
        if extra:
            self.fail("unexpected field")

    def raw(self, key: str) -> Any:
        """The value under ``key`` (None when missing)."""
        return self._map.get(key)

    def has(self, key: str) -> bool:
        """True if ``key`` is present and not nil."""
        return self._map.get(key) is not None

    def get_int(self, key: str, low: int, high: int) -> int:
        """A required integer in ``[low, high]``."""
        value = self._map.get(key)
        if value is None:
            self.fail(f"field '{key}' is missing")
        return self.check_int(value, key, low, high)

    def check_int(self, value: object, key: str, low: int, high: int) -> int:
        """``value`` as an integer in ``[low, high]``."""
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(f"field '{key}' must be an integer")
        if not low <= value <= high:
            self.fail(f"field '{key}' is out of range")
        return value

    def get_bool(self, key: str) -> bool:
        """A required boolean."""
        value = self._map.get(key)
        if not isinstance(value, bool):
            self.fail(f"field '{key}' must be a boolean")
        return value

    def get_bytes(self, key: str, low: int, high: int) -> bytes:
        """A required bin of ``low`` to ``high`` bytes."""
        value = self._map.get(key)
        if value is None:
            self.fail(f"field '{key}' is missing")
        return self.check_bytes(value, key, low, high)

    def check_bytes(self, value: object, key: str, low: int, high: int) -> bytes:
        """``value`` as a bin of ``low`` to ``high`` bytes."""
        if not isinstance(value, bytes):
            self.fail(f"field '{key}' must be bin")
        if not low <= len(value) <= high:
            self.fail(f"field '{key}' has the wrong length")
        return value

    def optional_bytes(self, key: str, low: int, high: int) -> bytes | None:
        """An optional bin of ``low`` to ``high`` bytes."""
        value = self._map.get(key)
        return None if value is None else self.check_bytes(value, key, low, high)

    def get_str(self, key: str, low: int, high: int, *, text: bool = False) -> str:
        """A required str whose UTF-8 form is ``low`` to ``high`` bytes.

        Control characters are refused unless ``text`` is set, which allows
        newline and tab only.
        """
        value = self._map.get(key)
        if value is None:
            self.fail(f"field '{key}' is missing")
        return self.check_str(value, key, low, high, text=text)

    def check_str(self, value: object, key: str, low: int, high: int, *, text: bool = False) -> str:
        """``value`` as a str, as :meth:`get_str` checks it."""
        if not isinstance(value, str):
            self.fail(f"field '{key}' must be str")
        try:
            check_text(value, key, low, high, multiline=text)
        except ValueError as exc:
            self.fail(str(exc))
        return value


def utf8_length(value: str) -> int:
    """The UTF-8 length of ``value``; lone surrogates make it invalid (ValueError)."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("text is not valid UTF-8") from None


def has_control(value: str, *, multiline: bool) -> bool:
    """True if ``value`` holds a C0/C1 control character (or DEL) it may not hold."""
    for ch in value:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            if multiline and ch in "\n\t":
                continue
            return True
    return False


def check_text(value: str, name: str, low: int, high: int, *, multiline: bool = False) -> None:
    """Raise ValueError unless ``value`` is valid text of ``low`` to ``high`` UTF-8 bytes."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str")
    if not low <= utf8_length(value) <= high:
        raise ValueError(f"{name} must be {low} to {high} bytes of UTF-8")
    if has_control(value, multiline=multiline):
        raise ValueError(f"{name} must not contain control characters")


def check_bytes(value: bytes, name: str, low: int, high: int) -> None:
    """Raise TypeError/ValueError unless ``value`` is bytes of ``low`` to ``high`` bytes."""
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes")
    if not low <= len(value) <= high:
        if low == high:
            raise ValueError(f"{name} must be {low} bytes")
        raise ValueError(f"{name} must be {low} to {high} bytes")


def check_int(value: int, name: str, low: int, high: int | float = math.inf) -> None:
    """Raise TypeError/ValueError unless ``value`` is an int (not bool) in ``[low, high]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
