"""What :meth:`Group.process` and the commit methods return: frozen, typed events (RFC 9420 §12).

Every event is a frozen value. A received commit is never applied on receipt: it
arrives as a :class:`StagedCommit` the caller may inspect (and veto, e.g. against a
room policy) before :meth:`Group.merge_staged_commit` turns it into the new epoch and
returns :class:`CommitApplied`. Own commits follow the same path through
:meth:`Group.merge_pending_commit`.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field

from .credentials import Credential
from .extensions import Extension
from .framing import ContentType, Sender
from .messages import PreSharedKeyID, Proposal, ReInit

__all__ = [
    "ApplicationMessage",
    "CommitApplied",
    "CommitEvent",
    "CommittedProposal",
    "Event",
    "MemberInfo",
    "OwnMessage",
    "ProposalReceived",
    "StagedCommit",
]


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A member as the ratchet tree knows it: slot, credential and signature key."""

    #: The member's leaf index.
    leaf_index: int
    #: The member's credential (the application authenticates it, §5.3.1).
    credential: Credential
    #: The member's encoded signature public key.
    signature_key: bytes


class Event(ABC):  # noqa: B024 - a marker base, like h11's Event
    """Base of everything :meth:`Group.process` returns."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ApplicationMessage(Event):
    """Application data from an authenticated member (§6.3). The data is left out of the repr."""

    #: The epoch the message was sent in (may be a recent past epoch).
    epoch: int
    #: Who sent it, as the tree of that epoch says.
    sender: MemberInfo
    #: The plaintext.
    data: bytes = field(repr=False)
    #: ``authenticated_data``: sent in the clear, but authenticated.
    authenticated_data: bytes = b""
    #: The sender's generation in the application ratchet of that epoch (§9): a gap
    #: between two messages of one sender means the ones between were not delivered.
    #: 0 for PublicMessage application data (which has no generation).
    generation: int = 0


@dataclass(frozen=True, slots=True)
class ProposalReceived(Event):
    """A proposal was verified and stored for the next commit of this epoch (§12.1)."""

    #: The epoch it belongs to.
    epoch: int
    #: The sender as on the wire (member, external sender or new member).
    sender: Sender
    #: The member who sent it, for member senders.
    sender_member: MemberInfo | None
    #: The proposal.
    proposal: Proposal
    #: Its ``ProposalRef`` (§5.2): commits refer to it by this.
    reference: bytes


@dataclass(frozen=True, slots=True)
class OwnMessage(Event):
    """A message this member sent came back from the delivery service; nothing changed.

    To turn an own commit into the new epoch use :meth:`Group.merge_pending_commit`.
    """

    #: The epoch of the message.
    epoch: int
    #: What it carried.
    content_type: ContentType


@dataclass(frozen=True, slots=True)
class CommitEvent(Event):
    """What a commit does (§12.4); shared by :class:`StagedCommit` and :class:`CommitApplied`."""

    #: The epoch the commit starts.
    epoch: int
    #: The committer (for an external commit, the joiner at its new leaf).
    committer: MemberInfo
    #: True for an external commit (§12.4.3.2).
    external: bool
    #: Members added (by Add proposals, or the external joiner), at their new leaves.
    added: tuple[MemberInfo, ...]
    #: Members removed, as they were before the commit.
    removed: tuple[MemberInfo, ...]
    #: Members whose leaf changed by an Update proposal (the committer's own path not counted).
    updated: tuple[MemberInfo, ...]
    #: The new GroupContext extensions if a GroupContextExtensions proposal changed them.
    extensions: tuple[Extension, ...] | None
    #: The PSKs injected by the commit.
    psks: tuple[PreSharedKeyID, ...]
    #: A ReInit proposal, after which this group accepts no more messages (§12.1.5).
    reinit: ReInit | None
    #: True if the commit removes this member from the group.
    self_removed: bool


@dataclass(frozen=True, slots=True)
class CommittedProposal:
    """One proposal of a received commit, in commit order, with who proposed it."""

    #: The proposer as on the wire (the committer for proposals inline in the commit).
    sender: Sender
    #: The proposing member as the current epoch's tree says, for member senders.
    proposer: MemberInfo | None
    #: The proposal.
    proposal: Proposal
    #: True if the commit carried it by reference (it was sent as its own message).
    by_reference: bool


@dataclass(frozen=True, slots=True)
class StagedCommit(CommitEvent):
    """A verified commit from another member, not yet applied.

    Inspect it (e.g. check the room policy allows who added or removed whom), then
    call :meth:`Group.merge_staged_commit` or simply drop it to reject it.
    """

    #: The epoch the commit was sent in (the group must still be there to merge).
    base_epoch: int = 0
    #: The commit's proposals in commit order, with their proposers (for access control).
    proposals: tuple[CommittedProposal, ...] = ()
    #: True if the commit carries an UpdatePath (the committer refreshed its own leaf).
    with_path: bool = False
    _next: object = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class CommitApplied(CommitEvent):
    """A commit (staged or own pending) became the group's new epoch."""
