"""The room policy (a GroupContext extension) and the rules every member checks every commit by.

Theory of operation: a room's policy (title, roles, join approval, retention, Chatham
House mode) is carried in the MLS GroupContext as the private-use extension
:data:`ROOM_POLICY_EXTENSION_TYPE`, so it is agreed by the key schedule and changes
only through a signed GroupContextExtensions commit. MLS says who signed a commit;
it does not say who was *allowed* to (RFC 9420 §16.11, RFC 9750 "Access Control").
That is this module's job: before a staged commit is merged, the client maps its
proposals onto :class:`ProposedChange` values and calls :func:`check_commit`. The
verdict depends only on its arguments (the current policy, the member list, the
committer and the changes), never on local state, a clock or randomness, so every
member reaches the same verdict and a bad commit is rejected by all alike.

The encoding is canonical: exactly one byte string per policy. ``decode_policy``
refuses anything ``encode_policy`` would not have produced, so all members hash
the same GroupContext. The format is in docs/room-protocol.md §2-3.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, Final, TypeVar

from backchannel.mls.extensions import Extension, find_extension

from .errors import PolicyDecodeError, PolicyViolation
from .padding import Fields, check_bytes, check_int, check_text, packb, unpack_map

__all__ = [
    "MAX_MEMBER_ID_BYTES",
    "MAX_RETENTION_SECONDS",
    "MAX_ROLE_ENTRIES",
    "MAX_TITLE_BYTES",
    "MIN_RETENTION_SECONDS",
    "POLICY_VERSION",
    "ROOM_POLICY_EXTENSION_TYPE",
    "AddMember",
    "ChangePolicy",
    "CommitOutcome",
    "ExternalJoin",
    "JoinApproval",
    "OtherProposal",
    "ProposedChange",
    "Reinit",
    "RemoveMember",
    "Role",
    "RoomPolicy",
    "UpdateMember",
    "check_commit",
    "check_inviter",
    "check_post",
    "decode_policy",
    "encode_policy",
    "evaluate_commit",
    "expires_at_ms",
    "may_post",
    "policy_extension",
    "policy_from_extensions",
]

#: MLS extension type of the room policy, from the private-use range 0xF000-0xFFFF
#: (RFC 9420 §17.3). "BC" for Backchannel, 1 for this format. It is not a GREASE
#: value (§13.5). Rooms list it in ``required_capabilities`` so that only clients
#: that enforce the policy can be members.
ROOM_POLICY_EXTENSION_TYPE: Final = 0xFBC1
#: The ``v`` field of the encoding.
POLICY_VERSION: Final = 1
#: Largest accepted encoding.
MAX_POLICY_BYTES: Final = 65536
#: Largest room title, in UTF-8 bytes.
MAX_TITLE_BYTES: Final = 200
#: Largest member id (an MLS credential identity), in bytes.
MAX_MEMBER_ID_BYTES: Final = 255
#: Most role entries a policy may list.
MAX_ROLE_ENTRIES: Final = 1000
#: Shortest message retention (a disappearing-message timer), in seconds.
MIN_RETENTION_SECONDS: Final = 60
#: Longest finite message retention: 366 days. 0 means "keep until deleted".
MAX_RETENTION_SECONDS: Final = 366 * 86400

_FIELDS: Final = ("v", "title", "roles", "default_role", "approval", "retention", "chatham_house")

_E = TypeVar("_E", bound=IntEnum)

#: A member id: the identity in the member's MLS credential.
MemberId = bytes


class Role(IntEnum):
    """What a member may do in the room."""

    #: May add and remove members and change the policy; may post.
    FACILITATOR = 1
    #: May post.
    PARTICIPANT = 2
    #: May read only.
    OBSERVER = 3


class JoinApproval(IntEnum):
    """How join requests from invite links are handled (by a facilitator's client)."""

    #: A facilitator approves or turns away each request.
    MANUAL = 1
    #: A facilitator's client approves valid requests without asking.
    AUTOMATIC = 2


def _enum(kind: type[_E], value: object, name: str) -> _E:
    # IntEnum would take True as 1: refuse booleans, as the decoder does.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be a {kind.__name__}")
    return kind(value)


@dataclass(frozen=True, slots=True)
class RoomPolicy:
    """A room's policy: who may do what, and the room's rules.

    Members not listed in :attr:`roles` have :attr:`default_role`. The constructor
    sorts ``roles`` by member id and raises ``ValueError``/``TypeError`` on any
    value the encoding cannot carry.
    """

    VERSION: ClassVar[int] = POLICY_VERSION

    #: Room title shown to members (1 to 200 UTF-8 bytes, no control characters).
    title: str
    #: ``(member id, role)`` pairs, unique ids, at least one facilitator.
    roles: tuple[tuple[MemberId, Role], ...]
    #: Role of members not listed in :attr:`roles` (never FACILITATOR).
    default_role: Role = Role.PARTICIPANT
    #: How join requests are approved.
    approval: JoinApproval = JoinApproval.MANUAL
    #: Disappearing-message timer in seconds; 0 keeps messages until deleted.
    retention_seconds: int = 0
    #: Chatham House mode: what is said may be used, but never attributed.
    chatham_house: bool = False
    _by_id: Mapping[MemberId, Role] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_text(self.title, "title", 1, MAX_TITLE_BYTES)
        roles = tuple(self.roles)
        if len(roles) > MAX_ROLE_ENTRIES:
            raise ValueError(f"a policy lists at most {MAX_ROLE_ENTRIES} roles")
        by_id: dict[MemberId, Role] = {}
        for entry in roles:
            if not isinstance(entry, tuple) or len(entry) != 2:
                raise TypeError("roles must be (member id, role) pairs")
            member, role = entry
            check_bytes(member, "member id", 1, MAX_MEMBER_ID_BYTES)
            if member in by_id:
                raise ValueError("a member id appears twice in roles")
            by_id[member] = _enum(Role, role, "role")
        if Role.FACILITATOR not in by_id.values():
            raise ValueError("a policy names at least one facilitator")
        object.__setattr__(self, "roles", tuple(sorted(by_id.items())))
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "default_role", _enum(Role, self.default_role, "default_role"))
        if self.default_role is Role.FACILITATOR:
            raise ValueError("the default role cannot be facilitator")
        object.__setattr__(self, "approval", _enum(JoinApproval, self.approval, "approval"))
        check_int(self.retention_seconds, "retention_seconds", 0, MAX_RETENTION_SECONDS)
        if 0 < self.retention_seconds < MIN_RETENTION_SECONDS:
            raise ValueError(f"retention_seconds must be 0 or at least {MIN_RETENTION_SECONDS}")
        if not isinstance(self.chatham_house, bool):
            raise TypeError("chatham_house must be a bool")

    @classmethod
    def create(
        cls,
        title: str,
        facilitators: Iterable[MemberId],
        *,
        participants: Iterable[MemberId] = (),
        observers: Iterable[MemberId] = (),
        default_role: Role = Role.PARTICIPANT,
        approval: JoinApproval = JoinApproval.MANUAL,
        retention_seconds: int = 0,
        chatham_house: bool = False,
    ) -> RoomPolicy:
        """A policy from lists of member ids per role (a convenience constructor)."""
        roles = (
            [(m, Role.FACILITATOR) for m in facilitators]
            + [(m, Role.PARTICIPANT) for m in participants]
            + [(m, Role.OBSERVER) for m in observers]
        )
        return cls(title, tuple(roles), default_role, approval, retention_seconds, chatham_house)

    def role_of(self, member: MemberId) -> Role:
        """The role of ``member`` (the default role if not listed)."""
        return self._by_id.get(member, self.default_role)

    @property
    def facilitators(self) -> frozenset[MemberId]:
        """Member ids listed as facilitators (members or not)."""
        return frozenset(m for m, r in self.roles if r is Role.FACILITATOR)

    def with_role(self, member: MemberId, role: Role | None) -> RoomPolicy:
        """A copy with ``member``'s role set (or its entry removed, for None)."""
        entries = dict(self._by_id)
        if role is None:
            entries.pop(member, None)
        else:
            entries[member] = role
        return RoomPolicy(
            self.title,
            tuple(entries.items()),
            self.default_role,
            self.approval,
            self.retention_seconds,
            self.chatham_house,
        )


