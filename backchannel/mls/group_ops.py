"""Group internals: sending, receiving and epoch changes on a :class:`GroupState` (RFC 9420 §6, §12).

Every function that can fail on peer input works on copies (the secret tree of the
epoch concerned, new tuples for caches) and assigns them to the state only after
the last check passed, so a rejected message changes nothing. The façade in
:mod:`.group` documents the public behaviour.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from .commit import (
    CommitBase,
    CreatedCommit,
    NextEpoch,
    PskResolver,
    apply_proposals,
    resolve_proposals,
    stage_commit,
)
from .crypto.hpke import HPKEPrivateKey
from .crypto.labels import make_proposal_ref
from .crypto.suites import CipherSuiteImpl
from .errors import DecodeError, UsageError, ValidationError
from .events import (
    ApplicationMessage,
    CommitApplied,
    CommittedProposal,
    Event,
    MemberInfo,
    OwnMessage,
    ProposalReceived,
    StagedCommit,
)
from .extensions import ExtensionType, ExternalSenders, find_extension
from .framing import (
    AuthenticatedContent,
    ContentType,
    FramedContent,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    SenderType,
    WireFormat,
)
from .group_state import (
    CachedProposal,
    EpochState,
    GroupConfig,
    GroupState,
    GroupStatus,
    Operation,
    PastEpoch,
    PendingCommit,
)
from .key_schedule import EpochSecrets
from .messages import (
    Add,
    Commit,
    GroupContext,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    PSKType,
    Update,
)
from .protection import (
    authenticate,
    open_sender_data,
    protect_private_message,
    protect_public_message,
    unprotect_private_message,
    unprotect_public_message,
)
from .secret_tree import SecretTree
from .tree import RatchetTree
from .tree_structs import (
    HPKEPublicKeyBytes,
    LeafNode,
    LeafNodeSource,
)
from .tree_validation import sign_leaf_node
from .validation import ProposalEntry, check_proposal_sender
from .welcome import build_welcome, group_info_extensions, sign_group_info

__all__ = [
    "advance_own",
    "advance_staged",
    "make_pending",
    "process",
    "psk_resolver",
    "public_message",
    "resolver_for",
    "send_private",
    "send_proposal",
    "update_leaf",
]


def psk_resolver(
    external: Mapping[bytes, bytes], group_id: bytes, resumption: Mapping[int, bytes]
) -> PskResolver:
    """A resolver over external PSKs and this group's recent resumption PSKs."""

    def resolve(psk_id: PreSharedKeyID) -> bytes:
        if psk_id.psktype is PSKType.EXTERNAL:
            value = external.get(psk_id.psk_id or b"")
        elif psk_id.psk_group_id == group_id and psk_id.psk_epoch is not None:
            value = resumption.get(psk_id.psk_epoch)
        else:
            value = None
        if value is None:
            raise ValidationError("a pre-shared key the commit needs is not available")
        return value

    return resolve


def resolver_for(state: GroupState) -> PskResolver:
    """The PSK resolver of a group state."""
    return psk_resolver(
        dict(state.external_psks), state.epoch.context.group_id, dict(state.resumption_psks)
    )


# --- sending ------------------------------------------------------------------------------


def public_message(
    cs: CipherSuiteImpl, content: AuthenticatedContent, context: GroupContext, membership_key: bytes
) -> bytes:
    """Frame authenticated content as an encoded PublicMessage MLSMessage."""
    return MLSMessage(protect_public_message(cs, content, context, membership_key)).to_bytes()


def _wire(state: GroupState) -> WireFormat:
    if state.config.encrypt_handshake:
        return WireFormat.PRIVATE_MESSAGE
    return WireFormat.PUBLIC_MESSAGE


