"""I01: a member reuses other members' message ids to rewrite, delete or misattribute.

A message id is chosen by its sender, so a hostile member (a modified client with
valid keys) can send any id it has seen, or guess one before it is used. A message
is the pair (author, id) everywhere: a text with someone else's id is a new message
of its own sender; an edit, delete or file chunk reaches only its sender's message;
a reply or reaction names its target's author, and a wrong one is dropped and
counted. Real clients, a real relay; Mallory posts through her own MLS group with
her client's checks bypassed, as a modified client would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

from backchannel.engine import actions
from backchannel.rooms.content import (
    Content,
    Delete,
    Edit,
    FileChunk,
    Reaction,
    Text,
    encode_content,
    new_message_id,
)
from backchannel.rooms.watch import fork_check
from backchannel.store.records import OutboxEntry
from backchannel.views import MessageView
from tests.e2e.harness import eventually

from .conftest import Net, Party


async def hostile_post(p: Party, room: str, content: Content) -> None:
    """Post ``content`` as ``p``'s modified client would: no local checks at all."""
    live = p.live(room)
    engine = p.c.engine
    async with live.lock:
        group = live.room._group
        wire = group.encrypt(
            encode_content(content), authenticated_data=fork_check(group.epoch_authenticator)
        )
        entry = OutboxEntry(
            os.urandom(16), live.meta.access.mailbox, wire, time.time(), room_id=live.record.room_id
        )
        state = live.room.to_bytes()
        async with engine.store.transaction() as tx:
            await tx.set_room_state(live.record.room_id, state)
            await tx.enqueue(entry)
        live.record = dataclasses.replace(live.record, state=state)
    engine._outbox.notify()


def ts() -> int:
    return int(time.time() * 1000)


async def _page(p: Party, room: str) -> dict[tuple[str, str], MessageView]:
    """A room's history keyed by (sender, text) for readable assertions."""
    return {(m.sender, m.text): m for m in await p.c.history(room, limit=500)}


async def _has_text(p: Party, room: str, sender: Party, text: str) -> bool:
    me = sender.c.identity.identity_id.hex()
    return any(m.sender == me and m.text == text for m in await p.c.history(room, limit=500))


async def _settle(net: Net, mal: Party, room: str, *watchers: Party) -> None:
    """Mallory's last post has reached every watcher, so all before it has too."""
    marker = f"marker {os.urandom(4).hex()}"
    await hostile_post(mal, room, Text(new_message_id(), ts(), marker))
    for w in watchers:
        await eventually(lambda w=w: _has_text(w, room, mal, marker), 30)


async def _snapshot(p: Party, room: str, authors: set[str]) -> list[tuple[object, ...]]:
    """What ``p`` shows of the honest authors' messages (and their files' bytes)."""
    out = []
    for m in await p.c.history(room, limit=500):
        if m.sender not in authors:
            continue
        reactions = tuple((r.emoji, r.count) for r in m.reactions)
        out.append((m.id, m.sender, m.text, m.edited, m.deleted, m.reply_to, reactions, m.file))
    return out