def encode_policy(policy: RoomPolicy) -> bytes:
    """The canonical msgpack encoding of ``policy`` (docs/room-protocol.md §2)."""
    return packb(
        {
            "v": POLICY_VERSION,
            "title": policy.title,
            "roles": [[member, int(role)] for member, role in policy.roles],
            "default_role": int(policy.default_role),
            "approval": int(policy.approval),
            "retention": policy.retention_seconds,
            "chatham_house": policy.chatham_house,
        }
    )


def decode_policy(data: bytes) -> RoomPolicy:
    """Decode a canonical policy encoding.

    Raises:
        PolicyDecodeError: on any input that :func:`encode_policy` would not produce
            (unknown version, missing or extra field, wrong type, out-of-range value,
            unsorted roles, non-minimal integers). Nothing else, on any input.
    """
    fields = unpack_map(data, PolicyDecodeError, "room policy", MAX_POLICY_BYTES)
    policy = _policy_from_fields(fields)
    if encode_policy(policy) != bytes(data):
        raise PolicyDecodeError("room policy: encoding is not canonical")
    return policy


def _policy_from_fields(f: Fields) -> RoomPolicy:
    if f.get_int("v", 0, 2**64 - 1) != POLICY_VERSION:
        f.fail("unsupported version")
    f.only(_FIELDS)
    raw_roles = f.raw("roles")
    if not isinstance(raw_roles, list) or len(raw_roles) > MAX_ROLE_ENTRIES:
        f.fail("field 'roles' must be a list of at most 1000 entries")
    roles: list[tuple[bytes, Role]] = []
    for entry in raw_roles:
        if not isinstance(entry, list) or len(entry) != 2:
            f.fail("a role entry must be [member id, role]")
        member = f.check_bytes(entry[0], "roles", 1, MAX_MEMBER_ID_BYTES)
        roles.append((member, Role(f.check_int(entry[1], "roles", 1, 3))))
    title = f.get_str("title", 1, MAX_TITLE_BYTES)
    default_role = Role(f.get_int("default_role", 2, 3))
    approval = JoinApproval(f.get_int("approval", 1, 2))
    retention = f.get_int("retention", 0, MAX_RETENTION_SECONDS)
    chatham = f.get_bool("chatham_house")
    try:
        return RoomPolicy(title, tuple(roles), default_role, approval, retention, chatham)
    except (TypeError, ValueError) as exc:
        f.fail(str(exc))


