"""A member's whole group state as values, and its byte encoding (RFC 9420 §8, §9, §12).

Theory of operation: :class:`EpochState` is the immutable part of one epoch (context,
tree, private keys, secrets, transcript hash); the secret tree is the only mutable
piece, and the :class:`~backchannel.mls.group.Group` always works on a copy and swaps
it in on success, so a rejected message leaves every byte of :class:`GroupState` as it
was. Past epochs keep only what reading a late application message needs.

Secrets that are used once are scrubbed before an epoch is stored: the joiner, welcome
and epoch secrets are only needed while the commit is built, and the encryption secret
lives on only inside the secret tree (§9.2), so none of them is ever serialised.

The encoding is the TLS presentation language via :mod:`.codec` (``mls/`` depends on
nothing outside the standard library and ``cryptography``), behind a version byte.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import IntEnum

from .codec import Reader, Writer
from .credentials import Credential
from .crypto.hpke import HPKEPrivateKey
from .crypto.signatures import SignaturePrivateKey
from .crypto.suites import CipherSuiteImpl, get_cipher_suite
from .errors import DecodeError, MLSError
from .events import CommitEvent, MemberInfo
from .extensions import Extension
from .framing import AuthenticatedContent
from .key_schedule import EpochSecrets
from .messages import GroupContext, PreSharedKeyID, ReInit
from .secret_tree import SecretTree, SenderRatchetConfiguration
from .tree import RatchetTree
from .treekem import NodeKeyPair, TreePrivateKeys

__all__ = [
    "ALLOWED",
    "CachedProposal",
    "EpochState",
    "GroupConfig",
    "GroupState",
    "GroupStatus",
    "Operation",
    "PastEpoch",
    "PendingCommit",
    "decode_group_state",
    "encode_group_state",
    "initial_state",
    "scrub",
]

_FORMAT_VERSION = 1
_DAY = 86_400


class GroupStatus(IntEnum):
    """Where a member stands in the group's life.

    Rules (``_ALLOWED`` below is the table Group checks)::

        ACTIVE   -- own or received commit merged ------------------> ACTIVE
        ACTIVE   -- merged commit removes this member --------------> REMOVED
        ACTIVE   -- merged commit carries a ReInit -----------------> CLOSED
        REMOVED, CLOSED: terminal; only late application messages of
                         epochs still held can be read.

    A pending own commit is not a status: it is a fact of an ACTIVE group
    (``GroupState.pending``), dropped whenever any commit is merged.
    """

    ACTIVE = 1
    REMOVED = 2
    CLOSED = 3


class Operation(IntEnum):
    """What a caller or a peer's message asks a group to do."""

    SEND = 1  # encrypt, propose, commit
    HANDSHAKE = 2  # process proposals and commits of the current epoch
    READ = 3  # read application messages


