"""Commit creation and processing: apply proposals, path, transcript, key schedule (RFC 9420 §12.3, §12.4).

Theory of operation: both sides run the same pipeline on immutable values and
produce a :class:`NextEpoch` without touching the current state:

1. resolve the ``ProposalOrRef`` list into :class:`~.validation.ProposalEntry` values;
2. check the list (:func:`.validation.check_proposal_list`) and apply it in §12.3
   order (:func:`apply_proposals`): GroupContextExtensions, Updates, Removes, Adds,
   PSKs, ExternalInit, ReInit — validating each proposal against the tree as it is
   at that point;
3. check the path-required rule; merge (or generate) the UpdatePath and decrypt
   (or encrypt) its path secrets under the provisional GroupContext;
4. update the transcript hashes, run the key schedule (init secret from the last
   epoch, or from ExternalInit) and check (or compute) the confirmation tag.

Only when the caller merges does a :class:`NextEpoch` become the group's state.
"""

from __future__ import annotations

import dataclasses
import secrets as _random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .crypto.hpke import HPKEPrivateKey
from .crypto.signatures import SignaturePrivateKey
from .crypto.suites import CipherSuiteImpl
from .errors import UsageError, ValidationError
from .events import MemberInfo
from .extensions import Extension, check_unique_types
from .framing import (
    AuthenticatedContent,
    FramedContent,
    FramedContentAuthData,
    Sender,
    SenderType,
    WireFormat,
)
from .group_state import EpochState, scrub
from .key_package_ops import KeyPackageIn
from .key_packages import KeyPackage
from .key_schedule import EpochSecrets, external_init_decap, external_key_pair
from .messages import (
    Add,
    Commit,
    ExternalInit,
    GroupContext,
    GroupContextExtensions,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalOrRef,
    ProposalRef,
    ReInit,
    Remove,
    Update,
)
from .protection import sign_framed_content, verify_framed_content
from .psk import psk_secret
from .transcript import confirmed_transcript_hash, interim_transcript_hash
from .tree import RatchetTree
from .tree_structs import LeafNode, LeafNodeSource
from .tree_validation import validate_leaf_node
from .treekem import (
    PreparedPath,
    TreePrivateKeys,
    decrypt_update_path,
    encrypt_update_path,
    generate_update_path,
    merge_update_path,
)
from .validation import (
    ProposalEntry,
    check_extensions_supported,
    check_proposal_list,
    check_psk_id,
    path_required,
)

__all__ = [
    "Applied",
    "CommitBase",
    "CreatedCommit",
    "NextEpoch",
    "PskResolver",
    "apply_proposals",
    "create_commit",
    "member_info",
    "resolve_proposals",
    "stage_commit",
]

#: Returns the secret of a PSK id, or raises ValidationError if it is not available.
PskResolver = Callable[[PreSharedKeyID], bytes]


def member_info(tree: RatchetTree, leaf_index: int) -> MemberInfo:
    """The :class:`MemberInfo` of a non-blank leaf."""
    leaf = tree.leaf_node(leaf_index)
    if leaf is None:
        raise ValidationError("leaf is blank")
    return MemberInfo(leaf_index, leaf.credential, bytes(leaf.signature_key))


@dataclass(frozen=True, slots=True, eq=False)
class Applied:
    """A proposal list applied to the tree and extensions (§12.3)."""

    tree: RatchetTree
    extensions: tuple[Extension, ...]
    extensions_changed: bool
    #: ``(leaf_index, KeyPackage, KeyPackageRef)`` of each Add.
    added: tuple[tuple[int, KeyPackage, bytes], ...]
    #: Removed members as they were.
    removed: tuple[MemberInfo, ...]
    #: ``(leaf_index, proposal ref)`` for each applied Update.
    updated: tuple[tuple[int, bytes | None], ...]
    psks: tuple[PreSharedKeyID, ...]
    external_init: ExternalInit | None
    reinit: ReInit | None


