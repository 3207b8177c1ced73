"""A09-A12: roles belong to members in the tree; a leave completes; a re-admitted member rejoins.

Issue #16, items 3, 6 and 10, with real clients through a real relay (each behind a
:class:`~.hostile_relay.HostileRelay` that stays honest unless a test says otherwise):

* A09: a committed leave dropped none of the leaver's role, and a joiner picks its
  own credential identity. A newcomer whose modified client claimed a departed
  co-facilitator's id joined as facilitator, removed the creator and renamed the
  room. Now the leave's committer drops the role in the same commit, and every
  client refuses an Add of an identity that still has a role entry, however the
  entry was left behind (here: a leave committed by a participant);
* A10: the last facilitator's leave was sent, and nobody could commit it: she stayed
  and kept reading while the command line said "Left". Now it fails before anything
  is sent, and goes through once she has handed the role on;
* A11: a leave is a proposal for one epoch; a commit that landed first dropped it
  silently. Now the leaver proposes again until a commit removes it, and the
  command line says "Left" only then;
* A12: a removed member invited again on the same profile refused the Welcome as "a
  room you already have", while the others saw him as a member (a ghost). Now the
  old room is archived and he rejoins; a Welcome still never replaces a room the
  profile is in (E04, tests/adversarial/test_e_parsing.py).

Every scenario also checks that no security alarm went off (``false_alarms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from backchannel.cli import cli
from backchannel.engine import commits as engine_commits
from backchannel.errors import BackchannelError
from backchannel.rooms.policy import Role
from backchannel.rooms.room import Room
from backchannel.views import JoinRequested
from tests.e2e.harness import PASSPHRASE, eventually, false_alarms

from .conftest import Net, Party, copy_room, readdress
from .hostile_relay import Frame, Link


def _id(p: Party) -> bytes:
    return p.c.identity.identity_id


def _roles(p: Party, room: str) -> dict[bytes, Role]:
    return dict(p.live(room).room.policy.roles)


def _no_alarms(*parties: Party) -> None:
    for p in parties:
        assert false_alarms(p.person) == [], p.name


async def _approve_next(fac: Party, room: str) -> None:
    """Approve the first join request not yet answered."""
    request = await _next_request(fac)
    await fac.c.approve(room, request.request.id)


async def _next_request(fac: Party) -> JoinRequested:
    found: list[JoinRequested] = []

    def check() -> bool:
        found[:] = [e for e in fac.seen if isinstance(e, JoinRequested)]
        return bool(found)

    await eventually(check, 20)
    fac.seen.remove(found[0])
    return found[0]


def _claim(p: Party, member_id: bytes) -> None:
    """Make ``p``'s client a modified one that names ``member_id`` in its credential.

    The signature key stays its own (the departed member's key is not needed: an
    identity is whatever the key package says), so its safety number is its own.
    """
    engine = p.c.engine
    engine.identity = dataclasses.replace(engine.identity, identity_id=member_id)
    engine._me = member_id


async def _append_commits(p: Party, room: str, epoch: int, *commits: bytes) -> None:
    """Append commits made from copies of ``p``'s state at MLS ``epoch``, each with the
    relay's compare-and-set for the next relay epoch, as a modified client would: every
    member reads them from the relay."""
    access = p.live(room).meta.access
    for i, commit in enumerate(commits):
        await p.c.connection.append(
            access.mailbox, p.seal(room, commit), epoch=access.relay_epoch(epoch) + i, timeout=10
        )


async def _in_sync(room: str, *parties: Party) -> None:
    first = parties[0]
    for p in parties[1:]:
        await eventually(lambda p=p: p.state(room)[:2] == first.state(room)[:2], 20)


async def _left(p: Party, room: str) -> bool:
    return bytes.fromhex(room) not in p.c.engine._live


# -- A09: a departed facilitator's id -------------------------------------------------------


async def test_A09_a_newcomer_claiming_a_departed_facilitators_id_gets_no_role(
    net: Net,
) -> None:
    fac, chen, ben = [await net.party(n) for n in ("Farida", "Chen", "Ben")]
    room = await net.room(fac, "Clause four", chen, ben)
    await fac.c.set_role(room, "Chen", "facilitator")
    await eventually(lambda: _roles(ben, room).get(_id(chen)) is Role.FACILITATOR, 20)
    chen_id = _id(chen)

    # Chen leaves; Farida's client commits it and drops Chen's role in the same commit.
    await chen.c.leave(room)
    assert await chen.c.wait_left(room, 30)
    await _in_sync(room, fac, ben)
    for p in (fac, ben):
        assert p.state(room)[2] == {_id(fac), _id(ben)}
        assert chen_id not in _roles(p, room), p.name

    # Mallory's modified client asks to join under Chen's id, and is approved.
    mal = await net.party("Mallory")
    _claim(mal, chen_id)
    rid = await mal.c.join(readdress(await fac.c.invite(room), mal.proxy.url))
    await _approve_next(fac, room)
    answer = await mal.c.wait_join(rid, 30)
    assert answer is not None and answer.approved
    await _in_sync(room, fac, ben, mal)
    for p in (fac, ben, mal):
        assert p.live(room).room.policy.role_of(chen_id) is Role.PARTICIPANT, p.name
    before = {p.name: p.state(room) for p in (fac, ben)}

    # As a participant her commits are refused by every client: remove the creator,
    # rename the room (signed correctly, from her own state, through the relay).
    base = mal.live(room).room
    leaves = {m.member_id: m.leaf_index for m in base.members()}
    now = int(time.time())
    removal = copy_room(base)._group.commit(
        remove=[leaves[_id(fac)]], now=now, include_proposals=False
    )
    forged = copy_room(base)
    renamed = dataclasses.replace(forged.policy, title="Mallory's room")
    rename = forged._group.commit(
        extensions=forged._extensions_with(renamed), now=now, include_proposals=False
    )
    await _append_commits(mal, room, base.epoch, removal.commit, rename.commit)
    await eventually(lambda: len(ben.alerts("refused by the room's rules")) >= 2, 20)
    for p in (fac, ben):
        assert p.state(room) == before[p.name], p.name
        assert p.live(room).room.policy.title == "Clause four"
    _no_alarms(fac, ben, chen)


async def test_A09_a_role_entry_left_behind_cannot_be_claimed(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Farida's client does not count the commit made from a copy of her own state (it
    # reads as her own): her next commit learns the relay's epoch after a short wait.
    monkeypatch.setattr(engine_commits, "CATCH_UP_SECONDS", 1.0)
    fac, chen, ben = [await net.party(n) for n in ("Farida", "Chen", "Ben")]
    room = await net.room(fac, "Backchannel", chen, ben)
    await fac.c.set_role(room, "Chen", "facilitator")
    await eventually(lambda: _roles(ben, room).get(_id(chen)) is Role.FACILITATOR, 20)
    chen_id, fac_id = _id(chen), _id(fac)

    # Farida is offline; Chen leaves, and Ben (a participant) commits the leave with his
    # key update: a participant may not change the policy, so Chen's entry stays.
    await fac.person.stop()
    await chen.c.leave(room)
    await eventually(lambda: ben.live(room).room.proposals_waiting, 20)
    await ben.c.self_update(room)
    assert await chen.c.wait_left(room, 30)
    assert ben.state(room)[2] == {fac_id, _id(ben)}
    assert _roles(ben, room)[chen_id] is Role.FACILITATOR  # left behind
    await fac.person.start()
    await _in_sync(room, fac, ben)

    # Mallory's key package names Chen's id. A facilitator's commit that adds her and
    # keeps the entry (what a client that does not check would send) is refused by
    # every member alike.
    mal = await net.party("Mallory")
    _claim(mal, chen_id)
    ident = mal.c.engine.identity
    kp = Room.key_package(
        ident.cipher_suite, ident.credential(), ident.private_key(), now=int(time.time())
    )
    before = ben.state(room)
    base = fac.live(room).room
    careless = copy_room(base)._group.commit(
        add=[kp.key_package.to_bytes()], now=int(time.time()), include_proposals=False
    )
    await _append_commits(fac, room, base.epoch, careless.commit)
    await eventually(lambda: ben.alerts("still has a role"), 20)
    assert ben.state(room) == before

    # Farida's own client, approving the same claim, drops the entry in the Add's
    # commit: Mallory comes in as a participant, nothing more.
    rid = await mal.c.join(readdress(await fac.c.invite(room), mal.proxy.url))
    await _approve_next(fac, room)
    answer = await mal.c.wait_join(rid, 30)
    assert answer is not None and answer.approved
    await _in_sync(room, fac, ben, mal)
    for p in (fac, ben, mal):
        assert chen_id not in _roles(p, room), p.name
        assert p.live(room).room.policy.role_of(chen_id) is Role.PARTICIPANT
    with pytest.raises(BackchannelError, match="Only a facilitator"):
        await mal.c.remove(room, "Farida")
    assert fac.state(room)[2] == {_id(fac), _id(ben), chen_id}
    _no_alarms(fac, ben, chen)


# -- A10: the last facilitator --------------------------------------------------------------


async def test_A10_the_last_facilitator_cannot_leave_until_she_hands_the_role_on(
    net: Net,
) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Handover", ben)
    sent = len(fac.proxy.append_frames(fac.mailbox(room)))
    before = fac.state(room)
    with pytest.raises(BackchannelError, match="last facilitator"):
        await fac.c.leave(room)
    with contextlib.suppress(BackchannelError):
        await fac.c.sync(timeout=3)
    # nothing was sent, nothing changed, and nothing is waiting to go
    assert len(fac.proxy.append_frames(fac.mailbox(room))) == sent
    assert fac.state(room) == before
    assert not fac.live(room).room.leaving
    assert await fac.c.store.pending() == []

    # Alone in a room, nobody could let her go either.
    solo = (await fac.c.create_room("Solo")).id
    with pytest.raises(BackchannelError, match="only member"):
        await fac.c.leave(solo)

    # Handing the role on first: the leave goes through, and her role goes with her.
    await fac.c.set_role(room, "Ben", "facilitator")
    await _in_sync(room, fac, ben)
    await fac.c.leave(room)
    assert await fac.c.wait_left(room, 30)
    await eventually(lambda: ben.state(room)[2] == {_id(ben)}, 20)
    assert _roles(ben, room) == {_id(ben): Role.FACILITATOR}
    _no_alarms(fac, ben)


# -- A11: a leave that a commit overtakes ---------------------------------------------------


async def test_A11_a_leave_overtaken_by_a_commit_is_proposed_again(net: Net) -> None:
    fac, ben, chen = [await net.party(n) for n in ("Farida", "Ben", "Chen")]
    room = await net.room(fac, "Overtaken", ben, chen)
    mailbox = ben.mailbox(room)
    held: list[Frame] = []
    holding = True

    async def hold(link: Link, f: Frame) -> list[Frame] | None:
        # Ben's posts to the room wait in the proxy: his leave reaches the relay only
        # after Farida's next commit, for an epoch that is over.
        if holding and f.get("op") == "append" and f.get("mailbox") == mailbox:
            held.append(f)
            return []
        return None

    ben.proxy.on_up = hold
    await ben.c.leave(room)
    await eventually(lambda: bool(held), 20)
    assert not await ben.c.wait_left(room, 0.5)  # nobody has let him go
    epoch = fac.state(room)[0]
    await fac.c.update_room(room, title="Overtaken, renamed")
    await eventually(lambda: ben.state(room)[0] > epoch, 20)
    holding = False
    for f in held:
        await ben.proxy.link.to_relay(f)
    # Farida's client drops the stale proposal; Ben's proposes again in the new epoch.
    assert await ben.c.wait_left(room, 30)
    await _in_sync(room, fac, chen)
    assert fac.state(room)[2] == {_id(fac), _id(chen)}
    assert fac.live(room).room.policy.title == "Overtaken, renamed"
    assert await ben.c.store.get_setting("leaving/" + room) is None
    _no_alarms(fac, ben, chen)


def _bc(home: Path, *args: str) -> Result:
    env = {"BACKCHANNEL_PASSPHRASE": PASSPHRASE, "BACKCHANNEL_PROXY": None}
    env |= {"BACKCHANNEL_HOME": None, "BACKCHANNEL_LOG": None}
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=env, catch_exceptions=False)


async def _run(home: Path, *args: str) -> Result:
    """One command in a thread: it runs its own event loop while this one serves the clients."""
    return await asyncio.to_thread(_bc, home, *args)


async def test_A11_the_command_line_says_left_only_once_out(net: Net, tmp_path: Path) -> None:
    fac = await net.party("Farida")
    room = (await fac.c.create_room("Command line", approval="auto")).id
    home = tmp_path / "ben-cli"
    assert (await _run(home, "init", "--name", "Ben", "--relay", net.relay_url)).exit_code == 0
    link = readdress(await fac.c.invite(room), net.relay_url)
    joined = await _run(home, "--json", "join", link, "--wait", "30")
    assert json.loads(joined.stdout)["status"] == "approved", joined.output

    # Farida is away: nobody can let Ben go yet. The command says so (exit 2).
    await fac.person.stop()
    waiting = await _run(home, "leave", room, "--wait", "2")
    assert waiting.exit_code == 2, waiting.output
    assert waiting.stdout == ""
    assert "Not out yet" in waiting.stderr
    rooms = json.loads((await _run(home, "--json", "rooms")).stdout)
    assert [r["id"] for r in rooms] == [room]

    # Farida's client commits the waiting leave as soon as it reads it.
    await fac.person.start()
    await eventually(lambda: len(fac.state(room)[2]) == 1, 30)
    synced = await _run(home, "--json", "rooms")
    assert json.loads(synced.stdout) == [], synced.output

    # A member whose leave a facilitator lets go while the command waits: "Left".
    home2 = tmp_path / "chen-cli"
    assert (await _run(home2, "init", "--name", "Chen", "--relay", net.relay_url)).exit_code == 0
    link = readdress(await fac.c.invite(room), net.relay_url)
    joined = await _run(home2, "--json", "join", link, "--wait", "30")
    assert json.loads(joined.stdout)["status"] == "approved", joined.output
    left = await _run(home2, "leave", room)
    assert left.exit_code == 0, left.output
    assert left.stdout.startswith("Left the room")
    _no_alarms(fac)


# -- A12: re-admission on the same profile ---------------------------------------------------


async def test_A12_a_removed_member_invited_again_rejoins(net: Net) -> None:
    fac, ben = await net.party("Farida"), await net.party("Ben")
    room = await net.room(fac, "Second chance", ben)
    await ben.c.send(room, "before the break")
    await eventually(lambda: _has(fac, room, "before the break"), 20)
    await fac.c.remove(room, "Ben")
    await eventually(lambda: _left(ben, room), 20)

    rid = await ben.c.join(readdress(await fac.c.invite(room), ben.proxy.url))
    await _approve_next(fac, room)
    answer = await ben.c.wait_join(rid, 30)
    assert answer is not None and answer.approved and answer.room == room
    await _in_sync(room, fac, ben)
    assert fac.state(room)[2] == ben.state(room)[2] == {_id(fac), _id(ben)}
    await ben.c.send(room, "back again")
    await eventually(lambda: _has(fac, room, "back again"), 20)
    await fac.c.send(room, "welcome back")
    await eventually(lambda: _has(ben, room, "welcome back"), 20)
    # The old membership is archived: kept, apart, never shown as part of the new one.
    assert "before the break" not in await ben.texts(room)
    archived = [r for r in await ben.c.store.rooms(include_left=True) if not r.joined]
    assert len(archived) == 1 and archived[0].state is None
    old = await ben.c.store.history(archived[0].room_id, limit=50)
    assert "before the break" in [m.body for m in old]
    assert [r.id for r in await ben.c.rooms()] == [room]
    assert not ben.alerts("already have")
    _no_alarms(fac, ben)


async def _has(p: Party, room: str, text: str) -> bool:
    return text in await p.texts(room)