def _protect(state: GroupState, content: AuthenticatedContent) -> bytes:
    e = state.epoch
    cs = e.suite
    if content.wire_format is WireFormat.PUBLIC_MESSAGE:
        return public_message(cs, content, e.context, e.secrets.membership_key)
    tree = state.secret_tree.copy()
    message = protect_private_message(
        cs,
        content,
        tree,
        e.secrets.sender_data_secret,
        padding_block=state.config.padding_block,
    )
    state.secret_tree = tree
    return MLSMessage(message).to_bytes()


def _framed(state: GroupState, content: bytes | Proposal | Commit, aad: bytes) -> FramedContent:
    e = state.epoch
    sender = Sender.member(e.private_keys.leaf_index)
    return FramedContent(e.context.group_id, e.context.epoch, sender, aad, content)


def send_private(state: GroupState, data: bytes, aad: bytes) -> bytes:
    """Encrypt application data for the current epoch."""
    e = state.epoch
    content = authenticate(
        e.suite,
        state.signature_key,
        WireFormat.PRIVATE_MESSAGE,
        _framed(state, data, aad),
        e.context,
    )
    return _protect(state, content)


def check_own_proposal(state: GroupState, proposal: Proposal) -> None:
    """Check a proposal this member is about to send as a receiver would."""
    e = state.epoch
    sender = Sender.member(e.private_keys.leaf_index)
    check_proposal_sender(proposal, sender)
    if not isinstance(proposal, Update):
        apply_proposals(
            e.suite,
            e.context,
            e.tree,
            [ProposalEntry(proposal, sender)],
            now=None,
            used_key_packages=frozenset(state.used_key_packages),
        )
    if isinstance(proposal, PreSharedKey):
        resolver_for(state)(proposal.psk)  # the PSK must be available to commit it


def send_proposal(state: GroupState, proposal: Proposal, own_key: HPKEPrivateKey | None) -> bytes:
    """Authenticate, protect and cache an own proposal."""
    e = state.epoch
    content = authenticate(
        e.suite, state.signature_key, _wire(state), _framed(state, proposal, b""), e.context
    )
    ref = make_proposal_ref(e.suite, content.to_bytes())
    message = _protect(state, content)
    state.proposals = (*state.proposals, CachedProposal(content, ref, own_key))
    return message


def update_leaf(state: GroupState) -> tuple[LeafNode, HPKEPrivateKey]:
    """A fresh signed ``update`` leaf for this member, and its private key."""
    e = state.epoch
    me = e.private_keys.leaf_index
    old = e.tree.leaf_node(me)
    assert old is not None
    key = HPKEPrivateKey.generate(e.suite.kem_id)
    leaf = dataclasses.replace(
        old,
        encryption_key=HPKEPublicKeyBytes(key.public_key().to_bytes()),
        leaf_node_source=LeafNodeSource.UPDATE,
        lifetime=None,
        parent_hash=None,
    )
    return sign_leaf_node(e.suite, leaf, state.signature_key, e.context.group_id, me), key


# --- epoch changes ------------------------------------------------------------------------


def _epoch_from(nxt: NextEpoch, config: GroupConfig) -> tuple[EpochState, SecretTree, EpochSecrets]:
    epoch = nxt.established()
    full = nxt.secrets
    assert full is not None  # established() has checked it
    tree = SecretTree(
        full.suite, full.encryption_secret, nxt.tree.n_leaves, config.ratchet_config()
    )
    return epoch, tree, full


