"""Proposal and proposal-list validation, and the path-required rule (RFC 9420 §12.1, §12.2, §12.4).

Theory of operation: a commit's proposals are first resolved (references looked up)
into :class:`ProposalEntry` values that remember who sent each proposal. The rules
that look only at the list (who may send what, duplicates, which types may be
combined, external-commit shape) live in :func:`check_proposal_list`; the rules that
need the tree as it changes (leaf node validation, key uniqueness, KeyPackage fit)
run while the list is applied, in :mod:`.commit`, using the helpers here. Committer
and receiver call the same functions, so a commit we create is one we would accept.

Rules (§12.2), regular commit — the list is invalid if it has:
  an Update from the committer; a Remove of the committer; two Updates/Removes for
  one leaf; two Adds of one client (same signature key); two PSKs with one id; two
  GroupContextExtensions; a ReInit with anything else; an ExternalInit; a proposal
  type some remaining member does not support.
External commit: exactly one ExternalInit, at most one Remove, any PSKs, nothing
else, and nothing by reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .crypto.suites import CipherSuiteImpl
from .errors import DecodeError, ValidationError
from .extensions import Extension, ExtensionType, RequiredCapabilities, find_extension
from .framing import Sender, SenderType
from .messages import (
    Add,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalType,
    PSKType,
    ReInit,
    Remove,
    ResumptionPSKUsage,
    UnknownProposal,
    Update,
)
from .tree import RatchetTree
from .tree_validation import DEFAULT_EXTENSION_TYPES, DEFAULT_PROPOSAL_TYPES

__all__ = [
    "PATH_REQUIRED_TYPES",
    "ProposalEntry",
    "check_extensions_supported",
    "check_proposal_list",
    "check_proposal_sender",
    "check_psk_id",
    "path_required",
    "select_proposals",
]

#: Proposal types whose commit must carry an UpdatePath (§12.4, §17.4 "Path Required").
PATH_REQUIRED_TYPES: frozenset[int] = frozenset(
    {
        ProposalType.UPDATE,
        ProposalType.REMOVE,
        ProposalType.EXTERNAL_INIT,
        ProposalType.GROUP_CONTEXT_EXTENSIONS,
    }
)

# Which sender types may send which proposal types (§12.1.8): members anything but
# ExternalInit (which only travels inline in an external commit); external senders
# the group-management types; a new member only its own Add.
_EXTERNAL_SENDER_TYPES = frozenset(
    {
        ProposalType.ADD,
        ProposalType.REMOVE,
        ProposalType.PSK,
        ProposalType.REINIT,
        ProposalType.GROUP_CONTEXT_EXTENSIONS,
    }
)


@dataclass(frozen=True, slots=True)
class ProposalEntry:
    """A proposal of a commit with its sender, and its reference if sent by reference."""

    #: The proposal.
    proposal: Proposal
    #: Who proposed it (the committer for inline proposals).
    sender: Sender
    #: ``ProposalRef`` value, or None if inline.
    ref: bytes | None = None


def path_required(proposals: Iterable[Proposal]) -> bool:
    """True if a commit of ``proposals`` must carry a path (§12.4): empty or a path-required type.

    Unknown proposal types are treated as path-required (the safe reading of §17.4).
    """
    items = list(proposals)
    return not items or any(
        p.proposal_type in PATH_REQUIRED_TYPES or isinstance(p, UnknownProposal) for p in items
    )


def check_proposal_sender(proposal: Proposal, sender: Sender) -> None:
    """Check that ``sender`` may send ``proposal`` on its own (§12.1.8, §12.2).

    Raises:
        ValidationError: the sender type may not send this proposal type.
    """
    kind = sender.sender_type
    ptype = proposal.proposal_type
    if ptype == ProposalType.EXTERNAL_INIT:
        raise ValidationError("ExternalInit may only appear inline in an external commit")
    if kind is SenderType.MEMBER:
        return
    if kind is SenderType.EXTERNAL and ptype in _EXTERNAL_SENDER_TYPES:
        return
    if kind is SenderType.NEW_MEMBER_PROPOSAL and ptype == ProposalType.ADD:
        return
    raise ValidationError("sender type may not send this proposal type")


def check_psk_id(cs: CipherSuiteImpl, psk_id: PreSharedKeyID) -> None:
    """A PreSharedKey proposal's id must be usable (§8.4, §12.1.4).

    Raises:
        ValidationError: wrong nonce length, or a resumption PSK whose usage is not
            ``application`` (reinit and branch PSKs appear only in Welcomes).
    """
    if len(psk_id.psk_nonce) != cs.n_h:
        raise ValidationError("psk_nonce must be KDF.Nh bytes")
    if psk_id.psktype is PSKType.RESUMPTION and psk_id.usage is not ResumptionPSKUsage.APPLICATION:
        raise ValidationError(
            "a PreSharedKey proposal's resumption PSK must have usage application"
        )


def _leaf_of(entry: ProposalEntry) -> int | None:
    if isinstance(entry.proposal, Update):
        return entry.sender.index
    if isinstance(entry.proposal, Remove):
        return entry.proposal.removed
    return None


def check_proposal_list(entries: Sequence[ProposalEntry], committer: Sender) -> None:
    """The list rules of §12.2 that need no tree (see the module docstring).

    Args:
        entries: the commit's proposals in order.
        committer: the commit's sender (``member`` or ``new_member_commit``).

    Raises:
        ValidationError: the list breaks a rule.
    """
    proposals = [e.proposal for e in entries]
    if committer.sender_type is SenderType.NEW_MEMBER_COMMIT:
        if any(e.ref is not None for e in entries):
            raise ValidationError("an external commit must not include proposals by reference")
        if sum(isinstance(p, ExternalInit) for p in proposals) != 1:
            raise ValidationError("an external commit needs exactly one ExternalInit")
        if sum(isinstance(p, Remove) for p in proposals) > 1:
            raise ValidationError("an external commit may remove at most one leaf")
        if any(not isinstance(p, ExternalInit | Remove | PreSharedKey) for p in proposals):
            raise ValidationError("an external commit may only hold ExternalInit, Remove and PSKs")
    elif committer.sender_type is SenderType.MEMBER:
        for entry in entries:
            if entry.ref is not None:
                check_proposal_sender(entry.proposal, entry.sender)
            if isinstance(entry.proposal, ExternalInit):
                raise ValidationError("ExternalInit outside an external commit")
            if isinstance(entry.proposal, Update) and entry.sender == committer:
                raise ValidationError("the committer must not commit its own Update")
            if isinstance(entry.proposal, Update) and entry.sender.sender_type is not (
                SenderType.MEMBER
            ):
                raise ValidationError("an Update must come from a member")
            if isinstance(entry.proposal, Remove) and entry.proposal.removed == committer.index:
                raise ValidationError("the committer must not remove itself")
        if sum(isinstance(p, GroupContextExtensions) for p in proposals) > 1:
            raise ValidationError("more than one GroupContextExtensions proposal")
        if any(isinstance(p, ReInit) for p in proposals) and len(proposals) > 1:
            raise ValidationError("a ReInit must be committed alone")
    else:
        raise ValidationError("commits come from members or new members only")
    leaves = [leaf for leaf in map(_leaf_of, entries) if leaf is not None]
    if len(set(leaves)) != len(leaves):
        raise ValidationError("two Update or Remove proposals for one leaf")
    psk_ids = [p.psk.to_bytes() for p in proposals if isinstance(p, PreSharedKey)]
    if len(set(psk_ids)) != len(psk_ids):
        raise ValidationError("two PreSharedKey proposals with one PSK id")
    add_keys = [p.key_package.leaf_node.signature_key for p in proposals if isinstance(p, Add)]
    if len(set(add_keys)) != len(add_keys):
        raise ValidationError("two Add proposals for one client")


def _required(extensions: Sequence[Extension]) -> RequiredCapabilities | None:
    ext = find_extension(extensions, ExtensionType.REQUIRED_CAPABILITIES)
    if ext is None:
        return None
    try:
        return RequiredCapabilities.from_extension(ext)
    except DecodeError:
        raise ValidationError("required_capabilities extension is malformed") from None


def check_extensions_supported(
    tree: RatchetTree, extensions: Sequence[Extension], proposals: Iterable[Proposal] = ()
) -> None:
    """Every member supports the GroupContext extensions and proposal types in use (§12.1.7, §12.2).

    Args:
        tree: the members who must support them.
        extensions: GroupContext extensions (non-default types must be in every
            member's capabilities; ``required_capabilities`` must be met).
        proposals: proposals of non-default types must be supported too.

    Raises:
        ValidationError: some member lacks a needed capability.
    """
    required = _required(extensions)
    unknown = {p.proposal_type for p in proposals if p.proposal_type not in DEFAULT_PROPOSAL_TYPES}
    for _, leaf in tree.members():
        caps = leaf.capabilities
        for ext in extensions:
            if ext.extension_type not in DEFAULT_EXTENSION_TYPES and (
                ext.extension_type not in caps.extensions
            ):
                raise ValidationError("a member does not support a GroupContext extension")
        if not unknown <= set(caps.proposals):
            raise ValidationError("a member does not support a proposal type in the commit")
        if required is None:
            continue
        if any(
            t not in DEFAULT_EXTENSION_TYPES and t not in caps.extensions
            for t in required.extension_types
        ) or any(
            t not in DEFAULT_PROPOSAL_TYPES and t not in caps.proposals
            for t in required.proposal_types
        ):
            raise ValidationError("a member does not meet the required capabilities")
        if any(t not in caps.credentials for t in required.credential_types):
            raise ValidationError("a member does not meet the required credential types")


def select_proposals(entries: Sequence[ProposalEntry], committer: Sender) -> list[ProposalEntry]:
    """The committer's choice among cached proposals, following §12.2's SHOULDs.

    Drops the committer's own Updates and Removes of itself (someone else must
    commit those), prefers a Remove over Updates for the same leaf and the latest
    Update otherwise, keeps one proposal per PSK id and Add signature key, keeps
    the last GroupContextExtensions, and keeps a ReInit only when nothing else is
    pending.
    """
    kept: list[ProposalEntry] = []
    removed = {
        e.proposal.removed
        for e in entries
        if isinstance(e.proposal, Remove) and e.proposal.removed != committer.index
    }
    last_update: dict[int, ProposalEntry] = {}
    for e in entries:
        if isinstance(e.proposal, Update) and e.sender.index is not None:
            last_update[e.sender.index] = e
    last_gce = [e for e in entries if isinstance(e.proposal, GroupContextExtensions)][-1:]
    seen_psk: set[bytes] = set()
    seen_add: set[bytes] = set()
    for e in entries:
        p = e.proposal
        if isinstance(p, ExternalInit | ReInit):
            continue
        if isinstance(p, Update):
            if e.sender == committer or e.sender.index in removed:
                continue
            if last_update.get(e.sender.index or 0) is not e:
                continue
        if isinstance(p, Remove) and (p.removed == committer.index or p.removed not in removed):
            continue
        if isinstance(p, Remove):
            removed.discard(p.removed)
        if isinstance(p, GroupContextExtensions) and e not in last_gce:
            continue
        if isinstance(p, PreSharedKey):
            key = p.psk.to_bytes()
            if key in seen_psk:
                continue
            seen_psk.add(key)
        if isinstance(p, Add):
            key = p.key_package.leaf_node.signature_key
            if key in seen_add:
                continue
            seen_add.add(key)
        kept.append(e)
    if not kept:
        reinits = [e for e in entries if isinstance(e.proposal, ReInit)]
        kept = reinits[-1:]
    return kept
