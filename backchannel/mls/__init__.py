"""MLS (RFC 9420), sans-IO: the stable API (part 1 and the Group of part 2), re-exported from the modules that define it."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Names other than the errors are re-exported lazily (PEP 562): `import backchannel.mls`
# (which also runs first for any submodule import, e.g. `backchannel.mls.errors`) loads
# only errors.py, and the first use of another name imports its module, and with it
# `cryptography`. The TYPE_CHECKING imports give type checkers the same names.
from .errors import (
    DecodeError,
    InternalError,
    MLSError,
    UsageError,
    ValidationError,
    VerificationError,
)

if TYPE_CHECKING:
    from .codec import (
        Reader,
        Struct,
        Writer,
    )
    from .credentials import (
        BasicCredential,
        Credential,
        CredentialType,
        X509Credential,
    )
    from .crypto.hpke import (
        HPKEPrivateKey,
        HPKEPublicKey,
    )
    from .crypto.signatures import (
        SignaturePrivateKey,
        SignaturePublicKey,
        SignatureScheme,
    )
    from .crypto.suites import (
        DEFAULT_CIPHER_SUITE,
        CipherSuite,
        CipherSuiteImpl,
        get_cipher_suite,
    )
    from .events import (
        ApplicationMessage,
        CommitApplied,
        CommitEvent,
        CommittedProposal,
        Event,
        MemberInfo,
        OwnMessage,
        ProposalReceived,
        StagedCommit,
    )
    from .extensions import (
        ApplicationId,
        Extension,
        ExtensionType,
        ExternalPub,
        ExternalSenders,
        RequiredCapabilities,
    )
    from .framing import (
        AuthenticatedContent,
        ContentType,
        FramedContent,
        FramedContentAuthData,
        MLSMessage,
        PrivateMessage,
        ProtocolVersion,
        PublicMessage,
        Sender,
        SenderType,
        WireFormat,
    )
    from .group import CommitResult, Group
    from .group_state import GroupConfig, GroupStatus
    from .key_package_ops import KeyPackageBundle, KeyPackageIn, VerifiedKeyPackage
    from .key_packages import KeyPackage
    from .key_schedule import EpochSecrets
    from .messages import (
        Add,
        Commit,
        ExternalInit,
        GroupContext,
        GroupContextExtensions,
        GroupInfo,
        GroupSecrets,
        PreSharedKey,
        PreSharedKeyID,
        Proposal,
        ProposalRef,
        ProposalType,
        ReInit,
        Remove,
        Update,
        Welcome,
    )
    from .protection import (
        authenticate,
        protect_private_message,
        protect_public_message,
        unprotect_private_message,
        unprotect_public_message,
    )
    from .psk import psk_secret
    from .secret_tree import (
        RatchetKey,
        RatchetType,
        SecretTree,
        SenderRatchetConfiguration,
    )
    from .transcript import update_transcript_hashes
    from .tree_structs import (
        Capabilities,
        LeafNode,
        LeafNodeSource,
        Lifetime,
        ParentNode,
        RatchetTree,
        UpdatePath,
        UpdatePathNode,
    )

#: Public name → the module (relative to this package) that defines it.
_LAZY: dict[str, str] = {
    "Reader": ".codec",
    "Struct": ".codec",
    "Writer": ".codec",
    "BasicCredential": ".credentials",
    "Credential": ".credentials",
    "CredentialType": ".credentials",
    "X509Credential": ".credentials",
    "HPKEPrivateKey": ".crypto.hpke",
    "HPKEPublicKey": ".crypto.hpke",
    "SignaturePrivateKey": ".crypto.signatures",
    "SignaturePublicKey": ".crypto.signatures",
    "SignatureScheme": ".crypto.signatures",
    "CipherSuite": ".crypto.suites",
    "CipherSuiteImpl": ".crypto.suites",
    "DEFAULT_CIPHER_SUITE": ".crypto.suites",
    "get_cipher_suite": ".crypto.suites",
    "ApplicationId": ".extensions",
    "Extension": ".extensions",
    "ExtensionType": ".extensions",
    "ExternalPub": ".extensions",
    "ExternalSenders": ".extensions",
    "RequiredCapabilities": ".extensions",
    "AuthenticatedContent": ".framing",
    "ContentType": ".framing",
    "FramedContent": ".framing",
    "FramedContentAuthData": ".framing",
    "MLSMessage": ".framing",
    "PrivateMessage": ".framing",
    "ProtocolVersion": ".framing",
    "PublicMessage": ".framing",
    "Sender": ".framing",
    "SenderType": ".framing",
    "WireFormat": ".framing",
    "ApplicationMessage": ".events",
    "CommitApplied": ".events",
    "CommitEvent": ".events",
    "CommittedProposal": ".events",
    "Event": ".events",
    "MemberInfo": ".events",
    "OwnMessage": ".events",
    "ProposalReceived": ".events",
    "StagedCommit": ".events",
    "CommitResult": ".group",
    "Group": ".group",
    "GroupConfig": ".group_state",
    "GroupStatus": ".group_state",
    "KeyPackageBundle": ".key_package_ops",
    "KeyPackageIn": ".key_package_ops",
    "VerifiedKeyPackage": ".key_package_ops",
    "KeyPackage": ".key_packages",
    "EpochSecrets": ".key_schedule",
    "Add": ".messages",
    "Commit": ".messages",
    "ExternalInit": ".messages",
    "GroupContext": ".messages",
    "GroupContextExtensions": ".messages",
    "GroupInfo": ".messages",
    "GroupSecrets": ".messages",
    "PreSharedKey": ".messages",
    "PreSharedKeyID": ".messages",
    "Proposal": ".messages",
    "ProposalRef": ".messages",
    "ProposalType": ".messages",
    "ReInit": ".messages",
    "Remove": ".messages",
    "Update": ".messages",
    "Welcome": ".messages",
    "authenticate": ".protection",
    "protect_private_message": ".protection",
    "protect_public_message": ".protection",
    "unprotect_private_message": ".protection",
    "unprotect_public_message": ".protection",
    "psk_secret": ".psk",
    "RatchetKey": ".secret_tree",
    "RatchetType": ".secret_tree",
    "SecretTree": ".secret_tree",
    "SenderRatchetConfiguration": ".secret_tree",
    "update_transcript_hashes": ".transcript",
    "Capabilities": ".tree_structs",
    "LeafNode": ".tree_structs",
    "LeafNodeSource": ".tree_structs",
    "Lifetime": ".tree_structs",
    "ParentNode": ".tree_structs",
    "RatchetTree": ".tree_structs",
    "UpdatePath": ".tree_structs",
    "UpdatePathNode": ".tree_structs",
}

__all__ = [
    "DEFAULT_CIPHER_SUITE",
    "Add",
    "ApplicationId",
    "ApplicationMessage",
    "AuthenticatedContent",
    "BasicCredential",
    "Capabilities",
    "CipherSuite",
    "CipherSuiteImpl",
    "Commit",
    "CommitApplied",
    "CommitEvent",
    "CommitResult",
    "CommittedProposal",
    "ContentType",
    "Credential",
    "CredentialType",
    "DecodeError",
    "EpochSecrets",
    "Event",
    "Extension",
    "ExtensionType",
    "ExternalInit",
    "ExternalPub",
    "ExternalSenders",
    "FramedContent",
    "FramedContentAuthData",
    "Group",
    "GroupConfig",
    "GroupContext",
    "GroupContextExtensions",
    "GroupInfo",
    "GroupSecrets",
    "GroupStatus",
    "HPKEPrivateKey",
    "HPKEPublicKey",
    "InternalError",
    "KeyPackage",
    "KeyPackageBundle",
    "KeyPackageIn",
    "LeafNode",
    "LeafNodeSource",
    "Lifetime",
    "MLSError",
    "MLSMessage",
    "MemberInfo",
    "OwnMessage",
    "ParentNode",
    "PreSharedKey",
    "PreSharedKeyID",
    "PrivateMessage",
    "Proposal",
    "ProposalReceived",
    "ProposalRef",
    "ProposalType",
    "ProtocolVersion",
    "PublicMessage",
    "RatchetKey",
    "RatchetTree",
    "RatchetType",
    "ReInit",
    "Reader",
    "Remove",
    "RequiredCapabilities",
    "SecretTree",
    "Sender",
    "SenderRatchetConfiguration",
    "SenderType",
    "SignaturePrivateKey",
    "SignaturePublicKey",
    "SignatureScheme",
    "StagedCommit",
    "Struct",
    "Update",
    "UpdatePath",
    "UpdatePathNode",
    "UsageError",
    "ValidationError",
    "VerificationError",
    "VerifiedKeyPackage",
    "Welcome",
    "WireFormat",
    "Writer",
    "X509Credential",
    "authenticate",
    "get_cipher_suite",
    "protect_private_message",
    "protect_public_message",
    "psk_secret",
    "unprotect_private_message",
    "unprotect_public_message",
    "update_transcript_hashes",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