def make_pending(state: GroupState, created: CreatedCommit) -> PendingCommit:
    """Protect an own commit and build its Welcome and GroupInfo; nothing is merged.

    Only the own handshake ratchet advances (the commit is sent in this epoch).
    """
    nxt = created.next
    epoch, tree, full = _epoch_from(nxt, state.config)
    cs = full.suite
    me = epoch.private_keys.leaf_index
    tree_ext = nxt.tree if state.config.ratchet_tree_extension else None
    info = sign_group_info(
        cs,
        epoch.context,
        group_info_extensions(cs, tree_ext, full.external_secret),
        nxt.confirmation_tag,
        me,
        state.signature_key,
    )
    welcome = None
    if nxt.applied.added:
        welcome_info = sign_group_info(
            cs,
            epoch.context,
            group_info_extensions(cs, tree_ext, None),
            nxt.confirmation_tag,
            me,
            state.signature_key,
        )
        prepared = created.prepared
        members = [
            (kp, ref, prepared.path_secret_for(i) if prepared is not None else None)
            for i, kp, ref in nxt.applied.added
        ]
        sealed = build_welcome(
            cs, welcome_info, full.joiner_secret, created.psk_secret, nxt.applied.psks, members
        )
        welcome = MLSMessage(sealed).to_bytes()
    summary = CommitApplied(**nxt.summary_kwargs(me))  # type: ignore[arg-type]
    message = _protect(state, created.content)
    return PendingCommit(
        epoch,
        tree,
        summary,
        message,
        welcome,
        MLSMessage(info).to_bytes(),
        tuple(ref for _, _, ref in nxt.applied.added),
    )


def _enter(
    state: GroupState,
    old_tree: SecretTree,
    epoch: EpochState | None,
    tree: SecretTree | None,
    summary: CommitApplied,
    used_refs: tuple[bytes, ...],
) -> None:
    """Move the current epoch to the past store and enter the next (or go inactive)."""
    e = state.epoch
    config = state.config
    past = (*state.past, PastEpoch(e.context, e.tree, e.secrets.sender_data_secret, old_tree))
    state.past = (
        past[max(0, len(past) - config.max_past_epochs) :] if config.max_past_epochs else ()
    )
    state.proposals = ()
    state.pending = None
    if epoch is None or tree is None:
        # Removed: keep the last epoch for reading late messages, but never send again.
        state.status = GroupStatus.REMOVED
        return
    state.epoch = epoch
    state.secret_tree = tree
    psks = (*state.resumption_psks, (epoch.context.epoch, epoch.secrets.resumption_psk))
    state.resumption_psks = psks[-max(1, config.max_resumption_psks) :]
    used = (*state.used_key_packages, *used_refs)
    state.used_key_packages = used[max(0, len(used) - config.max_remembered_key_packages) :]
    if summary.reinit is not None:
        state.status = GroupStatus.CLOSED


def advance_own(state: GroupState, pending: PendingCommit) -> CommitApplied:
    """Merge the pending own commit."""
    summary = pending.summary
    assert isinstance(summary, CommitApplied)
    _enter(
        state,
        state.secret_tree,
        pending.epoch,
        pending.secret_tree,
        summary,
        pending.key_package_refs,
    )
    return summary


@dataclass(frozen=True, slots=True, eq=False)
class _Staged:
    owner: GroupState
    base_epoch: int
    next: NextEpoch


def advance_staged(state: GroupState, staged: StagedCommit) -> CommitApplied:
    """Merge a received commit that :func:`process` staged."""
    data = staged._next
    if not isinstance(data, _Staged) or data.owner is not state:
        raise UsageError("this staged commit belongs to another group")
    if data.base_epoch != state.epoch.context.epoch or not state.allows(Operation.HANDSHAKE):
        raise UsageError("the group has moved on since this commit was staged")
    nxt = data.next
    me = state.epoch.private_keys.leaf_index
    summary = CommitApplied(**nxt.summary_kwargs(me))  # type: ignore[arg-type]
    refs = tuple(ref for _, _, ref in nxt.applied.added)
    if nxt.context is None:
        _enter(state, state.secret_tree, None, None, summary, refs)
    else:
        epoch, tree, _ = _epoch_from(nxt, state.config)
        _enter(state, state.secret_tree, epoch, tree, summary, refs)
    return summary


# --- receiving ----------------------------------------------------------------------------


