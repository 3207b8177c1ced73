"""TLS presentation language codec with MLS variable-length vectors (RFC 9420 §2.1).

The core is a :class:`Writer` that appends to a buffer and a :class:`Reader` that
consumes one; structs are built on these. Decoding errors are always
:class:`~backchannel.mls.errors.DecodeError`.

Every wire struct subclasses :class:`Struct` and implements one
``encode(w: Writer)`` / ``decode(r: Reader)`` pair; :meth:`Struct.to_bytes` and
:meth:`Struct.from_bytes` (which rejects trailing bytes) come for free. Vectors
(``T list<V>``, whose varint prefix counts *bytes*), ``optional<T>`` and enums have
helpers on both sides so each struct states its layout once, in RFC order.

Untrusted input is bounded three ways: a declared vector length larger than what
is left of the enclosing input fails before anything is allocated, every read is
checked against the innermost enclosing vector, and vector nesting is capped at
:data:`MAX_NESTING` (MLS structs are not recursive, so honest input stays far below).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from enum import IntEnum
from typing import Protocol, Self, TypeVar

from .errors import DecodeError, UsageError

__all__ = [
    "MAX_NESTING",
    "MAX_VECTOR_LENGTH",
    "Encodable",
    "Reader",
    "Struct",
    "Writer",
    "decode_varint",
    "encode_varint",
]

_VARINT_MAX = (1 << 30) - 1

#: Largest length a ``<V>`` vector can declare (§2.1.2): 2^30 - 1 bytes.
MAX_VECTOR_LENGTH = _VARINT_MAX

#: Deepest nesting of vectors a :class:`Reader` accepts before giving up.
MAX_NESTING = 32

T = TypeVar("T")
E = TypeVar("E", bound=IntEnum)


class Encodable(Protocol):
    """Anything that appends its own TLS encoding to a :class:`Writer`."""

    def encode(self, w: Writer) -> None: ...


def encode_varint(value: int) -> bytes:
    """Encode a vector length as the MLS variable-length integer (§2.1.2)."""
    if value < 0:
        raise ValueError("varint must not be negative")
    if value < 1 << 6:
        return value.to_bytes(1, "big")
    if value < 1 << 14:
        return (value | 0x4000).to_bytes(2, "big")
    if value <= _VARINT_MAX:
        return (value | 0x8000_0000).to_bytes(4, "big")
    raise ValueError("varint must be below 2^30")


def decode_varint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode a varint at ``offset``; returns ``(value, new_offset)``.

    Raises:
        DecodeError: truncated, the reserved 0b11 prefix, or a non-minimal encoding.
    """
    if offset >= len(data):
        raise DecodeError("truncated varint")
    prefix = data[offset] >> 6
    if prefix == 3:
        raise DecodeError("invalid varint prefix")
    size = 1 << prefix
    if offset + size > len(data):
        raise DecodeError("truncated varint")
    value = int.from_bytes(data[offset : offset + size], "big") & ((1 << (8 * size - 2)) - 1)
    if size > 1 and value < (1 << (8 * (size >> 1) - 2)):
        raise DecodeError("non-minimal varint")
    return value, offset + size


