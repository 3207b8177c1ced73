"""A facilitator and participants, each a real profile, talking through a real relay."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backchannel.errors import BackchannelError
from backchannel.store import StoreError
from backchannel.store.records import Message, OutboxEntry
from backchannel.store.repository import StoreTransaction
from backchannel.transport.errors import Denied, Unreachable
from backchannel.transport.session import MailboxCapability, RelaySession
from backchannel.views import JoinAnswered, JoinRequested, MembersChanged, RoomChanged
from relay.app import create_app
from tests.conftest import relay_config

from .harness import Person, eventually, false_alarms, wait_event


@pytest.fixture
async def relay_url(tmp_path: Path) -> AsyncIterator[str]:
    config = relay_config(tmp_path)
    runner = web.AppRunner(create_app(config), access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/ws"
    await runner.cleanup()


@pytest.fixture
async def people(tmp_path: Path, relay_url: str) -> AsyncIterator[dict[str, Person]]:
    names = ["Farida", "Ben", "Chen", "Dana"]
    crowd = {n: Person(n, tmp_path / n.lower(), relay_url) for n in names}
    for p in crowd.values():
        await p.start(create=True)
    yield crowd
    for p in crowd.values():
        await p.stop()
    for p in crowd.values():
        assert false_alarms(p) == [], (p.name, false_alarms(p))


async def _texts(person: Person, room: str) -> list[str]:
    return [m.text for m in await person.c.history(room, limit=500) if m.kind == "text"]


async def _join(fac: Person, joiner: Person, room: str, *, approve: bool = True) -> str:
    link = await fac.c.invite(room)
    rid = await joiner.c.join(link)
    request = await wait_event(fac, JoinRequested)
    fac.seen.remove(request)
    assert request.request.name == joiner.name
    if approve:
        await fac.c.approve(room, request.request.id)
    else:
        await fac.c.deny(room, request.request.id)
    answer = await joiner.c.wait_join(rid, 20)
    assert answer is not None and answer.approved is approve
    return rid


async def test_create_invite_approve_chat_and_remove(people: dict[str, Person]) -> None:
    fac, ben, chen = people["Farida"], people["Ben"], people["Chen"]
    room = (await fac.c.create_room("Water talks")).id
    await _join(fac, ben, room)
    await _join(fac, chen, room)
    await fac.c.send(room, "welcome, both")
    await ben.c.send(room, "hello from Ben")
    for p in (fac, ben, chen):
        await eventually(
            lambda p=p: _has_all(p, room, {"welcome, both", "hello from Ben"}), timeout=30
        )
    # everyone learns everyone's name
    await eventually(lambda: _names(chen, room, {"Farida", "Ben", "Chen"}), timeout=30)
    members = await fac.c.members(room)
    assert {m.name for m in members} >= {"Farida", "Ben", "Chen"}
    assert {m.role for m in members if m.name == "Farida"} == {"facilitator"}

    await fac.c.remove(room, "Ben")
    await fac.c.send(room, "after Ben left")
    await eventually(lambda: _has_all(chen, room, {"after Ben left"}), timeout=30)
    await ben.c.sync()
    assert "after Ben left" not in await _texts(ben, room) if _in_room(ben, room) else True
    with pytest.raises(BackchannelError):
        await ben.c.send(room, "let me back in")


async def test_a_newcomer_is_told_when_it_learns_the_facilitators_name(
    people: dict[str, Person],
) -> None:
    fac, ben = people["Farida"], people["Ben"]
    room = (await fac.c.create_room("Names")).id
    await _join(fac, ben, room)
    # Farida's name reaches Ben in her announcement after the commit that added him
    # (his room appeared, with a RoomChanged, before his join was answered). An event
    # must say so, or a members list on Ben's screen keeps "member 0eae8b".
    await wait_event(ben, JoinAnswered)  # read from Ben's event stream, not only answered
    joined = next(i for i, e in enumerate(ben.seen) if isinstance(e, JoinAnswered))
    await eventually(
        lambda: any(isinstance(e, RoomChanged) and e.room == room for e in ben.seen[joined:]),
        timeout=30,
    )
    assert "Farida" in {m.name for m in await ben.c.members(room)}
    # A name is not a membership change: only a commit says who joined or left.
    assert not [e for e in ben.seen[joined:] if isinstance(e, MembersChanged)]


async def test_a_denied_request_is_told_and_adds_no_one(people: dict[str, Person]) -> None:
    fac, dana = people["Farida"], people["Dana"]
    room = (await fac.c.create_room("Closed")).id
    await _join(fac, dana, room, approve=False)
    assert [m.name for m in await fac.c.members(room)] == ["Farida"]
    assert await dana.c.rooms() == []


async def test_auto_approval_adds_without_a_facilitator_action(people: dict[str, Person]) -> None:
    fac, chen = people["Farida"], people["Chen"]
    room = (await fac.c.create_room("Open door", approval="auto")).id
    link = await fac.c.invite(room, uses=5)
    rid = await chen.c.join(link)
    answer = await chen.c.wait_join(rid, 30)
    assert isinstance(answer, JoinAnswered) and answer.approved and answer.room == room
    await chen.c.send(room, "auto hello")
    await eventually(lambda: _has_all(fac, room, {"auto hello"}), timeout=30)


async def _has_all(p: Person, room: str, texts: set[str]) -> bool:
    try:
        return texts <= set(await _texts(p, room))
    except BackchannelError:
        return False


async def _names(p: Person, room: str, names: set[str]) -> bool:
    return names <= {m.name for m in await p.c.members(room)}


def _in_room(p: Person, room: str) -> bool:
    try:
        p.c.engine.resolve_room(room)
    except BackchannelError:
        return False
    return True


async def test_a_file_arrives_whole_and_checked(people: dict[str, Person], tmp_path: Path) -> None:
    fac, ben = people["Farida"], people["Ben"]
    room = (await fac.c.create_room("Documents")).id
    await _join(fac, ben, room)
    data = os.urandom(300_000)  # three chunks
    source = tmp_path / "draft-agreement.pdf"
    source.write_bytes(data)
    sent = await fac.c.send_file(room, source)
    assert sent.file is not None and sent.file.size == len(data)

    async def arrived() -> bool:
        files = [m for m in await ben.c.history(room) if m.kind == "file"]
        return bool(files) and files[0].file is not None and files[0].file.complete

    await eventually(arrived, timeout=30)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    saved = await ben.c.save_file(room, sent.id, downloads)
    assert saved.name == "draft-agreement.pdf" and saved.read_bytes() == data
    with pytest.raises(BackchannelError, match="exists already"):  # never replaced unasked
        await ben.c.save_file(room, sent.id, downloads)
    too_big = tmp_path / "huge.bin"
    with too_big.open("wb") as f:
        f.truncate(65 * 1024 * 1024)
    with pytest.raises(BackchannelError, match="too large"):
        await fac.c.send_file(room, too_big)


async def test_restarts_mid_conversation_lose_and_duplicate_nothing(
    people: dict[str, Person],
) -> None:
    fac, ben = people["Farida"], people["Ben"]
    room = (await fac.c.create_room("Restarts")).id
    await _join(fac, ben, room)
    await fac.c.send(room, "one")
    await ben.stop()  # Ben is offline while Farida writes
    await fac.c.send(room, "two")
    await fac.c.send(room, "three")
    await fac.stop()
    await fac.start()
    await ben.start()
    await ben.c.send(room, "four")
    await fac.c.send(room, "five")
    expected = ["one", "two", "three", "four", "five"]
    for p in (fac, ben):
        await eventually(lambda p=p: _has_all(p, room, set(expected)), timeout=30)
    await fac.c.sync()
    await ben.c.sync()
    for p in (fac, ben):
        texts = await _texts(p, room)
        assert sorted(texts) == sorted(expected), texts  # each exactly once


async def test_the_relay_keeps_no_plaintext_names_or_titles(
    people: dict[str, Person], tmp_path: Path
) -> None:
    fac, ben = people["Farida"], people["Ben"]
    room = (await fac.c.create_room("Kashmir water sharing")).id
    await _join(fac, ben, room)
    await ben.c.send(room, "the northern reservoir proposal")
    await eventually(lambda: _has_all(fac, room, {"the northern reservoir proposal"}))
    await fac.c.sync()
    relay_files = [p for p in (tmp_path / "relay").rglob("*") if p.is_file()]
    assert relay_files
    blob = b"".join(p.read_bytes() for p in relay_files)
    for secret in ("Kashmir water", "northern reservoir", "Farida", "Ben"):
        for form in (secret.encode(), secret.encode("utf-16-le")):
            assert form not in blob, secret


async def test_a_removed_member_cannot_reach_the_new_mailbox(people: dict[str, Person]) -> None:
    fac, ben, chen = people["Farida"], people["Ben"], people["Chen"]
    room = (await fac.c.create_room("Removal")).id
    await _join(fac, ben, room)
    await _join(fac, chen, room)
    room_id = bytes.fromhex(room)
    old = ben.c.engine._live[room_id].meta.access
    await fac.c.remove(room, "Ben")
    await eventually(lambda: room_id not in ben.c.engine._live, timeout=30)
    new = fac.c.engine._live[room_id].meta.access
    assert new.mailbox != old.mailbox
    await fac.c.send(room, "said after the removal")
    await eventually(lambda: _has_all(chen, room, {"said after the removal"}), timeout=30)
    # Through the relay: Ben's keys open neither the new mailbox for reading nor for posting.
    session = await RelaySession.connect(fac.relay_url)
    try:
        stolen = MailboxCapability(
            new.mailbox,
            *(Ed25519PrivateKey.from_private_bytes(s) for s in (old.read_seed, old.write_seed)),
        )
        for role in ("read", "write"):
            with pytest.raises(Denied):
                await session.auth(stolen, role)
        # ... and the old mailbox, which he can still read up to his removal, is sealed.
        old_cap = MailboxCapability(
            old.mailbox, write=Ed25519PrivateKey.from_private_bytes(old.write_seed)
        )
        with pytest.raises(Denied):
            await session.auth(old_cap, "write")
    finally:
        await session.close()
    # In his own store: nothing after the removal.
    assert "said after the removal" not in [
        m.body for m in await ben.c.store.history(room_id, limit=500)
    ]
    assert await ben.c.rooms() == []


async def test_two_facilitators_commit_at_once_and_both_changes_apply(
    people: dict[str, Person],
) -> None:
    fac, ben, chen, dana = (people[n] for n in ("Farida", "Ben", "Chen", "Dana"))
    room = (await fac.c.create_room("Co-chairs")).id
    await _join(fac, ben, room)
    await fac.c.set_role(room, "Ben", "facilitator")
    await eventually(lambda: _role(ben, room, "Ben", "facilitator"), timeout=30)
    link_f = await fac.c.invite(room)
    link_b = await ben.c.invite(room)
    rid_c = await chen.c.join(link_f)
    rid_d = await dana.c.join(link_b)
    req_c = await wait_event(fac, JoinRequested)
    req_d = await wait_event(ben, JoinRequested)
    await asyncio.gather(
        fac.c.approve(room, req_c.request.id), ben.c.approve(room, req_d.request.id)
    )
    for rid, p in ((rid_c, chen), (rid_d, dana)):
        answer = await p.c.wait_join(rid, 30)
        assert answer is not None and answer.approved
    for p in (fac, ben, chen, dana):
        await eventually(lambda p=p: _names(p, room, {"Farida", "Ben", "Chen", "Dana"}), timeout=30)
    epochs = {p.c.engine._live[bytes.fromhex(room)].room.epoch for p in (fac, ben, chen, dana)}
    assert len(epochs) == 1


async def _role(p: Person, room: str, name: str, role: str) -> bool:
    return any(m.name == name and m.role == role for m in await p.c.members(room))


async def test_safety_numbers_match_and_verification_sticks(people: dict[str, Person]) -> None:
    fac, ben = people["Farida"], people["Ben"]
    room = (await fac.c.create_room("Verify")).id
    await _join(fac, ben, room)
    await eventually(lambda: _names(ben, room, {"Farida", "Ben"}), timeout=30)
    them, mine = await fac.c.safety_number(room, "Ben")
    _, theirs = await ben.c.safety_number(room, "Farida")
    assert mine == theirs and len(mine.split()) == 12
    assert not them.verified
    marked = await fac.c.verify(room, "Ben")
    assert marked.verified and not marked.key_changed
    assert [m.verified for m in await fac.c.members(room) if m.name == "Ben"] == [True]


async def test_retention_erases_old_messages_and_sets_relay_ttls(
    people: dict[str, Person],
) -> None:
    fac, ben = people["Farida"], people["Ben"]
    room = (await fac.c.create_room("Ephemeral", retention_seconds=60)).id
    await _join(fac, ben, room)
    summary = await ben.c.room(room)
    assert summary.retention_seconds == 60
    await fac.c.send(room, "gone soon")
    await eventually(lambda: _has_all(ben, room, {"gone soon"}), timeout=30)
    entries = await fac.c.store.pending()
    assert entries == []  # sent; its append carried the room's TTL (see ttl_for)
    assert (
        fac.c.engine.ttl_for(
            OutboxEntry(b"k" * 16, b"m" * 16, b"x", 0.0, room_id=bytes.fromhex(room))
        )
        == 60
    )
    for p in (fac, ben):
        p.c.engine._clock = lambda: time.time() + 61  # a minute later
        assert await p.c.engine.erase_expired() >= 1
        assert "gone soon" not in await _texts(p, room)


async def test_a_commit_accepted_just_before_a_crash_is_completed_after_restart(
    people: dict[str, Person],
) -> None:
    """The relay stored the Add commit but the client died before saving that: no fork."""
    fac, ben, chen = people["Farida"], people["Ben"], people["Chen"]
    room = (await fac.c.create_room("Crash")).id
    await _join(fac, chen, room)
    link = await fac.c.invite(room)
    rid = await ben.c.join(link)
    request = await wait_event(fac, JoinRequested)
    connection = fac.c.connection
    assert connection is not None
    real_append = connection.append

    async def append_then_die(*args: Any, **kwargs: Any) -> Any:
        result = await real_append(*args, **kwargs)
        if kwargs.get("epoch") is not None:
            raise Unreachable("simulated crash after the relay stored the commit")
        return result

    connection.append = append_then_die  # type: ignore[method-assign]
    with pytest.raises(BackchannelError, match="retried"):
        await fac.c.approve(room, request.request.id)
    await fac.stop()
    await fac.start()  # offers the saved commit again with the same idempotency key
    answer = await ben.c.wait_join(rid, 30)
    assert answer is not None and answer.approved
    await ben.c.send(room, "made it")
    for p in (fac, chen):
        await eventually(lambda p=p: _has_all(p, room, {"made it"}), timeout=30)
    epochs = {p.c.engine._live[bytes.fromhex(room)].room.epoch for p in (fac, ben, chen)}
    assert len(epochs) == 1


async def test_a_failed_write_changes_nothing_and_the_entry_is_read_again(
    people: dict[str, Person],
) -> None:
    fac, ben = people["Farida"], people["Ben"]
    room = (await fac.c.create_room("Disk trouble")).id
    await _join(fac, ben, room)
    await ben.c.sync()
    room_id = bytes.fromhex(room)
    saved = ben.c.engine._live[room_id].record.state
    real_add = StoreTransaction.add_message
    failures = []

    async def failing_add(self: StoreTransaction, message: Message) -> bool:
        if message.body == "lost?" and not failures:
            failures.append(message)
            raise StoreError("simulated full disk")
        return await real_add(self, message)

    StoreTransaction.add_message = failing_add  # type: ignore[method-assign]
    try:
        await fac.c.send(room, "lost?")
        await eventually(lambda: bool(failures), timeout=30)
        await ben.c.sync()
        assert ben.c.engine._live[room_id].record.state == saved  # memory = disk
        assert "lost?" not in await _texts(ben, room)
    finally:
        StoreTransaction.add_message = real_add  # type: ignore[method-assign]
    await ben.stop()
    await ben.start()  # the entry's cursor never moved: it is read again
    await eventually(lambda: _has_all(ben, room, {"lost?"}), timeout=30)
    await fac.c.send(room, "and after")
    await eventually(lambda: _has_all(ben, room, {"and after"}), timeout=30)


async def test_replies_edits_deletes_and_reactions_reach_everyone(
    people: dict[str, Person],
) -> None:
    fac, ben = people["Farida"], people["Ben"]
    room = (await fac.c.create_room("Threads")).id
    await _join(fac, ben, room)
    first = await fac.c.send(room, "proposal A")
    await eventually(lambda: _has_all(ben, room, {"proposal A"}), timeout=30)
    reply = await ben.c.send(room, "I agree with A", reply_to=first.id)
    await ben.c.react(room, first.id, "👍")
    await fac.c.edit(room, first.id, "proposal A, revised")

    async def settled() -> bool:
        views = {m.id: m for m in await fac.c.history(room)}
        mine = {m.id: m for m in await ben.c.history(room)}
        return (
            reply.id in views
            and views[reply.id].reply_to == first.id
            and [(r.emoji, r.count, r.mine) for r in views[first.id].reactions]
            == [("👍", 1, False)]
            and [(r.emoji, r.mine) for r in mine[first.id].reactions] == [("👍", True)]
            and mine[first.id].text == "proposal A, revised"
            and mine[first.id].edited
        )

    await eventually(settled, timeout=30)
    with pytest.raises(BackchannelError, match="your own"):
        await ben.c.edit(room, first.id, "rewriting history")
    await ben.c.react(room, first.id, "👍", remove=True)
    await fac.c.delete(room, first.id)

    async def gone() -> bool:
        views = {m.id: m for m in await ben.c.history(room)}
        return (
            views[first.id].deleted and views[first.id].text == "" and not views[first.id].reactions
        )

    await eventually(gone, timeout=30)


async def test_unread_counts_drop_when_a_room_is_read(people: dict[str, Person]) -> None:
    fac, ben = people["Farida"], people["Ben"]
    room = (await fac.c.create_room("Unread")).id
    await _join(fac, ben, room)
    await ben.c.mark_read(room)
    for text in ("one", "two", "three"):
        await fac.c.send(room, text)

    async def three() -> bool:
        return (await ben.c.room(room)).unread == 3

    await eventually(three, timeout=30)
    assert (await fac.c.room(room)).unread == 0  # own messages never count, read or not
    await ben.c.mark_read(room)
    assert (await ben.c.room(room)).unread == 0


async def test_room_settings_change_for_everyone_and_only_by_facilitators(
    people: dict[str, Person],
) -> None:
    fac, ben = people["Farida"], people["Ben"]
    room = (await fac.c.create_room("Draft title")).id
    await _join(fac, ben, room)
    await fac.c.update_room(room, title="Final title", approval="auto", retention_seconds=86400)

    async def changed() -> bool:
        s = await ben.c.room(room)
        return (s.title, s.approval, s.retention_seconds) == ("Final title", "auto", 86400)

    await eventually(changed, timeout=30)
    with pytest.raises(BackchannelError, match="facilitator"):
        await ben.c.update_room(room, title="Mine now")
    with pytest.raises(BackchannelError, match="not possible"):
        await fac.c.update_room(room, retention_seconds=5)
    assert (await fac.c.room(room)).title == "Final title"


async def test_room_check_codes_match_across_members_and_change_with_the_epoch(
    people: dict[str, Person],
) -> None:
    fac, ben = people["Farida"], people["Ben"]
    room = (await fac.c.create_room("Codes")).id
    await _join(fac, ben, room)
    await ben.c.sync()
    code = fac.c.room_code(room)
    assert code == ben.c.room_code(room) and len(code.split()) == 5
    await fac.c.self_update(room)

    async def moved_on() -> bool:
        return ben.c.room_code(room) == fac.c.room_code(room) != code

    await eventually(moved_on, timeout=30)
