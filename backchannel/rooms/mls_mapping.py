"""How a room sees MLS: identities, capabilities, and proposals mapped onto policy changes.

The mapping follows docs/room-protocol.md §3: each proposal of a commit, in commit
order, becomes one :class:`~.policy.ProposedChange` carrying its proposer's
credential identity; the committer's UpdatePath becomes ``UpdateMember``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from backchannel.mls.credentials import BasicCredential, Credential, CredentialType
from backchannel.mls.errors import MLSError
from backchannel.mls.events import StagedCommit
from backchannel.mls.extensions import (
    Extension,
    ExtensionType,
    RequiredCapabilities,
    find_extension,
)
from backchannel.mls.key_package_ops import default_capabilities
from backchannel.mls.messages import (
    Add,
    ExternalInit,
    GroupContextExtensions,
    Proposal,
    ReInit,
    Remove,
    Update,
)
from backchannel.mls.tree_structs import Capabilities

from .errors import PolicyViolation
from .policy import (
    ROOM_POLICY_EXTENSION_TYPE,
    AddMember,
    ChangePolicy,
    ExternalJoin,
    OtherProposal,
    ProposedChange,
    Reinit,
    RemoveMember,
    UpdateMember,
)

__all__ = [
    "committer_identity",
    "identity_of",
    "keeps_required_capabilities",
    "proposal_change",
    "require_identity",
    "required_capabilities",
    "room_capabilities",
    "staged_changes",
]


def room_capabilities(suite: int) -> Capabilities:
    """The leaf capabilities a room member advertises: basic credentials and the policy extension."""
    return default_capabilities(
        suite, [CredentialType.BASIC], extension_types=[ROOM_POLICY_EXTENSION_TYPE]
    )


def required_capabilities() -> Extension:
    return RequiredCapabilities((ROOM_POLICY_EXTENSION_TYPE,), (), ()).to_extension()


def identity_of(credential: Credential) -> bytes | None:
    if isinstance(credential, BasicCredential) and 1 <= len(credential.identity) <= 255:
        return credential.identity
    return None


def require_identity(credential: Credential) -> bytes:
    identity = identity_of(credential)
    if identity is None:
        raise PolicyViolation("Rooms need basic credentials with a 1-255 byte identity.")
    return identity


def keeps_required_capabilities(extensions: Iterable[Extension]) -> bool:
    ext = find_extension(extensions, ExtensionType.REQUIRED_CAPABILITIES)
    if ext is None:
        return False
    try:
        required = RequiredCapabilities.from_extension(ext)
    except MLSError:
        return False
    return ROOM_POLICY_EXTENSION_TYPE in required.extension_types


def proposal_change(
    proposal: Proposal, proposer: bytes, member_ids: Mapping[int, bytes]
) -> ProposedChange:
    """One proposal as the policy sees it (docs/room-protocol.md §3 table)."""
    if isinstance(proposal, Add):
        member = identity_of(proposal.key_package.leaf_node.credential)
        if member is None:
            return OtherProposal(proposer, proposal.proposal_type)
        return AddMember(proposer, member)
    if isinstance(proposal, Remove):
        return RemoveMember(proposer, member_ids.get(proposal.removed, b""))
    if isinstance(proposal, GroupContextExtensions):
        ext = find_extension(proposal.extensions, ROOM_POLICY_EXTENSION_TYPE)
        return ChangePolicy(proposer, None if ext is None else ext.extension_data)
    if isinstance(proposal, Update):
        return UpdateMember(proposer, identity_of(proposal.leaf_node.credential) or b"")
    if isinstance(proposal, ReInit):
        return Reinit(proposer)
    return OtherProposal(proposer, proposal.proposal_type)


def staged_changes(staged: StagedCommit, member_ids: Mapping[int, bytes]) -> list[ProposedChange]:
    """A staged commit's proposals, in commit order, plus the committer's path, as changes.

    ``member_ids`` is the current (pre-commit) tree; the committer is who its leaf
    says *before* the commit, and its path's new leaf must say the same.
    """
    committer = committer_identity(staged, member_ids)
    changes: list[ProposedChange] = []
    for item in staged.proposals:
        if isinstance(item.proposal, ExternalInit):
            changes.append(ExternalJoin(committer))
            continue
        proposer = None if item.proposer is None else identity_of(item.proposer.credential)
        changes.append(proposal_change(item.proposal, proposer or b"", member_ids))
    if staged.external:
        changes.append(ExternalJoin(committer))
    if staged.with_path:
        changes.append(UpdateMember(committer, identity_of(staged.committer.credential) or b""))
    return changes


def committer_identity(staged: StagedCommit, member_ids: Mapping[int, bytes]) -> bytes:
    """Who sent a staged commit: its leaf's identity before the commit (the joiner's
    own, for an external commit, which has no leaf before it)."""
    if staged.external:
        return identity_of(staged.committer.credential) or b""
    return member_ids.get(staged.committer.leaf_index, b"")
