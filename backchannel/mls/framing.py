"""Message framing structs: FramedContent, Public/PrivateMessage, sender data, MLSMessage (RFC 9420 §6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Self, TypeAlias

from .codec import Reader, Struct, Writer
from .errors import DecodeError, UsageError
from .key_packages import KeyPackage
from .messages import Commit, GroupContext, GroupInfo, Proposal, Welcome

__all__ = [
    "AuthenticatedContent",
    "AuthenticatedContentTBM",
    "ConfirmedTranscriptHashInput",
    "Content",
    "ContentType",
    "FramedContent",
    "FramedContentAuthData",
    "FramedContentTBS",
    "InterimTranscriptHashInput",
    "MLSMessage",
    "MLSMessageBody",
    "PrivateContentAAD",
    "PrivateMessage",
    "PrivateMessageContent",
    "ProtocolVersion",
    "PublicMessage",
    "Sender",
    "SenderData",
    "SenderDataAAD",
    "SenderType",
    "WireFormat",
]


class ProtocolVersion(IntEnum):
    """``ProtocolVersion`` (§6): only mls10 exists."""

    MLS10 = 1


class ContentType(IntEnum):
    """``ContentType`` (§6): what a FramedContent carries."""

    APPLICATION = 1
    PROPOSAL = 2
    COMMIT = 3


class SenderType(IntEnum):
    """``SenderType`` (§6): who sent a message."""

    #: A member, by leaf index.
    MEMBER = 1
    #: An external sender from the ``external_senders`` extension, by index.
    EXTERNAL = 2
    #: A non-member proposing to add itself (§12.1.8).
    NEW_MEMBER_PROPOSAL = 3
    #: A non-member joining by external commit (§12.4.3.2).
    NEW_MEMBER_COMMIT = 4


class WireFormat(IntEnum):
    """``WireFormat`` (§6, §17.2): the kind of an MLSMessage."""

    PUBLIC_MESSAGE = 1
    PRIVATE_MESSAGE = 2
    WELCOME = 3
    GROUP_INFO = 4
    KEY_PACKAGE = 5


#: The body of FramedContent: application data, a Proposal or a Commit (§6).
Content: TypeAlias = bytes | Proposal | Commit


def _content_type(content: Content) -> ContentType:
    if isinstance(content, bytes):
        return ContentType.APPLICATION
    if isinstance(content, Commit):
        return ContentType.COMMIT
    return ContentType.PROPOSAL


def _encode_content(w: Writer, content: Content) -> None:
    if isinstance(content, bytes):
        w.opaque(content)
    else:
        content.encode(w)


def _check_auth(content: Content, auth: FramedContentAuthData) -> None:
    auth.check_matches(_content_type(content))


def _decode_content(r: Reader, content_type: ContentType) -> Content:
    # ``==`` rather than ``is``: callers may pass a plain int for the content type.
    if content_type == ContentType.APPLICATION:
        return r.opaque()
    if content_type == ContentType.PROPOSAL:
        return Proposal.decode(r)
    if content_type == ContentType.COMMIT:
        return Commit.decode(r)
    raise UsageError("content_type must be a ContentType")


@dataclass(frozen=True, slots=True)
class Sender(Struct):
    """``Sender`` (§6): a sender type and, for members and external senders, an index.

    Use :meth:`member`, :meth:`external`, :meth:`new_member_proposal` and
    :meth:`new_member_commit`.
    """

    #: Which select branch follows.
    sender_type: SenderType
    #: ``leaf_index`` for members, ``sender_index`` for external senders, else None.
    index: int | None = None

    def __post_init__(self) -> None:
        indexed = self.sender_type in (SenderType.MEMBER, SenderType.EXTERNAL)
        if indexed != (self.index is not None):
            raise UsageError("sender index is set exactly for member and external senders")

    @classmethod
    def member(cls, leaf_index: int) -> Sender:
        """A group member at ``leaf_index``."""
        return cls(SenderType.MEMBER, leaf_index)

    @classmethod
    def external(cls, sender_index: int) -> Sender:
        """Entry ``sender_index`` of the ``external_senders`` extension."""
        return cls(SenderType.EXTERNAL, sender_index)

    @classmethod
    def new_member_proposal(cls) -> Sender:
        """A non-member proposing its own Add."""
        return cls(SenderType.NEW_MEMBER_PROPOSAL)

    @classmethod
    def new_member_commit(cls) -> Sender:
        """A non-member sending an external commit."""
        return cls(SenderType.NEW_MEMBER_COMMIT)

    def encode(self, w: Writer) -> None:
        w.uint8(self.sender_type)
        if self.index is not None:
            w.uint32(self.index)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        sender_type = r.enum8(SenderType)
        if sender_type in (SenderType.MEMBER, SenderType.EXTERNAL):
            return cls(sender_type, r.uint32())
        return cls(sender_type)


@dataclass(frozen=True, slots=True)
class FramedContent(Struct):
    """``FramedContent`` (§6): content bound to a group, epoch and sender.

    The repr shows the length of application data, never the data.
    """

    #: ``opaque group_id<V>``.
    group_id: bytes
    #: ``uint64 epoch``.
    epoch: int
    #: Who sent it.
    sender: Sender
    #: ``opaque authenticated_data<V>``: sent in the clear, authenticated.
    authenticated_data: bytes
    #: Application data (bytes), a Proposal or a Commit.
    content: Content

    def __repr__(self) -> str:
        # Application data is what the group keeps confidential: never in a repr.
        shown = f"<{len(self.content)} bytes>" if isinstance(self.content, bytes) else self.content
        return (
            f"FramedContent(group_id={self.group_id!r}, epoch={self.epoch}, "
            f"sender={self.sender!r}, content_type={self.content_type.name}, content={shown!r})"
        )

    @property
    def content_type(self) -> ContentType:
        """The ``ContentType`` implied by :attr:`content`."""
        return _content_type(self.content)

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).uint64(self.epoch).struct(self.sender)
        w.opaque(self.authenticated_data).uint8(self.content_type)
        _encode_content(w, self.content)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        group_id = r.opaque()
        epoch = r.uint64()
        sender = Sender.decode(r)
        authenticated_data = r.opaque()
        content = _decode_content(r, r.enum8(ContentType))
        return cls(group_id, epoch, sender, authenticated_data, content)


@dataclass(frozen=True, slots=True)
class FramedContentAuthData:
    """``FramedContentAuthData`` (§6.1): the signature, and for commits the confirmation tag.

    Its layout depends on the enclosing content type, so decoding takes it as an
    argument; this is why it is not a :class:`~backchannel.mls.codec.Struct`.
    """

    #: ``SignWithLabel(., "FramedContentTBS", FramedContentTBS)``.
    signature: bytes
    #: ``MAC confirmation_tag``: present exactly for commits.
    confirmation_tag: bytes | None = None

    def encode(self, w: Writer) -> None:
        w.opaque(self.signature)
        if self.confirmation_tag is not None:
            w.opaque(self.confirmation_tag)

    def to_bytes(self) -> bytes:
        """The TLS encoding."""
        w = Writer()
        self.encode(w)
        return w.to_bytes()

    @classmethod
    def decode(cls, r: Reader, content_type: ContentType) -> Self:
        """Read the auth data of content of ``content_type``."""
        signature = r.opaque()
        tag = r.opaque() if content_type == ContentType.COMMIT else None
        return cls(signature, tag)

    @classmethod
    def from_bytes(cls, data: bytes, content_type: ContentType) -> Self:
        """Decode exactly one value for content of ``content_type``."""
        r = Reader(data)
        value = cls.decode(r, content_type)
        r.finish()
        return value

    def check_matches(self, content_type: ContentType) -> None:
        """Raise :class:`UsageError` unless the tag is present exactly for commits."""
        if (self.confirmation_tag is not None) != (content_type == ContentType.COMMIT):
            raise UsageError("confirmation_tag is present exactly for commit content")


@dataclass(frozen=True, slots=True)
class FramedContentTBS(Struct):
    """``FramedContentTBS`` (§6.1): what a sender signs.

    ``context`` is the GroupContext, present exactly for member and new-member-commit
    senders.
    """

    #: ``WireFormat wire_format`` the content travels in.
    wire_format: WireFormat
    #: The signed content.
    content: FramedContent
    #: The current GroupContext, or None for external and new-member-proposal senders.
    context: GroupContext | None = None
    #: ``ProtocolVersion version``.
    version: int = ProtocolVersion.MLS10

    def __post_init__(self) -> None:
        needs = self.content.sender.sender_type in (
            SenderType.MEMBER,
            SenderType.NEW_MEMBER_COMMIT,
        )
        if needs != (self.context is not None):
            raise UsageError("context is present exactly for member and new_member_commit senders")

    def encode(self, w: Writer) -> None:
        w.uint16(self.version).uint16(self.wire_format).struct(self.content)
        if self.context is not None:
            w.struct(self.context)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        version = r.enum16(ProtocolVersion)
        wire_format = r.enum16(WireFormat)
        content = FramedContent.decode(r)
        context = None
        if content.sender.sender_type in (SenderType.MEMBER, SenderType.NEW_MEMBER_COMMIT):
            context = GroupContext.decode(r)
        return cls(wire_format, content, context, version)


@dataclass(frozen=True, slots=True)
class AuthenticatedContent(Struct):
    """``AuthenticatedContent`` (§6.1): content with its auth data and wire format."""

    #: ``WireFormat wire_format``.
    wire_format: WireFormat
    #: The content.
    content: FramedContent
    #: Its signature (and confirmation tag for commits).
    auth: FramedContentAuthData

    def __post_init__(self) -> None:
        _check_auth(self.content.content, self.auth)

    def encode(self, w: Writer) -> None:
        w.uint16(self.wire_format).struct(self.content).struct(self.auth)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        wire_format = r.enum16(WireFormat)
        content = FramedContent.decode(r)
        return cls(wire_format, content, FramedContentAuthData.decode(r, content.content_type))


@dataclass(frozen=True, slots=True)
class AuthenticatedContentTBM(Struct):
    """``AuthenticatedContentTBM`` (§6.2): the input of a PublicMessage's membership tag."""

    #: The signed content.
    content_tbs: FramedContentTBS
    #: Its auth data.
    auth: FramedContentAuthData

    def __post_init__(self) -> None:
        _check_auth(self.content_tbs.content.content, self.auth)

    def encode(self, w: Writer) -> None:
        w.struct(self.content_tbs).struct(self.auth)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        tbs = FramedContentTBS.decode(r)
        return cls(tbs, FramedContentAuthData.decode(r, tbs.content.content_type))


