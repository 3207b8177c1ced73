"""Application content of a room: typed messages, their msgpack encoding, and file transfer.

Theory of operation: every MLS application message of a room carries one padded
msgpack map (docs/room-protocol.md §5-6). The map has a version ``v``, a type
``t``, a random 16-byte message id ``id`` and the sender's clock ``ts`` in
milliseconds, then the type's own fields. Because the map travels inside the MLS
ciphertext, the relay sees neither the type nor the sender time, and because it is
padded to a size bucket (:mod:`backchannel.rooms.padding`) the ciphertext length
reveals only the bucket.

Known types decode into :class:`Text`, :class:`Edit`, :class:`Delete`,
:class:`Reaction`, :class:`FileManifest` and :class:`FileChunk`. A type this
version does not know decodes into :class:`Unknown`, which keeps the original
bytes so a later version can read it. Fields a type does not know are ignored, so
types can grow optional fields without a version bump.

A message is identified by its author *and* its id, never by the id alone: ids
are chosen by senders, so a hostile member can reuse anyone's. References name
both where the target may be someone else's (a reply's ``reply_author``, a
reaction's ``target_author``); an edit, a delete and a file chunk can only refer
to a message of their own sender, so they carry the id alone.

What this module cannot check, the caller must: that an edit, delete or chunk's
target is a message of the same sender, that the sender may post at all
(``policy.may_post``), and that ``(sender, message id)`` was not seen before
(replays inside MLS).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .errors import ContentDecodeError, FileIntegrityError, PaddingError
from .padding import (
    MAX_PADDED_BYTES,
    Fields,
    check_bytes,
    check_int,
    check_text,
    packb,
    pad,
    unpack_map,
    unpad,
)

__all__ = [
    "CONTENT_VERSION",
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MAX_FILE_BYTES",
    "MAX_AUTHOR_BYTES",
    "MAX_BODY_BYTES",
    "MAX_CHUNK_BYTES",
    "MAX_EMOJI_BYTES",
    "MAX_FILE_BYTES",
    "MAX_FILE_NAME_BYTES",
    "MESSAGE_ID_BYTES",
    "Content",
    "Delete",
    "Edit",
    "FileAssembler",
    "FileChunk",
    "FileManifest",
    "Profile",
    "Reaction",
    "Text",
    "Unknown",
    "decode_content",
    "encode_content",
    "new_message_id",
    "split_file",
]

#: The ``v`` field of every content map.
CONTENT_VERSION: Final = 1
#: Length of a message id.
MESSAGE_ID_BYTES: Final = 16
#: Largest member id a reference may name (as ``policy.MAX_MEMBER_ID_BYTES``).
MAX_AUTHOR_BYTES: Final = 255
#: Largest text body (text and edit), in UTF-8 bytes.
MAX_BODY_BYTES: Final = 16384
#: Largest reaction, in UTF-8 bytes (enough for long ZWJ emoji sequences).
MAX_EMOJI_BYTES: Final = 32
#: Most code points in a reaction.
MAX_EMOJI_CODEPOINTS: Final = 16
#: Largest display name in a profile announcement, in UTF-8 bytes.
MAX_DISPLAY_NAME_BYTES: Final = 64
#: Largest file name, in UTF-8 bytes.
MAX_FILE_NAME_BYTES: Final = 255
#: Largest media type, in bytes.
MAX_MEDIA_TYPE_BYTES: Final = 127
#: Largest chunk: a full chunk message pads to exactly the largest bucket (128 KiB).
MAX_CHUNK_BYTES: Final = 130048
#: Smallest chunk size a manifest may declare.
MIN_CHUNK_BYTES: Final = 1024
#: Chunk size ``split_file`` uses unless told otherwise.
DEFAULT_CHUNK_BYTES: Final = MAX_CHUNK_BYTES
#: Largest file any manifest may describe (4 GiB); the configured limit is lower.
MAX_FILE_BYTES: Final = 1 << 32
#: Default configured file size limit (64 MiB) for :func:`split_file` and :class:`FileAssembler`.
DEFAULT_MAX_FILE_BYTES: Final = 64 << 20
_MAX_TIME_MS: Final = 2**63 - 1
_TYPE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")


def new_message_id(rng: Callable[[int], bytes] = os.urandom) -> bytes:
    """A fresh random message id."""
    message_id = rng(MESSAGE_ID_BYTES)
    check_bytes(message_id, "message id", MESSAGE_ID_BYTES, MESSAGE_ID_BYTES)
    return message_id


def _check_common(message_id: bytes, sent_at_ms: int) -> None:
    check_bytes(message_id, "message_id", MESSAGE_ID_BYTES, MESSAGE_ID_BYTES)
    check_int(sent_at_ms, "sent_at_ms", 0, _MAX_TIME_MS)


def _check_emoji(emoji: str) -> None:
    check_text(emoji, "emoji", 1, MAX_EMOJI_BYTES)
    if len(emoji) > MAX_EMOJI_CODEPOINTS or any(ch.isspace() for ch in emoji):
        raise ValueError(f"emoji must be at most {MAX_EMOJI_CODEPOINTS} code points, no spaces")


def _check_file_name(name: str) -> None:
    check_text(name, "file name", 1, MAX_FILE_NAME_BYTES)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError("file name must not contain a path")


class Content(ABC):  # a family marker (as h11's Event): it needs no abstract methods
    """Base of the content family. Every member has ``message_id`` and ``sent_at_ms``."""

    __slots__ = ()
    message_id: bytes
    sent_at_ms: int


@dataclass(frozen=True, slots=True)
class Text(Content):
    """A text message, optionally a reply to ``(reply_author, reply_to)``."""

    #: Random 16-byte id, unique per sender.
    message_id: bytes
    #: Sender's clock, milliseconds since the Unix epoch.
    sent_at_ms: int
    #: The text, up to :data:`MAX_BODY_BYTES` of UTF-8 (newlines and tabs allowed).
    body: str
    #: The id of the message this one answers, if any.
    reply_to: bytes | None = None
    #: The member id of that message's author; set exactly when ``reply_to`` is.
    reply_author: bytes | None = None

    def __post_init__(self) -> None:
        _check_common(self.message_id, self.sent_at_ms)
        check_text(self.body, "body", 0, MAX_BODY_BYTES, multiline=True)
        if (self.reply_to is None) != (self.reply_author is None):
            raise ValueError("reply_to and reply_author go together")
        if self.reply_to is not None and self.reply_author is not None:
            check_bytes(self.reply_to, "reply_to", MESSAGE_ID_BYTES, MESSAGE_ID_BYTES)
            check_bytes(self.reply_author, "reply_author", 1, MAX_AUTHOR_BYTES)


@dataclass(frozen=True, slots=True)
class Edit(Content):
    """A new body for an earlier text of the same sender (``target`` is one of its ids)."""

    message_id: bytes
    sent_at_ms: int
    #: The message being edited.
    target: bytes
    #: Its new text.
    body: str

    def __post_init__(self) -> None:
        _check_common(self.message_id, self.sent_at_ms)
        check_bytes(self.target, "target", MESSAGE_ID_BYTES, MESSAGE_ID_BYTES)
        check_text(self.body, "body", 0, MAX_BODY_BYTES, multiline=True)


@dataclass(frozen=True, slots=True)
class Delete(Content):
    """Deletion of an earlier message of the same sender."""

    message_id: bytes
    sent_at_ms: int
    #: The message being deleted.
    target: bytes

    def __post_init__(self) -> None:
        _check_common(self.message_id, self.sent_at_ms)
        check_bytes(self.target, "target", MESSAGE_ID_BYTES, MESSAGE_ID_BYTES)


@dataclass(frozen=True, slots=True)
class Reaction(Content):
    """An emoji reaction to the message ``(target_author, target)``, or its withdrawal."""

    message_id: bytes
    sent_at_ms: int
    #: The id of the message reacted to.
    target: bytes
    #: The member id of that message's author.
    target_author: bytes
    #: The emoji: 1 to 32 UTF-8 bytes, at most 16 code points, no spaces or controls.
    emoji: str
    #: True to withdraw an earlier reaction with this emoji.
    remove: bool = False

    def __post_init__(self) -> None:
        _check_common(self.message_id, self.sent_at_ms)
        check_bytes(self.target, "target", MESSAGE_ID_BYTES, MESSAGE_ID_BYTES)
        check_bytes(self.target_author, "target_author", 1, MAX_AUTHOR_BYTES)
        _check_emoji(self.emoji)
        if not isinstance(self.remove, bool):
            raise TypeError("remove must be a bool")


@dataclass(frozen=True, slots=True)
class FileManifest(Content):
    """Announces a file; its chunks follow as :class:`FileChunk` messages.

    The manifest's ``message_id`` is the file's id. The file is cut into
    ``chunk_count`` chunks of ``chunk_size`` bytes (the last one shorter), and
    ``sha256`` covers the whole file.
    """

    message_id: bytes
    sent_at_ms: int
    #: File name without any path (1 to 255 UTF-8 bytes).
    name: str
    #: File size in bytes.
    size: int
    #: SHA-256 of the file.
    sha256: bytes
    #: Size of every chunk but the last.
    chunk_size: int
    #: Media type, e.g. ``application/pdf``, if known.
    media_type: str | None = None

    def __post_init__(self) -> None:
        _check_common(self.message_id, self.sent_at_ms)
        _check_file_name(self.name)
        check_int(self.size, "size", 0, MAX_FILE_BYTES)
        check_bytes(self.sha256, "sha256", 32, 32)
        check_int(self.chunk_size, "chunk_size", MIN_CHUNK_BYTES, MAX_CHUNK_BYTES)
        if self.media_type is not None:
            check_text(self.media_type, "media_type", 1, MAX_MEDIA_TYPE_BYTES)

    @property
    def chunk_count(self) -> int:
        """Number of chunks (0 for an empty file)."""
        return math.ceil(self.size / self.chunk_size)


@dataclass(frozen=True, slots=True)
class FileChunk(Content):
    """One chunk of a file announced by a :class:`FileManifest`."""

    message_id: bytes
    sent_at_ms: int
    #: The manifest's message id.
    file_id: bytes
    #: Position of this chunk, from 0.
    index: int
    #: The chunk's bytes (1 to :data:`MAX_CHUNK_BYTES`).
    data: bytes

    def __post_init__(self) -> None:
        _check_common(self.message_id, self.sent_at_ms)
        check_bytes(self.file_id, "file_id", MESSAGE_ID_BYTES, MESSAGE_ID_BYTES)
        check_int(self.index, "index", 0, MAX_FILE_BYTES // MIN_CHUNK_BYTES)
        check_bytes(self.data, "data", 1, MAX_CHUNK_BYTES)

    def __repr__(self) -> str:
        return (
            f"FileChunk(message_id={self.message_id.hex()}, index={self.index}, "
            f"data=<{len(self.data)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class Profile(Content):
    """The sender's display name, announced to the room (docs/room-protocol.md §5).

    Sent once after joining and again whenever members are added, so newcomers learn
    every name from its owner; the latest one per sender wins.
    """

    message_id: bytes
    sent_at_ms: int
    #: The name to show for the sender (1 to 64 UTF-8 bytes, no control characters).
    display_name: str

    def __post_init__(self) -> None:
        _check_common(self.message_id, self.sent_at_ms)
        check_text(self.display_name, "display_name", 1, MAX_DISPLAY_NAME_BYTES)


@dataclass(frozen=True, slots=True)
class Unknown(Content):
    """Content of a type this version does not know, kept whole for a later version."""

    message_id: bytes
    sent_at_ms: int
    #: The ``t`` field.
    content_type: str
    #: The unpadded msgpack map, exactly as received.
    raw: bytes

    def __post_init__(self) -> None:
        _check_common(self.message_id, self.sent_at_ms)
        if not isinstance(self.content_type, str) or not _TYPE_NAME.fullmatch(self.content_type):
            raise ValueError("content_type must be 1 to 32 of [a-z0-9_.-]")
        if self.content_type in _DECODERS:
            raise ValueError("content_type names a known type")
        check_bytes(self.raw, "raw", 1, MAX_PADDED_BYTES - 4)


def _common(content: Content, type_name: str) -> dict[str, Any]:
    return {
        "v": CONTENT_VERSION,
        "t": type_name,
        "id": content.message_id,
        "ts": content.sent_at_ms,
    }


def encode_content(content: Content) -> bytes:
    """The padded plaintext for ``content``: what goes into an MLS application message.

    Raises:
        TypeError: ``content`` is not a content type.
        ValueError: an :class:`Unknown` whose ``raw`` does not decode to itself.
    """
    if isinstance(content, Unknown):
        try:
            same = decode_content(pad(content.raw)) == content
        except ContentDecodeError:
            same = False
        if not same:
            raise ValueError("Unknown.raw does not decode to this content")
        return pad(content.raw)
    if isinstance(content, Text):
        m = _common(content, "text") | {"body": content.body}
        if content.reply_to is not None:
            m["reply_to"] = content.reply_to
            m["reply_author"] = content.reply_author
    elif isinstance(content, Edit):
        m = _common(content, "edit") | {"target": content.target, "body": content.body}
    elif isinstance(content, Delete):
        m = _common(content, "delete") | {"target": content.target}
    elif isinstance(content, Reaction):
        m = _common(content, "reaction") | {
            "target": content.target,
            "target_author": content.target_author,
            "emoji": content.emoji,
        }
        if content.remove:
            m["remove"] = True
    elif isinstance(content, FileManifest):
        m = _common(content, "file") | {
            "name": content.name,
            "size": content.size,
            "sha256": content.sha256,
            "chunk_size": content.chunk_size,
        }
        if content.media_type is not None:
            m["media_type"] = content.media_type
    elif isinstance(content, Profile):
        m = _common(content, "profile") | {"name": content.display_name}
    elif isinstance(content, FileChunk):
        m = _common(content, "chunk") | {
            "file": content.file_id,
            "index": content.index,
            "data": content.data,
        }
    else:
        raise TypeError("content must be a backchannel.rooms.content type")
    return pad(packb(m))


def decode_content(padded: bytes) -> Content:
    """Decode the padded plaintext of an MLS application message.

    Raises:
        ContentDecodeError: bad padding, not msgpack, unsupported version, or a
            field of the wrong type or size. Nothing else, on any input.
    """
    try:
        data = unpad(padded)
    except PaddingError as exc:
        raise ContentDecodeError(str(exc)) from None
    f = unpack_map(data, ContentDecodeError, "content", MAX_PADDED_BYTES)
    if f.get_int("v", 0, 2**64 - 1) != CONTENT_VERSION:
        f.fail("unsupported version")
    type_name = f.get_str("t", 1, 32)
    message_id = f.get_bytes("id", MESSAGE_ID_BYTES, MESSAGE_ID_BYTES)
    sent_at_ms = f.get_int("ts", 0, _MAX_TIME_MS)
    decoder = _DECODERS.get(type_name)
    try:
        if decoder is None:
            if not _TYPE_NAME.fullmatch(type_name):
                f.fail("field 't' is not a valid type name")
            return Unknown(message_id, sent_at_ms, type_name, data)
        return decoder(f, message_id, sent_at_ms)
    except (TypeError, ValueError) as exc:
        f.fail(str(exc))


def _text(f: Fields, mid: bytes, ts: int) -> Content:
    reply_to = f.optional_bytes("reply_to", MESSAGE_ID_BYTES, MESSAGE_ID_BYTES)
    author = f.optional_bytes("reply_author", 1, MAX_AUTHOR_BYTES)
    body = f.get_str("body", 0, MAX_BODY_BYTES, text=True)
    return Text(mid, ts, body, reply_to, author)


def _edit(f: Fields, mid: bytes, ts: int) -> Content:
    target = f.get_bytes("target", MESSAGE_ID_BYTES, MESSAGE_ID_BYTES)
    return Edit(mid, ts, target, f.get_str("body", 0, MAX_BODY_BYTES, text=True))


def _delete(f: Fields, mid: bytes, ts: int) -> Content:
    return Delete(mid, ts, f.get_bytes("target", MESSAGE_ID_BYTES, MESSAGE_ID_BYTES))


def _reaction(f: Fields, mid: bytes, ts: int) -> Content:
    target = f.get_bytes("target", MESSAGE_ID_BYTES, MESSAGE_ID_BYTES)
    author = f.get_bytes("target_author", 1, MAX_AUTHOR_BYTES)
    remove = f.get_bool("remove") if f.has("remove") else False
    return Reaction(mid, ts, target, author, f.get_str("emoji", 1, MAX_EMOJI_BYTES), remove)


def _file(f: Fields, mid: bytes, ts: int) -> Content:
    media_type = f.get_str("media_type", 1, MAX_MEDIA_TYPE_BYTES) if f.has("media_type") else None
    return FileManifest(
        mid,
        ts,
        f.get_str("name", 1, MAX_FILE_NAME_BYTES),
        f.get_int("size", 0, MAX_FILE_BYTES),
        f.get_bytes("sha256", 32, 32),
        f.get_int("chunk_size", MIN_CHUNK_BYTES, MAX_CHUNK_BYTES),
        media_type,
    )


def _chunk(f: Fields, mid: bytes, ts: int) -> Content:
    return FileChunk(
        mid,
        ts,
        f.get_bytes("file", MESSAGE_ID_BYTES, MESSAGE_ID_BYTES),
        f.get_int("index", 0, MAX_FILE_BYTES // MIN_CHUNK_BYTES),
        f.get_bytes("data", 1, MAX_CHUNK_BYTES),
    )


def _profile(f: Fields, mid: bytes, ts: int) -> Content:
    return Profile(mid, ts, f.get_str("name", 1, MAX_DISPLAY_NAME_BYTES))


_DECODERS: Final[dict[str, Callable[[Fields, bytes, int], Content]]] = {
    "profile": _profile,
    "text": _text,
    "edit": _edit,
    "delete": _delete,
    "reaction": _reaction,
    "file": _file,
    "chunk": _chunk,
}


# --- Files -------------------------------------------------------------------------------


def split_file(
    data: bytes,
    *,
    name: str,
    sent_at_ms: int,
    media_type: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    rng: Callable[[int], bytes] = os.urandom,
) -> tuple[FileManifest, tuple[FileChunk, ...]]:
    """Cut ``data`` into a manifest and its chunks, ready for :func:`encode_content`.

    Raises:
        ValueError: the file is larger than ``max_file_bytes`` or an argument is out of range.
    """
    check_bytes(data, "data", 0, min(max_file_bytes, MAX_FILE_BYTES))
    manifest = FileManifest(
        new_message_id(rng),
        sent_at_ms,
        name,
        len(data),
        hashlib.sha256(data).digest(),
        chunk_size,
        media_type,
    )
    chunks = tuple(
        FileChunk(
            new_message_id(rng),
            sent_at_ms,
            manifest.message_id,
            i,
            data[i * chunk_size : (i + 1) * chunk_size],
        )
        for i in range(manifest.chunk_count)
    )
    return manifest, chunks


class FileAssembler:
    """Collects the chunks of one file and checks them against its manifest (sans-IO).

    The caller routes chunks by ``(sender, file id)``: only chunks from the
    manifest's sender belong here. Chunks may come in any order; an identical
    duplicate is ignored, a conflicting one is an error.
    """

    __slots__ = ("_chunks", "_received", "manifest")

    def __init__(
        self, manifest: FileManifest, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    ) -> None:
        """Start assembling ``manifest``'s file.

        Raises:
            FileIntegrityError: the file is larger than ``max_file_bytes``.
        """
        if manifest.size > max_file_bytes:
            raise FileIntegrityError("The file is larger than this client accepts.")
        self.manifest = manifest
        self._chunks: dict[int, bytes] = {}
        self._received = 0

    def _expected_length(self, index: int) -> int:
        m = self.manifest
        if index < m.chunk_count - 1:
            return m.chunk_size
        return m.size - m.chunk_size * (m.chunk_count - 1)

    def add(self, chunk: FileChunk) -> bool:
        """Take one chunk; True once every chunk is in.

        Raises:
            FileIntegrityError: the chunk belongs to another file, its index is out
                of range, its length is wrong, or it conflicts with an earlier chunk.
        """
        m = self.manifest
        if not hmac.compare_digest(chunk.file_id, m.message_id):
            raise FileIntegrityError("The chunk belongs to another file.")
        if chunk.index >= m.chunk_count:
            raise FileIntegrityError("The chunk's index is beyond the end of the file.")
        if len(chunk.data) != self._expected_length(chunk.index):
            raise FileIntegrityError("The chunk has the wrong length.")
        earlier = self._chunks.get(chunk.index)
        if earlier is not None:
            if earlier != chunk.data:
                raise FileIntegrityError("Two different chunks claim the same place in the file.")
        else:
            self._chunks[chunk.index] = chunk.data
            self._received += len(chunk.data)
        return self.complete

    @property
    def complete(self) -> bool:
        """True once every chunk has arrived."""
        return len(self._chunks) == self.manifest.chunk_count

    @property
    def missing(self) -> tuple[int, ...]:
        """Indexes of the chunks not yet received."""
        return tuple(i for i in range(self.manifest.chunk_count) if i not in self._chunks)

    @property
    def received_bytes(self) -> int:
        """Bytes received so far (for progress)."""
        return self._received

    def finish(self) -> bytes:
        """The whole file, after checking its size and SHA-256.

        Raises:
            FileIntegrityError: chunks are missing or the file's hash does not match.
        """
        if not self.complete:
            raise FileIntegrityError("The file is incomplete.")
        data = b"".join(self._chunks[i] for i in range(self.manifest.chunk_count))
        if len(data) != self.manifest.size or not hmac.compare_digest(
            hashlib.sha256(data).digest(), self.manifest.sha256
        ):
            raise FileIntegrityError("The file does not match its manifest's SHA-256.")
        return data