def _member_key(tree: RatchetTree, index: int) -> bytes:
    if index >= tree.n_leaves:
        raise ValidationError("sender is not a member")
    leaf = tree.leaf_node(index)
    if leaf is None:
        raise ValidationError("sender is not a member")
    return bytes(leaf.signature_key)


def _external_key(context: GroupContext, index: int) -> bytes:
    ext = find_extension(context.extensions, ExtensionType.EXTERNAL_SENDERS)
    if ext is None:
        raise ValidationError("the group has no external senders")
    try:
        senders = ExternalSenders.from_extension(ext).senders
    except DecodeError:
        raise ValidationError("external_senders extension is malformed") from None
    if index >= len(senders):
        raise ValidationError("unknown external sender")
    return senders[index].signature_key


def process(state: GroupState, data: bytes) -> Event:
    """Verify one MLSMessage; see :meth:`Group.process`. Changes nothing on error."""
    msg = MLSMessage.from_bytes(data)
    body = msg.body
    e = state.epoch
    if isinstance(body, PrivateMessage):
        return _process_private(state, body)
    if not isinstance(body, PublicMessage):
        raise ValidationError("only PublicMessage and PrivateMessage belong to a group")
    content = body.content
    if content.group_id != e.context.group_id:
        raise ValidationError("message is for another group")
    if content.epoch != e.context.epoch or not state.allows(Operation.HANDSHAKE):
        raise ValidationError("handshake message is not for the current epoch")
    sender = content.sender
    cs = e.suite
    if sender.sender_type is SenderType.MEMBER:
        assert sender.index is not None
        if sender.index == e.private_keys.leaf_index:
            return OwnMessage(content.epoch, content.content_type)
        key = _member_key(e.tree, sender.index)
    elif sender.sender_type is SenderType.EXTERNAL:
        assert sender.index is not None
        key = _external_key(e.context, sender.index)
    elif sender.sender_type is SenderType.NEW_MEMBER_PROPOSAL:
        if not isinstance(content.content, Add):
            raise ValidationError("a new member may only propose its own Add")
        key = bytes(content.content.key_package.leaf_node.signature_key)
    else:
        if not isinstance(content.content, Commit):
            raise ValidationError("a new_member_commit sender must send a commit")
        auth = AuthenticatedContent(WireFormat.PUBLIC_MESSAGE, content, body.auth)
        return _stage(state, auth)
    auth = unprotect_public_message(cs, body, e.context, e.secrets.membership_key, key)
    return _dispatch(state, auth, state.secret_tree)


def _process_private(state: GroupState, message: PrivateMessage) -> Event:
    e = state.epoch
    if message.group_id != e.context.group_id:
        raise ValidationError("message is for another group")
    if message.epoch == e.context.epoch and state.allows(Operation.HANDSHAKE):
        context, tree, sds, secret_tree = (
            e.context,
            e.tree,
            e.secrets.sender_data_secret,
            state.secret_tree,
        )
        past = None
    else:
        found = [p for p in state.past if p.context.epoch == message.epoch]
        if not found:
            raise ValidationError("message is for an epoch this member does not hold")
        past = found[0]
        if message.content_type is not ContentType.APPLICATION:
            raise ValidationError("handshake message is not for the current epoch")
        context, tree, sds, secret_tree = (
            past.context,
            past.tree,
            past.sender_data_secret,
            past.secret_tree,
        )
    cs = e.suite
    if message.group_id != context.group_id or message.epoch != context.epoch:
        raise ValidationError("message is for another group or epoch")
    sender_data = open_sender_data(cs, message, sds)
    if sender_data.leaf_index == e.private_keys.leaf_index and past is None:
        return OwnMessage(message.epoch, message.content_type)
    work = secret_tree.copy()
    auth = unprotect_private_message(
        cs, message, context, work, sds, lambda i: _member_key(tree, i), sender_data
    )
    if past is not None:
        assert auth.content.sender.index is not None
        event = _application(auth, tree, sender_data.generation)
        state.past = tuple(
            dataclasses.replace(p, secret_tree=work) if p is past else p for p in state.past
        )
        return event
    return _dispatch(state, auth, work, sender_data.generation)


