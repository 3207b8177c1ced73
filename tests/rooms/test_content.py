"""Room content: round trips, padding buckets, hostile input, and file transfer."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backchannel.rooms.content import (
    MAX_AUTHOR_BYTES,
    MAX_BODY_BYTES,
    MAX_CHUNK_BYTES,
    MAX_EMOJI_BYTES,
    Content,
    Delete,
    Edit,
    FileAssembler,
    FileChunk,
    FileManifest,
    Profile,
    Reaction,
    Text,
    Unknown,
    decode_content,
    encode_content,
    new_message_id,
    split_file,
)
from backchannel.rooms.errors import ContentDecodeError, FileIntegrityError, PaddingError
from backchannel.rooms.padding import BUCKETS, MAX_PADDED_BYTES, bucket_for, pad, unpad

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MID = bytes(range(16))
OTHER = bytes(range(16, 32))
AUTHOR = b"\xa0" * 16
TS = 1_900_000_000_000


def packed(**fields: Any) -> bytes:
    base: dict[str, Any] = {"v": 1, "t": "text", "id": MID, "ts": TS, "body": "hi"}
    base.update(fields)
    return pad(msgpack.packb({k: v for k, v in base.items() if v is not ...}, use_bin_type=True))


# --- padding --------------------------------------------------------------------------------


def test_buckets_are_documented_powers_of_two() -> None:
    assert BUCKETS == (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
    assert MAX_PADDED_BYTES == 131072


@pytest.mark.parametrize("n", [0, 1, 251, 252, 253, 508, 509, 4092, 4093, MAX_PADDED_BYTES - 4])
def test_pad_boundaries(n: int) -> None:
    data = b"\xff" * n
    padded = pad(data)
    assert len(padded) == bucket_for(n) in BUCKETS
    assert unpad(padded) == data


def test_pad_refuses_oversize() -> None:
    with pytest.raises(ValueError, match="at most"):
        pad(bytes(MAX_PADDED_BYTES - 3))


@given(st.binary(max_size=5000))
@FUZZ
def test_pad_round_trip(data: bytes) -> None:
    padded = pad(data)
    assert unpad(padded) == data
    assert len(padded) == min(b for b in BUCKETS if b >= len(data) + 4)


@pytest.mark.parametrize(
    ("padded", "reason"),
    [
        (b"", "bucket"),
        (bytes(255), "bucket"),
        (bytes(257), "bucket"),
        ((300).to_bytes(4, "big") + bytes(252), "exceeds"),
        (pad(b"abc")[:-1] + b"\x01", "not zero"),
        ((10).to_bytes(4, "big") + bytes(508), "smallest bucket"),
    ],
)
def test_unpad_refuses_bad_padding(padded: bytes, reason: str) -> None:
    with pytest.raises(PaddingError, match=reason):
        unpad(padded)


@given(st.binary(max_size=1100))
@FUZZ
def test_unpad_raises_only_padding_error(data: bytes) -> None:
    with contextlib.suppress(PaddingError):
        unpad(data)


# --- content round trips --------------------------------------------------------------------

ids16 = st.binary(min_size=16, max_size=16)
times = st.integers(0, 2**63 - 1)
bodies = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f")
    | st.sampled_from("\n\t"),
    max_size=200,
)
emoji = st.sampled_from(["👍", "❤️", "👨‍👩‍👧‍👦", "🇺🇳", "ok", "+1"])
authors = st.binary(min_size=1, max_size=MAX_AUTHOR_BYTES)
contents: st.SearchStrategy[Content] = st.one_of(
    st.builds(Text, ids16, times, bodies) | st.builds(Text, ids16, times, bodies, ids16, authors),
    st.builds(Edit, ids16, times, ids16, bodies),
    st.builds(Delete, ids16, times, ids16),
    st.builds(
        Profile,
        ids16,
        times,
        st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=16),
    ),
    st.builds(Reaction, ids16, times, ids16, authors, emoji, st.booleans()),
    st.builds(
        FileManifest,
        ids16,
        times,
        st.sampled_from(["report.pdf", "notes.txt", "ü.md"]),
        st.integers(0, 2**32),
        st.binary(min_size=32, max_size=32),
        st.integers(1024, MAX_CHUNK_BYTES),
        st.none() | st.just("application/pdf"),
    ),
    st.builds(
        FileChunk, ids16, times, ids16, st.integers(0, 1000), st.binary(min_size=1, max_size=300)
    ),
)


@given(contents)
@FUZZ
def test_round_trip_is_identity(content: Content) -> None:
    padded = encode_content(content)
    assert len(padded) in BUCKETS
    assert decode_content(padded) == content


def test_small_messages_of_every_type_share_the_smallest_bucket() -> None:
    small = [
        Text(MID, TS, "x" * 130, OTHER, AUTHOR),
        Edit(MID, TS, OTHER, "fixed"),
        Delete(MID, TS, OTHER),
        Reaction(MID, TS, OTHER, AUTHOR, "👨‍👩‍👧‍👦", remove=True),
        FileManifest(
            MID, TS, "a" * 60 + ".pdf", 10**9, bytes(32), MAX_CHUNK_BYTES, "application/pdf"
        ),
    ]
    assert {len(encode_content(c)) for c in small} == {256}


def test_largest_messages_fit_the_largest_bucket() -> None:
    longest = Text(MID, 2**63 - 1, "é" * (MAX_BODY_BYTES // 2), OTHER, b"\xff" * MAX_AUTHOR_BYTES)
    assert len(encode_content(longest)) == 32768
    chunk = FileChunk(MID, 2**63 - 1, OTHER, 2**22, b"\xff" * MAX_CHUNK_BYTES)
    assert len(encode_content(chunk)) == MAX_PADDED_BYTES


def test_unknown_types_are_kept_whole() -> None:
    data = msgpack.packb(
        {"v": 1, "t": "poll", "id": MID, "ts": TS, "question": "?", "options": [1, 2]},
        use_bin_type=True,
    )
    content = decode_content(pad(data))
    assert isinstance(content, Unknown)
    assert (content.content_type, content.message_id, content.sent_at_ms) == ("poll", MID, TS)
    assert content.raw == data
    assert encode_content(content) == pad(data)
    with pytest.raises(ValueError, match="does not decode"):
        encode_content(Unknown(MID, TS, "poll", msgpack.packb({"v": 1})))
    with pytest.raises(ValueError, match="known type"):
        Unknown(MID, TS, "text", data)


def test_unknown_fields_of_known_types_are_ignored() -> None:
    content = decode_content(packed(mentions=[b"x"], future="yes"))
    assert content == Text(MID, TS, "hi")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (packed(v=2), "unsupported version"),
        (packed(v=...), "missing"),
        (packed(t=...), "missing"),
        (packed(t=1), "str"),
        (packed(t="Poll!"), "type name"),
        (packed(id=b"short"), "length"),
        (packed(id="0123456789abcdef"), "bin"),
        (packed(ts=-1), "range"),
        (packed(ts=2**64 - 1), "range"),
        (packed(ts=1.0), "integer"),
        (packed(ts=True), "integer"),
        (packed(body=...), "missing"),
        (packed(body=b"hi"), "str"),
        (packed(body="x" * (MAX_BODY_BYTES + 1)), "bytes"),
        (packed(body="bell\x07"), "control"),
        (packed(body="\x1b]0;pwned\x07"), "control"),
        (packed(reply_to=b"1"), "length"),
        (packed(t="reaction", target=OTHER, target_author=AUTHOR, emoji=""), "bytes"),
        (packed(t="reaction", target=OTHER, target_author=AUTHOR, emoji="a b"), "spaces"),
        (
            packed(
                t="reaction", target=OTHER, target_author=AUTHOR, emoji="x" * (MAX_EMOJI_BYTES + 1)
            ),
            "bytes",
        ),
        (packed(t="reaction", target=OTHER, target_author=AUTHOR, emoji="!" * 17), "code points"),
        (packed(t="reaction", target=OTHER, target_author=AUTHOR, emoji="+", remove=1), "boolean"),
        (packed(t="reaction", target=OTHER, emoji="+"), "'target_author' is missing"),
        (packed(t="reaction", target=OTHER, target_author=b"", emoji="+"), "length"),
        (packed(t="reaction", target=OTHER, target_author=b"a" * 256, emoji="+"), "length"),
        (packed(t="text", body="hi", reply_to=OTHER), "go together"),
        (packed(t="text", body="hi", reply_author=AUTHOR), "go together"),
        (packed(t="text", body="hi", reply_to=OTHER, reply_author="alice"), "bin"),
        (packed(t="delete"), "missing"),
        (packed(t="file", name="../x", size=1, sha256=bytes(32), chunk_size=1024), "path"),
        (packed(t="file", name="a", size=1, sha256=bytes(31), chunk_size=1024), "length"),
        (packed(t="file", name="a", size=1, sha256=bytes(32), chunk_size=10), "range"),
        (packed(t="file", name="a", size=2**33, sha256=bytes(32), chunk_size=1024), "range"),
        (packed(t="chunk", file=OTHER, index=0, data=b""), "length"),
        (packed(t="chunk", file=OTHER, index=-1, data=b"x"), "range"),
        (pad(b"\x92\x01\x02"), "not a msgpack map"),
        (pad(b"\xc1"), "not valid msgpack"),
        (pad(msgpack.packb({"v": 1}) + b"\x00"), "not valid msgpack"),
        (pad(b"\xd4\x05\x00"), "not valid msgpack"),
        (pad(b"\x81\x01\x01"), "not valid msgpack"),  # int key
        (pad(b"\x81\xa1v\xa3\xff\xfe\xfd"), "not valid msgpack"),  # invalid UTF-8
        (b"\x00\x00\x00\x03abc", "bucket"),
    ],
)
def test_hostile_content_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ContentDecodeError, match=reason):
        decode_content(data)


@given(st.binary(max_size=600))
@FUZZ
def test_random_bytes_raise_only_the_decode_error(data: bytes) -> None:
    for candidate in (data, pad(data)):
        with contextlib.suppress(ContentDecodeError):
            decode_content(candidate)


@given(contents, st.data())
@FUZZ
def test_mutated_plaintexts_raise_only_the_decode_error(
    content: Content, data: st.DataObject
) -> None:
    inner = bytearray(unpad(encode_content(content)))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(inner) - 1))
        inner[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(inner)))
    for candidate in (pad(bytes(inner)), pad(bytes(inner[:cut]))):
        try:
            decoded = decode_content(candidate)
        except ContentDecodeError:
            continue
        assert isinstance(decoded, Content)


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text(max_size=5)
        | st.binary(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=12,
    ),
    st.sampled_from(["text", "edit", "delete", "reaction", "file", "chunk", "profile", "other"]),
)
@FUZZ
def test_wrongly_typed_fields_raise_only_the_decode_error(value: Any, t: str) -> None:
    for key in (
        "body",
        "target",
        "emoji",
        "remove",
        "reply_to",
        "name",
        "size",
        "sha256",
        "chunk_size",
        "media_type",
        "file",
        "index",
        "data",
        "id",
        "ts",
        "v",
        "t",
    ):
        fields = {"v": 1, "t": t, "id": MID, "ts": TS, key: value}
        with contextlib.suppress(ContentDecodeError):
            decode_content(pad(msgpack.packb(fields, use_bin_type=True)))


def test_constructors_refuse_bad_values() -> None:
    with pytest.raises(ValueError):
        Text(b"short", TS, "x")
    with pytest.raises(ValueError):
        Text(MID, TS, "x" * (MAX_BODY_BYTES + 1))
    with pytest.raises(ValueError):
        Text(MID, TS, "\ud800")  # a lone surrogate is not UTF-8
    with pytest.raises(TypeError):
        Text(MID, True, "x")
    with pytest.raises(ValueError):
        Reaction(MID, TS, OTHER, AUTHOR, " ")
    with pytest.raises(ValueError):
        FileManifest(MID, TS, "..", 0, bytes(32), 1024)
    with pytest.raises(TypeError):
        encode_content("text")  # type: ignore[arg-type]
    assert len(new_message_id()) == 16
    assert new_message_id(lambda n: b"\x01" * n) == b"\x01" * 16


# --- files ----------------------------------------------------------------------------------


def counter_rng() -> Any:
    state = [0]

    def rng(n: int) -> bytes:
        state[0] += 1
        return state[0].to_bytes(n, "big")

    return rng


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 5000])
def test_split_and_assemble(size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    manifest, chunks = split_file(
        data, name="f.bin", sent_at_ms=TS, chunk_size=1024, rng=counter_rng()
    )
    assert manifest.size == size and manifest.sha256 == hashlib.sha256(data).digest()
    assert manifest.chunk_count == len(chunks) == -(-size // 1024)
    assert all(c.file_id == manifest.message_id for c in chunks)
    assert len({c.message_id for c in chunks} | {manifest.message_id}) == len(chunks) + 1
    assembler = FileAssembler(decode_content(encode_content(manifest)))  # type: ignore[arg-type]
    for chunk in reversed(chunks):
        decoded = decode_content(encode_content(chunk))
        assert isinstance(decoded, FileChunk)
        assembler.add(decoded)
        assembler.add(decoded)  # an identical duplicate is ignored
    assert assembler.complete and assembler.missing == ()
    assert assembler.received_bytes == size
    assert assembler.finish() == data


def test_assembler_checks_everything() -> None:
    data = bytes(3000)
    manifest, chunks = split_file(data, name="f", sent_at_ms=TS, chunk_size=1024)
    a = FileAssembler(manifest)
    assert not a.add(chunks[0])
    assert a.missing == (1, 2)
    with pytest.raises(FileIntegrityError, match="incomplete"):
        a.finish()
    with pytest.raises(FileIntegrityError, match="another file"):
        a.add(FileChunk(MID, TS, OTHER, 1, bytes(1024)))
    with pytest.raises(FileIntegrityError, match="beyond the end"):
        a.add(FileChunk(MID, TS, manifest.message_id, 3, bytes(1)))
    with pytest.raises(FileIntegrityError, match="wrong length"):
        a.add(FileChunk(MID, TS, manifest.message_id, 1, bytes(1000)))
    with pytest.raises(FileIntegrityError, match="wrong length"):
        a.add(FileChunk(MID, TS, manifest.message_id, 2, bytes(1024)))
    with pytest.raises(FileIntegrityError, match="same place"):
        a.add(FileChunk(MID, TS, manifest.message_id, 0, b"\x01" * 1024))
    # Right shapes, wrong bytes: only the hash catches it.
    a.add(FileChunk(MID, TS, manifest.message_id, 1, b"\x01" * 1024))
    assert a.add(chunks[2])
    with pytest.raises(FileIntegrityError, match="SHA-256"):
        a.finish()


def test_file_size_limits() -> None:
    with pytest.raises(ValueError):
        split_file(bytes(2049), name="f", sent_at_ms=TS, max_file_bytes=2048)
    big = FileManifest(MID, TS, "f", 10**9, bytes(32), MAX_CHUNK_BYTES)
    with pytest.raises(FileIntegrityError, match="larger"):
        FileAssembler(big, max_file_bytes=10**8)


def test_chunk_repr_hides_data() -> None:
    chunk = FileChunk(MID, TS, OTHER, 0, b"secret-bytes")
    assert "secret" not in repr(chunk)
