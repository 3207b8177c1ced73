"""Post-compromise security: every member commits a fresh path every 7 days
(docs/threat-model.md, "Post-compromise security").

A self-update heals a compromise only if it replaces the keys an attacker copied: the
member's leaf HPKE key (and the private half of it, on the device), and the keys of the
parent nodes on its path (the root's among them), so that the next epoch's secrets come
from entropy the attacker never saw. An advancing epoch alone does not show that (an
epoch also advances through a commit by someone else). So this test looks at the tree:
what the other member sees of Ben's leaf and path before and after Ben's scheduled
update, and what Ben's own device keeps.

And the schedule: a client configured with nothing updates once its last fresh path is
7 days old, not before (engine/state.py ``DEFAULT_SELF_UPDATE_SECONDS``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from backchannel.engine.state import DEFAULT_SELF_UPDATE_SECONDS
from backchannel.mls import treemath
from backchannel.rooms.room import Room
from backchannel.views import JoinRequested
from relay.app import create_app
from tests.conftest import relay_config
from tests.e2e.harness import Person, eventually, false_alarms, wait_event

#: The period the threat model promises, written out (not the constant under test).
SEVEN_DAYS = 7 * 86400


@pytest.fixture
async def relay_url(tmp_path: Path) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(relay_config(tmp_path)), access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/ws"
    await runner.cleanup()


def _room(p: Person, room_id: bytes) -> Room:
    return p.c.engine._live[room_id].room


def _tree_view(room: Room, leaf: int) -> tuple[bytes, bytes, dict[int, bytes | None]]:
    """(leaf HPKE key, leaf signature key, {parent node: HPKE key}) of ``leaf``'s path."""
    tree = room._group._state.epoch.tree
    node = tree.leaf_node(leaf)
    assert node is not None
    path = {}
    for x in treemath.direct_path(treemath.leaf_to_node(leaf), tree.n_leaves):
        parent = tree.node(x)
        path[x] = None if parent is None else bytes(parent.encryption_key)
    return bytes(node.encryption_key), bytes(node.signature_key), path


def _own_private_keys(room: Room) -> dict[int, tuple[bytes, bytes]]:
    """This member's private tree keys: node -> (private key bytes, public key)."""
    keys = room._group._state.epoch.private_keys.keys
    return {x: (pair.private_key.to_bytes(), bytes(pair.public_key)) for x, pair in keys.items()}


async def _names_known(p: Person, room: str) -> bool:
    return {m.name for m in await p.c.members(room)} == {"Farida", "Ben"}


async def _quiet(*ps: Person) -> None:
    for p in ps:
        await asyncio.wait_for(p.c.sync(), 30)
    await asyncio.sleep(0.5)


async def test_scheduled_self_update_replaces_the_leaf_and_path_keys_every_seven_days(
    tmp_path: Path, relay_url: str
) -> None:
    fac = Person("Farida", tmp_path / "farida", relay_url)
    ben = Person("Ben", tmp_path / "ben", relay_url)
    await fac.start(create=True)
    await ben.start(create=True)
    try:
        room = (await fac.c.create_room("Healing")).id
        room_id = bytes.fromhex(room)
        rid = await ben.c.join(await fac.c.invite(room))
        await fac.c.approve(room, (await wait_event(fac, JoinRequested)).request.id)
        assert (await ben.c.wait_join(rid, 30)) is not None
        for p in (fac, ben):
            await eventually(lambda p=p: _names_known(p, room), 30)
        await eventually(lambda: _room(fac, room_id).epoch == _room(ben, room_id).epoch, 30)
        await _quiet(fac, ben)

        # The default: a Client configured with nothing uses the 7-day period.
        assert DEFAULT_SELF_UPDATE_SECONDS == SEVEN_DAYS
        engine = ben.c.engine
        assert engine._self_update_seconds == SEVEN_DAYS
        live = engine._live[room_id]
        leaf = _room(ben, room_id)._group._state.epoch.private_keys.leaf_index
        epoch = _room(fac, room_id).epoch
        before = _tree_view(_room(fac, room_id), leaf)
        assert _tree_view(_room(ben, room_id), leaf) == before
        old_private = _own_private_keys(_room(ben, room_id))
        old_leaf_private = old_private[treemath.leaf_to_node(leaf)][0]
        assert old_private[treemath.leaf_to_node(leaf)][1] == before[0]

        # Ben's last fresh path is 7 days less an hour old: nothing is due yet.
        live.meta = dataclasses.replace(live.meta, last_update=time.time() - SEVEN_DAYS + 3600)
        await engine.run_due_updates()
        await _quiet(ben, fac)
        assert _room(ben, room_id).pending is None
        assert _room(fac, room_id).epoch == _room(ben, room_id).epoch == epoch

        # 7 days and a minute: the scheduled update runs, with no one asking for it.
        live.meta = dataclasses.replace(live.meta, last_update=time.time() - SEVEN_DAYS - 60)
        await engine.run_due_updates()
        await eventually(lambda: _room(fac, room_id).epoch > epoch, 30)
        await eventually(lambda: _room(ben, room_id).epoch == _room(fac, room_id).epoch, 30)
        assert _room(fac, room_id).epoch == epoch + 1  # one commit: Ben's
        assert live.meta.last_update > time.time() - 60  # and the clock starts again

        after = _tree_view(_room(fac, room_id), leaf)
        assert _tree_view(_room(ben, room_id), leaf) == after  # both see the same tree
        leaf_key, signature_key, path = after
        assert leaf_key != before[0], "the leaf HPKE key was not replaced"
        assert signature_key == before[1]  # identity is unchanged: same member, new keys
        assert path, "a leaf of a two-member room has a path (the root)"
        for x, key in path.items():
            assert key is not None, f"parent node {x} on Ben's path is blank after his update"
            assert key != before[2][x], f"parent node {x} kept its HPKE key"
        old_keys = {before[0], *(k for k in before[2].values() if k is not None)}
        assert not old_keys & {leaf_key, *path.values()}

        # Ben's device holds the new private leaf key, and the old one no longer.
        new_private = _own_private_keys(_room(ben, room_id))
        assert new_private[treemath.leaf_to_node(leaf)][1] == leaf_key
        record = await ben.c.store.room(room_id)
        assert record is not None and record.state is not None
        states = {"memory": _room(ben, room_id).to_bytes(), "store": record.state}
        kept = [where for where, blob in states.items() if old_leaf_private in blob]
        assert not kept, f"the old leaf private key is still in {kept}"  # no key printed
        assert not false_alarms(fac) and not false_alarms(ben)
    finally:
        await fac.stop()
        await ben.stop()
