"""The Group: one member's view of an MLS group, sans-IO (RFC 9420 §11, §12).

Every method returns the bytes to send (MLSMessages) and never sends anything;
time is passed in as seconds since the Unix epoch. A commit, own or received, is
staged first and becomes the new epoch only when the caller says so:

* own: :meth:`Group.commit` returns a :class:`CommitResult` and keeps a *pending
  commit*; call :meth:`Group.merge_pending_commit` once the delivery service
  accepted it, or :meth:`Group.discard_pending_commit` if another commit won;
* received: :meth:`Group.process` returns a :class:`~.events.StagedCommit`; the
  caller may veto it (room policy) or pass it to :meth:`Group.merge_staged_commit`.

Every error a peer can cause raises a :class:`~.errors.MLSError` subclass and leaves
the state byte-for-byte unchanged (``to_bytes()`` before equals after).

Example::

    alice = Group.create(suite, BasicCredential(b"alice"), alice_sig, now=now)
    bob_kp = Group.make_key_package(suite, BasicCredential(b"bob"), bob_sig, now=now)
    result = alice.commit(add=[bob_kp.key_package.to_bytes()], now=now)
    alice.merge_pending_commit()                    # the relay accepted result.commit
    bob = Group.join(result.welcome, bob_kp, now=now)
    event = bob.process(alice.encrypt(b"hello"))    # ApplicationMessage(data=b"hello")
"""

from __future__ import annotations

import secrets as _random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from . import group_ops as _ops
from .commit import CommitBase, create_commit
from .credentials import Credential
from .crypto.hpke import HPKEPrivateKey
from .crypto.signatures import SignaturePrivateKey
from .crypto.suites import CipherSuiteImpl, get_cipher_suite
from .errors import UsageError, ValidationError
from .events import CommitApplied, Event, MemberInfo, StagedCommit
from .extensions import Extension
from .framing import MLSMessage, Sender, WireFormat
from .group_state import (
    EpochState,
    GroupConfig,
    GroupState,
    GroupStatus,
    Operation,
    decode_group_state,
    encode_group_state,
    initial_state,
    scrub,
)
from .key_package_ops import (
    KeyPackageBundle,
    KeyPackageIn,
    VerifiedKeyPackage,
    generate_key_package,
)
from .key_packages import KeyPackage
from .key_schedule import EpochSecrets
from .messages import (
    Add,
    GroupContext,
    GroupContextExtensions,
    GroupInfo,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ReInit,
    Remove,
    Update,
    Welcome,
)
from .transcript import interim_transcript_hash
from .tree import RatchetTree
from .tree_structs import Capabilities, Lifetime
from .treekem import TreePrivateKeys
from .validation import (
    ProposalEntry,
    check_extensions_supported,
    path_required,
    select_proposals,
)
from .welcome import (
    group_info_extensions,
    join_by_external_commit,
    open_welcome,
    sign_group_info,
)

__all__ = ["CommitResult", "Group", "GroupConfig", "GroupStatus"]