async def test_I01_a_member_cannot_rewrite_delete_or_borrow_others_messages(
    net: Net, tmp_path: Path
) -> None:
    fac, ben, mal = [await net.party(n) for n in ("Farida", "Ben", "Mallory")]
    room = await net.room(fac, "Clause four", ben, mal)
    honest = (fac, ben)
    authors = {p.c.identity.identity_id.hex() for p in honest}
    farida_id, ben_id = fac.c.identity.identity_id, ben.c.identity.identity_id

    t1 = await fac.c.send(room, "We accept clause four as drafted.")
    t2 = await fac.c.send(room, "Second point: the timetable stands.")
    document = tmp_path / "draft.txt"
    document.write_bytes(os.urandom(3000))
    f1 = await fac.c.send_file(room, document)
    b1 = await ben.c.send(room, "Agreed, with thanks.")
    await ben.c.react(room, t1.id, "👍")
    for p in (ben, mal):
        await eventually(lambda p=p: _has_text(p, room, fac, f1.text), 30)
    await eventually(lambda: _has_text(fac, room, ben, b1.text), 30)
    await _settle(net, mal, room, fac, ben)
    before = {p.name: await _snapshot(p, room, authors) for p in honest}

    # Mallory learns the ids as any member does (here: from her own store).
    async def wire_id(view: MessageView) -> bytes:
        stored = await mal.c.store.message(bytes.fromhex(room), bytes.fromhex(view.id))
        assert stored is not None
        return stored.message_id

    ids = {v.text: await wire_id(v) for v in (t1, t2, f1, b1)}
    x1, x2, xf, xb = ids[t1.text], ids[t2.text], ids[f1.text], ids[b1.text]
    for x in (x1, x2, xf, xb):  # a text under every honest id, then edits and deletes of it
        await hostile_post(mal, room, Text(x, ts(), "We REJECT clause four and walk out."))
        await hostile_post(mal, room, Edit(new_message_id(), ts(), x, "REWRITTEN"))
    await hostile_post(mal, room, Delete(new_message_id(), ts(), x2))
    await hostile_post(mal, room, Delete(new_message_id(), ts(), xb))
    # Edits and deletes aimed straight at ids Mallory never sent.
    await hostile_post(mal, room, Edit(new_message_id(), ts(), new_message_id(), "x"))
    # File chunks for Farida's file, from Mallory's id and from a fresh one.
    await hostile_post(mal, room, FileChunk(new_message_id(), ts(), xf, 0, b"EVIL" * 256))
    await hostile_post(mal, room, FileChunk(new_message_id(), ts(), new_message_id(), 0, b"E"))
    # A reaction and a reply that name the wrong author for Farida's message.
    await hostile_post(mal, room, Reaction(new_message_id(), ts(), x1, ben_id, "👎"))
    wrong = "Replying to Ben's acceptance."
    await hostile_post(mal, room, Text(new_message_id(), ts(), wrong, x1, ben_id))
    # And one that names the right author: an ordinary reply, kept.
    right = "Replying to Farida's acceptance."
    await hostile_post(mal, room, Text(new_message_id(), ts(), right, x1, farida_id))
    await _settle(net, mal, room, fac, ben)

    for p in honest:
        # Every honest message, its reactions and its file are exactly as they were.
        assert await _snapshot(p, room, authors) == before[p.name], p.name
        page = await _page(p, room)
        mallory = mal.c.identity.identity_id.hex()
        history = await p.c.history(room, limit=500)
        forged = [m for m in history if m.sender == mallory and m.kind == "text"]
        assert all(m.sender_name == "Mallory" for m in forged)
        # Mallory's copies are hers: edited or deleted as she asked, under her name.
        assert sum(m.deleted for m in forged) == 2
        assert {m.text for m in forged if m.edited and not m.deleted} == {"REWRITTEN"}
        assert page[(mallory, wrong)].reply_to is None
        assert page[(mallory, right)].reply_to == t1.id
        saved = await p.c.save_file(room, f1.id, tmp_path / f"{p.name}.bin")
        assert saved.read_bytes() == document.read_bytes()
        dropped = p.c.dropped_content(room)
        assert dropped.get("A reaction named a message its author never sent here.") == 1
        assert dropped.get("A reply named the wrong author for the message it answers.") == 1
        assert dropped.get("A file chunk named a message of its sender that is no file.") == 1
        assert len(dropped) == 3, dropped
        # The edit and the chunk aimed at ids Mallory never used wait for her messages
        # with those ids (which can only ever be hers), and touch nothing meanwhile.