def resolve_proposals(
    items: Sequence[ProposalOrRef], committer: Sender, cache: Mapping[bytes, AuthenticatedContent]
) -> list[ProposalEntry]:
    """Turn a commit's ``ProposalOrRef`` list into entries (§12.4).

    Raises:
        ValidationError: a reference to a proposal this member does not hold.
    """
    entries: list[ProposalEntry] = []
    for item in items:
        if isinstance(item, ProposalRef):
            content = cache.get(item.value)
            if content is None or not isinstance(content.content.content, Proposal):
                raise ValidationError("commit refers to an unknown proposal")
            entries.append(
                ProposalEntry(content.content.content, content.content.sender, item.value)
            )
        else:
            entries.append(ProposalEntry(item, committer))
    return entries


def apply_proposals(
    cs: CipherSuiteImpl,
    context: GroupContext,
    tree: RatchetTree,
    entries: Sequence[ProposalEntry],
    *,
    now: int | None,
    max_lifetime: int | None = None,
    used_key_packages: frozenset[bytes] = frozenset(),
) -> Applied:
    """Validate and apply a proposal list in §12.3 order; nothing is changed on error.

    Raises:
        ValidationError: a proposal is invalid here (§12.1, §12.2).
        VerificationError: a signature in an Update or Add does not verify.
    """
    by_type: dict[type[Proposal], list[ProposalEntry]] = {}
    for entry in entries:
        by_type.setdefault(type(entry.proposal), []).append(entry)
    extensions = context.extensions
    gce = by_type.get(GroupContextExtensions, [])
    for entry in gce:
        assert isinstance(entry.proposal, GroupContextExtensions)
        extensions = entry.proposal.extensions
        check_unique_types(extensions)
    new_context = dataclasses.replace(context, extensions=extensions)

    updated: list[tuple[int, bytes | None]] = []
    for entry in by_type.get(Update, []):
        assert isinstance(entry.proposal, Update)
        assert entry.sender.index is not None
        index = entry.sender.index
        leaf = entry.proposal.leaf_node
        old = tree.leaf_node(index) if index < tree.n_leaves else None
        if old is None:
            raise ValidationError("Update from a blank leaf")
        validate_leaf_node(
            cs,
            leaf,
            expected_source=LeafNodeSource.UPDATE,
            group_id=context.group_id,
            leaf_index=index,
            group_extensions=extensions,
            tree=tree,
        )
        if leaf.encryption_key == old.encryption_key:
            raise ValidationError("Update must change the leaf's encryption key")
        tree = tree.update_leaf(index, leaf)
        updated.append((index, entry.ref))

    removed: list[MemberInfo] = []
    for entry in by_type.get(Remove, []):
        assert isinstance(entry.proposal, Remove)
        index = entry.proposal.removed
        if index >= tree.n_leaves or tree.leaf_node(index) is None:
            raise ValidationError("Remove of a blank or nonexistent leaf")
        removed.append(member_info(tree, index))
        tree = tree.remove_leaf(index)

    others = [e.proposal for e in entries if not isinstance(e.proposal, Add | Remove)]
    check_extensions_supported(tree, extensions, others)

    added: list[tuple[int, KeyPackage, bytes]] = []
    for entry in by_type.get(Add, []):
        assert isinstance(entry.proposal, Add)
        verified = KeyPackageIn(entry.proposal.key_package).verify(
            cs, now, max_lifetime=max_lifetime
        )
        verified.validate_for_group(new_context, tree)
        if verified.reference in used_key_packages:
            raise ValidationError("KeyPackage was already used in this group")
        tree, index = tree.add_leaf(verified.leaf_node)
        added.append((index, verified.key_package, verified.reference))

    psks: list[PreSharedKeyID] = []
    for entry in entries:
        if isinstance(entry.proposal, PreSharedKey):
            check_psk_id(cs, entry.proposal.psk)
            psks.append(entry.proposal.psk)
    external = [e.proposal for e in by_type.get(ExternalInit, [])]
    reinit = [e.proposal for e in by_type.get(ReInit, [])]
    for proposal in reinit:
        assert isinstance(proposal, ReInit)
        if proposal.version < context.version:
            raise ValidationError("ReInit must not lower the protocol version")
    return Applied(
        tree=tree,
        extensions=extensions,
        extensions_changed=bool(gce),
        added=tuple(added),
        removed=tuple(removed),
        updated=tuple(updated),
        psks=tuple(psks),
        external_init=external[0] if external else None,  # type: ignore[arg-type]
        reinit=reinit[0] if reinit else None,  # type: ignore[arg-type]
    )


