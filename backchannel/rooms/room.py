"""A dialogue room: one member's MLS group plus the room policy, sans-IO.

Theory of operation: :class:`Room` wraps a :class:`backchannel.mls.Group` whose
GroupContext carries the signed room policy (extension ``0xFBC1``, listed in
``required_capabilities`` so only policy-enforcing clients can join). Methods
return bytes to send and lists of :mod:`~.events`; nothing here does I/O or
reads a clock (``now`` is Unix seconds, passed in).

*Stage, then merge.* A received commit is staged by MLS, mapped proposal by
proposal onto :class:`~.policy.ProposedChange` values (with each proposer's
identity) and checked with :func:`~.policy.evaluate_commit`. A commit that breaks
the policy is not merged: the state stays byte-for-byte unchanged and the caller
gets :class:`~.events.CommitRejected`. Every member reaches the same verdict.

Own changes (:meth:`Room.add_members`, :meth:`Room.remove_members`,
:meth:`Room.change_policy`, :meth:`Room.self_update`,
:meth:`Room.commit_proposals`) are checked locally first and become a pending
commit for epoch :attr:`Room.epoch`; the caller offers it to the relay (which
accepts one commit per epoch) and calls :meth:`Room.confirm_pending` or
:meth:`Room.discard_pending` with the outcome.

Application content: observers' content is dropped, and so is a second message
with the same ``(sender, id)`` within the window of seen ids (:data:`SEEN_WINDOW`,
bounded). An edit, delete or file chunk names the sender's *own* message: it is
passed on with its sender, and the caller applies it to ``(sender, target)`` only
(docs/room-protocol.md §5 "Message identity"), which can reach nobody else's
message whatever id it names. That is not judged here from the window of seen
ids: the window is bounded and shared, so another member could flood it to make
the sender's own old messages uneditable, and a change may arrive before the
message it changes.

Example::

    kp = Room.key_package(suite, BasicCredential(b"bob"), bob_key, now=now)
    out = alice.add_members([kp.key_package.to_bytes()], now=now)
    alice.confirm_pending()                        # the relay accepted out.commit
    bob = Room.join(out.welcome, kp, now=now)
    wire = bob.send(Text(new_message_id(), now * 1000, "hello"), now=now)
    events = alice.receive(wire, now=now)          # [MessageReceived(...)]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from backchannel.mls.credentials import BasicCredential
from backchannel.mls.crypto.signatures import SignaturePrivateKey
from backchannel.mls.errors import MLSError
from backchannel.mls.events import (
    ApplicationMessage,
    MemberInfo,
    OwnMessage,
    ProposalReceived,
    StagedCommit,
)
from backchannel.mls.extensions import (
    Extension,
    ExtensionType,
)
from backchannel.mls.framing import MLSMessage, PrivateMessage
from backchannel.mls.group import Group
from backchannel.mls.key_package_ops import (
    KeyPackageBundle,
    KeyPackageIn,
)

from .content import Content, decode_content, encode_content
from .errors import (
    ContentDecodeError,
    MessageRejected,
    PolicyDecodeError,
    PolicyViolation,
    RoomDecodeError,
    RoomStateError,
)
from .events import (
    CommitRejected,
    ContentDropped,
    EpochAhead,
    ForkDetected,
    MembersChanged,
    MessageReceived,
    MessagesMissing,
    PolicyChanged,
    ProposalQueued,
    RemovedFromRoom,
    RoomEvent,
)
from .mls_mapping import (
    committer_identity,
    identity_of,
    keeps_required_capabilities,
    proposal_change,
    require_identity,
    required_capabilities,
    room_capabilities,
    staged_changes,
)
from .policy import (
    ROOM_POLICY_EXTENSION_TYPE,
    AddMember,
    ChangePolicy,
    JoinApproval,
    ProposedChange,
    Reinit,
    RemoveMember,
    Role,
    RoomPolicy,
    UpdateMember,
    check_inviter,
    check_post,
    evaluate_commit,
    may_post,
    policy_extension,
    policy_from_extensions,
)
from .state import decode_room_state, encode_room_state
from .watch import RoomWatch, fork_check

__all__ = ["SEEN_WINDOW", "OutgoingCommit", "Room", "RoomMember", "message_epoch"]

#: How many ``(sender, message id)`` pairs a room remembers for dedupe and same-sender rules.
SEEN_WINDOW: Final = 8192


def message_epoch(data: bytes) -> int | None:
    """The epoch in an MLS PrivateMessage's header (None for anything else)."""
    try:
        body = MLSMessage.from_bytes(data).body
    except MLSError:
        return None
    return body.epoch if isinstance(body, PrivateMessage) else None


