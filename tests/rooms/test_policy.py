"""Room policy: canonical encoding, hostile input, and the commit rules every member applies."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backchannel.mls.extensions import Extension, is_grease
from backchannel.rooms.errors import PolicyDecodeError, PolicyViolation
from backchannel.rooms.policy import (
    MAX_RETENTION_SECONDS,
    MIN_RETENTION_SECONDS,
    ROOM_POLICY_EXTENSION_TYPE,
    AddMember,
    ChangePolicy,
    ExternalJoin,
    JoinApproval,
    OtherProposal,
    ProposedChange,
    Reinit,
    RemoveMember,
    Role,
    RoomPolicy,
    UpdateMember,
    check_commit,
    check_inviter,
    check_post,
    decode_policy,
    encode_policy,
    evaluate_commit,
    expires_at_ms,
    may_post,
    policy_extension,
    policy_from_extensions,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FAC, FAC2, PART, OBS, NEW = b"fac", b"fac2", b"part", b"obs", b"new"
POLICY = RoomPolicy.create(
    "Workshop", [FAC, FAC2], participants=[PART], observers=[OBS], retention_seconds=3600
)
MEMBERS = frozenset({FAC, FAC2, PART, OBS})


def raw(**overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "v": 1,
        "title": "T",
        "roles": [[b"a", 1]],
        "default_role": 2,
        "approval": 1,
        "retention": 0,
        "chatham_house": False,
    }
    fields.update(overrides)
    data: bytes = msgpack.packb(
        {k: v for k, v in fields.items() if v is not ...}, use_bin_type=True
    )
    return data


# --- strategies -----------------------------------------------------------------------------

member_ids = st.binary(min_size=1, max_size=4)
roles_st = st.dictionaries(member_ids, st.sampled_from(Role), max_size=6)


@st.composite
def policies(draw: st.DrawFn) -> RoomPolicy:
    roles = draw(roles_st)
    roles[draw(member_ids)] = Role.FACILITATOR
    retention = draw(
        st.one_of(st.just(0), st.integers(MIN_RETENTION_SECONDS, MAX_RETENTION_SECONDS))
    )
    return RoomPolicy(
        draw(st.text(min_size=1, max_size=30).filter(lambda t: t.isprintable())),
        tuple(roles.items()),
        draw(st.sampled_from([Role.PARTICIPANT, Role.OBSERVER])),
        draw(st.sampled_from(JoinApproval)),
        retention,
        draw(st.booleans()),
    )


# --- encoding -------------------------------------------------------------------------------


def test_extension_type_is_private_use_and_not_grease() -> None:
    assert 0xF000 <= ROOM_POLICY_EXTENSION_TYPE <= 0xFFFF
    assert not is_grease(ROOM_POLICY_EXTENSION_TYPE)


def test_extension_round_trip() -> None:
    ext = policy_extension(POLICY)
    assert ext.extension_type == ROOM_POLICY_EXTENSION_TYPE
    other = Extension(0xF000, b"x")
    assert policy_from_extensions([other, ext]) == POLICY
    with pytest.raises(PolicyDecodeError, match="no room policy"):
        policy_from_extensions([other])


def test_roles_are_sorted_and_looked_up() -> None:
    assert [m for m, _ in POLICY.roles] == sorted([FAC, FAC2, PART, OBS])
    assert POLICY.role_of(FAC) is Role.FACILITATOR
    assert POLICY.role_of(OBS) is Role.OBSERVER
    assert POLICY.role_of(b"stranger") is Role.PARTICIPANT
    assert POLICY.facilitators == {FAC, FAC2}
    assert POLICY.with_role(OBS, None).role_of(OBS) is Role.PARTICIPANT
    assert POLICY.with_role(NEW, Role.OBSERVER).role_of(NEW) is Role.OBSERVER


@given(policies())
@FUZZ
def test_round_trip_is_identity(policy: RoomPolicy) -> None:
    data = encode_policy(policy)
    assert decode_policy(data) == policy
    assert encode_policy(decode_policy(data)) == data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (raw(v=2), "unsupported version"),
        (raw(v=True), "integer"),
        (raw(extra=1), "unexpected field"),
        (raw(title=...), "missing"),
        (raw(title=""), "bytes"),
        (raw(title="a\x1b[2Jb"), "control"),
        (raw(title=b"T"), "str"),
        (raw(roles=[[b"a", 2]]), "facilitator"),
        (raw(roles=[[b"b", 1], [b"a", 2]]), "canonical"),
        (raw(roles=[[b"a", 1], [b"a", 2]]), "twice"),
        (raw(roles=[["a", 1]]), "bin"),
        (raw(roles=[[b"a", 4]]), "range"),
        (raw(roles=[[b"a"]]), "role entry"),
        (raw(roles={"a": 1}), "list"),
        (raw(default_role=1), "range"),
        (raw(approval=3), "range"),
        (raw(retention=30), "retention"),
        (raw(retention=MAX_RETENTION_SECONDS + 1), "range"),
        (raw(retention=-1), "range"),
        (raw(retention=1.5), "integer"),
        (raw(chatham_house=0), "boolean"),
        (b"\x93\x01\x02\x03", "not a msgpack map"),
        (b"", "not valid msgpack"),
        (raw() + b"\x00", "not valid msgpack"),
        (b"\xc7\x01\x05x", "not valid msgpack"),  # an ext type
    ],
)
def test_hostile_encodings_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(PolicyDecodeError, match=reason):
        decode_policy(data)


def test_non_canonical_forms_of_a_valid_policy_are_refused() -> None:
    good = raw()
    assert decode_policy(good).title == "T"
    # Same fields, another key order.
    reordered = msgpack.packb(
        dict(reversed(list(msgpack.unpackb(good).items()))), use_bin_type=True
    )
    # A non-minimal integer: retention 0 as uint16.
    wide = good.replace(b"\xa9retention\x00", b"\xa9retention\xcd\x00\x00")
    # A duplicate key.
    dup = b"\x88" + good[1:] + b"\xa1v\x01"
    for data in (reordered, wide, dup):
        assert data != good
        with pytest.raises(PolicyDecodeError):
            decode_policy(data)


@given(st.binary(max_size=300))
@FUZZ
def test_random_bytes_raise_only_the_decode_error(data: bytes) -> None:
    try:
        policy = decode_policy(data)
    except PolicyDecodeError:
        return
    assert encode_policy(policy) == data


@given(policies(), st.data())
@FUZZ
def test_mutations_raise_only_the_decode_error(policy: RoomPolicy, data: st.DataObject) -> None:
    encoded = bytearray(encode_policy(policy))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    for candidate in (bytes(encoded), bytes(encoded[:cut])):
        try:
            decoded = decode_policy(candidate)
        except PolicyDecodeError:
            continue
        assert encode_policy(decoded) == candidate


def test_decoder_refuses_non_bytes() -> None:
    with pytest.raises(PolicyDecodeError):
        decode_policy("text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"title": ""},
        {"title": "x" * 201},
        {"roles": ()},
        {"roles": ((b"", Role.FACILITATOR),)},
        {"default_role": Role.FACILITATOR},
        {"retention_seconds": 59},
        {"retention_seconds": -1},
    ],
)
def test_constructor_refuses_unencodable_values(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"title": "T", "roles": ((b"a", Role.FACILITATOR),)} | kwargs
    with pytest.raises((ValueError, TypeError)):
        RoomPolicy(**args)


# --- commit rules ---------------------------------------------------------------------------


def ok(committer: bytes, *changes: ProposedChange, members: frozenset[bytes] = MEMBERS) -> None:
    check_commit(POLICY, committer=committer, members=members, changes=changes)


def refused(committer: bytes, *changes: ProposedChange, match: str) -> None:
    with pytest.raises(PolicyViolation, match=match):
        check_commit(POLICY, committer=committer, members=MEMBERS, changes=changes)


def new_policy(**kw: Any) -> bytes:
    args: dict[str, Any] = {"title": "Workshop", "roles": POLICY.roles} | kw
    return encode_policy(RoomPolicy(**args))


def test_facilitator_may_add_remove_and_change_policy() -> None:
    ok(FAC, AddMember(FAC, NEW))
    ok(FAC, RemoveMember(FAC, PART))
    ok(FAC, ChangePolicy(FAC, new_policy(title="Renamed")))
    # No re-initialization in this version, not even by a facilitator (no downgrade path).
    refused(FAC, Reinit(FAC), match="re-initialized")
    outcome = evaluate_commit(
        POLICY,
        committer=FAC,
        members=MEMBERS,
        changes=[
            AddMember(FAC, NEW),
            RemoveMember(FAC, PART),
            ChangePolicy(FAC, new_policy(title="R")),
        ],
    )
    assert outcome.members == (MEMBERS - {PART}) | {NEW}
    assert outcome.policy.title == "R"
    assert outcome.policy_changed


@pytest.mark.parametrize("who", [PART, OBS])
def test_non_facilitators_may_not_add_remove_others_or_change_policy(who: bytes) -> None:
    refused(who, AddMember(who, NEW), match="Only a facilitator may add")
    refused(who, RemoveMember(who, FAC), match="Only a facilitator may remove")
    refused(who, ChangePolicy(who, new_policy(title="Mine")), match="Only a facilitator may change")
    refused(who, Reinit(who), match="re-initialized")
    # Even committed by a facilitator, a non-facilitator's proposal carries no authority.
    refused(FAC, AddMember(who, NEW), match="Only a facilitator may add")


def test_anyone_may_leave_and_update() -> None:
    for who in (PART, OBS, FAC):
        ok(FAC2 if who == FAC else FAC, RemoveMember(who, who))
        ok(who, UpdateMember(who))
        ok(who)  # an empty commit (path update only)
    ok(PART, RemoveMember(OBS, OBS))  # a participant commits the observer's leave proposal
    ok(PART, RemoveMember(FAC, OBS))  # or a facilitator's remove proposal


def test_nobody_commits_its_own_removal() -> None:
    refused(FAC, RemoveMember(FAC, FAC), match="its own removal")


def test_membership_must_be_consistent() -> None:
    refused(FAC, AddMember(FAC, PART), match="already a member")
    refused(FAC, AddMember(FAC, NEW), AddMember(FAC2, NEW), match="already a member")
    refused(FAC, RemoveMember(FAC, NEW), match="not a member")
    refused(FAC, RemoveMember(FAC, PART), RemoveMember(FAC2, PART), match="not a member")
    refused(NEW, UpdateMember(NEW), match="sender is not a member")
    refused(FAC, RemoveMember(NEW, NEW), match="not a member")


def test_external_joins_and_other_proposals_are_refused() -> None:
    refused(NEW, ExternalJoin(NEW), match="external joins")
    refused(FAC, ExternalJoin(FAC), match="external joins")
    refused(FAC, OtherProposal(FAC, 4), match="proposal type")


def test_policy_changes_must_be_valid_and_single() -> None:
    refused(FAC, ChangePolicy(FAC, None), match="may not remove the room policy")
    refused(FAC, ChangePolicy(FAC, b"\x80"), match="malformed")
    refused(FAC, ChangePolicy(FAC, raw(roles=[[b"b", 1], [b"a", 2]])), match="malformed")
    refused(
        FAC,
        ChangePolicy(FAC, new_policy()),
        ChangePolicy(FAC, new_policy()),
        match="only once",
    )


def test_the_last_facilitator_cannot_go() -> None:
    solo = frozenset({FAC, PART})
    policy = RoomPolicy.create("T", [FAC])
    demote = encode_policy(RoomPolicy.create("T", [b"ghost"], participants=[FAC]))
    for changes in (
        [ChangePolicy(FAC, demote)],  # the only facilitator left is not a member
        [RemoveMember(FAC, FAC)],  # the last facilitator leaves
    ):
        with pytest.raises(PolicyViolation, match="without a facilitator"):
            check_commit(policy, committer=PART, members=solo, changes=changes)
    # Handing over first makes it fine, in one commit too.
    handover = encode_policy(RoomPolicy.create("T", [PART]))
    check_commit(
        policy,
        committer=PART,
        members=solo,
        changes=[ChangePolicy(FAC, handover), RemoveMember(FAC, FAC)],
    )
    # Removing one of two facilitators is fine.
    ok(FAC, RemoveMember(FAC, FAC2))


def test_a_role_entry_without_a_leaf_cannot_be_claimed() -> None:
    # FAC2 left in a commit that kept its entry (a participant committed the leave):
    # whoever names FAC2's id in a key package must not walk in as a facilitator.
    after_leave = MEMBERS - {FAC2}
    stale = frozenset(after_leave)

    def check(*changes: ProposedChange) -> RoomPolicy:
        return evaluate_commit(POLICY, committer=FAC, members=stale, changes=changes).policy

    with pytest.raises(PolicyViolation, match="still has a role"):
        check(AddMember(FAC, FAC2))
    # A policy change that keeps the entry does not make it right, in either order.
    keeps = new_policy(title="Renamed")
    for changes in ([AddMember(FAC, FAC2), ChangePolicy(FAC, keeps)],
                    [ChangePolicy(FAC, keeps), AddMember(FAC, FAC2)]):  # fmt: skip
        with pytest.raises(PolicyViolation, match="still has a role"):
            check(*changes)
    # A facilitator re-admits FAC2 by dropping the entry in the same commit, in either
    # order; FAC2 comes back with the default role.
    dropped = encode_policy(POLICY.with_role(FAC2, None))
    for changes in ([AddMember(FAC, FAC2), ChangePolicy(FAC, dropped)],
                    [ChangePolicy(FAC, dropped), AddMember(FAC, FAC2)]):  # fmt: skip
        assert check(*changes).role_of(FAC2) is Role.PARTICIPANT
    # Nor may a newcomer be given a role in the commit that adds it.
    with pytest.raises(PolicyViolation, match="still has a role"):
        check(
            AddMember(FAC, NEW),
            ChangePolicy(FAC, encode_policy(POLICY.with_role(NEW, Role.OBSERVER))),
        )
    # Present members are refused as before; a fresh id is fine.
    refused(FAC, AddMember(FAC, FAC2), match="already a member")
    assert check(AddMember(FAC, NEW)).role_of(NEW) is Role.PARTICIPANT


def test_posting_inviter_and_retention() -> None:
    assert may_post(POLICY, FAC) and may_post(POLICY, PART) and may_post(POLICY, b"x")
    assert not may_post(POLICY, OBS)
    check_post(POLICY, PART)
    with pytest.raises(PolicyViolation, match="Observers"):
        check_post(POLICY, OBS)
    check_inviter(POLICY, FAC)
    with pytest.raises(PolicyViolation, match="not made by a facilitator"):
        check_inviter(POLICY, PART)
    assert expires_at_ms(POLICY, sent_at_ms=10_000, received_at_ms=5_000) == 5_000 + 3_600_000
    assert expires_at_ms(POLICY, sent_at_ms=1_000, received_at_ms=5_000) == 1_000 + 3_600_000
    keep = RoomPolicy.create("T", [FAC])
    assert expires_at_ms(keep, sent_at_ms=1, received_at_ms=1) is None


# --- properties -----------------------------------------------------------------------------

ids = st.sampled_from([FAC, FAC2, PART, OBS, NEW, b"z"])
changes_st = st.one_of(
    st.builds(AddMember, ids, ids),
    st.builds(RemoveMember, ids, ids),
    st.builds(
        ChangePolicy,
        ids,
        st.one_of(
            st.none(),
            st.just(new_policy(title="Other")),
            st.just(encode_policy(RoomPolicy.create("T", [PART]))),
            st.binary(max_size=8),
        ),
    ),
    st.builds(UpdateMember, ids),
    st.builds(Reinit, ids),
    st.builds(ExternalJoin, ids),
    st.builds(OtherProposal, ids, st.integers(0, 0xFFFF)),
)


def verdict(policy: RoomPolicy, committer: bytes, members: Any, changes: Any) -> str:
    try:
        outcome = evaluate_commit(policy, committer=committer, members=members, changes=changes)
    except PolicyViolation as exc:
        return f"refused: {exc}"
    return f"ok: {sorted(outcome.members)} {encode_policy(outcome.policy).hex()}"


@given(
    policies(),
    st.sets(member_ids, max_size=6),
    member_ids,
    st.lists(changes_st, max_size=5),
    st.randoms(),
)
@FUZZ
def test_the_verdict_depends_only_on_the_inputs(
    policy: RoomPolicy, members: set[bytes], committer: bytes, changes: Any, rnd: Any
) -> None:
    members |= {committer}
    first = verdict(policy, committer, frozenset(members), changes)
    shuffled = sorted(members)
    rnd.shuffle(shuffled)
    # Another member: its own decoded copy of the policy, its own member list order.
    again = verdict(decode_policy(encode_policy(policy)), committer, shuffled, list(changes))
    assert first == again


@given(
    st.lists(st.tuples(st.sampled_from([PART, OBS]), st.lists(changes_st, max_size=4)), max_size=6)
)
@FUZZ
def test_non_facilitators_cannot_alter_membership_or_policy(
    commits: list[tuple[bytes, list[ProposedChange]]],
) -> None:
    policy, members = POLICY, MEMBERS
    for committer, changes in commits:
        if committer not in members:
            continue
        # Every proposal is made by a non-facilitator (the committer or another one).
        forged = [c for c in changes if _proposer(c) in (PART, OBS)]
        try:
            outcome = evaluate_commit(policy, committer=committer, members=members, changes=forged)
        except PolicyViolation:
            continue
        assert outcome.policy == policy
        assert not outcome.policy_changed
        # Only non-facilitators may have left; nobody was added.
        assert outcome.members <= members
        assert members - outcome.members <= {PART, OBS}
        policy, members = outcome.policy, outcome.members
    assert {FAC, FAC2} <= members
    assert policy == POLICY


@given(policies(), st.sets(member_ids, max_size=6), st.data())
@FUZZ
def test_newcomers_never_inherit_a_role(
    policy: RoomPolicy, members: set[bytes], data: st.DataObject
) -> None:
    # Whatever a facilitator's commit carries, everyone it adds starts with the default
    # role: no entry in the role table (a former member's, or one given beside the Add).
    committer = data.draw(st.sampled_from(sorted(policy.facilitators)))
    members |= {committer}
    pool = st.sampled_from(sorted(members | {m for m, _ in policy.roles} | {NEW}))
    new_roles = st.dictionaries(pool, st.sampled_from(Role), max_size=6).map(
        lambda roles: {**roles, committer: Role.FACILITATOR}
    )
    change = st.one_of(
        st.builds(AddMember, st.just(committer), pool),
        st.builds(RemoveMember, st.just(committer), pool),
        new_roles.map(
            lambda roles: ChangePolicy(
                committer, encode_policy(RoomPolicy(policy.title, tuple(roles.items())))
            )
        ),
    )
    changes = data.draw(st.lists(change, max_size=4))
    try:
        outcome = evaluate_commit(policy, committer=committer, members=members, changes=changes)
    except PolicyViolation:
        return
    listed = {m for m, _ in outcome.policy.roles}
    assert not (outcome.members - members) & listed


def _proposer(change: ProposedChange) -> bytes:
    if isinstance(change, UpdateMember | ExternalJoin):
        return change.member
    return change.proposer


def test_rooms_are_sans_io() -> None:
    code = "import sys, json; import backchannel.rooms; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    forbidden = {"asyncio", "aiohttp", "sqlite3", "socket", "textual", "relay"}
    assert not {m.split(".")[0] for m in loaded} & forbidden
    ours = {m for m in loaded if m.startswith("backchannel.")}
    assert all(m.startswith(("backchannel.rooms", "backchannel.mls")) for m in ours)


def test_documented_vector() -> None:
    policy = RoomPolicy.create(
        "Workshop",
        [b"fac"],
        participants=[b"part"],
        observers=[b"obs"],
        retention_seconds=86400,
        chatham_house=True,
    )
    expected = bytes.fromhex(
        "87a17601a57469746c65a8576f726b73686f70a5726f6c65739392c4036661630192c4036f6273"
        "0392c4047061727402ac64656661756c745f726f6c6502a8617070726f76616c01a972657465"
        "6e74696f6ece00015180ad6368617468616d5f686f757365c3"
    )
    assert encode_policy(policy) == expected
    assert decode_policy(expected) == policy


def test_booleans_are_not_roles() -> None:
    with pytest.raises(TypeError):
        RoomPolicy("T", ((b"a", True),))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RoomPolicy("T", ((b"a", Role.FACILITATOR),), approval=True)  # type: ignore[arg-type]