@dataclass(frozen=True, slots=True)
class ConfirmedTranscriptHashInput(Struct):
    """``ConfirmedTranscriptHashInput`` (§8.2): a commit's contribution to the transcript."""

    #: ``WireFormat wire_format``.
    wire_format: WireFormat
    #: The commit's FramedContent.
    content: FramedContent
    #: ``opaque signature<V>``.
    signature: bytes

    def encode(self, w: Writer) -> None:
        w.uint16(self.wire_format).struct(self.content).opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.enum16(WireFormat), FramedContent.decode(r), r.opaque())


@dataclass(frozen=True, slots=True)
class InterimTranscriptHashInput(Struct):
    """``InterimTranscriptHashInput`` (§8.2): ``MAC confirmation_tag``."""

    #: The commit's confirmation tag.
    confirmation_tag: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.confirmation_tag)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class PublicMessage(Struct):
    """``PublicMessage`` (§6.2): signed, unencrypted content.

    ``membership_tag`` is present exactly when the sender is a member.
    """

    #: The content.
    content: FramedContent
    #: Its auth data.
    auth: FramedContentAuthData
    #: ``MAC membership_tag`` for member senders, else None.
    membership_tag: bytes | None = None

    def __post_init__(self) -> None:
        _check_auth(self.content.content, self.auth)
        is_member = self.content.sender.sender_type is SenderType.MEMBER
        if is_member != (self.membership_tag is not None):
            raise UsageError("membership_tag is present exactly for member senders")

    def encode(self, w: Writer) -> None:
        w.struct(self.content).struct(self.auth)
        if self.membership_tag is not None:
            w.opaque(self.membership_tag)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        content = FramedContent.decode(r)
        auth = FramedContentAuthData.decode(r, content.content_type)
        tag = r.opaque() if content.sender.sender_type is SenderType.MEMBER else None
        return cls(content, auth, tag)