@dataclass(frozen=True, slots=True, eq=False)
class NextEpoch:
    """The outcome of a commit before it is merged."""

    #: The new epoch's context, or None if this member was removed.
    context: GroupContext | None
    tree: RatchetTree
    private_keys: TreePrivateKeys | None
    #: Full (unscrubbed) secrets of the new epoch, None if removed.
    secrets: EpochSecrets | None = field(repr=False)
    interim_transcript_hash: bytes
    confirmation_tag: bytes
    committer: MemberInfo
    applied: Applied
    #: The number of the epoch the commit starts.
    epoch: int

    def established(self) -> EpochState:
        """The epoch state this member keeps once the commit is merged (secrets scrubbed).

        Raises:
            UsageError: this member was removed by the commit, so it has no new epoch.
        """
        if self.context is None or self.secrets is None or self.private_keys is None:
            raise UsageError("this member has no new epoch: the commit removed it")
        return EpochState(
            self.context,
            self.tree,
            self.private_keys,
            scrub(self.secrets),
            self.interim_transcript_hash,
            self.confirmation_tag,
        )

    def summary_kwargs(self, my_leaf: int | None) -> dict[str, object]:
        """Field values for a :class:`~.events.CommitEvent`."""
        a = self.applied
        tree = self.tree
        added = tuple(member_info(tree, i) for i, _, _ in a.added)
        if a.external_init is not None:
            added = (self.committer, *added)
        return {
            "epoch": self.epoch,
            "committer": self.committer,
            "external": a.external_init is not None,
            "added": added,
            "removed": a.removed,
            "updated": tuple(member_info(tree, i) for i, _ in a.updated),
            "extensions": a.extensions if a.extensions_changed else None,
            "psks": a.psks,
            "reinit": a.reinit,
            "self_removed": self.private_keys is None
            or any(m.leaf_index == my_leaf for m in a.removed),
        }


@dataclass(frozen=True, slots=True, eq=False)
class CommitBase:
    """What a commit builds on: the current epoch as the committer (or external joiner) sees it."""

    context: GroupContext
    tree: RatchetTree
    interim_transcript_hash: bytes
    init_secret: bytes = field(repr=False)
    #: ``member(i)`` or ``new_member_commit``.
    sender: Sender
    #: The member's private keys (None for an external joiner).
    private_keys: TreePrivateKeys | None = None
    #: Leaf template for an external joiner (credential, capabilities, signature key).
    leaf_template: LeafNode | None = None


def _psk_secret(
    cs: CipherSuiteImpl, psks: Sequence[PreSharedKeyID], resolve: PskResolver
) -> bytes | None:
    if not psks:
        return None
    return psk_secret(cs, [(p, resolve(p)) for p in psks])


def _epoch_context(
    base: GroupContext,
    tree: RatchetTree,
    cs: CipherSuiteImpl,
    confirmed: bytes,
    ext: tuple[Extension, ...],
) -> GroupContext:
    return GroupContext(
        base.version,
        base.cipher_suite,
        base.group_id,
        base.epoch + 1,
        tree.tree_hash(cs),
        confirmed,
        ext,
    )