def policy_extension(policy: RoomPolicy) -> Extension:
    """``policy`` as the GroupContext extension that carries it."""
    return Extension(ROOM_POLICY_EXTENSION_TYPE, encode_policy(policy))


def policy_from_extensions(extensions: Iterable[Extension]) -> RoomPolicy:
    """The policy in a GroupContext's extensions.

    Raises:
        PolicyDecodeError: the extension is missing or not a valid policy.
    """
    extension = find_extension(extensions, ROOM_POLICY_EXTENSION_TYPE)
    if extension is None:
        raise PolicyDecodeError("the group has no room policy extension")
    return decode_policy(extension.extension_data)


# --- Commits -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddMember:
    """An Add proposal: ``proposer`` asks to add the holder of credential identity ``member``."""

    proposer: MemberId
    member: MemberId


@dataclass(frozen=True, slots=True)
class RemoveMember:
    """A Remove proposal: ``proposer`` asks to remove ``member`` (itself, to leave)."""

    proposer: MemberId
    member: MemberId


@dataclass(frozen=True, slots=True)
class ChangePolicy:
    """A GroupContextExtensions proposal.

    ``policy`` is the data of the room policy extension in the proposed extension
    list, or None if the list no longer has one. Every GroupContextExtensions
    proposal maps to this, even one that leaves the policy bytes unchanged.
    """

    proposer: MemberId
    policy: bytes | None