@dataclass(frozen=True, slots=True)
class PrivateMessage(Struct):
    """``PrivateMessage`` (§6.3): encrypted content and encrypted sender data."""

    #: ``opaque group_id<V>``.
    group_id: bytes
    #: ``uint64 epoch``.
    epoch: int
    #: ``ContentType content_type`` of the encrypted content.
    content_type: ContentType
    #: ``opaque authenticated_data<V>``.
    authenticated_data: bytes
    #: ``opaque encrypted_sender_data<V>``: sealed :class:`SenderData`.
    encrypted_sender_data: bytes
    #: ``opaque ciphertext<V>``: sealed :class:`PrivateMessageContent`.
    ciphertext: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).uint64(self.epoch).uint8(self.content_type)
        w.opaque(self.authenticated_data).opaque(self.encrypted_sender_data)
        w.opaque(self.ciphertext)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), r.uint64(), r.enum8(ContentType), r.opaque(), r.opaque(), r.opaque())


@dataclass(frozen=True, slots=True)
class PrivateMessageContent:
    """``PrivateMessageContent`` (§6.3.1): the plaintext inside a PrivateMessage.

    Decoding needs the PrivateMessage's content type. The padding is all zero
    bytes (§6.3.1) and is kept only as its length; a non-zero padding byte makes
    the message malformed.
    """

    #: Application data (bytes), a Proposal or a Commit.
    content: Content = field(repr=False)
    #: Signature (and confirmation tag for commits).
    auth: FramedContentAuthData
    #: Number of zero padding bytes after ``auth``.
    padding: int = 0

    def __post_init__(self) -> None:
        _check_auth(self.content, self.auth)
        if self.padding < 0:
            raise UsageError("padding length must not be negative")

    @property
    def content_type(self) -> ContentType:
        """The ``ContentType`` implied by :attr:`content`."""
        return _content_type(self.content)

    def encode(self, w: Writer) -> None:
        _encode_content(w, self.content)
        w.struct(self.auth).raw(bytes(self.padding))

    def to_bytes(self) -> bytes:
        """The TLS encoding, padding included."""
        w = Writer()
        self.encode(w)
        return w.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, content_type: ContentType) -> Self:
        """Decode a whole plaintext of ``content_type``; everything after ``auth`` is padding.

        Raises:
            DecodeError: malformed content or auth, or a non-zero padding byte.
        """
        r = Reader(data)
        content = _decode_content(r, content_type)
        auth = FramedContentAuthData.decode(r, content_type)
        padding = r.raw(r.remaining())
        if padding.count(0) != len(padding):
            raise DecodeError("padding is not all zero")
        return cls(content, auth, len(padding))