async def test_I01_an_id_used_first_by_mallory_is_still_farida_s(net: Net, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The other order: Mallory's copy (predicted, or put first by the relay) arrives
    before Farida's own message with that id. Farida's message still shows, whole."""
    fac, ben, mal = [await net.party(n) for n in ("Farida", "Ben", "Mallory")]
    room = await net.room(fac, "Clause five", ben, mal)
    x = new_message_id()
    await hostile_post(mal, room, Text(x, ts(), "Farida: I withdraw everything."))
    await hostile_post(
        mal, room, Reaction(new_message_id(), ts(), x, mal.c.identity.identity_id, "🔥")
    )
    await _settle(net, mal, room, fac, ben)
    ids = iter([x])
    monkeypatch.setattr(actions, "new_message_id", lambda: next(ids, None) or new_message_id())
    mine = await fac.c.send(room, "I stand by the proposal.")
    monkeypatch.undo()
    await eventually(lambda: _has_text(ben, room, fac, mine.text), 30)
    await hostile_post(mal, room, Edit(new_message_id(), ts(), x, "I withdraw."))
    await hostile_post(mal, room, Delete(new_message_id(), ts(), x))
    await _settle(net, mal, room, fac, ben)
    for p in (fac, ben):
        page = await _page(p, room)
        farida = fac.c.identity.identity_id.hex()
        original = page[(farida, "I stand by the proposal.")]
        assert original.id == mine.id and not original.edited and not original.deleted
        assert original.reactions == ()  # Mallory's 🔥 was on her own message
        mallory = [m for m in page.values() if m.sender == mal.c.identity.identity_id.hex()]
        assert any(m.deleted for m in mallory)  # her copy, deleted by her
        assert mine.id not in {m.id for m in mallory}


# -- I02: a member cannot become another member ------------------------------------------
#
# Every member keys messages, roles and verification by the identity in an MLS
# credential. A member who could put another's identity into its own leaf (through
# its commit's UpdatePath or an Update proposal) would become that member: its texts
# under her name, her messages its to edit, her role its own. Every client refuses
# an update that changes an identity (RFC 9420 §5.3.1), and a Welcome into a tree
# where two members share one.


def _forged_path(monkeypatch, identity: bytes) -> None:  # type: ignore[no-untyped-def]
    """The next UpdatePath's new leaf carries ``identity`` (as a modified client's would)."""
    from backchannel.mls import commit as mls_commit
    from backchannel.mls.credentials import BasicCredential

    real = mls_commit.generate_update_path

    def forged(cs, tree, leaf_index, *a, leaf_node=None, **kw):  # type: ignore[no-untyped-def]
        leaf = dataclasses.replace(tree.leaf_node(leaf_index), credential=BasicCredential(identity))
        monkeypatch.setattr(mls_commit, "generate_update_path", real)
        return real(cs, tree, leaf_index, *a, leaf_node=leaf, **kw)

    monkeypatch.setattr(mls_commit, "generate_update_path", forged)


def test_I02_an_update_path_cannot_take_another_identity(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from backchannel.rooms import events as rev

    from .conftest import NOW, copy_room, room_group

    ids, (fac, ben, mal) = room_group(3)
    before = [copy_room(r).to_bytes() for r in (fac, ben)]
    _forged_path(monkeypatch, ids[0].identity_id)  # Mallory takes Farida's identity
    out = mal._group.commit(path=True, now=NOW)  # straight through MLS: no local checks
    for room, state in zip((fac, ben), before, strict=True):
        events = room.receive(out.commit, now=NOW)
        assert [type(e) for e in events] == [rev.CommitRejected]
        assert events[0].committer == ids[2].identity_id  # named as who she was
        assert "cannot change its identity" in events[0].reason
        assert room.to_bytes() == state  # nothing merged


def test_I02_an_update_proposal_cannot_take_another_identity(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Mallory only proposes the Update: Farida's routine commit leaves it out, and a
    commit that carries it anyway (a modified facilitator's) is refused by everyone."""
    from backchannel.mls import group_ops
    from backchannel.mls.credentials import BasicCredential
    from backchannel.mls.tree_validation import sign_leaf_node
    from backchannel.rooms import events as rev

    from .conftest import NOW, copy_room, room_group

    ids, (fac, ben, mal) = room_group(3)
    real = group_ops.update_leaf

    def forged(state):  # type: ignore[no-untyped-def]
        e = state.epoch
        leaf, key = real(state)
        leaf = dataclasses.replace(leaf, credential=BasicCredential(ids[1].identity_id))
        me = e.private_keys.leaf_index
        return sign_leaf_node(e.suite, leaf, state.signature_key, e.context.group_id, me), key

    monkeypatch.setattr(group_ops, "update_leaf", forged)
    proposal = mal._group.propose_update()
    monkeypatch.setattr(group_ops, "update_leaf", real)
    for r in (fac, ben):
        r.receive(proposal, now=NOW)
    hostile = copy_room(fac)  # what a modified facilitator would commit
    out = fac.self_update(now=NOW)  # the honest one: the bad proposal is left out
    fac.confirm_pending()
    assert not any(isinstance(e, rev.CommitRejected) for e in ben.receive(out.commit, now=NOW))
    assert sorted(m.member_id for m in ben.members()) == sorted(i.identity_id for i in ids)
    forced = hostile._group.commit(include_proposals=True, path=True, now=NOW)
    events = copy_room(mal).receive(forced.commit, now=NOW)
    assert [type(e) for e in events] == [rev.CommitRejected]


