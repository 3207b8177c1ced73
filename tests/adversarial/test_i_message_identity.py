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
        assert dropped.get("Only the sender of a message may edit or delete it.") == 1
        assert dropped.get("A file chunk must come from the sender of its file.") == 1
        assert dropped.get("A file chunk named a file its sender never sent here.") == 1


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