class Writer:
    """Appends TLS-encoded values to a buffer."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def _uint(self, value: int, size: int) -> Writer:
        try:
            # to_bytes refuses negative values and values too wide for ``size``.
            self._buf += value.to_bytes(size, "big")
        except OverflowError:
            # A caller bug (e.g. a negative index), not something a peer can cause.
            raise UsageError(f"value does not fit a uint{8 * size}") from None
        return self

    def uint8(self, value: int) -> Writer:
        """``uint8``, big-endian like all TLS integers.

        Raises:
            UsageError: ``value`` is out of range (likewise for the wider sizes).
        """
        return self._uint(value, 1)

    def uint16(self, value: int) -> Writer:
        """``uint16``."""
        return self._uint(value, 2)

    def uint32(self, value: int) -> Writer:
        """``uint32``."""
        return self._uint(value, 4)

    def uint64(self, value: int) -> Writer:
        """``uint64``."""
        return self._uint(value, 8)

    def raw(self, data: bytes) -> Writer:
        """Fixed-length bytes, no prefix."""
        self._buf += data
        return self

    def opaque(self, data: bytes) -> Writer:
        """``opaque data<V>``: varint length then the bytes."""
        size = len(data)
        if size < 1 << 6:
            self._buf.append(size)  # the one-byte varint, the usual case
        else:
            self._buf += encode_varint(size)
        self._buf += data
        return self

    def boolean(self, value: bool) -> Writer:
        """A boolean as one octet, 0 or 1."""
        return self.uint8(1 if value else 0)

    def struct(self, value: Encodable) -> Writer:
        """Append an embedded struct (no prefix)."""
        value.encode(self)
        return self

    def vector(self, items: Iterable[T], write_item: Callable[[Writer, T], object]) -> Writer:
        """``T items<V>``: the varint prefix counts the bytes of all encoded items (§2.1.2).

        Args:
            items: the elements, in wire order.
            write_item: appends one element, e.g. ``Writer.uint16``.
        """
        inner = Writer()
        for item in items:
            write_item(inner, item)
        return self.opaque(bytes(inner._buf))

    def struct_vector(self, items: Iterable[Encodable]) -> Writer:
        """``T items<V>`` for struct elements."""
        inner = Writer()
        for item in items:
            item.encode(inner)
        return self.opaque(bytes(inner._buf))

    def optional(self, value: T | None, write_value: Callable[[Writer, T], object]) -> Writer:
        """``optional<T>``: a presence octet 0/1 then the value if present (§2.1.1)."""
        if value is None:
            return self.uint8(0)
        self.uint8(1)
        write_value(self, value)
        return self

    def optional_struct(self, value: Encodable | None) -> Writer:
        """``optional<T>`` for a struct value."""
        if value is None:
            return self.uint8(0)
        self.uint8(1)
        value.encode(self)
        return self

    def to_bytes(self) -> bytes:
        """Everything written so far."""
        return bytes(self._buf)


class Reader:
    """Consumes TLS-encoded values from bytes; every read checks bounds.

    Inside a vector, reads are bounded by the vector's end, not the buffer's.
    """

    __slots__ = ("_data", "_depth", "_end", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._end = len(self._data)
        self._depth = 0

    def _take(self, size: int) -> bytes:
        if size < 0:
            raise UsageError("read size must not be negative")
        end = self._pos + size
        if end > self._end:
            raise DecodeError("truncated input")
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def uint8(self) -> int:
        """Read a ``uint8``; every read raises :class:`DecodeError` when input runs out."""
        if self._pos >= self._end:
            raise DecodeError("truncated input")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def uint16(self) -> int:
        """Read a ``uint16``."""
        return int.from_bytes(self._take(2), "big")

    def uint32(self) -> int:
        """Read a ``uint32``."""
        return int.from_bytes(self._take(4), "big")

    def uint64(self) -> int:
        """Read a ``uint64``."""
        return int.from_bytes(self._take(8), "big")

    def raw(self, size: int) -> bytes:
        """Read ``size`` fixed-length bytes (``opaque x[size]``)."""
        return self._take(size)

    def varint(self) -> int:
        """A variable-length integer (§2.1.2), bounded by the enclosing vector.

        Raises:
            DecodeError: truncated, the reserved 0b11 prefix, or a non-minimal encoding.
        """
        first = self.uint8()
        prefix = first >> 6
        if prefix == 0:
            return first
        if prefix == 3:
            raise DecodeError("invalid varint prefix")
        size = 1 << prefix
        value = int.from_bytes(bytes([first & 0x3F]) + self._take(size - 1), "big")
        if value < (1 << (8 * (size >> 1) - 2)):
            raise DecodeError("non-minimal varint")
        return value

    def _length(self) -> int:
        size = self.varint()
        if size > self._end - self._pos:
            # Fail before slicing or allocating anything of the claimed size.
            raise DecodeError("vector length exceeds the remaining input")
        return size

    def opaque(self) -> bytes:
        """Read ``opaque data<V>``; a length beyond the remaining input fails at once."""
        return self._take(self._length())

    def boolean(self) -> bool:
        """Read a boolean octet; values other than 0 and 1 are malformed."""
        value = self.uint8()
        if value > 1:
            raise DecodeError("invalid boolean")
        return value == 1

    def enum8(self, enum: type[E]) -> E:
        """A ``uint8`` enum whose unknown and reserved values are invalid."""
        value = self.uint8()
        try:
            return enum(value)
        except ValueError:
            raise DecodeError(f"unknown {enum.__name__} value") from None

    def enum16(self, enum: type[E]) -> E:
        """A ``uint16`` enum whose unknown and reserved values are invalid."""
        value = self.uint16()
        try:
            return enum(value)
        except ValueError:
            raise DecodeError(f"unknown {enum.__name__} value") from None

    def vector(self, read_item: Callable[[Reader], T]) -> tuple[T, ...]:
        """``T items<V>``: read elements until the byte length is used up exactly.

        Args:
            read_item: reads one element, e.g. ``Reader.uint16`` or ``Extension.decode``.

        Raises:
            DecodeError: bad length, an element overrunning the vector, or nesting
                deeper than :data:`MAX_NESTING`.
        """
        size = self._length()
        if self._depth >= MAX_NESTING:
            raise DecodeError("vectors nested too deeply")
        outer_end = self._end
        self._end = self._pos + size
        self._depth += 1
        items: list[T] = []
        try:
            while self._pos < self._end:
                start = self._pos
                items.append(read_item(self))
                if self._pos == start:
                    raise DecodeError("vector element consumed no input")
        finally:
            self._end = outer_end
            self._depth -= 1
        return tuple(items)

    def optional(self, read_value: Callable[[Reader], T]) -> T | None:
        """``optional<T>`` (§2.1.1); a presence octet other than 0 or 1 is malformed."""
        present = self.uint8()
        if present == 0:
            return None
        if present != 1:
            raise DecodeError("invalid optional presence octet")
        return read_value(self)

    def remaining(self) -> int:
        """Bytes left before the end of the input (or of the enclosing vector)."""
        return self._end - self._pos

    def finish(self) -> None:
        """Raise :class:`DecodeError` if any bytes are left over."""
        if self._pos != self._end:
            raise DecodeError("trailing bytes")


class Struct(ABC):
    """Base of every wire struct: one ``encode``/``decode`` pair, bytes helpers for free.

    Subclasses are frozen slots dataclasses. ``decode`` reads exactly one value and
    leaves the reader after it; :meth:`from_bytes` also insists nothing follows.
    """

    __slots__ = ()

    @abstractmethod
    def encode(self, w: Writer) -> None:
        """Append this struct's TLS encoding to ``w``."""

    @classmethod
    @abstractmethod
    def decode(cls, r: Reader) -> Self:
        """Read one value from ``r``.

        Raises:
            DecodeError: the bytes are not a valid encoding.
        """

    def to_bytes(self) -> bytes:
        """The TLS encoding of this struct."""
        w = Writer()
        self.encode(w)
        return w.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly one value from ``data``.

        Raises:
            DecodeError: invalid encoding, trailing bytes, or (for a family base such
                as ``Credential``) a value of another variant than ``cls``.
        """
        r = Reader(data)
        value = cls.decode(r)
        r.finish()
        if not isinstance(value, cls):
            raise DecodeError(f"encoding is not a {cls.__name__}")
        return value