#: Which operations each status allows.
ALLOWED: dict[GroupStatus, frozenset[Operation]] = {
    GroupStatus.ACTIVE: frozenset(Operation),
    GroupStatus.REMOVED: frozenset({Operation.READ}),
    GroupStatus.CLOSED: frozenset({Operation.READ}),
}


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Local policy of one member; defaults suit a small-group messenger.

    Nothing here changes the wire protocol; members may differ.
    """

    #: Send proposals and commits as PrivateMessage (hides who changes the group
    #: from the relay). External commits are always PublicMessage (§12.4.3.2).
    encrypt_handshake: bool = True
    #: Pad each PrivateMessage plaintext to a multiple of this many bytes (§6.3).
    padding_block: int = 64
    #: How many past epochs keep their keys for late application messages.
    max_past_epochs: int = 3
    #: Out-of-order generations kept per sender ratchet (§9.4).
    out_of_order_tolerance: int = 32
    #: Largest jump ahead in a sender ratchet accepted (§9.4).
    maximum_forward_distance: int = 1000
    #: Put the ``ratchet_tree`` extension into Welcome GroupInfos and exported GroupInfos.
    ratchet_tree_extension: bool = True
    #: Longest KeyPackage lifetime accepted in an Add (§7.2, seconds).
    max_key_package_lifetime: int = 90 * _DAY
    #: How many KeyPackage references are remembered to reject their reuse.
    max_remembered_key_packages: int = 4096
    #: How many epochs' resumption PSKs are kept (§8.6).
    max_resumption_psks: int = 8
    #: Commits always carry a path (post-compromise security for the committer) even
    #: when only Adds or PSKs are committed.
    always_commit_path: bool = True

    def __post_init__(self) -> None:
        values = (
            self.padding_block,
            self.max_past_epochs,
            self.out_of_order_tolerance,
            self.maximum_forward_distance,
            self.max_key_package_lifetime,
            self.max_remembered_key_packages,
            self.max_resumption_psks,
        )
        if any(v < 0 for v in values) or self.padding_block > 0xFFFF:
            raise ValueError("GroupConfig values must be non-negative (padding_block < 65536)")

    def ratchet_config(self) -> SenderRatchetConfiguration:
        """The secret-tree bounds this config asks for."""
        return SenderRatchetConfiguration(
            self.out_of_order_tolerance, self.maximum_forward_distance
        )

    def encode(self, w: Writer) -> None:
        w.boolean(self.encrypt_handshake).uint16(self.padding_block)
        w.uint32(self.max_past_epochs).uint32(self.out_of_order_tolerance)
        w.uint32(self.maximum_forward_distance).boolean(self.ratchet_tree_extension)
        w.uint64(self.max_key_package_lifetime).uint32(self.max_remembered_key_packages)
        w.uint32(self.max_resumption_psks).boolean(self.always_commit_path)

    @classmethod
    def decode(cls, r: Reader) -> GroupConfig:
        return cls(
            r.boolean(),
            r.uint16(),
            r.uint32(),
            r.uint32(),
            r.uint32(),
            r.boolean(),
            r.uint64(),
            r.uint32(),
            r.uint32(),
            r.boolean(),
        )


def scrub(secrets: EpochSecrets) -> EpochSecrets:
    """Drop the secrets an established epoch no longer needs (§8, §9.2)."""
    return dataclasses.replace(
        secrets, joiner_secret=b"", welcome_secret=b"", epoch_secret=b"", encryption_secret=b""
    )


@dataclass(frozen=True, slots=True, eq=False)
class EpochState:
    """The immutable part of the current epoch."""

    #: The GroupContext of the epoch.
    context: GroupContext
    #: The public ratchet tree.
    tree: RatchetTree
    #: This member's private tree keys.
    private_keys: TreePrivateKeys
    #: The epoch's secrets (scrubbed, see :func:`scrub`).
    secrets: EpochSecrets
    #: ``interim_transcript_hash`` after the commit that started the epoch.
    interim_transcript_hash: bytes
    #: That commit's confirmation tag (goes into GroupInfo).
    confirmation_tag: bytes

    def __repr__(self) -> str:
        return f"EpochState(epoch={self.context.epoch}, tree={self.tree!r})"

    @property
    def suite(self) -> CipherSuiteImpl:
        """The group's ciphersuite."""
        return self.secrets.suite


@dataclass(frozen=True, slots=True, eq=False)
class PastEpoch:
    """What is kept of a past epoch to read late application messages."""

    #: The epoch's GroupContext (signatures cover it).
    context: GroupContext
    #: The epoch's tree (sender signature keys and credentials).
    tree: RatchetTree
    #: Sender data secret of the epoch.
    sender_data_secret: bytes = field(repr=False)
    #: The epoch's secret tree (the Group swaps in a copy after each message).
    secret_tree: SecretTree = field(repr=False)


@dataclass(frozen=True, slots=True, eq=False)
class CachedProposal:
    """A proposal of the current epoch, kept until the next commit (§12.4)."""

    #: The proposal as it was authenticated.
    content: AuthenticatedContent
    #: Its ``ProposalRef``.
    ref: bytes
    #: For this member's own Update: the new leaf private key.
    own_leaf_key: HPKEPrivateKey | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, eq=False)
class PendingCommit:
    """An own commit waiting for the delivery service's verdict."""

    #: The epoch the commit would start.
    epoch: EpochState
    #: Its secret tree.
    secret_tree: SecretTree = field(repr=False)
    #: What the commit does.
    summary: CommitEvent
    #: The MLSMessage carrying the commit.
    commit: bytes
    #: The Welcome for added members, if any.
    welcome: bytes | None
    #: A signed GroupInfo for the new epoch.
    group_info: bytes
    #: References of the KeyPackages the commit adds.
    key_package_refs: tuple[bytes, ...] = ()