@dataclass(frozen=True, slots=True)
class OutgoingCommit:
    """An own commit waiting for the relay; offer ``commit`` for epoch ``epoch``."""

    #: The epoch the commit is for (the relay's compare-and-set value).
    epoch: int
    #: The commit, to append to the room's mailbox.
    commit: bytes = field(repr=False)
    #: The Welcome for added members (it carries the ratchet tree), or None.
    welcome: bytes | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class RoomMember:
    """A member of the room as the current epoch's tree and policy say."""

    #: The member id (MLS credential identity).
    member_id: bytes
    #: The member's role under the current policy.
    role: Role
    #: The member's leaf index (not an identity: reused after removals).
    leaf_index: int
    #: The member's signature public key, for safety numbers.
    signature_key: bytes


class Room:
    """One member's view of one dialogue room. See the module docstring for the flow."""

    __slots__ = ("_group", "_policy", "_proposals", "_seen", "_watch")

    def __init__(
        self,
        group: Group,
        seen: Iterable[tuple[bytes, bytes]] = (),
        proposals: Iterable[ProposedChange] = (),
        watch: RoomWatch | None = None,
    ) -> None:
        """Internal: use :meth:`create`, :meth:`join` or :meth:`from_bytes`."""
        self._group = group
        self._watch = watch if watch is not None else RoomWatch()
        try:
            self._policy = policy_from_extensions(group.extensions)
        except PolicyDecodeError:
            raise PolicyViolation("The group carries no valid room policy.") from None
        #: Insertion-ordered ``(sender, message id)`` window.
        self._seen: dict[tuple[bytes, bytes], None] = dict.fromkeys(seen)
        #: Proposals received (or sent) in the current epoch, as the policy sees them.
        self._proposals: list[ProposedChange] = list(proposals)

    def __repr__(self) -> str:
        return f"Room(epoch={self.epoch}, members={len(self._group.members())})"

    # --- creating and joining ---------------------------------------------------------

    @staticmethod
    def key_package(
        suite: int,
        credential: BasicCredential,
        signature_key: SignaturePrivateKey,
        *,
        now: int,
    ) -> KeyPackageBundle:
        """A KeyPackage that rooms accept (it lists the policy extension); publish it once."""
        return Group.make_key_package(
            suite,
            credential,
            signature_key,
            now=now,
            capabilities=room_capabilities(suite),
        )

    @classmethod
    def create(
        cls,
        suite: int,
        credential: BasicCredential,
        signature_key: SignaturePrivateKey,
        *,
        title: str,
        now: int,
        approval: JoinApproval = JoinApproval.MANUAL,
        retention_seconds: int = 0,
        chatham_house: bool = False,
        default_role: Role = Role.PARTICIPANT,
    ) -> Room:
        """A new room with its creator as the only member and facilitator (epoch 0).

        Raises:
            PolicyViolation: the credential is not a usable identity.
            ValueError, TypeError: the title or a rule cannot be encoded.
        """
        me = require_identity(credential)
        policy = RoomPolicy.create(
            title,
            [me],
            default_role=default_role,
            approval=approval,
            retention_seconds=retention_seconds,
            chatham_house=chatham_house,
        )
        group = Group.create(
            suite,
            credential,
            signature_key,
            now=now,
            extensions=[required_capabilities(), policy_extension(policy)],
            capabilities=room_capabilities(suite),
        )
        room = cls(group)
        room._watch.enter_epoch(group.epoch, group.epoch_authenticator)
        return room

    @classmethod
    def join(
        cls,
        welcome: bytes,
        bundle: KeyPackageBundle,
        *,
        now: int,
        ratchet_tree: bytes | None = None,
        expected_inviter: bytes | None = None,
    ) -> Room:
        """Join from a Welcome made for ``bundle`` (from :meth:`key_package`).

        Checks that the room carries a valid policy and requires it of every member,
        that the Welcome's GroupInfo was signed by a facilitator of that policy, and,
        if ``expected_inviter`` is given (e.g. from the invite), that it was that member.

        Raises:
            MessageRejected: the Welcome is not valid MLS for this key package.
            PolicyViolation: valid MLS, but not a room this client may join.
        """
        try:
            group = Group.join(welcome, bundle, now=now, ratchet_tree=ratchet_tree)
        except MLSError as exc:
            raise MessageRejected(f"The invitation could not be opened: {exc}") from None
        if not keeps_required_capabilities(group.extensions):
            raise PolicyViolation("The group does not require the room policy of its members.")
        identities = [identity_of(m.credential) for m in group.members()]
        if None in identities or len(set(identities)) != len(identities):
            # Members are told apart by identity alone (messages, roles, verification).
            raise PolicyViolation("The invitation's room has two members with one identity.")
        room = cls(group)
        signer = group.welcome_signer
        inviter = None if signer is None else identity_of(signer.credential)
        if inviter is None:
            raise PolicyViolation("The invitation's signer is not a room member.")
        check_inviter(room._policy, inviter)
        if expected_inviter is not None and inviter != expected_inviter:
            raise PolicyViolation("The invitation was signed by someone other than the inviter.")
        room._watch.enter_epoch(group.epoch, group.epoch_authenticator)
        return room

    # --- reading the state ------------------------------------------------------------

    @property
    def policy(self) -> RoomPolicy:
        """The policy of the current epoch."""
        return self._policy

    @property
    def epoch(self) -> int:
        """The current epoch: own commits are offered to the relay for this epoch."""
        return self._group.epoch

    @property
    def group_id(self) -> bytes:
        """The MLS group id."""
        return self._group.group_id

    @property
    def member_id(self) -> bytes:
        """This member's id."""
        return self._member_ids()[self._group.own_leaf_index]

    @property
    def active(self) -> bool:
        """False once this member was removed."""
        return self._group.active

    @property
    def pending(self) -> OutgoingCommit | None:
        """The own commit waiting for the relay's verdict, if any."""
        p = self._group.pending_commit
        return None if p is None else OutgoingCommit(self.epoch, p.commit, p.welcome)

    def epoch_authenticator(self) -> bytes:
        """Equal for all members iff they agree on the epoch (compare out of band)."""
        return self._group.epoch_authenticator

    def export_secret(self, label: str, context: bytes, length: int) -> bytes:
        """MLS-Exporter of the current epoch (e.g. for :func:`~.access.derive_access`)."""
        return self._group.export_secret(label, context, length)

    def members(self) -> list[RoomMember]:
        """The current members with their roles, by leaf index."""
        out = []
        for m in self._group.members():
            identity = identity_of(m.credential)
            if identity is not None:
                role = self._policy.role_of(identity)
                out.append(RoomMember(identity, role, m.leaf_index, m.signature_key))
        return out

    def _member_ids(self) -> dict[int, bytes]:
        return {m.leaf_index: identity_of(m.credential) or b"" for m in self._group.members()}

    def _leaf_of(self, member_id: bytes) -> int | None:
        for leaf, identity in self._member_ids().items():
            if identity == member_id:
                return leaf
        return None

    # --- own commits ------------------------------------------------------------------

    def _check_can_commit(self) -> None:
        if not self._group.active:
            raise RoomStateError("You are no longer a member of this room.")
        if self._group.pending_commit is not None:
            raise RoomStateError(
                "A change is already waiting for the relay; confirm or discard it."
            )

    def _cached_changes(self) -> list[ProposedChange]:
        """Queued proposals a commit of ours would include (as MLS selects them)."""
        me = self.member_id
        return [
            c
            for c in self._proposals
            if not (isinstance(c, RemoveMember) and c.member == me)
            and not (isinstance(c, UpdateMember) and c.member == me)
            and not isinstance(c, Reinit)
        ]

    def _commit(
        self,
        inline: list[ProposedChange],
        *,
        now: int,
        add: Sequence[bytes] = (),
        remove: Sequence[int] = (),
        policy: RoomPolicy | None = None,
        proposals_only: bool = False,
    ) -> OutgoingCommit:
        """Check and make an own commit: ``inline`` changes, queued proposals if allowed.

        ``policy`` is the new policy the commit sets (None: unchanged). A facilitator's
        commit that changes membership or the policy also drops the role entries of
        everyone not staying in the tree (members it removes, members whose leave it
        commits, members who left before) and of the members it adds: roles belong to
        members present in the tree (docs/room-protocol.md §3, rule 6).
        """
        self._check_can_commit()
        me = self.member_id
        members = set(self._member_ids().values())
        cached = self._cached_changes()
        include = bool(cached)
        while True:
            queued = cached if include else []
            new_policy = self._tidy(policy, members, [*queued, *inline])
            changes = [*queued, *inline]
            if new_policy is not None:
                changes.append(ChangePolicy(me, policy_extension(new_policy).extension_data))
            changes.append(UpdateMember(me))
            try:
                evaluate_commit(self._policy, committer=me, members=members, changes=changes)
            except PolicyViolation:
                if not include or proposals_only:
                    raise
                include = False  # leave out queued proposals the rules refuse
                continue
            break
        extensions = None if new_policy is None else self._extensions_with(new_policy)
        try:
            result = self._group.commit(
                add=add,
                remove=remove,
                extensions=extensions,
                include_proposals=include,
                path=True,
                now=now,
            )
        except MLSError as exc:
            raise PolicyViolation(f"MLS refused the change: {exc}") from None
        return OutgoingCommit(self.epoch, result.commit, result.welcome)

    def _tidy(
        self,
        policy: RoomPolicy | None,
        members: set[bytes],
        changes: Sequence[ProposedChange],
    ) -> RoomPolicy | None:
        """The policy an own commit of ``changes`` sets (None: it sets none).

        A facilitator's commit that adds or removes anyone, or sets a policy anyway,
        drops every role entry whose member is not staying in the tree: removed,
        leaving, gone before, or being added (a newcomer starts with the default role,
        and a re-admitted member's old entry could otherwise not be told from a claim).
        """
        if self._policy.role_of(self.member_id) is not Role.FACILITATOR:
            return policy
        membership = any(isinstance(c, AddMember | RemoveMember) for c in changes)
        if policy is None and not membership:
            return None
        removed = {c.member for c in changes if isinstance(c, RemoveMember)}
        staying = members - removed
        base = self._policy if policy is None else policy
        kept = tuple((m, r) for m, r in base.roles if m in staying)
        if len(kept) != len(base.roles):
            with contextlib.suppress(ValueError):  # no facilitator would stay: refused anyway
                base = replace(base, roles=kept)
        if policy is None and base == self._policy:
            return None
        return base

    def add_members(self, key_packages: Sequence[bytes], *, now: int) -> OutgoingCommit:
        """Commit adding the owners of ``key_packages`` (facilitators only).

        A role entry an added identity still has (from a former membership) is
        dropped in the same commit: the newcomer starts with the default role.

        Raises:
            PolicyViolation: not a facilitator, an identity already present, or a
                KeyPackage MLS refuses (e.g. one that does not support the policy).
            RoomStateError: a commit is pending, or this member left.
        """
        me = self.member_id
        inline: list[ProposedChange] = []
        for kp in key_packages:
            try:
                credential = KeyPackageIn.from_bytes(kp).key_package.leaf_node.credential
            except MLSError:
                raise PolicyViolation("A key package is malformed.") from None
            inline.append(AddMember(me, require_identity(credential)))
        return self._commit(inline, now=now, add=list(key_packages))

    def remove_members(self, member_ids: Iterable[bytes], *, now: int) -> OutgoingCommit:
        """Commit removing members (facilitators only); their role entries are dropped too."""
        me = self.member_id
        leaves: list[int] = []
        inline: list[ProposedChange] = []
        for member in member_ids:
            leaf = self._leaf_of(member)
            if leaf is None:
                raise PolicyViolation("The commit removes someone who is not a member.")
            leaves.append(leaf)
            inline.append(RemoveMember(me, member))
        return self._commit(inline, now=now, remove=leaves)

    def change_policy(self, new_policy: RoomPolicy, *, now: int) -> OutgoingCommit:
        """Commit a new policy (facilitators only).

        Roles are given to members only: an entry for someone not in the room that the
        current policy does not have is refused (a newcomer could claim it by naming
        that id). Entries former members left behind are dropped in the same commit.

        Raises:
            PolicyViolation: not a facilitator, a role for a non-member, or the rules
                refuse the change (e.g. no facilitator would be left).
            RoomStateError: a commit is pending, or this member left.
        """
        members = set(self._member_ids().values())
        listed = {m for m, _ in self._policy.roles}
        if any(m not in members and m not in listed for m, _ in new_policy.roles):
            raise PolicyViolation(
                "Roles are given to members of the room only: add them first, then "
                "give them a role."
            )
        return self._commit([], now=now, policy=new_policy)

    def self_update(self, *, now: int) -> OutgoingCommit:
        """Commit a fresh path for this member (post-compromise security); any member may."""
        return self._commit([], now=now)

    def commit_proposals(self, *, now: int) -> OutgoingCommit:
        """Commit the proposals queued this epoch (e.g. members leaving), if the policy allows them.

        A facilitator's commit of a leave drops the leaver's role entry in the same commit.

        Raises:
            PolicyViolation: a queued proposal is not allowed (e.g. a participant's Add).
            RoomStateError: no proposal is waiting.
        """
        if not self._cached_changes():
            raise RoomStateError("No proposals are waiting to be committed.")
        return self._commit([], now=now, proposals_only=True)

    @property
    def proposals_waiting(self) -> bool:
        """Whether proposals of others (e.g. a member's leave) wait for a commit this epoch."""
        return bool(self._cached_changes())

    @property
    def leaving(self) -> bool:
        """Whether this member's leave proposal is queued in the current epoch.

        A commit that lands before a leave is committed ends the epoch it was made
        for; the leave is then gone, and the member must propose it again.
        """
        if not self._group.active:
            return False
        me = self.member_id
        return any(isinstance(c, RemoveMember) and c.member == me for c in self._proposals)

    def leave(self) -> bytes:
        """A proposal to remove this member; another member (a facilitator) commits it.

        Raises:
            PolicyViolation: this member is the room's last facilitator; nobody could
                commit the leave (a room always keeps a facilitator), so nothing is
                proposed. Make another member a facilitator first.
            RoomStateError: this member is no longer in the room, or its leave is
                already waiting in this epoch.
        """
        if not self._group.active:
            raise RoomStateError("You are no longer a member of this room.")
        if self.leaving:
            raise RoomStateError(
                "You have already asked to leave this room; a facilitator's client lets "
                "you go when it next reads the room."
            )
        me = self.member_id
        others = [m for m in self.members() if m.member_id != me]
        if not others:
            raise PolicyViolation(
                "You are the only member of this room, so nobody could let you go."
            )
        if self._policy.role_of(me) is Role.FACILITATOR and not any(
            m.role is Role.FACILITATOR for m in others
        ):
            raise PolicyViolation(
                "You are the last facilitator of this room, so nobody could let you go: "
                "make another member a facilitator first, then leave."
            )
        wire = self._group.propose_remove(self._group.own_leaf_index)
        self._proposals.append(RemoveMember(me, me))
        return wire

    def _extensions_with(self, policy: RoomPolicy) -> list[Extension]:
        others = [
            e
            for e in self._group.extensions
            if e.extension_type != ROOM_POLICY_EXTENSION_TYPE
            and e.extension_type != ExtensionType.REQUIRED_CAPABILITIES
        ]
        return [required_capabilities(), *others, policy_extension(policy)]

    def confirm_pending(self) -> list[RoomEvent]:
        """The relay accepted the pending commit: make it the new epoch."""
        if self._group.pending_commit is None:
            raise RoomStateError("No change is waiting for the relay.")
        old = self._policy
        applied = self._group.merge_pending_commit()
        return self._after_merge(old, applied.epoch, self.member_id, applied.added, applied.removed)

    def discard_pending(self) -> None:
        """The relay refused the pending commit (another won the epoch): forget it.

        Does nothing if the winning commit was already received (which drops it).
        """
        self._group.discard_pending_commit()

    # --- application content ----------------------------------------------------------

    def send(self, content: Content, *, now: int) -> bytes:
        """Encrypt ``content`` (padded; its id and sender time travel inside) for the room.

        Raises:
            PolicyViolation: observers cannot post.
            RoomStateError: this member left.
        """
        if not self._group.active:
            raise RoomStateError("You are no longer a member of this room.")
        me = self.member_id
        check_post(self._policy, me)
        reason = self._content_rule(me, content)
        if reason is not None:
            raise PolicyViolation(reason)
        try:
            wire = self._group.encrypt(
                encode_content(content),
                authenticated_data=fork_check(self._group.epoch_authenticator),
            )
        except MLSError as exc:
            raise RoomStateError(f"The message could not be encrypted: {exc}") from None
        self._remember(me, content.message_id)
        return wire

    def _content_rule(self, sender: bytes, content: Content) -> str | None:
        if (sender, content.message_id) in self._seen:
            return "A message with this id was already received from this sender."
        return None

    def _remember(self, sender: bytes, message_id: bytes) -> None:
        self._seen[(sender, message_id)] = None
        while len(self._seen) > SEEN_WINDOW:
            del self._seen[next(iter(self._seen))]

    # --- receiving --------------------------------------------------------------------

    def receive(self, data: bytes, *, now: int) -> list[RoomEvent]:
        """Process one message from the room's mailbox; returns what happened.

        Raises:
            MessageRejected: MLS refused the message (state unchanged): forged,
                replayed, from an epoch this member does not have, or after leaving.
        """
        try:
            event = self._group.process(data)
        except MLSError as exc:
            warning = self._evidence(data)
            if warning is not None:
                return [warning]  # the state is unchanged; the caller warns the user
            raise MessageRejected(f"The message was rejected: {exc}") from None
        if isinstance(event, ApplicationMessage):
            out: list[RoomEvent] = []
            if self._watch.forked(event.epoch, event.authenticated_data):
                out.append(ForkDetected(event.epoch))
            missing = self._watch.observe(event.epoch, event.sender.leaf_index, event.generation)
            if missing:
                sender = identity_of(event.sender.credential) or b""
                out.append(MessagesMissing(event.epoch, sender, missing))
            return [*out, self._application(event, now)]
        if isinstance(event, StagedCommit):
            return self._staged(event)
        if isinstance(event, ProposalReceived):
            proposer = (
                identity_of(event.sender_member.credential)
                if event.sender_member is not None
                else None
            )
            change = proposal_change(event.proposal, proposer or b"", self._member_ids())
            self._proposals.append(change)
            return [ProposalQueued(event.epoch, proposer or b"", change)]
        if isinstance(event, OwnMessage):
            return []
        return []  # pragma: no cover - Group.process returns only the types above

    def _evidence(self, data: bytes) -> RoomEvent | None:
        """Why an undecryptable message of this room matters, if it does (§13)."""
        try:
            message = MLSMessage.from_bytes(data).body
        except MLSError:
            return None
        if not isinstance(message, PrivateMessage) or message.group_id != self.group_id:
            return None
        if self._watch.forked(message.epoch, message.authenticated_data):
            return ForkDetected(message.epoch)
        if message.epoch > self.epoch and self._group.active:
            return EpochAhead(message.epoch, self.epoch)
        return None

    def _application(self, event: ApplicationMessage, now: int) -> RoomEvent:
        sender = identity_of(event.sender.credential) or b""
        if not may_post(self._policy, sender):
            return ContentDropped(sender, "Observers cannot post in this room.")
        try:
            content = decode_content(event.data)
        except ContentDecodeError:
            return ContentDropped(sender, "The message is not valid room content.")
        reason = self._content_rule(sender, content)
        if reason is not None:
            return ContentDropped(sender, reason)
        self._remember(sender, content.message_id)
        return MessageReceived(sender, content, content.sent_at_ms, now * 1000, event.epoch)

    def _staged(self, staged: StagedCommit) -> list[RoomEvent]:
        before = self._member_ids()
        committer = committer_identity(staged, before)
        changes = staged_changes(staged, before)
        try:
            evaluate_commit(
                self._policy,
                committer=committer,
                members=set(before.values()),
                changes=changes,
            )
            if staged.extensions is not None and not keeps_required_capabilities(staged.extensions):
                raise PolicyViolation("A commit may not drop the room's required capabilities.")
        except PolicyViolation as exc:
            return [CommitRejected(staged.base_epoch, committer, str(exc))]
        old = self._policy
        try:
            applied = self._group.merge_staged_commit(staged)
        except MLSError as exc:
            raise MessageRejected(f"The commit could not be applied: {exc}") from None
        events = self._after_merge(old, applied.epoch, committer, applied.added, applied.removed)
        if applied.self_removed:
            events.append(RemovedFromRoom(applied.epoch, committer))
        return events

    def _after_merge(
        self,
        old: RoomPolicy,
        epoch: int,
        committer: bytes,
        added: Sequence[MemberInfo],
        removed: Sequence[MemberInfo],
    ) -> list[RoomEvent]:
        self._proposals = []
        events: list[RoomEvent] = []
        if self._group.active:
            self._policy = policy_from_extensions(self._group.extensions)
            self._watch.enter_epoch(self._group.epoch, self._group.epoch_authenticator)
        if added or removed:
            events.append(
                MembersChanged(
                    epoch,
                    committer,
                    tuple(identity_of(m.credential) or b"" for m in added),
                    tuple(identity_of(m.credential) or b"" for m in removed),
                )
            )
        if self._policy != old:
            events.append(PolicyChanged(epoch, committer, old, self._policy))
        return events

    # --- saving -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole room state, private keys included: store it only encrypted."""
        return encode_room_state(
            self._group.to_bytes(), list(self._seen), self._proposals, self._watch.to_wire()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Room:
        """Restore a room saved with :meth:`to_bytes`.

        Raises:
            RoomDecodeError: the bytes are not a saved room.
        """
        group_bytes, seen, proposals, watch_wire = decode_room_state(data)
        watch = None if watch_wire is None else RoomWatch.from_wire(watch_wire)
        try:
            group = Group.from_bytes(group_bytes)
        except MLSError:
            raise RoomDecodeError("saved room: the MLS state is corrupt") from None
        try:
            return cls(group, seen, proposals, watch)
        except PolicyViolation:
            raise RoomDecodeError("saved room: no valid room policy") from None