@dataclass(frozen=True, slots=True)
class SenderData(Struct):
    """``SenderData`` (§6.3.2): who sent a PrivateMessage and with which key generation."""

    #: ``uint32 leaf_index`` of the sender.
    leaf_index: int
    #: ``uint32 generation`` of the sender's ratchet.
    generation: int
    #: ``opaque reuse_guard[4]``: XORed into the nonce.
    reuse_guard: bytes

    def __post_init__(self) -> None:
        if len(self.reuse_guard) != 4:
            raise UsageError("reuse_guard must be 4 bytes")

    def encode(self, w: Writer) -> None:
        w.uint32(self.leaf_index).uint32(self.generation).raw(self.reuse_guard)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.uint32(), r.uint32(), r.raw(4))


@dataclass(frozen=True, slots=True)
class SenderDataAAD(Struct):
    """``SenderDataAAD`` (§6.3.2): associated data for sealing sender data."""

    #: ``opaque group_id<V>``.
    group_id: bytes
    #: ``uint64 epoch``.
    epoch: int
    #: ``ContentType content_type``.
    content_type: ContentType

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).uint64(self.epoch).uint8(self.content_type)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), r.uint64(), r.enum8(ContentType))


@dataclass(frozen=True, slots=True)
class PrivateContentAAD(Struct):
    """``PrivateContentAAD`` (§6.3.1): associated data for sealing the content."""

    #: ``opaque group_id<V>``.
    group_id: bytes
    #: ``uint64 epoch``.
    epoch: int
    #: ``ContentType content_type``.
    content_type: ContentType
    #: ``opaque authenticated_data<V>``.
    authenticated_data: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).uint64(self.epoch).uint8(self.content_type)
        w.opaque(self.authenticated_data)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.opaque(), r.uint64(), r.enum8(ContentType), r.opaque())


#: What an MLSMessage can carry (§6).
MLSMessageBody: TypeAlias = PublicMessage | PrivateMessage | Welcome | GroupInfo | KeyPackage

_WIRE_FORMATS: dict[type[Struct], WireFormat] = {
    PublicMessage: WireFormat.PUBLIC_MESSAGE,
    PrivateMessage: WireFormat.PRIVATE_MESSAGE,
    Welcome: WireFormat.WELCOME,
    GroupInfo: WireFormat.GROUP_INFO,
    KeyPackage: WireFormat.KEY_PACKAGE,
}

_BODY_CLASSES: dict[WireFormat, type[MLSMessageBody]] = {
    WireFormat.PUBLIC_MESSAGE: PublicMessage,
    WireFormat.PRIVATE_MESSAGE: PrivateMessage,
    WireFormat.WELCOME: Welcome,
    WireFormat.GROUP_INFO: GroupInfo,
    WireFormat.KEY_PACKAGE: KeyPackage,
}


@dataclass(frozen=True, slots=True)
class MLSMessage(Struct):
    """``MLSMessage`` (§6): the envelope of everything MLS sends.

    Decoding rejects versions other than mls10 and unknown wire formats, since the
    layout of their bodies is not known.
    """

    #: The message; its class decides the wire format.
    body: MLSMessageBody
    #: ``ProtocolVersion version``.
    version: ProtocolVersion = ProtocolVersion.MLS10

    def __post_init__(self) -> None:
        if type(self.body) not in _WIRE_FORMATS:
            raise UsageError(
                "MLSMessage body must be a PublicMessage, PrivateMessage, Welcome, "
                "GroupInfo or KeyPackage"
            )

    @property
    def wire_format(self) -> WireFormat:
        """The ``WireFormat`` implied by :attr:`body`."""
        return _WIRE_FORMATS[type(self.body)]

    def encode(self, w: Writer) -> None:
        w.uint16(self.version).uint16(self.wire_format).struct(self.body)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        version = r.enum16(ProtocolVersion)
        body_class = _BODY_CLASSES[r.enum16(WireFormat)]
        return cls(body_class.decode(r), version)