def _application(
    auth: AuthenticatedContent, tree: RatchetTree, generation: int = 0
) -> ApplicationMessage:
    framed = auth.content
    assert isinstance(framed.content, bytes)
    assert framed.sender.index is not None
    leaf = tree.leaf_node(framed.sender.index)
    assert leaf is not None
    sender = MemberInfo(framed.sender.index, leaf.credential, bytes(leaf.signature_key))
    return ApplicationMessage(
        framed.epoch, sender, framed.content, framed.authenticated_data, generation
    )


def _dispatch(
    state: GroupState, auth: AuthenticatedContent, work: SecretTree, generation: int = 0
) -> Event:
    content = auth.content.content
    if isinstance(content, bytes):
        event: Event = _application(auth, state.epoch.tree, generation)
        state.secret_tree = work
        return event
    if isinstance(content, Commit):
        return _stage(state, auth)
    return _receive_proposal(state, auth, content, work)


def _receive_proposal(
    state: GroupState, auth: AuthenticatedContent, proposal: Proposal, work: SecretTree
) -> ProposalReceived:
    e = state.epoch
    cs = e.suite
    sender = auth.content.sender
    check_proposal_sender(proposal, sender)
    ref = make_proposal_ref(cs, auth.to_bytes())
    if any(c.ref == ref for c in state.proposals):
        raise ValidationError("proposal was already received")
    apply_proposals(cs, e.context, e.tree, [ProposalEntry(proposal, sender)], now=None)
    member = None
    if sender.sender_type is SenderType.MEMBER:
        assert sender.index is not None
        leaf = e.tree.leaf_node(sender.index)
        assert leaf is not None
        member = MemberInfo(sender.index, leaf.credential, bytes(leaf.signature_key))
    state.proposals = (*state.proposals, CachedProposal(auth, ref))
    state.secret_tree = work
    return ProposalReceived(e.context.epoch, sender, member, proposal, ref)


def _stage(state: GroupState, auth: AuthenticatedContent) -> StagedCommit:
    # The commit's own handshake key is not consumed: once the epoch ends, its
    # handshake ratchet is never used again (past epochs take application data only).
    e = state.epoch
    me = e.private_keys.leaf_index
    base = CommitBase(
        e.context,
        e.tree,
        e.interim_transcript_hash,
        e.secrets.init_secret,
        Sender.member(me),
        e.private_keys,
    )
    cache = {c.ref: c.content for c in state.proposals}
    own_keys = {c.ref: c.own_leaf_key for c in state.proposals if c.own_leaf_key is not None}
    nxt = stage_commit(
        e.suite,
        base,
        auth,
        cache,
        resolver_for(state),
        external_secret=e.secrets.external_secret,
        own_update_keys=own_keys,
        used_key_packages=frozenset(state.used_key_packages),
    )
    kwargs = nxt.summary_kwargs(me)
    commit = auth.content.content
    assert isinstance(commit, Commit)
    proposals: list[CommittedProposal] = []
    for entry in resolve_proposals(commit.proposals, auth.content.sender, cache):
        member: MemberInfo | None = None
        index = entry.sender.index
        if entry.sender.sender_type is SenderType.MEMBER and index is not None:
            leaf = e.tree.leaf_node(index)
            if leaf is not None:
                member = MemberInfo(index, leaf.credential, bytes(leaf.signature_key))
        proposals.append(
            CommittedProposal(entry.sender, member, entry.proposal, entry.ref is not None)
        )
    return StagedCommit(
        **kwargs,  # type: ignore[arg-type]
        base_epoch=e.context.epoch,
        proposals=tuple(proposals),
        with_path=commit.path is not None,
        _next=_Staged(state, e.context.epoch, nxt),
    )