#: Default KeyPackage lifetime: valid from a minute ago for 30 days.
_DEFAULT_LIFETIME = 30 * 86_400


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What :meth:`Group.commit` produces; all values are encoded MLSMessages except the tree."""

    #: The commit to send to the group.
    commit: bytes
    #: The Welcome for new members, or None if nobody was added.
    welcome: bytes | None
    #: A signed GroupInfo of the new epoch (with ``external_pub``), for external joins.
    group_info: bytes
    #: The new epoch's ratchet tree, for joiners when it is not in the Welcome.
    ratchet_tree: bytes = field(repr=False)


class Group:
    """One member's state of one MLS group. See the module docstring for the flow."""

    __slots__ = ("_state", "_welcome_signer")

    def __init__(self, state: GroupState) -> None:
        """Internal: use :meth:`create`, :meth:`join`, :meth:`join_external` or :meth:`from_bytes`."""
        self._state = state
        self._welcome_signer: int | None = None

    def __repr__(self) -> str:
        ctx = self._state.epoch.context
        return (
            f"Group(epoch={ctx.epoch}, members={len(self.members())}, leaf={self.own_leaf_index})"
        )

    # --- creating and joining ---------------------------------------------------------

    @staticmethod
    def make_key_package(
        suite: int,
        credential: Credential,
        signature_key: SignaturePrivateKey,
        *,
        now: int,
        lifetime: int = _DEFAULT_LIFETIME,
        capabilities: Capabilities | None = None,
    ) -> KeyPackageBundle:
        """A fresh KeyPackage and its private keys (§10); publish ``bundle.key_package.to_bytes()``.

        Use each KeyPackage for one group only; groups refuse a KeyPackage they have seen.
        """
        return generate_key_package(
            suite,
            credential,
            signature_key,
            Lifetime(max(0, now - 60), now + lifetime),
            capabilities=capabilities,
        )

    @classmethod
    def create(
        cls,
        suite: int,
        credential: Credential,
        signature_key: SignaturePrivateKey,
        *,
        now: int,
        group_id: bytes | None = None,
        extensions: Sequence[Extension] = (),
        capabilities: Capabilities | None = None,
        config: GroupConfig | None = None,
    ) -> Group:
        """A new one-member group in epoch 0 (§11).

        Example::

            group = Group.create(CipherSuite(1), BasicCredential(b"alice"), key, now=now)
        """
        cs = get_cipher_suite(suite)
        config = config or GroupConfig()
        bundle = cls.make_key_package(
            suite, credential, signature_key, now=now, capabilities=capabilities
        )
        tree = RatchetTree.create(bundle.key_package.leaf_node)
        context = GroupContext(
            1,
            cs.suite,
            group_id if group_id is not None else _random.token_bytes(16),
            0,
            tree.tree_hash(cs),
            b"",
            tuple(extensions),
        )
        check_extensions_supported(tree, context.extensions)
        secrets = EpochSecrets.derive(
            cs, _random.token_bytes(cs.n_h), None, None, context.to_bytes()
        )
        tag = secrets.confirmation_tag(b"")
        epoch = EpochState(
            context,
            tree,
            TreePrivateKeys.create(0, bundle.encryption_private_key),
            scrub(secrets),
            interim_transcript_hash(cs, b"", tag),
            tag,
        )
        return cls(initial_state(config, signature_key, epoch, secrets))

    @classmethod
    def join(
        cls,
        welcome: bytes,
        bundle: KeyPackageBundle,
        *,
        now: int | None = None,
        ratchet_tree: bytes | None = None,
        psks: Mapping[bytes, bytes] | None = None,
        config: GroupConfig | None = None,
    ) -> Group:
        """Join from a Welcome made for ``bundle``'s KeyPackage (§12.4.3.1).

        Args:
            welcome: the encoded MLSMessage carrying the Welcome.
            bundle: the KeyPackage it adds, with its private keys (use it once).
            now: for leaf lifetimes in the tree (None skips that check).
            ratchet_tree: the encoded tree if the Welcome does not carry it.
            psks: external PSKs by ``psk_id`` that the Welcome may name.

        Raises:
            DecodeError, ValidationError, VerificationError: the Welcome is bad or not ours.
        """
        msg = MLSMessage.from_bytes(welcome)
        if not isinstance(msg.body, Welcome):
            raise ValidationError("message is not a Welcome")
        external = dict(psks or {})
        tree = RatchetTree.from_bytes(ratchet_tree) if ratchet_tree is not None else None
        joined = open_welcome(
            msg.body, bundle, _ops.psk_resolver(external, b"", {}), ratchet_tree=tree, now=now
        )
        epoch = EpochState(
            joined.context,
            joined.tree,
            joined.private_keys,
            scrub(joined.secrets),
            joined.interim_transcript_hash,
            joined.confirmation_tag,
        )
        state = initial_state(
            config or GroupConfig(), bundle.signature_private_key, epoch, joined.secrets
        )
        state.external_psks = tuple(sorted(external.items()))
        group = cls(state)
        group._welcome_signer = joined.signer
        return group

    @classmethod
    def join_external(
        cls,
        group_info: bytes,
        credential: Credential,
        signature_key: SignaturePrivateKey,
        *,
        now: int | None = None,
        ratchet_tree: bytes | None = None,
        capabilities: Capabilities | None = None,
        resync_leaf: int | None = None,
        psks: Mapping[bytes, bytes] | None = None,
        config: GroupConfig | None = None,
        authenticated_data: bytes = b"",
    ) -> tuple[Group, bytes]:
        """Join by external commit using a published GroupInfo (§12.4.3.2).

        Returns the group, already in the new epoch, and the commit to send. If the
        delivery service refuses the commit (another commit won the epoch), drop
        the group and try again with a fresh GroupInfo.

        Args:
            resync_leaf: this client's old leaf to remove (resync), if any.
        """
        msg = MLSMessage.from_bytes(group_info)
        if not isinstance(msg.body, GroupInfo):
            raise ValidationError("message is not a GroupInfo")
        state, message = join_by_external_commit(
            msg.body,
            credential,
            signature_key,
            config or GroupConfig(),
            now=now,
            ratchet_tree=RatchetTree.from_bytes(ratchet_tree) if ratchet_tree is not None else None,
            capabilities=capabilities,
            resync_leaf=resync_leaf,
            psks=dict(psks or {}),
            authenticated_data=authenticated_data,
        )
        return cls(state), message

    # --- reading the state ------------------------------------------------------------

    @property
    def _cs(self) -> CipherSuiteImpl:
        return self._state.epoch.suite

    @property
    def group_id(self) -> bytes:
        """The group's id."""
        return self._state.epoch.context.group_id

    @property
    def epoch(self) -> int:
        """The current epoch number."""
        return self._state.epoch.context.epoch

    @property
    def cipher_suite(self) -> int:
        """The ciphersuite code."""
        return self._state.epoch.context.cipher_suite

    @property
    def group_context(self) -> GroupContext:
        """The current GroupContext."""
        return self._state.epoch.context

    @property
    def extensions(self) -> tuple[Extension, ...]:
        """The current GroupContext extensions."""
        return self._state.epoch.context.extensions

    @property
    def own_leaf_index(self) -> int:
        """This member's leaf index."""
        return self._state.epoch.private_keys.leaf_index

    @property
    def active(self) -> bool:
        """False once this member was removed or the group was reinitialised."""
        return self._state.status is GroupStatus.ACTIVE

    @property
    def status(self) -> GroupStatus:
        """The life-cycle status (active, removed, or closed by a ReInit)."""
        return self._state.status

    @property
    def epoch_authenticator(self) -> bytes:
        """The epoch authenticator (§8.7): equal for all members iff they agree on the epoch."""
        return self._state.epoch.secrets.epoch_authenticator

    @property
    def welcome_signer(self) -> MemberInfo | None:
        """Who signed the GroupInfo of the Welcome this group was joined from (the inviter).

        Set only on the object :meth:`join` returns (not saved by :meth:`to_bytes`).
        """
        index = self._welcome_signer
        if index is None:
            return None
        leaf = self._state.epoch.tree.leaf_node(index)
        if leaf is None:
            return None
        return MemberInfo(index, leaf.credential, bytes(leaf.signature_key))

    @property
    def pending_commit(self) -> CommitResult | None:
        """The own commit waiting for the delivery service, if any."""
        p = self._state.pending
        if p is None:
            return None
        return CommitResult(p.commit, p.welcome, p.group_info, p.epoch.tree.to_bytes())

    def members(self) -> list[MemberInfo]:
        """The current members, by leaf index."""
        return [
            MemberInfo(i, leaf.credential, bytes(leaf.signature_key))
            for i, leaf in self._state.epoch.tree.members()
        ]

    def ratchet_tree(self) -> bytes:
        """The encoded ratchet tree of the current epoch (for Welcomes without the tree)."""
        return self._state.epoch.tree.to_bytes()

    def export_secret(self, label: str | bytes, context: bytes, length: int) -> bytes:
        """MLS-Exporter(label, context, length) of the current epoch (§8.5)."""
        return self._state.epoch.secrets.exporter(label, context, length)

    def add_external_psk(self, psk_id: bytes, psk: bytes) -> None:
        """Make an external PSK available for commits that name it (§8.4)."""
        items = dict(self._state.external_psks)
        items[psk_id] = psk
        self._state.external_psks = tuple(sorted(items.items()))

    def group_info(self, *, with_tree: bool | None = None, external_pub: bool = True) -> bytes:
        """A signed GroupInfo of the current epoch, for external joins (§12.4.3)."""
        e = self._state.epoch
        include = self._state.config.ratchet_tree_extension if with_tree is None else with_tree
        exts = group_info_extensions(
            self._cs,
            e.tree if include else None,
            e.secrets.external_secret if external_pub else None,
        )
        info = sign_group_info(
            self._cs,
            e.context,
            exts,
            e.confirmation_tag,
            self.own_leaf_index,
            self._state.signature_key,
        )
        return MLSMessage(info).to_bytes()

    # --- serialisation ----------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole state, private keys included: store it only encrypted."""
        return encode_group_state(self._state)

    @classmethod
    def from_bytes(cls, data: bytes) -> Group:
        """Restore a group saved with :meth:`to_bytes`.

        Raises:
            DecodeError: the bytes are not a saved group state.
        """
        return cls(decode_group_state(data))

    # --- sending ----------------------------------------------------------------------

    def _check_active(self) -> None:
        if not self._state.allows(Operation.SEND):
            raise UsageError("this member can no longer send to the group")

    def encrypt(self, data: bytes, *, authenticated_data: bytes = b"") -> bytes:
        """Encrypt application data as a padded PrivateMessage for the current epoch (§6.3).

        Example::

            wire = group.encrypt(b"hello")      # send wire to the group
        """
        self._check_active()
        return _ops.send_private(self._state, data, authenticated_data)

    def _propose(self, proposal: Proposal, own_key: HPKEPrivateKey | None = None) -> bytes:
        self._check_active()
        _ops.check_own_proposal(self._state, proposal)
        return _ops.send_proposal(self._state, proposal, own_key)

    def propose_add(self, key_package: bytes | KeyPackage, *, now: int | None = None) -> bytes:
        """Propose adding the owner of ``key_package`` (§12.1.1); commit it later."""
        kp = _key_package(key_package)
        return self._propose(Add(kp))

    def propose_remove(self, leaf_index: int) -> bytes:
        """Propose removing the member at ``leaf_index`` (§12.1.3)."""
        return self._propose(Remove(leaf_index))

    def propose_update(self) -> bytes:
        """Propose a fresh leaf key for this member (§12.1.2); another member commits it."""
        leaf, key = _ops.update_leaf(self._state)
        return self._propose(Update(leaf), key)

    def propose_psk(self, psk_id: bytes) -> bytes:
        """Propose injecting the external PSK ``psk_id`` (§12.1.4); it must be known here."""
        pid = PreSharedKeyID.external(psk_id, _random.token_bytes(self._cs.n_h))
        return self._propose(PreSharedKey(pid))

    def propose_group_context_extensions(self, extensions: Sequence[Extension]) -> bytes:
        """Propose replacing the GroupContext extensions (§12.1.7)."""
        return self._propose(GroupContextExtensions(tuple(extensions)))

    def propose_reinit(
        self, group_id: bytes, cipher_suite: int, extensions: Sequence[Extension] = ()
    ) -> bytes:
        """Propose closing this group to restart it with new parameters (§12.1.5)."""
        return self._propose(ReInit(group_id, 1, cipher_suite, tuple(extensions)))

    def commit(
        self,
        *,
        add: Iterable[bytes | KeyPackage] = (),
        remove: Iterable[int] = (),
        psks: Iterable[bytes] = (),
        extensions: Sequence[Extension] | None = None,
        reinit: ReInit | None = None,
        include_proposals: bool = True,
        path: bool | None = None,
        now: int | None = None,
        authenticated_data: bytes = b"",
    ) -> CommitResult:
        """Commit inline proposals plus (by default) every proposal received this epoch.

        With no arguments and no pending proposals this is an empty, full commit:
        a self-update that refreshes this member's path (§12.4). The commit is
        kept as the *pending commit*; nothing changes until
        :meth:`merge_pending_commit`.

        Args:
            add: KeyPackages (encoded or decoded) to add.
            remove: leaf indices to remove.
            psks: external PSK ids to inject (the PSKs must be known here).
            extensions: new GroupContext extensions.
            reinit: a ReInit to commit (alone).
            include_proposals: also commit proposals received by reference.
            path: force a path on or off (off only when no proposal requires one);
                by default ``GroupConfig.always_commit_path``.
            now: for KeyPackage lifetimes.

        Raises:
            UsageError: a commit is already pending, or the group is inactive.
            ValidationError, VerificationError: a KeyPackage or proposal is invalid.

        Example::

            result = group.commit(add=[kp_bytes], remove=[3], now=now)
            relay.send(result.commit); relay.send_welcome(result.welcome)
            group.merge_pending_commit()      # after the relay accepted it
        """
        self._check_active()
        state = self._state
        if state.pending is not None:
            raise UsageError("a commit is already pending; merge or discard it first")
        cs = self._cs
        me = Sender.member(self.own_leaf_index)
        inline: list[Proposal] = [Add(_key_package(kp)) for kp in add]
        inline += [Remove(i) for i in remove]
        inline += [
            PreSharedKey(PreSharedKeyID.external(p, _random.token_bytes(cs.n_h))) for p in psks
        ]
        if extensions is not None:
            inline.append(GroupContextExtensions(tuple(extensions)))
        if reinit is not None:
            inline.append(reinit)
        cached = (
            [
                ProposalEntry(c.content.content.content, c.content.content.sender, c.ref)  # type: ignore[arg-type]
                for c in state.proposals
            ]
            if include_proposals
            else []
        )
        entries = select_proposals(cached, me) + [ProposalEntry(p, me) for p in inline]
        e = state.epoch
        if path is False and path_required(entry.proposal for entry in entries):
            raise UsageError("these proposals need a commit with a path")
        with_path = state.config.always_commit_path if path is None else path
        wire = (
            WireFormat.PRIVATE_MESSAGE
            if state.config.encrypt_handshake
            else WireFormat.PUBLIC_MESSAGE
        )
        created = create_commit(
            cs,
            CommitBase(
                e.context,
                e.tree,
                e.interim_transcript_hash,
                e.secrets.init_secret,
                me,
                e.private_keys,
            ),
            entries,
            state.signature_key,
            _ops.resolver_for(state),
            wire_format=wire,
            with_path=with_path,
            now=now,
            max_lifetime=state.config.max_key_package_lifetime,
            used_key_packages=frozenset(state.used_key_packages),
            authenticated_data=authenticated_data,
        )
        pending = _ops.make_pending(state, created)
        state.pending = pending
        return CommitResult(
            pending.commit, pending.welcome, pending.group_info, pending.epoch.tree.to_bytes()
        )

    def merge_pending_commit(self) -> CommitApplied:
        """Make the pending own commit the new epoch (the delivery service accepted it)."""
        pending = self._state.pending
        if pending is None:
            raise UsageError("no commit is pending")
        return _ops.advance_own(self._state, pending)

    def discard_pending_commit(self) -> None:
        """Forget the pending own commit (another commit won the epoch)."""
        self._state.pending = None

    # --- receiving --------------------------------------------------------------------

    def process(self, message: bytes) -> Event:
        """Verify and decrypt one message from the group; returns what it was.

        Returns an :class:`~.events.ApplicationMessage`, a
        :class:`~.events.ProposalReceived` (stored for the next commit), a
        :class:`~.events.StagedCommit` (apply with :meth:`merge_staged_commit`), or
        :class:`~.events.OwnMessage` for an echo of this member's own message.

        Raises:
            DecodeError, ValidationError, VerificationError: the message is rejected;
                the state is unchanged.

        Example::

            event = group.process(wire)
            if isinstance(event, StagedCommit) and policy_allows(event):
                group.merge_staged_commit(event)
        """
        return _ops.process(self._state, message)

    def merge_staged_commit(self, staged: StagedCommit) -> CommitApplied:
        """Apply a commit returned by :meth:`process`; a pending own commit is discarded.

        Raises:
            UsageError: the staged commit is from another group or epoch.
        """
        return _ops.advance_staged(self._state, staged)


def _key_package(value: bytes | KeyPackage | VerifiedKeyPackage) -> KeyPackage:
    """A KeyPackage from its encoding (``VerifiedKeyPackage.to_bytes()``) or an object."""
    if isinstance(value, VerifiedKeyPackage):
        return value.key_package
    if isinstance(value, KeyPackage):
        return value
    return KeyPackageIn.from_bytes(value).key_package