@dataclass(slots=True, eq=False)
class GroupState:
    """Everything one member keeps for a group. Only :class:`Group` changes it."""

    config: GroupConfig
    signature_key: SignaturePrivateKey = field(repr=False)
    epoch: EpochState
    secret_tree: SecretTree = field(repr=False)
    #: Oldest first; at most ``config.max_past_epochs``.
    past: tuple[PastEpoch, ...] = ()
    proposals: tuple[CachedProposal, ...] = ()
    #: ``(epoch, resumption_psk)`` of this group's recent epochs (§8.6).
    resumption_psks: tuple[tuple[int, bytes], ...] = field(default=(), repr=False)
    #: External PSKs this member holds, by ``psk_id``.
    external_psks: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)
    #: References of KeyPackages already added to this group (reuse is refused).
    used_key_packages: tuple[bytes, ...] = ()
    #: Life-cycle status (see :class:`GroupStatus`).
    status: GroupStatus = GroupStatus.ACTIVE
    pending: PendingCommit | None = None

    def allows(self, operation: Operation) -> bool:
        """True if the current status allows ``operation``."""
        return operation in ALLOWED[self.status]


def initial_state(
    config: GroupConfig,
    signature_key: SignaturePrivateKey,
    epoch: EpochState,
    secrets: EpochSecrets,
) -> GroupState:
    """The state of a member entering ``epoch`` (full ``secrets`` seed the secret tree)."""
    tree = SecretTree(
        secrets.suite, secrets.encryption_secret, epoch.tree.n_leaves, config.ratchet_config()
    )
    return GroupState(
        config=config,
        signature_key=signature_key,
        epoch=epoch,
        secret_tree=tree,
        resumption_psks=((epoch.context.epoch, secrets.resumption_psk),),
    )


# --- encoding ---------------------------------------------------------------------------


def _encode_secrets(w: Writer, s: EpochSecrets) -> None:
    for value in (
        s.joiner_secret,
        s.welcome_secret,
        s.epoch_secret,
        s.sender_data_secret,
        s.encryption_secret,
        s.exporter_secret,
        s.external_secret,
        s.confirmation_key,
        s.membership_key,
        s.resumption_psk,
        s.epoch_authenticator,
        s.init_secret,
    ):
        w.opaque(value)


def _decode_secrets(cs: CipherSuiteImpl, r: Reader) -> EpochSecrets:
    return EpochSecrets(cs, *(r.opaque() for _ in range(12)))


def _encode_keys(w: Writer, keys: TreePrivateKeys) -> None:
    w.uint32(keys.leaf_index)
    w.vector(
        sorted(keys.keys.items()),
        lambda w2, kv: w2.uint32(kv[0]).opaque(kv[1].private_key.to_bytes()),
    )


def _decode_keys(cs: CipherSuiteImpl, r: Reader) -> TreePrivateKeys:
    leaf_index = r.uint32()
    items = r.vector(lambda r2: (r2.uint32(), r2.opaque()))
    pairs = {
        x: NodeKeyPair.from_private(HPKEPrivateKey.from_bytes(cs.kem_id, data)) for x, data in items
    }
    return TreePrivateKeys(leaf_index, pairs)


def _encode_epoch(w: Writer, e: EpochState) -> None:
    w.struct(e.context).opaque(e.tree.to_bytes())
    _encode_keys(w, e.private_keys)
    _encode_secrets(w, e.secrets)
    w.opaque(e.interim_transcript_hash).opaque(e.confirmation_tag)


def _decode_epoch(r: Reader) -> EpochState:
    context = GroupContext.decode(r)
    cs = get_cipher_suite(context.cipher_suite)
    tree = RatchetTree.from_bytes(r.opaque())
    keys = _decode_keys(cs, r)
    secrets = _decode_secrets(cs, r)
    return EpochState(context, tree, keys, secrets, r.opaque(), r.opaque())


def _encode_member(w: Writer, m: MemberInfo) -> None:
    w.uint32(m.leaf_index).struct(m.credential).opaque(m.signature_key)


def _decode_member(r: Reader) -> MemberInfo:
    return MemberInfo(r.uint32(), Credential.decode(r), r.opaque())


def _encode_summary(w: Writer, s: CommitEvent) -> None:
    w.uint64(s.epoch)
    _encode_member(w, s.committer)
    w.boolean(s.external)
    for group in (s.added, s.removed, s.updated):
        w.vector(group, _encode_member)
    w.optional(s.extensions, lambda w2, e: w2.struct_vector(e))
    w.struct_vector(s.psks).optional(s.reinit, lambda w2, p: w2.opaque(p.body_bytes()))
    w.boolean(s.self_removed)