@dataclass(frozen=True, slots=True)
class UpdateMember:
    """An Update proposal, or the committer's own UpdatePath: ``member`` refreshes its own keys.

    ``leaf_identity`` is the identity in the credential of the new leaf (None where
    the caller did not read it). It must be ``member``: a member's identity is what
    every other member keys its messages, role and verification by, so an update
    that carried another identity would make its sender that other member
    (RFC 9420 §5.3.1: the new credential must represent the same client).
    """

    member: MemberId
    leaf_identity: MemberId | None = None


@dataclass(frozen=True, slots=True)
class Reinit:
    """A ReInit proposal from ``proposer``."""

    proposer: MemberId


@dataclass(frozen=True, slots=True)
class ExternalJoin:
    """An external commit (an ExternalInit proposal) by ``member``; rooms never allow these."""

    member: MemberId


@dataclass(frozen=True, slots=True)
class OtherProposal:
    """Any other proposal type (PreSharedKey, unknown types); rooms do not use them."""

    proposer: MemberId
    proposal_type: int


#: One proposal of a commit, as the policy sees it.
ProposedChange = (
    AddMember | RemoveMember | ChangePolicy | UpdateMember | Reinit | ExternalJoin | OtherProposal
)


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """The room after an allowed commit."""

    #: The policy in force after the commit.
    policy: RoomPolicy
    #: The member ids after the commit.
    members: frozenset[MemberId]
    #: True if the commit changed the policy extension.
    policy_changed: bool


def evaluate_commit(
    policy: RoomPolicy,
    *,
    committer: MemberId,
    members: Collection[MemberId],
    changes: Iterable[ProposedChange],
) -> CommitOutcome:
    """Check a commit against the room policy and return the room after it.

    Authority is judged under the policy *before* the commit, for the member who
    proposed each change (for proposals inside the commit, the committer).

    Rules (docs/room-protocol.md §3):

    1. No external joins. The committer must be a member.
    2. Each proposer must be a member.
    3. Only a facilitator may add members, remove other members, change the
       policy extension (at most once per commit) or re-initialize the group.
    4. Anyone may leave (propose its own removal) and update its own keys, keeping
       its identity.
       Nobody may commit its own removal; that is MLS's rule too.
    5. An added member must not already be a member; a removed one must be.
    6. An added member must have no role entry in the policy after the commit. Roles
       belong to members present in the tree: an entry a former member left behind
       (a leave committed without dropping it) must be dropped in the same commit,
       and a newcomer starts with the default role. The check reads the policy after
       the commit, so the order of the Add and the policy change does not matter.
    7. A new policy must be a valid canonical encoding; the extension cannot be dropped.
    8. After the commit, at least one member must be a facilitator under the new policy.
    9. Other proposal types (PreSharedKey, unknown) are refused.

    Args:
        policy: the policy in force in the current epoch.
        committer: the member id of the commit's sender.
        members: the member ids of the current epoch (from the ratchet tree).
        changes: the commit's proposals, in commit order.

    Raises:
        PolicyViolation: the commit breaks a rule. The message names the rule.
    """
    current = frozenset(members)
    added: set[MemberId] = set()
    removed: set[MemberId] = set()
    new_policy: RoomPolicy | None = None
    changes = tuple(changes)

    if any(isinstance(c, ExternalJoin) for c in changes):
        raise PolicyViolation("Rooms do not allow external joins; ask a facilitator for an invite.")
    if committer not in current:
        raise PolicyViolation("The commit's sender is not a member of the room.")

    def facilitator(member: MemberId) -> bool:
        return policy.role_of(member) is Role.FACILITATOR

    for change in changes:
        if isinstance(change, UpdateMember | ExternalJoin):
            proposer = change.member
        else:
            proposer = change.proposer
        if proposer not in current:
            raise PolicyViolation(
                "A proposal in the commit comes from someone who is not a member."
            )
        if isinstance(change, AddMember):
            if not facilitator(proposer):
                raise PolicyViolation("Only a facilitator may add members.")
            if change.member in current or change.member in added:
                raise PolicyViolation("The commit adds someone who is already a member.")
            added.add(change.member)
        elif isinstance(change, RemoveMember):
            if change.member not in current or change.member in removed:
                raise PolicyViolation("The commit removes someone who is not a member.")
            if change.member == committer:
                raise PolicyViolation("A member cannot commit its own removal.")
            if change.member != proposer and not facilitator(proposer):
                raise PolicyViolation("Only a facilitator may remove other members.")
            removed.add(change.member)
        elif isinstance(change, ChangePolicy):
            if not facilitator(proposer):
                raise PolicyViolation("Only a facilitator may change the room policy.")
            if new_policy is not None:
                raise PolicyViolation("A commit may change the room policy only once.")
            if change.policy is None:
                raise PolicyViolation("A commit may not remove the room policy.")
            try:
                new_policy = decode_policy(change.policy)
            except PolicyDecodeError:
                raise PolicyViolation("The proposed room policy is malformed.") from None
        elif isinstance(change, UpdateMember):
            # Anyone may refresh its own keys (post-compromise security), as itself.
            if change.leaf_identity is not None and change.leaf_identity != change.member:
                raise PolicyViolation("A member cannot change its identity in an update.")
        elif isinstance(change, Reinit):
            # Rooms of this version have no re-initialization flow, so no cipher suite or
            # version change can be slipped in through one (a downgrade, D02).
            raise PolicyViolation("Rooms cannot be re-initialized in this version.")
        else:  # OtherProposal
            raise PolicyViolation("The commit carries a proposal type rooms do not allow.")

    after_members = (current - removed) | added
    after_policy = policy if new_policy is None else new_policy
    # Roles belong to members in the tree. An identity with a role entry but no leaf
    # (someone who left, whose entry the leave's committer did not drop) could
    # otherwise be claimed by any newcomer's credential, role and all.
    listed = {member for member, _ in after_policy.roles}
    if any(member in listed for member in added):
        raise PolicyViolation(
            "The commit adds a member id that still has a role in the room (someone who "
            "left); that role must be dropped in the same commit."
        )
    if not any(after_policy.role_of(m) is Role.FACILITATOR for m in after_members):
        raise PolicyViolation(
            "The commit would leave the room without a facilitator; name another facilitator first."
        )
    return CommitOutcome(after_policy, frozenset(after_members), new_policy is not None)


