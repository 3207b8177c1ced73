"""TLS presentation-language codec (RFC 9420 §2.1) and struct-level decoding rules."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import pytest

from backchannel.mls.codec import MAX_NESTING, Reader, Writer, decode_varint, encode_varint
from backchannel.mls.credentials import (
    BasicCredential,
    Certificate,
    Credential,
    UnknownCredential,
    X509Credential,
)
from backchannel.mls.errors import DecodeError, UsageError, ValidationError
from backchannel.mls.extensions import (
    GREASE_VALUES,
    ApplicationId,
    Extension,
    ExtensionType,
    ExternalPub,
    ExternalSender,
    ExternalSenders,
    RequiredCapabilities,
    check_unique_types,
    find_extension,
    is_grease,
)
from backchannel.mls.framing import (
    ContentType,
    FramedContent,
    FramedContentAuthData,
    FramedContentTBS,
    MLSMessage,
    PrivateMessageContent,
    PublicMessage,
    Sender,
    SenderData,
    SenderType,
    WireFormat,
)
from backchannel.mls.messages import (
    Commit,
    GroupContext,
    GroupSecrets,
    PathSecret,
    PreSharedKeyID,
    Proposal,
    ProposalRef,
    PSKType,
    Remove,
    ResumptionPSKUsage,
    UnknownProposal,
)
from backchannel.mls.tree_structs import (
    Capabilities,
    HPKEPublicKeyBytes,
    LeafNode,
    LeafNodeSource,
    LeafNodeTBS,
    Lifetime,
    ParentNode,
    RatchetTree,
    SignaturePublicKeyBytes,
)

# --- varints (§2.1.2) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (37, "25"),
        (63, "3f"),
        (64, "4040"),
        (15293, "7bbd"),
        (16383, "7fff"),
        (16384, "80004000"),
        (494878333, "9d7f3e7d"),
        ((1 << 30) - 1, "bfffffff"),
    ],
)
def test_varint_examples(value: int, encoded: str) -> None:
    assert encode_varint(value).hex() == encoded
    assert decode_varint(bytes.fromhex(encoded)) == (value, len(encoded) // 2)
    assert Reader(bytes.fromhex(encoded)).varint() == value


@pytest.mark.parametrize(
    "encoded", ["4000", "403f", "80000000", "80003fff", "c0", "ff", "c000000000000000"]
)
def test_varint_non_minimal_or_reserved_prefix_rejected(encoded: str) -> None:
    with pytest.raises(DecodeError):
        decode_varint(bytes.fromhex(encoded))
    with pytest.raises(DecodeError):
        Reader(bytes.fromhex(encoded)).varint()


@pytest.mark.parametrize("encoded", ["", "40", "80", "8000", "800000"])
def test_varint_truncated(encoded: str) -> None:
    with pytest.raises(DecodeError):
        decode_varint(bytes.fromhex(encoded))
    with pytest.raises(DecodeError):
        Reader(bytes.fromhex(encoded)).varint()


def test_varint_encode_range() -> None:
    with pytest.raises(ValueError, match="negative"):
        encode_varint(-1)
    with pytest.raises(ValueError, match="2\\^30"):
        encode_varint(1 << 30)


# --- Writer / Reader ----------------------------------------------------------------


def test_fixed_ints_and_raw() -> None:
    data = Writer().uint8(1).uint16(0x0203).uint32(0x04050607).uint64(8).raw(b"xy").to_bytes()
    assert data.hex() == "01" + "0203" + "04050607" + "0000000000000008" + "7879"
    r = Reader(data)
    assert (r.uint8(), r.uint16(), r.uint32(), r.uint64(), r.raw(2)) == (
        1,
        0x0203,
        0x04050607,
        8,
        b"xy",
    )
    assert r.remaining() == 0
    r.finish()


@pytest.mark.parametrize(
    ("method", "value"),
    [
        (Writer.uint8, 256),
        (Writer.uint8, -1),
        (Writer.uint16, 1 << 16),
        (Writer.uint32, 1 << 32),
        (Writer.uint64, 1 << 64),
        (Writer.uint64, -1),
    ],
)
def test_writer_rejects_out_of_range_ints(method: Any, value: int) -> None:
    with pytest.raises(UsageError):
        method(Writer(), value)
    with pytest.raises(UsageError):
        Remove(-1).to_bytes()


def test_reader_rejects_negative_size() -> None:
    with pytest.raises(UsageError):
        Reader(b"abc").raw(-1)


def test_truncated_fixed_ints() -> None:
    for read in (Reader.uint8, Reader.uint16, Reader.uint32, Reader.uint64):
        with pytest.raises(DecodeError):
            read(Reader(b""))
    with pytest.raises(DecodeError):
        Reader(b"\x00").uint16()
    with pytest.raises(DecodeError):
        Reader(b"abc").raw(4)


def test_opaque_and_trailing_bytes() -> None:
    data = Writer().opaque(b"hello").to_bytes()
    assert data == b"\x05hello"
    r = Reader(data + b"!")
    assert r.opaque() == b"hello"
    with pytest.raises(DecodeError, match="trailing"):
        r.finish()


def test_oversize_length_fails_fast() -> None:
    # A header claiming 2^30 - 1 bytes over a tiny input must fail before slicing.
    with pytest.raises(DecodeError, match="exceeds"):
        Reader(bytes.fromhex("bfffffff") + b"abc").opaque()
    with pytest.raises(DecodeError, match="exceeds"):
        Reader(bytes.fromhex("bfffffff")).vector(Reader.uint8)


def test_boolean() -> None:
    assert Writer().boolean(True).boolean(False).to_bytes() == b"\x01\x00"
    assert Reader(b"\x01").boolean() is True
    with pytest.raises(DecodeError):
        Reader(b"\x02").boolean()


def test_vector_prefix_counts_bytes_not_items() -> None:
    data = Writer().vector([1, 2, 3], Writer.uint16).to_bytes()
    assert data.hex() == "06000100020003"
    assert Reader(data).vector(Reader.uint16) == (1, 2, 3)
    assert Writer().vector([], Writer.uint16).to_bytes() == b"\x00"


def test_vector_element_may_not_overrun_the_vector() -> None:
    # Declared 3 bytes of uint16 items: the second item would straddle the end.
    data = bytes.fromhex("03000100") + b"\x02"
    with pytest.raises(DecodeError):
        Reader(data).vector(Reader.uint16)
    # An opaque inside a vector is bounded by the vector, not by the buffer.
    with pytest.raises(DecodeError):
        Reader(bytes.fromhex("0203") + b"abc").vector(Reader.opaque)


def test_vector_restores_bounds_after_reading() -> None:
    r = Reader(bytes.fromhex("020102") + b"\x07")
    assert r.vector(Reader.uint8) == (1, 2)
    assert r.remaining() == 1
    assert r.uint8() == 7
    r.finish()


def test_vector_element_must_consume_input() -> None:
    with pytest.raises(DecodeError, match="no input"):
        Reader(b"\x01\x00").vector(lambda r: None)


def test_nesting_is_capped() -> None:
    def nested(r: Reader) -> object:
        return r.vector(nested)

    depth = MAX_NESTING + 1
    # Build `depth` vectors, each containing the next.
    data = b""
    for _ in range(depth):
        data = Writer().opaque(data).to_bytes()
    with pytest.raises(DecodeError, match="nested"):
        Reader(data).vector(nested)


def test_optional() -> None:
    assert Writer().optional(None, Writer.uint8).to_bytes() == b"\x00"
    assert Writer().optional(5, Writer.uint8).to_bytes() == b"\x01\x05"
    assert Reader(b"\x00").optional(Reader.uint8) is None
    assert Reader(b"\x01\x05").optional(Reader.uint8) == 5
    for flag in (2, 0x80, 0xFF):
        with pytest.raises(DecodeError, match="presence"):
            Reader(bytes([flag, 5])).optional(Reader.uint8)


class _Color(IntEnum):
    RED = 1
    BLUE = 2


def test_enums_reject_unknown_and_reserved() -> None:
    assert Reader(b"\x02").enum8(_Color) is _Color.BLUE
    assert Reader(b"\x00\x01").enum16(_Color) is _Color.RED
    for raw in (b"\x00", b"\x03", b"\xff"):
        with pytest.raises(DecodeError, match="_Color"):
            Reader(raw).enum8(_Color)
    with pytest.raises(DecodeError):
        Reader(b"\x01\x01").enum16(_Color)


# --- credentials (§5.3) -------------------------------------------------------------


def test_credentials_roundtrip_and_unknown_types_kept() -> None:
    basic = BasicCredential(b"alice")
    assert basic.to_bytes().hex() == "0001" + "05" + b"alice".hex()
    x509 = X509Credential((Certificate(b"leaf"), Certificate(b"ca")))
    grease = UnknownCredential(0x1A1A, b"whatever")
    for cred in (basic, x509, grease):
        assert Credential.from_bytes(cred.to_bytes()) == cred
        assert type(cred).from_bytes(cred.to_bytes()) == cred
    assert Credential.from_bytes(bytes.fromhex("1a1a00")) == UnknownCredential(0x1A1A, b"")
    # Asking a variant class for another variant is a decode error, not a wrong type.
    with pytest.raises(DecodeError):
        BasicCredential.from_bytes(x509.to_bytes())
    with pytest.raises(UsageError):
        UnknownCredential(1, b"")


# --- extensions (§13) ---------------------------------------------------------------


def test_extensions_and_grease() -> None:
    assert len(GREASE_VALUES) == 15
    assert is_grease(0xEAEA)
    assert not is_grease(0xFAFA)
    grease = Extension(0x3A3A, b"\x01\x02")
    assert Extension.from_bytes(grease.to_bytes()) == grease
    app_id = ApplicationId(b"device-1").to_extension()
    assert app_id.extension_type == ExtensionType.APPLICATION_ID
    assert ApplicationId.from_extension(app_id) == ApplicationId(b"device-1")
    with pytest.raises(DecodeError):
        ExternalPub.from_extension(app_id)
    exts = (grease, app_id)
    assert find_extension(exts, ExtensionType.APPLICATION_ID) == app_id
    assert find_extension(exts, ExtensionType.RATCHET_TREE) is None
    check_unique_types(exts)
    with pytest.raises(ValidationError):
        check_unique_types((*exts, grease))


def test_extension_payloads_roundtrip() -> None:
    payloads = [
        RequiredCapabilities((3, 0x0A0A), (7,), (1, 2)),
        ExternalPub(b"k" * 32),
        ExternalSenders((ExternalSender(b"s" * 32, BasicCredential(b"ds")),)),
        RatchetTree((_leaf(), None, _leaf())),
    ]
    for payload in payloads:
        ext = payload.to_extension()
        assert type(payload).from_extension(ext) == payload


# --- tree structs (§7) --------------------------------------------------------------


def _leaf(source: LeafNodeSource = LeafNodeSource.KEY_PACKAGE) -> LeafNode:
    return LeafNode(
        HPKEPublicKeyBytes(b"e" * 32),
        SignaturePublicKeyBytes(b"s" * 32),
        BasicCredential(b"bob"),
        Capabilities((1,), (1, 0x2A2A), (0x2A2A,), (), (1,)),
        source,
        Lifetime(0, 2**64 - 1) if source is LeafNodeSource.KEY_PACKAGE else None,
        b"ph" if source is LeafNodeSource.COMMIT else None,
        (Extension(0x2A2A, b""),),
        b"sig",
    )


@pytest.mark.parametrize("source", list(LeafNodeSource))
def test_leaf_node_sources_and_tbs(source: LeafNodeSource) -> None:
    leaf = _leaf(source)
    assert LeafNode.from_bytes(leaf.to_bytes()) == leaf
    if source is LeafNodeSource.KEY_PACKAGE:
        tbs = leaf.tbs_bytes()
        assert leaf.to_bytes() == tbs + b"\x03sig"
        # The group context is ignored for key-package leaves.
        assert leaf.tbs_bytes(b"g", 0) == tbs
        with pytest.raises(UsageError):
            LeafNodeTBS(leaf, b"g", 0)
    else:
        tbs = leaf.tbs_bytes(b"g", 5)
        assert tbs.endswith(b"\x01g" + (5).to_bytes(4, "big"))
        with pytest.raises(UsageError):
            leaf.tbs_bytes()


def test_leaf_node_rejects_bad_source_and_inconsistent_fields() -> None:
    data = bytearray(_leaf(LeafNodeSource.UPDATE).to_bytes())
    index = data.index(bytes([LeafNodeSource.UPDATE]) + b"\x03\x2a\x2a\x00")
    for bad in (0, 4, 255):
        data[index] = bad
        with pytest.raises(DecodeError):
            LeafNode.from_bytes(bytes(data))
    with pytest.raises(UsageError):
        LeafNode(
            HPKEPublicKeyBytes(b""),
            SignaturePublicKeyBytes(b""),
            BasicCredential(b""),
            Capabilities((), (), (), (), ()),
            LeafNodeSource.UPDATE,
            Lifetime(0, 1),
            None,
            (),
            b"",
        )


def test_ratchet_tree_node_types() -> None:
    parent = ParentNode(HPKEPublicKeyBytes(b"p"), b"", (0, 2))
    tree = RatchetTree((_leaf(), parent, None))
    data = tree.to_bytes()
    assert RatchetTree.from_bytes(data) == tree
    # optional flag 1, then node_type must be 1 (leaf) or 2 (parent).
    bad = bytearray(data)
    bad[bad.index(b"\x01\x01") + 1] = 3
    with pytest.raises(DecodeError):
        RatchetTree.from_bytes(bytes(bad))


# --- messages (§8.4, §12) -----------------------------------------------------------


def test_psk_ids() -> None:
    ext = PreSharedKeyID.external(b"id", b"n" * 32)
    res = PreSharedKeyID.resumption(ResumptionPSKUsage.BRANCH, b"g", 9, b"n" * 32)
    for psk in (ext, res):
        assert PreSharedKeyID.from_bytes(psk.to_bytes()) == psk
    assert res.psktype is PSKType.RESUMPTION
    data = bytearray(res.to_bytes())
    data[1] = 4  # usage out of range
    with pytest.raises(DecodeError):
        PreSharedKeyID.from_bytes(bytes(data))
    with pytest.raises(DecodeError):
        PreSharedKeyID.from_bytes(b"\x03" + bytes(ext.to_bytes()[1:]))
    with pytest.raises(UsageError):
        PreSharedKeyID(PSKType.EXTERNAL, b"", None)


def test_unknown_proposal_kept_as_opaque() -> None:
    custom = UnknownProposal(0xF0F0, b"payload")
    data = custom.to_bytes()
    assert data == bytes.fromhex("f0f0") + b"\x07payload"
    assert Proposal.from_bytes(data) == custom
    commit = Commit((custom, Remove(3), ProposalRef(b"r" * 32)), None)
    assert Commit.from_bytes(commit.to_bytes()) == commit
    with pytest.raises(UsageError):
        UnknownProposal(3, b"")
    with pytest.raises(DecodeError):
        UnknownProposal.from_body_bytes(b"\x00")
    with pytest.raises(UsageError):
        Proposal.from_body_bytes(b"\x00")


def test_commit_rejects_bad_tags() -> None:
    data = Commit((Remove(1),), None).to_bytes()
    assert data.hex() == "07" + "01" + "0003" + "00000001" + "00"
    for bad in ("0700" + "0003" + "00000001" + "00", "0703" + "0003" + "00000001" + "00"):
        with pytest.raises(DecodeError):
            Commit.from_bytes(bytes.fromhex(bad))
    with pytest.raises(DecodeError, match="presence"):
        Commit.from_bytes(data[:-1] + b"\x02")


# --- framing (§6) -------------------------------------------------------------------


def _framed(sender: Sender, content: bytes | Commit = b"hi") -> FramedContent:
    return FramedContent(b"group", 3, sender, b"aad", content)


def test_sender_variants() -> None:
    for sender in (
        Sender.member(4),
        Sender.external(1),
        Sender.new_member_proposal(),
        Sender.new_member_commit(),
    ):
        assert Sender.from_bytes(sender.to_bytes()) == sender
    with pytest.raises(DecodeError):
        Sender.from_bytes(b"\x05")
    with pytest.raises(DecodeError):
        Sender.from_bytes(b"\x03\x00\x00\x00\x00")
    with pytest.raises(UsageError):
        Sender(SenderType.MEMBER)


def test_public_message_membership_tag_and_confirmation_tag() -> None:
    member = PublicMessage(_framed(Sender.member(0)), FramedContentAuthData(b"sig"), b"tag")
    external = PublicMessage(_framed(Sender.external(0)), FramedContentAuthData(b"sig"))
    commit = PublicMessage(
        _framed(Sender.member(1), Commit((), None)), FramedContentAuthData(b"s", b"c"), b"t"
    )
    for message in (member, external, commit):
        wrapped = MLSMessage(message)
        assert wrapped.wire_format is WireFormat.PUBLIC_MESSAGE
        assert MLSMessage.from_bytes(wrapped.to_bytes()) == wrapped
    with pytest.raises(UsageError):
        PublicMessage(_framed(Sender.member(0)), FramedContentAuthData(b"sig"))
    with pytest.raises(UsageError):
        PublicMessage(_framed(Sender.member(1), Commit((), None)), FramedContentAuthData(b"s"), b"")


def test_mls_message_rejects_unknown_version_and_wire_format() -> None:
    data = MLSMessage(
        PublicMessage(_framed(Sender.external(0)), FramedContentAuthData(b"sig"))
    ).to_bytes()
    for bad in (b"\x00\x02" + data[2:], b"\x00\x00" + data[2:], data[:2] + b"\x00\x06" + data[4:]):
        with pytest.raises(DecodeError):
            MLSMessage.from_bytes(bad)


def test_mls_message_body_must_be_a_message() -> None:
    with pytest.raises(UsageError):
        MLSMessage(SenderData(0, 0, b"1234"))  # type: ignore[arg-type]


def test_framed_content_tbs_context() -> None:
    ctx = GroupContext(1, 1, b"group", 3, b"th", b"cth", ())
    tbs = FramedContentTBS(WireFormat.PUBLIC_MESSAGE, _framed(Sender.member(0)), ctx)
    assert FramedContentTBS.from_bytes(tbs.to_bytes()) == tbs
    assert tbs.to_bytes().endswith(ctx.to_bytes())
    ext = FramedContentTBS(WireFormat.PUBLIC_MESSAGE, _framed(Sender.external(0)))
    assert FramedContentTBS.from_bytes(ext.to_bytes()) == ext
    with pytest.raises(UsageError):
        FramedContentTBS(WireFormat.PUBLIC_MESSAGE, _framed(Sender.member(0)))


def test_private_message_content_padding() -> None:
    content = PrivateMessageContent(b"hello", FramedContentAuthData(b"sig"), padding=5)
    data = content.to_bytes()
    assert data.endswith(bytes(5))
    decoded = PrivateMessageContent.from_bytes(data, ContentType.APPLICATION)
    assert decoded == content
    assert PrivateMessageContent.from_bytes(data, 1) == content  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        PrivateMessageContent.from_bytes(data, 9)  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="padding"):
        PrivateMessageContent.from_bytes(data[:-1] + b"\x01", ContentType.APPLICATION)
    # The same bytes do not parse as a commit (no confirmation tag, garbage body).
    with pytest.raises(DecodeError):
        PrivateMessageContent.from_bytes(data, ContentType.COMMIT)
    commit = PrivateMessageContent(Commit((), None), FramedContentAuthData(b"s", b"tag"))
    assert PrivateMessageContent.from_bytes(commit.to_bytes(), ContentType.COMMIT) == commit
    assert "hello" not in repr(content)
    framed = _framed(Sender.member(0), b"very secret words")
    assert "secret" not in repr(framed)
    assert "17 bytes" in repr(framed)
    assert "Remove" in repr(_framed(Sender.member(0), Commit((Remove(2),), None)))


def test_sender_data() -> None:
    sd = SenderData(7, 42, b"\x01\x02\x03\x04")
    assert sd.to_bytes().hex() == "00000007" + "0000002a" + "01020304"
    assert SenderData.from_bytes(sd.to_bytes()) == sd
    with pytest.raises(DecodeError):
        SenderData.from_bytes(sd.to_bytes()[:-1])
    with pytest.raises(UsageError):
        SenderData(0, 0, b"123")


def test_secrets_not_in_repr() -> None:
    secrets = GroupSecrets(b"JOINER-SECRET", PathSecret(b"PATH-SECRET"), ())
    assert "JOINER" not in repr(secrets)
    assert "PATH-SECRET" not in repr(secrets)