def stage_commit(
    cs: CipherSuiteImpl,
    base: CommitBase,
    content: AuthenticatedContent,
    cache: Mapping[bytes, AuthenticatedContent],
    resolve_psk: PskResolver,
    *,
    external_secret: bytes,
    own_update_keys: Mapping[bytes, HPKEPrivateKey],
    used_key_packages: frozenset[bytes] = frozenset(),
) -> NextEpoch:
    """Process a received, authenticated commit (§12.4.2) without changing anything.

    For member senders the caller has verified signature and membership tag; for an
    external commit this function verifies the signature with the path's leaf key.

    Raises:
        ValidationError, VerificationError: the commit is invalid.
    """
    commit = content.content.content
    if not isinstance(commit, Commit) or content.auth.confirmation_tag is None:
        raise ValidationError("not a commit")
    sender = content.content.sender
    external = sender.sender_type is SenderType.NEW_MEMBER_COMMIT
    if sender.sender_type is SenderType.MEMBER and sender.index == base.sender.index:
        raise UsageError("own commits are merged with merge_pending_commit")
    entries = resolve_proposals(commit.proposals, sender, cache)
    check_proposal_list(entries, sender)
    applied = apply_proposals(
        cs, base.context, base.tree, entries, now=None, used_key_packages=used_key_packages
    )
    if path_required(e.proposal for e in entries) and commit.path is None:
        raise ValidationError("commit lacks a required path")
    tree = applied.tree
    if external:
        if content.wire_format is not WireFormat.PUBLIC_MESSAGE or commit.path is None:
            raise ValidationError("an external commit is a PublicMessage with a path")
        tree, committer = tree.add_blank_leaf()
        verify_framed_content(
            cs,
            commit.path.leaf_node.signature_key,
            content.wire_format,
            content.content,
            base.context,
            content.auth.signature,
        )
        for old in applied.removed:  # resync: the joiner replaces itself
            if old.credential != commit.path.leaf_node.credential:
                raise ValidationError("an external commit may only remove the joiner's old leaf")
    else:
        assert sender.index is not None
        committer = sender.index
    keys = base.private_keys
    assert keys is not None
    me = keys.leaf_index
    removed_me = any(m.leaf_index == me for m in applied.removed)
    if not removed_me:
        for index, ref in applied.updated:
            if index == me:
                key = own_update_keys.get(ref or b"")
                if key is None:
                    raise ValidationError("commit applies an Update of ours we did not send")
                keys = keys.with_leaf_key(key)
        keys = keys.prune(applied.tree)
    commit_secret: bytes | None = None
    if commit.path is not None:
        validate_leaf_node(
            cs,
            commit.path.leaf_node,
            expected_source=LeafNodeSource.COMMIT,
            group_id=base.context.group_id,
            leaf_index=committer,
            group_extensions=applied.extensions,
            tree=tree,
        )
        tree = merge_update_path(cs, tree, committer, commit.path)
        provisional = _epoch_context(
            base.context, tree, cs, base.context.confirmed_transcript_hash, applied.extensions
        )
        if not removed_me:
            processed = decrypt_update_path(
                cs,
                tree,
                committer,
                commit.path,
                provisional,
                keys,
                exclude_leaves=[i for i, _, _ in applied.added],
            )
            keys, commit_secret = processed.private_keys, processed.commit_secret
    info = member_info(tree, committer)
    confirmed = confirmed_transcript_hash(
        cs,
        base.interim_transcript_hash,
        content.wire_format,
        content.content,
        content.auth.signature,
    )
    tag = content.auth.confirmation_tag
    interim = interim_transcript_hash(cs, confirmed, tag)
    context = _epoch_context(base.context, tree, cs, confirmed, applied.extensions)
    psk = _psk_secret(cs, applied.psks, resolve_psk)
    if removed_me:
        return NextEpoch(None, tree, None, None, interim, tag, info, applied, context.epoch)
    init_secret = base.init_secret
    if applied.external_init is not None:
        init_secret = external_init_decap(
            cs, external_key_pair(cs, external_secret), applied.external_init.kem_output
        )
    epoch_secrets = EpochSecrets.derive(cs, init_secret, commit_secret, psk, context.to_bytes())
    epoch_secrets.verify_confirmation_tag(confirmed, tag)
    return NextEpoch(
        context, tree, keys.prune(tree), epoch_secrets, interim, tag, info, applied, context.epoch
    )


