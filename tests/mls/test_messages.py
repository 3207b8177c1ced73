"""Every struct in messages.json decodes and re-encodes byte-exact (RFC 9420, test-vectors "Messages").

Vector schema (messages.json), one object per vector, every value hex::

    {
      "mls_welcome":      MLSMessage with wire_format mls_welcome,
      "mls_group_info":   MLSMessage with wire_format mls_group_info,
      "mls_key_package":  MLSMessage with wire_format mls_key_package,
      "ratchet_tree":     optional<Node> ratchet_tree<V>,
      "group_secrets":    GroupSecrets,
      "add_proposal":     Add,
      "update_proposal":  Update,
      "remove_proposal":  Remove,
      "pre_shared_key_proposal": PreSharedKey,
      "re_init_proposal": ReInit,
      "external_init_proposal":  ExternalInit,
      "group_context_extensions_proposal": GroupContextExtensions,
      "commit":           Commit,
      "public_message_application": MLSMessage (public_message, content_type application),
      "public_message_proposal":    MLSMessage (public_message, content_type proposal),
      "public_message_commit":      MLSMessage (public_message, content_type commit),
      "private_message":  MLSMessage with wire_format mls_private_message
    }

The serialized structs inside the other vector files (trees, update paths, key
packages, welcomes, proposals and commits of the passive-client scenarios, ...)
are round-tripped as well.

Verification: each field decodes with its struct and re-encodes to the same bytes.
Beyond that, the nested structs found inside (leaf nodes, key packages, group
info, proposals) are re-checked on their own, and the TBS views are checked to be
exactly the signed prefix.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backchannel.mls.codec import Struct
from backchannel.mls.errors import DecodeError
from backchannel.mls.framing import (
    AuthenticatedContent,
    ContentType,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    SenderType,
    WireFormat,
)
from backchannel.mls.key_packages import KeyPackage, KeyPackageTBS
from backchannel.mls.messages import (
    Add,
    Commit,
    ExternalInit,
    GroupContextExtensions,
    GroupInfo,
    GroupInfoTBS,
    GroupSecrets,
    PreSharedKey,
    Proposal,
    ReInit,
    Remove,
    Update,
    Welcome,
)
from backchannel.mls.tree_structs import (
    LeafNode,
    LeafNodeSource,
    LeafNodeTBS,
    ParentNode,
    RatchetTree,
    UpdatePath,
)
from tests.vectors import load_vectors

VECTORS = load_vectors("messages")

STRUCTS: dict[str, type[Struct]] = {
    "mls_welcome": MLSMessage,
    "mls_group_info": MLSMessage,
    "mls_key_package": MLSMessage,
    "ratchet_tree": RatchetTree,
    "group_secrets": GroupSecrets,
    "commit": Commit,
    "public_message_application": MLSMessage,
    "public_message_proposal": MLSMessage,
    "public_message_commit": MLSMessage,
    "private_message": MLSMessage,
}

PROPOSALS: dict[str, type[Proposal]] = {
    "add_proposal": Add,
    "update_proposal": Update,
    "remove_proposal": Remove,
    "pre_shared_key_proposal": PreSharedKey,
    "re_init_proposal": ReInit,
    "external_init_proposal": ExternalInit,
    "group_context_extensions_proposal": GroupContextExtensions,
}

EXPECTED_WIRE: dict[str, tuple[WireFormat, type[Struct]]] = {
    "mls_welcome": (WireFormat.WELCOME, Welcome),
    "mls_group_info": (WireFormat.GROUP_INFO, GroupInfo),
    "mls_key_package": (WireFormat.KEY_PACKAGE, KeyPackage),
    "public_message_application": (WireFormat.PUBLIC_MESSAGE, PublicMessage),
    "public_message_proposal": (WireFormat.PUBLIC_MESSAGE, PublicMessage),
    "public_message_commit": (WireFormat.PUBLIC_MESSAGE, PublicMessage),
    "private_message": (WireFormat.PRIVATE_MESSAGE, PrivateMessage),
}

EXPECTED_CONTENT = {
    "public_message_application": ContentType.APPLICATION,
    "public_message_proposal": ContentType.PROPOSAL,
    "public_message_commit": ContentType.COMMIT,
}


CASES = [pytest.param(vector, id=f"vector={i}") for i, vector in enumerate(VECTORS)]


def _roundtrip(cls: type[Struct], data: bytes) -> Struct:
    value = cls.from_bytes(data)
    assert value.to_bytes() == data
    assert cls.from_bytes(value.to_bytes()) == value
    return value


def _check_leaf(leaf: LeafNode) -> None:
    _roundtrip(LeafNode, leaf.to_bytes())
    context: tuple[bytes | None, int | None] = (None, None)
    if leaf.leaf_node_source is not LeafNodeSource.KEY_PACKAGE:
        context = (b"group", 7)
    tbs = leaf.tbs_bytes(*context)
    encoded = leaf.to_bytes()
    # The TBS is the leaf minus its trailing signature, plus the group context.
    unsigned = encoded[: len(encoded) - len(leaf.signature) - _varint_len(len(leaf.signature))]
    assert tbs.startswith(unsigned)
    decoded = LeafNodeTBS.from_bytes(tbs)
    assert decoded.to_bytes() == tbs
    assert (decoded.group_id, decoded.leaf_index) == context


def _varint_len(n: int) -> int:
    return 1 if n < 64 else 2 if n < 16384 else 4


def _check_key_package(kp: KeyPackage) -> None:
    tbs = kp.tbs_bytes()
    assert kp.to_bytes().startswith(tbs)
    assert KeyPackageTBS.from_bytes(tbs) == kp.tbs()
    assert kp.leaf_node.leaf_node_source is LeafNodeSource.KEY_PACKAGE
    _check_leaf(kp.leaf_node)


def _check_nested(value: Struct) -> None:
    if isinstance(value, MLSMessage):
        _check_nested(value.body)
    elif isinstance(value, KeyPackage):
        _check_key_package(value)
    elif isinstance(value, GroupInfo):
        assert value.to_bytes().startswith(value.tbs_bytes())
        assert GroupInfoTBS.from_bytes(value.tbs_bytes()) == value.tbs()
        _roundtrip(type(value.group_context), value.group_context.to_bytes())
    elif isinstance(value, RatchetTree):
        for index, node in enumerate(value.nodes):
            if isinstance(node, LeafNode):
                assert index % 2 == 0
                _check_leaf(node)
            elif isinstance(node, ParentNode):
                assert index % 2 == 1
                _roundtrip(ParentNode, node.to_bytes())
    elif isinstance(value, Commit):
        for item in value.proposals:
            _roundtrip(type(item), item.to_bytes())
        if value.path is not None:
            _check_leaf(value.path.leaf_node)
    elif isinstance(value, PublicMessage):
        content = value.content.content
        if isinstance(content, Struct):
            _check_nested(content)
    elif isinstance(value, Add):
        _check_key_package(value.key_package)
    elif isinstance(value, Update):
        _check_leaf(value.leaf_node)


@pytest.mark.parametrize("vector", CASES)
def test_struct_roundtrip(vector: dict[str, str]) -> None:
    for name, cls in STRUCTS.items():
        try:
            _check_struct(name, cls, bytes.fromhex(vector[name]))
        except (AssertionError, DecodeError) as exc:
            raise AssertionError(f"field {name!r}: {exc!r}") from exc


def _check_struct(name: str, cls: type[Struct], data: bytes) -> None:
    value = _roundtrip(cls, data)
    if name in EXPECTED_WIRE:
        assert isinstance(value, MLSMessage)
        wire_format, body_class = EXPECTED_WIRE[name]
        assert value.wire_format is wire_format
        assert isinstance(value.body, body_class)
        if name in EXPECTED_CONTENT:
            assert isinstance(value.body, PublicMessage)
            assert value.body.content.content_type is EXPECTED_CONTENT[name]
            is_member = value.body.content.sender.sender_type is SenderType.MEMBER
            assert (value.body.membership_tag is not None) == is_member
    _check_nested(value)


@pytest.mark.parametrize("vector", CASES)
def test_proposal_roundtrip(vector: dict[str, str]) -> None:
    for name, cls in PROPOSALS.items():
        try:
            _check_proposal(cls, bytes.fromhex(vector[name]))
        except (AssertionError, DecodeError) as exc:
            raise AssertionError(f"field {name!r}: {exc!r}") from exc


def _check_proposal(cls: type[Proposal], data: bytes) -> None:
    proposal = cls.from_body_bytes(data)
    assert isinstance(proposal, cls)
    assert proposal.body_bytes() == data
    # With its type prefix it is a Proposal that decodes back to the same variant.
    tagged = proposal.to_bytes()
    assert tagged[2:] == data
    assert Proposal.from_bytes(tagged) == proposal
    assert cls.from_bytes(tagged) == proposal
    _check_nested(proposal)


@pytest.mark.parametrize("vector", CASES[:10])
@pytest.mark.parametrize("name", ["commit", "mls_welcome", "ratchet_tree"])
def test_truncation_and_trailing_bytes_rejected(vector: dict[str, str], name: str) -> None:
    data = bytes.fromhex(vector[name])
    cls = STRUCTS[name]
    with pytest.raises(DecodeError):
        cls.from_bytes(data + b"\x00")
    for cut in {0, 1, len(data) // 2, len(data) - 1}:
        with pytest.raises(DecodeError):
            cls.from_bytes(data[:cut])


# --- serialized structs inside the other vector files ---------------------------------


def _structs_in(name: str) -> Iterator[tuple[str, type[Struct], str]]:
    """Yield ``(where, struct, hex)`` for every serialized struct a vector file holds."""
    for i, v in enumerate(load_vectors(name)):
        at = f"{name}[{i}]"
        if name == "tree-operations":
            yield f"{at}.proposal", Proposal, v["proposal"]
            yield f"{at}.tree_before", RatchetTree, v["tree_before"]
            yield f"{at}.tree_after", RatchetTree, v["tree_after"]
        elif name == "tree-validation":
            yield f"{at}.tree", RatchetTree, v["tree"]
        elif name == "treekem":
            yield f"{at}.ratchet_tree", RatchetTree, v["ratchet_tree"]
            for j, path in enumerate(v["update_paths"]):
                yield f"{at}.update_paths[{j}]", UpdatePath, path["update_path"]
        elif name == "transcript-hashes":
            yield f"{at}.authenticated_content", AuthenticatedContent, v["authenticated_content"]
        elif name == "message-protection":
            yield f"{at}.proposal", Proposal, v["proposal"]
            yield f"{at}.commit", Commit, v["commit"]
            for key in ("proposal_priv", "proposal_pub", "commit_priv", "commit_pub"):
                yield f"{at}.{key}", MLSMessage, v[key]
            yield f"{at}.application_priv", MLSMessage, v["application_priv"]
        else:  # welcome and passive-client-*
            yield f"{at}.key_package", MLSMessage, v["key_package"]
            yield f"{at}.welcome", MLSMessage, v["welcome"]
            if v.get("ratchet_tree"):
                yield f"{at}.ratchet_tree", RatchetTree, v["ratchet_tree"]
            for j, epoch in enumerate(v.get("epochs", [])):
                for k, proposal in enumerate(epoch["proposals"]):
                    yield f"{at}.epochs[{j}].proposals[{k}]", MLSMessage, proposal
                yield f"{at}.epochs[{j}].commit", MLSMessage, epoch["commit"]


@pytest.mark.parametrize(
    "name",
    [
        "tree-operations",
        "tree-validation",
        "treekem",
        "welcome",
        "transcript-hashes",
        "message-protection",
        "passive-client-welcome",
        "passive-client-handling-commit",
        "passive-client-random",
    ],
)
def test_structs_in_other_vector_files_roundtrip(name: str) -> None:
    count = 0
    for where, cls, hex_data in _structs_in(name):
        data = bytes.fromhex(hex_data)
        try:
            value = cls.from_bytes(data)
            assert value.to_bytes() == data
        except (AssertionError, DecodeError) as exc:
            raise AssertionError(f"{where}: {exc!r}") from exc
        count += 1
    assert count > 0