def check_commit(
    policy: RoomPolicy,
    *,
    committer: MemberId,
    members: Collection[MemberId],
    changes: Iterable[ProposedChange],
) -> None:
    """Raise :class:`PolicyViolation` unless the commit is allowed (see :func:`evaluate_commit`)."""
    evaluate_commit(policy, committer=committer, members=members, changes=changes)


def check_inviter(policy: RoomPolicy, inviter: MemberId) -> None:
    """For a joiner: raise :class:`PolicyViolation` unless the Welcome's signer is a facilitator.

    ``inviter`` is the credential identity of the member who signed the GroupInfo
    in the Welcome; ``policy`` is the policy in that GroupInfo's GroupContext.
    """
    if policy.role_of(inviter) is not Role.FACILITATOR:
        raise PolicyViolation("The invitation was not made by a facilitator of the room.")


def may_post(policy: RoomPolicy, member: MemberId) -> bool:
    """True if ``member`` may send content (observers may not)."""
    return policy.role_of(member) is not Role.OBSERVER


def check_post(policy: RoomPolicy, member: MemberId) -> None:
    """Raise :class:`PolicyViolation` if ``member`` may not send content."""
    if not may_post(policy, member):
        raise PolicyViolation("Observers cannot post in this room.")


def expires_at_ms(policy: RoomPolicy, *, sent_at_ms: int, received_at_ms: int) -> int | None:
    """When a message must be deleted under the room's retention, or None to keep it.

    The clock starts at the earlier of the sender's time and the local receive time,
    so a sender cannot stretch a message's lifetime by claiming a future time.
    """
    if policy.retention_seconds == 0:
        return None
    return min(sent_at_ms, received_at_ms) + policy.retention_seconds * 1000