def test_I02_a_welcome_into_a_tree_with_a_shared_identity_is_refused() -> None:
    """A modified facilitator adds a second leaf with Ben's identity (every member
    refuses that commit); the newcomer it welcomes refuses to join such a tree."""
    import pytest

    from backchannel.rooms import events as rev
    from backchannel.rooms.errors import PolicyViolation
    from backchannel.rooms.room import Room

    from .conftest import NOW, identity, key_package, room_group

    ids, (fac, ben) = room_group(2)
    twin = dataclasses.replace(identity("twin"), identity_id=ids[1].identity_id)
    newcomer = key_package(identity("Chen"), NOW)
    out = fac._group.commit(
        add=[key_package(twin, NOW).key_package.to_bytes(), newcomer.key_package.to_bytes()],
        path=True,
        now=NOW,
    )
    assert [type(e) for e in ben.receive(out.commit, now=NOW)] == [rev.CommitRejected]
    assert out.welcome is not None
    with pytest.raises(PolicyViolation, match="two members with one identity"):
        Room.join(out.welcome, newcomer, now=NOW)


async def test_I02_a_self_update_under_another_identity_changes_nothing(  # type: ignore[no-untyped-def]
    net: Net, monkeypatch
) -> None:
    """Real clients: Mallory's self-update claims Farida's identity. It is refused;
    Mallory stays Mallory, and her posts and edits stay hers."""
    fac, ben, mal = [await net.party(n) for n in ("Farida", "Ben", "Mallory")]
    room = await net.room(fac, "Clause six", ben, mal)
    t1 = await fac.c.send(room, "We accept clause six.")
    await eventually(lambda: _has_text(mal, room, fac, t1.text), 30)
    stored = await mal.c.store.message(bytes.fromhex(room), bytes.fromhex(t1.id))
    assert stored is not None
    before = {p.name: p.state(room) for p in (fac, ben)}
    _forged_path(monkeypatch, fac.c.identity.identity_id)
    await mal.c.self_update(room)
    for p in (fac, ben):
        await eventually(lambda p=p: p.alerts("refused by the room's rules"), 30)
        assert p.state(room) == before[p.name]
    # Mallory's client thinks it moved on; nothing it sends now reaches anyone as anything.
    await hostile_post(mal, room, Edit(new_message_id(), ts(), stored.message_id, "REWRITTEN"))
    await hostile_post(mal, room, Text(new_message_id(), ts(), "Farida: I withdraw."))
    ben_saw = await ben.c.history(room, limit=50)
    await asyncio.sleep(1.0)
    for p in (fac, ben):
        texts = [(m.sender, m.text, m.edited) for m in await p.c.history(room, limit=50)]
        farida = fac.c.identity.identity_id.hex()
        assert (farida, "We accept clause six.", False) in texts
        assert not any(t == "Farida: I withdraw." for _, t, _ in texts)
    assert len(await ben.c.history(room, limit=50)) == len(ben_saw)