def _decode_summary(r: Reader) -> CommitEvent:
    from .events import CommitApplied

    return CommitApplied(
        epoch=r.uint64(),
        committer=_decode_member(r),
        external=r.boolean(),
        added=r.vector(_decode_member),
        removed=r.vector(_decode_member),
        updated=r.vector(_decode_member),
        extensions=r.optional(lambda r2: r2.vector(Extension.decode)),
        psks=r.vector(PreSharedKeyID.decode),
        reinit=r.optional(lambda r2: ReInit.from_body_bytes(r2.opaque())),
        self_removed=r.boolean(),
    )


def encode_group_state(state: GroupState) -> bytes:
    """Serialise a whole group state (secret keys included: store it encrypted)."""
    w = Writer().uint8(_FORMAT_VERSION)
    state.config.encode(w)
    w.opaque(state.signature_key.to_bytes())
    _encode_epoch(w, state.epoch)
    state.secret_tree.encode(w)

    def past(w2: Writer, p: PastEpoch) -> None:
        w2.struct(p.context).opaque(p.tree.to_bytes()).opaque(p.sender_data_secret)
        p.secret_tree.encode(w2)

    def proposal(w2: Writer, p: CachedProposal) -> None:
        w2.struct(p.content).optional(p.own_leaf_key, lambda w3, k: w3.opaque(k.to_bytes()))

    def pending(w2: Writer, p: PendingCommit) -> None:
        _encode_epoch(w2, p.epoch)
        p.secret_tree.encode(w2)
        _encode_summary(w2, p.summary)
        w2.opaque(p.commit).optional(p.welcome, Writer.opaque).opaque(p.group_info)
        w2.vector(p.key_package_refs, Writer.opaque)

    w.vector(state.past, past).vector(state.proposals, proposal)
    w.vector(state.resumption_psks, lambda w2, kv: w2.uint64(kv[0]).opaque(kv[1]))
    w.vector(state.external_psks, lambda w2, kv: w2.opaque(kv[0]).opaque(kv[1]))
    w.vector(state.used_key_packages, Writer.opaque).uint8(state.status)
    w.optional(state.pending, pending)
    return w.to_bytes()


def decode_group_state(data: bytes) -> GroupState:
    """Read a state written by :func:`encode_group_state`.

    Raises:
        DecodeError: the bytes are not a group state of a known format version.
    """
    try:
        return _decode_group_state(data)
    except DecodeError:
        raise
    except (MLSError, ValueError):
        raise DecodeError("group state is malformed") from None


def _decode_group_state(data: bytes) -> GroupState:
    from .crypto.labels import make_proposal_ref

    r = Reader(data)
    if r.uint8() != _FORMAT_VERSION:
        raise DecodeError("unknown group state format version")
    config = GroupConfig.decode(r)
    signature_bytes = r.opaque()
    epoch = _decode_epoch(r)
    cs = epoch.suite
    ratchets = config.ratchet_config()
    secret_tree = SecretTree.decode(cs, r, ratchets)

    def past(r2: Reader) -> PastEpoch:
        context = GroupContext.decode(r2)
        tree = RatchetTree.from_bytes(r2.opaque())
        return PastEpoch(context, tree, r2.opaque(), SecretTree.decode(cs, r2, ratchets))

    def proposal(r2: Reader) -> CachedProposal:
        content = AuthenticatedContent.decode(r2)
        key = r2.optional(lambda r3: HPKEPrivateKey.from_bytes(cs.kem_id, r3.opaque()))
        return CachedProposal(content, make_proposal_ref(cs, content.to_bytes()), key)

    def pending(r2: Reader) -> PendingCommit:
        next_epoch = _decode_epoch(r2)
        tree = SecretTree.decode(cs, r2, ratchets)
        summary = _decode_summary(r2)
        return PendingCommit(
            next_epoch,
            tree,
            summary,
            r2.opaque(),
            r2.optional(Reader.opaque),
            r2.opaque(),
            r2.vector(Reader.opaque),
        )

    state = GroupState(
        config=config,
        signature_key=SignaturePrivateKey.from_bytes(cs.signature_scheme, signature_bytes),
        epoch=epoch,
        secret_tree=secret_tree,
        past=r.vector(past),
        proposals=r.vector(proposal),
        resumption_psks=r.vector(lambda r2: (r2.uint64(), r2.opaque())),
        external_psks=r.vector(lambda r2: (r2.opaque(), r2.opaque())),
        used_key_packages=r.vector(Reader.opaque),
        status=r.enum8(GroupStatus),
        pending=r.optional(pending),
    )
    r.finish()
    return state
