"""Variable-length vector headers (RFC 9420 §2.1.2) against deserialization.json.

Vector schema (deserialization.json), a list of::

    {
      "vlbytes_header": hex,   # the varint length prefix of an opaque<V>
      "length": integer        # the length it encodes
    }

Verification: the header decodes to ``length`` (and, since MLS requires minimal
encodings, ``length`` encodes back to the same header).
"""

from __future__ import annotations

from typing import Any

import pytest

from backchannel.mls.codec import Reader, decode_varint, encode_varint
from backchannel.mls.errors import DecodeError
from tests.vectors import load_vectors

VECTORS = load_vectors("deserialization")


@pytest.mark.parametrize("vector", [pytest.param(v, id=f"length={v['length']}") for v in VECTORS])
def test_vlbytes_header(vector: dict[str, Any]) -> None:
    header = bytes.fromhex(vector["vlbytes_header"])
    length = vector["length"]
    assert decode_varint(header) == (length, len(header))
    r = Reader(header)
    assert r.varint() == length
    r.finish()
    assert encode_varint(length) == header


@pytest.mark.parametrize("vector", [pytest.param(v, id=f"length={v['length']}") for v in VECTORS])
def test_vlbytes_header_with_body(vector: dict[str, Any]) -> None:
    header = bytes.fromhex(vector["vlbytes_header"])
    length = vector["length"]
    if length > 1 << 16:
        # Do not allocate a gigabyte; a short body must fail fast instead.
        with pytest.raises(DecodeError):
            Reader(header + b"\x00" * 16).opaque()
        return
    body = bytes(range(256)) * (length // 256) + bytes(length % 256)
    r = Reader(header + body)
    assert r.opaque() == body
    r.finish()
    if length:
        with pytest.raises(DecodeError):
            Reader(header + body[:-1]).opaque()