async def test_I03_a_future_clock_cannot_bury_what_is_said_after(net: Net) -> None:
    """Mallory stamps her messages in 2100: they would sort after everything said
    later and push it off the newest page. A message is never placed later than it
    reached the device."""
    fac, ben, mal = [await net.party(n) for n in ("Farida", "Ben", "Mallory")]
    room = await net.room(fac, "Clocks", ben, mal)
    year_2100 = 4_102_444_800_000
    for n in range(3):
        await hostile_post(mal, room, Text(new_message_id(), year_2100 + n, f"pinned {n}"))
    await _settle(net, mal, room, fac, ben)
    urgent = await fac.c.send(room, "URGENT: the venue has changed.")
    await eventually(lambda: _has_text(ben, room, fac, urgent.text), 30)
    for p in (fac, ben):
        newest = await p.c.history(room, limit=1)
        assert [m.text for m in newest] == [urgent.text], p.name
        assert all(m.time <= time.time() + 1 for m in await p.c.history(room, limit=50))


async def test_I04_a_member_cannot_pass_for_another_by_name(net: Net) -> None:
    """Mallory announces Farida's name (with other case and an accent). Everyone sees
    two different people: each name carries the start of its member id, and an alert
    says so. The real Farida is still the one verified."""
    from backchannel.rooms.content import Profile

    fac, ben, mal = [await net.party(n) for n in ("Farida", "Ben", "Mallory")]
    room = await net.room(fac, "Names", ben, mal)
    await hostile_post(mal, room, Profile(new_message_id(), ts(), "FARÍDA"))
    await hostile_post(mal, room, Text(new_message_id(), ts(), "I accept in full."))
    await _settle(net, mal, room, fac, ben)
    farida, mallory = fac.c.identity.identity_id.hex(), mal.c.identity.identity_id.hex()
    for p in (fac, ben):
        shown = {m.id: m.name for m in await p.c.members(room)}
        assert shown[farida] == f"Farida ({farida[:6]})"
        assert shown[mallory] == f"FARÍDA ({mallory[:6]})"
        said = [m for m in await p.c.history(room, limit=50) if m.text == "I accept in full."]
        assert [m.sender_name for m in said] == [f"FARÍDA ({mallory[:6]})"]
        assert p.alerts("go by the same name")
    # Ben's own name, shared with nobody, stays as it is.
    assert {m.name for m in await fac.c.members(room)} >= {"Ben"}


def test_I04_look_alike_names_read_the_same() -> None:
    """What a reader cannot tell apart on a screen counts as the same name."""
    from backchannel.stored_views import name_key, shown_names

    same = ["Farida", "F\u0430rida", "FAR\u00cdDA", "Far\u3164ida", "Fa\u200brida", "Farida "]
    assert len({name_key(n) for n in same}) == 1
    assert name_key("bill") == name_key("biII") and name_key("Ola") == name_key("0la")
    assert name_key("Farida") != name_key("Faride") and name_key("Ann") != name_key("Anne")
    shown = shown_names({b"\x01" * 16: "Farida", b"\x02" * 16: "F\u0430rida", b"\x03" * 16: "Ben"})
    assert shown == {
        b"\x01" * 16: "Farida (010101)",
        b"\x02" * 16: "F\u0430rida (020202)",
        b"\x03" * 16: "Ben",
    }