@dataclass(frozen=True, slots=True, eq=False)
class CreatedCommit:
    """A commit this member built: its content and the epoch it would start."""

    content: AuthenticatedContent
    next: NextEpoch
    #: The path (for Welcome path secrets), or None.
    prepared: PreparedPath | None = field(repr=False)
    psk_secret: bytes | None = field(repr=False)


def create_commit(
    cs: CipherSuiteImpl,
    base: CommitBase,
    entries: Sequence[ProposalEntry],
    signature_key: SignaturePrivateKey,
    resolve_psk: PskResolver,
    *,
    wire_format: WireFormat,
    with_path: bool,
    now: int | None,
    max_lifetime: int | None = None,
    used_key_packages: frozenset[bytes] = frozenset(),
    authenticated_data: bytes = b"",
) -> CreatedCommit:
    """Build and authenticate a commit (§12.4.1); nothing is changed.

    Raises:
        ValidationError: the proposals are invalid (our own input, so the Group
            reports it as a usage problem where appropriate).
    """
    sender = base.sender
    check_proposal_list(entries, sender)
    applied = apply_proposals(
        cs,
        base.context,
        base.tree,
        entries,
        now=now,
        max_lifetime=max_lifetime,
        used_key_packages=used_key_packages,
    )
    need_path = with_path or path_required(e.proposal for e in entries)
    tree = applied.tree
    keys = base.private_keys
    if sender.sender_type is SenderType.NEW_MEMBER_COMMIT:
        tree, committer = tree.add_blank_leaf()
        need_path = True
    else:
        assert sender.index is not None
        assert keys is not None
        committer = sender.index
        keys = keys.prune(tree)
    prepared: PreparedPath | None = None
    path = None
    commit_secret: bytes | None = None
    if need_path:
        prepared = generate_update_path(
            cs,
            tree,
            committer,
            _random.token_bytes(cs.n_h),
            signature_key,
            base.context.group_id,
            leaf_node=base.leaf_template,
        )
        tree = prepared.tree
        provisional = _epoch_context(
            base.context, tree, cs, base.context.confirmed_transcript_hash, applied.extensions
        )
        path = encrypt_update_path(
            cs, prepared, provisional, exclude_leaves=[i for i, _, _ in applied.added]
        )
        keys, commit_secret = prepared.private_keys, prepared.commit_secret
    assert keys is not None
    proposals = tuple(ProposalRef(e.ref) if e.ref is not None else e.proposal for e in entries)
    framed = FramedContent(
        base.context.group_id,
        base.context.epoch,
        sender,
        authenticated_data,
        Commit(proposals, path),
    )
    signature = sign_framed_content(cs, signature_key, wire_format, framed, base.context)
    confirmed = confirmed_transcript_hash(
        cs, base.interim_transcript_hash, wire_format, framed, signature
    )
    context = _epoch_context(base.context, tree, cs, confirmed, applied.extensions)
    psk = _psk_secret(cs, applied.psks, resolve_psk)
    epoch_secrets = EpochSecrets.derive(
        cs, base.init_secret, commit_secret, psk, context.to_bytes()
    )
    tag = epoch_secrets.confirmation_tag(confirmed)
    content = AuthenticatedContent(wire_format, framed, FramedContentAuthData(signature, tag))
    nxt = NextEpoch(
        context,
        tree,
        keys.prune(tree),
        epoch_secrets,
        interim_transcript_hash(cs, confirmed, tag),
        tag,
        member_info(tree, committer),
        applied,
        context.epoch,
    )
    return CreatedCommit(content, nxt, prepared, psk)
